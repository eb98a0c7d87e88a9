#!/usr/bin/env bash
# xgrad's benchmarks side by side with the same work in PyTorch (when
# /usr/bin/python3 can import torch: Debian's python3-torch), in one run:
#   gan  the reference GAN step (gan_step, against its hand-written floor) and torch_gan_step.py
#   conv the dcgan preset's conv layers and whole DCGAN step (conv_step) and
#        torch_conv_bench.py / torch_dcgan_step.py (the same algorithm: the D
#        step's fakes under no_grad, D frozen in the G step; and PyTorch's
#        classic example, which reuses one G forward and computes D's gradients)
#   benchmarks/compare.sh [BUILD_DIR] [--threads N] [gan|conv]...   (BUILD_DIR: build-perf; both by default)
# Quiet machine first: `uptime` should show a load average well below 1.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build-perf
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ] && [ "$1" != gan ] && [ "$1" != conv ]; then build=$1; shift; fi
threads=1
parts=()
while [ $# -gt 0 ]; do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    gan|conv) parts+=("$1"); shift ;;
    *) echo "usage: benchmarks/compare.sh [BUILD_DIR] [--threads N] [gan|conv]..." >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(gan conv)
torch=no
/usr/bin/python3 -c 'import torch' 2>/dev/null && torch=yes

# The value of KEY in the RESULT line of a benchmark's output; stops the
# script, naming the key, when the line does not have it.
result() {
  local value
  value=$(grep '^RESULT' <<<"$1" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p")
  if [ -z "$value" ]; then
    echo "compare: no $2= in the RESULT line of the output above" >&2
    exit 1
  fi
  echo "$value"
}
# KEY_A of output A over KEY_B of output B, to three decimals:
#   ratio A KEY_A B KEY_B
# Assign it (r=$(ratio ...)) so that set -e stops the script when a figure is missing.
ratio() {
  local a b
  a=$(result "$1" "$2") || exit 1
  b=$(result "$3" "$4") || exit 1
  awk -v a="$a" -v b="$b" 'BEGIN { if (!(a + 0 > 0 && b + 0 > 0)) exit 1; printf "%.3f", a / b }' ||
    { echo "compare: cannot divide $2=$a by $4=$b" >&2; exit 1; }
}

echo "== $(uptime); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (OpenBLAS picks kernels for this CPU)}"
for part in "${parts[@]}"; do
  if [ "$part" = gan ]; then
    [ -x "$build/benchmarks/gan_step" ] || { echo "compare: build $build first (meson setup $build && ninja -C $build)" >&2; exit 1; }
    echo "== xgrad: $build/benchmarks/gan_step --threads $threads"
    out=$("$build/benchmarks/gan_step" --threads "$threads"); echo "$out"
    if [ $torch = yes ]; then
      echo "== PyTorch: benchmarks/torch_gan_step.py --threads $threads"
      t=$(/usr/bin/python3 benchmarks/torch_gan_step.py --threads "$threads"); echo "$t"
      r=$(ratio "$out" ms_per_step "$t" torch_ms_per_step)
      echo "RATIO gan_step xgrad/torch=$r"
    fi
  else
    [ -x "$build/benchmarks/conv_step" ] || { echo "compare: build $build first (meson setup $build && ninja -C $build)" >&2; exit 1; }
    echo "== xgrad: $build/benchmarks/conv_step --threads $threads"
    out=$("$build/benchmarks/conv_step" --threads "$threads"); echo "$out"
    if [ $torch = yes ]; then
      echo "== PyTorch: benchmarks/torch_conv_bench.py --threads $threads"
      layers=$(/usr/bin/python3 benchmarks/torch_conv_bench.py --threads "$threads" | grep -E '^(RESULT|#)' | grep -E 'fwd_bwd|^#')
      echo "$layers"
      line="RATIO layers xgrad/torch"
      for layer in conv1:A conv2:B convt1:C convt2:D; do # conv_step's name, then the PyTorch script's
        name=${layer%:*} shape=${layer#*:}
        torch_layer=$(grep "shape=$shape pass=fwd_bwd" <<<"$layers")
        r=$(ratio "$out" "${name}_ms" "$torch_layer" median_ms)
        line+=" $name=$r"
      done
      echo "$line"
      echo "== PyTorch: benchmarks/torch_dcgan_step.py --threads $threads (same algorithm, then the classic example)"
      same=$(/usr/bin/python3 benchmarks/torch_dcgan_step.py --threads "$threads" --fake-mode nograd --freeze-d); echo "$same"
      classic=$(/usr/bin/python3 benchmarks/torch_dcgan_step.py --threads "$threads"); echo "$classic"
      r_same=$(ratio "$out" dcgan_ms_per_step "$same" torch_ms_per_step)
      r_classic=$(ratio "$out" dcgan_ms_per_step "$classic" torch_ms_per_step)
      echo "RATIO dcgan_step xgrad/torch(same algorithm)=$r_same xgrad/torch(classic example)=$r_classic"
      echo "== PyTorch: benchmarks/torch_dcgan_step.py --threads $threads --d-only plain, then --d-only r1"
      d_plain=$(/usr/bin/python3 benchmarks/torch_dcgan_step.py --threads "$threads" --d-only plain); echo "$d_plain"
      d_r1=$(/usr/bin/python3 benchmarks/torch_dcgan_step.py --threads "$threads" --d-only r1); echo "$d_r1"
      r_plain=$(ratio "$out" d_step_ms "$d_plain" torch_ms_per_step)
      r_r1=$(ratio "$out" r1_d_step_ms "$d_r1" torch_ms_per_step)
      echo "RATIO d_step xgrad/torch=$r_plain r1_d_step xgrad/torch=$r_r1"
    fi
  fi
done
[ $torch = yes ] || echo "== PyTorch: not importable by /usr/bin/python3 (apt-get install python3-torch); comparison skipped"
