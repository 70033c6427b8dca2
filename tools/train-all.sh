#!/bin/sh
# train-all.sh - produces everything in weights/: the five models of the
# study with their history and eval reports, and the two grid tables.
#
#   tools/train-all.sh [BUILD_DIR]      (default build dir: build)
#
# Safe to stop at any time (Ctrl-C, SIGTERM, even kill -9: checkpoints are
# written every epoch) and to run again: finished models are skipped and
# unfinished ones continue with --resume.  Exact commands, seeds and thread
# counts are the ones recorded in weights/README.md.
set -eu
cd "$(dirname "$0")/.."
bin="${1:-build}/model/fmnist-train"
[ -x "$bin" ] || { echo "train-all: $bin not found; build first (meson setup build && ninja -C build)" >&2; exit 1; }
threads="${FMNIST_THREADS:-2}"

run() { # NAME SEED FLAGS...
    name="$1"; seed="$2"; shift 2
    out="weights/$name.safetensors"
    if [ -f "$out" ] && [ ! -f "weights/$name.ckpt" ]; then echo "== $name: done ($out)"; return 0; fi
    resume=""
    [ -f "weights/$name.ckpt" ] && resume="--resume"
    echo "== $name: fmnist-train train --model $name $* --seed $seed --threads $threads --out $out $resume"
    "$bin" train --model "$name" "$@" --seed "$seed" --threads "$threads" --out "$out" $resume
}

run mlp2 42 --epochs 200 --plateau 5
run mlp3 42 --optimizer adam --lr 1e-3 --batch 512 --epochs 200 --plateau 5
run cnn3 42 --epochs 150 --plateau 4
run cnn1 7 --epochs 150 --plateau 4 --monitor val_accuracy   # seed 7: see weights/README.md
run cnn2 42 --epochs 150 --plateau 4
for m in mlp2 mlp3; do
    if [ -f "weights/grid-$m.md" ]; then echo "== grid $m: done"; continue; fi
    "$bin" grid --model "$m" --seed 42 --threads "$threads" --resume
done
