#!/usr/bin/env bash
# What `sluice serve` adds (issue 6). Open-loop load at fixed rates (bench/src/bin/load.rs:
# latency from each request's scheduled start) straight to `sluice mock` (20 ms fixed latency)
# and through the gateway in front of it, in the same run; then 1,000 concurrent streams through
# the gateway and its resident memory. Targets: added p50 <= 0.1 ms and p99 <= 1 ms at 2,000
# req/s; memory under 100 MB with 1,000 concurrent streams.
#
#   bench/gateway.sh           # SECONDS=10 per rate
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
cargo build --release --quiet -p sluice-cli -p sluice-bench
source bench/lib.sh


start_mock bench/gateway-mock.toml
start_gateway "$base"
# The floor: a bare axum + reqwest forwarder in the gateway's place (bench/src/bin/forward.rs).
./target/release/forward 127.0.0.1:0 "$base" >"$out/fw.out" 2>/dev/null &
fw_pid=$!
trap 'kill $mock_pid $gw_pid $fw_pid 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/fw.out" 2>/dev/null && break; sleep 0.1; done
fw_base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/fw.out")
# Warm both paths up (connections, the gateway learning the upstream's limits), then measure.
./target/release/load rate "$base/chat/completions" 300 2 >/dev/null
./target/release/load rate "$gw_base/chat/completions" 300 2 >/dev/null
./target/release/load rate "$fw_base/chat/completions" 300 2 >/dev/null
for rate in 500 2000 4000; do
  d=$(./target/release/load rate "$base/chat/completions" "$rate" "$SECONDS_PER_RATE")
  g=$(./target/release/load rate "$gw_base/chat/completions" "$rate" "$SECONDS_PER_RATE")
  f=$(./target/release/load rate "$fw_base/chat/completions" "$rate" "$SECONDS_PER_RATE")
  python3 - "$d" "$g" "$f" <<'PY'
import json, sys
d, g, f = (json.loads(a) for a in sys.argv[1:4])
print(f"{d['target_rps']:.0f} req/s: direct p50 {d['p50_ms']:.2f} ms p99 {d['p99_ms']:.2f} ms "
      f"({d['achieved_rps']:.0f} req/s, {d['errors']} errors) | gateway p50 {g['p50_ms']:.2f} ms "
      f"p99 {g['p99_ms']:.2f} ms ({g['achieved_rps']:.0f} req/s, {g['errors']} errors) | "
      f"added p50 {g['p50_ms'] - d['p50_ms']:+.2f} ms, p99 {g['p99_ms'] - d['p99_ms']:+.2f} ms | "
      f"bare forwarder added p50 {f['p50_ms'] - d['p50_ms']:+.2f} ms, p99 {f['p99_ms'] - d['p99_ms']:+.2f} ms "
      f"({f['errors']} errors)")
PY
done
kill "$gw_pid" "$fw_pid" "$mock_pid" 2>/dev/null || true
wait 2>/dev/null || true

start_mock bench/gateway-streams.toml
start_gateway "$base"
trap 'kill $mock_pid $gw_pid 2>/dev/null; rm -rf "$out"' EXIT
./target/release/load streams "$gw_base/chat/completions" 1000 "$gw_pid"
