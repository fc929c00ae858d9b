#!/usr/bin/env bash
# Normal requests while hundreds of connections trickle their headers (issue 15). `sluice serve`
# in front of `sluice mock` (20 ms answers); open-loop load (bench/src/bin/load.rs) at RATE req/s
# for ROUND_SECONDS, in alternating rounds without and with SLOW connections that each send a request
# line and then one header byte a second (below the 30 s header timeout, so they stay open for
# the whole round). The figure is the p50/p99 the slow connections add to the normal requests
# (median over ROUNDS of with − without in the same round). Target: p99 under 50 ms added with 300.
#
#   bench/slowloris.sh          # RATE=500 ROUND_SECONDS=8 SLOW=300 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-500}
SECONDS_PER_ROUND=${ROUND_SECONDS:-8}
SLOW=${SLOW:-300}
ROUNDS=${ROUNDS:-3}
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli -p sluice-bench
source bench/lib.sh
start_mock bench/gateway-mock.toml
start_gateway "$base"
trap 'kill $mock_pid $gw_pid 2>/dev/null; rm -rf "$out"' EXIT
gw_addr=${gw_base#http://}
gw_addr=${gw_addr%/v1}
./target/release/load rate "$gw_base/chat/completions" 300 2 >/dev/null
: >"$out/runs.jsonl"
for r in $(seq "$ROUNDS"); do
  plain=$(./target/release/load rate "$gw_base/chat/completions" "$RATE" "$SECONDS_PER_ROUND")
  # SLOW connections trickling a header, for a little longer than the loaded round.
  python3 - "$gw_addr" "$SLOW" "$((SECONDS_PER_ROUND + 2))" >"$out/slow.txt" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, secs = int(sys.argv[2]), float(sys.argv[3])
conns = []
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    conns.append(s)
t0 = time.time()
while time.time() - t0 < secs:
    time.sleep(1)
    for s in conns:
        try:
            s.sendall(b"a")
        except OSError:
            pass
alive = 0
for s in conns:
    try:
        s.sendall(b"a")
        alive += 1
    except OSError:
        pass
print(alive)
PY
  slow_pid=$!
  sleep 1
  loaded=$(./target/release/load rate "$gw_base/chat/completions" "$RATE" "$SECONDS_PER_ROUND")
  wait "$slow_pid"
  echo "{\"round\": $r, \"plain\": $plain, \"slow\": $loaded, \"alive\": $(cat "$out/slow.txt")}" >>"$out/runs.jsonl"
done
python3 - "$out/runs.jsonl" "$SLOW" "$RATE" <<'PY'
import json, statistics as st, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
slow, rate = sys.argv[2], sys.argv[3]
d50 = [r["slow"]["p50_ms"] - r["plain"]["p50_ms"] for r in runs]
d99 = [r["slow"]["p99_ms"] - r["plain"]["p99_ms"] for r in runs]
print(f"{rate} req/s through sluice serve, {slow} connections trickling headers: "
      f"added p50 {st.median(d50):+.2f} ms ({', '.join(f'{x:+.2f}' for x in d50)}), "
      f"p99 {st.median(d99):+.2f} ms ({', '.join(f'{x:+.2f}' for x in d99)}); "
      f"errors {sum(r['slow']['errors'] for r in runs)} (without: {sum(r['plain']['errors'] for r in runs)}); "
      f"without them p99 {st.median(r['plain']['p99_ms'] for r in runs):.2f} ms; "
      f"slow connections still open at the end of each round: {[r['alive'] for r in runs]}")
PY
