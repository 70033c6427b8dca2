#!/bin/sh
# install-deps.sh - installs the Debian packages fmnist needs, only those
# missing, so a second run costs a dpkg query and nothing else.
#
#   tools/install-deps.sh [build] [runtime] [test] [bench] [data] [ood]
#
#   build    compilers, meson, headers, Open MPI (mpirun and its headers, for
#            fmnist-train's data-parallel training; default when no group is named)
#   runtime  shared libraries fmnist-serve needs at run time
#   test     build + clang, sanitizer runtimes, curl, nginx, chromium, wrk,
#            openmpi-bin (tests/integration/test_mpi.py runs mpirun on loopback),
#            valgrind, python3-yaml and python3-pil (manifest checks),
#            python3-torch (files we train, checked in PyTorch),
#            node/npm when absent (the whole test suite)
#   bench    python3-torch and friends for docs/BENCHMARKS.md
#   data     the Fashion-MNIST data set (part of build and test)
#   ood      what tools/make-ood-set.py renders the out-of-distribution set
#            with: python3-pil, python3-numpy and the packaged fonts whose
#            artwork it uses (tests/data/ood/LICENSES.md)
#
# Used by the README's quick start, .ci/run and the Dockerfile.
set -eu

groups="$*"
[ -n "$groups" ] || groups=build

pkgs=""
for g in $groups; do
    case "$g" in
    build) pkgs="$pkgs gcc meson ninja-build pkg-config zlib1g-dev libcjson-dev libpng-dev libstb-dev libmicrohttpd-dev check dataset-fashion-mnist openmpi-bin libopenmpi-dev" ;;
    runtime) pkgs="$pkgs zlib1g libcjson1 libpng16-16 libmicrohttpd12 ca-certificates" ;;
    test) pkgs="$pkgs gcc meson ninja-build pkg-config zlib1g-dev libcjson-dev libpng-dev libstb-dev libmicrohttpd-dev check dataset-fashion-mnist openmpi-bin libopenmpi-dev clang libclang-rt-14-dev curl python3 python3-yaml python3-pil python3-torch nginx chromium wrk valgrind"
        command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
        command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm" ;;
    bench) pkgs="$pkgs python3 python3-torch python3-numpy libopenblas0-pthread python3-fastapi uvicorn python3-httptools python3-uvloop python3-pil wrk" ;;
    data) pkgs="$pkgs dataset-fashion-mnist" ;;
    ood) pkgs="$pkgs python3 python3-pil python3-numpy dataset-fashion-mnist fonts-noto-color-emoji fonts-symbola fonts-font-awesome fonts-materialdesignicons-webfont fonts-material-design-icons-iconfont fonts-humor-sans fonts-comic-neue fonts-breip fonts-dejavu-core" ;;
    *) echo "install-deps.sh: unknown group '$g' (build, runtime, test, bench, data, ood)" >&2; exit 2 ;;
    esac
done

missing=""
for p in $pkgs; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
    *"install ok installed"*) ;;
    *) case " $missing " in *" $p "*) ;; *) missing="$missing $p" ;; esac ;;
    esac
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present ($groups)"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to install:$missing" >&2; exit 1; }
    sudo=sudo
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing
