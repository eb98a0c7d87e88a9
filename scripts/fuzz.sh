#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer (build folder build-fuzz) and runs each for
# SECONDS seconds (default 60), starting from its committed seed corpus
# (tests/fuzz/corpus/NAME). Fails on the first finding: a crash, a leak, an
# undefined behaviour, a timeout (10 s per input) or more than 2 GB of
# memory. The inputs a run finds interesting stay in build-fuzz/corpus/NAME
# (a later run continues from them); a failing input is saved as
# build-fuzz/artifacts/NAME-crash-... and replays with
#   build-fuzz/tests/fuzz/fuzz_NAME build-fuzz/artifacts/NAME-crash-...
#
# Usage: scripts/fuzz.sh [SECONDS] [NAME...]   NAME: idx idx_gzip archive checkpoint safetensors
# Longer runs: scripts/fuzz.sh 3600 archive, or by hand with more workers:
#   build-fuzz/tests/fuzz/fuzz_archive -jobs=8 -workers=2 build-fuzz/corpus/archive
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(idx idx_gzip archive checkpoint safetensors)

if [ ! -d build-fuzz ]; then
  CXX=clang++ meson setup build-fuzz -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
    -Dfuzz=true -Dbenchmarks=false >/dev/null
fi
targets=()
for name in "${names[@]}"; do targets+=("tests/fuzz/fuzz_$name"); done
ninja -C build-fuzz -j2 "${targets[@]}"

mkdir -p build-fuzz/artifacts
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export OPENBLAS_NUM_THREADS=1
for name in "${names[@]}"; do
  corpus=build-fuzz/corpus/$name
  log=build-fuzz/artifacts/$name.log
  mkdir -p "$corpus"
  echo "fuzz: $name for ${seconds}s"
  set +e
  "build-fuzz/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/artifacts/$name-" "$corpus" "tests/fuzz/corpus/$name" >"$log" 2>&1
  status=$?
  set -e
  grep -v '^#[0-9]' "$log" | tail -n 60  # without libFuzzer's progress lines
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $name found a problem (exit $status); the input is in build-fuzz/artifacts/, the whole log in $log" >&2
    exit 1
  fi
done
echo "fuzz: ${names[*]} ran ${seconds}s each without a finding"
