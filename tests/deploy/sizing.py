#!/usr/bin/env python3
"""sizing.py - measures what deploy/k8s/hpa.yaml and deploy/kserve/ are sized
from: requests/s per core, the requests in flight per busy core, RSS.

    /usr/bin/python3 tests/deploy/sizing.py [--serve build/server/fmnist-serve]
                                            [--duration 5] [--conns 1,2,4,16]

Not a test (nothing is asserted; numbers belong in docs/BENCHMARKS.md, with
this command).  Starts fmnist-serve as the Deployment runs it (--threads 2,
all five models of weights/) on a free loopback port and drives it with
`wrk -t1 -cN` for each request kind (`/v1/classify` PNG and KServe v2 JSON
UINT8 [1,784], mlp2 and cnn3) and connection count.  Per case:
  - requests/s (from the server's own request counter), server CPU per
    request (user + system from /proc, all threads) and so requests/s per
    core = 1 / CPU per request;
  - the mean number of requests in flight, by Little's law: the growth of
    fmnist_http_request_duration_seconds_sum per second (the seconds spent
    inside requests, per second) - what the prometheus-adapter rule of
    deploy/k8s/prometheus-adapter-rules.yaml computes;
  - the same gauge read directly (fmnist_http_requests_in_flight, sampled
    every 20 ms, minus 1 for the scrape that reads it), to compare;
  - in flight per busy core: mean in flight / cores used.
wrk shares the machine with the server (and, here, with anything else that
runs): requests/s move with the host, CPU per request and in flight per
busy core much less.  Then RSS now and peak (VmHWM).
"""
import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from common import ROOT, Server, png_gray  # noqa: E402

# wrk's POST script, the test image and the CPU reading of tools/bench-serve.py
_spec = importlib.util.spec_from_file_location("bench_serve", os.path.join(ROOT, "tools", "bench-serve.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def metrics(base):
    """(seconds inside answered requests, requests answered, in-flight gauge), /metrics excluded."""
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    s = c = 0.0
    for m in re.finditer(r'^fmnist_http_request_duration_seconds_(sum|count)\{route="([^"]*)"\} (\S+)$', text, re.M):
        if m.group(2) != "/metrics":
            if m.group(1) == "sum":
                s += float(m.group(3))
            else:
                c += float(m.group(3))
    g = float(re.search(r"^fmnist_http_requests_in_flight (\S+)$", text, re.M).group(1))
    return s, c, g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", default=os.path.join(ROOT, "build", "server", "fmnist-serve"))
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", default="1,2,4,16")
    a = ap.parse_args()
    px = bench.test_image(0)
    tmp = tempfile.mkdtemp(prefix="fmnist-sizing-")
    png, v2, lua = (os.path.join(tmp, n) for n in ("img.png", "v2.json", "post.lua"))
    with open(png, "wb") as f:
        f.write(png_gray(28, 28, px))
    with open(v2, "w") as f:
        json.dump({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": list(px)}]}, f)
    with open(lua, "w") as f:
        f.write(bench.LUA)
    srv = Server(a.serve, ["--weights", os.path.join(ROOT, "weights"), "--static", "", "--threads", "2"])
    base = "http://127.0.0.1:%d" % srv.port
    pid = srv.proc.pid
    cases = [("mlp2", "PNG /v1/classify", base + "/v1/classify?model=mlp2", png, "image/png"),
             ("cnn3", "PNG /v1/classify", base + "/v1/classify?model=cnn3", png, "image/png"),
             ("mlp2", "KServe v2 JSON", base + "/v2/models/mlp2/infer", v2, "application/json"),
             ("cnn3", "KServe v2 JSON", base + "/v2/models/cnn3/infer", v2, "application/json")]
    print("# fmnist-serve --threads 2, pid %d, %d cores, wrk -t1, %d s per case" % (pid, os.cpu_count(), a.duration))
    print("| model | request | conns | requests/s | server CPU µs / request | requests/s per core | cores used "
          "| in flight (Little) | in flight (gauge) | in flight per busy core | mean µs in server |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for model, kind, url, body, ctype in cases:
            subprocess.run(["wrk", "-t1", "-c2", "-d1s", "-s", lua, url], capture_output=True,
                           env=dict(os.environ, BENCH_BODY=body, BENCH_CTYPE=ctype))  # warm-up
            for conns in [int(x) for x in a.conns.split(",")]:
                samples, stop = [], threading.Event()

                def sample():
                    while not stop.is_set():
                        samples.append(metrics(base)[2] - 1)  # the scrape counts itself
                        time.sleep(0.02)
                s0, n0, _ = metrics(base)
                c0, t0 = bench.cpu_seconds([pid]), time.time()
                th = threading.Thread(target=sample)
                th.start()
                subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % a.duration, "-s", lua, url],
                               capture_output=True, env=dict(os.environ, BENCH_BODY=body, BENCH_CTYPE=ctype))
                stop.set()
                th.join()
                c1, t1 = bench.cpu_seconds([pid]), time.time()
                s1, n1, _ = metrics(base)
                dt, n = t1 - t0, n1 - n0  # the sampler's scrapes are under /metrics, not counted
                cpu = c1 - c0
                little = (s1 - s0) / dt
                print("| %s | %s | %d | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.0f |" % (
                    model, kind, conns, n / dt, 1e6 * cpu / n, n / cpu, cpu / dt, little,
                    sum(samples) / max(1, len(samples)), little / (cpu / dt), 1e6 * (s1 - s0) / n), flush=True)
        with open("/proc/%d/status" % pid) as f:
            st = f.read()
        print("\nRSS now %.1f MiB, peak (VmHWM) %.1f MiB" % (int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) / 1024,
                                                          int(re.search(r"VmHWM:\s+(\d+)", st).group(1)) / 1024))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
