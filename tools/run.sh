#!/bin/sh
# run.sh - the README's "run" command: installs what is missing, builds
# (release), and starts fmnist-serve on the shipped weights at
# http://localhost:8080 (override with FMNIST_PORT etc.; see
# build/server/fmnist-serve --help).  Ctrl-C stops it (drains first).
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh build
if [ -f build/build.ninja ]; then meson setup --reconfigure build --buildtype=release >/dev/null
else meson setup build --buildtype=release >/dev/null; fi
ninja -C build
exec build/server/fmnist-serve --weights weights --static static "$@"
