#!/usr/bin/env bash
# sluice batch end to end (issue 5): requests/s through `sluice batch run` against `sluice mock`
# (another process, latency off, limits far away), and the peak RSS of a 1,000,000-line job.
# Targets: >= 20,000 req/s on this 2-core machine (the mock sharing it); peak RSS < 100 MB.
#
#   bench/batch.sh            # N=200000 for the rate, 1000000 for the memory run
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
BIG=${BIG:-1000000}
# In flight: with latency off, 64 saturate the mock; more only add contention (the default 256
# is for real upstreams, whose latency is seconds).
CONC=${CONC:-64}
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cargo build --release --quiet -p sluice-cli
# SLUICE: the binary under test (default this tree's release build; set it to compare builds).
SLUICE=${SLUICE:-./target/release/sluice}

source bench/lib.sh
start_mock examples/mock/throughput.toml


job() { # FILE LABEL
  /usr/bin/time -f "%e %M %U %S" -o "$out/time.txt" "$SLUICE" batch run "$1" \
    --base-url "$base" --api-key-env BENCH_KEY --concurrency "$CONC" --progress off >"$out/$2.txt" 2>/dev/null
  read -r wall rss_kb user sys <"$out/time.txt"
  lines=$(wc -l <"$1")
  echo "$2: $lines requests in ${wall}s = $(python3 -c "print(round($lines/$wall))") req/s; peak RSS $((rss_kb / 1024)) MB; batch process CPU $(python3 -c "print(round(($user + $sys) / $lines * 1e6))") µs/request"
}

export BENCH_KEY=sk-bench-batch-00001
chat_lines "$N" "$out/rate.jsonl"
job "$out/rate.jsonl" rate
chat_lines "$BIG" "$out/big.jsonl"
job "$out/big.jsonl" big
