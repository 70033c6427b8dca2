#!/usr/bin/python3
"""make-torch-reference.py - fixed reference vectors from PyTorch for tests/test_torch_ref.c.

    tools/install-deps.sh bench && /usr/bin/python3 tools/make-torch-reference.py

Writes tests/data/torch_reference.json (committed; the tests never need
PyTorch): for small networks built from the engine's own architecture
JSON by tools/torch_arch.py (conv2d valid, same and strided, with and
without bias, relu, maxpool2d, avgpool2d, global_avgpool, batchnorm2d and
1d, add with and without a projection, flatten, linear), random
parameters and batch-norm buffers named as in our safetensors files, a
random batch and labels, PyTorch's training-mode logits, mean
cross-entropy loss and the gradient of every parameter (autograd, float64
for the reference values), the running statistics after that training
forward, and the eval-mode logits with them; a few optimiser steps from
fixed gradients: SGD with momentum, with Nesterov and weight decay
(torch.optim.SGD), Adam with eps 1e-7 in Keras' form (written out in torch
ops; torch.optim.Adam's own result is kept beside it) and AdamW (Keras'
Adam with decoupled decay, written out); and the trainable-parameter count
PyTorch gives for every named architecture (their JSON from
`fmnist-train summary NAME --json`; FMNIST_TRAIN=path/to/fmnist-train,
default build/model/fmnist-train); integrated gradients of the shipped
weights/cnn3.safetensors for the first three test images (plain PyTorch:
Captum is not packaged; needs dataset-fashion-mnist).  Values are rounded
to 9 significant digits.
"""
import json
import os
import subprocess

import torch
import torch.nn as nn
from torch_arch import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "torch_reference.json")


def r(t):
    return [float("%.9g" % v) for v in t.detach().reshape(-1).tolist()]


def net_case(name, arch, batch, gen):
    net = build(arch).double()
    with torch.no_grad():
        for mod in net.modules():
            is_bn = isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))
            for pname, p in mod.named_parameters(recurse=False):
                if is_bn and pname == "weight":
                    p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 0.5 + 0.75)
                else:
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.8)
            if is_bn:
                mod.running_mean.copy_((torch.rand(mod.running_mean.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.4)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen, dtype=torch.float64) + 0.5)
        for t in net.state_dict().values():  # everything rounded to float32 so both sides see the same numbers
            if t.dtype == torch.float64:
                t.copy_(t.float().double())
    c, h, w = arch["input"]
    x = torch.rand((batch, c, h, w), generator=gen, dtype=torch.float64).float().double()
    y = torch.randint(0, 10, (batch,), generator=gen)
    params = {k: r(v) for k, v in net.state_dict().items()}
    net.train()
    logits = net(x)  # batch norm: batch statistics, and the running estimates move
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {k: r(v.grad) for k, v in net.named_parameters()}
    buffers = {k: r(v) for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    net.eval()
    with torch.no_grad():
        eval_logits = net(x)
    return {"name": name, "architecture": arch, "batch": batch, "x": r(x), "labels": y.tolist(),
            "params": params, "logits": r(logits), "loss": float("%.12g" % loss.item()), "grads": grads,
            "buffers_after": buffers, "eval_logits": r(eval_logits)}


def optim_case(kind, gen, nesterov=False, wd=0.0):
    n, steps = 24, 4
    p0 = ((torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)).float()
    grads = [((torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2).float() for _ in range(steps)]
    p = p0.clone().double().requires_grad_(True)
    if kind == "sgd":
        lr, mom = 0.1, 0.9
        opt = torch.optim.SGD([p], lr=lr, momentum=mom, nesterov=nesterov, weight_decay=wd)
    else:
        lr, mom = 0.01, 0.0
        opt = torch.optim.Adam([p], lr=lr, betas=(0.9, 0.999), eps=1e-7)
    if kind != "adamw":
        for g in grads:
            p.grad = g.double().clone()
            opt.step()
    case = {"optimizer": kind, "lr": lr, "momentum": mom, "nesterov": nesterov, "weight_decay": wd,
            "params": r(p0), "grads": [r(g) for g in grads], "expected": r(p)}
    if kind in ("adam", "adamw"):
        # Keras' Adam (the engine's, as the issue asks): epsilon added to sqrt(v) before the
        # bias correction folded into the step size, lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t).
        # PyTorch adds eps to sqrt(v_hat): the two differ while v is small (first steps).
        # AdamW: the same with decoupled decay p -= lr wd p first (torch.optim.AdamW's order).
        q, m, v = p0.clone().double(), torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        for t, g in enumerate(grads, 1):
            g = g.double()
            if kind == "adamw":
                q = q - lr * wd * q
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            lr_t = lr * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
            q = q - lr_t * m / (v.sqrt() + 1e-7)
        if kind == "adam":
            case["expected_torch_optim"] = case["expected"]
        case["expected"] = r(q)
    return case


def load_safetensors(path):
    """A state dict from one of our weight files (F32 and I64 tensors), and its architecture."""
    import struct
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    sd = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        dt = torch.float32 if v["dtype"] == "F32" else torch.int64
        sd[k] = torch.frombuffer(bytearray(data[lo:hi]), dtype=dt).reshape(v["shape"]).clone()
    return sd, json.loads(header["__metadata__"]["architecture"])


def read_test_images(count):
    """The first `count` Fashion-MNIST test images as [count, 1, 28, 28] floats in [0, 1]."""
    import gzip
    base = os.environ.get("FMNIST_DATA", "/usr/share/datasets/fashion-mnist")
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        path = os.path.join(base, name)
        if os.path.exists(path):
            raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            px = torch.tensor(list(raw[16:16 + count * 784]), dtype=torch.float32) / 255.0
            return px.reshape(count, 1, 28, 28)
    raise FileNotFoundError("Fashion-MNIST test images not found under %s" % base)


def ig_case(steps=32, count=3):
    """Integrated gradients of the shipped cnn3 for its predicted class on the
    first test images: black baseline, midpoint rule (alpha_k = (k + 1/2) / steps),
    in float64 - what fm_explain computes in float32."""
    sd, arch = load_safetensors(os.path.join(ROOT, "weights", "cnn3.safetensors"))
    net = build(arch)
    net.load_state_dict(sd)
    net = net.double().eval()
    x = read_test_images(count).double()
    cases = []
    for i in range(count):
        xi = x[i:i + 1]
        with torch.no_grad():
            c = int(net(xi).argmax())
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        path = (alphas.view(-1, 1, 1, 1) * xi).requires_grad_(True)
        net(path)[:, c].sum().backward()
        attr = (xi * path.grad.mean(0, keepdim=True)).reshape(-1)
        cases.append({"index": i, "class": c, "steps": steps, "x": r(xi), "attributions": r(attr)})
    return cases


def named_counts():
    """PyTorch's trainable-parameter count of every named architecture."""
    exe = os.environ.get("FMNIST_TRAIN", os.path.join(ROOT, "build", "model", "fmnist-train"))
    names = ["mlp2", "mlp3", "cnn1", "cnn2", "cnn3", "vgg-bn", "resnet8", "resnet20", "resnet20-w32"]
    out = {}
    for n in names:
        arch = json.loads(subprocess.check_output([exe, "summary", n, "--json"]))
        out[n] = sum(p.numel() for p in build(arch).parameters())
    return out


def main():
    gen = torch.Generator().manual_seed(20261126)
    cnn = {"name": "ref_cnn", "input": [1, 10, 10], "layers": [
        {"type": "conv2d", "out": 4, "kernel": 3, "padding": "valid"}, {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "conv2d", "out": 6, "kernel": 3, "padding": "same"}, {"type": "relu"},
        {"type": "flatten"}, {"type": "linear", "out": 12}, {"type": "relu"}, {"type": "linear", "out": 10}]}
    cnn5 = {"name": "ref_cnn_k5", "input": [2, 9, 9], "layers": [
        {"type": "conv2d", "out": 3, "kernel": 5, "padding": "same"}, {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"}, {"type": "linear", "out": 10}]}
    mlp = {"name": "ref_mlp", "input": [1, 8, 8], "layers": [
        {"type": "flatten"}, {"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 10}]}
    bn = {"name": "ref_bn", "input": [2, 8, 8], "layers": [
        {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
        {"type": "relu"}, {"type": "avgpool2d", "kernel": 2},
        {"type": "conv2d", "out": 5, "kernel": 3, "stride": 2, "padding": "valid"}, {"type": "batchnorm2d", "momentum": 0.2},
        {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out": 8, "bias": False},
        {"type": "batchnorm1d", "eps": 0.001}, {"type": "relu"}, {"type": "linear", "out": 10}]}
    res = {"name": "ref_resnet", "input": [1, 9, 9], "layers": [
        {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
        {"type": "relu", "name": "s0"},
        {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
        {"type": "relu"}, {"type": "conv2d", "out": 4, "kernel": 3, "padding": "same", "bias": False},
        {"type": "batchnorm2d"}, {"type": "add", "inputs": [-1, "s0"]}, {"type": "relu", "name": "s1"},
        {"type": "conv2d", "out": 6, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
        {"type": "batchnorm2d"}, {"type": "relu"},
        {"type": "conv2d", "out": 6, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
        {"type": "add", "inputs": [-1, "s1"]}, {"type": "relu", "name": "s2"},
        {"type": "conv2d", "out": 7, "kernel": 3, "stride": 2, "padding": "same"}, {"type": "relu"},
        {"type": "add", "inputs": [-1, "s2"], "projection": "conv"},
        {"type": "global_avgpool"}, {"type": "linear", "out": 10}]}
    doc = {"generator": "tools/make-torch-reference.py", "torch": torch.__version__,
           "networks": [net_case("ref_cnn", cnn, 3, gen), net_case("ref_cnn_k5", cnn5, 2, gen),
                        net_case("ref_mlp", mlp, 4, gen), net_case("ref_bn", bn, 5, gen),
                        net_case("ref_resnet", res, 4, gen)],
           "optimizers": [optim_case("sgd", gen), optim_case("adam", gen),
                          optim_case("sgd", gen, nesterov=True, wd=0.01), optim_case("adamw", gen, wd=0.05)],
           "parameter_counts": named_counts(),
           "integrated_gradients": ig_case()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
