#!/usr/bin/env bash
# Two gateway replicas in front of one rate-limited upstream (issue 16): 600 requests split
# between two `sluice serve` processes (open-loop, bench/src/bin/load.rs, 20 req/s offered to
# each for 15 s) in front of a `sluice mock` that allows 1,200 rpm (20 req/s, one-second
# windows) — once with each replica on its own, once sharing `[state]` in Redis. Counts what the
# upstream answered 429 and what the callers saw fail. Target: 0 failed, <= 1% upstream 429s.
#
#   bench/replicas.sh          # REDIS_URL=redis://127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli -p sluice-bench
SLUICE=${SLUICE:-./target/release/sluice}
source bench/lib.sh
printf '[limits]\nrpm = 1200\ntpm = 100000000\nburst = "1s"\n' >"${TMPDIR:-/tmp}/replicas-mock.$$.toml"

run() { # shared|separate
  start_mock "${TMPDIR:-/tmp}/replicas-mock.$$.toml"
  local state=""
  [ "$1" = shared ] && state=$'[state]\n'"redis_url = \"$REDIS_URL\""$'\n'"prefix = \"sluice-bench-replicas-$$-$RANDOM\""
  cat >"$out/gw.toml" <<TOML
listen = "127.0.0.1:0"
[upstream]
base_url = "$base"
keys = [{ value = "sk-bench-replicas-01" }]
rpm = 1200
[models]
check_upstream_every = "0s"
$state
TOML
  local urls=() pids=()
  for n in a b; do
    start_serve "$n" "$out/gw.toml"
    urls+=("$serve_url")
  done
  local t0 t1
  t0=$(date +%s.%N)
  ./target/release/load rate "${urls[0]}/chat/completions" 20 15 >"$out/a.json" &
  local la=$!
  ./target/release/load rate "${urls[1]}/chat/completions" 20 15 >"$out/b.json"
  wait "$la"
  t1=$(date +%s.%N)
  curl -s "$root/_mock/stats" >"$out/stats.json"
  python3 - "$1" "$out/a.json" "$out/b.json" "$out/stats.json" "$t0" "$t1" <<'PY'
import json, sys
mode, a, b, stats, t0, t1 = sys.argv[1], *map(lambda p: json.load(open(p)), sys.argv[2:5]), float(sys.argv[5]), float(sys.argv[6])
sent = a["requests"] + b["requests"]
failed = a["errors"] + b["errors"]
up429 = int(stats["by_status"].get("429", 0))
print(f"{mode:9} replicas: {sent} requests, {failed} failed, upstream 429s {up429} ({up429 / sent * 100:.1f}%), "
      f"wall {t1 - t0:.1f} s, p99 {max(a['p99_ms'], b['p99_ms']) / 1000:.1f} s")
PY
  kill "${pids[@]}" "$mock_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$out"
  trap - EXIT
}
run separate
run shared
rm -f "${TMPDIR:-/tmp}/replicas-mock.$$.toml"
