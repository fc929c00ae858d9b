#!/usr/bin/env bash
# Two gateway replicas in front of a failing primary and a healthy backup (issue 16): how many
# requests the replicas spend on the failing upstream before their breakers keep them off it —
# once with each replica on its own, once sharing `[state]` (and so upstream health) in Redis.
# Replica `a` gets 20 req/s for 8 s; replica `b` joins 3 s later (a replica scaled out during an
# outage) with 20 req/s for 5 s. The primary answers every request 503; the breaker has its
# default settings (5 failures in a row over at least 1 s). Counts are what matter here (not
# times), so the run is repeatable on a shared machine.
#
#   bench/shared-health.sh          # REDIS_URL=redis://127.0.0.1:6379
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
[ -n "${SLUICE:-}" ] || cargo build --release --quiet -p sluice-cli -p sluice-bench
SLUICE=${SLUICE:-./target/release/sluice}
source bench/lib.sh
tmp=${TMPDIR:-/tmp}
printf '[faults]\nerror_503 = 1.0\n' >"$tmp/health-failing.$$.toml"
printf '[limits]\nrpm = 1000000\ntpm = 1000000000\n' >"$tmp/health-backup.$$.toml"

# mock SCENARIO NAME: a `sluice mock` in $out; sets ${NAME}_root and ${NAME}_base.
mock() {
  "$SLUICE" mock --listen 127.0.0.1:0 --config "$1" >"$out/$2.mock.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$out/$2.mock.out" 2>/dev/null && break; sleep 0.1; done
  local b
  b=$(sed -n 's#.*listening on \(http://[^ ]*\)#\1#p' "$out/$2.mock.out")
  printf -v "$2_base" '%s' "$b"
  printf -v "$2_root" '%s' "${b%/v1}"
}

run() { # shared|separate
  out=$(mktemp -d)
  pids=()
  mock "$tmp/health-failing.$$.toml" failing
  mock "$tmp/health-backup.$$.toml" backup
  local state=""
  [ "$1" = shared ] && state=$'[state]\n'"redis_url = \"$REDIS_URL\""$'\n'"prefix = \"sluice-bench-health-$$-$RANDOM\""
  cat >"$out/gw.toml" <<TOML
listen = "127.0.0.1:0"
[upstream]
max_attempts = 3
[[upstreams]]
name = "primary"
base_url = "$failing_base"
keys = [{ value = "sk-bench-health-0001" }]
priority = 0
[[upstreams]]
name = "backup"
base_url = "$backup_base"
keys = [{ value = "sk-bench-health-0002" }]
priority = 1
[models]
check_upstream_every = "0s"
$state
TOML
  local urls=()
  for n in a b; do
    start_serve "$n" "$out/gw.toml"
    urls+=("$serve_url")
  done
  ./target/release/load rate "${urls[0]}/chat/completions" 20 8 >"$out/a.json" &
  local la=$!
  sleep 3
  ./target/release/load rate "${urls[1]}/chat/completions" 20 5 >"$out/b.json"
  wait "$la"
  curl -s "$failing_root/_mock/stats" >"$out/failing.json"
  python3 - "$1" "$out/a.json" "$out/b.json" "$out/failing.json" <<'PY'
import json, sys
mode, a, b, failing = sys.argv[1], *map(lambda p: json.load(open(p)), sys.argv[2:5])
sent = a["requests"] + b["requests"]
failed = a["errors"] + b["errors"]
print(f"{mode:9} replicas: {sent} requests, {failed} failed, sent to the failing primary: {failing['requests']}")
PY
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$out"
}
run separate
run shared
rm -f "$tmp/health-failing.$$.toml" "$tmp/health-backup.$$.toml"
