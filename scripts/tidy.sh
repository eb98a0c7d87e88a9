#!/usr/bin/env bash
# clang-tidy (.clang-tidy: bugprone, performance, explicit constructors) over
# the library's sources, using BUILD_DIR's compile_commands.json. Fails on any
# finding; an intended one gets a NOLINT(check-name) with its reason.
# Usage: scripts/tidy.sh [BUILD_DIR]   (default: build-clang, already
# configured with -Db_pch=false as .ci/run does: given a precompiled header,
# clang-tidy reports the code of the headers in it as the source's own)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-clang}
if grep -q 'xgrad_pch.hpp' "$build/compile_commands.json"; then
  echo "tidy: $build uses the precompiled header; give a tree configured with -Db_pch=false (.ci/run's build-clang)" >&2
  exit 1
fi
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
