#!/usr/bin/env bash
# Soak: participants join and leave one media-node on loopback for a bounded time; the
# node's RSS and open file descriptors are printed before, every SAMPLE seconds during,
# and after the rooms are empty (they should return close to the baseline).
#
#   bench/soak.sh                          # 10 minutes, 50 participants in 5 rooms
#   SECONDS_=120 PARTICIPANTS=20 bench/soak.sh
#
# Each participant is a webrtc-rs peer publishing audio for 5-30 s, then leaving and
# rejoining under a new identity. Only 127.0.0.1 is used. Not a test: nothing here
# asserts; PROFILE=debug skips the release build (slower node, same shape).
set -euo pipefail
cd "$(dirname "$0")/.."

PARTICIPANTS=${PARTICIPANTS:-50}
ROOMS=${ROOMS:-5}
SECONDS_=${SECONDS_:-600}
SAMPLE=${SAMPLE:-30}
PROFILE=${PROFILE:-release}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}

flag=--release
[ "$PROFILE" = debug ] && flag=
cargo build $flag -p switchyard-media-node --bin media-node --example soak
"$CARGO_TARGET_DIR/$PROFILE/examples/soak" --media-node "$CARGO_TARGET_DIR/$PROFILE/media-node" \
  --participants "$PARTICIPANTS" --rooms "$ROOMS" --seconds "$SECONDS_" --sample-every "$SAMPLE"
