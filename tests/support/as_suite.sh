#!/usr/bin/env bash
# Runs a command that has no test count of its own as a suite of one test for
# tests/run_all.sh's `suite`: prints `1 passed, 0 failed` or `0 passed, 1 failed`
# as its last line and exits with the command's status.
"$@"
rc=$?
if [ "$rc" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit "$rc"
