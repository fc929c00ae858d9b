#!/usr/bin/env bash
# Where the CPU goes under saturation: user and system time per request of `sluice serve`, of
# the bare hyper forwarders in its place (`forward-hyper` drops the upstream's headers,
# `forward-pass` passes them), and of the mock behind each, under `wrk -t1 -c16`
# (the load of bench/gateway-throughput.sh), from /proc/PID/stat around each run.
#
#   bench/gateway-cpu-split.sh            # ROUNDS=3 DURATION=4
#   SLUICE=/path/to/other/sluice bench/gateway-cpu-split.sh
#
# Why: on this 2-core machine wrk, the mock and the server under test share the cores, so the
# throughput ratio is (F + O) / (G + O) — F and G the forwarder's and the gateway's CPU per
# request, O the mock's and wrk's — and a target on it is a target on G / F that depends on O.
# This prints the three, so that the ratio can be read as what it is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
cargo build --release --quiet -p sluice-cli -p sluice-bench --bins
# shellcheck source=bench/lib.sh
source bench/lib.sh
MOCK=./target/release/sluice # the same upstream whichever gateway build SLUICE names
start_wrk_pair

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime, in clock ticks
hz=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for which in gateway forwarder passing; do
    case $which in
      gateway) pid=$gw_pid url=$gw_base ;;
      forwarder) pid=$hy_pid url=$hy_base ;;
      passing) pid=$hp_pid url=$hp_base ;;
    esac
    wrk -t1 -c16 -d1s -s bench/wrk/chat.lua "$url/chat/completions" >/dev/null
    read -r u0 s0 < <(ticks "$pid")
    read -r mu0 ms0 < <(ticks "$mock_pid")
    wrk -t1 -c16 -d"${DURATION}s" -s bench/wrk/chat.lua "$url/chat/completions" >"$out/wrk.txt"
    read -r u1 s1 < <(ticks "$pid")
    read -r mu1 ms1 < <(ticks "$mock_pid")
    n=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
    python3 - "$r" "$which" "$n" "$DURATION" "$hz" $((u1 - u0)) $((s1 - s0)) $((mu1 - mu0)) $((ms1 - ms0)) <<'PY'
import sys
r, which, n, secs, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
u, s, mu, ms = (int(x) * 1e6 / hz / n for x in sys.argv[6:10])
print(f"round {r}: {which:9} {n / secs:8.0f} req/s   server user {u:5.1f} + sys {s:5.1f} = {u + s:5.1f} us/req"
      f"   mock {mu + ms:5.1f} us/req")
PY
  done
done
