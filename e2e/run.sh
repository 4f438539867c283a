#!/usr/bin/env bash
# The e2e suite in one command: a real control plane on loopback, our real binaries as
# its pods, the operator from the Helm chart, and the scenario tests (e2e/tests/*.rs).
#
#   e2e/run.sh                     build, cluster up, runner, operator, tests, tear down
#   E2E_FILTER=media e2e/run.sh    only tests whose name contains "media"
#   E2E_KEEP=1 e2e/run.sh          leave cluster, runner and operator up for debugging
#   E2E_OPERATOR=local e2e/run.sh  the operator as a local process instead of the chart
#   E2E_IMAGES=0 e2e/run.sh        pods run the debug binaries on the host's root instead
#                                  of the images (default: the images scripts/images
#                                  builds, rebuilt when stale: their entrypoint, user and
#                                  root filesystem, under the pods' securityContext)
#   E2E_PROMETHEUS=0 e2e/run.sh    no Prometheus (default: one scrapes the pods and, after
#                                  an unfiltered run, every dashboard panel and alert is
#                                  evaluated against it; E2E_PROMETHEUS=1 checks a
#                                  filtered run too)
#
# Needs root (pod-runner creates network and mount namespaces). Exit code: the tests'.
# State: $SWITCHYARD_E2E_DIR (default /tmp/switchyard-e2e-run); logs of a failed run are
# kept in $SWITCHYARD_E2E_DIR.failed-logs.
# shellcheck disable=SC2317 # cleanup and the functions it calls run from a trap
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}
export SWITCHYARD_E2E_DIR=${SWITCHYARD_E2E_DIR:-/tmp/switchyard-e2e-run}
DIR=$SWITCHYARD_E2E_DIR
BIN=$CARGO_TARGET_DIR/debug
OPERATOR_NS=switchyard-system
OPERATOR_MODE=local
RUNNER_PID="" OPERATOR_PID="" PROM_PID="" TARGETS_PID=""
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

now() { date +%s.%N; }
elapsed() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
say() { echo "[e2e] $*" >&2; }
T_ALL=$(now)
T_STEP=$T_ALL
STEP=""
step() { # ends the previous step (with its time) and starts the next
  if [[ -n $STEP ]]; then say "$STEP: $(elapsed "$T_STEP") s"; fi
  STEP=$1
  T_STEP=$(now)
  say "== $STEP"
}

if (($(id -u) != 0)); then
  say "needs root: pod-runner creates network and mount namespaces (run it with sudo)"
  exit 1
fi

tail_file() { # <file> <lines>
  [[ -f $1 ]] || return 0
  echo "===== $1 (last $2 lines)"
  tail -n "$2" "$1"
}

dump_logs() {
  {
    echo "===== control plane"
    LOG_LINES=40 "$HERE/cluster.sh" logs || true
    if [[ -n ${KUBECONFIG:-} ]]; then "$E2E_KUBECTL" get nodes,pods -A -o wide || true; fi
    tail_file "$DIR/runner.log" 80
    local f
    for f in "$DIR"/runner/logs/*.log; do tail_file "$f" 30; done
    tail_file "$DIR/operator.log" 60
  } >&2
}

stop_pid() { # <name> <pid> <seconds before SIGKILL>: SIGTERM, wait, SIGKILL; says how it ended
  local name=$1 pid=$2 i code
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $3 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in $3 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  code=0
  wait "$pid" 2>/dev/null || code=$?
  say "$name stopped (exit $code)"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $STEP ]]; then say "$STEP: $(elapsed "$T_STEP") s"; fi
  if ((rc)); then
    say "FAILED (exit $rc) in: $STEP"
    if [[ -d $DIR ]]; then
      dump_logs
      rm -rf "$DIR.failed-logs"
      mkdir -p "$DIR.failed-logs"
      cp -r "$DIR/logs" "$DIR.failed-logs/cluster" 2>/dev/null || true
      cp -r "$DIR/runner/logs" "$DIR.failed-logs/pods" 2>/dev/null || true
      cp "$DIR/runner.log" "$DIR/operator.log" "$DIR/prometheus.log" "$DIR/prom-targets.log" "$DIR.failed-logs/" 2>/dev/null || true
      say "logs kept in $DIR.failed-logs"
    fi
  fi
  if [[ ${E2E_KEEP:-} == 1 && -f $DIR/env ]]; then
    say "E2E_KEEP=1: cluster, runner (pid ${RUNNER_PID:-none}) and operator (${OPERATOR_MODE}, pid ${OPERATOR_PID:-none}) left up"
    say "  source <(SWITCHYARD_E2E_DIR=$DIR $HERE/cluster.sh env)"
    say "  pod logs: $DIR/runner/logs/; runner log: $DIR/runner.log"
    say "  tear down: kill ${OPERATOR_PID:+$OPERATOR_PID }${RUNNER_PID}; SWITCHYARD_E2E_DIR=$DIR $HERE/cluster.sh down"
  else
    local t0
    t0=$(now)
    if [[ -n $OPERATOR_PID ]]; then stop_pid operator "$OPERATOR_PID" 5; fi
    if [[ -n $TARGETS_PID ]]; then stop_pid prom-targets "$TARGETS_PID" 5; fi
    if [[ -n $PROM_PID ]]; then stop_pid prometheus "$PROM_PID" 10; fi
    # the runner stops every pod process (SIGTERM, SIGKILL after 5 s)
    if [[ -n $RUNNER_PID ]]; then stop_pid pod-runner "$RUNNER_PID" 15; fi
    "$HERE/cluster.sh" down 2>/dev/null || true
    say "teardown: $(elapsed "$t0") s"
  fi
  say "total: $(elapsed "$T_ALL") s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One suite per state dir, and one per pod network: pod IPs are routed on this host,
# so two clusters must not share a podCIDR. The locks go with this process (and the
# cluster's processes, which inherit them).
exec {DIR_LOCK}>"$DIR.lock"
if ! flock -n "$DIR_LOCK"; then
  say "another e2e/run.sh uses $DIR (set SWITCHYARD_E2E_DIR)"
  trap - EXIT
  exit 1
fi
export E2E_POD_NET=""
for n in $(seq 201 230); do
  exec {NET_LOCK}>"/tmp/switchyard-e2e-podnet-127.$n.lock"
  if flock -n "$NET_LOCK"; then E2E_POD_NET=127.$n; break; fi
  exec {NET_LOCK}>&-
done
[[ -n $E2E_POD_NET ]] || { say "no free pod network 127.201-230 (too many e2e runs at once?)"; exit 1; }

step "cargo build (media-node, turn-node, operator, pod-runner, e2e-probe, scenario tests)"
(
  cd "$ROOT"
  cargo build -q -p switchyard-media-node -p switchyard-turn-node -p switchyard-operator -p switchyard-e2e --bins
  cargo build -q -p switchyard-cli --bin switchyard # the load generator of the autoscale scenario
  cargo test -q -p switchyard-e2e --tests --no-run
)
for b in media-node turn-node switchyard-operator pod-runner e2e-probe prom-targets; do
  [[ -x $BIN/$b ]] || { say "missing $BIN/$b after the build"; exit 1; }
done

step "build.sh (Kubernetes, etcd, kwok, helm from Go modules; cached)"
"$HERE/build.sh" >/dev/null

step "cluster.sh up (pod network $E2E_POD_NET.0.0/16)"
"$HERE/cluster.sh" down 2>/dev/null # a stale cluster of an interrupted run
"$HERE/cluster.sh" up >/dev/null
# shellcheck disable=SC1090
source <("$HERE/cluster.sh" env)
k() { "$E2E_KUBECTL" "$@"; }
K8S_VERSION=$("$HERE/build.sh" --print | sed -n 's/^kube-apiserver=.*kube-apiserver-//p')

step "CRDs (ours, and the Prometheus Operator's ServiceMonitor)"
k apply --server-side -f "$ROOT/crds/" -f "$HERE/prometheus/servicemonitor-crd.yaml" >/dev/null
k wait --for=condition=Established crd --all --timeout=60s >/dev/null

images=()
E2E_IMAGES=${E2E_IMAGES:-1}
if [[ $E2E_IMAGES == 1 ]]; then
  step "images (scripts/images --if-stale: built only when their sources changed; test-images.py)"
  export SWITCHYARD_IMAGES_DIR=${SWITCHYARD_IMAGES_DIR:-${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/images}
  "$ROOT/scripts/images" --if-stale 2>&1 | sed 's/^/[images] /' >&2
  # the runner scenario's broken and probe images, derived from those
  python3 "$HERE/test-images.py" "$SWITCHYARD_IMAGES_DIR" "$DIR/test-images" "$BIN/e2e-probe" | sed 's/^/[images] /' >&2
  images=(--images "$SWITCHYARD_IMAGES_DIR" --images "$DIR/test-images")
fi

step "pod-runner"
mkdir -p "$DIR/runner"
# RUST_LOG reaches the pods (media-node logs nothing below error without it); the
# runner's own filter is POD_RUNNER_LOG.
RUST_LOG=${RUST_LOG:-info} setsid "$BIN/pod-runner" --kubeconfig "$KUBECONFIG" --state-dir "$DIR/runner" \
  --bin-dir "$BIN" --binary "e2e-probe=$BIN/e2e-probe" "${images[@]}" >"$DIR/runner.log" 2>&1 </dev/null &
RUNNER_PID=$!
for _ in $(seq 150); do
  [[ -f $DIR/runner/ready ]] && break
  kill -0 "$RUNNER_PID" 2>/dev/null || { say "pod-runner exited"; exit 1; }
  sleep 0.2
done
[[ -f $DIR/runner/ready ]] || { say "pod-runner not ready after 30 s"; exit 1; }

PROM_CHECK_FILTERED=${E2E_PROMETHEUS:-}
E2E_PROMETHEUS=${E2E_PROMETHEUS:-1}
if [[ $E2E_PROMETHEUS != 0 ]]; then
  step "prometheus (scrapes what the ServiceMonitors select; targets by prom-targets)"
  command -v prometheus >/dev/null || { say "prometheus is missing: run scripts/setup"; exit 1; }
  mkdir -p "$DIR/prometheus/targets"
  echo '[]' >"$DIR/prometheus/targets/plain.json"
  echo '[]' >"$DIR/prometheus/targets/honor.json"
  sed -e "s|RULES|$ROOT/charts/switchyard/rules/switchyard-alerts.yaml|" -e "s|TARGETS|$DIR/prometheus/targets|g" \
    "$HERE/prometheus/prometheus.yml" >"$DIR/prometheus/prometheus.yml"
  PROM_URL=http://127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  setsid "$BIN/prom-targets" "$DIR/prometheus/targets" >"$DIR/prom-targets.log" 2>&1 </dev/null &
  TARGETS_PID=$!
  setsid prometheus --config.file "$DIR/prometheus/prometheus.yml" --storage.tsdb.path "$DIR/prometheus/data" \
    --web.listen-address "${PROM_URL#http://}" --storage.tsdb.retention.time 1d \
    >"$DIR/prometheus.log" 2>&1 </dev/null &
  PROM_PID=$!
  for _ in $(seq 150); do
    curl -sf "$PROM_URL/-/ready" >/dev/null 2>&1 && break
    kill -0 "$PROM_PID" 2>/dev/null || { say "prometheus exited"; tail -20 "$DIR/prometheus.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -sf "$PROM_URL/-/ready" >/dev/null || { say "prometheus not ready after 30 s"; exit 1; }
  say "prometheus on $PROM_URL"
fi

CHART=$ROOT/charts/switchyard
if [[ ${E2E_OPERATOR:-} != local && -f $CHART/Chart.yaml ]]; then
  OPERATOR_MODE=helm
  step "operator: helm install $CHART (its pods run under pod-runner)"
  tags=()
  # without images, tags that exist nowhere: the runner maps images to binaries by name;
  # with them, the chart's defaults, the images helm install pulls
  if [[ $E2E_IMAGES != 1 ]]; then tags=(--set image.tag=e2e --set mediaNodeImage.tag=e2e --set turnNodeImage.tag=e2e); fi
  "$E2E_HELM" install switchyard "$CHART" -n "$OPERATOR_NS" --create-namespace "${tags[@]}" \
    --set metrics.serviceMonitor.enabled=true --wait --timeout 180s >/dev/null
else
  step "operator: local process (admin kubeconfig)"
  k create namespace "$OPERATOR_NS" >/dev/null
  OPERATOR_ADMIN=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  export E2E_OPERATOR_ADMIN=$OPERATOR_ADMIN E2E_OPERATOR_IDENTITY=local-operator
  RUST_LOG=${RUST_LOG:-info} setsid "$BIN/switchyard-operator" --admin-address "$OPERATOR_ADMIN" \
    --identity local-operator --lease-namespace "$OPERATOR_NS" >"$DIR/operator.log" 2>&1 </dev/null &
  OPERATOR_PID=$!
fi
holder=""
for _ in $(seq 300); do
  holder=$(k get lease -n "$OPERATOR_NS" switchyard-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [[ -n $holder ]] && break
  if [[ -n $OPERATOR_PID ]] && ! kill -0 "$OPERATOR_PID" 2>/dev/null; then say "the operator exited"; exit 1; fi
  sleep 0.2
done
[[ -n $holder ]] || { say "no operator took the Lease $OPERATOR_NS/switchyard-operator in 60 s"; exit 1; }
say "operator ($OPERATOR_MODE) leads: $holder"

step "scenario tests${E2E_FILTER:+ (filter: $E2E_FILTER)}"
filter=()
if [[ -n ${E2E_FILTER:-} ]]; then filter=("$E2E_FILTER"); fi
T_TESTS=$(date +%s)
set +e
(cd "$ROOT" && E2E_KUBECONFIG=$KUBECONFIG E2E_STATE_DIR=$DIR E2E_RUNNER_DIR=$DIR/runner \
  E2E_OPERATOR_MODE=$OPERATOR_MODE E2E_OPERATOR_NAMESPACE=$OPERATOR_NS E2E_K8S_VERSION=$K8S_VERSION \
  E2E_IMAGES=$E2E_IMAGES cargo test -q -p switchyard-e2e --tests --no-fail-fast -- --ignored --test-threads=1 \
  --show-output "${filter[@]}")
status=$?
set -e
if [[ $E2E_PROMETHEUS != 0 && ( -z ${E2E_FILTER:-} || $PROM_CHECK_FILTERED == 1 ) ]]; then
  step "prometheus check (every dashboard panel and alert expression over the scenarios' window)"
  sleep 6 # one more scrape and rule evaluation
  if ! python3 "$HERE/prometheus/check.py" "$PROM_URL" "$T_TESTS" "$(date +%s)" "$ROOT/charts/switchyard" >&2; then
    [[ $status -ne 0 ]] || status=1
  fi
fi
exit "$status"
