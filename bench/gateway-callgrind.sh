#!/usr/bin/env bash
# Instructions per request of `sluice serve`, counted by `valgrind --tool=callgrind`: unlike
# latency and CPU time on this shared machine, the count is the same run after run, so two
# builds can be compared by it alone.
#
#   bench/gateway-callgrind.sh                      # target/release/sluice
#   SLUICE=/path/to/other/sluice bench/gateway-callgrind.sh
#   KEEP=/tmp/gw.callgrind bench/gateway-callgrind.sh   # keep the profile for callgrind_annotate
#   FLOOR=forward-hyper bench/gateway-callgrind.sh      # the bare hyper forwarder in its place
#   FLOOR=forward-pass bench/gateway-callgrind.sh       # the same, passing headers both ways
#   PROFILE=dist bench/gateway-callgrind.sh          # both as shipped (fat LTO; any FLOOR too)
#   WRK=1 bench/gateway-callgrind.sh                # under wrk -t1 -c16 (bench/wrk/chat.lua),
#                                                   # the throughput benchmark's load, instead
#
# The gateway runs under callgrind in front of `sluice mock` with no latency; after a warm-up
# (100 requests) the counters are zeroed, 1,000 non-streaming chat completions are sent at
# 100 req/s, and the total is divided by 1,000. The mock and the load generator are the release
# builds of this checkout whatever SLUICE names.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
MOCK=./target/release/sluice # the same upstream whichever gateway build SLUICE names
build_servers
requests=${REQUESTS:-1000}

scenario=$(mktemp)
sed 's/^ttft = .*/ttft = "0ms"/' bench/gateway-mock.toml >"$scenario"
start_mock "$scenario"
rm -f "$scenario"
if [ -n "${FLOOR:-}" ]; then
  # A floor from bench/src/bin in the gateway's place, under the same valgrind and load.
  case $FLOOR in */*) floor=$FLOOR ;; *) floor=./target/$PROFILE/$FLOOR ;; esac
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$floor" 127.0.0.1:0 "$base" \
    >"$out/gw.out" 2>"$out/gw.err" &
  gw_pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$out/gw.out" 2>/dev/null && break; sleep 0.1; done
  gw_base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/gw.out")
else
  start_gateway "$base" valgrind --tool=callgrind --callgrind-out-file="$out/cg.out"
fi
trap 'kill $gw_pid $mock_pid 2>/dev/null; rm -rf "$out"' EXIT
[ -n "$gw_base" ] || { echo "the gateway did not start under valgrind" >&2; cat "$out/gw.err" >&2; exit 1; }

if [ -n "${WRK:-}" ]; then
  # Under the throughput benchmark's load instead: saturated, where a server reads and answers
  # several connections per wake-up. The warm-up is long because under valgrind the tokenizer's
  # tables take seconds to load.
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  wrk -t1 -c16 -d"${WARMUP:-25}s" -s bench/wrk/chat.lua "$gw_base/chat/completions" >/dev/null
  callgrind_control -z "$gw_pid" >/dev/null
  wrk -t1 -c16 -d"${DURATION:-10}s" -s bench/wrk/chat.lua "$gw_base/chat/completions" >"$out/wrk.txt"
  callgrind_control -d "$gw_pid" >/dev/null
  requests=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$out/wrk.txt")
  echo "{\"errors\": ${non2xx:-0}}" >"$out/load.json"
else
  ./target/release/load rate "$gw_base/chat/completions" 50 2 >/dev/null
  callgrind_control -z "$gw_pid" >/dev/null
  ./target/release/load rate "$gw_base/chat/completions" 100 "$((requests / 100))" >"$out/load.json"
  callgrind_control -d "$gw_pid" >/dev/null
fi
sleep 1
dump=$(ls -t "$out"/cg.out* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
if [ -n "${KEEP:-}" ]; then cp "$dump" "$KEEP"; fi
errors=$(sed -n 's/.*"errors": *\([0-9]*\).*/\1/p' "$out/load.json")
echo "{\"binary\": \"${FLOOR:-${SLUICE:-./target/$PROFILE/sluice}}\", \"requests\": $requests, \"errors\": ${errors:-null}, \"instructions\": $total, \"per_request\": $((total / requests))}"
