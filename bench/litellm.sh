#!/usr/bin/env bash
# sluice serve vs LiteLLM's proxy (issue 6), same mock, same load, same run: open-loop load at
# fixed rates straight to `sluice mock` (20 ms fixed latency), through `sluice serve`, and through
# `litellm --config` pointing at the same mock. LiteLLM is installed from PyPI into
# bench/.venv-litellm on first use (not committed).
#
#   bench/litellm.sh             # SECONDS_PER_RATE=8 RATES="200 500 2000"
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RATE=${SECONDS_PER_RATE:-8}
RATES=${RATES:-"200 500 2000"}
cargo build --release --quiet -p sluice-cli -p sluice-bench
venv=bench/.venv-litellm
if [ ! -x "$venv/bin/litellm" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
source bench/lib.sh
start_mock bench/gateway-mock.toml

start_gateway "$base"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$out/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $base
      api_key: sk-bench-upstream-001
litellm_settings:
  drop_params: true
general_settings:
  master_key: sk-load-0000000001   # the load generator's bearer; LiteLLM refuses to start without one
YAML
# LiteLLM's own CPU per request is reported too (its processes' user+system time).
LITELLM_LOG=ERROR "$venv/bin/litellm" --config "$out/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers "${LITELLM_WORKERS:-1}" >"$out/litellm.log" 2>&1 &
ll_pid=$!
trap 'kill $mock_pid $gw_pid $ll_pid 2>/dev/null; rm -rf "$out"' EXIT
ll_base="http://127.0.0.1:$port/v1"
for _ in $(seq 600); do
  curl -s -o /dev/null "http://127.0.0.1:$port/health/liveliness" && break
  sleep 0.1
done
litellm_version=$("$venv/bin/pip" show litellm | sed -n 's/^Version: //p')
echo "litellm $litellm_version (${LITELLM_WORKERS:-1} worker(s)), sluice serve, sluice mock: 20 ms fixed latency"
for url in "$base" "$gw_base" "$ll_base"; do
  ./target/release/load rate "$url/chat/completions" 100 2 >/dev/null
done
# sluice first at every rate, LiteLLM after: an overloaded LiteLLM keeps working through its
# backlog after the load stops and would slow the next measurement on these shared cores.
declare -A D G
for rate in $RATES; do
  D[$rate]=$(./target/release/load rate "$base/chat/completions" "$rate" "$SECONDS_PER_RATE")
  G[$rate]=$(./target/release/load rate "$gw_base/chat/completions" "$rate" "$SECONDS_PER_RATE")
done
for rate in $RATES; do
  l=$(./target/release/load rate "$ll_base/chat/completions" "$rate" "$SECONDS_PER_RATE")
  python3 - "${D[$rate]}" "${G[$rate]}" "$l" <<'PY'
import json, sys
d, g, l = (json.loads(a) for a in sys.argv[1:4])
def f(x):
    if x['p50_ms'] is None:
        return f"all {x['errors']} requests failed"
    return (f"p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.2f} ms, {x['achieved_rps']:.0f} req/s, "
            f"{x['errors']} errors")
print(f"{d['target_rps']:.0f} req/s | direct {f(d)} | sluice {f(g)} (added p50 "
      f"{g['p50_ms'] - d['p50_ms']:+.2f}) | litellm {f(l)} (added p50 "
      f"{(l['p50_ms'] or float('nan')) - d['p50_ms']:+.2f})")
PY
  # Let LiteLLM drain its backlog before the next rate.
  for _ in $(seq 120); do
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$port/health/liveliness" && break
    sleep 1
  done
done
