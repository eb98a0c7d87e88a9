#!/usr/bin/env bash
# clang-tidy (.clang-tidy: bugprone, performance, explicit constructors) over
# the library's sources, using BUILD_DIR's compile_commands.json. Fails on any
# finding; an intended one gets a NOLINT(check-name) with its reason.
# Usage: scripts/tidy.sh [BUILD_DIR]   (default: build, already configured)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tidy=$(command -v run-clang-tidy || command -v run-clang-tidy-14) ||
  { echo "tidy: run-clang-tidy not found (apt-get install clang-tidy)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$tidy" -p "$build" -quiet -j 2 "^$PWD/lib/" >"$log" 2>&1
if grep -q 'warning:' "$log"; then
  grep -A3 'warning:' "$log"
  echo "tidy: findings above" >&2
  exit 1
fi
echo "tidy: lib/ clean"
