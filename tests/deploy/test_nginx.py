"""test_nginx.py - deploy/nginx.conf with real nginx in front of two real fmnist-serve.

Runs the shipped deploy/nginx.conf (only `listen 8080` is moved to a free
loopback port and temp paths are put in a private directory) with the Debian
nginx binary as a foreground process, in front of two fmnist-serve instances
on ephemeral loopback ports, and checks: the config is valid; predictions of
real test images through the proxy (at / and under /fmnist/) equal the
backends' own; requests are spread over both backends; the page and every
asset it references load under /fmnist/ (relative URLs only); gzip for JSON;
the body limit matches the server's (4 MiB passes nginx, one byte more is a
JSON 413 from nginx); the rate limit answers JSON 429; after SIGKILL of one
backend every prediction still succeeds through the other; with both dead
nginx answers a JSON 503.

Environment: FMNIST_SERVE (binary), FMNIST_WEIGHTS_DIR, NGINX (default
/usr/sbin/nginx), FMNIST_STATIC_DIR (default: the repository's static/).
Python 3 standard library + curl.  Prints "N passed, M failed".
"""
import gzip
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from common import (ROOT, Runner, Server, curl, expect, find_binary, png_gray,  # noqa: E402
                    read_test_images, synthetic_images, weights_source)

SERVE = find_binary("FMNIST_SERVE", 1, ["build/server/fmnist-serve"])
NGINX = os.environ.get("NGINX") or "/usr/sbin/nginx"
STATIC = os.environ.get("FMNIST_STATIC_DIR") or os.path.join(ROOT, "static")
CONF = os.path.join(ROOT, "deploy", "nginx.conf")
LIMIT = 4 << 20  # fmnist-serve --max-body-bytes default and client_max_body_size 4m


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Nginx:
    def __init__(self, backends):
        self.dir = tempfile.mkdtemp(prefix="fmnist-nginx-")
        os.chmod(self.dir, 0o755)
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.mkdir(os.path.join(self.dir, d))
            os.chmod(os.path.join(self.dir, d), 0o777)  # workers may run as nobody
        with open(CONF) as f:
            conf = f.read()
        self.port = free_port()
        conf, n = re.subn(r"^(\s*)listen 8080;", r"\1listen 127.0.0.1:%d;" % self.port, conf, flags=re.M)
        if n != 1:
            raise RuntimeError("deploy/nginx.conf: expected one 'listen 8080;', found %d" % n)
        temp = "".join("    %s_temp_path %s;\n" % (k, os.path.join(self.dir, d)) for k, d in (
            ("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"), ("uwsgi", "uwsgi"), ("scgi", "scgi")))
        conf, n = re.subn(r"^http \{\n", "http {\n" + temp, conf, flags=re.M)
        if n != 1:
            raise RuntimeError("deploy/nginx.conf: no 'http {' line")
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        with open(os.path.join(self.dir, "fmnist-upstream.conf"), "w") as f:
            for p in backends:
                f.write("server 127.0.0.1:%d max_fails=1 fail_timeout=10s;\n" % p)
        self.base = ["-p", self.dir + "/", "-c", self.conf, "-e", os.path.join(self.dir, "error.log")]
        self.glob = "daemon off; pid %s;" % os.path.join(self.dir, "nginx.pid")
        self.proc = None

    def check_config(self):
        r = subprocess.run([NGINX] + self.base + ["-g", self.glob, "-t"], capture_output=True, text=True)
        return r.returncode, r.stderr

    def start(self):
        self.log = open(os.path.join(self.dir, "access.log"), "wb")
        self.proc = subprocess.Popen([NGINX] + self.base + ["-g", self.glob], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        end = time.time() + 15
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited: " + self.errors())
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen: " + self.errors())

    def errors(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def classify_count(server):
    return sum(1 for line in server.log() if line.startswith("POST /v1/classify "))


def main():
    if not os.path.exists(NGINX):
        sys.exit("nginx not found at %s (Debian package nginx)" % NGINX)
    index = os.path.join(STATIC, "index.html")
    if not os.path.exists(index):
        sys.exit("no page at %s" % index)
    args = ["--weights", weights_source(), "--static", STATIC, "--threads", "2"]
    backends = [Server(SERVE, args), Server(SERVE, args)]
    nginx = Nginx([b.port for b in backends])
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="fmnist-nginx-t-")

    got = read_test_images(12)
    imgs, labels = got if got else (synthetic_images(12), None)
    pngs = []
    for i, px in enumerate(imgs):
        p = os.path.join(tmp, "t%d.png" % i)
        with open(p, "wb") as f:
            f.write(png_gray(28, 28, px))
        pngs.append(p)

    def predict(url, path):
        r = curl(url, "--data-binary", "@" + path, "-H", "Content-Type: image/png")
        expect(r.status == 200, "%s: %r" % (url, r))
        return r.json()["predictions"][0]["class_id"]

    def t_config():
        rc, err = nginx.check_config()
        expect(rc == 0, "nginx -t: " + err)
        nginx.start()

    def t_predict():
        direct = [predict(backends[0].url("/v1/classify"), p) for p in pngs]
        for prefix in ("", "/fmnist"):
            via = [predict(nginx.url(prefix + "/v1/classify"), p) for p in pngs]
            expect(via == direct, "%s: proxy %r != backend %r" % (prefix or "/", via, direct))
        if labels:
            right = sum(a == b for a, b in zip(direct, labels))
            expect(right >= 10, "only %d/12 test images right: %r vs %r" % (right, direct, labels))

    def t_spread():
        before = [classify_count(b) for b in backends]
        n = 40
        for i in range(n):
            predict(nginx.url("/v1/classify"), pngs[i % len(pngs)])
        time.sleep(0.3)
        per = [classify_count(b) - c for b, c in zip(backends, before)]
        expect(sum(per) == n, "backends logged %r classifications for %d requests" % (per, n))
        expect(min(per) >= n // 4, "uneven spread over the two backends: %r" % per)

    def t_forwarded():
        r = curl(nginx.url("/fmnist/v1/models"))
        expect(r.status == 200 and "models" in r.json(), repr(r))
        r = curl(nginx.url("/fmnist"))
        expect(r.status == 301 and r.headers.get("location") == "/fmnist/", "redirect: %r %r" % (r, r.headers))

    def t_page():
        for base in ("/fmnist/", "/"):
            r = curl(nginx.url(base))
            expect(r.status == 200, "%s: %r" % (base, r))
            expect("text/html" in r.headers.get("content-type", ""), "content type %r" % r.headers)
            html = r.body.decode("utf-8", "replace")
            expect("<html" in html.lower(), "not the page")
            refs = []

            class P(HTMLParser):
                def handle_starttag(self, tag, attrs):
                    for k, v in attrs:
                        if k in ("src", "href") and v:
                            refs.append((tag, v))
            P().feed(html)
            assets = []
            for tag, v in refs:
                if v.startswith("#") or v.startswith("data:") or re.match(r"^[a-z]+:", v):
                    continue
                expect(not v.startswith("/"), "%s references %r: an absolute path breaks under a prefix" % (base, v))
                assets.append(v)
            expect(assets, "the page references no assets")
            for v in assets:
                u = urljoin(base, v)
                a = curl(nginx.url(u), "-H", "Accept-Encoding: gzip")
                expect(a.status == 200 and a.body, "%s (from %r): %r" % (u, v, a))
                if u.endswith(".js"):
                    js = (gzip.decompress(a.body) if a.headers.get("content-encoding") == "gzip" else a.body).decode()
                    bad = re.findall(r"""["'`](/(?:v1|v2|healthz|readyz|metrics)\b[^"'`]*)""", js)
                    expect(not bad, "%s uses absolute API paths %r: they break under /fmnist/" % (u, bad))
        r = curl(nginx.url("/fmnist/v1/samples?offset=0&count=2"))
        expect(r.status == 200 and len(r.json()["samples"]) == 2, repr(r))

    def t_gzip():
        r = curl(nginx.url("/fmnist/v1/models"), "-H", "Accept-Encoding: gzip")
        expect(r.status == 200, repr(r))
        expect(r.headers.get("content-encoding") == "gzip", "no gzip: %r" % r.headers)
        expect("models" in json.loads(gzip.decompress(r.body)), "bad JSON")

    def t_body_limit():
        big = os.path.join(tmp, "big.bin")
        with open(big, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * (LIMIT + 1 - 8))
        before = [classify_count(b) for b in backends]
        r = curl(nginx.url("/fmnist/v1/classify"), "--data-binary", "@" + big, "-H", "Content-Type: image/png")
        expect(r.status == 413, "over the limit: %r" % r)
        expect("application/json" in r.headers.get("content-type", ""), "413 not JSON: %r" % r.headers)
        expect("4 MiB" in r.json()["error"], "413 message: %r" % r.body)
        time.sleep(0.2)
        expect([classify_count(b) for b in backends] == before, "the 413 body reached a backend")
        # Exactly the limit: nginx lets it through, the server judges it (not 413).
        with open(big, "r+b") as f:
            f.truncate(LIMIT)
        r = curl(nginx.url("/v1/classify"), "--data-binary", "@" + big, "-H", "Content-Type: image/png")
        expect(r.status not in (0, 413, 502, 503) and "error" in r.json(),
               "a %d-byte body must reach the server: %r" % (LIMIT, r))
        expect([classify_count(b) for b in backends] != before, "the %d-byte body did not reach a backend" % LIMIT)

    def t_rate_limit():
        time.sleep(2.5)  # let the bucket drain after the tests above
        codes = []
        lock = threading.Lock()

        def worker():
            c = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
            for _ in range(100):
                c.request("POST", "/v1/classify", body=b"", headers={"Content-Type": "image/png"})
                r = c.getresponse()
                body = r.read()
                with lock:
                    codes.append((r.status, r.getheader("Content-Type"), body))
            c.close()
        ths = [threading.Thread(target=worker) for _ in range(4)]
        t0 = time.time()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        dt = time.time() - t0
        limited = [c for c in codes if c[0] == 429]
        expect(limited, "400 requests in %.2fs and none limited: %r" % (dt, sorted(set(c[0] for c in codes))))
        expect(all("application/json" in (c[1] or "") and json.loads(c[2])["error"] for c in limited), "429 not JSON")
        expect(all(c[0] in (400, 415, 422, 429) for c in codes), "unexpected: %r" % sorted(set(c[0] for c in codes)))
        time.sleep(2.5)
        r = curl(nginx.url("/v1/classify"), "--data-binary", "@" + pngs[0])
        expect(r.status == 200, "after the burst: %r" % r)

    def t_failover():
        backends[0].proc.kill()
        backends[0].proc.wait()
        before = classify_count(backends[1])
        for i in range(20):
            for prefix in ("", "/fmnist"):
                r = curl(nginx.url(prefix + "/v1/classify"), "--data-binary", "@" + pngs[i % len(pngs)])
                expect(r.status == 200, "request %d with one backend killed: %r" % (i, r))
        r = curl(nginx.url("/fmnist/"))
        expect(r.status == 200, "page with one backend killed: %r" % r)
        time.sleep(0.2)
        expect(classify_count(backends[1]) - before == 40, "the survivor did not answer all 40")

    def t_all_down():
        backends[1].proc.kill()
        backends[1].proc.wait()
        r = curl(nginx.url("/v1/classify"), "--data-binary", "@" + pngs[0])
        expect(r.status == 503, "both backends dead: %r" % r)
        expect("application/json" in r.headers.get("content-type", "") and r.json()["error"], repr(r))

    try:
        if t.run("nginx -t + start", t_config):
            t.run("predict through proxy", t_predict)
            t.run("load spread over 2 backends", t_spread)
            t.run("prefix, redirect", t_forwarded)
            t.run("page + assets under /fmnist/", t_page)
            t.run("gzip JSON", t_gzip)
            t.run("body limit 413 JSON", t_body_limit)
            t.run("rate limit 429 JSON", t_rate_limit)
            t.run("SIGKILL one backend", t_failover)
            t.run("all backends down 503", t_all_down)
    finally:
        nginx.stop()
        for b in backends:
            b.kill()
        if t.failed:
            print("--- nginx error.log\n" + nginx.errors())
            with open(os.path.join(nginx.dir, "access.log"), "rb") as f:
                print("--- nginx access log (tail)\n" + f.read().decode("utf-8", "replace")[-3000:])
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
