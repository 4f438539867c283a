#!/usr/bin/env bash
# Builds the binaries the e2e harness needs, from Go modules fetched through the
# Go module proxy, and caches them in ~/.cache/switchyard/bin/<name>-<version>.
# A binary that is already there is not rebuilt.
#
#   e2e/build.sh            build whatever is missing
#   e2e/build.sh --print    print the cached paths (name=path), build nothing
#
# Versions can be overridden with K8S_VERSION, ETCD_VERSION, KWOK_VERSION,
# HELM_VERSION. The machine's Go (GOTOOLCHAIN=local) is used; nothing else is
# downloaded.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v4.3.1}

CACHE=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
BIN=$CACHE/bin
WRAP=$CACHE/go/wrap
export GOCACHE=$CACHE/go/cache
export GOMODCACHE=$CACHE/go/mod
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOMAXPROCS=${GOMAXPROCS:-2}
JOBS=${BUILD_JOBS:-2}
mkdir -p "$BIN" "$WRAP" "$GOCACHE" "$GOMODCACHE"

if [[ ${1:-} == --print ]]; then
  for n in kube-apiserver kube-controller-manager kube-scheduler kubectl; do echo "$n=$BIN/$n-$K8S_VERSION"; done
  echo "etcd=$BIN/etcd-$ETCD_VERSION"
  echo "kwok=$BIN/kwok-$KWOK_VERSION"
  echo "kwok-stages=$BIN/kwok-stages-$KWOK_VERSION.yaml"
  echo "helm=$BIN/helm-$HELM_VERSION"
  exit 0
fi

now() { date +%s.%N; }
step_start=0
begin() { step_start=$(now); echo "==> $*"; }
finish() { printf '==> %s: %.1f s\n' "$1" "$(echo "$(now) - $step_start" | bc)"; }
have() { for f in "$@"; do [[ -x $f ]] || return 1; done; }

# go.mod of module $1@$2, downloaded through the module proxy.
modfile() {
  go mod download -json "$1@$2" | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); print(d["GoMod"]) if not e else sys.exit(e)'
}

# Writes a wrapper module in $WRAP/$1 that requires $2@$3 and turns every
# relative-path replace (`x => ./y` or `x => ../y`) in that release's go.mod into
# `x => x <version>`, where <version> is given by the function named in $4.
wrapper() {
  local dir=$WRAP/$1 mod=$2 ver=$3 map=$4 gomod
  gomod=$(modfile "$mod" "$ver")
  mkdir -p "$dir"
  {
    echo "module switchyard.local/e2e-$1"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require $mod $ver"
    echo
    echo "replace ("
    # replace lines inside the block or single-line replaces: `name => ./path`
    sed -nE 's/^(replace)?[[:space:]]*([^[:space:]]+)[[:space:]]+=>[[:space:]]+\.{1,2}\/.*$/\2/p' "$gomod" |
      while read -r m; do echo "	$m => $m $($map "$m")"; done
    echo ")"
  } >"$dir/go.mod.new"
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.src" 2>/dev/null; then
    cp "$dir/go.mod.new" "$dir/go.mod"
    cp "$dir/go.mod.new" "$dir/go.mod.src"
    rm -f "$dir/go.sum"
  fi
  rm -f "$dir/go.mod.new"
  echo "$dir"
}

k8s_staging() { echo "v0.${K8S_VERSION#v1.}"; }
etcd_same() { echo "$ETCD_VERSION"; }

# one build at a time per cache (other checkouts may run this concurrently)
exec 9>"$BIN/.lock"
if ! flock -n 9; then
  echo "==> waiting for another build.sh (lock $BIN/.lock)"
  flock 9
fi

total_start=$(now)

# --- Kubernetes: apiserver, controller-manager, scheduler, kubectl in one go build.
k8s_names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
k8s_out=()
for n in "${k8s_names[@]}"; do k8s_out+=("$BIN/$n-$K8S_VERSION"); done
if have "${k8s_out[@]}"; then
  echo "==> kubernetes $K8S_VERSION: cached"
else
  begin "kubernetes $K8S_VERSION (${k8s_names[*]})"
  dir=$(wrapper "k8s-$K8S_VERSION" k8s.io/kubernetes "$K8S_VERSION" k8s_staging)
  ver=${K8S_VERSION#v}
  major=${ver%%.*}
  minor=${ver#*.}; minor=${minor%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  out=$(mktemp -d "$BIN/.k8s.XXXXXX")
  (cd "$dir" && go build -p "$JOBS" -trimpath -ldflags "$ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
  for n in "${k8s_names[@]}"; do mv "$out/$n" "$BIN/$n-$K8S_VERSION"; done
  rmdir "$out"
  finish "kubernetes $K8S_VERSION"
fi

# --- etcd: the server module's main package, with its sibling modules pinned.
if have "$BIN/etcd-$ETCD_VERSION"; then
  echo "==> etcd $ETCD_VERSION: cached"
else
  begin "etcd $ETCD_VERSION"
  dir=$(wrapper "etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd_same)
  (cd "$dir" && go build -p "$JOBS" -trimpath \
    -ldflags "-s -w" -o "$BIN/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3)
  finish "etcd $ETCD_VERSION"
fi

# --- kwok and helm: plain modules without relative replaces.
plain() { # name module version pkg ldflags
  local n=$1 mod=$2 ver=$3 pkg=$4 ld=$5 dir
  if have "$BIN/$n-$ver"; then echo "==> $n $ver: cached"; return; fi
  begin "$n $ver"
  dir=$(wrapper "$n-$ver" "$mod" "$ver" etcd_same)
  (cd "$dir" && go build -p "$JOBS" -trimpath -ldflags "-s -w $ld" -o "$BIN/$n-$ver" "$pkg")
  finish "$n $ver"
}
plain kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
# The kwok binary has no built-in stages (kwokctl supplies them); take the
# release's own node-initialize, node-heartbeat and pod stages from its module.
if [[ ! -s $BIN/kwok-stages-$KWOK_VERSION.yaml ]]; then
  kdir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$kdir/kustomize/stage/$f"
  done >"$BIN/kwok-stages-$KWOK_VERSION.yaml.tmp"
  mv "$BIN/kwok-stages-$KWOK_VERSION.yaml.tmp" "$BIN/kwok-stages-$KWOK_VERSION.yaml"
fi
plain helm helm.sh/helm/v4 "$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"

printf '==> all: %.1f s\n' "$(echo "$(now) - $total_start" | bc)"
