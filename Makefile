# LOGOS observability: the same commands CI runs.
#
#   make test        format check, clippy, rustdoc, and every test of the workspace (what CI runs)
#   make lint        format check, clippy and rustdoc only
#   make demo        builds, starts hermes and sophia, runs every apollo command, stops them
#   make bench       what telemetry costs: on vs off vs unsampled, as ratios; apollo's receiver (BENCH_QUICK=1: short)
#   make profile     the instructions one request costs in each mode, counted by callgrind (valgrind)
#   make fuzz        the W3C parsers' property tests, about a million cases in all (release build)
#   make soak        the chain under load for SOAK_SECONDS (600) while the receiver stops and starts
#   make run-sophia / run-hermes / run-apollo
#   make otel-up / otel-up-grafana / otel-up-all / otel-down / otel-status / otel-logs / test-live
#                    (infra/stack.mk; otel-up-all also runs the services from ./Dockerfile)

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: test lint fmt demo bench profile fuzz soak run-sophia run-hermes run-apollo

# The last line sums every suite's `test result:` line, so the run ends on one total.
test: lint
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { passed += $$4; failed += $$6; ignored += $$8 } \
		END { printf "%d passed, %d failed, %d skipped\n", passed, failed, ignored }' target/test-output.log

# Clippy twice: with every target (tests turn foundry's `testing` feature on), and with the
# binaries alone, as they are shipped, so that code only the tests use is not dead there. Then the
# doc comments: a broken or private link fails the check.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --lib --bins -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

fmt:
	$(CARGO) fmt --all

demo:
	$(CARGO) build -p hermes -p sophia -p apollo
	./scripts/demo.sh

# Criterion's hot paths first (shorter with BENCH_QUICK=1), so the run ends on the overhead line.
BENCH_CRITERION_ARGS := $(if $(filter 1,$(BENCH_QUICK)),-- --warm-up-time 0.2 --measurement-time 0.5)

# The receiver benchmark pins apollo serve to core 0; its load generator goes to core 1.
PIN_LOAD := $(shell command -v taskset >/dev/null 2>&1 && echo taskset -c 1)

bench:
	$(CARGO) build --release -p hermes -p sophia -p apollo
	$(CARGO) bench -p foundry --bench hot_paths $(BENCH_CRITERION_ARGS)
	$(PIN_LOAD) $(CARGO) run --release -p integration-tests --bin receiver
	$(CARGO) run --release -p integration-tests --bin overhead

profile:
	$(CARGO) build --release -p hermes -p sophia -p apollo
	$(CARGO) run --release -p integration-tests --bin instructions

# Six properties of FUZZ_CASES cases each (`make test` runs proptest's default, 256 each).
FUZZ_CASES ?= 170000

fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p foundry --test foundry fuzz::

# The release chain under load while the OTLP receiver is stopped and started on a schedule
# (SOAK_SECONDS, SOAK_RPS, SOAK_UP_SECONDS, SOAK_DOWN_SECONDS); it ends on one line that accounts
# for every span.
soak:
	$(CARGO) build --release -p hermes -p sophia -p apollo
	$(CARGO) run --release -p integration-tests --bin soak

run-sophia:
	$(CARGO) run -p sophia

run-hermes:
	$(CARGO) run -p hermes

run-apollo:
	$(CARGO) run -p apollo -- serve

include infra/stack.mk
