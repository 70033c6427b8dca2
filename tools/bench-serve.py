#!/usr/bin/python3
"""bench-serve.py - load benchmark of fmnist-serve with wrk, against FastAPI + PyTorch.

    tools/install-deps.sh bench          # wrk, python3-torch, python3-fastapi, uvicorn, ...
    /usr/bin/python3 tools/bench-serve.py [--duration 10] [--conns 16,64] [--models mlp2,cnn3]
                                          [--peers debian,tuned] [--rounds 3] [--wrk-threads 1,2]
                                          [--serve build/server/fmnist-serve]

Everything on 127.0.0.1.  fmnist-serve loads every weight file in weights/
(all five models) with its default worker pool; the peer is
tools/bench_fastapi_app.py, serving the same model from the same
.safetensors, under uvicorn in two configurations (--peers): "debian", the
Debian packages as installed and uvicorn's defaults (one worker; h11 on
asyncio, since Debian's uvicorn pulls in neither httptools nor uvloop), and
"tuned", one worker per core with httptools + uvloop (one PyTorch thread
per worker).  Each case POSTs the same PNG (test image 0, an ankle
boot) with wrk for --duration seconds and records requests/s and the p50 /
p99 latency; the KServe v2 case POSTs the same image as a JSON UINT8
[1,784] tensor.  Before measuring, both servers must return the same label
for the image, and each is warmed up for 3 s per request kind (not measured).  Every case runs
--rounds times, the cases interleaved, and the medians are reported.
Each case also reports the server's own CPU time per request (user +
system, all its threads and processes, from /proc), which moves less than
requests/s when the machine is shared.  RSS is read from /proc after the
runs, and the peak (VmHWM), which counts the connections' buffers under
the heaviest load.  wrk shares the two cores with the server; every case is measured
with each --wrk-threads setting (1: the load generator takes the least of
the machine; 2: one per core, wrk's usual advice for a machine of its own).
Prints Markdown tables for docs/BENCHMARKS.md.
"""
import argparse
import gzip
import json
import os
import re
import signal
import statistics
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
    """(VmRSS now, VmHWM: the peak) summed over pids, in KiB."""
    now = peak = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                st = f.read()
            now += int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
            peak += int(re.search(r"VmHWM:\s+(\d+)", st).group(1))
        except (OSError, AttributeError):
            pass
    return now, peak


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wrk(url, body_path, ctype, conns, duration, lua_path, threads=1):
    env = dict(os.environ, BENCH_BODY=body_path, BENCH_CTYPE=ctype)
    r = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration, "--latency", "-s", lua_path, url],
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


# The FastAPI peer in two configurations.  "debian": what the issue names,
# Debian's python3-fastapi + uvicorn + python3-torch run the way uvicorn runs
# by default - one worker; and since Debian's uvicorn depends on neither
# httptools nor uvloop, its pure-Python h11 protocol on asyncio (forced here,
# because uvicorn would pick the faster ones up if `bench` installed them).
# "tuned": the fastest configuration we could make of the same app on this
# machine - one worker per core, uvloop + httptools (`uvicorn[standard]`).
PEERS = {
    "debian": ("FastAPI (Debian defaults: 1 worker, h11, asyncio)", ["--workers", "1", "--http", "h11", "--loop", "asyncio"]),
    "tuned": ("FastAPI (tuned: 2 workers, httptools, uvloop)", ["--workers", "2", "--http", "httptools", "--loop", "uvloop"]),
}
OURS = "fmnist-serve /v1/classify PNG"
OURS_V2 = "fmnist-serve KServe v2 JSON"


def cpu_seconds(pids):
    """User + system CPU seconds of pids so far (threads included)."""
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(url, body, ctype, conns, duration, lua, pids, threads):
    """wrk's figures plus the server's CPU microseconds per request."""
    c0 = cpu_seconds(pids)
    r = wrk(url, body, ctype, conns, duration, lua, threads)
    c1 = cpu_seconds(pids)
    return r + (1e6 * (c1 - c0) / max(1.0, r[0] * duration),)


def start_peer(kind, model, weights):
    port = free_port()
    env = dict(os.environ, FMNIST_BENCH_WEIGHTS=os.path.join(weights, model + ".safetensors"))
    proc = subprocess.Popen(["/usr/bin/python3", "-m", "uvicorn", "--app-dir", os.path.join(ROOT, "tools"),
                             "bench_fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"] + PEERS[kind][1], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, "http://127.0.0.1:%d" % port


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", default="16,64")
    ap.add_argument("--models", default="mlp2,cnn3")
    ap.add_argument("--peers", default="debian,tuned", help="FastAPI configurations: debian, tuned or both")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every case, interleaved; medians reported")
    ap.add_argument("--wrk-threads", default="1,2",
                    help="wrk threads, each setting measured (wrk shares the two cores with the server)")
    ap.add_argument("--serve", default=os.path.join(ROOT, "build/server/fmnist-serve"))
    ap.add_argument("--weights", default=os.path.join(ROOT, "weights"))
    a = ap.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    wts = [int(t) for t in a.wrk_threads.split(",")]
    kinds = [k for k in a.peers.split(",") if k]
    for k in kinds:
        if k not in PEERS:
            raise SystemExit("bench-serve: unknown peer %r (debian, tuned)" % k)
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
    rows, rss, live = [], [], []
    try:
        wait_http(base + "/readyz")
        models = [m["name"] for m in json.load(urllib.request.urlopen(base + "/v1/models"))["models"]]
        print("# fmnist-serve pid %d, models loaded: %s; %d cores; wrk threads %s, %d s per case"
              % (srv.pid, ", ".join(models), os.cpu_count(), a.wrk_threads, a.duration), flush=True)
        for m in a.models.split(","):
            ours_url = base + "/v1/classify?model=%s&invert=false" % m
            ours = post(ours_url, open(png, "rb").read(), "image/png")
            peers = {}
            for k in kinds:
                proc, pbase = start_peer(k, m, a.weights)
                live.append(proc)
                peers[k] = (proc, pbase)
            for k, (proc, pbase) in peers.items():
                t0 = time.time()
                while True:
                    try:
                        theirs = post(pbase + "/v1/classify", open(png, "rb").read(), "image/png")
                        break
                    except Exception:  # noqa: BLE001 - workers still importing torch
                        if time.time() - t0 > 120:
                            raise SystemExit("bench-serve: FastAPI peer (%s) did not come up" % k)
                        time.sleep(0.5)
                a_label, b_label = ours["predictions"][0]["label"], theirs["predictions"][0]["label"]
                if a_label != b_label:
                    raise SystemExit("bench-serve: %s: fmnist-serve says %s, the %s peer %s" % (m, a_label, k, b_label))
            # warm-up, not measured: thread workspaces, page faults, the peers' lazy imports
            warm = [(ours_url, png, "image/png"), (base + "/v2/models/%s/infer" % m, v2, "application/json")]
            warm += [(pb + "/v1/classify", png, "image/png") for _, pb in peers.values()]
            for url, body, ctype in warm:
                wrk(url, body, ctype, conns[0], 3, lua)
            runs = {}
            for rnd in range(a.rounds):
                for t in wts:
                    for c in conns:
                        cases = [(OURS, ours_url, png, "image/png", [srv.pid])]
                        cases += [(PEERS[k][0], pb + "/v1/classify", png, "image/png", [proc.pid] + children(proc.pid))
                                  for k, (proc, pb) in peers.items()]
                        cases.append((OURS_V2, base + "/v2/models/%s/infer" % m, v2, "application/json", [srv.pid]))
                        for who, url, body, ctype, pids in cases:
                            r = measure(url, body, ctype, c, a.duration, lua, pids, t)
                            runs.setdefault((who, c, t), []).append(r)
                            print("   round %d: %s %s %d conns, wrk -t%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, "
                                  "%.0f us CPU/request" % (rnd + 1, m, who, c, t, r[0], r[1], r[2], r[5]), flush=True)
            for t in wts:
                for c in conns:
                    for who in [OURS] + [PEERS[k][0] for k in peers] + [OURS_V2]:
                        rs = runs[(who, c, t)]
                        med = [statistics.median(x[i] for x in rs) for i in (0, 1, 2)]
                        rows.append((m, who, c, t, med[0], med[1], med[2], sum(x[3] for x in rs),
                                     "; ".join(x[4] for x in rs if x[4]), statistics.median(x[5] for x in rs),
                                     min(x[0] for x in rs), max(x[0] for x in rs), [x[0] for x in rs]))
            for k, (proc, pbase) in peers.items():
                rss.append((m, PEERS[k][0]) + rss_kib([proc.pid] + children(proc.pid)))
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        our_rss, our_peak = rss_kib([srv.pid])
    finally:
        for p in live:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)
    print()
    print("Medians of %d rounds (requests/s: median, and the range over the rounds):" % a.rounds)
    print()
    print("| model | server, request | connections | wrk threads | requests/s | (range) | p50 ms | p99 ms | non-2xx "
          "| socket errors | server CPU µs per request |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %d | %d | %.0f | %.0f–%.0f | %.2f | %.2f | %d | %s | %.0f |"
              % (r[0], r[1], r[2], r[3], r[4], r[10], r[11], r[5], r[6], r[7], r[8], r[9]))
    print()
    for m, who, kib, peak in rss:
        print("- %s, %s: RSS %.1f MiB after its runs, peak %.1f MiB" % (m, who, kib / 1024, peak / 1024))
    print("- fmnist-serve with %d models loaded: RSS %.1f MiB after every run; peak (VmHWM, the %d-connection "
          "loads included) %.1f MiB" % (len(models), our_rss / 1024, max(conns), our_peak / 1024))
    print()
    print("fmnist-serve's requests/s over the peer's: the ratio of the medians (the ratio in each round):")
    print()
    print("| model | connections | wrk threads | " + " | ".join("÷ %s" % PEERS[k][0] for k in kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    by = {(r[0], r[1], r[2], r[3]): r for r in rows}
    for m in a.models.split(","):
        for t in wts:
            for c in conns:
                ours_r = by[(m, OURS, c, t)]
                cells = []
                for k in kinds:
                    peer_r = by[(m, PEERS[k][0], c, t)]
                    per = ", ".join("%.1f" % (o / p) for o, p in zip(ours_r[12], peer_r[12]))
                    cells.append("%.1fx (%s)" % (ours_r[4] / peer_r[4], per))
                print("| %s | %d | %d | " % (m, c, t) + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
