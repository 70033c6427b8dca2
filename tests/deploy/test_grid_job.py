#!/usr/bin/env python3
"""test_grid_job.py - the sharded grid search (fmnist-train grid --shard /
--collect) and the command lines of deploy/k8s/grid-job.yaml, on a small
subset of the data (--limit 600 --val 200 --epochs 1).

  - two shards run in parallel plus --collect give the same CSV and Markdown
    tables as one unsharded run (the time sentence aside), and bit-identical
    tensors in every run's weight file;
  - a finished shard run again with --resume repeats no run and writes the
    same rows;
  - the Indexed Job's own command line (args taken from the manifest,
    $(JOB_COMPLETION_INDEX) expanded as the kubelet does, /fmnist mapped to a
    temporary directory) for every index, then the collector Job's init
    container (its wait loop, which must keep waiting while a shard file is
    missing) and its command line, give the tables of an unsharded run;
  - the CLI errors, each a message and exit 1: a bad I/N, --shard with
    --collect, a missing, duplicate or damaged shard, shards of different N or
    settings, a row of the wrong shard, train flags given to --collect, an
    empty or absent directory.
Left out: the Jobs on a cluster (no API server here: scheduling, the shared
volume, retries and evictions are Kubernetes' part) and a full-size grid
(hours).  Skips (exit 77) without the data set.  Prints "N passed, M failed".
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from common import DATA_DIR, ROOT, Runner, expect, find_binary  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: install the Debian package python3-yaml (%s)" % sys.executable)

TRAIN = find_binary("FMNIST_TRAIN", 1, ["build/model/fmnist-train"])
JOB = os.path.join(ROOT, "deploy", "k8s", "grid-job.yaml")
SMALL = ["--limit", "600", "--val", "200", "--epochs", "1"]
FLAGS = ["grid", "--model", "mlp2", "--threads", "1", "--quiet"] + SMALL


def run(args, timeout=600):
    return subprocess.run([TRAIN] + list(args), capture_output=True, text=True, timeout=timeout)


def ok(r, what):
    expect(r.returncode == 0, "%s: exit %d: %s" % (what, r.returncode, (r.stdout + r.stderr)[-600:]))


def fails(r, *needles):
    out = r.stdout + r.stderr
    expect(r.returncode == 1, "expected exit 1, got %d: %s" % (r.returncode, out[-300:]))
    for n in needles:
        expect(n.lower() in out.lower(), "message lacks %r: %s" % (n, out[-400:]))


def parallel(arg_lists):
    """Runs fmnist-train with each argument list at once; returns the results in order."""
    procs = [subprocess.Popen([TRAIN] + a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in arg_lists]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


def tensors(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    return b[8 + n:]


def same_tables(a, b):
    """PREFIX.csv equal byte for byte; PREFIX.md equal but for the time sentence."""
    with open(a + ".csv") as f, open(b + ".csv") as g:
        ca, cb = f.read(), g.read()
    expect(ca == cb, "CSV differs:\n%s\n---\n%s" % (ca, cb))
    expect(len(ca.strip().splitlines()) == 13, "CSV has %d lines, want header + 12" % len(ca.strip().splitlines()))
    with open(a + ".md") as f, open(b + ".md") as g:
        ma, mb = (re.sub(r"Total time [^.]*\.", "Total time T.", x) for x in (f.read(), g.read()))
    expect(ma == mb, "Markdown differs:\n%s\n---\n%s" % (ma, mb))


def same_runs(a, b):
    ra, rb = a + "-runs", b + "-runs"
    names = sorted(f for f in os.listdir(ra) if f.endswith(".safetensors"))
    expect(len(names) == 12, "%s: %d weight files, want 12" % (ra, len(names)))
    expect(names == sorted(f for f in os.listdir(rb) if f.endswith(".safetensors")), "run files differ")
    for n in names:
        expect(tensors(os.path.join(ra, n)) == tensors(os.path.join(rb, n)), "%s: tensors differ" % n)


def shard_rows(path):
    with open(path) as f:
        j = json.load(f)
    return j["settings"], j["rows"]


def test_two_shards(tmp, ref):
    sh = os.path.join(tmp, "sh", "g")
    os.makedirs(os.path.dirname(sh))
    r = parallel([FLAGS + ["--grid-out", sh, "--shard", "%d/2" % i] for i in (0, 1)])
    for i, x in enumerate(r):
        ok(x, "shard %d/2" % i)
    expect(not os.path.exists(sh + ".csv"), "a shard wrote the tables")
    files = sorted(os.listdir(sh + "-shards"))
    expect(files == ["shard-0-of-2.json", "shard-1-of-2.json"], "shard files %r" % files)
    for i in (0, 1):
        _, rows = shard_rows(os.path.join(sh + "-shards", files[i]))
        expect([w["config"] for w in rows] == list(range(i, 12, 2)), "shard %d rows %r" % (i, rows))
    ok(run(["grid", "--collect", sh + "-shards", "--grid-out", sh]), "collect")
    same_tables(ref, sh)
    same_runs(ref, sh)
    # a finished shard again with --resume: no run repeated, the same rows
    before = shard_rows(os.path.join(sh + "-shards", files[0]))
    r = run(FLAGS + ["--grid-out", sh, "--shard", "0/2", "--resume"])
    ok(r, "shard 0/2 --resume")
    expect(r.stdout.count("already finished") == 6, "--resume repeated runs: %s" % r.stdout[-500:])
    expect(shard_rows(os.path.join(sh + "-shards", files[0])) == before, "--resume changed the rows")


def expand(arg, env):
    """The kubelet's $(VAR) expansion of command and args ($$ is a literal $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)


def test_job_manifest(tmp):
    with open(JOB) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    jobs = [d for d in docs if d["kind"] == "Job"]
    shards = [j for j in jobs if j["spec"].get("completionMode") == "Indexed"]
    collect = [j for j in jobs if j["spec"].get("completionMode") != "Indexed"]
    expect(len(shards) == 1 and len(collect) == 1, "want one Indexed Job and one collector Job")
    n = shards[0]["spec"]["completions"]
    expect(shards[0]["spec"]["parallelism"] <= n, "parallelism > completions")
    mount = shards[0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    root = os.path.join(tmp, "volume")
    os.makedirs(root)
    os.symlink(DATA_DIR, os.path.join(root, "data"))

    def local(container, env):
        cmd = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
        cmd = [re.sub(r"(?<![\w./-])%s(?=/|$)" % re.escape(mount), lambda m: root, a, flags=re.M) for a in cmd]
        if cmd[0].endswith("/fmnist-train"):
            cmd[0] = TRAIN
        return cmd

    c = shards[0]["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    expect("--shard" in args and args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/%d" % n,
           "the shard flag must be $(JOB_COMPLETION_INDEX)/completions: %r" % args)
    cores = c["resources"]["requests"]["cpu"]
    expect(args[args.index("--threads") + 1] == str(cores), "--threads %s != the cpu request %s"
           % (args[args.index("--threads") + 1], cores))
    init = collect[0]["spec"]["template"]["spec"]["initContainers"][0]
    wait_cmd = local(init, {})
    expect(wait_cmd[:2] == ["/bin/sh", "-c"], "init container: %r" % wait_cmd[:2])
    script = wait_cmd[2].replace("sleep 30", "sleep 0.1")
    expect(script != wait_cmd[2], "the wait loop's sleep changed: update this test")
    waiter = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # every index, two at a time (two cores); the waiter must wait until the last one
        for first in range(0, n, 2):
            expect(waiter.poll() is None, "the collector's init container stopped waiting before shard %d" % first)
            cmds = [local(c, {"JOB_COMPLETION_INDEX": str(i)}) for i in range(first, min(n, first + 2))]
            for i, r in zip(range(first, n), parallel([x[1:] + SMALL for x in cmds])):
                ok(r, "Job index %d" % i)
        out, _ = waiter.communicate(timeout=20)
        expect(waiter.returncode == 0 and out.count("found") == n, "init container: %r" % out)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    ok(subprocess.run(local(collect[0]["spec"]["template"]["spec"]["containers"][0], {}), capture_output=True,
                      text=True, timeout=120), "collector Job")
    prefix = local(c, {})[local(c, {}).index("--grid-out") + 1]
    # the reference: the same command line, unsharded
    ref_args = local(c, {})[1:]
    i = ref_args.index("--shard")
    del ref_args[i:i + 2]
    ref = os.path.join(tmp, "job-ref", "g")
    os.makedirs(os.path.dirname(ref))
    ref_args[ref_args.index("--grid-out") + 1] = ref
    ok(run(ref_args + SMALL), "unsharded run of the Job's flags")
    same_tables(ref, prefix)


def test_errors(tmp, ref_shards):
    for bad in ("2/2", "1/0", "0/13", "a/2", "-1/2", "1", "1/2/3", "", " 1/2", "0/2x"):
        fails(run(FLAGS + ["--shard", bad]), "--shard", "I/N")
    fails(run(["grid", "--shard"]), "--shard needs a value")
    fails(run(["grid", "--shard", "0/2", "--collect", tmp]), "--collect")
    fails(run(["grid", "--collect", os.path.join(tmp, "absent")]), "cannot read")
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    fails(run(["grid", "--collect", empty]), "no shard files")
    fails(run(["grid", "--collect", ref_shards, "--epochs", "3"]), "--epochs does not apply")
    fails(run(["grid", "--collect", ref_shards, "--model", "mlp3"]), "not --model mlp3")

    def case(name, files, edit=None):
        d = os.path.join(tmp, name)
        os.makedirs(d)
        for src, dst in files:
            shutil.copy(src, os.path.join(d, dst))
        if edit:
            edit(d)
        return run(["grid", "--collect", d, "--grid-out", os.path.join(tmp, name + "-out")])

    s0, s1 = (os.path.join(ref_shards, "shard-%d-of-2.json" % i) for i in (0, 1))
    fails(case("missing", [(s0, "shard-0-of-2.json")]), "shard 1/2 is missing")
    fails(case("duplicate", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json"), (s0, "copy.json")]), "twice")
    other = os.path.join(tmp, "n3", "g")
    os.makedirs(os.path.dirname(other))
    ok(run(FLAGS + ["--grid-out", other, "--shard", "2/3"]), "shard 2/3")
    fails(case("mixed-n", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json"),
                           (other + "-shards/shard-2-of-3.json", "shard-2-of-3.json")]), "share n")
    seed = os.path.join(tmp, "seed", "g")
    os.makedirs(os.path.dirname(seed))
    ok(run(FLAGS + ["--seed", "7", "--grid-out", seed, "--shard", "1/2"]), "shard 1/2 seed 7")
    fails(case("settings", [(s0, "shard-0-of-2.json"), (seed + "-shards/shard-1-of-2.json", "shard-1-of-2.json")]),
          "different settings", '"seed"')

    def cut(d):
        with open(os.path.join(d, "shard-1-of-2.json"), "r+") as f:
            text = f.read()
            f.seek(0)
            f.truncate()
            f.write(text[: len(text) // 2])
    fails(case("damaged", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")], cut), "not valid JSON")

    def edit_json(fn):
        def e(d):
            p = os.path.join(d, "shard-1-of-2.json")
            with open(p) as f:
                j = json.load(f)
            fn(j)
            with open(p, "w") as f:
                json.dump(j, f)
        return e
    fails(case("foreign", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j["rows"][0].update(config=0, learning_rate=0.001, batch_size=128))),
          "does not belong to shard 1/2")
    fails(case("short", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j["rows"].pop())), "lacks configuration 11")
    fails(case("altered", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j["rows"][0].update(learning_rate=0.5))), "not the grid's configuration 1")
    fails(case("no-number", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j["rows"][0].pop("val_accuracy"))), "val_accuracy")
    fails(case("not-shard", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j.pop("format"))), "not a grid shard file")
    fails(case("bad-settings", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j["settings"].update(train_examples=-1))), "damaged shard file")
    fails(case("bad-index", [(s0, "shard-0-of-2.json"), (s1, "shard-1-of-2.json")],
               edit_json(lambda j: j.update(shard=2))), "damaged shard file")


def main():
    have = any(os.path.exists(os.path.join(DATA_DIR, "train-images-idx3-ubyte" + s)) for s in (".gz", ""))
    if not have:
        print("skip: %s absent (apt-get install dataset-fashion-mnist)" % DATA_DIR)
        return 77
    t = Runner()
    tmp = tempfile.mkdtemp(prefix="fmnist-grid-test-")
    try:
        ref = os.path.join(tmp, "ref", "g")
        os.makedirs(os.path.dirname(ref))
        t0 = time.time()
        r = run(FLAGS + ["--grid-out", ref])
        if r.returncode != 0:
            print("FAIL unsharded grid: %s" % (r.stdout + r.stderr)[-600:])
            return 1
        print("     unsharded reference grid: %.1f s" % (time.time() - t0), flush=True)
        t.run("two shards + collect = one run", test_two_shards, tmp, ref)
        t.run("the Job manifest's commands", test_job_manifest, tmp)
        t.run("CLI errors", test_errors, tmp, os.path.join(tmp, "sh", "g-shards"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
