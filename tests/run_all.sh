#!/usr/bin/env bash
# Runs every suite on every runtime and prints one total as its last line:
#   N passed, N failed
# (the line before it gives the skips). Suites: static checks (deno fmt/lint/check/
# doc --lint), the Node build, unit and integration tests under Deno and Bun, the
# built package under Node, then the extra suites (fault suite, benchmark smoke).
# The real kube-apiserver + etcd (tests/apiserver) is built and started once for
# the whole run.
#
# Honest counting:
#   - every runtime's skipped / ignored / todo counts go into the total; a test
#     Deno reports "ok" after calling t.skip() is counted as skipped (the
#     `::leasehold-skip runtime ::` line of tests/support/guard.mjs);
#   - a timed-out (cancelled) test is a failure;
#   - a runner that exits non-zero with no failure counted adds one failure, and
#     a runner that prints no summary is one failure;
#   - a test that needs the API server and was skipped (`::leasehold-skip server ::`
#     lines, or a runtime skip whose reason names the API server) fails the run
#     under CI=true and gets a banner elsewhere;
#   - every suite runs under a wall-clock bound (timeout(1)); a suite over its
#     bound is killed and fails. All bounds are cut to what is left of the run's
#     budget, LEASEHOLD_RUN_BUDGET_SECS (default 4200 s = 70 min; CI allows 90).
#
# Extra suites: `suite NAME TIMEOUT_SECS CMD...` runs CMD (bounded) and reads its
# last line `N passed, N failed` (optionally `, N skipped`).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$ROOT/node_modules/.bin:$PATH"
LOG_DIR=${LEASEHOLD_LOG_DIR:-$ROOT/.cache/logs} # where each suite's output goes
mkdir -p "$LOG_DIR"
PASSED=0
FAILED=0
SKIPPED=0
SERVER_SKIPPED=0
SUMMARY=()
LAST_SECS=0 # how long the last bounded suite took
RUN_START=$(date +%s)
BUDGET=${LEASEHOLD_RUN_BUDGET_SECS:-4200}
IN_CI=false
[ "${CI:-}" = "true" ] && IN_CI=true

note() { printf '\n==> %s\n' "$*"; }
strip() { sed -e 's/\x1b\[[0-9;]*m//g'; }
slug() { tr -c 'a-zA-Z0-9\n' '-' <<<"$1" | tr -s '-' | sed -e 's/^-//; s/-$//' | cut -c1-60; }

count() { # name passed failed [skipped]
  local s=${4:-0}
  PASSED=$((PASSED + $2)); FAILED=$((FAILED + $3)); SKIPPED=$((SKIPPED + s))
  SUMMARY+=("$(printf '%-44s %4d passed, %d failed, %d skipped  %5s' "$1" "$2" "$3" "$s" "${LAST_SECS}s")")
  LAST_SECS=0
}

# bound SECS: the suite's bound, cut to what is left of the run's budget (0 = none left).
bound() {
  local left=$((RUN_START + BUDGET - $(date +%s)))
  [ "$left" -lt 0 ] && left=0
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

# bounded SECS LOG CMD...: runs CMD under timeout(1), output to the terminal and LOG;
# sets RC (124/137: over its bound). timeout(1) runs CMD in a process group of its
# own and kills that whole group at the bound; the pipeline runs in the background
# so that Ctrl-C or a SIGTERM to this script reaches it (see `interrupted`).
SUITE_PID_FILE=$LOG_DIR/.suite.pid
bounded() {
  local secs=$1 log=$2; shift 2
  if [ "$secs" -le 0 ]; then
    echo "!!! no time left in the run's budget of $BUDGET s" | tee "$log"; RC=124; return
  fi
  rm -f "$log.rc"
  local t0=$SECONDS
  { timeout --kill-after=10 "$secs" "$@" & echo $! > "$SUITE_PID_FILE"; wait $!; echo $? > "$log.rc"; } 2>&1 | tee "$log" &
  wait $!
  RC=$(cat "$log.rc" 2>/dev/null || echo 1)
  rm -f "$log.rc" "$SUITE_PID_FILE"
  LAST_SECS=$((SECONDS - t0))
  if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
    echo "!!! over its bound of $secs s: killed" | tee -a "$log"
  fi
}

# Ctrl-C / SIGTERM: stop the running suite (timeout(1) passes the signal on to its
# process group), then exit; the EXIT trap stops the API server.
interrupted() {
  [ -s "$SUITE_PID_FILE" ] && kill -TERM "$(cat "$SUITE_PID_FILE")" 2>/dev/null
  echo "!!! interrupted"
  exit 130
}
trap interrupted INT TERM

# settle NAME RC PASSED FAILED SKIPPED LOG: the exit code and the skip markers count too.
settle() {
  local name=$1 rc=$2 p=$3 f=$4 s=$5 log=$6
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "!!! $name exited with status $rc but counted no failure: one failure added"
    f=1
  fi
  # Server tests that were skipped: declared at registration, or t.skip() naming the server.
  local reg rt
  reg=$(strip < "$log" | grep -cE '^(# )?::leasehold-skip server ::')
  rt=$(strip < "$log" | grep -E '^(# )?::leasehold-skip runtime ::' | grep -ciE 'API server')
  local server=$((reg + rt))
  if [ "$server" -gt 0 ]; then
    SERVER_SKIPPED=$((SERVER_SKIPPED + server))
    if $IN_CI; then
      echo "!!! CI=true: $server test(s) that need the API server were skipped: each counts as a failure"
      f=$((f + server)); s=$((s > server ? s - server : 0))
    else
      echo "!!! $name: $server test(s) that need the real API server were SKIPPED (under CI=true they fail)"
    fi
  fi
  count "$name" "$p" "$f" "$s"
}

check() { # name timeout command...: one check counted as one test
  local name=$1 secs=$2; shift 2
  local log="$LOG_DIR/$(slug "$name").log"
  note "$name"
  bounded "$(bound "$secs")" "$log" "$@"
  if [ "$RC" -eq 0 ]; then count "$name" 1 0; else count "$name" 0 1; fi
}

# suite NAME TIMEOUT_SECS CMD...: an extra suite whose last line is `N passed, N failed`
# (optionally `, N skipped`); non-zero exit with no failure counted is a failure,
# and no such line is one failure.
suite() {
  local name=$1 secs=$2; shift 2
  local log="$LOG_DIR/$(slug "$name").log"
  note "$name"
  bounded "$(bound "$secs")" "$log" "$@"
  local line p=0 f=0 s=0
  line=$(strip < "$log" | grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' | tail -1)
  if [ -z "$line" ]; then
    echo "!!! $name printed no 'N passed, N failed' line"; f=1
  else
    p=$(sed -nE 's/^([0-9]+) passed.*/\1/p' <<<"$line")
    f=$(sed -nE 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/p' <<<"$line")
    s=$(sed -nE 's/.*, ([0-9]+) skipped$/\1/p' <<<"$line"); s=${s:-0}
  fi
  settle "$name" "$RC" "$p" "$f" "$s" "$log"
}

# deno_suite NAME TIMEOUT_SECS ARGS...: `deno test ARGS`; its summary line is
#   ok|FAILED | N passed [(N steps)] | N failed [(...)] [| N ignored] [| N filtered out]
deno_suite() {
  local name=$1 secs=$2; shift 2
  local log="$LOG_DIR/$(slug "$name").log"
  note "$name"
  bounded "$(bound "$secs")" "$log" deno test "$@"
  local line p=0 f=0 s=0 rt
  line=$(strip < "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
  if [ -z "$line" ]; then
    echo "!!! $name printed no summary"; f=1
  else
    p=$(sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' <<<"$line")
    f=$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$line")
    s=$(sed -nE 's/.*\| ([0-9]+) ignored.*/\1/p' <<<"$line"); s=${s:-0}
  fi
  # Deno reports a test that called t.skip() as "ok": those are skips.
  rt=$(strip < "$log" | grep -cE '^::leasehold-skip runtime ::')
  if [ "$rt" -gt 0 ]; then p=$((p > rt ? p - rt : 0)); s=$((s + rt)); fi
  settle "$name" "$RC" "$p" "$f" "$s" "$log"
}

# bun_suite NAME TIMEOUT_SECS ARGS...: `bun test ARGS`; its summary has lines
# ` N pass`, ` N skip`, ` N todo`, ` N fail` and, for errors outside tests, ` N error(s)`.
bun_suite() {
  local name=$1 secs=$2; shift 2
  local log="$LOG_DIR/$(slug "$name").log"
  note "$name"
  bounded "$(bound "$secs")" "$log" bun test "$@"
  local p f s t e
  p=$(strip < "$log" | sed -nE 's/^ *([0-9]+) pass$/\1/p' | tail -1)
  f=$(strip < "$log" | sed -nE 's/^ *([0-9]+) fail$/\1/p' | tail -1)
  s=$(strip < "$log" | sed -nE 's/^ *([0-9]+) skip$/\1/p' | tail -1)
  t=$(strip < "$log" | sed -nE 's/^ *([0-9]+) todo$/\1/p' | tail -1)
  e=$(strip < "$log" | sed -nE 's/^ *([0-9]+) errors?$/\1/p' | tail -1)
  if [ -z "$p" ] && [ -z "$f" ]; then p=0; f=1; echo "!!! $name printed no summary"; fi
  settle "$name" "$RC" "${p:-0}" "$(( ${f:-0} + ${e:-0} ))" "$(( ${s:-0} + ${t:-0} ))" "$log"
}

# node_suite NAME TIMEOUT_SECS ARGS...: `node --test --test-reporter=tap ARGS`; TAP's
# `# pass/fail/cancelled/skipped/todo N`; a cancelled test (over its timeout) is a failure;
# --test-force-exit: a test file whose event loop stays alive after its tests does not hang.
node_suite() {
  local name=$1 secs=$2; shift 2
  local log="$LOG_DIR/$(slug "$name").log"
  note "$name"
  bounded "$(bound "$secs")" "$log" node --test --test-reporter=tap --test-force-exit "$@"
  local p f c s t
  p=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$log" | tail -1)
  f=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$log" | tail -1)
  c=$(sed -nE 's/^# cancelled ([0-9]+)$/\1/p' "$log" | tail -1)
  s=$(sed -nE 's/^# skipped ([0-9]+)$/\1/p' "$log" | tail -1)
  t=$(sed -nE 's/^# todo ([0-9]+)$/\1/p' "$log" | tail -1)
  if [ -z "$p" ]; then p=0; f=1; echo "!!! $name printed no summary"; fi
  [ "${c:-0}" -gt 0 ] && echo "!!! $name: $c test(s) cancelled (over their timeout): counted as failures"
  settle "$name" "$RC" "${p:-0}" "$(( ${f:-0} + ${c:-0} ))" "$(( ${s:-0} + ${t:-0} ))" "$log"
}

# summary: the table, the skip banner, the skips line, and the total as the last line.
summary() {
  printf '\n==> summary (%d s)\n' "$(( $(date +%s) - RUN_START ))"
  printf '%s\n' "${SUMMARY[@]}"
  if [ "$SERVER_SKIPPED" -gt 0 ]; then
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! $SERVER_SKIPPED test(s) that need the real API server were SKIPPED, not passed."
    if $IN_CI; then echo "!!! CI=true: they count as failures."; else echo "!!! Under CI=true they fail the run."; fi
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  fi
  echo "$SKIPPED skipped ($SERVER_SKIPPED of them need the API server)"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
}

# `LEASEHOLD_RUN_ALL_LIB=1 source tests/run_all.sh` defines the functions above and stops here.
if [ "${LEASEHOLD_RUN_ALL_LIB:-}" = 1 ]; then return 0 2>/dev/null || exit 0; fi

if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/bun ]; then
  note "installing pinned runtimes and tools (npm ci)"
  timeout --kill-after=10 900 npm ci --no-audit --no-fund || { echo "npm ci failed"; echo "0 passed, 1 failed"; exit 1; }
fi

# libfaketime lets the fault suite give replicas a wall clock hours off.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  note "installing libfaketime (apt-get install faketime)"
  (timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq faketime) >/dev/null 2>&1 ||
    echo "!!! could not install faketime"
fi

check "deno fmt --check" 300 deno fmt --check
check "deno lint" 300 deno lint
check "deno check" 600 deno check mod.ts lib/ tests/
check "deno doc --lint" 300 deno doc --lint mod.ts lib/cli.ts
check "deno publish --dry-run (JSR)" 300 deno publish --dry-run --allow-dirty
check "build for Node (tsc + one-file bundles)" 300 npm run --silent build

# The real API server, once for the whole run. The tests find it through
# LEASEHOLD_TESTENV; when it is not there, that file says nothing and the server
# tests skip (fail under CI=true) instead of each starting a server of its own.
HARNESS_PID=""
cleanup() { [ -n "$HARNESS_PID" ] && kill -9 "$HARNESS_PID" 2>/dev/null; }
trap cleanup EXIT
rm -rf .cache/testenv && mkdir -p .cache/testenv
export LEASEHOLD_TESTENV="$ROOT/.cache/testenv/ready.json"
check "build test API server" 1500 node -e 'import("./tests/env/testenv.mjs").then(m => m.buildHarness())'
if [ "$RC" -eq 0 ]; then
  note "starting the test API server"
  ./.cache/bin/testenv --dir .cache/testenv > .cache/testenv/ready.json 2> "$LOG_DIR/apiserver.log" &
  HARNESS_PID=$!
  for _ in $(seq 1 600); do # 150 s
    [ -s .cache/testenv/ready.json ] && break
    kill -0 "$HARNESS_PID" 2>/dev/null || break
    sleep 0.25
  done
  if [ -s .cache/testenv/ready.json ]; then
    echo "ready: $(cat .cache/testenv/ready.json)"
    count "start test API server" 1 0
  else
    echo "!!! the test API server did not start; last log lines:"; tail -20 "$LOG_DIR/apiserver.log"
    count "start test API server" 0 1
  fi
fi

deno_suite "deno test (unit + integration)" 900 -A
deno_suite "deno test --doc (examples)" 600 -A --doc mod.ts lib/

bun_suite "bun test (unit + integration)" 900 --timeout 120000
node_suite "node --test (built package)" 600 --test-timeout=120000 tests/node/*.node.mjs
node_suite "npm package (pack, install, run)" 600 --test-timeout=300000 tests/pack/pack.node.mjs
node_suite "README commands" 900 --test-timeout=600000 tests/readme/readme_commands.node.mjs

# The shared API server must have lived through the suites that use it.
if [ -n "$HARNESS_PID" ] && [ -s .cache/testenv/ready.json ]; then
  if kill -0 "$HARNESS_PID" 2>/dev/null; then
    count "test API server alive after the tests" 1 0
  else
    echo "!!! the test API server (pid $HARNESS_PID) died during the run; last log lines:"
    tail -20 "$LOG_DIR/apiserver.log"
    count "test API server alive after the tests" 0 1
  fi
fi

# The deterministic simulator: at least 1,000,000 scheduler steps of 3-7 electors
# under seeded faults, the regression seeds of tests/sim/seeds.json first.
suite "simulator (tests/sim, --ci)" 600 deno run -A tests/sim/main.ts --ci
suite "fault suite (scenarios)" 1200 deno run -A tests/fault/suite.ts
# A real node: kube-apiserver, controller-manager, scheduler and kubelet from one
# binary, containerd + runc, deploy/ in real pods (as root; under CI=true a node
# that cannot start fails, elsewhere it says why it skipped).
suite "end-to-end on a real node (tests/e2e)" 2400 deno run -A tests/e2e/run.ts
# The benchmarks' short mode, so they cannot rot; its numbers are not judged here.
suite "benchmark smoke" 600 bash tests/support/as_suite.sh \
  deno run -A tests/bench/bench.ts --smoke --out .cache/bench-smoke

summary
