#!/usr/bin/env bash
# What profile-guided optimisation (PGO) does for the gateway, and for the bare hyper floor it is
# measured against: each is built instrumented, run under the throughput benchmark's load,
# rebuilt with its own profile, and the four builds (plain and PGO, gateway and floor) are
# compared by instructions per request (callgrind, saturated), and by requests per second and the
# server's CPU per request (`wrk -t1 -c16`, in turn, ROUNDS rounds).
#
#   bench/pgo.sh        # ROUNDS=7 DURATION=5s; three full release builds (~15 min on 2 cores)
#
# Needs the toolchain's own llvm-profdata (`rustup component add llvm-tools`; tried here). The
# builds go to target/pgo-gen (instrumented; reused by the next run) and target/pgo-use-gateway,
# target/pgo-use-floor (made anew each run: cargo does not see a profile's content change).
# Each program is trained on the load it is then measured under, so the gain is what a profile
# of that load gives at best; a shipped build would be trained on a mix of the faces' work.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-7}
DURATION=${DURATION:-5s}
cargo build --release --quiet -p sluice-cli -p sluice-bench --bins
# shellcheck source=bench/lib.sh
source bench/lib.sh
MOCK=./target/release/sluice # the same upstream for every build
PROFILE=release              # the plain builds compared are the release ones

profdata=$(scripts/llvm-profdata) || {
  echo "llvm-profdata of this toolchain not found: rustup component add llvm-tools" >&2
  exit 1
}
# Apart from target/pgo, where scripts/pgo-profile keeps the shipped build's profile.
pgo=$PWD/target/pgo-bench
rm -rf "$pgo/train" && mkdir -p "$pgo/train" "$pgo/build"
# gen_build CARGO_ARGS...: an instrumented build. Each program on its own, as its profile is
# used below: built together, the two would share their dependencies' features, and code
# compiled with other features does not match the profile (it is then built as if never run).
# Build scripts run during an instrumented build write profiles of their own: kept apart.
gen_build() {
  CARGO_TARGET_DIR=target/pgo-gen RUSTFLAGS="-Cprofile-generate=$pgo/build" \
    cargo build --release --quiet "$@"
}
gen_build -p sluice-cli --bin sluice
gen_build -p sluice-bench --bin forward-hyper

scenario=$(mktemp)
sed 's/^ttft = .*/ttft = "0ms"/' bench/gateway-mock.toml >"$scenario"
start_mock "$scenario"
rm -f "$scenario"
trap 'kill $mock_pid 2>/dev/null; rm -rf "$out"' EXIT
# train NAME URL PID: the load the benchmark measures, then a clean exit (the profile is
# written at exit).
train() {
  wrk -t1 -c16 -d15s -s bench/wrk/chat.lua "$2/chat/completions" >/dev/null
  ./target/release/load rate "$2/chat/completions" 300 5 >/dev/null
  kill -TERM "$3"
  wait "$3" || true
  ls "$pgo/train/$1"-*.profraw >/dev/null || { echo "no profile from $1" >&2; exit 1; }
}
export LLVM_PROFILE_FILE="$pgo/train/gateway-%p.profraw"
SLUICE=target/pgo-gen/release/sluice start_gateway "$base"
train gateway "$gw_base" "$gw_pid"
export LLVM_PROFILE_FILE="$pgo/train/floor-%p.profraw"
start_floor target/pgo-gen/release/forward-hyper
train floor "$floor_base" "$floor_pid"
unset LLVM_PROFILE_FILE
"$profdata" merge -o "$pgo/gateway.profdata" "$pgo"/train/gateway-*.profraw
"$profdata" merge -o "$pgo/floor.profdata" "$pgo"/train/floor-*.profraw

# use_build WHAT PROFILE CARGO_ARGS...: a release build with the profile, from scratch.
use_build() {
  rm -rf "target/pgo-use-$1"
  CARGO_TARGET_DIR="target/pgo-use-$1" \
    RUSTFLAGS="-Cprofile-use=$2 -Cllvm-args=-pgo-warn-missing-function=false" \
    cargo build --release --quiet "${@:3}"
}
use_build gateway "$pgo/gateway.profdata" -p sluice-cli --bin sluice
use_build floor "$pgo/floor.profdata" -p sluice-bench --bin forward-hyper

echo "instructions per request, saturated (bench/gateway-callgrind.sh with WRK=1):"
for b in plain pgo; do
  if [ "$b" = plain ]; then s=./target/release/sluice f=forward-hyper; else
    s=target/pgo-use-gateway/release/sluice f=target/pgo-use-floor/release/forward-hyper
  fi
  g=$(SLUICE=$s WRK=1 bench/gateway-callgrind.sh | sed -n 's/.*"per_request": \([0-9]*\).*/\1/p')
  h=$(FLOOR=$f WRK=1 WARMUP=5 bench/gateway-callgrind.sh | sed -n 's/.*"per_request": \([0-9]*\).*/\1/p')
  echo "  $b: gateway $g, bare hyper $h, ratio $(python3 -c "print(f'{$g / $h:.2f}')")"
done

# Requests per second, the four in turn each round.
declare -A url pid
SLUICE=./target/release/sluice start_gateway "$base"
url[gateway]=$gw_base pid[gateway]=$gw_pid
# Its own directory, so that the two gateways do not share a ledger file.
mkdir "$out/pgo"
main_out=$out out=$out/pgo
SLUICE=target/pgo-use-gateway/release/sluice start_gateway "$base"
out=$main_out
url[gateway_pgo]=$gw_base pid[gateway_pgo]=$gw_pid
start_floor forward-hyper
url[floor]=$floor_base pid[floor]=$floor_pid
start_floor target/pgo-use-floor/release/forward-hyper
url[floor_pgo]=$floor_base pid[floor_pgo]=$floor_pid
trap 'kill $mock_pid ${pid[*]} 2>/dev/null; rm -rf "$out"' EXIT
order="gateway gateway_pgo floor floor_pgo"
for p in $order; do
  wrk -t1 -c16 -d2s -s bench/wrk/chat.lua "${url[$p]}/chat/completions" >/dev/null
done
hz=$(getconf CLK_TCK)
: >"$out/rounds.txt"
for r in $(seq "$ROUNDS"); do
  row="" cpu=""
  for p in $order; do
    read -r t0 < <(cpu_ticks "${pid[$p]}")
    wrk -t1 -c16 -d"$DURATION" -s bench/wrk/chat.lua "${url[$p]}/chat/completions" >"$out/wrk.txt"
    read -r t1 < <(cpu_ticks "${pid[$p]}")
    row="$row $(awk '/^Requests\/sec:/ {print $2}' "$out/wrk.txt")"
    # The server's CPU (user + system) per request in microseconds.
    cpu="$cpu $(awk -v t=$((t1 - t0)) -v hz="$hz" '/requests in/ {printf "%.1f", t / hz / $1 * 1e6}' "$out/wrk.txt")"
  done
  echo "round $r (req/s, then server CPU us/request: $order):$row |$cpu" >&2
  echo "$row |$cpu" >>"$out/rounds.txt"
done
python3 - "$out/rounds.txt" "$DURATION" <<'PY'
import statistics as st, sys
lines = [l.split("|") for l in open(sys.argv[1]) if l.strip()]
rows = [list(map(float, a.split())) for a, _ in lines]
cpus = [list(map(float, b.split())) for _, b in lines]
g, gp, f, fp = (st.median(r[i] for r in rows) for i in range(4))
ratio = lambda a, b: st.median(r[a] / r[b] for r in rows)
print(f"requests per second (medians of {len(rows)} rounds, wrk -t1 -c16 -d{sys.argv[2]}): "
      f"gateway {g:,.0f}, with PGO {gp:,.0f}; bare hyper {f:,.0f}, with PGO {fp:,.0f}")
print(f"  gateway / bare hyper: plain {ratio(0, 2):.2f}, both with PGO {ratio(1, 3):.2f}, "
      f"the gateway with PGO against the plain floor {ratio(1, 2):.2f}")
c = [st.median(r[i] for r in cpus) for i in range(4)]
cratio = lambda a, b: st.median(r[a] / r[b] for r in cpus)
print(f"server CPU per request (user + system, medians): gateway {c[0]:.1f} us, with PGO {c[1]:.1f}; "
      f"bare hyper {c[2]:.1f}, with PGO {c[3]:.1f}")
print(f"  gateway / bare hyper: plain {cratio(0, 2):.2f}, both with PGO {cratio(1, 3):.2f}; "
      f"PGO / plain: gateway {cratio(1, 0):.2f}, bare hyper {cratio(3, 2):.2f}")
PY
