#!/usr/bin/env bash
# shellcheck disable=SC2154 # BIN_<name> are assigned by bins() with printf -v
# A real Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and kwok simulating the kubelets of
# fake Nodes whose podCIDRs are inside 127.0.0.0/8. No containers, no network
# beyond 127.0.0.1.
#
#   e2e/cluster.sh up      build (if needed) and start; prints the env to use
#   e2e/cluster.sh env     print `export KUBECONFIG=...` etc. for the running cluster
#   e2e/cluster.sh down    stop every process this harness started, delete state
#   e2e/cluster.sh logs    print the logs of every component
#   e2e/cluster.sh restart <component>   stop and start one component (same flags)
#
# State lives in $SWITCHYARD_E2E_DIR (default /tmp/switchyard-e2e). Ports are
# picked free at `up` time, so several harnesses can coexist if each has its
# own SWITCHYARD_E2E_DIR. Extra kube-apiserver flags: $E2E_APISERVER_ARGS
# (word-split). Fake nodes: $E2E_NODES (default 2), node i gets the
# podCIDR $E2E_POD_NET.i.0/24 (E2E_POD_NET default 127.1).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SWITCHYARD_E2E_DIR:-/tmp/switchyard-e2e}
NODES=${E2E_NODES:-2}
POD_NET=${E2E_POD_NET:-127.1}
READY_TIMEOUT=${E2E_READY_TIMEOUT:-120}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTPS_PROXY HTTP_PROXY https_proxy http_proxy

now() { date +%s.%N; }
elapsed() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
log() { echo "[cluster] $*" >&2; }

bins() { # sets BIN_<name> from build.sh --print
  while IFS='=' read -r name path; do
    name=${name//-/_}
    printf -v "BIN_$name" '%s' "$path"
  done < <("$HERE/build.sh" --print)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

logs() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -f $DIR/logs/$c.log ]] || continue
    echo "===== $c ($DIR/logs/$c.log, last ${LOG_LINES:-80} lines) ====="
    tail -n "${LOG_LINES:-80}" "$DIR/logs/$c.log"
  done
}

keep_logs() { # the state dir goes away with down; keep the logs of a failed run
  rm -rf "$DIR.failed-logs"
  if cp -r "$DIR/logs" "$DIR.failed-logs" 2>/dev/null; then log "logs kept in $DIR.failed-logs"; fi
}

down() {
  local c pid i
  [[ -d $DIR ]] || return 0
  # reverse start order
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    [[ -f $DIR/pids/$c ]] || continue
    pid=$(cat "$DIR/pids/$c")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/pids/$c"
  done
  rm -rf "$DIR"
  log "down"
}

# start <name> <binary> args...: runs detached, records its pid.
start() {
  local name=$1
  shift
  mkdir -p "$DIR/cmds"
  printf '%q ' "$@" >"$DIR/cmds/$name" # for `restart`
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
}

# restart <component>: stop it (SIGTERM, SIGKILL after 5 s) and start it again with the
# same command line, as a supervisor would after a crash or an upgrade.
restart() {
  local name=${1:?usage: cluster.sh restart <component>} pid t0
  [[ -f $DIR/cmds/$name ]] || { log "no component $name in $DIR"; return 1; }
  t0=$(now)
  pid=$(cat "$DIR/pids/$name")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  echo "===== restarted by cluster.sh at $(date -u +%FT%TZ)" >>"$DIR/logs/$name.log"
  eval "setsid $(cat "$DIR/cmds/$name") >>\"$DIR/logs/$name.log\" 2>&1 </dev/null &"
  echo $! >"$DIR/pids/$name"
  log "$name restarted (pid $!) in $(elapsed "$t0") s"
}

alive() { # fail fast if a component died
  local c
  for c in "$@"; do
    if ! kill -0 "$(cat "$DIR/pids/$c")" 2>/dev/null; then
      log "$c exited"
      return 1
    fi
  done
}

wait_for() { # <what> <timeout s> <components that must stay alive> -- cmd...
  local what=$1 timeout=$2 t0
  shift 2
  local comps=()
  while [[ $1 != -- ]]; do comps+=("$1"); shift; done
  shift
  t0=$(now)
  until "$@" >/dev/null 2>&1; do
    alive "${comps[@]}" || return 1
    if (($(echo "$(now) - $t0 > $timeout" | bc))); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
  log "$what ready after $(elapsed "$t0") s"
}

certs() {
  local p=$DIR/pki
  mkdir -p "$p"
  cd "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj "/CN=switchyard-e2e-ca" 2>/dev/null
  # name CN O [SAN]
  issue() {
    local name=$1 subj=$2 san=${3:-} ext
    ext=$(mktemp)
    {
      echo "basicConstraints=critical,CA:FALSE"
      echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [[ -n $san ]]; then
        echo "extendedKeyUsage=serverAuth,clientAuth"
        echo "subjectAltName=$san"
      else
        echo "extendedKeyUsage=clientAuth"
      fi
    } >"$ext"
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$ext"
  }
  issue apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue admin "/O=system:masters/CN=kubernetes-admin"
  issue controller-manager "/CN=system:kube-controller-manager"
  issue scheduler "/CN=system:kube-scheduler"
  issue kwok "/O=system:masters/CN=kwok-controller"
  # aggregation layer: a separate CA whose client cert the apiserver presents to
  # extension apiservers (and which controller-manager/scheduler trust for
  # requestheader authentication)
  openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt \
    -days 2 -subj "/CN=switchyard-e2e-front-proxy-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
    -subj "/CN=front-proxy-client" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >fp.ext
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -CAcreateserial -days 2 -extfile fp.ext -out front-proxy-client.crt 2>/dev/null
  rm -f front-proxy-client.csr fp.ext
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

kubeconfig() { # <file> <cert name> <user>
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: switchyard-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $DIR/pki/$2.crt
    client-key: $DIR/pki/$2.key
contexts:
- name: switchyard-e2e
  context: {cluster: switchyard-e2e, user: $3}
current-context: switchyard-e2e
EOF
}

env_out() {
  [[ -f $DIR/env ]] || { log "no cluster in $DIR"; return 1; }
  cat "$DIR/env"
}

nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec:
  podCIDR: $POD_NET.$i.0/24
  podCIDRs: [$POD_NET.$i.0/24]
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
  done
}

up() {
  local t0 t_all
  t_all=$(now)
  if [[ -f $DIR/env ]]; then
    log "a cluster is already up in $DIR (run down first)"
    return 1
  fi
  t0=$(now)
  "$HERE/build.sh" >&2
  log "build.sh: $(elapsed "$t0") s"
  bins
  rm -rf "$DIR"
  mkdir -p "$DIR"/{logs,pids,etcd}
  # shellcheck disable=SC2154 # rc is assigned inside the trap
  trap 'rc=$?; if ((rc)); then log "up failed (exit $rc); component logs:"; logs >&2; keep_logs; down; fi' EXIT

  t0=$(now)
  certs
  log "certificates: $(elapsed "$t0") s"

  ETCD_PORT=$(free_port) ETCD_PEER_PORT=$(free_port) API_PORT=$(free_port)
  KCM_PORT=$(free_port) SCHED_PORT=$(free_port) KWOK_PORT=$(free_port)
  local t_cp
  t_cp=$(now)

  start etcd "$BIN_etcd" --name e2e --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --unsafe-no-fsync --quota-backend-bytes 2147483648
  wait_for etcd 30 etcd -- curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  local p=$DIR/pki extra=()
  read -ra extra <<<"${E2E_APISERVER_ARGS:-}"
  start kube-apiserver "$BIN_kube_apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --requestheader-client-ca-file "$p/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$p/front-proxy-client.crt" \
    --proxy-client-key-file "$p/front-proxy-client.key" \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --cert-dir "$DIR/apiserver-certs" \
    --profiling=false "${extra[@]}"
  wait_for kube-apiserver "$READY_TIMEOUT" etcd kube-apiserver -- \
    curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz"

  kubeconfig "$DIR/kubeconfig" admin kubernetes-admin
  kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
  kubeconfig "$DIR/scheduler.kubeconfig" scheduler system:kube-scheduler
  kubeconfig "$DIR/kwok.kubeconfig" kwok kwok-controller

  start kube-controller-manager "$BIN_kube_controller_manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --cert-dir "$DIR/kcm-certs" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --profiling=false
  start kube-scheduler "$BIN_kube_scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
    --cert-dir "$DIR/scheduler-certs" \
    --leader-elect=false --profiling=false
  start kwok "$BIN_kwok" \
    --kubeconfig "$DIR/kwok.kubeconfig" \
    --config "$BIN_kwok_stages" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-name kwok-controller \
    --server-address "127.0.0.1:$KWOK_PORT"

  local kc=(--kubeconfig "$DIR/kubeconfig")
  local ccurl=(curl -fsSk --cacert "$p/ca.crt")
  wait_for kube-controller-manager "$READY_TIMEOUT" etcd kube-apiserver kube-controller-manager -- \
    "${ccurl[@]}" "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for kube-scheduler "$READY_TIMEOUT" etcd kube-apiserver kube-scheduler -- \
    "${ccurl[@]}" "https://127.0.0.1:$SCHED_PORT/healthz"
  wait_for kwok "$READY_TIMEOUT" kwok -- curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"

  nodes_yaml | "$BIN_kubectl" "${kc[@]}" apply -f - >&2
  wait_for "nodes Ready" "$READY_TIMEOUT" "${COMPONENTS[@]}" -- \
    "$BIN_kubectl" "${kc[@]}" wait --for=condition=Ready node --all --timeout=1s
  # the default ServiceAccount must exist before pods can be created
  wait_for "default ServiceAccount" "$READY_TIMEOUT" "${COMPONENTS[@]}" -- \
    "$BIN_kubectl" "${kc[@]}" get serviceaccount default -n default

  cat >"$DIR/env" <<EOF
export KUBECONFIG=$DIR/kubeconfig
export SWITCHYARD_E2E_DIR=$DIR
export E2E_KUBECTL=$BIN_kubectl
export E2E_HELM=$BIN_helm
export E2E_API_SERVER=https://127.0.0.1:$API_PORT
export E2E_POD_NET=$POD_NET
EOF
  trap - EXIT
  log "control plane up in $(elapsed "$t_cp") s (total with build and certs $(elapsed "$t_all") s)"
  cat "$DIR/env"
}

case ${1:-} in
up) up ;;
down) down ;;
env) env_out ;;
restart) restart "${2:-}" ;;
logs) logs ;;
*)
  echo "usage: $0 up|down|env|logs" >&2
  exit 2
  ;;
esac
