#!/usr/bin/python3
"""make-torch-reference.py - fixed reference vectors from PyTorch for tests/test_torch_ref.c.

    tools/install-deps.sh bench && /usr/bin/python3 tools/make-torch-reference.py

Writes tests/data/torch_reference.json (committed; the tests never need
PyTorch): for small networks built from the engine's own architecture
JSON (conv2d valid and same, relu, maxpool2d, flatten, linear), random
parameters named as in our safetensors files (nn.Sequential indices), a
random batch and labels, PyTorch's logits, mean cross-entropy loss and the
gradient of every parameter (autograd, float64 for the reference values);
and a few optimiser steps from fixed gradients: SGD with momentum
(torch.optim.SGD) and Adam with eps 1e-7 in Keras' form (written out in
torch ops; torch.optim.Adam's own result is kept beside it).  Values are rounded to 9 significant digits.
"""
import json
import os

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
        for p in net.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.8)
    c, h, w = arch["input"]
    # inputs in [0,1] and rounded to float32 so both sides see the same numbers
    x = torch.rand((batch, c, h, w), generator=gen, dtype=torch.float64).float().double()
    y = torch.randint(0, 10, (batch,), generator=gen)
    for p in net.parameters():  # parameters rounded to float32 as well
        with torch.no_grad():
            p.copy_(p.float().double())
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    params = {k: r(v) for k, v in net.state_dict().items()}
    grads = {k: r(v.grad) for k, v in net.named_parameters()}
    return {"name": name, "architecture": arch, "batch": batch, "x": r(x), "labels": y.tolist(),
            "params": params, "logits": r(logits), "loss": float("%.12g" % loss.item()), "grads": grads}


def optim_case(kind, gen):
    n, steps = 24, 4
    p0 = ((torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)).float()
    grads = [((torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2).float() for _ in range(steps)]
    p = p0.clone().double().requires_grad_(True)
    if kind == "sgd":
        lr, mom = 0.1, 0.9
        opt = torch.optim.SGD([p], lr=lr, momentum=mom)
    else:
        lr, mom = 0.01, 0.0
        opt = torch.optim.Adam([p], lr=lr, betas=(0.9, 0.999), eps=1e-7)
    for g in grads:
        p.grad = g.double().clone()
        opt.step()
    case = {"optimizer": kind, "lr": lr, "momentum": mom, "params": r(p0), "grads": [r(g) for g in grads],
            "expected": r(p)}
    if kind == "adam":
        # Keras' Adam (the engine's, as the issue asks): epsilon added to sqrt(v) before the
        # bias correction folded into the step size, lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t).
        # PyTorch adds eps to sqrt(v_hat): the two differ while v is small (first steps).
        q, m, v = p0.clone().double(), torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        for t, g in enumerate(grads, 1):
            g = g.double()
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            lr_t = lr * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
            q = q - lr_t * m / (v.sqrt() + 1e-7)
        case["expected_torch_optim"] = case["expected"]
        case["expected"] = r(q)
    return case


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
    doc = {"generator": "tools/make-torch-reference.py", "torch": torch.__version__,
           "networks": [net_case("ref_cnn", cnn, 3, gen), net_case("ref_cnn_k5", cnn5, 2, gen),
                        net_case("ref_mlp", mlp, 4, gen)],
           "optimizers": [optim_case("sgd", gen), optim_case("adam", gen)]}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (OUT, os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
