#!/usr/bin/env bash
# Memory under a long run (issue 15): `sluice serve` in front of `sluice mock` (no latency, limits
# far away) at full load from wrk, ROUNDS rounds of SECONDS_PER_ROUND, the gateway's resident
# memory (VmRSS) read after each round, with the ledger kept in SQLite (default), in Redis
# (LEDGER=redis, REDIS_URL) or off (LEDGER=off, the baseline of the same run when LEDGER=all).
# Target: RSS growth <= 10% between the second round and the last, ledger on. Then the batch
# runner: BATCH_LINES lines through `sluice batch run` against the same fast mock, its peak RSS against the
# same run with a tenth of the lines (a runner whose memory grows with the input shows it).
#
#   bench/soak.sh                # LEDGER=all ROUNDS=8 SECONDS_PER_ROUND=15 CONNS=64 BATCH_LINES=200000
#   SLUICE=path/to/sluice bench/soak.sh   # another build of the binary
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-8}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-15}
CONNS=${CONNS:-64}
LEDGER=${LEDGER:-all}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
BATCH_LINES=${BATCH_LINES:-200000}
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli
SLUICE=${SLUICE:-./target/release/sluice}
source bench/lib.sh

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# soak MODE: one gateway, ROUNDS rounds; prints "MODE: r1 r2 ... (MB) requests growth".
soak() {
  local mode=$1
  case $mode in
    sqlite) GW_EXTRA="" ;;
    redis) GW_EXTRA=$'[spend]\n'"redis_url = \"$REDIS_URL\""$'\n'"redis_prefix = \"sluice-soak-$$\"" ;;
    off) GW_EXTRA=$'[spend]\nledger = "off"' ;;
  esac
  start_mock examples/mock/throughput.toml
  GW_EXTRA=$GW_EXTRA start_gateway "$base"
  trap 'kill $mock_pid $gw_pid 2>/dev/null; rm -rf "$out"' EXIT
  local rounds=() total=0
  for r in $(seq "$ROUNDS"); do
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_ROUND}s" -s bench/wrk/chat.lua "$gw_base/chat/completions" >"$out/wrk.txt"
    total=$((total + $(awk '/requests in/ {print $1}' "$out/wrk.txt")))
    rounds+=("$(rss_kb "$gw_pid")")
  done
  python3 - "$mode" "$total" "${rounds[@]}" <<'PY'
import sys
mode, total, kb = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
mb = [k / 1024 for k in kb]
growth = (kb[-1] - kb[1]) / kb[1] * 100
print(f"gateway, ledger {mode}: RSS after each round {' '.join(f'{m:.1f}' for m in mb)} MB; "
      f"{total:,} requests; round 2 -> last {growth:+.1f}%")
PY
  kill "$gw_pid" "$mock_pid" 2>/dev/null || true
  wait "$gw_pid" "$mock_pid" 2>/dev/null || true
  rm -rf "$out"
  trap - EXIT
}

if [ "$LEDGER" = all ]; then
  for m in off sqlite redis; do soak "$m"; done
else
  soak "$LEDGER"
fi

# The batch runner: peak RSS for N lines and for N/10.
batch_peak() {
  local n=$1 dir
  dir=$(mktemp -d)
  chat_lines "$n" "$dir/in.jsonl"
  SOAK_KEY=sk-soak-batch-0001 SLUICE_LEDGER=off SLUICE_DATA_DIR="$dir" /usr/bin/time -f "%M" -o "$dir/peak" \
    "$SLUICE" batch run "$dir/in.jsonl" --base-url "$base" --api-key-env SOAK_KEY \
    --output "$dir/out.jsonl" --state-dir "$dir/state" --progress off --models-check-every 0s >/dev/null 2>"$dir/err" || {
    cat "$dir/err" >&2
  }
  echo "$(cat "$dir/peak") $(wc -l <"$dir/out.jsonl")"
  rm -rf "$dir"
}
if [ "$BATCH_LINES" -gt 0 ]; then
  start_mock examples/mock/throughput.toml
  read -r small_kb small_out <<<"$(batch_peak $((BATCH_LINES / 10)))"
  read -r big_kb big_out <<<"$(batch_peak "$BATCH_LINES")"
  python3 -c "print(f'batch runner: peak RSS {$small_kb/1024:.1f} MB for {$small_out:,} lines, {$big_kb/1024:.1f} MB for {$big_out:,} lines ({$big_kb/$small_kb:.2f}x for 10x the lines)')"
fi
