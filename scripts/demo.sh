#!/usr/bin/env bash
# make demo: starts `apollo serve` as the OTLP receiver, then hermes and sophia exporting to it,
# runs every apollo command against them, prints the waterfalls of `plan` and `chat` from
# Apollo's diagnostics window and the page's address, and stops everything, also when a step
# fails. On a terminal it waits for Enter first, so the page can be opened.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug"
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
  "$bin/$name" "$@" >"$work/$name.out" 2>"$work/$name.log" &
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

if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  echo "demo: Apollo is the receiver here; OTEL_EXPORTER_OTLP_ENDPOINT=$OTEL_EXPORTER_OTLP_ENDPOINT is not used"
fi
# Apollo first: the others export to it. Short batch delays, so the window fills as you watch.
APOLLO_URL="$(start apollo serve --port 0)"
export APOLLO_URL OTEL_EXPORTER_OTLP_ENDPOINT="$APOLLO_URL"
export OTEL_BSP_SCHEDULE_DELAY=200 OTEL_METRIC_EXPORT_INTERVAL=2000
HERMES_URL="$(start hermes --port 0)"
SOPHIA_URL="$(start sophia --port 0 --hermes-url "$HERMES_URL")"
export HERMES_URL SOPHIA_URL
echo "apollo serve at $APOLLO_URL (the OTLP receiver), hermes at $HERMES_URL, sophia at $SOPHIA_URL"

# Runs one apollo command and shows its output.
run() {
  echo
  echo "\$ apollo $*"
  "$bin/apollo" "$@" | tee "$work/last"
}

# Shows the waterfall of the last command's trace once the spans of the services it crossed
# ("apollo, hermes, sophia") are in.
waterfall() {
  local services="$1"
  local trace_id
  trace_id="$(sed -n 's/^trace_id: //p' "$work/last")"
  [ -n "$trace_id" ] || return 0
  for _ in $(seq 50); do
    "$bin/apollo" trace "$trace_id" >"$work/trace" 2>&1 || true
    if head -1 "$work/trace" | grep -qF "services ($services)"; then break; fi
    sleep 0.1
  done
  echo
  echo "\$ apollo trace $trace_id"
  cat "$work/trace"
}

run status
run plan "Pick up the red block, then place it on the table and report the result."
plan_id="$(sed -n 's/^plan \([0-9a-f-]*\):.*/\1/p' "$work/last")"
waterfall "apollo, hermes, sophia"
run simulate "$plan_id" --steps 4
run embed "a red block on the table"
run search "red block" --top-k 3
run chat "Summarise the plan in one line." --max-tokens 16
waterfall "apollo, hermes"
echo
echo "\$ apollo traces --limit 5"
"$bin/apollo" traces --limit 5
echo
echo "Every trace, live: $APOLLO_URL/diagnostics (one trace: $APOLLO_URL/diagnostics?trace=<trace_id>)"
if [ -t 0 ]; then
  read -r -p "Press Enter to stop apollo, sophia and hermes. " _
fi
echo "demo: done; stopping apollo, hermes and sophia"
