#!/usr/bin/env bash
# turn-node vs coturn's turnserver, side by side on loopback, same load.
#
# For each server and packet size (100 and 1200 bytes):
#   load:     turnutils_uclient, CLIENTS allocations, each sending MESSAGES
#             ChannelData messages to turnutils_peer (echo) and back
#   cpu:      server utime+stime from /proc/PID/stat, before/after the load
#   => relayed packets per CPU-second (each echoed message is relayed twice)
#   latency:  bench/turn_probe.py ping, sequential ChannelData round trips
#             measured while the load runs (p50/p99, microseconds)
# Then memory: RSS before/after HOLD allocations held by turn_probe.py hold.
#
# Prints a markdown table (also written to $OUT, default bench/turn-results.md).
# Only 127.0.0.1 is ever used. Not a test: nothing here asserts timing.
# turn-node runs without its default quotas (10 allocations per user, 20
# unauthenticated requests/s), as coturn has none: every client is one user.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100}
MESSAGES=${MESSAGES:-2000}
INTERVAL_MS=${INTERVAL_MS:-2}
PINGS=${PINGS:-2000}
HOLD=${HOLD:-2000}
SECRET=bench-secret
REALM=bench.test
OUT=${OUT:-bench/turn-results.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target-turn}
TURN_NODE=${TURN_NODE:-$CARGO_TARGET_DIR/release/turn-node}

for tool in turnserver turnutils_uclient turnutils_peer python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y coturn python3)" >&2; exit 1; }
done
if [[ -z "${SKIP_BUILD:-}" ]]; then
  cargo build --release -p switchyard-turn-node --bin turn-node >&2
fi
ulimit -n 65536 2>/dev/null || true

TICK=$(getconf CLK_TCK)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PEER_PORT=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PIDS+=($!)

start_server() { # name port -> prints pid
  local name=$1 port=$2
  case $name in
    turn-node)
      "$TURN_NODE" --listen "udp://127.0.0.1:$port" --relay-address 127.0.0.1 \
        --relay-ports 20000-59999 --secret "$SECRET" --realm "$REALM" \
        --allow-peer 127.0.0.0/8 --admin "127.0.0.1:$(free_port)" \
        --max-allocations-per-user 0 --unauthenticated-rps 0 >/dev/null 2>&1 &
      ;;
    coturn)
      turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --listening-port="$port" \
        --min-port=20000 --max-port=59999 --allow-loopback-peers --use-auth-secret \
        --static-auth-secret="$SECRET" --realm="$REALM" --no-cli --no-tls --no-dtls \
        --no-tcp-relay --no-stdout-log --log-file=/dev/null >/dev/null 2>&1 &
      ;;
  esac
  echo $!
}

declare -A RESULT
for name in turn-node coturn; do
  for size in 100 1200; do
    port=$(free_port)
    pid=$(start_server "$name" "$port")
    PIDS+=("$pid")
    sleep 1
    before=$(cpu_ticks "$pid")
    python3 bench/turn_probe.py ping "$port" "$PEER_PORT" "$SECRET" "$PINGS" "$size" >/tmp/turn-bench-ping.$$ &
    ping_pid=$!
    load=$(turnutils_uclient -c -e 127.0.0.1 -r "$PEER_PORT" -m "$CLIENTS" -n "$MESSAGES" \
      -l "$size" -z "$INTERVAL_MS" -W "$SECRET" -u bench -p "$port" 127.0.0.1 2>&1 | tail -8)
    wait "$ping_pid"
    after=$(cpu_ticks "$pid")
    sent=$(sed -n 's/.*tot_send_msgs=\([0-9]*\).*/\1/p' <<<"$load" | tail -1)
    recv=$(sed -n 's/.*tot_recv_msgs=\([0-9]*\).*/\1/p' <<<"$load" | tail -1)
    lost=$(sed -n 's/.*Total lost packets \([0-9]*\).*/\1/p' <<<"$load" | tail -1)
    cpu_s=$(awk -v a="$before" -v b="$after" -v t="$TICK" 'BEGIN {printf "%.2f", (b - a) / t}')
    # Each message is relayed client->peer, and its echo peer->client.
    pps=$(awk -v s="$sent" -v r="$recv" -v c="$cpu_s" 'BEGIN {printf "%.0f", (c > 0 ? (s + r) / c : 0)}')
    read -r p50 p99 plost < <(sed 's/[a-z0-9_]*=//g' /tmp/turn-bench-ping.$$)
    RESULT[$name,$size]="$sent $recv $lost $cpu_s $pps $p50 $p99"
    echo "$name ${size}B: sent=$sent recv=$recv lost=$lost cpu=${cpu_s}s relayed/cpu-s=$pps p50=${p50}us p99=${p99}us (probe lost $plost)" >&2
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  done
  # Memory per allocation.
  port=$(free_port)
  pid=$(start_server "$name" "$port")
  PIDS+=("$pid")
  sleep 1
  rss0=$(rss_kib "$pid")
  coproc HOLDER { python3 bench/turn_probe.py hold "$port" "$PEER_PORT" "$SECRET" "$HOLD"; }
  read -r _ready held <&"${HOLDER[0]}"
  sleep 1
  rss1=$(rss_kib "$pid")
  eval "exec ${HOLDER[1]}>&-"
  wait "$HOLDER_PID" 2>/dev/null || true
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="$held" 'BEGIN {printf "%.1f", (b - a) / n}')
  RESULT[$name,mem]="$rss0 $rss1 $held $per"
  echo "$name memory: rss ${rss0} KiB -> ${rss1} KiB with $held allocations = ${per} KiB/allocation" >&2
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
done
rm -f /tmp/turn-bench-ping.$$

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf (b > 0 ? "%.2f" : "n/a"), a / b}'; }
{
  echo "| metric | turn-node | coturn | turn-node / coturn |"
  echo "| --- | ---: | ---: | ---: |"
  for size in 100 1200; do
    read -r ts tr tl tc tp t50 t99 <<<"${RESULT[turn-node,$size]}"
    read -r cs cr cl cc cp c50 c99 <<<"${RESULT[coturn,$size]}"
    echo "| ${size} B: messages echoed (sent/received, lost) | $ts/$tr ($tl) | $cs/$cr ($cl) | |"
    echo "| ${size} B: server CPU seconds | $tc | $cc | $(ratio "$tc" "$cc") |"
    echo "| ${size} B: relayed packets per CPU-second | $tp | $cp | **$(ratio "$tp" "$cp")** |"
    echo "| ${size} B: round trip p50 under load (µs) | $t50 | $c50 | $(ratio "$t50" "$c50") |"
    echo "| ${size} B: round trip p99 under load (µs) | $t99 | $c99 | $(ratio "$t99" "$c99") |"
  done
  read -r t0 t1 tn tper <<<"${RESULT[turn-node,mem]}"
  read -r c0 c1 cn cper <<<"${RESULT[coturn,mem]}"
  echo "| RSS idle (KiB) | $t0 | $c0 | $(ratio "$t0" "$c0") |"
  echo "| RSS with $tn / $cn allocations (KiB) | $t1 | $c1 | $(ratio "$t1" "$c1") |"
  echo "| RSS per allocation (KiB) | $tper | $cper | $(ratio "$tper" "$cper") |"
  echo
  echo "Load: turnutils_uclient -c -m $CLIENTS -n $MESSAGES -l SIZE -z $INTERVAL_MS (ChannelData to turnutils_peer);"
  echo "latency: bench/turn_probe.py ping, $PINGS sequential round trips during the load; memory: $HOLD allocations with one permission each."
  echo "Machine: $(nproc) CPUs, $(uname -sr); coturn $(turnserver --version 2>/dev/null | head -1 || true)."
} | tee "$OUT"
