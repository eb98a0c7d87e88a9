#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (leak detection on, the first report fails the run), then the thread-pool
# tests under ThreadSanitizer. Build folders: build-asan, build-tsan.
# .ci/run calls it after the normal tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# GCC, the default compiler; .ci/run builds and tests with clang separately.
if [ ! -d build-asan ]; then
  meson setup build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Dbenchmarks=false >/dev/null
fi
ninja -C build-asan -j2
# The suite's processes (test_robustness runs the apps) inherit these.
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
meson test -C build-asan --no-rebuild --print-errorlogs --timeout-multiplier 3
unset ASAN_OPTIONS UBSAN_OPTIONS

if [ ! -d build-tsan ]; then
  meson setup build-tsan -Dbuildtype=debugoptimized -Db_sanitize=thread -Dbenchmarks=false >/dev/null
fi
ninja -C build-tsan -j2 tests/xgrad_parallel_tests
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 OPENBLAS_NUM_THREADS=1 build-tsan/tests/xgrad_parallel_tests
echo "ci_sanitizers: ASan+UBSan suite and TSan thread-pool tests passed"
