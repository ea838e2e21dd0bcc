#!/usr/bin/env bash
# make demo: starts hermes and sophia on free ports, runs every apollo command against them,
# shows each result with its trace id, and stops the services, also when a step fails.
# With OTEL_EXPORTER_OTLP_ENDPOINT set (after `make otel-up`) it prints each trace's Jaeger link.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug"
jaeger="${JAEGER_UI_URL:-http://localhost:16686}"
work="$(mktemp -d)"
pids=()

stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT INT TERM

# Starts a service on a free port and prints its URL, read from its one `listening on` line.
start() {
  local name="$1"; shift
  "$bin/$name" --port 0 "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=("$!")
  for _ in $(seq 100); do
    if grep -q "listening on" "$work/$name.out" 2>/dev/null; then
      sed -n 's/.*listening on //p' "$work/$name.out"
      return
    fi
    sleep 0.1
  done
  echo "demo: $name did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

HERMES_URL="$(start hermes)"
SOPHIA_URL="$(start sophia --hermes-url "$HERMES_URL")"
export HERMES_URL SOPHIA_URL
echo "hermes at $HERMES_URL, sophia at $SOPHIA_URL"
if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  echo "exporting to $OTEL_EXPORTER_OTLP_ENDPOINT; traces open in $jaeger"
else
  echo "no OTEL_EXPORTER_OTLP_ENDPOINT: traced, not exported (run 'make otel-up' and set it to see them)"
fi

# Runs one apollo command, shows its output, and the Jaeger link of its trace when exporting.
run() {
  echo
  echo "\$ apollo $*"
  "$bin/apollo" "$@" | tee "$work/last"
  local trace_id
  trace_id="$(sed -n 's/^trace_id: //p' "$work/last")"
  if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ] && [ -n "$trace_id" ]; then
    echo "jaeger: $jaeger/trace/$trace_id"
  fi
}

run status
run plan "Pick up the red block, then place it on the table and report the result."
plan_id="$(sed -n 's/^plan \([0-9a-f-]*\):.*/\1/p' "$work/last")"
run simulate "$plan_id" --steps 4
run embed "a red block on the table"
run search "red block" --top-k 3
run chat "Summarise the plan in one line." --max-tokens 16
echo
echo "demo: done; stopping hermes and sophia"
