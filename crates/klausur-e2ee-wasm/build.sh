#!/usr/bin/env bash
# Builds klausur-e2ee-wasm for wasm32-unknown-unknown, runs wasm-bindgen twice: --target nodejs
# into target/wasm-pkg/ (Node tests) and --target web into web/src/e2ee/pkg/ (the browser's
# encryption worker, bundled by Vite; generated, not in git), prints the .wasm sizes, checks the
# size budget and runs the Node test.
#
#   crates/klausur-e2ee-wasm/build.sh            # from anywhere
#   crates/klausur-e2ee-wasm/build.sh --no-test  # build both packages only (make web)
#   WASM_OPT_LEVEL=s crates/klausur-e2ee-wasm/build.sh
#
# Uses its own target dir (target/wasm, override with WASM_TARGET_DIR) so the native build is
# never invalidated, and a size profile "wasm" given on the command line (cargo --config), the
# same as this block would be in the root Cargo.toml:
#   [profile.wasm]
#   inherits = "release"
#   opt-level = "z"
#   lto = true
#   codegen-units = 1
#   panic = "abort"
# Not `strip = true`: it also drops the target_features section wasm-bindgen reads; the
# name section is removed by wasm-bindgen instead (--remove-name-section).
set -euo pipefail

RUN_TESTS=1
case "${1:-}" in
  --no-test) RUN_TESTS=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-test]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OPT="${WASM_OPT_LEVEL:-z}"
TARGET_DIR="${WASM_TARGET_DIR:-target/wasm}"
PKG_DIR="target/wasm-pkg"
WEB_PKG_DIR="web/src/e2ee/pkg"
# The wasm-bindgen CLI must be exactly the version in Cargo.lock (pinned with "=" in Cargo.toml).
WBG_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
WBG_VERSION="${WBG_VERSION:-0.2.130}"

eval "$(scripts/setup-wasm.sh "$WBG_VERSION")"

# The per-frame cipher (AES-GCM in software, no AES instructions in wasm) is built for speed,
# the rest for size: about 2x faster SFrame for a few KiB more. klausur-frame-aead (in
# crates/klausur-e2ee/frame-aead) is where the frame cipher instantiates AES-GCM.
FAST_CRYPTO=""
for p in aes aes-gcm ghash polyval ctr cipher universal-hash sframe klausur-frame-aead; do
  FAST_CRYPTO="$FAST_CRYPTO --config profile.wasm.package.$p.opt-level=3"
done

t0=$SECONDS
# shellcheck disable=SC2086 # WASM_CARGO is a command line
CARGO_TARGET_DIR="$TARGET_DIR" $WASM_CARGO build -p klausur-e2ee-wasm --profile wasm \
  --config 'profile.wasm.inherits="release"' \
  --config "profile.wasm.opt-level=\"$OPT\"" \
  --config 'profile.wasm.lto=true' \
  --config 'profile.wasm.codegen-units=1' \
  --config 'profile.wasm.panic="abort"' \
  $FAST_CRYPTO
echo "build: $((SECONDS - t0)) s"

WASM="$TARGET_DIR/wasm32-unknown-unknown/wasm/klausur_e2ee_wasm.wasm"
rm -rf "$PKG_DIR"
"$WASM_BINDGEN" --target nodejs --remove-name-section --remove-producers-section \
  --out-dir "$PKG_DIR" "$WASM"
BG="$PKG_DIR/klausur_e2ee_wasm_bg.wasm"
# The browser package: an ES module with an explicit init (the worker passes the .wasm URL
# that Vite emits). Written to a temporary directory first, so a failed run never leaves a
# half-written package for Vite.
rm -rf "$WEB_PKG_DIR.tmp"
"$WASM_BINDGEN" --target web --remove-name-section --remove-producers-section \
  --out-dir "$WEB_PKG_DIR.tmp" "$WASM"
rm -f "$WEB_PKG_DIR.tmp/.gitignore" "$WEB_PKG_DIR.tmp/package.json"
rm -rf "$WEB_PKG_DIR"
mv "$WEB_PKG_DIR.tmp" "$WEB_PKG_DIR"

size() { stat -c %s "$1"; }
gz() { gzip -9 -c "$1" | wc -c; }
echo "wasm (opt-level $OPT, lto): raw (with name section) $(size "$WASM") bytes"
echo "after wasm-bindgen:       $(size "$BG") bytes, gzip -9 $(gz "$BG") bytes"
if command -v wasm-opt >/dev/null; then
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-reference-types --enable-multivalue "$BG" -o "$BG.opt"
  echo "after wasm-opt -Oz:       $(size "$BG.opt") bytes, gzip -9 $(gz "$BG.opt") bytes (not used)"
  rm -f "$BG.opt"
fi

# Size budget of the encryption worker's wasm (after wasm-bindgen), recorded in BENCHMARKS.md.
BUDGET="${WASM_BUDGET_BYTES:-1800000}"
if [ "$(size "$BG")" -gt "$BUDGET" ]; then
  echo "wasm size budget exceeded: $(size "$BG") bytes > $BUDGET bytes" >&2
  exit 1
fi
if [ "$(size "$WEB_PKG_DIR/klausur_e2ee_wasm_bg.wasm")" -gt "$BUDGET" ]; then
  echo "wasm size budget exceeded (web package)" >&2
  exit 1
fi
echo "within the size budget of $BUDGET bytes"

[ "$RUN_TESTS" = 1 ] || exit 0

KLAUSUR_E2EE_WASM_PKG="$PKG_DIR" node --test crates/klausur-e2ee-wasm/tests/node/run.mjs
