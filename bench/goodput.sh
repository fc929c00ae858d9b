#!/usr/bin/env bash
# Goodput under a rate limit (issue 4): one mixed workload (chat with varied prompt sizes and
# max_tokens, some embeddings) fired all at once at `sluice mock` with bench/goodput.toml,
# through (a) sluice with admission and (b) the official Python SDK with its default retry
# policy. The mock's limiter is reset between the two. For each: completed, lost, 429s, the
# limiting budget's use, wall time against the ideal.
#
#   bench/goodput.sh           # N=400 requests by default; BURST_SECS, CONC, REFUNDS=told: see bench/src/bin/goodput.rs
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-400}

cargo build --release --quiet -p sluice-cli -p sluice-bench
source bench/lib.sh
ensure_venv
start_mock bench/goodput.toml
"$venv/bin/python" bench/python/make_workload.py "$N" "$out/workload.jsonl"

fresh() { # new limiter state and zeroed counters
  curl -s -X POST --data-binary @bench/goodput.toml "$root/_mock/scenario" >/dev/null
  curl -s -X POST "$root/_mock/reset" >/dev/null
}
fresh
"${CARGO_TARGET_DIR:-./target}/release/goodput" "$base" "$out/workload.jsonl" >"$out/sluice.json"
curl -s "$root/_mock/stats" >"$out/sluice-stats.json"
fresh
"$venv/bin/python" bench/python/goodput_naive.py "$base" "$out/workload.jsonl" >"$out/naive.json"
curl -s "$root/_mock/stats" >"$out/naive-stats.json"

python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
rpm, tpm, burst = 1200, 240000, 2.0   # bench/goodput.toml
for name in ("sluice", "naive"):
    r = json.load(open(os.path.join(d, f"{name}.json")))
    s = json.load(open(os.path.join(d, f"{name}-stats.json")))
    sent = s["requests"]; n429 = s["by_status"].get("429", 0)
    ok = r["completed"]; wall = r["wall_s"]
    used = s["tokens"]["charged"]          # what the upstream finally charged (after refunds)
    # What the upstream allows in `wall` seconds: its burst plus its rate.
    req_use = ok / (rpm / 60 * (wall + burst))
    tok_use = used / (tpm / 60 * (wall + burst))
    limiting, use = ("requests", req_use) if req_use >= tok_use else ("tokens", tok_use)
    ideal = max((r["requests"] / (rpm / 60)) - burst, (used / (tpm / 60)) - burst, 0.0)
    print(f"{r['sender']}: completed {ok}/{r['requests']}, lost {r['lost']}, "
          f"429s {n429} ({100 * n429 / max(sent, 1):.2f}% of {sent} sent), "
          f"{limiting} budget used {100 * use:.1f}%, wall {wall:.1f}s vs ideal {ideal:.1f}s")
PY
