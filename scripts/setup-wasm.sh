#!/usr/bin/env bash
# Set up a wasm32-unknown-unknown Rust build on Debian 12 without rustup targets.
#
# rustup cannot download the wasm32 std here, so we use Debian's "rustc-web"
# compiler (bookworm-security/updates) and build std from its own sources
# (rust-web-src) with cargo's -Zbuild-std. Linking uses rust-lld, which Debian
# ships as a symlink to lld-NN (installed below).
#
# Usage:  eval "$(scripts/setup-wasm.sh 0.2.130)"
#         $WASM_CARGO build --release          # -> target/wasm32-unknown-unknown/release/*.wasm
#         $WASM_BINDGEN --target nodejs --out-dir pkg target/wasm32-unknown-unknown/release/foo.wasm
# In a Makefile recipe (one shell line):
#         eval "$$(scripts/setup-wasm.sh $(WBG_VERSION))" && $$WASM_CARGO build --release
# The argument is the wasm-bindgen version in the crate's Cargo.lock (the CLI must match).
# Only `export` lines go to stdout; progress goes to stderr. Safe to re-run.
# Note: the first build of each target dir compiles std (~2-3 min on 2 cores).
# getrandom 0.4 (used by sframe 2) needs only its "wasm_js" feature; for getrandom 0.3
# also: export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS='--cfg getrandom_backend="wasm_js"'
set -euo pipefail

WBG_VERSION="${1:-}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { echo "setup-wasm: $*" >&2; }

# 1. Debian packages: compiler, cargo, std sources, rust-lld and the lld it points to.
PKGS=(rustc-web cargo-web rust-web-src rust-web-llvm)
missing() { for p in "$@"; do [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || echo "$p"; done; }
apt_install() {
  [ -n "$(missing "$@")" ] || return 0
  # an empty or stale list has no 1.9x rustc-web candidate: refresh once
  [[ "$(apt-cache policy rustc-web 2>/dev/null)" == *"Candidate: 1.9"* ]] || $SUDO apt-get update -qq >&2
  log "apt-get install $(missing "$@" | tr '\n' ' ')"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(missing "$@") >&2
}
apt_install "${PKGS[@]}"
LLD_PKG="$(readlink /usr/bin/rust-lld)"   # e.g. lld-22 (rust-web-llvm does not depend on it)
apt_install "$LLD_PKG"
[ -e /usr/bin/rust-lld ] || { log "rust-lld ($LLD_PKG) missing"; exit 1; }
[ -d /usr/lib/rustlib/src/rust/library/std ] || { log "std sources missing"; exit 1; }
v1="$(dpkg-query -W -f='${Version}' rustc-web)"; v2="$(dpkg-query -W -f='${Version}' rust-web-src)"
[ "$v1" = "$v2" ] || { log "rustc-web $v1 != rust-web-src $v2"; exit 1; }

# 2. wasm-bindgen-cli, exactly the requested version (built from crates.io).
BIN_ROOT="${CARGO_HOME:-$HOME/.cargo}"
WASM_BINDGEN="$BIN_ROOT/bin/wasm-bindgen"
if [ -n "$WBG_VERSION" ] && [ "$("$WASM_BINDGEN" --version 2>/dev/null)" != "wasm-bindgen $WBG_VERSION" ]; then
  log "installing wasm-bindgen-cli $WBG_VERSION (takes ~10 min)"
  # no --locked: its lock file may name crate versions the registry mirror lacks
  RUSTC=/usr/bin/rustc /usr/bin/cargo install -q wasm-bindgen-cli --version "=$WBG_VERSION" \
    --root "$BIN_ROOT" --force >&2
fi

# 3. What a build needs. Debian's cargo/rustc are called by full path because
#    rustup's shims in ~/.cargo/bin come first in PATH. RUSTC_BOOTSTRAP=1 allows
#    -Zbuild-std on this stable compiler; keep it out of the global environment.
cat <<EOF
export WASM_TARGET=wasm32-unknown-unknown
export WASM_CARGO='env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_BUILD_TARGET=wasm32-unknown-unknown /usr/bin/cargo -Zbuild-std=std,panic_abort'
export WASM_BINDGEN='$WASM_BINDGEN'
EOF
log "ok: $(/usr/bin/rustc -V), $LLD_PKG${WBG_VERSION:+, wasm-bindgen $WBG_VERSION}"
