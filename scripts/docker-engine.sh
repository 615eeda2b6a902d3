#!/usr/bin/env bash
# A Docker engine and a base image on a machine that reaches Debian's mirrors but no image registry.
# Idempotent; needs root. Installs docker.io and debootstrap when missing, starts dockerd when no engine
# answers (host networking only: --iptables=false --bridge=none), and builds the base image NAME
# (default mlops-base:bookworm: Debian bookworm with python3 and venv) with debootstrap + `docker import`.
set -euo pipefail
image="${1:-${MLOPS_BASE_IMAGE:-mlops-base:bookworm}}"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "docker-engine: installing docker.io and debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi

# Servers replaced on one port (SO_REUSEPORT: a container or host-network pod update) hand the connections
# queued on the retiring server's socket to the new one instead of resetting them (Linux 5.14+).
sysctl -qw net.ipv4.tcp_migrate_req=1 2>/dev/null || true

if ! docker info >/dev/null 2>&1; then
    echo "docker-engine: starting dockerd (log: /var/log/mlops-dockerd.log)"
    nohup dockerd --iptables=false --bridge=none >/var/log/mlops-dockerd.log 2>&1 &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        echo "docker-engine: dockerd did not answer within 60 s; its log ends with:" >&2
        tail -n 20 /var/log/mlops-dockerd.log >&2
        exit 1
    fi
fi

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "docker-engine: base image $image is present"
else
    echo "docker-engine: building base image $image with debootstrap (about a minute)"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian >/tmp/mlops-debootstrap.log 2>&1 || {
        echo "docker-engine: debootstrap failed; see /tmp/mlops-debootstrap.log" >&2
        tail -n 20 /tmp/mlops-debootstrap.log >&2
        exit 1
    }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["python3"]' - "$image" >/dev/null
    echo "docker-engine: base image $image built ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=si)B)"
fi
