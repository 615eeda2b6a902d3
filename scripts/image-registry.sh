#!/usr/bin/env bash
# image-registry.sh [start|stop|status] [STATE_DIR] -- an image registry on 127.0.0.1 for push tests: Debian's
# docker-registry (the CNCF distribution registry 2.8), plain HTTP on loopback (the Docker engine allows an
# insecure registry on 127.0.0.0/8 by default), no auth, deletes enabled.
#
#   start   (default) idempotent: installs docker-registry when missing (root), starts it in the background unless
#           this STATE_DIR's registry already answers, waits until GET /v2/ answers, prints its address.
#   stop    stops the recorded PID only (checked against /proc/PID/cmdline); the pushed images stay in STATE_DIR/data.
#   status  exit 0 and print the address when this STATE_DIR's registry answers, else exit 1.
#
# Env: MLOPS_REGISTRY_PORT (default 15000), MLOPS_REGISTRY_STATE (STATE_DIR, default /tmp/mlops-registry),
#      MLOPS_REGISTRY_TIMEOUT (seconds to wait for it to answer, default 30).
set -euo pipefail

action=${1:-start}
STATE=${2:-${MLOPS_REGISTRY_STATE:-/tmp/mlops-registry}}
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac
TIMEOUT=${MLOPS_REGISTRY_TIMEOUT:-30}
log() { echo "[image-registry $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The port of a registry started before wins over the environment: stop and status find it again.
if [ -f "$STATE/port" ]; then PORT=$(cat "$STATE/port"); else PORT=${MLOPS_REGISTRY_PORT:-15000}; fi
ADDR=127.0.0.1:$PORT

ours() { local pid; [ -f "$STATE/pid" ] && pid=$(cat "$STATE/pid") && [ -n "$pid" ] && [ -d "/proc/$pid" ] &&
         tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE/config.yml"; }
# A distribution registry answers GET /v2/ with 200 and this header; anything else on the port is not ours.
answers() { curl -sf --max-time 2 -o /dev/null -D - "http://$ADDR/v2/" 2>/dev/null |
            grep -qi '^docker-distribution-api-version: registry/2.0'; }

case $action in
status)
  if ours && answers; then echo "$ADDR"; exit 0; fi
  exit 1 ;;
stop)
  if ours; then
    pid=$(cat "$STATE/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do ours || break; sleep 0.25; done
    if ours; then log "registry ($pid) ignored TERM; KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped registry $ADDR ($pid); images kept in $STATE/data"
  else
    log "no registry of $STATE is running; nothing to do"
  fi
  rm -f "$STATE/pid" "$STATE/port"
  exit 0 ;;
start) ;;
*) die "unknown action '$action': use start, stop or status" ;;
esac

if ours && answers; then log "registry already running at $ADDR ($STATE)"; echo "$ADDR"; exit 0; fi
rm -f "$STATE/pid" "$STATE/port"
PORT=${MLOPS_REGISTRY_PORT:-15000}
ADDR=127.0.0.1:$PORT
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port 127.0.0.1:$PORT is already in use by another process: set MLOPS_REGISTRY_PORT to a free one"
fi

if ! command -v docker-registry >/dev/null; then
  [ "$(id -u)" = 0 ] || die "docker-registry is not installed: run this as root to install it (apt-get)"
  log "installing Debian's docker-registry"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry curl >/dev/null
fi
command -v curl >/dev/null || die "curl missing (apt-get install curl)"

mkdir -p "$STATE/data"
# http.secret signs upload state; a random one per start, in a file only root reads (never on a command line).
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
rm -f "$STATE/config.yml"
( umask 077; cat >"$STATE/config.yml" ) <<EOF
version: 0.1
log:
  level: warn
  fields: {service: mlops-image-registry}
storage:
  filesystem: {rootdirectory: $STATE/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
http:
  addr: 127.0.0.1:$PORT
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
# A clean environment: distribution reads REGISTRY_* variables as overrides of its configuration.
# setsid forks when the caller's shell runs jobs in their own process groups (job control on): the pid to record
# is the registry's own, found by its configuration file.
setsid -f env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin docker-registry serve "$STATE/config.yml" \
  >"$STATE/registry.log" 2>&1 </dev/null
for _ in $(seq 1 50); do
  pid=$(pgrep -n -f -- "docker-registry serve $STATE/config.yml" || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
echo "${pid:-}" >"$STATE/pid"
echo "$PORT" >"$STATE/port"
end=$(( $(date +%s) + TIMEOUT ))
until answers; do
  if ! ours; then tail -n 20 "$STATE/registry.log" >&2; rm -f "$STATE/pid" "$STATE/port"; die "docker-registry exited"; fi
  if [ "$(date +%s)" -ge "$end" ]; then
    tail -n 20 "$STATE/registry.log" >&2
    "$0" stop "$STATE"
    die "the registry did not answer on $ADDR within ${TIMEOUT}s"
  fi
  sleep 0.2
done
log "registry serving $ADDR (data: $STATE/data, log: $STATE/registry.log, pid $(cat "$STATE/pid"))"
echo "$ADDR"
