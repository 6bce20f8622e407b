#!/usr/bin/env bash
# Installs what building and testing klausur needs and is missing on a Debian machine with
# Rust, Node.js/npm and apt: cmake (libopus is built from source for the dial-in gateway),
# for the tests Debian's Chromium, the SIP peers sipp (sip-tester) and baresip, nftables (a
# browser in a network namespace whose UDP is dropped), coturn (a TURN server), Squid (a web
# proxy in front of such a browser), PostgreSQL
# (the store's tests start a throwaway cluster of their own), Redis (the cluster's tests
# start their own redis-server), HAProxy (the load balancer in front of the browser tests'
# cluster, web/e2e/cluster.ts), Prometheus (scrapes the server's /metrics in a test), and the
# web client's npm packages.
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=${1:-}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root (or sudo) to run: $*" >&2; exit 1; fi
}

missing=()
command -v cmake >/dev/null || missing+=(cmake)
if [ "$want_browser" = "--with-browser" ]; then
    command -v chromium >/dev/null || missing+=(chromium)
    # Firefox ESR for the browser suite (e2e/firefox.spec.ts), driven by puppeteer-core.
    command -v firefox-esr >/dev/null || missing+=(firefox-esr)
    command -v sipp >/dev/null || missing+=(sip-tester)
    command -v baresip >/dev/null || missing+=(baresip)
    command -v nft >/dev/null || missing+=(nftables)
    command -v turnserver >/dev/null || missing+=(coturn)
    # A town hall's web proxy in front of a browser (e2e/network.spec.ts).
    [ -x /usr/sbin/squid ] || command -v squid >/dev/null || missing+=(squid)
    # The server binaries (initdb, postgres); pg_config alone may come from libpq-dev.
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || missing+=(haproxy)
    # Prometheus scrapes a served klausur's /metrics in the server tests (tests/server/metrics.rs).
    command -v prometheus >/dev/null || missing+=(prometheus)
    # systemd-analyze checks the shipped systemd unit (tests/server/deploy.rs).
    command -v systemd-analyze >/dev/null || missing+=(systemd)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        # The tests start their own cluster; the package is not to create (and start) the
        # system's main cluster.
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" \
            | as_root tee /etc/postgresql-common/createcluster.d/klausur-tests.conf >/dev/null
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The tests start their own coturn, redis-server, haproxy, prometheus and squid; the packages'
    # system services are not wanted running (without systemd, a policy-rc.d that denies
    # starts usually kept them off; the init script stops one that was started anyway).
    for service in coturn redis-server haproxy prometheus prometheus-node-exporter squid; do
        [[ " ${missing[*]} " == *" ${service%-node-exporter} "* ]] || continue
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$service" ]; then
            as_root "/etc/init.d/$service" stop >/dev/null 2>&1 || true
        fi
    done
fi

if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
    echo "setup: installing the web client's npm packages"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
