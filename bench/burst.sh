#!/usr/bin/env bash
# Admission at the limit against each way an upstream may charge (issue 14): a 1,000-request
# burst through `sluice batch run` into `sluice mock` at 100 req/s and 10,000 tokens/s with a
# one-second burst window, `max_tokens` 100, 20 tokens generated per answer, 80 ms to first
# token. Targets: 0 lost, <= 10 upstream 429s, wall <= 1.05x the ideal under that charging rule.
# Untold, sluice learns each rule from the server's `x-ratelimit-remaining-tokens`; the `-told`
# modes tell it instead (`--prompt-count characters`, `--upstream-refunds`).
#
# The ideal is what the upstream's own buckets allow for what it charged: after the first
# second's burst, requests at 100/s and charged tokens at 10,000/s, whichever takes longer
# (charged tokens from the mock's stats: prompt + max_tokens each when it keeps reservations, the
# tokens really used when it refunds).
#
#   bench/burst.sh            # N=1000; MODES="keep chars refund chars-told refund-told"; KEEP_STATS=PREFIX keeps the mock's stats
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
MODES=${MODES:-keep chars refund chars-told refund-told}
cargo build --release --quiet -p sluice-cli
source bench/lib.sh

python3 - "$N" >"${TMPDIR:-/tmp}/burst-input.$$" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "max_tokens": 100,
                 "messages": [{"role": "user", "content": f"Tell me something about item number {i}, please."}]}}))
PY
input_src="${TMPDIR:-/tmp}/burst-input.$$"

for mode in $MODES; do
  flags=
  case $mode in
    keep) charging='charge = "max_tokens"' ;;
    chars) charging=$'charge = "max_tokens"\nprompt_count = "characters"' ;;
    chars-told) charging=$'charge = "max_tokens"\nprompt_count = "characters"'; flags="--prompt-count characters" ;;
    refund) charging='charge = "refund_unused"' ;;
    refund-told) charging='charge = "refund_unused"'; flags=--upstream-refunds ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  scenario=$(mktemp)
  cat >"$scenario" <<TOML
[limits]
rpm = 6000
tpm = 600000
burst = "1s"
$charging
[latency]
ttft = "80ms"
per_token = "0ms"
[output]
min_tokens = 20
max_tokens = 20
TOML
  start_mock "$scenario"
  rm -f "$scenario"
  cp "$input_src" "$out/in.jsonl"
  start=$(date +%s.%N)
  BENCH_KEY=sk-bench-burst-0001 ./target/release/sluice batch run "$out/in.jsonl" --base-url "$base" \
    --api-key-env BENCH_KEY --ledger off --progress off $flags --summary-json "$out/summary.json" >/dev/null 2>"$out/batch.err" || true
  end=$(date +%s.%N)
  curl -s "$root/_mock/stats" >"$out/stats.json"
  [ -n "${KEEP_STATS:-}" ] && cp "$out/stats.json" "$KEEP_STATS.$mode.json"
  python3 - "$mode" "$start" "$end" "$out/summary.json" "$out/stats.json" "$N" <<'PY'
import json, sys
mode, start, end, summary, stats, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
s = json.load(open(summary)); st = json.load(open(stats))
wall = end - start
charged = st["tokens"]["charged"]
ideal = max((n - 100) / 100.0, (charged - 10_000) / 10_000.0)
print(json.dumps({"mode": mode, "succeeded": s["succeeded"], "failed": s["failed"],
    "upstream_429s": st["by_status"].get("429", 0), "charged_tokens": charged,
    "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "ratio": round(wall / ideal, 3)}))
PY
  kill "$mock_pid" 2>/dev/null || true
  wait "$mock_pid" 2>/dev/null || true
  rm -rf "$out"
done
rm -f "$input_src"
