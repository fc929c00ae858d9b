# Shared by the benchmark scripts: build, a temp dir, and a `sluice mock` in its own process.
# Source it from a script that has cd'ed to the repository root.

# The cargo profile that the servers compared are built with (the gateway and the bare
# forwarders): `release` (the default, quicker to build) or `dist`, the profile the wheel ships
# (fat LTO, one codegen unit). The mock and the load generators are the release builds either
# way, so that the upstream and the load stay the same whatever profile is measured.
PROFILE=${PROFILE:-release}

# build_servers: the release builds, and the servers again in $PROFILE when it is another.
build_servers() {
  cargo build --release --quiet -p sluice-cli -p sluice-bench --bins
  if [ "$PROFILE" != release ]; then
    cargo build --profile "$PROFILE" --quiet -p sluice-cli -p sluice-bench --bins
  fi
}

# cpu_ticks PID: the process's user + system CPU so far, in clock ticks (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The official SDK, in the same virtualenv the tests use.
ensure_venv() {
  venv=tests/e2e/.venv
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
}

# start_mock SCENARIO: sets $out (temp dir), $base (http://ADDR/v1), $addr, $root (http://ADDR);
# the mock and the temp dir go away when the script exits. The mock is $MOCK, else $SLUICE, else
# this checkout's release build; the scripts that compare two gateway builds by SLUICE set MOCK
# to this checkout's, so that the upstream behind both is the same program.
start_mock() {
  out=$(mktemp -d)
  "${MOCK:-${SLUICE:-./target/release/sluice}}" mock --listen 127.0.0.1:0 --config "$1" >"$out/mock.out" 2>/dev/null &
  mock_pid=$!
  trap 'kill $mock_pid 2>/dev/null; rm -rf "$out"' EXIT
  for _ in $(seq 100); do
    grep -q "listening on" "$out/mock.out" 2>/dev/null && break
    sleep 0.1
  done
  base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/mock.out")
  [ -n "$base" ] || { echo "mock did not start" >&2; exit 1; }
  root=${base%/v1}
  addr=${root#http://}
}

# start_gateway UPSTREAM_BASE [WRAPPER...]: `sluice serve` in front of it (one fixed upstream
# key, ledger and data directory in $out), run under WRAPPER when given (e.g. valgrind); the
# binary is $SLUICE (default this tree's release build); $GW_EXTRA is appended to its config.
# Sets $gw_base and $gw_pid. Call after start_mock (it writes into $out).
start_gateway() {
  local upstream=$1
  shift
  cat >"$out/gw.toml" <<TOML
listen = "127.0.0.1:0"
[upstream]
base_url = "$upstream"
keys = [{ value = "sk-bench-upstream-001" }]
${GW_EXTRA:-}
TOML
  SLUICE_LEDGER="$out/ledger.db" SLUICE_DATA_DIR="$out" RUST_LOG=warn \
    "$@" "${SLUICE:-./target/$PROFILE/sluice}" serve --config "$out/gw.toml" >"$out/gw.out" 2>"$out/gw.err" &
  gw_pid=$!
  # Up to 60 s: under valgrind the start is slow.
  for _ in $(seq 600); do grep -q "listening on" "$out/gw.out" 2>/dev/null && break; sleep 0.1; done
  gw_base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/gw.out")
}

# chat_lines N FILE: N small chat requests in OpenAI's Batch format (custom_id r0, r1, ...).
chat_lines() {
  python3 - "$1" "$2" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 16,
                     "messages": [{"role": "user", "content": f"Say something short about item {i}."}]}}) + "\n")
PY
}

# start_serve NAME CONFIG: a `sluice serve` with CONFIG (ledger off, data in $out, output in
# $out/NAME.out); appends its pid to $pids and sets $serve_url.
start_serve() {
  SLUICE_LEDGER=off SLUICE_DATA_DIR="$out" RUST_LOG=error "${SLUICE:-./target/release/sluice}" serve --config "$2" >"$out/$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$out/$1.out" 2>/dev/null && break; sleep 0.1; done
  serve_url=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/$1.out")
  [ -n "$serve_url" ] || { echo "sluice serve ($1) did not start" >&2; exit 1; }
}

# start_floor BIN: a bare forwarder from bench/src/bin (a name under target/release, or a path)
# in front of $base; sets $floor_pid and $floor_base (empty if it did not start in 10 s). Not
# in a subshell, so that the caller may `wait` for it.
start_floor() {
  local bin=$1 log
  case $bin in */*) ;; *) bin=./target/$PROFILE/$bin ;; esac
  log=$(mktemp -p "$out" floor.XXXXXX)
  "$bin" 127.0.0.1:0 "$base" >"$log" 2>/dev/null &
  floor_pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.1; done
  floor_base=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$log")
}

# start_wrk_pair: for the wrk benchmarks (needs wrk; installs it when missing) — `sluice mock`
# with no latency, then `sluice serve` and the two bare hyper forwarders each in front of it
# (`forward-hyper`, which drops the upstream's headers, and `forward-pass`, which passes headers
# both ways as the gateway does). Sets start_mock's and start_gateway's variables and $hy_pid,
# $hy_base, $hp_pid, $hp_base; stops them all on exit.
start_wrk_pair() {
  if ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
  local scenario
  scenario=$(mktemp)
  sed 's/^ttft = .*/ttft = "0ms"/' bench/gateway-mock.toml >"$scenario"
  start_mock "$scenario"
  rm -f "$scenario"
  start_gateway "$base"
  start_floor forward-hyper
  hy_pid=$floor_pid hy_base=$floor_base
  start_floor forward-pass
  hp_pid=$floor_pid hp_base=$floor_base
  trap 'kill $mock_pid $gw_pid $hy_pid $hp_pid 2>/dev/null; rm -rf "$out"' EXIT
  [ -n "$gw_base" ] && [ -n "$hy_base" ] && [ -n "$hp_base" ] || { echo "a server did not start" >&2; exit 1; }
}
