#!/usr/bin/env bash
# Runs the GAN-step benchmark (xgrad against its hand-written floor) and, when
# /usr/bin/python3 can import torch, the same step in PyTorch.
#   benchmarks/compare.sh [BUILD_DIR] [--threads N]   (BUILD_DIR defaults to build-perf)
# Quiet machine first: `uptime` should show a load average well below 1.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build-perf
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then build=$1; shift; fi
threads=1
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: benchmarks/compare.sh [BUILD_DIR] [--threads N]" >&2; exit 2 ;;
  esac
done

if [ ! -x "$build/benchmarks/gan_step" ]; then
  echo "compare: no $build/benchmarks/gan_step; build it with: meson setup $build && ninja -C $build" >&2
  exit 1
fi
echo "== $(uptime)"
echo "== xgrad ($build/benchmarks/gan_step --threads $threads)"
"$build/benchmarks/gan_step" --threads "$threads"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "== PyTorch (benchmarks/torch_gan_step.py --threads $threads)"
  /usr/bin/python3 benchmarks/torch_gan_step.py --threads "$threads"
else
  echo "== PyTorch: not importable by /usr/bin/python3 (apt-get install python3-torch); comparison skipped"
fi
