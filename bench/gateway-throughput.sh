#!/usr/bin/env bash
# Requests per second through `sluice serve` against the bare hyper forwarder in the same place
# (bench/src/bin/forward_hyper.rs), both in front of the same `sluice mock` with no latency,
# under `wrk -t1 -c16` (issue 13: the gateway must keep >= 0.9x the forwarder's throughput).
# The two are measured in turn, ROUNDS times; the ratio is the median over rounds of
# gateway / forwarder of the same round, because on this shared 2-core machine (wrk, the mock
# and the server under test share it) one run moves by several percent on its own.
#
#   bench/gateway-throughput.sh        # ROUNDS=5 DURATION=5s CONNS=16
#   SLUICE=/path/to/sluice bench/gateway-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --quiet -p sluice-cli -p sluice-bench --bins
source bench/lib.sh

scenario=$(mktemp)
sed 's/^ttft = .*/ttft = "0ms"/' bench/gateway-mock.toml >"$scenario"
start_mock "$scenario"
rm -f "$scenario"
start_gateway "$base"
./target/release/forward-hyper 127.0.0.1:0 "$base" >"$out/hyper.out" 2>/dev/null &
hy_pid=$!
trap 'kill $mock_pid $gw_pid $hy_pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/hyper.out" 2>/dev/null && break; sleep 0.1; done
hy_base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/hyper.out")
[ -n "$gw_base" ] && [ -n "$hy_base" ] || { echo "a server did not start" >&2; exit 1; }

rps() { # url
  wrk -t1 -c"$CONNS" -d"$DURATION" -s bench/wrk/chat.lua "$1/chat/completions" >"$out/wrk.txt"
  if grep -q "Non-2xx" "$out/wrk.txt"; then
    echo "non-2xx answers from $1:" >&2
    cat "$out/wrk.txt" >&2
    exit 1
  fi
  awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt"
}
# Warm up both paths (connections, the gateway learning the upstream's limits).
for u in "$gw_base" "$hy_base"; do
  wrk -t1 -c"$CONNS" -d2s -s bench/wrk/chat.lua "$u/chat/completions" >/dev/null
done
: >"$out/rounds.txt"
for r in $(seq "$ROUNDS"); do
  g=$(rps "$gw_base")
  h=$(rps "$hy_base")
  echo "round $r: gateway $g req/s, bare hyper $h req/s" >&2
  echo "$g $h" >>"$out/rounds.txt"
done
python3 - "$out/rounds.txt" "$CONNS" "$DURATION" <<'PY'
import statistics as st, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
g = st.median(r[0] for r in rows)
h = st.median(r[1] for r in rows)
ratio = st.median(r[0] / r[1] for r in rows)
print(f"gateway {g:,.0f} req/s, bare hyper forwarder {h:,.0f} req/s (medians of {len(rows)} rounds); "
      f"ratio {ratio:.2f} (median of per-round ratios; wrk -t1 -c{sys.argv[2]} -d{sys.argv[3]})")
PY
