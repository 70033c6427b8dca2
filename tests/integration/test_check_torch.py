#!/usr/bin/env python3
"""test_check_torch.py - files trained by fmnist-train give our outputs in
PyTorch (tools/check-torch.py, within 1e-4 on every probability).

Trains a small residual network (batch norm, a strided stage, an add with
its 1x1 projection, average and global pooling, dropout) for two epochs on
3,000 images, calibrates it with the mirror forced on (so the serving
options are part of what is compared), and checks it and every shipped
weight file on all 10,000 test images.  A tolerance of 1e-12 must fail (the
tool compares, it does not only run).  Exit 77 without PyTorch or the data set.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA_DIR, ROOT, find_binary  # noqa: E402

TRAIN = find_binary("FMNIST_TRAIN", 1, ["build/model/fmnist-train"])
CHECK = os.path.join(ROOT, "tools", "check-torch.py")
WEIGHTS = os.environ.get("FMNIST_WEIGHTS_DIR", os.path.join(ROOT, "weights"))
ARCH = {"name": "tiny-res", "input": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
    {"type": "relu", "name": "s"},
    {"type": "conv2d", "out": 16, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
    {"type": "batchnorm2d"}, {"type": "relu"},
    {"type": "conv2d", "out": 16, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
    {"type": "add", "inputs": [-1, "s"]}, {"type": "relu"}, {"type": "avgpool2d", "kernel": 2},
    {"type": "dropout", "p": 0.1}, {"type": "global_avgpool"}, {"type": "linear", "out": 10}]}


def run(*args):
    env = dict(os.environ, FMNIST_TRAIN=TRAIN)
    return subprocess.run([sys.executable, CHECK, *args], capture_output=True, text=True, env=env)


def main():
    try:
        import torch  # noqa: F401
    except ImportError:
        print("note: PyTorch absent (apt-get install python3-torch): skipped")
        return 77
    if not os.path.exists(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz")) and \
            not os.path.exists(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte")):
        print("note: %s absent (apt-get install dataset-fashion-mnist): skipped" % DATA_DIR)
        return 77
    failures = 0
    with tempfile.TemporaryDirectory(prefix="fmnist-check-torch-") as tmp:
        arch, out = os.path.join(tmp, "tiny-res.json"), os.path.join(tmp, "tiny-res.safetensors")
        with open(arch, "w") as f:
            json.dump(ARCH, f)
        for cmd in ([TRAIN, "train", "--model", arch, "--limit", "3000", "--val", "500", "--epochs", "2",
                     "--no-test", "--quiet", "--seed", "3", "--out", out],
                    [TRAIN, "calibrate", out, "--tta", "hflip", "--val", "500"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print("FAIL %s: exit %d: %s" % (" ".join(cmd[:2]), r.returncode, r.stderr[-500:]))
                return 1
        shipped = sorted(os.path.join(WEIGHTS, f) for f in os.listdir(WEIGHTS)
                         if f.endswith(".safetensors") and "int8" not in f)
        r = run(out, *shipped)
        print(r.stdout.rstrip())
        if r.returncode != 0 or r.stdout.count("\nok   ") + r.stdout.startswith("ok   ") != 1 + len(shipped):
            print("FAIL check-torch: exit %d: %s" % (r.returncode, r.stderr[-800:]))
            failures += 1
        elif '"tta": "hflip"' not in r.stdout:
            print("FAIL the calibrated file's serving options were not compared")
            failures += 1
        r = run(out, "--tolerance", "1e-12", "--limit", "500")
        if r.returncode != 1 or "FAIL tiny-res.safetensors" not in r.stdout:
            print("FAIL a tolerance of 1e-12 was met (exit %d): %s" % (r.returncode, r.stdout[-400:]))
            failures += 1
    print("%s" % ("check-torch: ok" if not failures else "%d failed" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
