#!/usr/bin/env bash
# Runs every suite on every runtime and prints one total as its last line:
#   N passed, N failed
# Suites: static checks (deno fmt/lint/check/doc --lint), the Node build, unit and
# integration tests under Deno and Bun, and the built package under Node. The real
# kube-apiserver + etcd (tests/apiserver) is built and started once for the whole run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/node_modules/.bin:$PATH"
mkdir -p .cache/logs
PASSED=0
FAILED=0
SUMMARY=()

note() { printf '\n==> %s\n' "$*"; }
count() { # suite passed failed
  PASSED=$((PASSED + $2)); FAILED=$((FAILED + $3)); SUMMARY+=("$(printf '%-34s %4d passed, %d failed' "$1" "$2" "$3")")
}
check() { # name command...: one check counted as one test
  local name=$1; shift
  note "$name"
  if "$@"; then count "$name" 1 0; else count "$name" 0 1; fi
}

if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/bun ]; then
  note "installing pinned runtimes and tools (npm ci)"
  npm ci --no-audit --no-fund || { echo "npm ci failed"; echo "0 passed, 1 failed"; exit 1; }
fi

# libfaketime lets the fault suite give replicas a wall clock hours off.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  note "installing libfaketime (apt-get install faketime)"
  (apt-get update -qq && apt-get install -y -qq faketime) >/dev/null 2>&1 || echo "!!! could not install faketime"
fi

check "deno fmt --check" deno fmt --check
check "deno lint" deno lint
check "deno check" deno check mod.ts lib/ tests/
check "deno doc --lint" deno doc --lint mod.ts lib/cli.ts
check "deno publish --dry-run (JSR)" deno publish --dry-run --allow-dirty
check "build for Node (tsc)" npx tsc -p tsconfig.build.json

# The real API server, once for the whole run.
HARNESS_PID=""
cleanup() { [ -n "$HARNESS_PID" ] && kill -9 "$HARNESS_PID" 2>/dev/null; }
trap cleanup EXIT
note "building the test API server (tests/apiserver: kube-apiserver + etcd)"
start=$(date +%s)
if node -e 'import("./tests/env/testenv.mjs").then(m => m.buildHarness())'; then
  echo "built in $(( $(date +%s) - start )) s"
  count "build test API server" 1 0
  rm -rf .cache/testenv && mkdir -p .cache/testenv
  note "starting the test API server"
  ./.cache/bin/testenv --dir .cache/testenv > .cache/testenv/ready.json 2> .cache/logs/apiserver.log &
  HARNESS_PID=$!
  for _ in $(seq 1 600); do
    [ -s .cache/testenv/ready.json ] && break
    kill -0 "$HARNESS_PID" 2>/dev/null || break
    sleep 0.25
  done
  if [ -s .cache/testenv/ready.json ]; then
    export LEASEHOLD_TESTENV="$ROOT/.cache/testenv/ready.json"
    echo "ready: $(cat .cache/testenv/ready.json)"
    count "start test API server" 1 0
  else
    echo "!!! the test API server did not start; last log lines:"; tail -20 .cache/logs/apiserver.log
    count "start test API server" 0 1
  fi
else
  echo "!!! go build of tests/apiserver failed"
  count "build test API server" 0 1
fi

strip() { sed -e 's/\x1b\[[0-9;]*m//g'; }

note "deno test"
deno test -A 2>&1 | tee .cache/logs/deno-test.log
line=$(strip < .cache/logs/deno-test.log | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
p=$(sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' <<<"$line"); f=$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$line")
[ -z "$line" ] && { p=0; f=1; echo "!!! deno test printed no summary"; }
count "deno test (unit + integration)" "${p:-0}" "${f:-0}"

note "deno test --doc (every JSDoc example runs)"
deno test -A --doc mod.ts lib/ 2>&1 | tee .cache/logs/deno-doc.log
line=$(strip < .cache/logs/deno-doc.log | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -1)
p=$(sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' <<<"$line"); f=$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$line")
[ -z "$line" ] && { p=0; f=1; echo "!!! deno test --doc printed no summary"; }
count "deno test --doc (examples)" "${p:-0}" "${f:-0}"

note "bun test"
bun test --timeout 120000 2>&1 | tee .cache/logs/bun-test.log
p=$(strip < .cache/logs/bun-test.log | sed -nE 's/^ *([0-9]+) pass$/\1/p' | tail -1)
f=$(strip < .cache/logs/bun-test.log | sed -nE 's/^ *([0-9]+) fail$/\1/p' | tail -1)
[ -z "$p" ] && { p=0; f=1; echo "!!! bun test printed no summary"; }
count "bun test (unit + integration)" "${p:-0}" "${f:-0}"

note "node --test (built package)"
node --test tests/node/*.node.mjs 2>&1 | tee .cache/logs/node-test.log
p=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' .cache/logs/node-test.log | tail -1)
f=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' .cache/logs/node-test.log | tail -1)
[ -z "$p" ] && { p=0; f=1; echo "!!! node --test printed no summary"; }
count "node --test (built package)" "${p:-0}" "${f:-0}"

note "fault suite (tests/fault/suite.ts: client-go + Deno + Bun + Node replicas, own API server)"
deno run -A tests/fault/suite.ts 2>&1 | tee .cache/logs/fault-suite.log
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' .cache/logs/fault-suite.log | tail -1)
p=$(sed -nE 's/^([0-9]+) passed.*/\1/p' <<<"$line"); f=$(sed -nE 's/.* ([0-9]+) failed$/\1/p' <<<"$line")
[ -z "$line" ] && { p=0; f=1; echo "!!! the fault suite printed no summary"; }
count "fault suite (scenarios)" "${p:-0}" "${f:-0}"

# The benchmarks' short mode, so they cannot rot; its numbers are not judged here.
check "benchmark smoke (tests/bench/bench.ts --smoke)" deno run -A tests/bench/bench.ts --smoke --out .cache/bench-smoke

printf '\n==> summary\n'
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
