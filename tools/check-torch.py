#!/usr/bin/env python3
"""check-torch.py - a weight file trained by fmnist-train, loaded into PyTorch,
gives the probabilities our engine serves, image for image.

Usage: tools/check-torch.py [--train PATH/fmnist-train] [--limit N] [--tolerance T]
                            FILE.safetensors...

For each file: the architecture in its metadata becomes a torch.nn.Module
(tools/torch_arch.py, tensor names = state_dict keys), its tensors are loaded
with load_state_dict(strict=True), and the Fashion-MNIST test images go
through it in eval mode (batch norm on its running statistics, dropout off),
with the file's "serving" options applied as the engine applies them (the
mirror's logits averaged in for tta "hflip", softmax of logits / temperature).
`fmnist-train eval FILE --probabilities CSV` gives the engine's served
probabilities for the same images.  Passes when the largest absolute
difference of any probability is at most --tolerance (default 1e-4) and the
predicted classes agree wherever the engine's top two differ by more than
the tolerance.  Prints one line per file (with the mirror and temperature it
applied) and a JSON summary; exit 1 on a
mismatch, 77 when PyTorch is not installed (Debian: python3-torch).

What it leaves out: the out-of-distribution detector's score (served beside
the probabilities, not part of them) and int8 files (no PyTorch equivalent
of our quantised kernels here).
"""
import argparse
import csv
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

try:
    import torch
except ImportError:
    print("check-torch: PyTorch is not installed (apt-get install python3-torch): skipped")
    sys.exit(77)
import torch_arch  # noqa: E402  (needs torch)


def load_file(path):
    """(state dict, architecture, serving options) of one of our weight files."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    sd = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] not in ("F32", "I64"):
            raise ValueError("%s: tensor %s has dtype %s (only F32 and I64 files have a PyTorch twin here)"
                             % (path, k, v["dtype"]))
        lo, hi = v["data_offsets"]
        dt = torch.float32 if v["dtype"] == "F32" else torch.int64
        sd[k] = torch.frombuffer(bytearray(data[lo:hi]), dtype=dt).reshape(v["shape"]).clone()
    meta = header.get("__metadata__", {})
    serving = json.loads(meta["serving"]) if "serving" in meta else {}
    return sd, json.loads(meta["architecture"]), serving


def test_images(data_dir, limit):
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            (count,) = struct.unpack(">I", raw[4:8])
            count = min(count, limit)
            px = torch.frombuffer(bytearray(raw[16:16 + count * 784]), dtype=torch.uint8).float() / 255.0
            return px.reshape(count, 1, 28, 28)
    raise FileNotFoundError("Fashion-MNIST test images not found under %s (apt-get install dataset-fashion-mnist)"
                            % data_dir)


def torch_probs(path, x):
    sd, arch, serving = load_file(path)
    model = torch_arch.build(arch)
    model.load_state_dict(sd, strict=True)
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 500):
            xb = x[i:i + 500]
            z = model(xb)
            if serving.get("tta", "none") == "hflip":
                z = 0.5 * (z + model(torch.flip(xb, dims=[3])))
            out.append(torch.softmax(z / float(serving.get("temperature", 1.0)), dim=1))
    return torch.cat(out), serving


def engine_probs(train, path, data_dir):
    with tempfile.TemporaryDirectory(prefix="fmnist-check-torch-") as tmp:
        csv_path = os.path.join(tmp, "p.csv")
        r = subprocess.run([train, "eval", path, "--probabilities", csv_path, "--data", data_dir, "--json"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("fmnist-train eval %s: exit %d: %s" % (path, r.returncode, r.stderr.strip()))
        with open(csv_path) as f:
            rows = list(csv.reader(f))[1:]
    return torch.tensor([[float(v) for v in row[1:]] for row in rows], dtype=torch.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--train", default=os.environ.get("FMNIST_TRAIN", os.path.join(ROOT, "build/model/fmnist-train")))
    ap.add_argument("--data", default=os.environ.get("FMNIST_DATA", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--limit", type=int, default=10000, help="test images compared (default all 10,000)")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    x = test_images(a.data, a.limit)
    summary, bad = [], 0
    for path in a.files:
        ours = engine_probs(a.train, path, a.data)[:len(x)]
        theirs, serving = torch_probs(path, x)
        theirs = theirs.double()
        diff = (ours - theirs).abs()
        worst = float(diff.max())
        top2 = ours.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > a.tolerance
        disagree = int(((ours.argmax(1) != theirs.argmax(1)) & clear).sum())
        ok = worst <= a.tolerance and disagree == 0
        bad += not ok
        print("%s %s: %d images, largest |p_fmnist - p_torch| %.3g (tolerance %g), mean %.3g, %d predictions "
              "differ, serving %s" % ("ok  " if ok else "FAIL", os.path.basename(path), len(x), worst, a.tolerance,
                                      float(diff.mean()), disagree,
                                      json.dumps({k: serving[k] for k in ("tta", "temperature") if k in serving},
                                                 sort_keys=True)))
        summary.append({"file": path, "images": len(x), "max_abs_diff": worst, "mean_abs_diff": float(diff.mean()),
                        "predictions_differ": disagree, "ok": ok})
    print(json.dumps({"tolerance": a.tolerance, "files": summary}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
