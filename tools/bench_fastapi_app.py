"""bench_fastapi_app.py - the peer for tools/bench-serve.py: FastAPI + PyTorch.

A typical Python model server for the same job as `POST /v1/classify`: the
raw PNG body is decoded with Pillow, scaled to [0,1], run through the same
network (built from the weight file's own architecture metadata and loaded
from the same .safetensors, whose tensor names are nn.Sequential's), and
answered with the label, class id and all ten probabilities as JSON.

    FMNIST_BENCH_WEIGHTS=weights/mlp2.safetensors \
        /usr/bin/python3 -m uvicorn --app-dir tools bench_fastapi_app:app --port 8090 --workers 2
"""
import io
import json
import os
import struct

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from PIL import Image
from torch_arch import build

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    meta = header.pop("__metadata__")
    arch = json.loads(meta["architecture"])
    state = {}
    for name, t in header.items():
        lo, hi = t["data_offsets"]
        state[name] = torch.from_numpy(np.frombuffer(b, dtype=np.float32, count=(hi - lo) // 4,
                                                     offset=8 + n + lo).reshape(t["shape"]).copy())
    return arch, state


torch.set_num_threads(int(os.environ.get("FMNIST_BENCH_TORCH_THREADS", "1")))
_arch, _state = load(os.environ.get("FMNIST_BENCH_WEIGHTS", "weights/cnn3.safetensors"))
net = build(_arch)
net.load_state_dict(_state)
net.eval()
app = FastAPI()


@app.post("/v1/classify")
async def classify(request: Request):
    body = await request.body()
    try:
        img = Image.open(io.BytesIO(body)).convert("L")
    except Exception as e:  # noqa: BLE001 - any decode failure is the client's
        raise HTTPException(status_code=415, detail="not an image: %s" % e)
    if img.size != (28, 28):
        img = img.resize((28, 28))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).reshape(1, 1, 28, 28)
    with torch.inference_mode():
        p = torch.softmax(net(x), dim=1)[0].tolist()
    k = max(range(10), key=p.__getitem__)
    return {"predictions": [{"label": CLASSES[k], "class_id": k, "confidence": p[k],
                             "probabilities": dict(zip(CLASSES, p))}]}
