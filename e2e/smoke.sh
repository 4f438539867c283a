#!/usr/bin/env bash
# Smoke check of the e2e harness against a real control plane:
#   1. cluster.sh up
#   2. the server reports the Kubernetes version build.sh built
#   3. the repo's CRDs apply and become Established
#   4. a valid MediaCluster is accepted; invalid ones (replicas min > max, TLS without a
#      Secret, zero target bandwidth, a non-CIDR peer, a moved Room) are
#      rejected by the apiserver with the CRDs' CEL messages
#   5. the operator (a local process) reconciles a MediaCluster: owned workloads,
#      Services, Secrets, ConfigMaps; status Ready with one SFU pod
#   6. a one-pod Deployment is scheduled onto a kwok node and Runs with a pod IP
#      from that node's podCIDR (127.1.0.0/24)
#   7. cluster.sh down (always, also on failure)
# Exits non-zero and says which check failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export SWITCHYARD_E2E_DIR=${SWITCHYARD_E2E_DIR:-/tmp/switchyard-e2e-smoke}
# the version build.sh builds (and cluster.sh runs): kube-apiserver-<version>
K8S_VERSION=$("$HERE/build.sh" --print | sed -n 's/^kube-apiserver=.*kube-apiserver-//p')
NS=smoke

now() { date +%s.%N; }
elapsed() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
t_all=$(now)
current="cluster.sh up"
fail() {
  echo "SMOKE FAILED: $current: $*" >&2
  exit 1
}
OPERATOR_PID=""
cleanup() {
  local rc=$?
  if [[ -n $OPERATOR_PID ]]; then kill "$OPERATOR_PID" 2>/dev/null || true; fi
  if ((rc)); then
    echo "SMOKE FAILED at: $current (exit $rc)" >&2
    if [[ -f $SWITCHYARD_E2E_DIR/env ]]; then
      "$HERE/cluster.sh" logs >&2 || true
      if [[ -n ${KUBECONFIG:-} ]]; then "${E2E_KUBECTL:-kubectl}" get nodes,pods -A -o wide >&2 || true; fi
    fi
  fi
  "$HERE/cluster.sh" down || true
  echo "smoke: total $(elapsed "$t_all") s" >&2
  exit "$rc"
}
trap cleanup EXIT

# A stale cluster from an interrupted run would make `up` refuse.
"$HERE/cluster.sh" down
t0=$(now)
"$HERE/cluster.sh" up >/dev/null
echo "smoke: cluster.sh up $(elapsed "$t0") s"
# shellcheck disable=SC1090
source <("$HERE/cluster.sh" env)
k() { "$E2E_KUBECTL" "$@"; }

current="server version"
got=$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
[[ $got == "$K8S_VERSION" ]] || fail "server reports '$got', want $K8S_VERSION"
echo "smoke: server version $got"

current="helm"
"$E2E_HELM" version

current="kwok manages only annotated nodes"
cat <<EOF | k apply -f -
apiVersion: v1
kind: Node
metadata: {name: not-kwok}
EOF
sleep 2
st=$(k get node not-kwok -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
[[ -z $st ]] || fail "kwok set Ready=$st on a node without the kwok.x-k8s.io/node=fake annotation"
k delete node not-kwok --wait=false

current="apply CRDs"
t0=$(now)
k apply -f "$ROOT/crds/"
k wait --for=condition=Established crd --all --timeout=60s
echo "smoke: CRDs established $(elapsed "$t0") s"

current="valid MediaCluster"
k create namespace "$NS"
# the mapping of the new kind can lag the Established condition in discovery
for _ in $(seq 50); do k get mediaclusters -n "$NS" >/dev/null 2>&1 && break; sleep 0.2; done
cat <<EOF | k apply -n "$NS" -f - || fail "a MediaCluster with spec: {} was not accepted"
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: ok}
spec: {}
EOF
k get mediacluster -n "$NS" ok -o jsonpath='{.spec.sfu.replicas}{"\n"}'

current="invalid MediaCluster rejected by CEL"
want="replicas.min must be less than or equal to replicas.max"
set +e
out=$(cat <<EOF | k apply -n "$NS" -f - 2>&1
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: bad}
spec:
  sfu:
    replicas: {min: 5, max: 2}
EOF
)
rc=$?
set -e
echo "$out"
((rc != 0)) || fail "the apiserver accepted sfu.replicas {min: 5, max: 2}"
[[ $out == *"$want"* ]] || fail "rejected, but without the message '$want'"
! k get mediacluster -n "$NS" bad >/dev/null 2>&1 || fail "the invalid MediaCluster exists"
echo "smoke: invalid MediaCluster rejected with the CEL message"

# More of the CRDs' CEL rules, each with its message, on the real apiserver.
rejects() { # rejects <what> <message> (YAML on stdin)
  current="$1 rejected by CEL"
  local out rc
  set +e
  out=$(k apply -n "$NS" -f - 2>&1)
  rc=$?
  set -e
  ((rc != 0)) || fail "the apiserver accepted $1"
  [[ $out == *"$2"* ]] || fail "rejected, but without the message '$2': $out"
  echo "smoke: $1 rejected: $2"
}
rejects "a TLS listener without a cert Secret" "a TLS listener needs tlsSecretRef" <<EOF
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: bad-tls}
spec:
  turn:
    listeners: [{name: tls, protocol: TLS, port: 443}]
EOF
rejects "a zero targetBandwidthPerPod" "turn.targetBandwidthPerPod must be a positive quantity" <<EOF
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: bad-bw}
spec:
  turn: {targetBandwidthPerPod: "0"}
EOF
rejects "a peer allow entry that is not a CIDR" "peers.allow entries must be CIDRs" <<EOF
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: bad-cidr}
spec:
  turn: {peers: {allow: [not-a-cidr]}}
EOF
current="Room created"
cat <<EOF | k apply -n "$NS" -f - >/dev/null
apiVersion: switchyard.dev/v1alpha1
kind: Room
metadata: {name: standup}
spec: {clusterRef: ok, allowedCodecs: [VP9, Opus]}
EOF
rejects "moving a Room to another cluster" "clusterRef is immutable" <<EOF
apiVersion: switchyard.dev/v1alpha1
kind: Room
metadata: {name: standup}
spec: {clusterRef: elsewhere}
EOF

# The operator, as a local process against the real apiserver: a MediaCluster is
# reconciled into its workloads, Services and Secrets (owned by it) and reports Ready.
current="operator reconciles a MediaCluster"
t0=$(now)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}
(cd "$ROOT" && cargo build -q -p switchyard-operator --bin switchyard-operator)
"$CARGO_TARGET_DIR/debug/switchyard-operator" --admin-address 127.0.0.1:0 --identity smoke-operator \
  --lease-namespace "$NS" >"$SWITCHYARD_E2E_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!
cat <<EOF | k apply -n "$NS" -f - >/dev/null
apiVersion: switchyard.dev/v1alpha1
kind: MediaCluster
metadata: {name: edge}
spec: {}
EOF
ready=""
for _ in $(seq 1 120); do
  ready=$(k get mediacluster -n "$NS" edge -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  [[ $ready == True ]] && break
  sleep 0.5
done
[[ $ready == True ]] || { cat "$SWITCHYARD_E2E_DIR/operator.log" >&2; fail "MediaCluster edge never became Ready"; }
for obj in statefulset/edge-sfu deployment/edge-turn service/edge-sfu service/edge-signaling service/edge-turn \
  secret/edge-keys secret/edge-turn-secret configmap/edge-sfu-config configmap/edge-turn-config; do
  owner=$(k get -n "$NS" "$obj" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
  [[ $owner == MediaCluster/edge ]] || fail "$obj is not owned by MediaCluster/edge (owner: '$owner')"
done
sfu_ready=$(k get mediacluster -n "$NS" edge -o jsonpath='{.status.sfu.ready}')
[[ $sfu_ready == 1 ]] || fail "status.sfu.ready is '$sfu_ready', want 1"
kill "$OPERATOR_PID" 2>/dev/null || true
echo "smoke: operator reconciled MediaCluster edge: owned objects exist, Ready, 1 SFU pod ($(elapsed "$t0") s)"

current="Deployment scheduled onto kwok and Running"
t0=$(now)
cat <<EOF | k apply -n "$NS" -f -
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      nodeSelector: {kubernetes.io/hostname: kwok-node-0}
      containers:
      - name: hello
        image: registry.invalid/switchyard/never-pulled:0
EOF
k rollout status -n "$NS" deployment/hello --timeout=90s
read -r pod node phase ip < <(k get pods -n "$NS" -l app=hello \
  -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.status.podIP}{"\n"}{end}')
echo "smoke: pod $pod on $node phase $phase ip $ip ($(elapsed "$t0") s)"
[[ $node == kwok-node-0 ]] || fail "pod on node '$node'"
[[ $phase == Running ]] || fail "pod phase '$phase'"
python3 -c 'import ipaddress,sys; sys.exit(ipaddress.ip_address(sys.argv[1]) not in ipaddress.ip_network("127.1.0.0/24"))' "$ip" ||
  fail "pod IP '$ip' not in 127.1.0.0/24"

current="pod deleted on scale-down"
k scale -n "$NS" deployment/hello --replicas=0
k wait -n "$NS" --for=delete "pod/$pod" --timeout=60s

current="cluster.sh down"
echo "smoke: OK"
