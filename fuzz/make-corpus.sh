#!/bin/sh
# make-corpus.sh - writes the fuzzers' seed corpora into OUTDIR (default
# build-fuzz/seeds): OUTDIR/{image,json,multipart,url,safetensors,idx}/.
#
#   fuzz/make-corpus.sh [OUTDIR]
#
# The seeds are made from real valid inputs by build-fuzz/fuzz/make_corpus
# (see fuzz/make_corpus.c): the first Fashion-MNIST test images (synthetic
# ones when the data set is absent) as PNG/JPEG/BMP/GIF/PNM files and JSON
# and multipart requests, tiny safetensors files written by the project's own
# writer, IDX files plain and gzip.  Nothing is committed; rerunning rewrites
# the same files.  Needs the fuzz build (fuzz/run.sh makes it).
set -eu
cd "$(dirname "$0")/.."
build=${FUZZ_BUILD_DIR:-build-fuzz}
out=${1:-$build/seeds}
if [ ! -x "$build/fuzz/make_corpus" ]; then
    echo "make-corpus.sh: $build/fuzz/make_corpus is missing; run fuzz/run.sh (or ninja -C $build fuzz/make_corpus)" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out"
"$build/fuzz/make_corpus" "$out"
for d in "$out"/*/; do
    printf '  %-12s %3d seeds, %6d bytes\n' "$(basename "$d")" "$(ls "$d" | wc -l)" "$(cat "$d"* | wc -c)"
done
