#!/usr/bin/env python3
"""bench-mpi.py - fmnist-train's data-parallel speed-up under mpirun, and its traffic per step.

    tools/bench-mpi.py [--model cnn3] [--limit 8192] [--rounds 3] [--layouts 1x1,2x1,4x1,1x2,2x2]
                       [--train build/model/fmnist-train]

Each layout RxT is R processes (mpirun -np R on this machine, TCP over
loopback; R = 1 runs without mpirun) of T threads.  One epoch on the first
--limit training examples, validation on 1,000, no test set; the figure is
the epoch's training seconds from the history (forward, backward, the
exchange and the optimiser; validation excluded), the median over rounds.
Rounds alternate the layouts so that the noise of a shared machine hits all
alike.  The speed-up is 1x1's seconds / the layout's.  Bytes per step are
what fmnist-train counts (its "mpi:" line): each process sends its T shard
records and receives the other processes' (an all-gather; what goes over
the wire depends on Open MPI's algorithm).  Layouts beyond the machine's
cores oversubscribe it (--oversubscribe), and the table says so.  Prints a
Markdown table for docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_FLAGS = ["--oversubscribe", "--bind-to", "none", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
             "--mca", "oob_tcp_if_include", "lo"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])


def run(train, ranks, threads, args, out):
    cmd = [train, "train"] + args + ["--threads", str(threads), "--out", out]
    if ranks > 1:
        cmd = [shutil.which("mpirun")] + MPI_FLAGS + ["-np", str(ranks)] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("%s failed:\n%s" % (" ".join(cmd), (r.stdout + r.stderr)[-1500:]))
    h = json.load(open(out[: -len(".safetensors")] + ".history.json"))
    seconds = sum(e["train_seconds"] for e in h["history"])
    m = re.search(r"exchanges in ([0-9.]+) s;.* each process sends (\d+) bytes and receives (\d+)", r.stdout)
    return seconds, (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0.0, 0, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn3")
    ap.add_argument("--limit", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layouts", default="1x1,2x1,4x1,1x2,2x2")
    ap.add_argument("--train", default=os.path.join(ROOT, "build", "model", "fmnist-train"))
    a = ap.parse_args()
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found: tools/install-deps.sh build (openmpi-bin)")
    if "mpi: none" in subprocess.run([a.train, "version"], capture_output=True, text=True).stdout:
        sys.exit("%s was built without MPI" % a.train)
    layouts = [tuple(int(x) for x in l.split("x")) for l in a.layouts.split(",")]
    args = ["--model", a.model, "--limit", str(a.limit), "--val", "1000", "--epochs", "1", "--no-test",
            "--seed", "1"]  # not --quiet: rank 0's last lines count the bytes
    cores = os.cpu_count() or 1
    secs = {l: [] for l in layouts}
    waits = {l: [] for l in layouts}
    traffic = {}
    load0 = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="fmnist-bench-mpi-")
    try:
        for k in range(a.rounds):
            for l in layouts:
                s, t = run(a.train, l[0], l[1], args, os.path.join(tmp, "%dx%d.safetensors" % l))
                secs[l].append(s)
                waits[l].append(t[0])
                traffic[l] = t[1:]
                print("round %d  %dx%d  %.2f s" % (k + 1, l[0], l[1], s), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(secs[layouts[0]])
    batch_note = "default batch of %s" % a.model
    print("| processes x threads | shards | train s/epoch (median) | per round | speed-up vs %dx%d | rank 0 s in "
          "exchanges (median) | bytes sent / received per step and process |" % layouts[0])
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for l in layouts:
        med = statistics.median(secs[l])
        over = " (oversubscribed: %d processes x %d threads on %d cores)" % (l[0], l[1], cores) \
            if l[0] * l[1] > cores else ""
        sent, recv = traffic[l]
        print("| %dx%d%s | %d | %.2f | %s | %.2f× | %s | %s |" % (
            l[0], l[1], over, l[0] * l[1], med, " ".join("%.2f" % s for s in secs[l]), base / med,
            "%.2f" % statistics.median(waits[l]) if l[0] > 1 else "—",
            "%d / %d" % (sent, recv) if l[0] > 1 else "—"))
    print("\n%s, --limit %d (%d steps of the %s), %d rounds, %d cores; load average %.1f at the start, %.1f at the "
          "end" % (a.model, a.limit, -(-a.limit // {"mlp2": 512, "mlp3": 128}.get(a.model, 64)), batch_note, a.rounds,
                   cores, load0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
