#!/usr/bin/env bash
# media-node vs livekit-server, single node, same topology and same synthetic media.
#
# Each server runs in a network namespace of its own whose only links are `lo` and a
# veth pair with both ends inside it (pion gathers no candidates on `lo` alone); the
# server and its load generator both run inside it, so every packet is delivered locally
# and nothing can leave. media-node is loaded by `switchyard load sfu`, LiveKit by
# bench/lkload (server-sdk-go), with the same frame sizes, packet split, keyframe
# interval and Opus packets (cli/src/load/sfu/media.rs).
#
# Per topology, media and run: the server starts fresh, the load joins at RAMP/s, after
# WARMUP s the script samples the server's CPU (utime+stime, /proc/PID/stat), its own
# forwarded-packet counter (media-node: switchyard_media_rtp_packets_total{direction="out"},
# LiveKit: livekit_packet_total{direction="outgoing"}) and the load generator's CPU, and
# again MEASURE s later; VmHWM at the end; join → first media and what subscribers
# received come from the load generator's JSON. bench/sfu_report.py takes medians over
# runs, prints the table and draws cpu-vs-subscribers.png (in OUT, default ~/.cache/switchyard/bench/sfu).
#
#   bench/sfu.sh                 # full: 3 runs, every topology, plain and simulcast
#   bench/sfu.sh --quick         # 1 run, 1→10, 1→40 and the 5-party meeting, plain media
#   RUNS=1 TOPOLOGIES="1to40" MEDIA="simulcast" bench/sfu.sh
#   SKIP_BUILD=1 bench/sfu.sh    # reuse the built binaries
#
# Topologies: 1toN (one publisher, N subscribers), meeting5 (five participants, all
# publishing audio and video), audio50 (one room of 50: AUDIO_SPEAKERS publish Opus, all
# subscribe). Media: plain (VP8 1280x720 at 2 Mbit/s, 30 fps, keyframe every 2.5 s,
# ~280 packets/s, plus Opus 32 kbit/s at 50 packets/s) and simulcast (the same top layer
# plus half and quarter size layers; subscribers ask for the top one). Needs root (ip netns).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
RUNS=${RUNS:-$([[ $QUICK == 1 ]] && echo 1 || echo 3)}
TOPOLOGIES=${TOPOLOGIES:-$([[ $QUICK == 1 ]] && echo "1to10 1to40 meeting5" || echo "1to10 1to20 1to40 meeting5 audio50")}
MEDIA=${MEDIA:-$([[ $QUICK == 1 ]] && echo "plain" || echo "plain simulcast")}
SERVERS=${SERVERS:-"switchyard livekit"}
WARMUP=${WARMUP:-6}
MEASURE=${MEASURE:-10}
RAMP=${RAMP:-10}
AUDIO_SPEAKERS=${AUDIO_SPEAKERS:-10}
OUT=${OUT:-$HOME/.cache/switchyard/bench/sfu}
CACHE=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
LK_VERSION=v1.9.11
LK_BIN=$CACHE/bin/livekit-server-$LK_VERSION
LKLOAD=$CACHE/bin/lkload
MEDIA_NODE=$TARGET/release/media-node
SWITCHYARD=$TARGET/release/switchyard
IP=10.254.0.1
KEY=benchkey
SECRET=benchsecret-benchsecret-benchsecret
HZ=$(getconf CLK_TCK)

[[ $EUID == 0 ]] || { echo "bench/sfu.sh needs root (ip netns)" >&2; exit 1; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
  export CARGO_TARGET_DIR=$TARGET
  nice cargo build --release -p switchyard-media-node --bin media-node
  nice cargo build --release -p switchyard-cli --bin switchyard
  export GOCACHE=$CACHE/go/cache GOMODCACHE=$CACHE/go/mod GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
  mkdir -p "$CACHE/bin"
  if [[ ! -x $LK_BIN ]]; then
    GOBIN=$CACHE/go/lkbin nice go install github.com/livekit/livekit-server/cmd/server@$LK_VERSION
    mv "$CACHE/go/lkbin/server" "$LK_BIN"
  fi
  (cd bench/lkload && nice go build -o "$LKLOAD" .)
fi
for b in "$LK_BIN" "$LKLOAD" "$MEDIA_NODE" "$SWITCHYARD"; do
  [[ -x $b ]] || { echo "missing $b (run without SKIP_BUILD)" >&2; exit 1; }
done

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
NS=sybench
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  ip netns del $NS 2>/dev/null || true
}
trap cleanup EXIT

make_ns() {
  ip netns del $NS 2>/dev/null || true
  ip netns add $NS
  ip -n $NS link set lo up
  ip -n $NS link add v0 type veth peer name v1
  ip -n $NS addr add $IP/32 dev v0
  ip -n $NS link set v1 up
  ip -n $NS link set v0 up
}

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ { print $2 }' "/proc/$1/status"; }
metric() { # url, awk pattern of the series: sum of matching samples
  ip netns exec $NS curl -s --max-time 2 "$1" | awk -v pat="$2" '$0 ~ pat && $1 !~ /^#/ { s += $NF } END { printf "%.0f\n", s }'
}

start_server() {
  local server=$1
  make_ns
  if [[ $server == livekit ]]; then
    cat > "$OUT/livekit.yaml" <<EOF
port: 7880
bind_addresses: ["$IP"]
rtc:
  udp_port: 7882
  tcp_port: 7881
  use_external_ip: false
  node_ip: $IP
  enable_loopback_candidate: false
  # Nothing listens there: clients get no public STUN server (an empty list means Google's).
  stun_servers: ["$IP:3478"]
prometheus:
  port: 6789
keys:
  $KEY: $SECRET
logging:
  level: warn
EOF
    ip netns exec $NS "$LK_BIN" --config "$OUT/livekit.yaml" > "$OUT/livekit.log" 2>&1 &
    METRICS=http://$IP:6789/metrics
    SERIES='^livekit_packet_total.*direction="outgoing"'
  else
    ip netns exec $NS "$MEDIA_NODE" --http-addr $IP:7880 --udp-addr $IP:7882 --tcp-addr $IP:7881 \
      --admin-addr $IP:9090 --api-key "$KEY:$SECRET" --standalone > "$OUT/media-node.log" 2>&1 &
    METRICS=http://$IP:9090/metrics
    SERIES='^switchyard_media_rtp_packets_total.*direction="out"'
  fi
  SERVER_PID=$!
  for _ in $(seq 50); do
    ip netns exec $NS curl -s --max-time 1 -o /dev/null "http://$IP:7880/" && return 0
    sleep 0.2
  done
  echo "$server did not start; see $OUT/$server.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# topology → "publishers subscribers audio-only"
shape() {
  case $1 in
    1to*) echo "1 ${1#1to} 0" ;;
    meeting5) echo "5 0 0" ;;
    audio50) echo "$AUDIO_SPEAKERS $((50 - AUDIO_SPEAKERS)) 1" ;;
    *) echo "unknown topology $1" >&2; exit 1 ;;
  esac
}

one_run() {
  local server=$1 topo=$2 media=$3 run=$4
  read -r pubs subs audio_only < <(shape "$topo")
  local n=$((pubs + subs))
  local ramp_s=$(((n + RAMP - 1) / RAMP))
  local duration=$((ramp_s + WARMUP + MEASURE + 2))
  local json=$OUT/$server-$topo-$media-$run.json
  start_server "$server"
  local sim=() lk=()
  if [[ $audio_only == 1 ]]; then
    sim+=(--video none); lk+=(-width 0)
  fi
  if [[ $media == simulcast ]]; then
    sim+=(--simulcast); lk+=(-simulcast)
  fi
  if [[ $server == livekit ]]; then
    ip netns exec $NS "$LKLOAD" -url ws://$IP:7880 -api-key $KEY -api-secret $SECRET \
      -publishers "$pubs" -subscribers "$subs" -duration "${duration}s" -ramp "$RAMP" "${lk[@]}" \
      > "$json" 2> "$OUT/load.log" &
  else
    ip netns exec $NS "$SWITCHYARD" load sfu --url ws://$IP:7880 --api-key $KEY --api-secret $SECRET \
      --publishers "$pubs" --subscribers "$subs" --duration "${duration}s" --ramp "$RAMP" --max-loss 100 \
      --json "${sim[@]}" > "$json" 2> "$OUT/load.log" &
  fi
  local load=$!
  sleep $((ramp_s + WARMUP))
  local c0 f0 l0 t0 c1 f1 l1 t1
  c0=$(cpu "$SERVER_PID"); l0=$(cpu "$load"); f0=$(metric "$METRICS" "$SERIES"); t0=$(date +%s.%N)
  sleep "$MEASURE"
  c1=$(cpu "$SERVER_PID"); l1=$(cpu "$load"); f1=$(metric "$METRICS" "$SERIES"); t1=$(date +%s.%N)
  local peak
  peak=$(hwm "$SERVER_PID")
  wait "$load" || true
  stop_server
  python3 - "$json" <<EOF >> "$RESULTS"
import json, sys
try:
    load = json.load(open(sys.argv[1]))
except Exception as e:
    load = {"error": str(e)}
print(json.dumps({
    "server": "$server", "topology": "$topo", "media": "$media", "run": $run,
    "publishers": $pubs, "subscribers": $subs,
    "seconds": $t1 - $t0, "serverCpuSeconds": ($c1 - $c0) / $HZ, "loadCpuSeconds": ($l1 - $l0) / $HZ,
    "forwardedPackets": $f1 - $f0, "vmHwmKiB": ${peak:-0}, "load": load,
}))
EOF
  echo "$server $topo $media run $run: cpu $(( (c1 - c0) ))/$HZ s, forwarded $((f1 - f0)), load cpu $((l1 - l0))/$HZ s, VmHWM ${peak} KiB" >&2
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg.txt" >&2
for topo in $TOPOLOGIES; do
  for media in $MEDIA; do
    [[ $topo == audio50 && $media == simulcast ]] && continue
    for run in $(seq "$RUNS"); do
      for server in $SERVERS; do
        one_run "$server" "$topo" "$media" "$run"
      done
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loadavg.txt" >&2
python3 bench/sfu_report.py "$RESULTS" "$OUT"
