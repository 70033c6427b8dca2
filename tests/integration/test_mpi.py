#!/usr/bin/env python3
"""test_mpi.py - fmnist-train train across processes: Open MPI's mpirun on loopback.

Usage: test_mpi.py [PATH/TO/fmnist-train]   (or FMNIST_TRAIN)

A tiny network with batch norm, dropout and augmentation (every part whose
numbers depend on how a batch is split) on a small subset (--limit):
  - 2 processes x 1 thread give the tensors and history of one process with
    --threads 2; 4 x 1, 2 x 2 and 1 x 4 give one set of tensors;
  - a process killed with kill -9 ends the job with mpirun's message, no hang;
    --resume from the last checkpoint gives the uninterrupted tensors;
  - SIGTERM to mpirun: every rank stops at one batch, rank 0 writes the
    checkpoint; a resume with another layout of the same shard count (one
    process, --threads 2) continues to the same tensors, one with another
    shard count is refused; --resume-if-any starts afresh without one;
  - rank-dependent --data (a wrapper script) with different contents, or
    other flags on one rank, are refused at start on every rank;
  - deploy/k8s/train-mpijob.yaml's command runs (its -np, --threads, and
    --resume-if-any, here without a checkpoint);
  - a build without MPI refuses to run under mpirun with a clear message.
Exits 77 (meson: skipped) when mpirun is absent or the build has no MPI
(after checking that refusal), or without the data set.  Prints
"N passed, M failed"; exits 1 on failure.
"""
import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA_DIR, Runner, expect, find_binary  # noqa: E402
from test_trainer import tensors  # noqa: E402

TRAIN = find_binary("FMNIST_TRAIN", 1, ["build/model/fmnist-train", "build-tmp/model/fmnist-train"])
MPIRUN = shutil.which("mpirun")
HAVE_DATA = os.path.exists(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz")) or \
    os.path.exists(os.path.join(DATA_DIR, "train-labels-idx1-ubyte"))
# TCP over loopback only (what a multi-node job uses, without the machine's other interfaces)
MPI_FLAGS = ["--oversubscribe", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
             "--mca", "oob_tcp_if_include", "lo"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
ARCH = {"name": "tiny-mpi", "input": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "stride": 2, "padding": "same", "bias": False},
    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"}, {"type": "dropout", "p": 0.2}, {"type": "linear", "out": 32},
    {"type": "batchnorm1d"}, {"type": "relu"}, {"type": "linear", "out": 10}]}
EPOCHS = "6"
# The SIGTERM test's runs: long enough to be interrupted after the first epoch's checkpoint
EPOCHS_LONG = "80"
# batch 60 over 4 shards, 1000 examples: a last batch of 40 leaves shard 3 empty
FLAGS = ["--limit", "1000", "--val", "256", "--batch", "60", "--no-test", "--seed", "9", "--quiet",
         "--crop", "1", "--flip", "0.5"]


# Under tools/test.sh's sanitizer run: Open MPI's own leaks are suppressed (full stacks needed to see them)
ENV = dict(os.environ)
if os.environ.get("ASAN_OPTIONS"):
    ENV["LSAN_OPTIONS"] = "suppressions=%s:fast_unwind_on_malloc=0:print_suppressions=0" % os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "openmpi-lsan.supp")


def mpirun(n, *args, timeout=240):
    return subprocess.run([MPIRUN] + MPI_FLAGS + ["-np", str(n)] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def mpirun_bg(n, *args):
    return subprocess.Popen([MPIRUN] + MPI_FLAGS + ["-np", str(n)] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=ENV)


def train(*args, timeout=120):
    return subprocess.run([TRAIN, "train"] + list(args), capture_output=True, text=True, timeout=timeout)


def ok(r, what):
    expect(r.returncode == 0, "%s: exit %d: %s" % (what, r.returncode, (r.stdout + r.stderr)[-800:]))


def history(path):
    """The per-epoch numbers of a history file, without the timings."""
    h = json.load(open(path[: -len(".safetensors")] + ".history.json"))
    return [{k: v for k, v in e.items() if "seconds" not in k} for e in h["history"]]


def ranks_of(pid):
    """{rank: pid} of the processes mpirun (pid) started."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open("/proc/%s/environ" % p, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if b"OMPI_COMM_WORLD_RANK" in env:
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(p)
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(path, proc, timeout=120):
    end = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.time() < end:
        time.sleep(0.01)
    return os.path.exists(path)


# ------------------------------------------------------------------ tests

def test_version():
    r = subprocess.run([TRAIN, "version"], capture_output=True, text=True)
    expect(r.returncode == 0 and "mpi: Open MPI" in r.stdout, "version does not name MPI: %s" % r.stdout)


def test_two_ranks_equal_two_threads(tmp, model):
    ref, got = os.path.join(tmp, "ref2.safetensors"), os.path.join(tmp, "m21.safetensors")
    ok(train("--model", model, *FLAGS, "--epochs", EPOCHS, "--threads", "2", "--out", ref), "--threads 2")
    r = mpirun(2, TRAIN, "train", "--model", model, *FLAGS, "--epochs", EPOCHS, "--threads", "1", "--out", got,
               "--quiet")
    ok(r, "mpirun -np 2 --threads 1")
    expect(tensors(got) == tensors(ref), "2 processes x 1 thread differ from 1 process x 2 threads")
    expect(history(got) == history(ref), "histories differ (validation is sharded the same way):\n%s\n%s"
           % (history(got), history(ref)))
    meta = json.loads(subprocess.run([TRAIN, "summary", got], capture_output=True, text=True).stdout.split(
        "training: ", 1)[1].splitlines()[0])
    expect(meta.get("ranks") == 2 and meta.get("shards") == 2 and meta.get("threads") == 1,
           "the weight file does not record the layout: %s" % meta)
    # rank 0 alone wrote files; nothing left beside them
    names = sorted(f for f in os.listdir(tmp) if f.startswith("m21"))
    expect(names == ["m21.history.json", "m21.safetensors"], "files written: %s" % names)
    return ref


def test_four_shards(tmp, model):
    outs = [os.path.join(tmp, "w4-%s.safetensors" % k) for k in ("1x4", "2x2", "4x1")]
    ok(train("--model", model, *FLAGS, "--epochs", "2", "--threads", "4", "--out", outs[0]), "1 x 4")
    ok(mpirun(2, TRAIN, "train", "--model", model, *FLAGS, "--epochs", "2", "--threads", "2", "--out", outs[1]),
       "2 x 2")
    ok(mpirun(4, TRAIN, "train", "--model", model, *FLAGS, "--epochs", "2", "--threads", "1", "--out", outs[2]),
       "4 x 1")
    t = [tensors(o) for o in outs]
    expect(t[0] == t[1], "2 processes x 2 threads differ from 1 x 4")
    expect(t[0] == t[2], "4 processes x 1 thread differ from 1 x 4")


def test_rank_death_resume(tmp, model, ref):
    out, ckpt = os.path.join(tmp, "k.safetensors"), os.path.join(tmp, "k.ckpt")
    args = [TRAIN, "train", "--model", model, *FLAGS, "--epochs", EPOCHS, "--threads", "1", "--out", out]
    p = mpirun_bg(2, *args)
    try:
        expect(wait_for(ckpt, p), "no checkpoint after the first epoch: %s" % (p.poll(), ))
        ranks = ranks_of(p.pid)
        expect(p.poll() is None and 1 in ranks, "the job ended before a rank could be killed (ranks %s)" % ranks)
        t0 = time.time()
        os.kill(ranks[1], signal.SIGKILL)
        log, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise AssertionError("the job hung after a rank was killed")
    log = log.decode("utf-8", "replace")
    expect(p.returncode != 0, "mpirun exited 0 after a rank was killed")
    expect("rank 1" in log and "signal 9" in log, "no message naming the dead rank: %s" % log[-600:])
    expect(time.time() - t0 < 30, "the job took %.0f s to stop" % (time.time() - t0))
    end = time.time() + 10
    while any(alive(q) for q in ranks.values()) and time.time() < end:
        time.sleep(0.05)
    expect(not any(alive(q) for q in ranks.values()), "a rank outlived the job")
    expect(not os.path.exists(out), "weights written by a killed job")
    r = mpirun(2, *args, "--resume")
    ok(r, "mpirun --resume")
    expect(tensors(out) == tensors(ref), "kill -9 + --resume differs from an uninterrupted run")
    expect(history(out) == history(ref), "the resumed history differs")
    expect(not os.path.exists(ckpt), "checkpoint left behind after the resumed run finished")


def test_sigterm_layout_resume(tmp, model):
    # Long enough that SIGTERM, sent once the first epoch's checkpoint exists,
    # arrives before the run ends (six epochs of this net take ~0.3 s, less
    # than mpirun takes to forward the signal); its own uninterrupted reference
    out, ckpt = os.path.join(tmp, "s.safetensors"), os.path.join(tmp, "s.ckpt")
    ref = os.path.join(tmp, "s-ref.safetensors")
    ok(train("--model", model, *FLAGS, "--epochs", EPOCHS_LONG, "--out", ref, "--threads", "2"),
       "the uninterrupted --threads 2 reference")
    args = ["--model", model, *FLAGS, "--epochs", EPOCHS_LONG, "--out", out]
    p = mpirun_bg(2, TRAIN, "train", *args, "--threads", "1")
    expect(wait_for(ckpt, p), "no checkpoint after the first epoch")
    p.send_signal(signal.SIGTERM)
    log, _ = p.communicate(timeout=60)
    log = log.decode("utf-8", "replace")
    expect(p.returncode != 0 and "interrupted by SIGTERM" in log, "SIGTERM: exit %d (did the run finish first?) %s"
           % (p.returncode, log[-500:]))
    expect(log.count("interrupted by") == 1, "more than rank 0 reported the checkpoint: %s" % log)
    # another shard count: refused, and the checkpoint stays
    r = train(*args, "--threads", "1", "--resume")
    expect(r.returncode not in (0,) and r.returncode < 128 and "processes x threads = 2" in r.stderr,
           "a resume with 1 shard instead of 2: exit %d: %s" % (r.returncode, r.stderr[-400:]))
    expect(os.path.exists(ckpt), "the refused resume removed the checkpoint")
    # the same shard count as one process: allowed, the same result
    ok(train(*args, "--threads", "2", "--resume-if-any"), "--threads 2 --resume-if-any of a 2 x 1 checkpoint")
    expect(tensors(out) == tensors(ref), "SIGTERM + resume as 1 x 2 differs from an uninterrupted run")
    # --resume-if-any: no checkpoint now, so a fresh run, in a job too
    fresh = os.path.join(tmp, "f.safetensors")
    r = mpirun(2, TRAIN, "train", *args[:-1], fresh, "--threads", "1", "--resume-if-any")
    ok(r, "--resume-if-any without a checkpoint")
    expect(tensors(fresh) == tensors(ref), "--resume-if-any from scratch differs")
    r = mpirun(2, TRAIN, "train", *args[:-1], fresh, "--threads", "1", "--resume")
    expect(r.returncode != 0 and "no checkpoint" in r.stdout + r.stderr, "--resume without a checkpoint: %s"
           % (r.stdout + r.stderr)[-400:])


def wrapper(tmp, name, extra):
    """A script that runs fmnist-train with extra flags on rank 1 only."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write('#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec "%s" "$@" %s; fi\nexec "%s" "$@"\n'
                % (TRAIN, extra, TRAIN))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_data_mismatch(tmp, model):
    # rank 1 reads a copy of the data set with one training label changed
    alt = os.path.join(tmp, "data-alt")
    os.makedirs(alt)
    for f in os.listdir(DATA_DIR):
        if "idx" in f and not f.startswith("train-labels"):
            os.symlink(os.path.join(DATA_DIR, f), os.path.join(alt, f))
    src = os.path.join(DATA_DIR, "train-labels-idx1-ubyte")
    raw = bytearray(gzip.open(src + ".gz").read() if os.path.exists(src + ".gz") else open(src, "rb").read())
    raw[8 + 59000] = (raw[8 + 59000] + 1) % 10  # an example this run neither trains nor validates on
    with open(os.path.join(alt, "train-labels-idx1-ubyte"), "wb") as f:
        f.write(raw)
    out = os.path.join(tmp, "d.safetensors")
    t0 = time.time()
    r = mpirun(2, wrapper(tmp, "alt-data.sh", "--data " + alt), "train", "--model", model, *FLAGS, "--epochs", "1",
               "--threads", "1", "--out", out)
    log = r.stdout + r.stderr
    expect(r.returncode != 0, "different data sets were accepted")
    # Every rank refuses, but mpirun stops the job when the first exits and may
    # drop the others' last output in transit: one refusal must get through
    expect(any("(rank %d): the processes read different data sets" % rank in log for rank in (0, 1)),
           "no rank refused the data: %s" % log[-800:])
    expect(alt in log and DATA_DIR in log, "the message does not say where each read from: %s" % log[-500:])
    expect("MPI_ABORT" not in log, "a refusal every rank agrees on should end normally: %s" % log[-500:])
    expect(not os.path.exists(out) and time.time() - t0 < 60, "the refused job trained")
    # the same files through another path are fine
    same = os.path.join(tmp, "data-same")
    os.symlink(DATA_DIR, same)
    r = mpirun(2, wrapper(tmp, "same-data.sh", "--data " + same), "train", "--model", model, *FLAGS, "--epochs",
               "1", "--threads", "1", "--out", out)
    ok(r, "the same data through another path")


def test_flag_mismatch(tmp, model):
    r = mpirun(2, wrapper(tmp, "other-seed.sh", "--seed 10"), "train", "--model", model, *FLAGS, "--epochs", "1",
               "--threads", "1", "--out", os.path.join(tmp, "x.safetensors"))
    log = r.stdout + r.stderr
    expect(r.returncode != 0 and "rank 1 was started with other training flags" in log,
           "other flags on rank 1 were accepted: %s" % log[-600:])
    r = mpirun(2, wrapper(tmp, "other-threads.sh", "--threads 2"), "train", "--model", model, *FLAGS, "--epochs",
               "1", "--threads", "1", "--out", os.path.join(tmp, "x.safetensors"))
    expect(r.returncode != 0 and "different thread counts" in r.stdout + r.stderr,
           "other thread counts were accepted: %s" % (r.stdout + r.stderr)[-600:])
    r = mpirun(2, TRAIN, "eval", "whatever.safetensors")
    expect(r.returncode != 0 and "only train is data-parallel" in r.stdout + r.stderr, "eval under mpirun: %s"
           % (r.stdout + r.stderr)[-300:])


def test_mpijob_command(tmp):
    """deploy/k8s/train-mpijob.yaml's mpirun command, on loopback, on a small subset."""
    try:
        import yaml
    except ImportError:
        print("     (python3-yaml absent: the manifest's command is not run)")
        return
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    docs = list(yaml.safe_load_all(open(os.path.join(root, "deploy", "k8s", "train-mpijob.yaml"))))
    spec = [d for d in docs if d and d.get("kind") == "MPIJob"][0]["spec"]["mpiReplicaSpecs"]
    launcher = spec["Launcher"]["template"]["spec"]["containers"][0]
    expect(launcher["command"] == ["mpirun"], "the launcher does not run mpirun")
    args = launcher["args"]
    k = [i for i, a in enumerate(args) if a.endswith("/fmnist-train")][0]
    expect("--resume-if-any" in args, "the MPIJob is restarted with one command line: it needs --resume-if-any")
    vol = os.path.join(tmp, "vol")
    os.makedirs(vol)
    os.symlink(DATA_DIR, os.path.join(vol, "data"))
    train_args = [a.replace("/fmnist/", vol + "/") for a in args[k + 1:]]
    out = train_args[train_args.index("--out") + 1]
    small = ["--limit", "300", "--val", "100", "--epochs", "1", "--no-test", "--quiet"]
    n = args.index("-np")
    r = mpirun(int(args[n + 1]), *(args[:n] + args[n + 2:k]), TRAIN, *train_args, *small, timeout=180)
    ok(r, "the MPIJob's command")
    expect(os.path.exists(out), "the MPIJob's command wrote no %s" % out)


def main():
    if not MPIRUN:
        print("note: mpirun absent (apt-get install openmpi-bin): skipped")
        return 77
    version = subprocess.run([TRAIN, "version"], capture_output=True, text=True).stdout
    if "mpi: none" in version:
        r = mpirun(2, TRAIN, "train", "--epochs", "1")
        out = r.stdout + r.stderr
        if r.returncode == 0 or "built without MPI" not in out:
            print("FAIL no_mpi_refusal: exit %d: %s" % (r.returncode, out[-400:]))
            return 1
        print("ok   no_mpi_refusal\nnote: fmnist-train built without MPI: the other tests skipped")
        return 77
    if not HAVE_DATA:
        print("note: %s absent (apt-get install dataset-fashion-mnist): skipped" % DATA_DIR)
        return 77
    t = Runner()
    t.run("version", test_version)
    tmp = tempfile.mkdtemp(prefix="fmnist-mpi-test-")
    try:
        model = os.path.join(tmp, "tiny-mpi.json")
        with open(model, "w") as f:
            json.dump(ARCH, f)
        ref = os.path.join(tmp, "ref2.safetensors")
        if t.run("two_ranks_equal_two_threads", test_two_ranks_equal_two_threads, tmp, model):
            t.run("rank_death_resume", test_rank_death_resume, tmp, model, ref)
            t.run("sigterm_layout_resume", test_sigterm_layout_resume, tmp, model)
        t.run("four_shards", test_four_shards, tmp, model)
        t.run("data_mismatch", test_data_mismatch, tmp, model)
        t.run("flag_mismatch", test_flag_mismatch, tmp, model)
        t.run("mpijob_command", test_mpijob_command, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
