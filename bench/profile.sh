#!/usr/bin/env bash
# The shipped profile against the default release profile (issue 17): the binary's size, and
# throughput of the two paths that matter, both builds measured in alternating rounds of the same
# run against one mock (the release build's): `sluice batch run` on N chat lines (as bench/batch.sh,
# latency off, 64 in flight) and `sluice serve` under wrk -t1 -c64 for SECONDS_PER_ROUND (as
# bench/soak.sh). Prints medians and the ratio dist / release.
#
#   REL=target/release/sluice DIST=target/dist/sluice bench/profile.sh   # N=100000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
REL=${REL:-./target/release/sluice}
DIST=${DIST:-./target/dist/sluice}
N=${N:-100000}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
SLUICE=$REL
source bench/lib.sh
start_mock examples/mock/throughput.toml
chat_lines "$N" "$out/in.jsonl"
export BENCH_KEY=sk-bench-profile-0001
: >"$out/runs.txt"
for r in $(seq "$ROUNDS"); do
  for build in release dist; do
    bin=$REL
    [ "$build" = dist ] && bin=$DIST
    rm -rf "$out/state" "$out/out.jsonl" "$out/err.jsonl"
    t0=$(date +%s.%N)
    SLUICE_LEDGER=off SLUICE_DATA_DIR="$out" "$bin" batch run "$out/in.jsonl" --base-url "$base" \
      --api-key-env BENCH_KEY --concurrency 64 --progress off --models-check-every 0s \
      --output "$out/out.jsonl" --errors "$out/err.jsonl" --state-dir "$out/state" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "batch $build $(python3 -c "print($N / ($t1 - $t0))")" >>"$out/runs.txt"
    SLUICE=$bin start_gateway "$base"
    wrk -t1 -c64 -d2s -s bench/wrk/chat.lua "$gw_base/chat/completions" >/dev/null
    wrk -t1 -c64 -d"${SECONDS_PER_ROUND}s" -s bench/wrk/chat.lua "$gw_base/chat/completions" >"$out/wrk.txt"
    echo "gateway $build $(awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt")" >>"$out/runs.txt"
    kill "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
  done
done
python3 - "$out/runs.txt" "$REL" "$DIST" <<'PY'
import os, statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
for path, name in ((sys.argv[2], "release"), (sys.argv[3], "dist")):
    print(f"{name:8} binary {os.path.getsize(path) / 1e6:.1f} MB ({path})")
for what in ("batch", "gateway"):
    m = {b: st.median(float(v) for w, bb, v in rows if w == what and bb == b) for b in ("release", "dist")}
    each = {b: ", ".join(f"{float(v):.0f}" for w, bb, v in rows if w == what and bb == b) for b in ("release", "dist")}
    print(f"{what:8} release {m['release']:.0f} req/s ({each['release']}), dist {m['dist']:.0f} req/s ({each['dist']}): "
          f"dist/release {m['dist'] / m['release']:.3f}")
PY
