# klausur: the two commands are `make demo` (set up and run the server) and `make test`
# (set up and run every test). Both install what is missing on a Debian machine.

CARGO ?= cargo
SERVER_BIN := target/debug/klausur

.PHONY: demo test setup setup-test wasm web web-check rust-check rust-test rust-and-web-test \
	wasm-and-web-check wasm-test proto-ts e2e browser-test clean

## Set up and start the server on http://127.0.0.1:8080 (SQLite in ./klausur-data).
demo: setup web
	$(CARGO) build --release -p klausur-server
	./target/release/klausur serve --web-root web/dist

## Set up and run every test: format, lints, Rust tests, the fuzz targets type-checked, generated
## types, web build, browser tests.
test: setup-test rust-check rust-and-web-test browser-test

## `make test` builds everything from nothing on a CI machine: incremental compilation's caches
## (about 2.5 GB for the workspace's crates and test binaries) would take disk and time there
## and save nothing. Exported to every target `make test` runs.
test: export CARGO_INCREMENTAL := 0

setup:
	./scripts/setup.sh

setup-test:
	./scripts/setup.sh --with-browser

## The e2ee core in WebAssembly for the browser's encryption worker (web/src/e2ee/pkg, generated)
## and for Node (target/wasm-pkg); installs Debian's rustc-web toolchain and wasm-bindgen-cli if
## missing (scripts/setup-wasm.sh).
wasm:
	crates/klausur-e2ee-wasm/build.sh --no-test

web: setup wasm
	cd web && npm run build

web-check: setup wasm
	cd web && npm run typecheck && npm test && npm run build

rust-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Eight tests at a time on two cores: most server tests wait on real time (telephone calls at
## the speed of speech, timeouts, restarts, a cluster's leases), not on the CPU: the server tests
## take 106 s with eight (about 60 s of CPU), 177 s with four. Every test binary runs even when one
## fails (--no-fail-fast): a failure in one crate's tests hides no other's. The test-hooks and
## TypeScript builds select the whole workspace and then only their test target, so every
## dependency's features are resolved as for `cargo test --workspace` and only the crates the
## feature changes are compiled again (in a fresh clone: 4 crates for test-hooks, under a minute
## with its tests). With `-p klausur-server` Cargo resolved that package's graph alone and
## compiled about 175 crates a second time (twice the time, and the disk that ran out on a CI
## machine).
TEST_HOOKS_BUILD := $(CARGO) test --workspace --features klausur-server/test-hooks --test media_faults
TS_TEST := $(CARGO) test --workspace --features klausur-proto/ts --test typescript
rust-test:
	$(CARGO) test --workspace --no-fail-fast -- --test-threads=8
	$(TEST_HOOKS_BUILD)
	$(TS_TEST)

## The Rust tests take about 210 s on two cores of which they compute about 90: once they are
## built, the WebAssembly core is built and tested and the web client checked beside them.
## Its output follows theirs (target/wasm-and-web-check.log); either failing fails the target.
## A failed Rust test's name and panic are printed again at the end (from target/rust-test.log),
## after the web check's output, so that the tail of a long CI output says what failed.
rust-and-web-test:
	$(CARGO) test --workspace --no-run
	@echo "make wasm-and-web-check (beside the Rust tests, output in target/wasm-and-web-check.log)"
	@$(MAKE) --no-print-directory wasm-and-web-check > target/wasm-and-web-check.log 2>&1 & web=$$!; \
	{ $(MAKE) --no-print-directory rust-test; echo $$? > target/rust-test.rc; } 2>&1 | tee target/rust-test.log; \
	rust=$$(cat target/rust-test.rc); \
	wait $$web; web_rc=$$?; \
	echo "--- make wasm-and-web-check (exit $$web_rc):"; cat target/wasm-and-web-check.log; \
	if [ "$$rust" -ne 0 ]; then echo "--- Rust tests failed (exit $$rust; the whole output is above and in target/rust-test.log):"; \
		scripts/rust-failures.sh target/rust-test.log; fi; \
	test $$rust -eq 0 && test $$web_rc -eq 0

wasm-and-web-check:
	$(MAKE) --no-print-directory wasm-test
	$(MAKE) --no-print-directory web-check

## The e2ee core compiled to WebAssembly: RFC 9605 vectors and group scenarios under Node,
## and the size budget (installs Debian's rustc-web toolchain and wasm-bindgen-cli if missing).
wasm-test:
	crates/klausur-e2ee-wasm/build.sh

## Regenerate web/src/signaling/protocol.ts from crates/klausur-proto.
proto-ts:
	KLAUSUR_WRITE_TS=1 $(TS_TEST)

## Browser tests against the test-hooks builds: the server with the RTP payload recorder and the
## malicious-server hooks (cargo feature test-hooks; built as the binary of the test that needs
## the same feature, so that after `rust-test` it is there already: `cargo build` would compile
## the server crate once more, about a minute), and web/dist-test beside web/dist. First,
## the production bundle is checked for the test-hooks plaintext paths (web/scripts/check-bundles.mjs).
## `make e2e` checks and builds the web client first; `make test` has done so by then.
e2e: web-check browser-test

browser-test:
	$(TEST_HOOKS_BUILD) --no-run
	cd web && npm run build:test-hooks
	cd web && npm run check:bundles
	cd web && { KLAUSUR_BIN=$(CURDIR)/$(SERVER_BIN) npm run test:e2e || { node scripts/failures.mjs; exit 1; }; }

clean:
	$(CARGO) clean
	rm -rf web/dist web/node_modules

## Benchmark (klausur-bench): real WebRTC peers against a release build of the server; prints a
## Markdown table and updates BENCHMARKS.md (standard set: meeting 4 and meeting 10).
.PHONY: bench
bench:
	$(CARGO) build --release -p klausur-server -p klausur-bench
	./target/release/klausur-bench --server-bin target/release/klausur --json target/bench.json standard --markdown BENCHMARKS.md

## Benchmark of the telephone dial-in gateway (klausur-bench dialin, issue 18): a `klausur
## sip-gateway` process alone on CPU 0, meetings of 5 end-to-end encrypted members and 40 SIP
## callers; CPU per call, calls per core, one-way delay both ways, gaps under 1 % trunk loss.
## About 2.5 minutes after the build; updates the dial-in section of BENCHMARKS.md.
.PHONY: bench-dialin
bench-dialin:
	$(CARGO) build --release -p klausur-server -p klausur-bench
	./target/release/klausur-bench --server-bin target/release/klausur --json target/bench-dialin.json dialin --markdown BENCHMARKS.md

## Large end-to-end encrypted meetings (klausur-bench large, issue 21): meetings of 50 and 100
## native participants with real MLS and SFrame; join time of the last joiner until its first
## decrypted frame, commit and Welcome sizes, rekeying after a leave, server CPU during joins.
## Prints Markdown tables (copied into BENCHMARKS.md, "Large encrypted meetings"). Honours
## CARGO_TARGET_DIR.
.PHONY: bench-large
bench-large:
	$(CARGO) build --release -p klausur-server -p klausur-bench
	dir=$${CARGO_TARGET_DIR:-target}; \
	$$dir/release/klausur-bench --server-bin $$dir/release/klausur --json $$dir/bench-large.json large --members 50,100

## Browser figures (not part of `make test`): the Playwright tests tagged `@figures`, run alone
## by `npm run bench:browser` against the test-hooks builds as in `make e2e`. They record, and
## assert nothing that another browser test does not: in Chromium (web/e2e/e2ee.spec.ts) the
## lobby admit to the first decrypted frame and the encryption worker's cost per frame (mean,
## median, p90), also with the measured browser alone on CPU 0, and processing a commit in a
## group of 100 in the worker; in Firefox (web/e2e/firefox.spec.ts) the worker's cost per frame,
## also alone on CPU 0; the servers are started cross-origin isolated
## (KLAUSUR_CROSS_ORIGIN_ISOLATED=1, for the worker's fine timer). Writes web/test-results/
## e2ee-figures*.json and e2ee-commit-figures.json (quoted in BENCHMARKS.md, "End-to-end
## encryption cost"). About 4 minutes after the builds. Honours
## CARGO_TARGET_DIR.
.PHONY: bench-browser
bench-browser: setup-test wasm
	$(CARGO) build -p klausur-server --features test-hooks
	cd web && npm run build && npm run build:test-hooks
	dir=$$(realpath -m $${CARGO_TARGET_DIR:-target}); \
	cd web && KLAUSUR_BIN=$$dir/debug/klausur npm run bench:browser

## Soak test (klausur-bench soak, issue 19): 200 simulated participants (audio and video) join
## and leave 40 meetings of 5 for 5 minutes, after a 30 s warm-up round that sets the memory
## baseline; fails on a server ERROR line, a meeting, connection, room or peer left afterwards,
## memory above the baseline by more than max(10 %, 16 MiB), or more than 1 % failed joins.
## About 7 minutes after the build; updates the soak section of BENCHMARKS.md. Honours
## CARGO_TARGET_DIR.
.PHONY: soak
soak:
	$(CARGO) build --release -p klausur-server -p klausur-bench
	dir=$${CARGO_TARGET_DIR:-target}; \
	$$dir/release/klausur-bench --server-bin $$dir/release/klausur --json $$dir/soak.json soak --markdown BENCHMARKS.md

## Fuzzing (cargo-fuzz, libFuzzer; docs/security.md): signaling decoding, the room core, the MLS
## delivery service, the meeting's rules, configuration, the audit chain, and the dial-in gateway's SIP message check,
## SDP parser and voice menu; FUZZ_SECONDS each (default 60), from the seeds in fuzz/seeds (new
## inputs go to fuzz/corpus, crashes to fuzz/artifacts; neither is tracked), with the dictionary
## in fuzz/dicts where a target has one. `make fuzz FUZZ_TARGETS=room` runs one. cargo-fuzz needs
## nightly compiler flags (sanitizers); the machine's stable toolchain is told to accept them with
## RUSTC_BOOTSTRAP=1. Installs cargo-fuzz if missing. `make fuzz-build` only builds every target;
## `make fuzz-check` type-checks them (in `make test` clippy does: fuzz/ is a workspace member).
## The targets are built without the release profile's fat LTO (FUZZ_PROFILE): nine fuzzer
## binaries linked with whole-program optimization would take minutes each and find nothing more.
FUZZ_SECONDS ?= 60
FUZZ_PROFILE = CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
FUZZ_TARGETS ?= signaling_decode room delivery meeting config audit_chain sip_inspect sip_sdp ivr
.PHONY: fuzz fuzz-build fuzz-check
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t && \
		dict=$$(test -f dicts/$$t.dict && echo -dict=dicts/$$t.dict); \
		RUSTC_BOOTSTRAP=1 $(FUZZ_PROFILE) $(CARGO) fuzz run -O $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=60 $$dict || exit 1; \
	done

fuzz-build:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && RUSTC_BOOTSTRAP=1 $(FUZZ_PROFILE) $(CARGO) fuzz build -O

## Type-checks every fuzz target, without the sanitizer flags `cargo fuzz check` adds; it needs no
## cargo-fuzz. `make test` does not call it: `rust-check`'s clippy covers the workspace, fuzz/
## included, so a moved path breaks the build at once.
fuzz-check:
	$(CARGO) check -p klausur-fuzz --bins
