#!/usr/bin/env python3
"""test_trainer.py - fmnist-train from the command line, as a user runs it.

Usage: test_trainer.py [PATH/TO/fmnist-train]   (or FMNIST_TRAIN)

Every subcommand on tiny runs (a few thousand examples, a few epochs): the
files a run writes, determinism (same seed and threads -> bit-identical
tensors), interruption (SIGTERM mid-run -> exit 143 and a checkpoint;
--resume -> the same tensors as an uninterrupted run), kill -9 at random
moments followed by --resume, and the clear errors for bad input (unknown
model or flag, missing data set, unwritable output, diverging loss).
Tests that need the data set skip (passing, with a note) when it is absent.
Prints "N passed, M failed"; exits 1 on failure.
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA_DIR, Runner, expect, find_binary  # noqa: E402

TRAIN = find_binary("FMNIST_TRAIN", 1, ["build/model/fmnist-train", "build-tmp/model/fmnist-train"])
HAVE_DATA = os.path.exists(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz")) or \
    os.path.exists(os.path.join(DATA_DIR, "train-images-idx3-ubyte"))
# A tiny CNN run: long enough (several seconds) to be interrupted mid-epoch.
TINY = ["--model", "cnn1", "--limit", "3000", "--val", "500", "--epochs", "3", "--seed", "7",
        "--threads", "2", "--quiet"]


def run(*args, timeout=300):
    return subprocess.run([TRAIN] + list(args), capture_output=True, text=True, timeout=timeout)


def tensors(path):
    """The tensor bytes of a safetensors file (the header's metadata holds timings)."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n])
    expect("__metadata__" in header, "%s: no __metadata__" % path)
    return b[8 + n:]


def fails(r, *needles):
    out = r.stdout + r.stderr
    expect(r.returncode != 0, "expected a non-zero exit, got 0: %s" % out[-300:])
    expect(r.returncode < 128, "exit %d looks like a crash: %s" % (r.returncode, out[-300:]))
    for n in needles:
        expect(n.lower() in out.lower(), "message lacks %r: %s" % (n, out[-400:]))


# ------------------------------------------------------------------ no data needed

def test_help():
    r = run("--help")
    expect(r.returncode == 0, "--help failed")
    for c in ("train", "grid", "eval", "summary", "eda"):
        expect(c in r.stdout, "--help lacks %s" % c)
    r = run("train", "--help")
    expect(r.returncode == 0, "train --help failed")
    for f in ("--model", "--optimizer", "--lr", "--batch", "--epochs", "--patience", "--val", "--seed",
              "--threads", "--out", "--resume"):
        expect(f in r.stdout, "train --help lacks %s" % f)


def test_bad_cli():
    fails(run("frobnicate"), "frobnicate")
    fails(run("train", "--model", "resnet50"), "resnet50")
    fails(run("train", "--no-such-flag"), "--no-such-flag")
    fails(run("train", "--lr", "fast"), "--lr")
    fails(run("train", "--lr", "-1"), "--lr")
    fails(run("train", "--batch", "0"), "--batch")
    fails(run("eval", "/nonexistent/x.safetensors"), "/nonexistent/x.safetensors")


def test_missing_data():
    r = run("train", "--model", "mlp2", "--data", "/nonexistent-fmnist", "--epochs", "1")
    fails(r, "dataset-fashion-mnist")
    r = run("eda", "--data", "/nonexistent-fmnist")
    fails(r, "dataset-fashion-mnist")


def test_summary():
    for name, total in (("mlp2", "269,322"), ("mlp3", "335,114"), ("cnn1", "241,546"),
                        ("cnn2", "241,546"), ("cnn3", "241,546")):
        r = run("summary", name)
        expect(r.returncode == 0, "summary %s failed: %s" % (name, r.stderr))
        expect(total in r.stdout or total.replace(",", "") in r.stdout,
               "summary %s lacks total %s:\n%s" % (name, total, r.stdout))


# ------------------------------------------------------------------ with data

def test_unwritable_out(tmp):
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    r = run("train", "--model", "mlp2", "--limit", "1000", "--val", "200", "--epochs", "1",
            "--out", os.path.join(blocker, "w.safetensors"))
    fails(r, blocker)


def test_diverging(tmp):
    r = run("train", "--model", "mlp2", "--optimizer", "sgd", "--lr", "1e4", "--limit", "2000",
            "--val", "500", "--epochs", "3", "--quiet", "--out", os.path.join(tmp, "nan.safetensors"))
    fails(r, "epoch", "lower learning rate")
    expect(not os.path.exists(os.path.join(tmp, "nan.safetensors")), "a diverged run wrote weights")


def test_train_outputs(tmp):
    out = os.path.join(tmp, "a.safetensors")
    r = run("train", *TINY, "--out", out)
    expect(r.returncode == 0, "train failed: %s" % r.stderr[-500:])
    for f in ("a.safetensors", "a.history.json", "a.eval.json"):
        expect(os.path.exists(os.path.join(tmp, f)), "missing %s" % f)
    expect(not os.path.exists(os.path.join(tmp, "a.ckpt")), "checkpoint left behind after a finished run")
    h = json.load(open(os.path.join(tmp, "a.history.json")))
    hist = h["history"]
    epochs = hist if isinstance(hist, list) else [dict(zip(hist, v)) for v in zip(*hist.values())]
    expect(len(epochs) == 3, "history has %d epochs, want 3" % len(epochs))
    for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        expect(k in epochs[0], "history epoch lacks %s" % k)
    ev = json.load(open(os.path.join(tmp, "a.eval.json")))
    expect(0.5 < ev["accuracy"] <= 1.0, "eval accuracy %r" % ev["accuracy"])
    # eval of the written file, text and JSON, agree with the report
    r = run("eval", out, "--json")
    expect(r.returncode == 0, "eval failed: %s" % r.stderr)
    j = json.loads(r.stdout)
    expect(abs(j["accuracy"] - ev["accuracy"]) < 1e-12, "eval --json %r != report %r" % (j["accuracy"], ev["accuracy"]))
    expect(len(j["confusion"]) == 10 and all(len(row) == 10 for row in j["confusion"]), "confusion not 10x10")
    expect(sum(map(sum, j["confusion"])) == 10000, "confusion does not count 10,000 images")
    r = run("eval", out)
    expect(r.returncode == 0 and "Ankle boot" in r.stdout and "recall" in r.stdout.lower(), "eval text: %s" % r.stdout)
    return out


def test_deterministic(tmp, first):
    out = os.path.join(tmp, "b.safetensors")
    r = run("train", *TINY, "--out", out)
    expect(r.returncode == 0, "train failed: %s" % r.stderr[-500:])
    expect(tensors(out) == tensors(first), "two runs with the same seed and threads differ")


def test_sigterm_resume(tmp, reference):
    out = os.path.join(tmp, "c.safetensors")
    ckpt = os.path.join(tmp, "c.ckpt")
    p = subprocess.Popen([TRAIN, "train", *TINY, "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    expect(p.returncode == 143, "SIGTERM mid-run: exit %d (want 143; did the run finish first?) %s"
           % (p.returncode, err.decode()[-300:]))
    expect(os.path.exists(ckpt), "no checkpoint after SIGTERM")
    expect(not os.path.exists(out), "weights written by an interrupted run")
    r = run("train", *TINY, "--out", out, "--resume")
    expect(r.returncode == 0, "--resume failed: %s" % r.stderr[-500:])
    expect(tensors(out) == tensors(reference), "interrupted + resumed differs from an uninterrupted run")
    # resuming with other flags is refused with a clear message
    p = subprocess.Popen([TRAIN, "train", *TINY, "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.5)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=120)
    expect(p.returncode == 130, "SIGINT: exit %d, want 130" % p.returncode)
    r = run("train", *[a if a != "7" else "8" for a in TINY], "--out", out, "--resume")
    fails(r, "configuration")


def test_kill9_resume(tmp, reference):
    out = os.path.join(tmp, "k.safetensors")
    ckpt = os.path.join(tmp, "k.ckpt")
    rng = random.Random(int(os.environ.get("FMNIST_TEST_SEED", "0")) or None)
    kills = 0
    for _ in range(3):
        args = [TRAIN, "train", *TINY, "--out", out] + (["--resume"] if os.path.exists(ckpt) else [])
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.5, 4.0))
        if p.poll() is None:
            p.kill()
            kills += 1
        p.communicate(timeout=120)
        if p.returncode == 0:
            break
        if os.path.exists(out):  # written only by atomic rename: complete or absent
            tensors(out)
    if not os.path.exists(out):
        args = [TRAIN, "train", *TINY, "--out", out] + (["--resume"] if os.path.exists(ckpt) else [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=300)
        expect(r.returncode == 0, "final --resume failed: %s" % r.stderr[-500:])
    expect(kills > 0, "no run was killed")
    expect(tensors(out) == tensors(reference), "kill -9 + --resume differs from an uninterrupted run")


def test_eda(tmp):
    png = os.path.join(tmp, "eda.png")
    r = run("eda", "--png", png, "--json")
    expect(r.returncode == 0, "eda failed: %s" % r.stderr)
    j = json.loads(r.stdout)
    text = json.dumps(j)
    expect("60000" in text and "10000" in text, "eda lacks the set sizes")
    with open(png, "rb") as f:
        expect(f.read(8) == b"\x89PNG\r\n\x1a\n", "eda PNG is not a PNG")


def test_grid(tmp):
    prefix = os.path.join(tmp, "grid-mlp2")
    r = run("grid", "--model", "mlp2", "--limit", "1500", "--val", "300", "--epochs", "1", "--threads", "2",
            "--quiet", "--grid-out", prefix, timeout=600)
    expect(r.returncode == 0, "grid failed: %s" % r.stderr[-500:])
    md = open(prefix + ".md").read()
    for col in ("Optimizer", "Learning_Rate", "Batch_Size", "Train_Loss", "Val_Loss", "Test_Loss",
                "Train_Accuracy", "Val_Accuracy", "Test_Accuracy"):
        expect(col in md, "grid table lacks %s" % col)
    expect("validation" in md.lower(), "grid report does not say the winner is chosen by validation accuracy")
    rows = open(prefix + ".csv").read().strip().splitlines()
    expect(len(rows) == 13, "grid CSV has %d lines, want header + 12" % len(rows))


# A small residual network with batch norm, trained with the modern recipe:
# every flag that adds state to a checkpoint (schedule position, EMA weights,
# batch-norm running statistics) or draws random numbers (augmentation).
RES_ARCH = {"name": "tiny-res", "input": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
    {"type": "batchnorm2d"}, {"type": "relu", "name": "a"},
    {"type": "conv2d", "out": 8, "kernel": 3, "padding": "same", "bias": False}, {"type": "batchnorm2d"},
    {"type": "add", "inputs": [-1, "a"]}, {"type": "relu"},
    {"type": "conv2d", "out": 16, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "global_avgpool"}, {"type": "linear", "out": 10}]}
RECIPE = ["--limit", "4000", "--val", "500", "--epochs", "3", "--seed", "11", "--threads", "2", "--quiet",
          "--batch", "64", "--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--lr", "0.1",
          "--weight-decay", "5e-4", "--schedule", "onecycle", "--label-smoothing", "0.1", "--ema", "0.99",
          "--crop", "2", "--flip", "0.5", "--erase", "0.5", "--scale-jitter", "0.1", "--gain", "0.2",
          "--gamma", "0.2", "--blur", "0.1", "--sharpen", "0.1", "--patience", "0"]


def test_recipe_resume(tmp):
    arch = os.path.join(tmp, "tiny-res.json")
    with open(arch, "w") as f:
        json.dump(RES_ARCH, f)
    ref, again, cut = (os.path.join(tmp, n + ".safetensors") for n in ("r1", "r2", "r3"))
    r = run("train", "--model", arch, *RECIPE, "--out", ref)
    expect(r.returncode == 0, "recipe run failed: %s" % r.stderr[-500:])
    meta = json.loads(subprocess.run([TRAIN, "summary", ref], capture_output=True, text=True).stdout.split(
        "training: ", 1)[1].splitlines()[0])
    for k in ("schedule", "weight_decay", "nesterov", "label_smoothing", "ema", "augmentation"):
        expect(k in meta, "training metadata lacks %r: %s" % (k, meta))
    expect(meta["augmentation"]["erase"] == 0.5 and meta["augmentation"]["crop"] == 2, str(meta))
    hist = json.load(open(os.path.join(tmp, "r1.history.json")))["history"]
    expect(len(hist) == 3 and all("lr_end" in h for h in hist), "history lacks per-epoch rates")
    expect(hist[0]["lr"] < hist[1]["lr"] and hist[2]["lr_end"] < 1e-4, "one-cycle rates look wrong: %s"
           % [(h["lr"], h["lr_end"]) for h in hist])
    r = run("train", "--model", arch, *RECIPE, "--out", again)
    expect(r.returncode == 0 and tensors(again) == tensors(ref), "two recipe runs with one seed differ")
    # interrupted in the middle of an epoch, then resumed: the same tensors
    p = subprocess.Popen([TRAIN, "train", "--model", arch, *RECIPE, "--out", cut], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    ckpt = os.path.join(tmp, "r3.ckpt")
    deadline = time.time() + 120
    while not os.path.exists(ckpt) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)  # the first epoch's checkpoint: the second epoch has begun
    time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    expect(p.returncode == 143, "SIGTERM: exit %d (did the run finish first?) %s" % (p.returncode, err.decode()[-300:]))
    r = run("train", "--model", arch, *RECIPE, "--out", cut, "--resume")
    expect(r.returncode == 0, "--resume failed: %s" % r.stderr[-500:])
    expect(tensors(cut) == tensors(ref), "interrupted + resumed recipe run differs from an uninterrupted one")
    # calibration chooses the serving options on validation; eval then serves them
    cal = os.path.join(tmp, "r1-cal.safetensors")
    r = run("calibrate", ref, "--out", cal, "--flag-rate", "0.05")
    expect(r.returncode == 0, "calibrate failed: %s" % r.stderr[-500:])
    expect("temperature" in r.stdout and "uncertain below" in r.stdout, r.stdout)
    header = json.loads(open(cal, "rb").read()[8:8 + struct.unpack("<Q", open(cal, "rb").read(8))[0]])
    serving = json.loads(header["__metadata__"]["serving"])
    calib = json.loads(header["__metadata__"]["calibration"])
    metrics = json.loads(header["__metadata__"]["metrics"])
    expect(serving["tta"] in ("none", "hflip") and 0.05 < serving["temperature"] < 20, str(serving))
    expect(calib["val_ece_after"] <= calib["val_ece_before"] + 1e-9, "temperature scaling raised the validation ECE")
    expect(abs(calib["val_flagged"] - 0.05) < 0.02, "flag rate on validation %s" % calib["val_flagged"])
    ev = json.loads(run("eval", cal, "--json").stdout)
    expect(ev["correct"] == metrics["test_correct"], "eval %s != metadata %s" % (ev["correct"], metrics["test_correct"]))
    expect(tensors(cal) == tensors(ref), "calibration changed the weights")
    fails(run("calibrate", ref, "--tta", "sideways"), "--tta")
    fails(run("calibrate", os.path.join(tmp, "nothing.safetensors")), "cannot open")
    # the recipe's flags are checked
    fails(run("train", "--model", arch, "--schedule", "cosine", "--plateau", "3"), "--plateau")
    fails(run("train", "--model", arch, "--nesterov"), "--nesterov needs --optimizer sgd")
    fails(run("train", "--model", arch, "--erase", "1.5"), "--erase")
    fails(run("train", "--model", arch, "--blur", "0.6", "--sharpen", "0.6"), "exclusive")


def test_study_golden(tmp):
    """The study's five train bit for bit as the build before the engine's
    descriptor table did (tests/data/study_train_golden.json)."""
    import hashlib
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    golden = json.load(open(os.path.join(root, "tests", "data", "study_train_golden.json")))
    if os.environ.get("ASAN_OPTIONS"):  # tools/test.sh's sanitizer run: -O2 and 5x slower; the release run checks
        print("note: study_golden runs in the release build only: skipped under the sanitizers")
        return
    version = subprocess.run([TRAIN, "version"], capture_output=True, text=True).stdout
    if "gemm kernel: %s" % golden["kernel"] not in version:
        print("note: the golden tensors are for the %s kernel, this build runs %s: skipped"
              % (golden["kernel"], version.strip()))
        return
    for name, want in golden["tensors_sha256"].items():
        out = os.path.join(tmp, "golden-%s.safetensors" % name)
        r = run("train", "--model", name, *golden["command"], "--quiet", "--out", out)
        expect(r.returncode == 0, "%s: %s" % (name, r.stderr[-300:]))
        got = hashlib.sha256(tensors(out)).hexdigest()
        expect(got == want, "%s trains differently from before: tensors %s, golden %s" % (name, got, want))


def main():
    t = Runner()
    t.run("help", test_help)
    t.run("bad_cli", test_bad_cli)
    t.run("missing_data", test_missing_data)
    t.run("summary", test_summary)
    if not HAVE_DATA:
        print("note: %s absent (apt-get install dataset-fashion-mnist): data tests skipped" % DATA_DIR)
        return t.finish()
    tmp = tempfile.mkdtemp(prefix="fmnist-train-test-")
    try:
        t.run("unwritable_out", test_unwritable_out, tmp)
        t.run("diverging", test_diverging, tmp)
        ref = os.path.join(tmp, "a.safetensors")
        if t.run("train_outputs", test_train_outputs, tmp):
            t.run("deterministic", test_deterministic, tmp, ref)
            t.run("sigterm_resume", test_sigterm_resume, tmp, ref)
            t.run("kill9_resume", test_kill9_resume, tmp, ref)
        t.run("recipe_resume", test_recipe_resume, tmp)
        t.run("study_golden", test_study_golden, tmp)
        t.run("eda", test_eda, tmp)
        t.run("grid", test_grid, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
