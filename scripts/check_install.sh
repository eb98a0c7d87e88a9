#!/usr/bin/env bash
# Proves that xgrad can be used from outside its tree, the three ways a user
# would: (1) `meson install`, then a program compiled with
# `pkg-config --cflags --libs xgrad_io`; (2) xgrad as a Meson subproject of
# another project, found with dependency('xgrad_io'); (3) the installed CMake
# package: find_package(xgrad 0.2) and the target xgrad::io
# (tests/consumer/CMakeLists.txt). Each program is run.
#
# Usage: scripts/check_install.sh [BUILD_DIR]   (default: build, already built)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { echo "check_install: $*"; }

say "1. meson install into a staging directory, then pkg-config"
DESTDIR="$work/stage" meson install -C "$build" --quiet --no-rebuild >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
libdir=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "libdir"))')
[[ $libdir = /* ]] || libdir="$prefix/$libdir"
export PKG_CONFIG_SYSROOT_DIR="$work/stage" PKG_CONFIG_PATH="$work/stage$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs xgrad_io)
say "  pkg-config --cflags --libs xgrad_io: $flags"
# shellcheck disable=SC2086  # the flags are words
g++ -std=c++17 -O1 "$repo/tests/consumer/main.cpp" -o "$work/consumer_pkgconfig" $flags
LD_LIBRARY_PATH="$work/stage$libdir" "$work/consumer_pkgconfig" "$work/pkgconfig.xgrad"
# Without -DXTENSOR_USE_XSIMD (another Tensor type) the headers refuse to compile.
# shellcheck disable=SC2086
if g++ -std=c++17 -fsyntax-only "$repo/tests/consumer/main.cpp" ${flags//-DXTENSOR_USE_XSIMD/} 2>"$work/no_xsimd.log"; then
  say "  compiled without -DXTENSOR_USE_XSIMD: the #error is missing"; exit 1
fi
grep -q 'compile with -DXTENSOR_USE_XSIMD' "$work/no_xsimd.log" || { cat "$work/no_xsimd.log"; exit 1; }
say "  without -DXTENSOR_USE_XSIMD: refused by the #error, as it should be"
# The staging directory's pkg-config settings are for step 1 only: with the
# sysroot set, the subproject would find MPI's headers under $work/stage.
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH

say "2. the installed CMake package: find_package(xgrad 0.2), xgrad::io"
cmake -S "$repo/tests/consumer" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/stage$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH="$work/stage$libdir" "$work/cmake/consumer" "$work/cmake.xgrad"

say "3. xgrad as a Meson subproject"
mkdir -p "$work/project/subprojects"
cp "$repo/tests/consumer/meson.build" "$repo/tests/consumer/main.cpp" "$work/project/"
ln -s "$repo" "$work/project/subprojects/xgrad"
meson setup "$work/project/build" "$work/project" --force-fallback-for=xgrad,xgrad_io >/dev/null
ninja -C "$work/project/build" >/dev/null
"$work/project/build/consumer" "$work/subproject.xgrad"
built=$(find "$work/project/build/subprojects" -name 'libxgrad*.so' -printf '%f ' | tr ' ' '\n' | sort | tr '\n' ' ')
[ "$built" = "libxgrad.so libxgrad_io.so " ] || { say "  the subproject built $built(expected libxgrad.so libxgrad_io.so)"; exit 1; }
say "  the subproject built what the consumer asked for: $built"
say "all three ways work"
