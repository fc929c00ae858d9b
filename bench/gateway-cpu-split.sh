#!/usr/bin/env bash
# Where the CPU goes under saturation: user and system time per request of `sluice serve`, of
# the bare hyper forwarders in its place (`forward-hyper` drops the upstream's headers,
# `forward-pass` passes them), and of the mock behind each, under `wrk -t1 -c16`
# (the load of bench/gateway-throughput.sh), from /proc/PID/stat around each run.
#
#   bench/gateway-cpu-split.sh            # ROUNDS=3 DURATION=4
#   SLUICE=/path/to/other/sluice bench/gateway-cpu-split.sh
#   PROFILE=dist bench/gateway-cpu-split.sh   # the gateway and the floors as shipped (fat LTO)
#   PERF=1 bench/gateway-cpu-split.sh     # also sample each server's stacks (`perf record`,
#                                         # cpu-clock) and split its user time per request
#                                         # by function: the code both servers run, and the rest
#
# Why: on this 2-core machine wrk, the mock and the server under test share the cores, so the
# throughput ratio is (F + O) / (G + O) — F and G the forwarder's and the gateway's CPU per
# request, O the mock's and wrk's — and a target on it is a target on G / F that depends on O.
# This prints the three, so that the ratio can be read as what it is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_servers
MOCK=./target/release/sluice # the same upstream whichever gateway build SLUICE names
start_wrk_pair
if [ -n "${PERF:-}" ]; then
  # Samples are named by the binaries' symbols, which the dist profile strips.
  for bin in "${SLUICE:-./target/$PROFILE/sluice}" "./target/$PROFILE/forward-hyper" "./target/$PROFILE/forward-pass"; do
    # One line is enough (a stripped binary has none); read whole, so that nm is not cut off
    # mid-write, which pipefail would take for a failure.
    [ -n "$(nm "$bin" 2>/dev/null | sed -n 1p)" ] || {
      echo "PERF=1 needs the symbols that $bin does not carry (the dist profile strips them): use PROFILE=release" >&2
      exit 2
    }
  done
fi
if [ -n "${PERF:-}" ] && ! command -v perf >/dev/null; then
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
hz_perf=999 # samples a second: one sample stands for 1/999 s of CPU

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
    if [ -n "${PERF:-}" ]; then
      perf record -q -F "$hz_perf" -e cpu-clock -p "$pid" -o "$out/$which.$r.perf" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    wrk -t1 -c16 -d"${DURATION}s" -s bench/wrk/chat.lua "$url/chat/completions" >"$out/wrk.txt"
    [ -z "${PERF:-}" ] || wait "$perf_pid" || true
    read -r u1 s1 < <(ticks "$pid")
    read -r mu1 ms1 < <(ticks "$mock_pid")
    n=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
    echo "$n" >>"$out/$which.requests"
    python3 - "$r" "$which" "$n" "$DURATION" "$hz" $((u1 - u0)) $((s1 - s0)) $((mu1 - mu0)) $((ms1 - ms0)) <<'PY'
import sys
r, which, n, secs, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
u, s, mu, ms = (int(x) * 1e6 / hz / n for x in sys.argv[6:10])
print(f"round {r}: {which:9} {n / secs:8.0f} req/s   server user {u:5.1f} + sys {s:5.1f} = {u + s:5.1f} us/req"
      f"   mock {mu + ms:5.1f} us/req")
PY
  done
done
[ -n "${PERF:-}" ] || exit 0
# User time per request by function, from the samples of every round: each server's samples in
# user space ([.]) per symbol, over the requests it served while sampled.
for which in gateway forwarder passing; do
  for f in "$out/$which".*.perf; do
    perf report -i "$f" --no-children --sort sym -F sample,sym --stdio 2>/dev/null |
      grep -F '[.]' >>"$out/$which.symbols" || true
  done
done
python3 - "$out" "$hz_perf" <<'PY'
import collections, re, sys
out, hz = sys.argv[1], float(sys.argv[2])
def load(which):
    n = sum(int(l) for l in open(f"{out}/{which}.requests"))
    us = collections.Counter()
    for line in open(f"{out}/{which}.symbols"):
        m = re.match(r"\s*(\d+)\s+\[\.\]\s+(.*)", line)
        if m:
            us[m.group(2).strip()] += int(m.group(1)) / hz / n * 1e6
    return us
g = load("gateway")
for name in ("forwarder", "passing"):
    f = load(name)
    shared = [k for k in g if k in f]
    print(f"user time per request, sampled: gateway {sum(g.values()):.1f} us, {name} {sum(f.values()):.1f}; "
          f"in functions both run: gateway {sum(g[k] for k in shared):.1f}, {name} {sum(f[k] for k in shared):.1f}; "
          f"the gateway's own {sum(v for k, v in g.items() if k not in f):.1f}")
f = load("passing")
print("largest in functions both run (us a request: gateway, passing):")
for k in sorted((k for k in g if k in f), key=lambda k: -g[k])[:12]:
    print(f"  {g[k]:5.2f} {f[k]:5.2f}  {k[:100]}")
print("largest of the gateway's own (us a request):")
for k, v in sorted(((k, v) for k, v in g.items() if k not in f), key=lambda x: -x[1])[:15]:
    print(f"  {v:5.2f}  {k[:100]}")
PY
