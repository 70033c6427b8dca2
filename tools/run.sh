#!/bin/sh
# run.sh - the README's "run" command: installs what is missing, builds
# (release), and runs the main job.  Until fmnist-serve lands this is: show
# the shipped models and evaluate each on the 10,000 test images; with no
# shipped weights, train a quick mlp2 (a few epochs) and evaluate that.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh build
if [ -f build/build.ninja ]; then meson setup --reconfigure build --buildtype=release >/dev/null
else meson setup build --buildtype=release >/dev/null; fi
ninja -C build
train=build/model/fmnist-train
found=0
for w in weights/*.safetensors; do
    [ -f "$w" ] || continue
    found=1
    echo "== $w"
    "$train" eval "$w" | head -n 1
done
if [ "$found" -eq 0 ]; then
    echo "== no shipped weights yet: training a quick mlp2 (5 epochs) into build/quick-mlp2.safetensors"
    "$train" train --model mlp2 --epochs 5 --out build/quick-mlp2.safetensors
    "$train" eval build/quick-mlp2.safetensors
fi
