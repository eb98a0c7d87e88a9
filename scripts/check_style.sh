#!/usr/bin/env bash
# The house rules that a compiler does not check, run by .ci/run:
#   1. formatting: every C++ file as clang-format (.clang-format) leaves it;
#   2. layering: lib/ builds up core -> ops -> nn/optim -> io/distributed, and
#      no file includes a layer above its own;
#   3. the library's comments name no application (lib/ is used by programs
#      other than the ones in apps/).
# Prints each violation and exits 1 if there is any.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0

command -v clang-format >/dev/null || { echo "check_style: clang-format not found (apt-get install clang-format)" >&2; exit 1; }
unformatted=$(git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run 2>&1 | grep -o '^[^:]*:[0-9]*:[0-9]*: warning' | cut -d: -f1 | sort -u)
if [ -n "$unformatted" ]; then
  echo "check_style: not formatted (run clang-format -i on them):"
  echo "$unformatted" | sed 's/^/  /'
  status=1
fi

# layer folders (headers under lib/xgrad/<layer>, sources under lib/<layer>)
# and the layers each may not include
forbidden() {
  case $1 in
    core) echo "ops nn optim io distributed check" ;;
    ops) echo "nn optim io distributed check" ;;
    nn | optim | check) echo "io distributed" ;;
  esac
}
for layer in core ops nn optim check; do
  for banned in $(forbidden $layer); do
    hits=$(grep -rn "#include <xgrad/$banned[/.]" "lib/$layer" "lib/xgrad/$layer" 2>/dev/null)
    if [ -n "$hits" ]; then
      echo "check_style: the $layer layer includes $banned:"
      echo "$hits" | sed 's/^/  /'
      status=1
    fi
  done
done

hits=$(grep -rniE 'mnist_gan|gan_eval|mnist_classifier|apps/|\bpresets?\b|reference GAN' lib)
if [ -n "$hits" ]; then
  echo "check_style: library comments that name an application:"
  echo "$hits" | sed 's/^/  /'
  status=1
fi

[ $status -eq 0 ] && echo "check_style: formatting, layering and library comments ok"
exit $status
