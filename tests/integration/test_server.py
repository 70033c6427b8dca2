#!/usr/bin/env python3
"""test_server.py - end-to-end tests of the real fmnist-serve over TCP.

Usage: test_server.py [PATH/TO/fmnist-serve]   (or FMNIST_SERVE=...)
Weights come from FMNIST_WEIGHTS_DIR (default: the repository's weights/),
copied into a temporary directory.  Requests are made with the curl binary;
the slow clients (drain, slowloris) are raw Python sockets.  Prints one line
per test and a final "N passed, M failed"; exits 1 on any failure.

Covered: every endpoint family (native classify as raw image, multipart,
JSON tensors and base64, PUT; models; samples; KServe v2; TF Serving;
TorchServe; health; metrics; static files and traversal attempts), the error
statuses (400, 404, 405, 413 by Content-Length, chunked upload and batch,
415, 431), CORS, the request log, concurrency, SIGHUP reload (good and bad
files), SIGTERM drain with requests in flight, the request deadline
against a slowloris client, the connection limit (the next client waits in
the backlog) and a burst of connections spread over both workers.
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CLASSES, Runner, Server, copy_weights, curl, expect, find_binary, multipart,  # noqa: E402
                    png_gray, read_test_images, synthetic_images, weight_files, weights_source)

SERVE = find_binary("FMNIST_SERVE", 1, ["build/server/fmnist-serve", "build-tmp/server/fmnist-serve"])
MAX_BODY = 1 << 20
MAX_BATCH = 16

TMP = tempfile.mkdtemp(prefix="fmnist-it-")
test_set = read_test_images(64)
IMAGES = test_set[0] if test_set else synthetic_images(64)
PNGS = [png_gray(28, 28, px) for px in IMAGES]


def tmpfile(name, data):
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


PNG0 = tmpfile("img0.png", PNGS[0])
PNG1 = tmpfile("img1.png", PNGS[1])
PNG2 = tmpfile("img2.png", PNGS[2])


def argmax(v):
    return max(range(len(v)), key=lambda i: v[i])


def json_post(srv, path, obj, *extra):
    body = tmpfile("body-%d.json" % threading.get_ident(), json.dumps(obj).encode())
    return curl(srv.url(path), "-H", "Content-Type: application/json", "--data-binary", "@" + body, *extra)


def metric(text, name, labels=None):
    """Value of one sample of the exposition text (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in (labels or {}).items()):
            return float(m.group(4))
    return None


# ===================================================================== the main server

def t_startup(s, models):
    line = s.wait_log(r"listening on")
    expect(line and str(s.port) in line, "start-up line without the port: %r" % line)
    for m in models:
        expect(m in line, "start-up line does not name model %s: %r" % (m, line))
    expect("test acc" in line, "start-up line without accuracies: %r" % line)
    r = curl(s.url("/healthz"))
    expect(r.status == 200 and r.json().get("status") == "ok", "healthz: %r" % r)
    r = curl(s.url("/readyz"))
    expect(r.status == 200 and r.json().get("status") == "ready", "readyz: %r" % r)
    expect(r.headers.get("x-content-type-options") == "nosniff", "no nosniff header: %r" % r.headers)


def t_models(s, models):
    r = curl(s.url("/v1/models"))
    expect(r.status == 200, "models: %r" % r)
    got = sorted(m["name"] for m in r.json()["models"])
    expect(got == sorted(models), "models %s, expected %s" % (got, models))


def native_classify(s, *args, query="?invert=false"):
    r = curl(s.url("/v1/classify" + query), *args)
    expect(r.status == 200, "classify %s: %r" % (args[:4], r))
    return r.json()


def t_classify_raw(s, models):
    j = native_classify(s, "--data-binary", "@" + PNG0)
    p = j["predictions"]
    expect(len(p) == 1 and p[0]["label"] in CLASSES, "raw classify: %r" % j)
    expect(p[0]["label"] == CLASSES[p[0]["class_id"]], "label and class_id disagree: %r" % p[0])
    expect(abs(sum(p[0]["probabilities"].values()) - 1) < 1e-3, "probabilities do not sum to 1")
    if test_set:  # the shipped models get these easy test images right
        labels = test_set[1]
        hits = sum(native_classify(s, "--data-binary", "@" + f)["predictions"][0]["class_id"] == labels[i]
                   for i, f in enumerate([PNG0, PNG1, PNG2]))
        expect(hits >= 2, "only %d of the first 3 test images classified right" % hits)


def t_classify_forms(s, models):
    """The same image as raw bytes, multipart, JSON tensor, JSON b64 and PUT gives the same answer."""
    base = native_classify(s, "--data-binary", "@" + PNG0)["predictions"][0]
    mp = native_classify(s, "-F", "a=@%s;type=image/png" % PNG0, "-F", "b=@%s;type=image/png" % PNG1,
                         "-F", "c=@%s;type=image/png" % PNG2)["predictions"]
    expect(len(mp) == 3, "multipart of 3 gave %d predictions" % len(mp))
    expect(mp[0]["class_id"] == base["class_id"], "multipart disagrees with raw: %r vs %r" % (mp[0], base))
    expect(mp[0].get("filename") == "img0.png", "multipart filename: %r" % mp[0].get("filename"))
    tensor = [b / 255.0 for b in IMAGES[0]]
    jt = json_post(s, "/v1/classify", {"instances": [tensor]})
    expect(jt.status == 200, "JSON tensor: %r" % jt)
    pt = jt.json()["predictions"][0]
    expect(pt["class_id"] == base["class_id"], "JSON tensor disagrees: %r vs %r" % (pt, base))
    for k in CLASSES:
        expect(abs(pt["probabilities"][k] - base["probabilities"][k]) < 1e-5, "JSON tensor probabilities differ")
    jb = json_post(s, "/v1/classify?invert=false", {"instances": [{"b64": base64.b64encode(PNGS[0]).decode()}]})
    expect(jb.status == 200 and jb.json()["predictions"][0]["class_id"] == base["class_id"], "JSON b64: %r" % jb)
    put = native_classify(s, "-T", PNG0)["predictions"][0]
    expect(put["class_id"] == base["class_id"], "PUT -T disagrees: %r" % put)
    for m in models:
        r = curl(s.url("/v1/classify?invert=false&model=" + m), "--data-binary", "@" + PNG0)
        expect(r.status == 200 and r.json()["model"] == m, "?model=%s: %r" % (m, r))
    r = curl(s.url("/v1/classify?model=no-such-model"), "--data-binary", "@" + PNG0)
    expect(r.status == 404 and "error" in r.json(), "unknown model: %r" % r)


def t_samples(s, models):
    r = curl(s.url("/v1/samples?count=2"))
    if test_set is None:
        expect(r.status == 503, "samples without a data set: %r" % r)
        return
    expect(r.status == 200, "samples: %r" % r)
    j = r.json()
    expect(len(j["samples"]) == 2 and j["samples"][0]["class_id"] == test_set[1][0], "samples: %r" % j)


def t_kserve(s, models):
    m = models[0]
    r = curl(s.url("/v2"))
    expect(r.status == 200 and "name" in r.json(), "GET /v2: %r" % r)
    expect(curl(s.url("/v2/health/live")).status == 200, "live")
    expect(curl(s.url("/v2/health/ready")).status == 200, "ready")
    r = curl(s.url("/v2/models/" + m))
    expect(r.status == 200 and r.json()["name"] == m and r.json()["inputs"], "model metadata: %r" % r)
    r = curl(s.url("/v2/models/%s/ready" % m))
    expect(r.status == 200 and r.json()["ready"] is True, "model ready: %r" % r)
    base = native_classify(s, "--data-binary", "@" + PNG0, query="?invert=false&model=" + m)["predictions"][0]
    req = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                       "data": [b / 255.0 for b in IMAGES[0]]}]}
    r = json_post(s, "/v2/models/%s/infer" % m, req)
    expect(r.status == 200, "infer: %r" % r)
    out = r.json()["outputs"][0]
    expect(out["name"] == "probabilities" and out["shape"] == [1, 10], "infer output: %r" % out)
    expect(argmax(out["data"]) == base["class_id"], "KServe and native disagree")
    r = json_post(s, "/v2/models/%s/infer" % m, {"inputs": [{"name": "input", "shape": [1, 5],
                                                             "datatype": "FP32", "data": [0] * 5}]})
    expect(r.status == 400 and "error" in r.json(), "bad shape: %r" % r)
    r = curl(s.url("/v2/models/nope/ready"))
    expect(r.status == 404, "unknown model: %r" % r)


def t_tfserving(s, models):
    m = models[0]
    r = curl(s.url("/v1/models/" + m))
    expect(r.status == 200 and r.json()["model_version_status"][0]["state"] == "AVAILABLE", "status: %r" % r)
    r = curl(s.url("/v1/models/%s/metadata" % m))
    expect(r.status == 200 and "signature_def" in r.json()["metadata"], "metadata: %r" % r)
    base = native_classify(s, "--data-binary", "@" + PNG0, query="?invert=false&model=" + m)["predictions"][0]
    rows = [[IMAGES[0][y * 28 + x] / 255.0 for x in range(28)] for y in range(28)]
    r = json_post(s, "/v1/models/%s:predict" % m, {"instances": [rows, rows]})
    expect(r.status == 200, "predict: %r" % r)
    p = r.json()["predictions"]
    expect(len(p) == 2 and len(p[0]) == 10 and argmax(p[0]) == base["class_id"], "predict: %r" % p)
    r = json_post(s, "/v1/models/%s:predict" % m, {"instances": "nope"})
    expect(r.status == 400 and "error" in r.json(), "bad predict: %r" % r)


def t_torchserve(s, models):
    m = models[0]
    r = curl(s.url("/ping"))
    expect(r.status == 200 and r.json()["status"] == "Healthy", "ping: %r" % r)
    base = native_classify(s, "--data-binary", "@" + PNG0, query="?invert=false&model=" + m)["predictions"][0]
    r = curl(s.url("/predictions/%s?invert=false" % m), "-T", PNG0)
    expect(r.status == 200, "predictions: %r" % r)
    top = list(r.json().items())
    expect(len(top) == 5 and top[0][0] == base["label"], "TorchServe top-5: %r vs %s" % (top, base["label"]))


def t_metrics(s, models):
    r = curl(s.url("/metrics"))
    expect(r.status == 200 and r.headers.get("content-type", "").startswith("text/plain"), "metrics: %r" % r)
    text = r.body.decode()
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                        r'(-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$')
    for line in text.splitlines():
        expect(line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line),
               "not text format 0.0.4: %r" % line)
    key = {"route": "/healthz", "method": "GET", "code": "200"}
    before = metric(text, "fmnist_http_requests_total", key) or 0
    for _ in range(3):
        curl(s.url("/healthz"))
    text = curl(s.url("/metrics")).body.decode()
    after = metric(text, "fmnist_http_requests_total", key)
    expect(after is not None and after >= before + 3, "healthz counter %s -> %s" % (before, after))
    expect(metric(text, "fmnist_models_loaded") == len(models), "fmnist_models_loaded")
    expect(metric(text, "fmnist_build_info") == 1, "fmnist_build_info")
    expect(metric(text, "fmnist_http_requests_in_flight") is not None, "in-flight gauge")
    expect(metric(text, "fmnist_http_request_duration_seconds_bucket", {"route": "/healthz", "le": "+Inf"}),
           "route histogram")
    expect(metric(text, "fmnist_http_request_duration_seconds_bucket", {"route": "/healthz", "le": "0.0001"})
           is not None, "sub-millisecond bucket")
    m = models[0]
    expect((metric(text, "fmnist_inference_duration_seconds_count", {"model": m}) or 0) > 0, "inference histogram")
    expect((metric(text, "fmnist_inference_batch_size_count", {"model": m}) or 0) > 0, "batch histogram")
    expect(any(line.startswith("fmnist_predictions_total{") for line in text.splitlines()), "predictions counter")
    expect((metric(text, "process_resident_memory_bytes") or 0) > 0, "process_resident_memory_bytes")


def t_static(s, models, static_dir):
    r = curl(s.url("/"))
    expect(r.status == 200 and b"fmnist-test-page" in r.body, "GET /: %r" % r)
    r = curl(s.url("/index.html"))
    expect(r.status == 200 and r.headers.get("content-type", "").startswith("text/html"), "index.html: %r" % r)
    r = curl(s.url("/index.html"), "-I")  # curl -I writes the head to the output: nothing may follow it
    expect(r.status == 200 and r.body.endswith(b"\r\n\r\n") and b"fmnist-test-page" not in r.body
           and int(r.headers.get("content-length", "0")) > 0, "HEAD: %r" % r)
    # revalidation: every file carries an ETag; If-None-Match with it gives 304 and no body
    r = curl(s.url("/index.html"))
    tag = r.headers.get("etag", "")
    expect(tag.startswith('"') and r.headers.get("cache-control") == "no-cache", "ETag/Cache-Control: %r" % r)
    r = curl(s.url("/index.html"), "-H", "If-None-Match: " + tag)
    expect(r.status == 304 and r.body == b"", "If-None-Match %s: %r" % (tag, r))
    r = curl(s.url("/index.html"), "-H", 'If-None-Match: "other"')
    expect(r.status == 200 and b"fmnist-test-page" in r.body, "stale If-None-Match: %r" % r)
    for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
                 "/static/../../../../etc/passwd", "/%2E%2E/secret.txt", "/.hidden", "/%00"]:
        r = curl(s.url(path), "--path-as-is")
        expect(400 <= r.status < 500 and b"root:" not in r.body and b"TOPSECRET" not in r.body,
               "traversal %s: %r" % (path, r))
        expect(r.headers.get("content-type", "").startswith("application/json"), "traversal %s not JSON" % path)


def t_errors(s, models):
    r = curl(s.url("/v1/classify"), "-X", "POST", "-H", "Content-Type: application/octet-stream")
    expect(r.status == 400 and "error" in r.json(), "empty body: %r" % r)
    junk = tmpfile("junk.bin", bytes(range(256)) * 8)
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + junk, "-H", "Content-Type: application/octet-stream")
    expect(r.status == 415 and "error" in r.json(), "garbage: %r" % r)
    big = tmpfile("big.bin", b"\x89PNG" + b"\0" * MAX_BODY)
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + big)
    expect(r.status == 413 and "error" in r.json(), "Content-Length over the cap: %r" % r)
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + big, "-H", "Transfer-Encoding: chunked")
    expect(r.status == 413 and "error" in r.json(), "chunked over the cap: %r" % r)
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + big, "-H", "Transfer-Encoding: chunked", "-H", "Expect:")
    expect(r.status == 413 and "error" in r.json(), "chunked over the cap, no 100-continue: %r" % r)
    body, ctype = multipart([("f%d" % i, "i%d.png" % i, PNGS[i % len(PNGS)]) for i in range(MAX_BATCH + 1)])
    mp = tmpfile("overbatch.bin", body)
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + mp, "-H", "Content-Type: " + ctype)
    expect(r.status == 413 and "error" in r.json(), "over --max-batch multipart: %r" % r)
    r = json_post(s, "/v1/classify", {"instances": [[0.0] * 784] * (MAX_BATCH + 1)})
    expect(r.status == 413 and "error" in r.json(), "over --max-batch JSON: %r" % r)
    for kib in (20, 60):  # over the 16 KiB cap, within libmicrohttpd's 64 KiB pool: our JSON
        hfile = tmpfile("hdr.txt", b"X-Big: " + b"a" * (kib * 1024) + b"\r\n")
        r = curl(s.url("/healthz"), "-H", "@" + hfile)
        expect(r.status == 431 and "error" in r.json(), "%d KiB header: %r" % (kib, r))
    hfile = tmpfile("hdr.txt", b"X-Big: " + b"a" * (100 * 1024) + b"\r\n")
    r = curl(s.url("/healthz"), "-H", "@" + hfile)  # past the pool: the library's own 431
    expect(r.status == 431, "100 KiB header: %r" % r)
    r = curl(s.url("/v1/nope"))
    expect(r.status == 404 and "error" in r.json(), "unknown route: %r" % r)
    r = curl(s.url("/nope.html"))
    expect(r.status == 404 and "error" in r.json(), "unknown file: %r" % r)
    r = curl(s.url("/v1/classify"))
    expect(r.status == 405 and "POST" in r.headers.get("allow", "") and "error" in r.json(), "GET classify: %r" % r)
    r = curl(s.url("/healthz"), "-X", "DELETE")
    expect(r.status == 405 and "GET" in r.headers.get("allow", ""), "DELETE healthz: %r" % r)
    # Still serving after all that.
    expect(curl(s.url("/healthz")).status == 200, "healthz after the errors")


def t_cors(s, models):
    r = curl(s.url("/healthz"), "-H", "Origin: https://example.org")
    expect(r.headers.get("access-control-allow-origin") == "*", "no CORS header: %r" % r.headers)
    r = curl(s.url("/v1/classify"), "-X", "OPTIONS", "-H", "Origin: https://example.org",
             "-H", "Access-Control-Request-Method: POST")
    expect(r.status in (200, 204), "preflight: %r" % r)
    expect("POST" in r.headers.get("access-control-allow-methods", ""), "preflight methods: %r" % r.headers)
    expect("content-type" in r.headers.get("access-control-allow-headers", "").lower(), "preflight headers")
    big = os.path.join(TMP, "big.bin")
    r = curl(s.url("/v1/classify"), "--data-binary", "@" + big, "-H", "Origin: https://example.org")
    expect(r.status == 413 and r.headers.get("access-control-allow-origin") == "*", "CORS on an edge 413: %r" % r)


def t_request_log(s, models):
    curl(s.url("/healthz?secret=1"))
    line = s.wait_log(r"^GET /healthz 200 \d+ \d+us$")
    expect(line, "no request log line for GET /healthz")
    expect(not any("secret=1" in ln for ln in s.log()), "the query string was logged")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /ctl\x01x\x7f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while c.recv(4096):
            pass
    line = s.wait_log(r"/ctl")
    expect(line and "\x01" not in line and "\x7f" not in line and "/ctl%01x%7F" in line,
           "control characters in the log: %r" % line)


def t_concurrency(s, models, clients=32, per_client=20):
    expected = native_classify(s, "--data-binary", "@" + PNG0)["predictions"][0]["class_id"]
    outdir = tempfile.mkdtemp(prefix="conc-", dir=TMP)
    procs = []
    for c in range(clients):
        # One curl per client, per_client requests on one kept-alive connection.
        procs.append(subprocess.Popen(
            ["curl", "-sS", "-m", "60", "--data-binary", "@" + PNG0, "-w", "%{http_code}\n",
             "-o", os.path.join(outdir, "c%d_#1.json" % c),
             s.url("/v1/classify?invert=false&n=[1-%d]" % per_client)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    codes = []
    for p in procs:
        out, err = p.communicate(90)
        codes += out.decode().split()
    expect(len(codes) == clients * per_client, "%d answers, expected %d" % (len(codes), clients * per_client))
    expect(all(c == "200" for c in codes), "non-200 answers: %s" % sorted(set(codes)))
    files = os.listdir(outdir)
    expect(len(files) == clients * per_client, "%d bodies" % len(files))
    for f in files:
        with open(os.path.join(outdir, f), "rb") as fh:
            j = json.loads(fh.read())
        expect(j["predictions"][0]["class_id"] == expected, "wrong answer in %s" % f)


# ===================================================================== own servers

def t_sighup(models):
    names = weight_files()
    wdir = os.path.join(TMP, "w-reload")
    first = copy_weights(wdir, names[:1])
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--default-model", first[0]])
    try:
        got = sorted(m["name"] for m in curl(s.url("/v1/models")).json()["models"])
        expect(got == first, "start: %s" % got)
        # A new model, copied in atomically (a copy of the first when only one ships).
        extra = names[1] if len(names) > 1 else names[0]
        new_name = extra[: -len(".safetensors")] if len(names) > 1 else "copy-of-" + first[0]
        shutil.copy(os.path.join(weights_source(), extra), os.path.join(wdir, ".incoming"))
        os.rename(os.path.join(wdir, ".incoming"), os.path.join(wdir, new_name + ".safetensors"))
        s.signal(signal.SIGHUP)
        expect(s.wait_log(r"reloaded"), "no reload log line")
        got = sorted(m["name"] for m in curl(s.url("/v1/models")).json()["models"])
        expect(got == sorted(first + [new_name]), "after SIGHUP: %s" % got)
        r = curl(s.url("/v1/classify?model=" + new_name), "--data-binary", "@" + PNG0)
        expect(r.status == 200, "classify with the new model: %r" % r)
        # A corrupt file: reported and skipped, the good ones still served.
        with open(os.path.join(wdir, "corrupt.safetensors"), "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
        n_reloads = len([ln for ln in s.log() if "reloaded" in ln])
        s.signal(signal.SIGHUP)
        end = time.time() + 5
        while time.time() < end and len([ln for ln in s.log() if "reloaded" in ln]) == n_reloads:
            time.sleep(0.05)
        expect(s.wait_log(r"corrupt"), "the corrupt file is not mentioned in the log")
        got = sorted(m["name"] for m in curl(s.url("/v1/models")).json()["models"])
        expect(got == sorted(first + [new_name]), "after a corrupt file: %s" % got)
        # No valid model left: the old set keeps serving.
        for f in os.listdir(wdir):
            if f != "corrupt.safetensors":
                os.unlink(os.path.join(wdir, f))
        s.signal(signal.SIGHUP)
        expect(s.wait_log(r"reload failed"), "no 'reload failed' log line")
        got = sorted(m["name"] for m in curl(s.url("/v1/models")).json()["models"])
        expect(got == sorted(first + [new_name]), "after a failed reload: %s" % got)
        expect(curl(s.url("/v1/classify"), "--data-binary", "@" + PNG0).status == 200, "classify after failure")
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def slow_upload(port, body, ctype, first, started, release, result):
    """POSTs body to /v1/classify: headers and `first` bytes now, the rest after `release`, slowly."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"POST /v1/classify?invert=false HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                  b"Content-Length: %d\r\n\r\n" % (ctype.encode(), len(body)))
        c.sendall(body[:first])
        started.release()
        release.wait(20)
        rest = body[first:]
        step = max(1, len(rest) // 10)
        for i in range(0, len(rest), step):
            c.sendall(rest[i:i + step])
            time.sleep(0.1)
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            data += b
            if b"\r\n\r\n" in data:
                head, _, rest_b = data.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head, re.I)
                if m and len(rest_b) >= int(m.group(1)):
                    break
        c.close()
        result.append(data)
    except Exception as e:  # reported by the caller
        result.append(repr(e).encode())


def t_drain(models):
    wdir = os.path.join(TMP, "w-drain")
    copy_weights(wdir)
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--drain-timeout", "10"])
    try:
        body, ctype = multipart([("f%d" % i, "i%d.png" % i, PNGS[i]) for i in range(8)])
        started, release = threading.Semaphore(0), threading.Event()
        results = []
        threads = [threading.Thread(target=slow_upload, args=(s.port, body, ctype, len(body) // 3, started, release,
                                                              results)) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in threads:
            expect(started.acquire(timeout=10), "slow clients did not start")
        # An idle kept-alive connection must not hold up the drain.
        idle = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        expect(idle.recv(4096).startswith(b"HTTP/1.1 200"), "idle connection's first request")
        time.sleep(0.3)  # the uploads' request lines are parsed: they are in flight
        t0 = time.time()
        s.signal(signal.SIGTERM)
        expect(s.wait_log(r"draining"), "no draining log line")
        r = curl(s.url("/readyz"), timeout=3)
        expect(r.rc == 7 or r.status == 503, "a new client during the drain got %r" % r)
        release.set()
        for t in threads:
            t.join(30)
        expect(len(results) == 4, "%d slow clients finished" % len(results))
        for data in results:
            expect(data.startswith(b"HTTP/1.1 200"), "in-flight request: %r" % data[:200])
            j = json.loads(data.partition(b"\r\n\r\n")[2])
            expect(len(j["predictions"]) == 8, "in-flight answer: %r" % j)
        rc = s.proc.wait(15)
        took = time.time() - t0
        expect(rc == 0, "exit status %s after SIGTERM" % rc)
        expect(took < 10 + 2, "exit took %.1fs (drain timeout 10 s)" % took)
        idle.close()
    finally:
        s.kill()


def t_slowloris(models):
    wdir = os.path.join(TMP, "w-slow")
    copy_weights(wdir, weight_files()[:1])
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--request-timeout", "3", "--idle-timeout", "2"])
    try:
        outcomes = {}

        def drip(label, first, byte):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=1)
            t0 = time.time()
            c.sendall(first)
            try:
                while time.time() - t0 < 15:
                    c.sendall(byte)  # one byte a second: never idle for 2 s
                    try:
                        if c.recv(4096) == b"":
                            break
                    except socket.timeout:
                        pass
            except OSError:
                pass
            outcomes[label] = time.time() - t0
            c.close()
        threads = [threading.Thread(target=drip, args=("headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ", b"a")),
                   threading.Thread(target=drip, args=("request line", b"G", b"E")),
                   threading.Thread(target=drip, args=("body", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                                                               b"Content-Length: 100000\r\n\r\n", b"z"))]
        for t in threads:
            t.start()
        time.sleep(1.5)
        for _ in range(3):  # a normal client is served meanwhile
            r = curl(s.url("/healthz"), timeout=2)
            expect(r.status == 200, "normal client during slowloris: %r" % r)
            time.sleep(0.3)
        for t in threads:
            t.join(20)
        for label in ("headers", "request line", "body"):
            took = outcomes.get(label)
            expect(took is not None and 2.5 <= took <= 6, "%s slowloris cut after %s s (deadline 3 s)" % (label, took))
        expect(s.wait_log(r"request deadline"), "the deadline is not logged")
        expect(curl(s.url("/healthz")).status == 200, "healthz after slowloris")
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def t_connection_limit(models):
    """At --connection-limit the next client waits in the backlog (it is not
    reset) and is answered as soon as a connection closes."""
    wdir = os.path.join(TMP, "w-limit")
    copy_weights(wdir, weight_files()[:1])
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--connection-limit", "2", "--threads", "2"])
    try:
        for _ in range(3):
            a = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            b = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c = socket.create_connection(("127.0.0.1", s.port), timeout=1)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                early = c.recv(64)
            except socket.timeout:
                early = None
            expect(early is None, "third connection over the limit of 2 answered (or reset) at once: %r" % early)
            a.close()
            c.settimeout(5)
            got = c.recv(64)
            expect(got.startswith(b"HTTP/1.1 200"), "waiting client after a slot freed: %r" % got)
            b.close()
            c.close()
            time.sleep(0.2)
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def task_cpu(pid):
    """{thread id: CPU ticks} of the server's libmicrohttpd workers."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if not f.read().startswith("MHD-worker"):
                    continue
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return out


def t_balance(models):
    """A burst of connects (as a proxy opening its keep-alive pool) is spread
    over the workers: both do work, not one of them all of it.  (Skipped
    under a wrapper such as valgrind, which runs one thread at a time.)"""
    if os.environ.get("FMNIST_SERVE_WRAPPER"):
        return
    wdir = os.path.join(TMP, "w-balance")
    copy_weights(wdir, weight_files()[:1])
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--threads", "2"])
    try:
        body = PNGS[0]
        req = (b"POST /v1/classify?invert=false HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        conns = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(8)]
        before = task_cpu(s.proc.pid)
        served = [0] * len(conns)

        def client(i):
            c, buf, t0 = conns[i], b"", time.time()
            while time.time() - t0 < 2.0:
                c.sendall(req)
                while True:
                    head, sep, rest = buf.partition(b"\r\n\r\n")
                    if sep:
                        n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                        if len(rest) >= n:
                            buf = rest[n:]
                            break
                    buf += c.recv(65536)
                served[i] += 1
        ts = [threading.Thread(target=client, args=(i,)) for i in range(len(conns))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        after = task_cpu(s.proc.pid)
        work = sorted(after[t] - before.get(t, 0) for t in after)
        expect(len(work) == 2, "expected 2 workers, found %r" % work)
        expect(min(served) > 0, "a client was never served: %r" % served)
        expect(work[0] * 4 >= work[-1] and work[-1] > 0,
               "workers unevenly loaded (CPU ticks %r, requests %r)" % (work, served))
        for c in conns:
            c.close()
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def t_bad_start(models):
    r = subprocess.run([SERVE, "--port", "nope"], capture_output=True)
    expect(r.returncode == 2 and b"--port" in r.stderr, "bad --port: %r" % (r,))
    r = subprocess.run([SERVE, "--port", "0"], capture_output=True, env=dict(os.environ, FMNIST_MAX_BATCH="12x"))
    expect(r.returncode == 2 and b"FMNIST_MAX_BATCH" in r.stderr, "bad FMNIST_MAX_BATCH: %r" % (r,))
    empty = os.path.join(TMP, "w-empty")
    os.makedirs(empty, exist_ok=True)
    r = subprocess.run([SERVE, "--port", "0", "--weights", empty], capture_output=True, timeout=30)
    expect(r.returncode != 0 and b"no valid model" in r.stderr, "no models: %r" % (r,))
    r = subprocess.run([SERVE, "--help"], capture_output=True)
    expect(r.returncode == 0 and b"FMNIST_PORT" in r.stdout and b"--drain-timeout" in r.stdout, "--help")


def t_sanitizers():
    """Builds with -fsanitize=address,undefined report into the servers' logs (stderr)."""
    bad = [ln for srv in Server.all for ln in srv.log()
           if "Sanitizer" in ln or "runtime error:" in ln or "libmicrohttpd: " in ln and "panic" in ln.lower()]
    expect(not bad, "sanitizer reports:\n" + "\n".join(bad[:20]))


def main():
    runner = Runner()
    names = weight_files()
    if not names:
        print("no weight files in %s" % os.path.dirname(os.path.abspath(__file__)))
        return 1
    wdir = os.path.join(TMP, "weights")
    models = copy_weights(wdir)
    static_dir = os.path.join(TMP, "static")
    os.makedirs(static_dir)
    with open(os.path.join(static_dir, "index.html"), "w") as f:
        f.write("<!doctype html><title>fmnist-test-page</title>\n")
    with open(os.path.join(TMP, "secret.txt"), "w") as f:
        f.write("TOPSECRET-CONTENT\n")
    s = Server(SERVE, ["--weights", wdir, "--static", static_dir, "--threads", "4", "--max-body-bytes", str(MAX_BODY),
                       "--max-batch", str(MAX_BATCH), "--cors-origin", "*", "--default-model", models[0]])
    try:
        for name, fn in [("startup", t_startup), ("models", t_models), ("classify raw", t_classify_raw),
                         ("classify forms", t_classify_forms), ("samples", t_samples), ("kserve v2", t_kserve),
                         ("tf serving", t_tfserving), ("torchserve", t_torchserve),
                         ("static", lambda s, m: t_static(s, m, static_dir)), ("errors", t_errors),
                         ("cors", t_cors), ("request log", t_request_log), ("concurrency", t_concurrency),
                         ("metrics", t_metrics)]:
            runner.run(name, fn, s, models)
    finally:
        rc = s.stop()
    runner.run("clean exit", lambda: expect(rc == 0, "exit status %s" % rc))
    runner.run("bad start", t_bad_start, models)
    runner.run("sighup reload", t_sighup, models)
    runner.run("sigterm drain", t_drain, models)
    runner.run("slowloris", t_slowloris, models)
    runner.run("connection limit", t_connection_limit, models)
    runner.run("workers balanced", t_balance, models)
    runner.run("no sanitizer reports", t_sanitizers)
    shutil.rmtree(TMP, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
