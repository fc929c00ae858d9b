#!/usr/bin/env bash
# Client CPU per request: the sluice Rust client vs the official Python SDK's AsyncOpenAI, the
# same N non-streaming chat completions at the same concurrency, one after the other against the
# same `sluice mock` (a separate process, latency off), in one run. Each client measures its own
# process CPU time (user + system). Target (issue 3): sluice >= 10x the Python SDK in requests
# per CPU-second.
#
#   bench/client-cpu.sh            # N=10000 C=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
C=${C:-64}

cargo build --release --quiet -p sluice-cli -p sluice-bench
source bench/lib.sh
ensure_venv
start_mock examples/mock/throughput.toml

./target/release/client-cpu "$base" "$N" "$C" | tee "$out/rust.json"
"$venv/bin/python" bench/python/client_cpu.py "$base" "$N" "$C" | tee "$out/python.json"
python3 - "$out/rust.json" "$out/python.json" <<'PY'
import json, sys
r, p = (json.load(open(f)) for f in sys.argv[1:3])
print(f"sluice: {r['requests_per_cpu_s']:.0f} req/CPU-s ({r['requests_per_s']:.0f} req/s wall, {r['errors']} errors)")
print(f"{p['client']}: {p['requests_per_cpu_s']:.0f} req/CPU-s ({p['requests_per_s']:.0f} req/s wall, {p['errors']} errors)")
print(f"ratio: {r['requests_per_cpu_s'] / p['requests_per_cpu_s']:.1f}x")
PY
