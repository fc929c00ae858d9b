#!/usr/bin/env bash
# How many non-streaming chat completions per second `sluice mock` sustains on loopback, latency
# off, keep-alive on, measured with wrk. The baseline, measured in the same run against the same
# server, is GET /_mock/health: the ratio says how much of the raw HTTP capacity the chat path
# keeps. Target (issue 2): >= 20,000 chat req/s on a 2-core machine, wrk sharing it. A third run
# sends a ~2,000-token system prompt with each request (bench/wrk/chat-long.lua): its ratio to
# the short chat says what counting long prompts costs (issue 14).
#
#   bench/mock-throughput.sh            # DURATION=10s CONNS=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli

source bench/lib.sh
start_mock examples/mock/throughput.toml

run() { # name url script
  wrk -t1 -c"$CONNS" -d"$DURATION" -s "$3" "$2" >"$out/$1.txt"
  local rps non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out/$1.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out/$1.txt")
  echo "$1: ${rps} req/s (non-2xx: ${non2xx:-0}); $(grep -E '^ +Latency' "$out/$1.txt" | xargs)" >&2
  echo "$rps"
}

# Warm up (tokenizer tables, connection setup), then measure.
wrk -t1 -c"$CONNS" -d2s -s bench/wrk/chat.lua "http://$addr/v1/chat/completions" >/dev/null
base=$(run health "http://$addr/_mock/health" bench/wrk/health.lua)
chat=$(run chat "http://$addr/v1/chat/completions" bench/wrk/chat.lua)
long=$(run chat-long "http://$addr/v1/chat/completions" bench/wrk/chat-long.lua)
ratio=$(python3 -c "print(f'{$chat/$base:.2f}')")
long_ratio=$(python3 -c "print(f'{$long/$chat:.2f}')")
echo "mock chat completions: $chat req/s; baseline /_mock/health: $base req/s; ratio $ratio"
echo "with a ~2,000-token system prompt: $long req/s; ratio to the short chat $long_ratio"
echo "(wrk -t1 -c$CONNS -d$DURATION, $(nproc) cores shared by wrk and the mock)"
