#!/usr/bin/python3
"""bench-train.py - seconds per training epoch: fmnist-train against PyTorch on CPU.

    tools/install-deps.sh bench          # python3-torch, libopenblas0-pthread, ...
    /usr/bin/python3 tools/bench-train.py [--models mlp2,cnn3] [--epochs 3]
                                          [--threads 2] [--rounds 2] [--train PATH]

For each model the same architecture (read from fmnist-train's own history
JSON, so both sides build exactly the same layers), the same optimiser,
learning rate, batch size, training examples (54,000) and thread count.
Rounds alternate fmnist-train and PyTorch so that the noise of a shared
machine hits both alike; each side reports the median of its per-epoch
training seconds (forward + backward + optimiser step over every batch,
without the validation pass).  Prints a Markdown table for
docs/BENCHMARKS.md; the ratio is PyTorch seconds / fmnist seconds (above 1:
fmnist is faster).
"""
import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FMNIST_DATA") or "/usr/share/datasets/fashion-mnist"


def load_idx(name):
    import numpy as np
    with gzip.open(os.path.join(DATA, name + ".gz"), "rb") as f:
        b = f.read()
    if "images" in name:
        return np.frombuffer(b, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return np.frombuffer(b, dtype=np.uint8, offset=8).astype(np.int64)


def ours(train_bin, model, epochs, threads, tmp):
    out = os.path.join(tmp, model + ".safetensors")
    cmd = [train_bin, "train", "--model", model, "--epochs", str(epochs), "--patience", "0",
           "--threads", str(threads), "--seed", "1", "--quiet", "--out", out]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    h = json.load(open(os.path.join(tmp, model + ".history.json")))
    return [e["train_seconds"] for e in h["history"]], h["config"]


def theirs(config, epochs, threads, x, y):
    import torch
    torch.manual_seed(1)
    torch.set_num_threads(threads)
    from torch_arch import build
    net = build(config["architecture"])
    if config["optimizer"] == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=config["learning_rate"], eps=1e-7)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=config["learning_rate"], momentum=config["momentum"])
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = config["batch_size"]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    secs = []
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xt))
        t0 = time.perf_counter()
        for i in range(0, len(xt), bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        secs.append(time.perf_counter() - t0)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp2,cnn3")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--train", default=os.path.join(ROOT, "build/model/fmnist-train"))
    a = ap.parse_args()
    import numpy as np
    import torch
    x = load_idx("train-images-idx3-ubyte")[:54000]
    y = load_idx("train-labels-idx1-ubyte")[:54000]
    print("# %s, %d cores, %s; torch %s (BLAS: %s), numpy %s; threads %d; %d epochs x %d rounds per side"
          % (platform.node(), os.cpu_count(), platform.processor() or platform.machine(), torch.__version__,
             os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3"),
             np.__version__, a.threads, a.epochs, a.rounds), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-") as tmp:
        for m in a.models.split(","):
            mine, peer, config = [], [], None
            for r in range(a.rounds):
                s, config = ours(a.train, m, a.epochs, a.threads, tmp)
                mine += s
                print("  %s round %d fmnist-train: %s" % (m, r + 1, " ".join("%.2f" % v for v in s)), flush=True)
                s = theirs(config, a.epochs, a.threads, x, y)
                peer += s
                print("  %s round %d pytorch:      %s" % (m, r + 1, " ".join("%.2f" % v for v in s)), flush=True)
            om, pm = statistics.median(mine), statistics.median(peer)
            rows.append((m, config["optimizer"], config["batch_size"], om, pm, 54000 / om, 54000 / pm, pm / om))
    print()
    print("| model | optimiser | batch | fmnist-train s/epoch | PyTorch s/epoch | fmnist ex/s | PyTorch ex/s | ratio (PyTorch s / fmnist s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %d | %.2f | %.2f | %.0f | %.0f | %.2f |" % r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
