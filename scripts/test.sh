#!/usr/bin/env bash
# Builds xgrad (release, portable) and runs the whole test suite, then prints
# the number of doctest cases that passed and failed across all test files.
# Arguments go to meson setup (CI passes -Dwerror=true).
set -uo pipefail
cd "$(dirname "$0")/.."

meson setup build "$@" >/dev/null || exit 1
ninja -C build || exit 1
meson test -C build --print-errorlogs
rc=$?
grep -h '^\[doctest\] test cases:' build/meson-logs/testlog.txt |
  awk -F'|' '{p += $2 + 0; f += $3 + 0} END {printf "doctest: %d passed, %d failed\n", p, f}'
exit $rc
