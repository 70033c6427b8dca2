#!/usr/bin/python3
"""bench-serve.py - load benchmark of fmnist-serve with wrk, against FastAPI + PyTorch.

    tools/install-deps.sh bench          # wrk, python3-torch, python3-fastapi, uvicorn, ...
    /usr/bin/python3 tools/bench-serve.py [--duration 10] [--conns 16,64] [--models mlp2,cnn3]
                                          [--serve build/server/fmnist-serve]

Everything on 127.0.0.1.  fmnist-serve loads every weight file in weights/
(all five models) with its default worker pool; the peer is
tools/bench_fastapi_app.py under uvicorn with 2 workers (one per core, one
PyTorch thread each, uvloop + httptools as `uvicorn[standard]` installs them:
the usual way to run it in production; without httptools, uvicorn's h11
answers stall ~40 ms on delayed ACKs and the peer looks 5x slower than it
is), serving the same model from
the same .safetensors.  Each case POSTs the same PNG (test image 0, an ankle
boot) with wrk for --duration seconds and records requests/s and the p50 /
p99 latency; the KServe v2 case POSTs the same image as a JSON UINT8
[1,784] tensor.  Before measuring, both servers must return the same label
for the image, and each is warmed up for 3 s per request kind (not measured).
RSS is read from /proc after the runs.  Prints a Markdown
table for docs/BENCHMARKS.md.
"""
import argparse
import gzip
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("FMNIST_DATA") or "/usr/share/datasets/fashion-mnist"
LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")
"""


def test_image(i=0):
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        b = f.read()
    return b[16 + 784 * i:16 + 784 * (i + 1)]


def png_gray(px, w=28, h=28):
    raw = b"".join(b"\x00" + px[y * w:(y + 1) * w] for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise SystemExit("bench-serve: %s did not come up" % url)


def post(url, body, ctype):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
    return total


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wrk(url, body_path, ctype, conns, duration, lua_path):
    env = dict(os.environ, BENCH_BODY=body_path, BENCH_CTYPE=ctype)
    r = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % duration, "--latency", "-s", lua_path, url],
                       capture_output=True, text=True, env=env, timeout=duration + 60)
    out = r.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return rps, lat(50), lat(99), int(errs.group(1)) if errs else 0, sock.group(1) if sock else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="16,64")
    ap.add_argument("--models", default="mlp2,cnn3")
    ap.add_argument("--serve", default=os.path.join(ROOT, "build/server/fmnist-serve"))
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    a = ap.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    tmp = tempfile.mkdtemp(prefix="fmnist-bench-")
    lua = os.path.join(tmp, "post.lua")
    open(lua, "w").write(LUA)
    px = test_image(0)
    png = os.path.join(tmp, "img.png")
    open(png, "wb").write(png_gray(px))
    v2 = os.path.join(tmp, "v2.json")
    json.dump({"id": "bench", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8",
                                          "data": list(px)}]}, open(v2, "w"))
    port = free_port()
    srv = subprocess.Popen([a.serve, "--host", "127.0.0.1", "--port", str(port), "--weights", a.weights],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:%d" % port
    rows, peers = [], []
    try:
        wait_http(base + "/readyz")
        models = [m["name"] for m in json.load(urllib.request.urlopen(base + "/v1/models"))["models"]]
        print("# fmnist-serve pid %d, models loaded: %s; %d cores; wrk -t2, %d s per case"
              % (srv.pid, ", ".join(models), os.cpu_count(), a.duration), flush=True)
        for m in a.models.split(","):
            ours = post(base + "/v1/classify?model=%s&invert=false" % m, open(png, "rb").read(), "image/png")
            pport = free_port()
            env = dict(os.environ, FMNIST_BENCH_WEIGHTS=os.path.join(a.weights, m + ".safetensors"))
            peer = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "--app-dir", os.path.join(ROOT, "tools"),
                                     "bench_fastapi_app:app", "--host", "127.0.0.1", "--port", str(pport),
                                     "--workers", "2", "--log-level", "warning"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            peers.append(peer)
            pbase = "http://127.0.0.1:%d" % pport
            t0 = time.time()
            while True:
                try:
                    theirs = post(pbase + "/v1/classify", open(png, "rb").read(), "image/png")
                    break
                except Exception:  # noqa: BLE001 - workers still importing torch
                    if time.time() - t0 > 120:
                        raise SystemExit("bench-serve: FastAPI peer did not come up")
                    time.sleep(0.5)
            a_label, b_label = ours["predictions"][0]["label"], theirs["predictions"][0]["label"]
            if a_label != b_label:
                raise SystemExit("bench-serve: %s: fmnist-serve says %s, the peer %s" % (m, a_label, b_label))
            # warm-up, not measured: thread workspaces, page faults, the peer's lazy imports
            for url, body, ctype in ((base + "/v1/classify?model=%s&invert=false" % m, png, "image/png"),
                                     (pbase + "/v1/classify", png, "image/png"),
                                     (base + "/v2/models/%s/infer" % m, v2, "application/json")):
                wrk(url, body, ctype, conns[0], 3, lua)
            for c in conns:
                r1 = wrk(base + "/v1/classify?model=%s&invert=false" % m, png, "image/png", c, a.duration, lua)
                rows.append((m, "fmnist-serve /v1/classify PNG", c) + r1)
                print("  ", rows[-1], flush=True)
                r2 = wrk(pbase + "/v1/classify", png, "image/png", c, a.duration, lua)
                rows.append((m, "FastAPI + PyTorch PNG", c) + r2)
                print("  ", rows[-1], flush=True)
                r3 = wrk(base + "/v2/models/%s/infer" % m, v2, "application/json", c, a.duration, lua)
                rows.append((m, "fmnist-serve KServe v2 JSON", c) + r3)
                print("  ", rows[-1], flush=True)
            peer_rss = rss_kib([peer.pid] + children(peer.pid))
            rows.append((m, "FastAPI RSS KiB (master + 2 workers)", peer_rss))
            os.killpg(peer.pid, signal.SIGTERM)
            peer.wait(timeout=30)
        our_rss = rss_kib([srv.pid])
    finally:
        for p in peers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)
    print()
    print("| model | server, request | connections | requests/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if len(r) == 8:
            print("| %s | %s | %d | %.0f | %.2f | %.2f | %d | %s |" % r)
    print()
    for r in rows:
        if len(r) == 3:
            print("- %s %s: %.1f MiB" % (r[0], r[1], r[2] / 1024))
    print("- fmnist-serve RSS with %d models loaded, after every run: %.1f MiB" % (len(models), our_rss / 1024))
    print()
    print("| model | connections | fmnist-serve / FastAPI requests/s |")
    print("|---|---|---|")
    by = {(r[0], r[1], r[2]): r[3] for r in rows if len(r) == 8}
    for m in a.models.split(","):
        for c in conns:
            print("| %s | %d | %.1fx |" % (m, c, by[(m, "fmnist-serve /v1/classify PNG", c)]
                                            / by[(m, "FastAPI + PyTorch PNG", c)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
