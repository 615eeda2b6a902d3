#!/bin/bash
# up.sh [STATE_DIR] -- start a single-node Kubernetes v1.20.2 cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet/dockershim) bound to 127.0.0.1, using the
# host's Docker engine.  Writes STATE_DIR/kubeconfig and prints `export KUBECONFIG=...`.
# Stop it with down.sh STATE_DIR.
#
# Env: MLOPS_KUBE_CACHE (binaries: $MLOPS_KUBE_CACHE/bin, default /var/cache/mlops-kube/v1.20.2)
#      MLOPS_KUBE_PAUSE_IMAGE (default local/mlops-pause:1)
#      MLOPS_KUBE_BASE_IMAGE (default $MLOPS_BASE_IMAGE, else mlops-base:bookworm)
#      MLOPS_KUBE_PORT_BASE (default 16000: etcd +379/+380, apiserver +443, kcm +457,
#                            scheduler +459, kubelet +250, kubelet healthz +248)
#      MLOPS_KUBE_NODE_IP (default: first global IPv4 of the host; only written into node
#                          status / pod IPs, nothing listens on it)
#      MLOPS_KUBE_TIMEOUT (seconds to wait for readiness, default 180)
set -euo pipefail

STATE=${1:-${MLOPS_KUBE_STATE:-/tmp/mlops-kube}}
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac   # absolute: PIDs are checked against it in /proc/PID/cmdline
CACHE=${MLOPS_KUBE_CACHE:-/var/cache/mlops-kube/v1.20.2}
BIN=$CACHE/bin
PAUSE_IMAGE=${MLOPS_KUBE_PAUSE_IMAGE:-local/mlops-pause:1}
BASE_IMAGE=${MLOPS_KUBE_BASE_IMAGE:-${MLOPS_BASE_IMAGE:-mlops-base:bookworm}}
PB=${MLOPS_KUBE_PORT_BASE:-16000}
ETCD_PORT=$((PB+379)) ETCD_PEER_PORT=$((PB+380)) API_PORT=$((PB+443))
KCM_PORT=$((PB+457)) SCHED_PORT=$((PB+459)) KUBELET_PORT=$((PB+250)) KUBELET_HZ_PORT=$((PB+248))
NODE_NAME=localhost      # the apiserver reaches the kubelet via this Hostname address -> 127.0.0.1
TIMEOUT=${MLOPS_KUBE_TIMEOUT:-180}
HERE=$(cd "$(dirname "$0")" && pwd)
T0=$(date +%s)

log() { echo "[up.sh $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

alive() { local f=$1 pid; [ -f "$f" ] || return 1; pid=$(cat "$f"); [ -n "$pid" ] && [ -d "/proc/$pid" ] &&
          tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE"; }

# ---- already running? ------------------------------------------------------------------
if [ -d "$STATE/pids" ]; then
  n=0; for f in "$STATE"/pids/*.pid; do alive "$f" && n=$((n+1)); done
  if [ "$n" -eq 5 ] && [ -f "$STATE/kubeconfig" ]; then
    log "cluster already running in $STATE"; echo "export KUBECONFIG=$STATE/kubeconfig"; exit 0
  fi
  log "stale/partial state in $STATE: cleaning it with down.sh"
  "$HERE/down.sh" "$STATE" >&2 || true
fi

# ---- preflight -------------------------------------------------------------------------
# Pods on the host network share a port during a rolling update (SO_REUSEPORT): connections queued on the
# retiring pod's socket go to the new pod's instead of being reset (Linux 5.14+; the host's network namespace).
sysctl -qw net.ipv4.tcp_migrate_req=1 2>/dev/null || true
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: run build.sh first (\`sudo make kube-cluster\` does both)"
done
command -v etcd >/dev/null || die "etcd missing (apt-get install etcd-server)"
command -v openssl >/dev/null || die "openssl missing"
command -v socat >/dev/null || log "WARNING: socat missing: port-forward will not work (apt-get install socat)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (\`sudo make docker-engine\` starts one)"
# the kubelet puts unix sockets under STATE (a socket path has at most 107 bytes)
[ "${#STATE}" -le 60 ] || die "state dir $STATE is ${#STATE} characters long: use one of at most 60"
for p in $ETCD_PORT $ETCD_PEER_PORT $API_PORT $KCM_PORT $SCHED_PORT $KUBELET_PORT $KUBELET_HZ_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port 127.0.0.1:$p already in use"; fi
done
NODE_IP=${MLOPS_KUBE_NODE_IP:-$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)}
[ -n "$NODE_IP" ] || die "no non-loopback IPv4 found; set MLOPS_KUBE_NODE_IP (kubelet 1.20 refuses a loopback node IP)"
if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
  log "building pause image $PAUSE_IMAGE"
  d=$(mktemp -d)
  printf '%s\n' "FROM $BASE_IMAGE" \
    "CMD [\"/bin/sh\",\"-c\",\"trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done\"]" >"$d/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$PAUSE_IMAGE" "$d" >"$d/log" 2>&1 || { cat "$d/log" >&2; exit 1; }; rm -rf "$d"
fi

# ---- certs, tokens, kubeconfigs -------------------------------------------------------
mkdir -p "$STATE"/{pki,pids,logs,etcd,kubelet,dockershim,kubelet-plugins,kcm-certs,sched-certs}
# kubelet 1.20 writes pod logs under the fixed /var/log/pods; remember what was there before us
ls -1 /var/log/pods >"$STATE/var-log-pods.before" 2>/dev/null || true
chmod 700 "$STATE/pki" "$STATE/etcd"
P=$STATE/pki
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=mlops-kube-ca" -keyout "$P/ca.key" -out "$P/ca.crt"
cat >"$P/apiserver.ext" <<EOF
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1
extendedKeyUsage=serverAuth
EOF
echo "extendedKeyUsage=clientAuth" >"$P/client.ext"
signed() { # name subject extfile
  ossl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "$P/$1.key" -out "$P/$1.csr"
  ossl x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 365 \
    -extfile "$3" -out "$P/$1.crt"
}
signed apiserver "/CN=kube-apiserver" "$P/apiserver.ext"
signed apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$P/client.ext"
ossl genrsa -out "$P/sa.key" 2048
ossl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"
[ -s "$P/apiserver.crt" ] && [ -s "$P/sa.pub" ] || die "certificate generation failed"
tok() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ADMIN_TOKEN=$(tok) COMP_TOKEN=$(tok)
printf '%s\n' "$ADMIN_TOKEN,admin,admin,system:masters" "$COMP_TOKEN,mlops-kube-components,components,system:masters" >"$P/tokens.csv"
CA_DATA=$(base64 -w0 <"$P/ca.crt")
kubeconfig() { # file token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: mlops-kube, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $CA_DATA}}]
users: [{name: $3, user: {token: $2}}]
contexts: [{name: mlops-kube, context: {cluster: mlops-kube, user: $3, namespace: default}}]
current-context: mlops-kube
EOF
  chmod 600 "$1"
}
kubeconfig "$STATE/kubeconfig" "$ADMIN_TOKEN" admin
kubeconfig "$STATE/components.kubeconfig" "$COMP_TOKEN" components

# ---- start processes -------------------------------------------------------------------
start() { # name cmd...   (setsid: own session; the PID recorded is the binary itself)
  local name=$1; shift
  setsid nohup "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
  log "started $name pid $!"
}
fail() { log "ERROR: $*"; for f in "$STATE"/logs/*.log; do echo "--- tail $f" >&2; tail -n 15 "$f" >&2; done
         log "cleaning up"; "$HERE/down.sh" "$STATE" >&2 || true; exit 1; }
waitfor() { # what seconds cmd...
  local what=$1 s=$2; shift 2; local end=$(( $(date +%s)+s ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || fail "timeout waiting for $what"; sleep 1; done
}
curlk() { curl -sf --max-time 5 --cacert "$P/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$API_PORT$1"; }

start etcd nice -n 5 etcd --name mlops-kube --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "mlops-kube=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --logger=zap --log-level=warn
waitfor etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --insecure-port=0 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --token-auth-file="$P/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/24 --allow-privileged=true --profiling=false \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=Hostname,InternalIP --cert-dir="$STATE/pki/apiserver-auto"
waitfor "apiserver /readyz" "$TIMEOUT" curlk /readyz
T_API=$(date +%s)

start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$STATE/components.kubeconfig" \
  --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/kcm-certs" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --service-cluster-ip-range=10.96.0.0/24 --profiling=false
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$STATE/components.kubeconfig" \
  --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$STATE/sched-certs" \
  --profiling=false
start kubelet "$BIN/kubelet" --kubeconfig="$STATE/components.kubeconfig" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
  --address=127.0.0.1 --port="$KUBELET_PORT" --read-only-port=0 \
  --healthz-bind-address=127.0.0.1 --healthz-port="$KUBELET_HZ_PORT" \
  --anonymous-auth=false --client-ca-file="$P/ca.crt" --authorization-mode=AlwaysAllow \
  --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
  --experimental-dockershim-root-directory="$STATE/dockershim" --volume-plugin-dir="$STATE/kubelet-plugins" \
  --container-runtime=docker --pod-infra-container-image="$PAUSE_IMAGE" --cgroup-driver=cgroupfs \
  --cgroups-per-qos=false --enforce-node-allocatable= --oom-score-adj=0 --fail-swap-on=false \
  --make-iptables-util-chains=false --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
  --eviction-hard='memory.available<100Mi' --eviction-pressure-transition-period=30s \
  --serialize-image-pulls=false --register-node=true

node_ready() { curlk "/api/v1/nodes/$NODE_NAME" | python3 -c '
import json,sys; n=json.load(sys.stdin)
sys.exit(0 if any(c["type"]=="Ready" and c["status"]=="True" for c in n["status"].get("conditions",[])) and n["status"].get("addresses") else 1)'; }
sa_ready() { curlk /api/v1/namespaces/default/serviceaccounts/default; }
waitfor "node $NODE_NAME Ready" "$TIMEOUT" node_ready
waitfor "default service account" 60 sa_ready
for f in "$STATE"/pids/*.pid; do alive "$f" || fail "$(basename "$f" .pid) died"; done
cat >"$STATE/env" <<EOF
KUBECONFIG=$STATE/kubeconfig
MLOPS_KUBE_STATE=$STATE
MLOPS_KUBE_API=https://127.0.0.1:$API_PORT
MLOPS_KUBE_NODE=$NODE_NAME
MLOPS_KUBE_NODE_IP=$NODE_IP
MLOPS_KUBE_CONTEXT=mlops-kube
EOF
T1=$(date +%s)
log "cluster up: apiserver ready after $((T_API-T0))s, node Ready after $((T1-T0))s (logs: $STATE/logs)"
echo "export KUBECONFIG=$STATE/kubeconfig"
