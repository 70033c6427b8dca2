#!/usr/bin/env python3
"""test_parity.py - the server classifies exactly as the trainer evaluates.

Usage: test_parity.py [PATH/TO/fmnist-serve [PATH/TO/fmnist-train]]
(or FMNIST_SERVE / FMNIST_TRAIN; weights from FMNIST_WEIGHTS_DIR, default
the repository's weights/).

For every model in the weights directory: `fmnist-train eval MODEL
--predictions FILE.csv` writes the predicted class of each test image; the
first N_IMAGES test images, encoded here as 8-bit gray PNGs, are POSTed to
/v1/classify?model=MODEL&invert=false as multipart forms of BATCH images,
and every image's class_id must equal the CSV's.  A PNG of a 28x28 image
decodes to exactly the IDX bytes, so any difference is a bug in decoding,
preprocessing or inference, not noise.  Skips (passing, with a note) when
the data set is absent.  Prints "N passed, M failed"; exits 1 on failure.

Beside the shipped files, a small residual network trained here (batch norm,
a strided stage, an add with its 1x1 projection, global pooling) and
calibrated with the mirror on: the server serves a file of the modern layers
with its serving options exactly as the trainer evaluates it.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Runner, Server, copy_weights, curl, expect, find_binary, multipart,  # noqa: E402
                    png_gray, read_test_images)

N_IMAGES = 1000
BATCH = 100

SERVE = find_binary("FMNIST_SERVE", 1, ["build/server/fmnist-serve", "build-tmp/server/fmnist-serve"])
TRAIN = find_binary("FMNIST_TRAIN", 2, ["build/model/fmnist-train", "build-tmp/model/fmnist-train"])


RESIDUAL = {"name": "tiny-res", "input": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
    {"type": "relu", "name": "s"},
    {"type": "conv2d", "out": 16, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
    {"type": "batchnorm2d"}, {"type": "relu"},
    {"type": "conv2d", "out": 16, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
    {"type": "add", "inputs": [-1, "s"]}, {"type": "relu"}, {"type": "global_avgpool"},
    {"type": "linear", "out": 10}]}


def train_residual(wdir, tmp):
    """tiny-res.safetensors in wdir: 2 epochs on 3,000 images, calibrated with the mirror."""
    arch = os.path.join(tmp, "tiny-res.json")
    with open(arch, "w") as f:
        json.dump(RESIDUAL, f)
    out = os.path.join(wdir, "tiny-res.safetensors")
    for cmd in ([TRAIN, "train", "--model", arch, "--limit", "3000", "--val", "500", "--epochs", "2", "--no-test",
                 "--quiet", "--seed", "5", "--out", out], [TRAIN, "calibrate", out, "--tta", "hflip", "--val", "500"]):
        r = subprocess.run(cmd, capture_output=True, timeout=600)
        expect(r.returncode == 0, "%s: %s" % (" ".join(cmd[:2]), r.stderr.decode()[-500:]))
    for f in os.listdir(wdir):  # the history beside it is not a model
        if f.startswith("tiny-res") and not f.endswith(".safetensors"):
            os.remove(os.path.join(wdir, f))
    return "tiny-res"


def parity(srv, model, pngs, tmp):
    csv_path = os.path.join(tmp, model + ".csv")
    r = subprocess.run([TRAIN, "eval", os.path.join(srv.weights, model + ".safetensors"), "--predictions", csv_path],
                       capture_output=True, timeout=600)
    expect(r.returncode == 0, "fmnist-train eval %s failed: %s" % (model, r.stderr.decode()[-500:]))
    with open(csv_path) as f:
        want = {int(row["index"]): int(row["predicted"]) for row in csv.DictReader(f)}
    mismatches = []
    for start in range(0, len(pngs), BATCH):
        files = [("image", "t%05d.png" % i, pngs[i]) for i in range(start, min(start + BATCH, len(pngs)))]
        body, ctype = multipart(files)
        path = os.path.join(tmp, "batch.bin")
        with open(path, "wb") as f:
            f.write(body)
        r = curl(srv.url("/v1/classify?invert=false&top=1&model=" + model), "--data-binary", "@" + path,
                 "-H", "Content-Type: " + ctype, timeout=120)
        expect(r.status == 200, "classify batch at %d: %r" % (start, r))
        preds = r.json()["predictions"]
        expect(len(preds) == len(files), "%d predictions for %d images" % (len(preds), len(files)))
        for k, p in enumerate(preds):
            i = start + k
            expect(p.get("filename") == "t%05d.png" % i, "answers out of order at %d" % i)
            if p["class_id"] != want[i]:
                mismatches.append((i, p["class_id"], want[i]))
    expect(not mismatches, "%s: %d of %d differ from fmnist-train eval, first (index, server, trainer): %s"
           % (model, len(mismatches), len(pngs), mismatches[:10]))


def main():
    runner = Runner()
    test_set = read_test_images(N_IMAGES)
    if test_set is None:
        print("note: Fashion-MNIST test set not found; parity skipped")
        return runner.finish()
    pngs = [png_gray(28, 28, px) for px in test_set[0]]
    tmp = tempfile.mkdtemp(prefix="fmnist-parity-")
    wdir = os.path.join(tmp, "weights")
    models = copy_weights(wdir)
    runner.run("train a residual network", lambda: models.append(train_residual(wdir, tmp)))  # failure counted
    srv = Server(SERVE, ["--weights", wdir, "--static", "", "--max-batch", str(max(BATCH, 256))])
    srv.weights = wdir
    try:
        for m in models:
            runner.run("parity " + m, parity, srv, m, pngs, tmp)
    finally:
        rc = srv.stop()
    runner.run("clean exit", lambda: expect(rc == 0, "exit status %s" % rc))
    bad = [ln for ln in srv.log() if "Sanitizer" in ln or "runtime error:" in ln]
    runner.run("no sanitizer reports", lambda: expect(not bad, "\n".join(bad[:20])))
    shutil.rmtree(tmp, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
