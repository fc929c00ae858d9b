#!/usr/bin/env bash
# Requests per second through `sluice serve` against the bare hyper forwarders in the same place
# (bench/src/hyper_floor.rs: `forward-hyper` drops the upstream's headers, `forward-pass` passes
# headers both ways as the gateway must), all in front of the same `sluice mock` with no
# latency, under `wrk -t1 -c16` (issue 13: the gateway must keep >= 0.9x the forwarder's
# throughput). The three are measured in turn, ROUNDS times; each ratio is the median over
# rounds of gateway / forwarder of the same round, because on this shared 2-core machine (wrk,
# the mock and the server under test share it) one run moves by several percent on its own.
#
#   bench/gateway-throughput.sh        # ROUNDS=5 DURATION=5s CONNS=16
#   SLUICE=/path/to/sluice bench/gateway-throughput.sh
#   PROFILE=dist bench/gateway-throughput.sh   # the gateway and the floors as shipped (fat LTO)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
source bench/lib.sh
build_servers
MOCK=./target/release/sluice # the same upstream whichever gateway build SLUICE names
start_wrk_pair

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
for u in "$gw_base" "$hy_base" "$hp_base"; do
  wrk -t1 -c"$CONNS" -d2s -s bench/wrk/chat.lua "$u/chat/completions" >/dev/null
done
: >"$out/rounds.txt"
for r in $(seq "$ROUNDS"); do
  g=$(rps "$gw_base")
  h=$(rps "$hy_base")
  p=$(rps "$hp_base")
  echo "round $r: gateway $g req/s, bare hyper $h req/s, passing headers $p req/s" >&2
  echo "$g $h $p" >>"$out/rounds.txt"
done
python3 - "$out/rounds.txt" "$CONNS" "$DURATION" <<'PY'
import statistics as st, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
g, h, p = (st.median(r[i] for r in rows) for i in range(3))
to_h = st.median(r[0] / r[1] for r in rows)
to_p = st.median(r[0] / r[2] for r in rows)
print(f"gateway {g:,.0f} req/s; bare hyper forwarder {h:,.0f} req/s, ratio {to_h:.2f}; "
      f"passing headers {p:,.0f} req/s, ratio {to_p:.2f} "
      f"(medians of {len(rows)} rounds and of per-round ratios; wrk -t1 -c{sys.argv[2]} -d{sys.argv[3]})")
PY
