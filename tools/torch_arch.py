"""torch_arch.py - an fmnist architecture (the JSON in every weight file's
metadata and history) as the equivalent torch.nn.Sequential.

Layer i of the architecture is module i of the Sequential, so the tensor
names of our .safetensors files ("0.weight", ...) are its state_dict keys.
Used by the PyTorch side of the benchmarks and by make-torch-reference.py.
"""
import torch.nn as nn


def build(arch):
    layers, c, hw, flat = [], arch["input"][0], arch["input"][1], None
    for l in arch["layers"]:
        t = l["type"]
        if t == "conv2d":
            pad = 0 if l.get("padding", "valid") == "valid" else l["kernel"] // 2
            layers.append(nn.Conv2d(c, l["out"], l["kernel"], padding=pad))
            c, hw = l["out"], hw - l["kernel"] + 1 + 2 * pad
        elif t == "maxpool2d":
            layers.append(nn.MaxPool2d(l.get("kernel", 2)))
            hw //= l.get("kernel", 2)
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "dropout":
            layers.append(nn.Dropout(l["p"]))
        elif t == "flatten":
            layers.append(nn.Flatten())
            flat = c * hw * hw
        elif t == "linear":
            layers.append(nn.Linear(flat, l["out"]))
            flat = l["out"]
        else:
            raise ValueError("layer type %r has no PyTorch equivalent here" % t)
    return nn.Sequential(*layers)
