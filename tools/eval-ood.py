#!/usr/bin/python3
"""eval-ood.py - measures a running fmnist-serve on the out-of-distribution set (issue #20).

    /usr/bin/python3 tools/eval-ood.py --url http://127.0.0.1:8080 [--model NAME]... [--split val|test|all]
                                       [--threshold P] [--fmnist-test N] [--json OUT]
                                       [--manifest tests/data/ood/manifest.csv] [--timeout S]

Sends every item of the manifest's chosen split (default: test), as the raw
file body, to POST /v1/classify?model=NAME for each model named (default:
every model of GET /v1/models), and prints Markdown tables per model:
accuracy on the fashion items (overall, per kind, per class; an item the
server refuses counts as wrong), and the "not sure" flag: the share of
non-fashion items flagged (overall and per sort) and of fashion items
flagged, over the items the server answered (refusals are listed).  The flag is the prediction's boolean "uncertain" where the server
sends one; otherwise, with --threshold P, an answer is flagged when its top
probability is below P; with neither, the flag rows are left out.  A sweep
over fixed thresholds (top probability below 0.5 ... 0.99) is always
printed, from the probabilities alone.

--fmnist-test N also sends the first N Fashion-MNIST test images (28x28 gray
PNGs, /usr/share/datasets/fashion-mnist or $FMNIST_DATA) and reports their
accuracy and how many are flagged: the flag's cost on real test images.
--json OUT writes the whole report, every item's answer included.

Python 3 standard library only (PNG and IDX helpers from
tests/integration/common.py).  Exit status: 0 when every request was
answered (an HTTP error answer for an item is part of the result), 1 when
the server cannot be reached or answers what is not fmnist's JSON, 2 for
bad arguments or a bad manifest.

Left out: concurrency (one keep-alive connection; a few thousand requests
take seconds), multipart batches (each item is one upload, as a user sends
it), choosing the threshold (that is the lead's calibration work, on the
validation split).
"""
import argparse
import csv
import http.client
import json
import os
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from common import CLASSES, png_gray, read_test_images  # noqa: E402

SWEEP = [0.5, 0.7, 0.9, 0.95, 0.99]
NON_FASHION = ["scribble", "digit", "object", "noise", "blank"]
TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


class Unreachable(Exception):
    pass


class Client:
    """One keep-alive HTTP/1.1 connection, reopened once if the server closed it."""

    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError("--url must look like http://HOST:PORT, got %r" % url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        self.base = u.path.rstrip("/")
        self.conn = None

    def request(self, method, path, body=None, ctype=None):
        headers = {"Content-Type": ctype} if ctype else {}
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, self.base + path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                if attempt:
                    raise Unreachable("%s %s:%d%s: %s" % (method, self.host, self.port, path, e))
        try:
            return resp.status, json.loads(data)
        except ValueError:
            raise Unreachable("%s %s answered %d with no JSON: %r" % (method, path, resp.status, data[:200]))


def load_manifest(path, split):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        print("eval-ood: cannot read the manifest: %s" % e, file=sys.stderr)
        sys.exit(2)
    need = {"file", "kind", "label", "class", "split"}
    if not rows or not need <= set(rows[0]):
        print("eval-ood: %s has no rows with the columns %s" % (path, ", ".join(sorted(need))), file=sys.stderr)
        sys.exit(2)
    base = os.path.dirname(os.path.abspath(path))
    for r in rows:
        r["path"] = os.path.join(base, r["file"])
        r["label"] = int(r["label"])
    return [r for r in rows if split == "all" or r["split"] == split]


def classify(client, model, body, ctype):
    """(answer dict) for one upload: status, label id, top probability, server flag, error."""
    q = "/v1/classify?model=" + urllib.parse.quote(model)
    status, doc = client.request("POST", q, body, ctype)
    if status != 200:
        return {"status": status, "error": doc.get("error") if isinstance(doc, dict) else str(doc)}
    try:
        p = doc["predictions"][0]
        probs = [float(p["probabilities"][c]) for c in CLASSES]
    except (KeyError, IndexError, TypeError, ValueError):
        raise Unreachable("POST %s: 200 without predictions[0].probabilities: %r" % (q, str(doc)[:200]))
    top = max(range(len(CLASSES)), key=lambda k: probs[k])
    out = {"status": 200, "pred": top, "top_p": probs[top]}
    if "uncertain" in p:
        out["uncertain"] = bool(p["uncertain"])
    return out


def flagged(a, threshold):
    """The flag of one answer: the server's, else top probability < threshold, else None."""
    if a["status"] != 200:
        return None
    if "uncertain" in a:
        return a["uncertain"]
    if threshold is not None:
        return a["top_p"] < threshold
    return None


def frac(num, den):
    return None if den == 0 else num / den


def pct(x):
    return "-" if x is None else "%.1f %%" % (100 * x)


def summarise(items, answers, threshold):
    """Accuracy and flag figures for one model's answers (parallel to items)."""
    fashion = [(it, a) for it, a in zip(items, answers) if it["kind"] != "non_fashion"]
    nonf = [(it, a) for it, a in zip(items, answers) if it["kind"] == "non_fashion"]

    def acc(pairs):
        return {"n": len(pairs), "correct": sum(1 for it, a in pairs if a.get("pred") == it["label"]),
                "accuracy": frac(sum(1 for it, a in pairs if a.get("pred") == it["label"]), len(pairs))}

    def flag_rate(pairs, thr=threshold, use_server=True):
        fl = [a.get("uncertain") if use_server and "uncertain" in a else
              (None if thr is None or a["status"] != 200 else a["top_p"] < thr) for _, a in pairs]
        known = [f for f in fl if f is not None]
        return {"n": len(known), "flagged": sum(known), "rate": frac(sum(known), len(known))}

    s = {"fashion": acc(fashion), "errors": sum(1 for a in answers if a["status"] != 200)}
    s["per_kind"] = {k: acc([(it, a) for it, a in fashion if it["kind"] == k]) for k in ("drawing", "transformed")}
    s["per_class"] = {c: acc([(it, a) for it, a in fashion if it["label"] == i]) for i, c in enumerate(CLASSES)}
    s["per_kind_class"] = {k: {c: acc([(it, a) for it, a in fashion if it["kind"] == k and it["label"] == i])
                               for i, c in enumerate(CLASSES)} for k in ("drawing", "transformed")}
    s["flag"] = {"non_fashion": flag_rate(nonf), "fashion": flag_rate(fashion),
                 "non_fashion_by_sort": {c: flag_rate([(it, a) for it, a in nonf if it["class"] == c]) for c in NON_FASHION},
                 "fashion_by_kind": {k: flag_rate([(it, a) for it, a in fashion if it["kind"] == k])
                                     for k in ("drawing", "transformed")}}
    s["sweep"] = [{"threshold": t, "non_fashion": flag_rate(nonf, t, False)["rate"],
                   "fashion": flag_rate(fashion, t, False)["rate"]} for t in SWEEP]
    calls = {}
    for it, a in nonf:
        if a["status"] == 200:
            calls[CLASSES[a["pred"]]] = calls.get(CLASSES[a["pred"]], 0) + 1
    s["non_fashion_called"] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
    answered = [a["top_p"] for _, a in nonf if a["status"] == 200]
    s["non_fashion_mean_top_p"] = frac(sum(answered), len(answered))
    return s


def eval_fmnist_test(client, model, n, threshold):
    got = read_test_images(n)
    if got is None:
        print("eval-ood: --fmnist-test needs the Fashion-MNIST test set (dataset-fashion-mnist or $FMNIST_DATA)",
              file=sys.stderr)
        sys.exit(2)
    images, labels = got
    answers = [classify(client, model, png_gray(28, 28, px), "image/png") for px in images]
    ok = [a for a in answers if a["status"] == 200]
    fl = [flagged(a, threshold) for a in ok]
    known = [f for f in fl if f is not None]
    return {"n": len(images), "errors": len(answers) - len(ok),
            "accuracy": frac(sum(1 for a, y in zip(answers, labels) if a.get("pred") == y), len(images)),
            "flagged": frac(sum(known), len(known)) if known else None,
            "sweep": [{"threshold": t, "rate": frac(sum(1 for a in ok if a["top_p"] < t), len(ok))} for t in SWEEP]}


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def report(res, args, flag_source):
    models = res["models"]
    any_model = next(iter(models.values()))
    print("# Out-of-distribution evaluation: split %s, %d items (%s)\n" % (
        args.split, res["n_items"], ", ".join("%s %d" % kv for kv in res["n_by_kind"].items())))
    print("Accuracy on the fashion items (a refused upload counts as wrong):\n")
    print(table(["model", "fashion", "drawing", "transformed", "errors"] +
                (["FMNIST test"] if args.fmnist_test else []),
                [[m, pct(s["fashion"]["accuracy"]), pct(s["per_kind"]["drawing"]["accuracy"]),
                  pct(s["per_kind"]["transformed"]["accuracy"]), s["errors"]] +
                 ([pct(s["fmnist_test"]["accuracy"])] if args.fmnist_test else []) for m, s in models.items()]))
    print("\nPer class, drawings and transformed test images together (n = %s):\n" %
          " / ".join(str(any_model["per_class"][c]["n"]) for c in CLASSES))
    print(table(["model"] + CLASSES, [[m] + [pct(s["per_class"][c]["accuracy"]) for c in CLASSES]
                                      for m, s in models.items()]))
    for kind in ("drawing", "transformed"):
        print("\nPer class, %s only (n = %s):\n" % (kind, " / ".join(
            str(any_model["per_kind_class"][kind][c]["n"]) for c in CLASSES)))
        print(table(["model"] + CLASSES, [[m] + [pct(s["per_kind_class"][kind][c]["accuracy"]) for c in CLASSES]
                                          for m, s in models.items()]))
    if flag_source:
        print("\nFlagged (%s; shares of the answered items):\n" % flag_source)
        print(table(["model", "non-fashion"] + NON_FASHION + ["fashion", "drawing", "transformed"] +
                    (["FMNIST test"] if args.fmnist_test else []),
                    [[m, pct(s["flag"]["non_fashion"]["rate"])] +
                     [pct(s["flag"]["non_fashion_by_sort"][c]["rate"]) for c in NON_FASHION] +
                     [pct(s["flag"]["fashion"]["rate"])] +
                     [pct(s["flag"]["fashion_by_kind"][k]["rate"]) for k in ("drawing", "transformed")] +
                     ([pct(s["fmnist_test"]["flagged"])] if args.fmnist_test else []) for m, s in models.items()]))
    else:
        print("\nFlagged: the server sends no \"uncertain\" field and no --threshold was given (see the sweep).")
    print("\nSweep: flagged when the top probability is below P (from the probabilities alone):\n")
    rows = []
    for m, s in models.items():
        for i, sw in enumerate(s["sweep"]):
            rows.append([m, sw["threshold"], pct(sw["non_fashion"]), pct(sw["fashion"])] +
                        ([pct(s["fmnist_test"]["sweep"][i]["rate"])] if args.fmnist_test else []))
    print(table(["model", "P", "non-fashion", "fashion"] + (["FMNIST test"] if args.fmnist_test else []), rows))
    print("\nWhat the non-fashion items are called, and their mean top probability:\n")
    print(table(["model", "mean top p", "labels given"],
                [[m, "%.3f" % s["non_fashion_mean_top_p"] if s["non_fashion_mean_top_p"] is not None else "-",
                  ", ".join("%s %d" % kv for kv in s["non_fashion_called"].items())] for m, s in models.items()]))
    errs = [(m, it) for m, s in models.items() for it in s["items"] if it["status"] != 200]
    if errs:
        print("\nRefused uploads:\n")
        for m, it in errs:
            print("- %s %s: %d %s" % (m, it["file"], it["status"], it.get("error")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="fmnist-serve base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", action="append", help="model to evaluate (repeatable; default: every loaded model)")
    ap.add_argument("--split", choices=["val", "test", "all"], default="test", help="manifest split (default test)")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "tests", "data", "ood", "manifest.csv"))
    ap.add_argument("--threshold", type=float, help="flag when the top probability is below P "
                    "(used only when the server sends no \"uncertain\" field)")
    ap.add_argument("--fmnist-test", type=int, default=0, metavar="N",
                    help="also send the first N Fashion-MNIST test images as PNG")
    ap.add_argument("--json", metavar="OUT", help="write the whole report as JSON")
    ap.add_argument("--timeout", type=float, default=30, help="seconds per request (default 30)")
    args = ap.parse_args()
    if args.threshold is not None and not 0 < args.threshold <= 1:
        ap.error("--threshold must be in (0, 1]")
    if not 0 <= args.fmnist_test <= 10000:
        ap.error("--fmnist-test must be from 0 to 10000")
    try:
        client = Client(args.url, args.timeout)
    except ValueError as e:
        ap.error(str(e))
    items = load_manifest(args.manifest, args.split)
    if not items:
        print("eval-ood: split %s of %s is empty" % (args.split, args.manifest), file=sys.stderr)
        sys.exit(2)
    bodies = []
    for it in items:
        try:
            with open(it["path"], "rb") as f:
                bodies.append(f.read())
        except OSError as e:
            print("eval-ood: %s: %s" % (it["file"], e), file=sys.stderr)
            sys.exit(2)
    try:
        status, doc = client.request("GET", "/v1/models")
        if status != 200 or "models" not in doc:
            raise Unreachable("GET /v1/models answered %d: %s" % (status, doc.get("error", doc)))
        loaded = [m["name"] for m in doc["models"]]
        names = args.model or loaded
        unknown = [m for m in names if m not in loaded]
        if unknown:
            print("eval-ood: not loaded: %s (loaded: %s)" % (", ".join(unknown), ", ".join(loaded)), file=sys.stderr)
            sys.exit(2)
        res = {"url": args.url, "split": args.split, "manifest": os.path.relpath(args.manifest, ROOT),
               "threshold": args.threshold, "n_items": len(items), "n_by_kind": {}, "models": {}}
        for it in items:
            res["n_by_kind"][it["kind"]] = res["n_by_kind"].get(it["kind"], 0) + 1
        server_flag = False
        for m in names:
            answers = [classify(client, m, b, TYPES.get(os.path.splitext(it["file"])[1].lower(),
                                                        "application/octet-stream"))
                       for it, b in zip(items, bodies)]
            server_flag = server_flag or any("uncertain" in a for a in answers)
            s = summarise(items, answers, args.threshold)
            if args.fmnist_test:
                s["fmnist_test"] = eval_fmnist_test(client, m, args.fmnist_test, args.threshold)
            s["items"] = [dict({k: it[k] for k in ("file", "kind", "label", "class", "split")}, **a,
                               flagged=flagged(a, args.threshold)) for it, a in zip(items, answers)]
            res["models"][m] = s
    except Unreachable as e:
        print("eval-ood: %s (is fmnist-serve running at %s?)" % (e, args.url), file=sys.stderr)
        sys.exit(1)
    flag_source = ("the server's \"uncertain\"" if server_flag else
                   "top probability < %g" % args.threshold if args.threshold is not None else None)
    res["flag_source"] = flag_source
    report(res, args, flag_source)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
