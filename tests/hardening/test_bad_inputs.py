#!/usr/bin/env python3
"""test_bad_inputs.py - the bad-input corpus and slow clients against the real fmnist-serve.

Usage: test_bad_inputs.py [PATH/TO/fmnist-serve]   (or FMNIST_SERVE=...)
       FMNIST_SERVE_WRAPPER="valgrind ..." runs the server under a wrapper
       (see valgrind.sh); HARDENING_PASSES sets the corpus repeats (6);
       HARDENING_TABLE=FILE writes each case's status as Markdown rows.

1. Every case of corpus.py (about 200: empty bodies, truncated/corrupt/odd
   images and bombs, non-images, bad JSON of every kind, bad multipart, HTTP
   framing, traversal) is sent on its own connection.  Each must get one of
   its documented statuses with a JSON {"error": ...} body (a JSON answer for
   2xx), valid UTF-8, in under 10 s; after each class a normal image is
   classified with the same answer as at the start.  Cases that
   libmicrohttpd answers before any of our code runs (malformed request
   syntax, a head over its 64 KiB pool) are checked for the status only.
2. The corpus is run HARDENING_PASSES (6) times; VmRSS after the third
   pass (warm-up: RSS grows over the first two passes, as each worker
   thread's malloc arena reaches its working set, then stays flat) and
   after the last must differ by less than 1 MiB, and the open descriptors
   must not grow.
3. Slow clients: with --request-timeout 3, 16 slowloris clients (headers
   one byte a second), 16 slow-body clients (a byte a second of a declared
   body) and 8 request-line dribblers are cut at the deadline (between 2.5
   and 7 s) while a normal client classifies images all the time: every
   answer 200, none slower than 1 s.  Descriptors return to the baseline.
Prints one line per test and "N passed, M failed"; exits 1 on any failure.
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import corpus  # noqa: E402
from common import Runner, Server, copy_weights, expect, find_binary, proc_status  # noqa: E402

SERVE = find_binary("FMNIST_SERVE", 1, ["build-hard/server/fmnist-serve", "build/server/fmnist-serve"])
PASSES = int(os.environ.get("HARDENING_PASSES", "7"))
WARMUP = 4  # passes before the RSS baseline: the workers' malloc arenas reach their working set
#            once each worker has had the largest requests.  Connections go to workers by
#            descriptor, and one client after another mostly reuses the same descriptor, so the
#            second worker may meet them only in pass 3 or 4 (one ~2.5 MiB step seen after
#            pass 3 in 1 of ~6 runs; 12 passes stay flat from pass 2 on).
UNDER_WRAPPER = bool(os.environ.get("FMNIST_SERVE_WRAPPER"))
SLOW = 4.0 if UNDER_WRAPPER else 1.0  # valgrind is tens of times slower
TMP = tempfile.mkdtemp(prefix="fmnist-hard-")


def server_pid(s):
    """The server's pid: the wrapper's child when there is one, else the process itself."""
    return s.proc.pid


def normal(port):
    """Classifies the reference image; returns the class id."""
    rs = corpus.final(corpus.parse(corpus.exchange(port, corpus.post("/v1/classify?invert=false",
                                                                      corpus.png_gray(28, 28)), timeout=30 * SLOW)))
    expect(rs and rs[0][0] == 200, "normal request: %r" % (rs[:1],))
    return json.loads(rs[0][2])["predictions"][0]["class_id"]


def check_case(port, case):
    t0 = time.time()
    if callable(case.req):
        rs = case.req(port)
    else:
        rs = corpus.parse(corpus.exchange(port, case.req, timeout=15 * SLOW))
    took = time.time() - t0
    rs = corpus.final(rs)
    where = "%s / %s" % (case.klass, case.name)
    expect(took < 10 * SLOW, "%s took %.1f s" % (where, took))
    if case.lib is None or not case.expect:  # the connection must just be closed
        expect(not rs or rs[0][0] in (400, 505), "%s: %r" % (where, rs[:1]))
        return "closed" if not rs else str(rs[0][0])
    expect(rs, "%s: no answer" % where)
    status, hdr, body = rs[0]
    expect(status in case.expect, "%s: status %d, expected %s: %r" % (where, status, case.expect, body[:200]))
    if case.lib:
        return "%d (libmicrohttpd)" % status
    expect(hdr.get("content-type", "").startswith("application/json"),
           "%s: content type %r: %r" % (where, hdr.get("content-type"), body[:200]))
    try:
        j = json.loads(body.decode("utf-8"))  # strict UTF-8
    except (UnicodeDecodeError, ValueError) as e:
        raise AssertionError("%s: body is not UTF-8 JSON (%s): %r" % (where, e, body[:200]))
    if status >= 400:
        expect(isinstance(j, dict) and isinstance(j.get("error"), str) and len(j["error"]) > 5,
               "%s: no error message: %r" % (where, j))
    if case.check and status == 200:
        expect(case.check(j), "%s: answer check failed: %r" % (where, j))
    return str(status)


def t_corpus(s, cases, stats, table):
    base = normal(s.port)
    classes = []
    for c in cases:
        if c.klass not in classes:
            classes.append(c.klass)
    pid = server_pid(s)
    for p in range(PASSES):
        failures = []
        for klass in classes:
            for c in (c for c in cases if c.klass == klass):
                try:
                    got = check_case(s.port, c)
                    if p == 0:
                        table.append((c.klass, c.name, got))
                except AssertionError as e:
                    failures.append(str(e))
                except OSError as e:
                    failures.append("%s / %s: %r" % (c.klass, c.name, e))
            try:
                expect(s.proc.poll() is None, "the server exited after class %s" % klass)
                expect(normal(s.port) == base, "a normal request after class %s got another answer" % klass)
            except AssertionError as e:
                failures.append(str(e))
                break
        expect(not failures, "%d case(s) failed in pass %d:\n  %s" % (len(failures), p + 1, "\n  ".join(failures)))
        time.sleep(0.3)  # let the connections close
        stats.append(proc_status(pid))
        print("     pass %d: %d cases, VmRSS %d KiB, %d fds" % (p + 1, len(cases), stats[-1][0], stats[-1][1]),
              flush=True)


def t_stable(stats):
    expect(len(stats) > WARMUP, "need more than %d passes (HARDENING_PASSES)" % WARMUP)
    (rss0, fd0), (rss1, fd1) = stats[WARMUP - 1], stats[-1]
    print("     VmRSS after the warm-up (pass %d) %d KiB, after pass %d %d KiB: %+d KiB; fds %d -> %d"
          % (WARMUP, rss0, len(stats), rss1, rss1 - rss0, fd0, fd1), flush=True)
    expect(rss1 - rss0 < 1024, "VmRSS grew %d KiB from pass %d to pass %d" % (rss1 - rss0, WARMUP, len(stats)))
    expect(fd1 <= fd0, "descriptors %d -> %d" % (fd0, fd1))


def t_slow_clients(wdir):
    s = Server(SERVE, ["--weights", wdir, "--static", "", "--threads", "2", "--request-timeout", "3",
                       "--idle-timeout", "2"])
    try:
        normal(s.port)
        time.sleep(0.5)
        fd0 = proc_status(server_pid(s))[1]
        cut = {}
        lock = threading.Lock()

        def drip(label, first, byte):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=1)
            t0 = time.time()
            c.sendall(first)
            try:
                while time.time() - t0 < 20:
                    c.sendall(byte)  # one byte a second: never idle for 2 s
                    try:
                        if c.recv(4096) == b"":
                            break
                    except socket.timeout:
                        pass
            except OSError:
                pass
            with lock:
                cut.setdefault(label, []).append(time.time() - t0)
            c.close()

        threads = []
        for i in range(16):
            threads.append(threading.Thread(target=drip, args=(
                "slowloris headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ", b"a")))
            threads.append(threading.Thread(target=drip, args=(
                "slow body", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                             b"Content-Length: 100000\r\n\r\n\x89PNG", b"z")))
        for i in range(8):
            threads.append(threading.Thread(target=drip, args=("request line", b"P", b"O")))
        for t in threads:
            t.start()
        lat, bad = [], []
        png = corpus.post("/v1/classify?invert=false", corpus.png_gray(28, 28))
        end = time.time() + 8
        while time.time() < end:  # a normal client the whole time
            t0 = time.time()
            try:
                rs = corpus.final(corpus.parse(corpus.exchange(s.port, png, timeout=5)))
                if not rs or rs[0][0] != 200:
                    bad.append(rs[:1])
            except OSError as e:
                bad.append(repr(e))
            lat.append(time.time() - t0)
            time.sleep(0.05)
        for t in threads:
            t.join(25)
        expect(not bad, "normal client during the slow clients: %s" % bad[:3])
        expect(max(lat) < 1.0, "a normal request took %.2f s during the slow clients" % max(lat))
        for label, times in sorted(cut.items()):
            expect(all(2.5 <= x <= 7 for x in times), "%s cut after %s s (deadline 3 s)" %
                   (label, ["%.1f" % x for x in times]))
            print("     %-17s %2d cut after %.1f-%.1f s" % (label, len(times), min(times), max(times)), flush=True)
        expect(sum(len(v) for v in cut.values()) == len(threads), "not every slow client finished")
        print("     normal client: %d requests, all 200, max %.0f ms" % (len(lat), 1000 * max(lat)), flush=True)
        expect(s.wait_log(r"request deadline"), "the deadline is not logged")
        time.sleep(0.5)
        fd1 = proc_status(server_pid(s))[1]
        expect(fd1 <= fd0, "descriptors %d before the slow clients, %d after" % (fd0, fd1))
    finally:
        rc = s.stop()
    expect(rc == 0, "exit status %s" % rc)


def t_sanitizers():
    bad = [ln for srv in Server.all for ln in srv.log()
           if "Sanitizer" in ln or "runtime error:" in ln or "Invalid read" in ln or "Invalid write" in ln]
    expect(not bad, "sanitizer/memcheck reports:\n" + "\n".join(bad[:20]))


def main():
    runner = Runner()
    wdir = os.path.join(TMP, "weights")
    models = copy_weights(wdir, ["mlp2.safetensors"])
    sdir = corpus.make_static(TMP)
    cases = corpus.build()
    args = ["--weights", wdir, "--static", sdir, "--threads", "2", "--max-body-bytes", str(corpus.MAX_BODY),
            "--max-batch", str(corpus.MAX_BATCH), "--default-model", models[0]]
    if UNDER_WRAPPER:
        args += ["--request-timeout", "600", "--idle-timeout", "600"]
    else:
        args += ["--idle-timeout", str(corpus.IDLE)]
    s = Server(SERVE, args)
    stats, table = [], []
    try:
        runner.run("corpus (%d cases x %d)" % (len(cases), PASSES), t_corpus, s, cases, stats, table)
        if os.environ.get("HARDENING_TABLE"):  # the status of each case, as Markdown rows
            with open(os.environ["HARDENING_TABLE"], "w") as f:
                for klass, name, got in table:
                    f.write("| %s | %s | %s |\n" % (klass, name.replace("|", "\\|"), got))
        if not UNDER_WRAPPER:  # under valgrind RSS means nothing
            runner.run("RSS and fds stable", t_stable, stats)
    finally:
        rc = s.stop(timeout=120 if UNDER_WRAPPER else 30)
    runner.run("clean exit", lambda: expect(rc == 0, "exit status %s" % rc))
    if not UNDER_WRAPPER or os.environ.get("HARDENING_SLOW_UNDER_WRAPPER"):
        runner.run("slow clients", t_slow_clients, wdir)
    runner.run("no sanitizer reports", t_sanitizers)
    shutil.rmtree(TMP, ignore_errors=True)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
