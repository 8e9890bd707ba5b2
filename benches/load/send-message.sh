#!/usr/bin/env bash
# inboxd under load on loopback: durable Send Message throughput (as many requests as 64
# connections can push), and latency at a fixed 5,000 requests/s.
#
# Needs oha (`cargo install oha --locked`, or OHA=/path/to/oha) and curl. Every answered
# Send Message is durable (fsynced) before its 200.
#
#   benches/load/send-message.sh [seconds per run, default 20]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${1:-20}
OHA=${OHA:-oha}
PORT=${PORT:-18480}
command -v "$OHA" >/dev/null || { echo "needs oha: cargo install oha --locked" >&2; exit 2; }

cargo build --release -p inbox-server
DATA=$(mktemp -d)
target/release/inboxd serve --listen "127.0.0.1:$PORT" --data "$DATA" 2>"$DATA/inboxd.log" &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
B="http://127.0.0.1:$PORT"

CONV=$(curl -sf -X POST "$B/inbox/v2/conversations" \
  -d '{"participantId": {"anonymousVisitorId": "6fa459ea-ee8a-3ca4-894e-db77e160355e"}}' |
  python3 -c 'import sys, json; print(json.load(sys.stdin)["conversation"]["id"])')
BODY="{\"conversationId\": \"$CONV\", \"sendAs\": \"PARTICIPANT\", \"message\": {\"direction\": \"PARTICIPANT_TO_BUSINESS\", \"content\": {\"basic\": {\"items\": [{\"text\": \"Hi! Do you open on Sundays? I would like to book a table for four.\"}]}}}}"

summary() {
  python3 benches/load/summary.py "$1"
}

echo "== throughput: 64 connections, ${SECONDS_PER_RUN}s"
"$OHA" -z "${SECONDS_PER_RUN}s" -c 64 --no-tui --output-format json \
  -m POST -T application/json -d "$BODY" "$B/inbox/v2/messages" | summary "max rate"

echo "== latency at 5,000 requests/s: 64 connections, ${SECONDS_PER_RUN}s"
"$OHA" -z "${SECONDS_PER_RUN}s" -c 64 -q 5000 --latency-correction --no-tui --output-format json \
  -m POST -T application/json -d "$BODY" "$B/inbox/v2/messages" | summary "5000/s"

curl -sf "$B/healthz"; echo
