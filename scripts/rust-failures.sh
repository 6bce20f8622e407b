#!/usr/bin/env bash
# Prints what failed in a log of `cargo test --no-fail-fast` (default target/rust-test.log): each
# failed test's name, each panic with the two lines after it (the message), and cargo's list of
# failed targets. `make test` runs it last after failed Rust tests, so that a CI that keeps only
# the tail of a long output still shows what failed.
set -uo pipefail
log="${1:-target/rust-test.log}"
[ -f "$log" ] || { echo "rust-failures: no log $log"; exit 0; }
grep -E "^test .* FAILED$" "$log" | head -20
grep -E -A2 "panicked at" "$log" | grep -v "^note: run with" | head -30
grep -E -A10 "^error: [0-9]+ targets? failed" "$log" | grep -E "^error:|^    \`" | head -12
exit 0
