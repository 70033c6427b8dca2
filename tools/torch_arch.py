"""torch_arch.py - an fmnist architecture (the JSON in every weight file's
metadata and history) as the equivalent torch.nn.Module.

Layer i of the architecture is submodule "i", so the tensor names of our
.safetensors files ("0.weight", "1.running_mean", "8.proj.0.weight", ...)
are its state_dict keys: `model.load_state_dict(safetensors.torch.load_file(f))`
loads a file we trained.  A sequential architecture (every layer reads the
one before) becomes a plain nn.Sequential; one whose layers name their
inputs becomes a Graph that runs the layers in order and feeds each the
outputs it names.  Used by the benchmarks, make-torch-reference.py and the
cross-checks of files trained by fmnist-train (tools/check-torch.py).
"""
import torch
import torch.nn as nn


class Add(nn.Module):
    """fmnist's add: x0 + x1, the second input projected by a 1x1 strided
    convolution (+ batch norm) when the shapes differ, as ResNet does."""

    def __init__(self, proj=None):
        super().__init__()
        if proj is not None:
            self.proj = proj

    def forward(self, a, b):
        if hasattr(self, "proj"):
            b = self.proj(b)
        return a + b


class GlobalAvgPool(nn.Sequential):
    """AdaptiveAvgPool2d(1) then Flatten: [N, C, H, W] -> [N, C]."""

    def __init__(self):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Graph(nn.Module):
    """Layers run in order; inputs[i] lists what layer i reads (-1: the
    network's input, else a layer index)."""

    def __init__(self, modules, inputs):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)
        self.inputs = inputs

    def forward(self, x):
        outs = []
        for i, m in enumerate(self.children()):
            outs.append(m(*[x if j < 0 else outs[j] for j in self.inputs[i]]))
        return outs[-1]


def resolve_inputs(arch):
    """Each layer's inputs as indices (-1 = the network's input), as
    fm_arch.c resolves them: an index, a negative offset, a name or "input"."""
    names = {l["name"]: i for i, l in enumerate(arch["layers"]) if "name" in l}
    out = []
    for i, l in enumerate(arch["layers"]):
        refs = l.get("inputs", [-1])
        res = []
        for r in refs:
            if r == "input":
                res.append(-1)
            elif isinstance(r, str):
                res.append(names[r])
            elif r < 0:
                res.append(i + r if i + r >= 0 else -1)
            else:
                res.append(r)
        out.append(res)
    return out


def build(arch):
    inputs = resolve_inputs(arch)
    shapes = []  # (c, h, w) of each layer's output; flat vectors are (f, 1, 1)
    mods = []
    in_shape = tuple(arch["input"])
    for i, l in enumerate(arch["layers"]):
        t = l["type"]
        src = [in_shape if j < 0 else shapes[j] for j in inputs[i]]
        c, h, w = src[0]
        if t == "conv2d":
            k, s = l["kernel"], l.get("stride", 1)
            pad = 0 if l.get("padding", "valid") == "valid" else k // 2
            mods.append(nn.Conv2d(c, l["out"], k, stride=s, padding=pad, bias=l.get("bias", True)))
            shape = (l["out"], (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
        elif t in ("maxpool2d", "avgpool2d"):
            k = l.get("kernel", 2)
            mods.append(nn.MaxPool2d(k) if t == "maxpool2d" else nn.AvgPool2d(k))
            shape = (c, h // k, w // k)
        elif t == "global_avgpool":
            mods.append(GlobalAvgPool())
            shape = (c, 1, 1)
        elif t in ("batchnorm2d", "batchnorm1d"):
            cls = nn.BatchNorm2d if t == "batchnorm2d" else nn.BatchNorm1d
            mods.append(cls(c, eps=l.get("eps", 1e-5), momentum=l.get("momentum", 0.1)))
            shape = (c, h, w)
        elif t == "relu":
            mods.append(nn.ReLU())
            shape = (c, h, w)
        elif t == "dropout":
            mods.append(nn.Dropout(l["p"]))
            shape = (c, h, w)
        elif t == "flatten":
            mods.append(nn.Flatten())
            shape = (c * h * w, 1, 1)
        elif t == "linear":
            mods.append(nn.Linear(c, l["out"], bias=l.get("bias", True)))
            shape = (l["out"], 1, 1)
        elif t == "add":
            c2, h2, w2 = src[1]
            proj = None
            if (c2, h2, w2) != (c, h, w):
                s = next(s for s in range(1, 5) if (h2 - 1) // s + 1 == h and (w2 - 1) // s + 1 == w)
                if l.get("projection", "conv_bn") == "conv":
                    proj = nn.Conv2d(c2, c, 1, stride=s, bias=True)
                else:
                    proj = nn.Sequential(nn.Conv2d(c2, c, 1, stride=s, bias=False), nn.BatchNorm2d(c))
            mods.append(Add(proj))
            shape = (c, h, w)
        else:
            raise ValueError("layer type %r has no PyTorch equivalent here" % t)
        shapes.append(shape)
    if all(inp == [i - 1] for i, inp in enumerate(inputs)):
        return nn.Sequential(*mods)
    return Graph(mods, inputs)
