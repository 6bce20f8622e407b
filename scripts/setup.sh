#!/usr/bin/env bash
# Installs what building and testing klausur needs and is missing on a Debian machine with
# Rust, Node.js/npm and apt: Debian's Chromium (browser tests) and the web client's npm
# packages. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=${1:-}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root (or sudo) to run: $*" >&2; exit 1; fi
}

if [ "$want_browser" = "--with-browser" ] && ! command -v chromium >/dev/null; then
    echo "setup: installing Debian's chromium for the browser tests"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
    echo "setup: installing the web client's npm packages"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
