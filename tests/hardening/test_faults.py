#!/usr/bin/env python3
"""test_faults.py - weight-file faults under a running server, and a trainer on a full disk.

Usage: test_faults.py   (FMNIST_SERVE, FMNIST_TRAIN, FMNIST_WEIGHTS_DIR as for the integration tests)

Weight files: the server serves mlp2 and cnn3; mlp2.safetensors is then
damaged in place and the server gets SIGHUP, once per fault:
  a digit of the JSON header turned into a control byte, '{' flipped, the
  file truncated to half, to 7
  bytes, to 0 bytes, replaced by a directory, made unreadable (skipped when
  running as root, which reads through any mode bits; an unreadable file
  fails the same open as a directory does), a header length of 2^63
Each time the server must keep serving the old mlp2 (same sha256 in
/v1/models, a classification by model=mlp2 answers 200 with the same
class), keep cnn3, and log a line naming the file and why.  Restoring the
good file and SIGHUP loads it again.  A byte flipped in the tensor data is
not detectable (safetensors carries no checksum): it loads, and
/v1/models shows the new sha256.

Full disk: a 300 KiB tmpfs is mounted (root only; skipped otherwise) and
fmnist-train writes mlp2 (about 1 MiB) there over an older file: the
trainer must exit non-zero with a message about the write, leave no partial
.safetensors (nor temporary file) and leave the old file intact.

Prints one line per test and "N passed, M failed"; exits 1 on any failure.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from common import Runner, Server, copy_weights, curl, expect, find_binary, png_gray, weight_files  # noqa: E402

SERVE = find_binary("FMNIST_SERVE", 99, ["build-hard/server/fmnist-serve", "build/server/fmnist-serve"])
TRAIN = find_binary("FMNIST_TRAIN", 99, ["build-hard/model/fmnist-train", "build/model/fmnist-train"])
TMP = tempfile.mkdtemp(prefix="fmnist-faults-")
PNG = os.path.join(TMP, "img.png")


def models_info(s):
    r = curl(s.url("/v1/models"))
    expect(r.status == 200, "/v1/models: %r" % r)
    return {m["name"]: m for m in r.json()["models"]}


def sha_of(m):
    for k in ("sha256", "checksum"):
        if k in m:
            return m[k]
    return m.get("file", {}).get("sha256")


def classify(s, model):
    r = curl(s.url("/v1/classify?invert=false&model=" + model), "--data-binary", "@" + PNG)
    expect(r.status == 200, "classify with %s: %r" % (model, r))
    return r.json()["predictions"][0]["class_id"]


def reload(s, pattern, timeout=10):
    """SIGHUP, then wait for a new 'reloaded' or 'reload failed' line; returns the new log lines."""
    n = len(s.log())
    s.signal(signal.SIGHUP)
    end = time.time() + timeout
    while time.time() < end:
        new = s.log()[n:]
        if any("reloaded" in ln or "reload failed" in ln for ln in new):
            return new
        time.sleep(0.05)
    raise AssertionError("no reload line after SIGHUP")


def header_len(data):
    return int.from_bytes(data[:8], "little")


def t_weight_faults(wdir, good):
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--default-model", "mlp2"])
    path = os.path.join(wdir, "mlp2.safetensors")
    try:
        before = models_info(s)
        expect(set(before) == {"mlp2", "cnn3"}, "models at start: %s" % sorted(before))
        sha0 = sha_of(before["mlp2"])
        expect(sha0 == hashlib.sha256(good).hexdigest(), "sha256 of mlp2: %r" % before["mlp2"])
        cls0 = classify(s, "mlp2")
        hl = header_len(good)

        def flip(i):
            b = bytearray(good)
            b[i] ^= 0x20
            return bytes(b)

        def write(data):
            def f():
                if os.path.isdir(path):
                    os.rmdir(path)
                tmp = path + ".tmp"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.rename(tmp, path)  # as a deploy would
            return f

        def make_dir():
            os.unlink(path)
            os.mkdir(path)

        def unreadable():
            write(good)()
            os.chmod(path, 0)

        faults = [
            ("a data_offsets digit flipped", write(flip(good.index(b'"data_offsets":[', 8) + 16)), None),
            ("header '{' flipped", write(flip(8)), None),
            ("truncated to half", write(good[:len(good) // 2]), None),
            ("truncated to 7 bytes", write(good[:7]), None),
            ("empty file", write(b""), None),
            ("header length 2^63", write((1 << 63).to_bytes(8, "little") + good[8:]), None),
            ("replaced by a directory", make_dir, None),
            ("no read permission", unreadable, "root reads through mode bits" if os.geteuid() == 0 else None),
        ]
        for name, damage, skip in faults:
            if skip:
                print("     skip %-26s (%s)" % (name, skip), flush=True)
                continue
            damage()
            new = reload(s, "")
            why = [ln for ln in new if "mlp2" in ln and ("keeping" in ln or "skipping" in ln)]
            expect(why and "keeping" in why[0], "%s: no 'keeping' log line: %s" % (name, new))
            now = models_info(s)
            expect(set(now) == {"mlp2", "cnn3"}, "%s: models %s" % (name, sorted(now)))
            expect(sha_of(now["mlp2"]) == sha0, "%s: mlp2 sha256 changed" % name)
            expect(classify(s, "mlp2") == cls0 and classify(s, "cnn3") is not None, "%s: answers changed" % name)
            print("     %-26s kept; log: %s" % (name, why[0].split(".safetensors: ")[-1][:110]), flush=True)
            if os.path.isdir(path):
                os.rmdir(path)
            write(good)()
            os.chmod(path, 0o644)
        # Undetectable: a flipped byte in the tensor data loads (no checksum in safetensors).
        write(flip(len(good) - 100))()
        new = reload(s, "")
        now = models_info(s)
        expect(sha_of(now["mlp2"]) == hashlib.sha256(flip(len(good) - 100)).hexdigest(),
               "a data byte flip: sha256 %r" % sha_of(now["mlp2"]))
        print("     %-26s loaded, new sha256 shown (no checksum in the format)" % "one data byte flipped",
              flush=True)
        write(good)()
        reload(s, "")
        expect(sha_of(models_info(s)["mlp2"]) == sha0, "the good file again")
        # The file removed: the model goes (intended), the rest stays.
        os.unlink(path)
        reload(s, "")
        expect(set(models_info(s)) == {"cnn3"}, "after removing mlp2.safetensors")
        expect(curl(s.url("/v1/classify?model=mlp2"), "--data-binary", "@" + PNG).status == 404, "removed model")
        write(good)()
        reload(s, "")
        expect(set(models_info(s)) == {"mlp2", "cnn3"}, "mlp2 back")
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def t_full_disk(data_available):
    if os.geteuid() != 0:
        print("     skip: mounting a tmpfs needs root", flush=True)
        return
    if not data_available:
        print("     skip: no Fashion-MNIST data set", flush=True)
        return
    mnt = os.path.join(TMP, "small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", mnt], capture_output=True)
    if r.returncode != 0:
        print("     skip: cannot mount a tmpfs: %s" % r.stderr.decode().strip(), flush=True)
        return
    try:
        old = os.path.join(mnt, "m.safetensors")
        with open(old, "wb") as f:
            f.write(b"OLD-FILE-CONTENT" * 1000)  # 16 KB, leaves ~280 KiB free
        out = os.path.join(mnt, "m.safetensors")
        p = subprocess.run([TRAIN, "train", "--model", "mlp2", "--limit", "600", "--val", "100", "--epochs", "1",
                            "--threads", "1", "--out", out], capture_output=True, timeout=300)
        err = (p.stdout + p.stderr).decode(errors="replace")
        expect(p.returncode != 0, "the trainer exited 0 on a full disk:\n%s" % err[-500:])
        expect("m.safetensors: write failed: No space left on device" in err,
               "no word about the weight file and the disk: %s" % err[-500:])
        with open(old, "rb") as f:
            expect(f.read() == b"OLD-FILE-CONTENT" * 1000, "the old file was changed")
        left = sorted(os.listdir(mnt))
        partial = [f for f in left if f != "m.safetensors" and (".safetensors" in f or f.startswith(".") or
                                                                 "tmp" in f)]
        expect(not partial, "partial files left: %s" % left)
        print("     exit %d; files left: %s; message: %s" % (
            p.returncode, left, [ln for ln in err.splitlines() if "m.safetensors" in ln][:1]), flush=True)
    finally:
        subprocess.run(["umount", mnt])


def main():
    runner = Runner()
    names = weight_files()
    if "mlp2.safetensors" not in names or "cnn3.safetensors" not in names:
        print("mlp2 and cnn3 weight files are needed")
        return 1
    wdir = os.path.join(TMP, "weights")
    copy_weights(wdir, ["mlp2.safetensors", "cnn3.safetensors"])
    with open(os.path.join(wdir, "mlp2.safetensors"), "rb") as f:
        good = f.read()
    px = bytearray(784)
    for y in range(4, 24):
        for x in range(8, 20):
            px[y * 28 + x] = 200
    with open(PNG, "wb") as f:
        f.write(png_gray(28, 28, px))
    data = os.environ.get("FMNIST_DATA") or "/usr/share/datasets/fashion-mnist"
    runner.run("weight file faults + SIGHUP", t_weight_faults, wdir, good)
    runner.run("trainer on a full disk", t_full_disk, os.path.isdir(data))
    shutil.rmtree(TMP, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
