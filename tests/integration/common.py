"""common.py - helpers shared by the fmnist-serve integration tests.

Starts the real fmnist-serve on an ephemeral port (--port 0) and reads the
port from its start-up line; makes requests with the curl binary; builds
8-bit gray PNGs and multipart bodies with the standard library only; reads
the Fashion-MNIST IDX test file.  Python 3 standard library + curl only.
"""
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.environ.get("FMNIST_DATA") or "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def find_binary(env, argv_index, candidates):
    """Path from the environment, else argv[argv_index], else the first existing candidate."""
    if os.environ.get(env):
        return os.environ[env]
    if len(sys.argv) > argv_index:
        return sys.argv[argv_index]
    for c in candidates:
        p = os.path.join(ROOT, c)
        if os.path.exists(p):
            return p
    sys.exit("cannot find the binary: set %s" % env)


def weights_source():
    return os.environ.get("FMNIST_WEIGHTS_DIR") or os.path.join(ROOT, "weights")


def weight_files(src=None):
    src = src or weights_source()
    return sorted(f for f in os.listdir(src) if f.endswith(".safetensors") and not f.startswith("."))


def copy_weights(dst, names=None, src=None):
    """Copies the weight files (all, or names) into dst; returns the model names."""
    src = src or weights_source()
    os.makedirs(dst, exist_ok=True)
    out = []
    for f in (names or weight_files(src)):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
        out.append(f[: -len(".safetensors")])
    return out


# ------------------------------------------------------------------ images

def png_gray(w, h, px):
    """An 8-bit grayscale PNG of w x h bytes px (row-major)."""
    raw = b"".join(b"\x00" + bytes(px[y * w:(y + 1) * w]) for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def read_test_images(n):
    """The first n test images ([784] bytes each) and labels, or None when absent."""
    for suffix in (".gz", ""):
        ip = os.path.join(DATA_DIR, "t10k-images-idx3-ubyte" + suffix)
        lp = os.path.join(DATA_DIR, "t10k-labels-idx1-ubyte" + suffix)
        if os.path.exists(ip) and os.path.exists(lp):
            op = gzip.open if suffix else open
            with op(ip, "rb") as f:
                magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
                assert magic == 0x803 and rows == 28 and cols == 28
                data = f.read(min(n, count) * 784)
            with op(lp, "rb") as f:
                magic, count = struct.unpack(">II", f.read(8))
                labels = list(f.read(min(n, count)))
            return [data[i * 784:(i + 1) * 784] for i in range(len(labels))], labels
    return None


def synthetic_images(n):
    """Stand-ins when the data set is absent: light shapes on black."""
    out = []
    for k in range(n):
        px = bytearray(784)
        top, left, hh, ww = 4 + k % 5, 6 + k % 7, 10 + k % 9, 8 + (k * 3) % 11
        for y in range(top, min(28, top + hh)):
            for x in range(left, min(28, left + ww)):
                px[y * 28 + x] = 180 + (x * y) % 70
        out.append(bytes(px))
    return out


def multipart(files, boundary="fmnistBoundary7d93"):
    """(body, content_type) of a multipart/form-data form of (field, filename, bytes)."""
    parts = []
    for field, filename, data in files:
        parts.append(b"--" + boundary.encode() + b"\r\n"
                     + b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (field.encode(), filename.encode())
                     + b"Content-Type: image/png\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, "multipart/form-data; boundary=" + boundary


# ------------------------------------------------------------------ server

def proc_status(pid):
    """(VmRSS in KiB, open descriptors) of pid."""
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir("/proc/%d/fd" % pid))


class Server:
    """A running fmnist-serve; stdout and stderr are collected into .lines."""
    all = []  # every server started, for a last look at their logs

    def __init__(self, binary, args, env=None):
        Server.all.append(self)
        self.lines = []
        self._lock = threading.Lock()
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("FMNIST_") and k not in ("FMNIST_DATA",):
                del e[k]  # the tests set everything by flags
        e.update(env or {})
        # FMNIST_SERVE_WRAPPER: a command line put in front of the server (valgrind; tests/hardening/valgrind.sh)
        wrapper = shlex.split(os.environ.get("FMNIST_SERVE_WRAPPER", ""))
        self.proc = subprocess.Popen(wrapper + [binary, "--port", "0", "--host", "127.0.0.1"] + args,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e)
        self.port = None
        ready = threading.Event()

        def reader():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    self.lines.append(line)
                m = re.search(r"listening on http://[^ ]*:(\d+)/", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()
        self._thread = threading.Thread(target=reader, daemon=True)
        self._thread.start()
        ready.wait(120 if wrapper else 30)
        if self.port is None:
            self.kill()
            raise RuntimeError("fmnist-serve did not start:\n" + "\n".join(self.lines[-20:]))

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def log(self):
        with self._lock:
            return list(self.lines)

    def wait_log(self, pattern, timeout=5.0):
        """The first log line matching pattern, waiting up to timeout; None if none."""
        end = time.time() + timeout
        while time.time() < end:
            for line in self.log():
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        return None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Resp:
    def __init__(self, status, headers, body, rc, err):
        self.status, self.headers, self.body, self.rc, self.err = status, headers, body, rc, err

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%s rc=%d %r>" % (self.status, self.rc, self.body[:300])


def curl(url, *args, timeout=20):
    """One request with the curl binary: Resp(status, headers (lower-case names), body, rc, stderr)."""
    fd_h, hpath = tempfile.mkstemp(prefix="fmh")
    fd_b, bpath = tempfile.mkstemp(prefix="fmb")
    os.close(fd_h)
    os.close(fd_b)
    try:
        r = subprocess.run(["curl", "-sS", "-m", str(timeout), "-D", hpath, "-o", bpath,
                            "-w", "%{http_code}"] + list(args) + [url],
                           capture_output=True)
        with open(hpath, "rb") as f:
            head = f.read().decode("latin-1")
        with open(bpath, "rb") as f:
            body = f.read()
    finally:
        os.unlink(hpath)
        os.unlink(bpath)
    headers = {}
    # The last header block (after any 100 Continue) is the answer.
    blocks = [b for b in re.split(r"\r?\n\r?\n", head) if b.startswith("HTTP/")]
    if blocks:
        for line in blocks[-1].split("\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    code = r.stdout.decode().strip()
    return Resp(int(code) if code.isdigit() else 0, headers, body, r.returncode, r.stderr.decode())


# ------------------------------------------------------------------ runner

class Runner:
    """Runs test functions, prints one line each and the final 'N passed, M failed'."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, *args):
        t0 = time.time()
        try:
            fn(*args)
        except Exception as e:  # a failed expectation or an unexpected error
            self.failed += 1
            print("FAIL %-28s %.2fs  %s: %s" % (name, time.time() - t0, type(e).__name__, e), flush=True)
            return False
        self.passed += 1
        print("ok   %-28s %.2fs" % (name, time.time() - t0), flush=True)
        return True

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)
