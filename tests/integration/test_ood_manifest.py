#!/usr/bin/python3
"""test_ood_manifest.py - the out-of-distribution set in tests/data/ood/ is consistent.

Usage: test_ood_manifest.py [PATH/TO/tests/data/ood]

Cheap and without a server: every manifest row names a file that exists,
decodes (PIL) as the format its name says, has a plausible upload size, and
is RGBA with real transparency where its recipe says so; labels are in range
and match the class names (-1 and a non-fashion sort for non-fashion items);
the splits are val/test and no glyph group (one source package's glyph, one
test image, one generated seed) is in both; both halves of every kind and
class are present and about equally large; no file under the set is missing
from the manifest; every source is in LICENSES.md; the whole set stays small
enough to commit.  Needs python3-pil (tools/install-deps.sh test) and fails,
naming it, without it.  Prints "N passed, M failed"; exits 1 on failure.

Left out: regenerating the set (tools/make-ood-set.py needs the fonts and
gives other pixels with other package versions) and classifying it
(tools/eval-ood.py against a running server).
"""
import csv
import os
import sys

from common import CLASSES, Runner, expect

try:
    from PIL import Image
except ImportError:
    print("FAIL python3-pil is not installed (tools/install-deps.sh test)\n0 passed, 1 failed")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
OOD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(HERE), "data", "ood")
FIELDS = ["file", "kind", "label", "class", "source", "glyph", "variant", "licence", "split"]
KINDS = ("drawing", "transformed", "non_fashion")
NON_FASHION = ("scribble", "digit", "object", "noise", "blank")
FORMATS = {".png": "PNG", ".jpg": "JPEG"}
MAX_BYTES = 6_000_000


def read_manifest():
    with open(os.path.join(OOD, "manifest.csv"), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        expect(reader.fieldnames == FIELDS, "columns %s, expected %s" % (reader.fieldnames, FIELDS))
        return list(reader)


def rows_valid(rows):
    bad = []
    seen = set()
    for i, r in enumerate(rows, 2):
        why = []
        if r["file"] in seen:
            why.append("listed twice")
        seen.add(r["file"])
        if os.path.isabs(r["file"]) or ".." in r["file"].split("/") or r["file"].split("/")[0] != r["kind"]:
            why.append("file must be KIND/NAME inside the set")
        if r["kind"] not in KINDS:
            why.append("kind %r" % r["kind"])
        try:
            label = int(r["label"])
        except ValueError:
            label = None
            why.append("label %r is no integer" % r["label"])
        if r["kind"] == "non_fashion":
            if label != -1 or r["class"] not in NON_FASHION:
                why.append("non-fashion needs label -1 and a sort of %s" % (NON_FASHION,))
        elif label is not None and not (0 <= label < 10 and r["class"] == CLASSES[label]):
            why.append("label %s / class %r" % (r["label"], r["class"]))
        if r["split"] not in ("val", "test"):
            why.append("split %r" % r["split"])
        for k in ("source", "glyph", "variant", "licence"):
            if not r[k].strip():
                why.append("empty " + k)
        if why:
            bad.append("line %d (%s): %s" % (i, r["file"], "; ".join(why)))
    expect(not bad, "\n".join(bad[:20]))


def files_decode(rows):
    bad = []
    for r in rows:
        path = os.path.join(OOD, r["file"])
        ext = os.path.splitext(path)[1]
        try:
            with Image.open(path) as im:
                fmt, mode, size = im.format, im.mode, im.size
                im.load()
                alpha = im.getchannel("A").getextrema() if mode == "RGBA" else None
        except (OSError, ValueError) as e:
            bad.append("%s: %s" % (r["file"], e))
            continue
        if FORMATS.get(ext) != fmt:
            bad.append("%s: %s data in a %s file" % (r["file"], fmt, ext))
        if not all(100 <= s <= 1024 for s in size):
            bad.append("%s: %dx%d is no upload size (100..1024 a side)" % ((r["file"],) + size))
        if ("RGBA" in r["variant"]) != (mode == "RGBA"):
            bad.append("%s: mode %s, recipe %r" % (r["file"], mode, r["variant"]))
        if alpha is not None and alpha[0] == 255:
            bad.append("%s: RGBA without a transparent pixel" % r["file"])
    expect(not bad, "%d bad files:\n%s" % (len(bad), "\n".join(bad[:20])))


def no_orphans(rows):
    listed = {r["file"] for r in rows}
    on_disk = set()
    for kind in KINDS:
        for name in os.listdir(os.path.join(OOD, kind)):
            on_disk.add(kind + "/" + name)
    expect(on_disk == listed, "not in the manifest: %s; missing on disk: %s"
           % (sorted(on_disk - listed)[:10], sorted(listed - on_disk)[:10]))


def groups_disjoint(rows):
    halves = {}
    for r in rows:
        halves.setdefault((r["kind"], r["source"], r["glyph"]), set()).add(r["split"])
    both = [g for g, h in halves.items() if len(h) > 1]
    expect(not both, "%d glyph groups in both halves, e.g. %s" % (len(both), both[:5]))


def halves_balanced(rows):
    buckets = {}
    for r in rows:
        b = buckets.setdefault((r["kind"], r["class"]), {"val": 0, "test": 0})
        b[r["split"]] += 1
    bad = ["%s %s: val %d, test %d" % (k + (b["val"], b["test"])) for k, b in sorted(buckets.items())
           if min(b.values()) == 0 or abs(b["val"] - b["test"]) > max(3, (b["val"] + b["test"]) // 4)]
    expect(not bad, "unbalanced: " + "; ".join(bad))
    want = ([("transformed", c) for c in CLASSES] + [("drawing", c) for c in CLASSES if c != "Pullover"]
            + [("non_fashion", c) for c in NON_FASHION])
    missing = [w for w in want if w not in buckets]
    expect(not missing, "no items for %s" % missing)


def sizes_and_counts(rows):
    fashion = sum(1 for r in rows if r["kind"] != "non_fashion")
    expect(200 <= fashion <= 450 and len(rows) - fashion >= 100,
           "%d fashion and %d non-fashion items" % (fashion, len(rows) - fashion))
    total = sum(os.path.getsize(os.path.join(OOD, r["file"])) for r in rows)
    expect(total <= MAX_BYTES, "%d bytes, more than %d" % (total, MAX_BYTES))


def licences_listed(rows):
    with open(os.path.join(OOD, "LICENSES.md"), encoding="utf-8") as f:
        heads = {ln[3:].strip() for ln in f if ln.startswith("## ")}
    missing = sorted({r["source"] for r in rows} - heads)
    expect(not missing, "sources without a LICENSES.md section: %s" % missing)


def main():
    runner = Runner()
    rows = []

    def load():
        rows.extend(read_manifest())
        expect(rows, "the manifest has no rows")
    if not runner.run("manifest reads", load):
        return runner.finish()
    for name, fn in [("rows valid", rows_valid), ("files decode", files_decode), ("no orphan files", no_orphans),
                     ("glyph groups in one half", groups_disjoint), ("halves balanced", halves_balanced),
                     ("counts and size", sizes_and_counts), ("licences listed", licences_listed)]:
        runner.run(name, fn, rows)
    return runner.finish()


if __name__ == "__main__":
    sys.exit(main())
