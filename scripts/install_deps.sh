#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages xgrad builds with (all from the
# distribution: xtensor 0.24, xtensor-blas 0.20, OpenBLAS, doctest, CLI11,
# stb, zlib, Google Benchmark, OpenMPI for data-parallel training and its
# tests, Meson + ninja). Does nothing when all are present; uses sudo when
# not run as root.
#   --ci  also what CI adds: clang with its sanitizer and libFuzzer runtimes
#         (scripts/fuzz.sh, the clang build), clang-format and clang-tidy
#         (scripts/check_style.sh, scripts/tidy.sh)
set -euo pipefail

packages=(g++ meson ninja-build pkg-config cmake
          libxtensor-dev xtl-dev libxsimd-dev libxtensor-blas-dev libopenblas-dev
          doctest-dev zlib1g-dev libstb-dev libcli11-dev libbenchmark-dev nlohmann-json3-dev
          libopenmpi-dev openmpi-bin)
case ${1:-} in
  --ci) packages+=(clang libclang-rt-14-dev clang-format clang-tidy) ;;
  "") ;;
  *) echo "install_deps: unknown argument '$1' (expected --ci or nothing)" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps: run as root (missing: ${missing[*]})" >&2; exit 1; }
  sudo=sudo
fi
echo "install_deps: installing ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
