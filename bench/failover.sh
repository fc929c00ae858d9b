#!/usr/bin/env bash
# What failover costs (issue 16): the latency a request pays when its first upstream refuses the
# connection (breaker off, so every request meets the refusal), and when its first upstream's
# breaker is open (it answered 503s until the breaker opened; the request skips it). Three
# gateways in one run, each in front of the same backup `sluice mock` (20 ms answers,
# bench/gateway-mock.toml): `direct` (the backup as its only upstream: the baseline), `refused`
# (a primary on a port nothing listens on, then the backup) and `open` (a primary whose breaker
# is open, then the backup). Open-loop load (bench/src/bin/load.rs) at RATE req/s for
# ROUND_SECONDS, ROUNDS alternating rounds; the added figures are medians of (path − direct).
#
#   bench/failover.sh            # RATE=200 ROUND_SECONDS=5 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-200}
ROUND_SECONDS=${ROUND_SECONDS:-5}
ROUNDS=${ROUNDS:-3}
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli -p sluice-bench
SLUICE=${SLUICE:-./target/release/sluice}
source bench/lib.sh
start_mock bench/gateway-mock.toml
backup=$base
printf '[faults]\nerror_503 = 1.0\n' >"$out/failing.toml"
"$SLUICE" mock --listen 127.0.0.1:0 --config "$out/failing.toml" >"$out/failing.out" 2>/dev/null &
failing_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$out/failing.out" 2>/dev/null && break; sleep 0.1; done
failing=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/failing.out")
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(f"http://127.0.0.1:{s.getsockname()[1]}/v1")')

# gw NAME TOML: start a gateway; sets url[NAME] and pids.
declare -A url
pids="$mock_pid $failing_pid"
trap 'kill $pids 2>/dev/null; rm -rf "$out"' EXIT
gw() {
  printf '%s\n' "$2" >"$out/$1.toml"
  SLUICE_LEDGER=off SLUICE_DATA_DIR="$out" RUST_LOG=error "$SLUICE" serve --config "$out/$1.toml" >"$out/$1.out" 2>/dev/null &
  pids="$pids $!"
  for _ in $(seq 100); do grep -q "listening on" "$out/$1.out" 2>/dev/null && break; sleep 0.1; done
  url[$1]=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/$1.out")
}
up() { printf '[[upstreams]]\nname = "%s"\nbase_url = "%s"\nkeys = [{ value = "sk-bench-failover-01" }]\npriority = %s\n' "$1" "$2" "$3"; }
gw direct "listen = \"127.0.0.1:0\"
[upstream]
base_url = \"$backup\"
keys = [{ value = \"sk-bench-failover-01\" }]"
gw refused "listen = \"127.0.0.1:0\"
[upstream]
breaker = { enabled = false }
$(up primary "$closed" 0)
$(up backup "$backup" 1)"
gw open "listen = \"127.0.0.1:0\"
[upstream]
breaker = { failures = 3, failing_for = \"0s\", cooldown = \"10m\", max_cooldown = \"10m\" }
$(up primary "$failing" 0)
$(up backup "$backup" 1)"
# Warm up every path (and open the third one's breaker).
for p in direct refused open; do ./target/release/load rate "${url[$p]}/chat/completions" 100 2 >/dev/null; done
: >"$out/runs.jsonl"
for r in $(seq "$ROUNDS"); do
  for p in direct refused open; do
    res=$(./target/release/load rate "${url[$p]}/chat/completions" "$RATE" "$ROUND_SECONDS")
    echo "{\"round\": $r, \"path\": \"$p\", \"run\": $res}" >>"$out/runs.jsonl"
  done
done
python3 - "$out/runs.jsonl" "$RATE" <<'PY'
import json, statistics as st, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rounds = sorted({r["round"] for r in runs})
def one(p, rd):
    return next(r for r in runs if r["path"] == p and r["round"] == rd)["run"]
d = [one("direct", rd) for rd in rounds]
print(f"{sys.argv[2]} req/s, direct: p50 {st.median(r['p50_ms'] for r in d):.2f} ms, p99 {st.median(r['p99_ms'] for r in d):.2f} ms, {sum(r['errors'] for r in d)} errors")
for p, name in (("refused", "first upstream refuses the connection"), ("open", "first upstream's breaker is open")):
    a50 = [one(p, rd)["p50_ms"] - one("direct", rd)["p50_ms"] for rd in rounds]
    a99 = [one(p, rd)["p99_ms"] - one("direct", rd)["p99_ms"] for rd in rounds]
    errs = sum(one(p, rd)["errors"] for rd in rounds)
    print(f"  {name}: added p50 {st.median(a50):+.2f} ms ({', '.join(f'{x:+.2f}' for x in a50)}), "
          f"p99 {st.median(a99):+.2f} ms ({', '.join(f'{x:+.2f}' for x in a99)}); {errs} errors")
PY
