#!/bin/bash
# build.sh [CACHE_DIR] -- build Kubernetes v1.20.2 server binaries from Debian bookworm's
# `kubernetes` source package and cache them in CACHE_DIR/bin.  Idempotent: when the 4
# binaries are already there it only makes sure the run-time packages (etcd, socat, ...)
# and the local pause image are present, which takes seconds.  Needs root (apt-get) and the
# Docker engine with the base image (`make docker-engine`).
#
# Env: MLOPS_KUBE_CACHE (default /var/cache/mlops-kube/v1.20.2)
#      MLOPS_KUBE_WORK (scratch dir, default /tmp/mlops-kube-build)
#      MLOPS_KUBE_PAUSE_IMAGE (default local/mlops-pause:1)
#      MLOPS_KUBE_BASE_IMAGE  (default $MLOPS_BASE_IMAGE, else mlops-base:bookworm)
#      MLOPS_KUBE_KEEP_SRC=1  keep the ~1.5 GB source/build tree afterwards
set -euo pipefail

CACHE_DIR=${1:-${MLOPS_KUBE_CACHE:-/var/cache/mlops-kube/v1.20.2}}
WORK=${MLOPS_KUBE_WORK:-/tmp/mlops-kube-build}
PAUSE_IMAGE=${MLOPS_KUBE_PAUSE_IMAGE:-local/mlops-pause:1}
BASE_IMAGE=${MLOPS_KUBE_BASE_IMAGE:-${MLOPS_BASE_IMAGE:-mlops-base:bookworm}}
SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet"

log() { echo "[build.sh $(date +%H:%M:%S)] $*" >&2; }

build_pause_image() {
  if docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "building pause image $PAUSE_IMAGE FROM $BASE_IMAGE"
  local d; d=$(mktemp -d)
  # PID 1 that exits on TERM/INT (a bare `sleep infinity` as PID 1 ignores SIGTERM).
  cat >"$d/Dockerfile" <<EOF
FROM $BASE_IMAGE
CMD ["/bin/sh","-c","trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done"]
EOF
  DOCKER_BUILDKIT=0 docker build -q -t "$PAUSE_IMAGE" "$d" >"$d/log" 2>&1 || { cat "$d/log" >&2; exit 1; }
  rm -rf "$d"
}

have_bins() { local b; for b in $BINS; do [ -x "$CACHE_DIR/bin/$b" ] || return 1; done; }
export DEBIAN_FRONTEND=noninteractive

# What up.sh runs besides the cached binaries (etcd, socat + nsenter for port-forward, openssl, curl):
# installed when missing, so a machine that kept /var/cache but not its packages still starts a cluster.
need_root() { [ "$(id -u)" = 0 ] || { log "ERROR: needs root (apt-get, $CACHE_DIR): run it with sudo"; exit 1; }; }

# Only the packages that are not installed: an installed one is left at its version (no upgrades as a side effect).
install_missing() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    need_root
    log "installing Debian packages: ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

runtime_packages() { install_missing etcd-server socat openssl curl ca-certificates util-linux iproute2; }

# Fail before a 20-minute build, not after it: the pause image is built FROM the base image.
docker info >/dev/null 2>&1 || { log "ERROR: no Docker engine answers: run \`make docker-engine\` first"; exit 1; }
docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 || docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
  { log "ERROR: base image $BASE_IMAGE is not on the Docker engine: run \`make docker-engine\` first"; exit 1; }

if have_bins; then
  runtime_packages
  build_pause_image
  log "binaries already in $CACHE_DIR/bin; nothing to do"
  exit 0
fi

need_root
T0=$(date +%s)
install_missing golang-go golang-github-modern-go-reflect2-dev rsync dpkg-dev make
runtime_packages
T1=$(date +%s)

# Private apt config with a deb-src line: the system sources are never touched.
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
echo "deb-src http://deb.debian.org/debian bookworm main" >"$WORK/apt/sources.list"
APT_OPTS=(-o Dir::Etc::SourceList="$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$WORK/apt/lists" -o Dir::Cache="$WORK/apt/cache" -o APT::Sandbox::User=root)
SRC="$WORK/src/kubernetes-1.20.5+really1.20.2"   # dpkg-source's directory name
if [ ! -f "$SRC/Makefile" ]; then
  log "fetching source kubernetes=$SRC_VERSION"
  apt-get "${APT_OPTS[@]}" update -q >/dev/null
  (cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source -q "kubernetes=$SRC_VERSION" >/dev/null)
fi
[ -f "$SRC/Makefile" ] || { log "source tree not found at $SRC"; exit 1; }
T2=$(date +%s)

log "patching"
# vendored reflect2 v1.0.1 breaks on Go >= 1.18; use Debian's 1.0.2.
R2=/usr/share/gocode/src/github.com/modern-go/reflect2
# (vendor/modules.txt keeps saying v1.0.1, which keeps `-mod=vendor` consistent with go.mod)
rsync -a --delete --exclude=go.mod "$R2"/ "$SRC/vendor/github.com/modern-go/reflect2/"
# Hosts that refuse negative oom_score_adj (runc: "can't get final child's PID from pipe").
sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' \
  "$SRC/pkg/kubelet/dockershim/docker_sandbox.go"
grep -q 'defaultSandboxOOMAdj int = 0' "$SRC/pkg/kubelet/dockershim/docker_sandbox.go"

log "building (cold ~23 min on 2 cores)"
mkdir -p "$WORK/home"
( cd "$SRC" && env HOME="$WORK/home" GOPATH="$SRC/.go" GOCACHE="$WORK/home/go-build" \
    CGO_ENABLED=0 GOFLAGS=-mod=vendor \
    nice -n 10 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet" )
T3=$(date +%s)

# Into a temporary folder first, then renamed: an interrupted copy never looks like a complete cache.
mkdir -p "$CACHE_DIR"
rm -rf "$CACHE_DIR/bin.partial"
mkdir "$CACHE_DIR/bin.partial"
for b in $BINS; do install -m 0755 "$SRC/_output/bin/$b" "$CACHE_DIR/bin.partial/$b"; done
rm -rf "$CACHE_DIR/bin"
mv "$CACHE_DIR/bin.partial" "$CACHE_DIR/bin"
"$CACHE_DIR/bin/kubelet" --version
build_pause_image
[ "${MLOPS_KUBE_KEEP_SRC:-0}" = 1 ] || rm -rf "$WORK"
timing="apt-install=$((T1-T0))s fetch-source=$((T2-T1))s make=$((T3-T2))s total=$(( $(date +%s)-T0 ))s"
printf 'kubernetes=%s built %s with %s; %s\n' "$SRC_VERSION" "$(date -u +%FT%TZ)" "$(go version)" "$timing" \
  >"$CACHE_DIR/build-info.txt"
log "timing: $timing"
