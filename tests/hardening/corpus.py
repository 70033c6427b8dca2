"""corpus.py - the bad-input corpus of the hardening tests, generated here.

Shared by test_bad_inputs.py (each case against the running server) and
valgrind.sh (the same corpus under memcheck).  Images are built with the
standard library (PNG, GIF, BMP, PNM writers below); the four JPEGs come
from data/ (made once with Pillow by data/make_fixtures.py).

A case is Case(klass, name, request, expect, lib):
  request  the raw bytes of one HTTP/1.1 request (Connection: close), or a
           callable(port) -> list of (status, headers, body) for the cases
           that need a conversation (pipelining, 100-continue, chunked)
  expect   the statuses allowed (documented in server/handlers.c)
  lib      the answer comes from libmicrohttpd itself, before any code of
           ours runs: the status is checked, the body is the library's
           HTML (documented limitation); None: the connection is closed
           without an answer
"""
import json
import os
import socket
import struct
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_BODY = 1 << 20  # the server under test runs with --max-body-bytes MAX_BODY
MAX_BATCH = 16      # and --max-batch MAX_BATCH
IDLE = 3            # and --idle-timeout IDLE (a half-closed upload waits for it)


def data(name):
    with open(os.path.join(HERE, "data", name), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ images

def _chunk(kind, payload, crc=None):
    c = zlib.crc32(kind + payload) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", c)


def png(w, h, rows, depth=8, ctype=0, interlace=0, plte=None, idat=None, ihdr_crc=None, idat_crc=None):
    """A PNG from already-filtered scanline bytes (rows), or a given IDAT payload."""
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace),
                                        ihdr_crc)
    if plte:
        out += _chunk(b"PLTE", plte)
    out += _chunk(b"IDAT", idat if idat is not None else zlib.compress(rows, 9), idat_crc)
    return out + _chunk(b"IEND", b"")


def shape(w, h):
    """A light garment-like shape on black: w*h gray bytes."""
    px = bytearray(w * h)
    for y in range(h // 6, h - h // 6):
        for x in range(w // 4, w - w // 4):
            px[y * w + x] = 160 + (x + y) % 80
    return bytes(px)


def png_gray(w, h, px=None):
    px = shape(w, h) if px is None else px
    return png(w, h, b"".join(b"\0" + px[y * w:(y + 1) * w] for y in range(h)))


def png_gray16(w, h):
    px = shape(w, h)
    return png(w, h, b"".join(b"\0" + b"".join(struct.pack(">H", v * 257) for v in px[y * w:(y + 1) * w])
                              for y in range(h)), depth=16)


def png_palette(w, h):
    px = shape(w, h)
    plte = b"".join(bytes((v, v // 2, 255 - v)) for v in range(256))
    return png(w, h, b"".join(b"\0" + px[y * w:(y + 1) * w] for y in range(h)), ctype=3, plte=plte)


def png_rgba(w, h):
    px = shape(w, h)
    return png(w, h, b"".join(b"\0" + b"".join(bytes((v, v, v, 255 if v else 0)) for v in px[y * w:(y + 1) * w])
                              for y in range(h)), ctype=6)


def png_interlaced(w, h):
    """Adam7-interlaced 8-bit gray."""
    px = shape(w, h)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        cols = list(range(x0, w, dx))
        if not cols:
            continue
        for y in range(y0, h, dy):
            raw += b"\0" + bytes(px[y * w + x] for x in cols)
    return png(w, h, raw, interlace=1)


def png_bomb(w, h):
    """IHDR claims w x h; the IDAT is a few bytes of compressed zeros."""
    return png(w, h, None, idat=zlib.compress(b"\0" * 4096, 9))


def png_zero_bomb(w, h):
    """A real, valid w x h all-black PNG: tiny file, w*h pixels decoded."""
    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return png(w, h, None, idat=idat)


def gif(frames, w, h, loop=False, lzw_min=7):
    """GIF89a with a 128-gray palette; each frame w*h bytes (values < 128).
    Uncompressed LZW: 8-bit codes, a clear code every 126 literals."""
    pal = b"".join(bytes((v * 2, v * 2, v * 2)) for v in range(128))
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF6, 0, 0) + pal  # global table of 2^(6+1) entries
    if loop:
        out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    clear, end = 1 << lzw_min, (1 << lzw_min) + 1
    for px in frames:
        codes = [clear]
        for i, v in enumerate(px):
            if i and i % 126 == 0:
                codes.append(clear)
            codes.append(v)
        codes.append(end)
        stream = bytes(codes)
        blocks = b"".join(bytes((len(stream[i:i + 255]),)) + stream[i:i + 255] for i in range(0, len(stream), 255))
        out += b"!\xf9\x04\x04\x0a\x00\x00\x00"  # graphic control: 0.1 s
        out += b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + bytes((lzw_min,)) + blocks + b"\0"
    return out + b";"


def gif_frames(w, h, n):
    base = shape(w, h)
    return [bytes((v >> 1) if (i + k) % 7 else 0 for i, v in enumerate(base)) for k in range(n)]


def bmp24(w, h, height_field=None):
    row = (w * 3 + 3) & ~3
    px = shape(w, h)
    pix = b"".join(b"".join(bytes((v, v, v)) for v in px[y * w:(y + 1) * w]).ljust(row, b"\0")
                   for y in reversed(range(h)))
    hf = h if height_field is None else height_field
    info = struct.pack("<IiiHHIIiiII", 40, w, hf, 1, 24, 0, len(pix), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pix), 0, 0, 54) + info + pix


def pgm(w, h):
    return b"P5\n%d %d\n255\n" % (w, h) + shape(w, h)


def jpeg_dims(j, w, h):
    """The JPEG j with its SOF0/SOF2 frame header claiming w x h."""
    b = bytearray(j)
    i = 2
    while i + 4 < len(b):
        assert b[i] == 0xFF
        marker, seglen = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC2):
            b[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        i += 2 + seglen
    raise ValueError("no SOF")


def flip(b, i):
    x = bytearray(b)
    x[i] ^= 0x01
    return bytes(x)


# ------------------------------------------------------------------ HTTP

def request(method, path, body=b"", ctype=None, headers=(), version=b"HTTP/1.1", close=True):
    h = b"%s %s %s\r\nHost: 127.0.0.1\r\n" % (method.encode(), path if isinstance(path, bytes) else path.encode(),
                                              version)
    if ctype:
        h += b"Content-Type: %s\r\n" % ctype.encode()
    if body or method in ("POST", "PUT"):
        h += b"Content-Length: %d\r\n" % len(body)
    for k in headers:
        h += k + b"\r\n"
    if close:
        h += b"Connection: close\r\n"
    return h + b"\r\n" + body


def post(path, body, ctype="application/octet-stream", **kw):
    return request("POST", path, body, ctype, **kw)


def post_json(path, obj_or_text, **kw):
    body = obj_or_text if isinstance(obj_or_text, bytes) else (
        obj_or_text.encode() if isinstance(obj_or_text, str) else json.dumps(obj_or_text).encode())
    return post(path, body, "application/json", **kw)


def exchange(port, data, timeout=10, shut=False, pace=None):
    """Sends data, reads until the server closes (or timeout); returns the bytes."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if pace:
            for i in range(0, len(data), pace[0]):
                c.sendall(data[i:i + pace[0]])
                time.sleep(pace[1])
        else:
            try:
                c.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before the whole request was sent: read the answer
        if shut:
            c.shutdown(socket.SHUT_WR)
        out = b""
        end = time.time() + timeout
        while time.time() < end:
            try:
                b = c.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            out += b
        return out
    finally:
        c.close()


def parse(buf):
    """Every complete response in buf: [(status, {lower-case header: value}, body)].
    Interim 1xx answers are included."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/"):
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        n = int(hdr.get("content-length", "0")) if status >= 200 else 0
        out.append((status, hdr, rest[:n]))
        buf = rest[n:]
    return out


def final(responses):
    return [r for r in responses if r[0] >= 200]


# ------------------------------------------------------------------ the corpus

class Case:
    def __init__(self, klass, name, req, expect, lib=False, check=None):
        self.klass, self.name, self.req, self.lib, self.check = klass, name, req, lib, check
        self.expect = (expect,) if isinstance(expect, int) else tuple(expect)


def _conversation(port, parts, timeout=10):
    """Sends parts [(bytes, pause_s)] on one connection; returns the parsed responses."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        for data, pause in parts:
            c.sendall(data)
            if pause:
                time.sleep(pause)
        end = time.time() + timeout
        c.settimeout(0.5)
        while time.time() < end:
            try:
                b = c.recv(65536)
            except socket.timeout:
                if parse(out) and final(parse(out)) and len(final(parse(out))) >= 1 and b"Connection: close" in out:
                    break
                continue
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
    finally:
        c.close()
    return parse(out)


def pipelined(port):
    reqs = (request("GET", "/healthz", close=False) + post("/v1/classify?invert=false", png_gray(28, 28), close=False)
            + request("GET", "/v1/nope", close=False) + request("GET", "/ping"))
    rs = _conversation(port, [(reqs, 0)])
    assert [r[0] for r in rs] == [200, 200, 404, 200], "pipelined statuses %s" % [r[0] for r in rs]
    assert json.loads(rs[1][2])["predictions"], "pipelined classify answer"
    return rs


def expect_continue(port):
    body = png_gray(28, 28)
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % len(body))
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        c.sendall(head)
        first = c.recv(4096)
        assert first.startswith(b"HTTP/1.1 100"), "no 100 Continue: %r" % first[:100]
        c.sendall(body)
        out = first
        while True:
            b = c.recv(65536)
            if not b:
                break
            out += b
    finally:
        c.close()
    return parse(out)


def expect_continue_over(port):
    """Expect: 100-continue with a Content-Length over the cap: 413 and no 100."""
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % (MAX_BODY + 1))
    rs = parse(exchange(port, head, timeout=5))
    assert rs and rs[0][0] == 413, "over-cap 100-continue answered %s" % [r[0] for r in rs]
    return rs


def chunked(port, total, chunk=65536, bad=False):
    head = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    body = png_gray(28, 28) if total is None else b"\x89PNG" + b"\0" * (total - 4)
    enc = b""
    for i in range(0, len(body), chunk):
        part = body[i:i + chunk]
        enc += (b"zz" if bad else b"%x" % len(part)) + b"\r\n" + part + b"\r\n"
    enc += b"0\r\n\r\n"
    return parse(exchange(port, head + enc, timeout=10))


def build():
    cases = []

    def add(*a, **kw):
        cases.append(Case(*a, **kw))

    C = "/v1/classify?invert=false"
    good = png_gray(28, 28)
    big = png_gray(300, 200)
    jp = {n: data(n + ".jpg") for n in ("gray", "rgb", "progressive", "cmyk")}
    anim = gif(gif_frames(40, 30, 3), 40, 30, loop=True)

    # -- empty bodies, everywhere a body is read
    k = "empty bodies"
    add(k, "classify, no body", post(C, b""), 400)
    add(k, "classify, image/png, no body", post(C, b"", "image/png"), 400)
    add(k, "classify, JSON, no body", post(C, b"", "application/json"), 400)
    add(k, "KServe infer, no body", post("/v2/models/mlp2/infer", b"", "application/json"), 400)
    add(k, "TF predict, no body", post("/v1/models/mlp2:predict", b"", "application/json"), 400)
    add(k, "TorchServe, no body", post("/predictions/mlp2", b""), 400)
    add(k, "multipart, no body", post(C, b"", "multipart/form-data; boundary=x"), 400)

    # -- images: truncated, corrupt, odd sizes, odd formats
    k = "PNG"
    add(k, "signature only", post(C, good[:8]), 400)
    add(k, "cut inside IHDR", post(C, good[:20]), 400)
    add(k, "truncated at half", post(C, big[:len(big) // 2]), 400)
    add(k, "truncated before IEND", post(C, big[:-12]), (200, 400))  # libpng may not need IEND
    add(k, "wrong IHDR CRC", post(C, png(28, 28, b"\0" * 29 * 28, ihdr_crc=0)), 400)
    add(k, "wrong IDAT CRC", post(C, png(28, 28, b"\0" * 29 * 28, idat_crc=0x12345678)), 400)
    add(k, "flipped byte in IDAT data", post(C, flip(big, 60)), 400)
    add(k, "bad filter type", post(C, png(28, 28, b"\x09" * 29 * 28)), 400)
    add(k, "zero width", post(C, png(0, 28, b"")), 400)
    add(k, "1x1", post(C, png_gray(1, 1, b"\xff")), 200)
    add(k, "1x100000", post(C, png_gray(1, 100000, b"\x80" * 100000)), 200)
    add(k, "100000x1", post(C, png_gray(100000, 1, b"\x80" * 100000)), 200)
    add(k, "claims 100000x100000 (bomb)", post(C, png_bomb(100000, 100000)), 413)
    add(k, "claims 2^31-1 x 2^31-1", post(C, png_bomb(0x7FFFFFFF, 0x7FFFFFFF)), (400, 413))
    add(k, "5000x5000 of zeros, 30 KB (over --max-pixels)", post(C, png_zero_bomb(5000, 5000)), 413)
    add(k, "16-bit gray", post(C, png_gray16(40, 40)), 200)
    add(k, "palette", post(C, png_palette(40, 40)), 200)
    add(k, "RGBA", post(C, png_rgba(40, 40)), 200)
    add(k, "Adam7 interlaced", post(C, png_interlaced(37, 41)), 200)
    add(k, "palette index out of range", post(C, png(4, 4, b"\0\x05\x05\x05\x05" * 4, ctype=3,
                                                    plte=b"\0\0\0\xff\xff\xff")), (200, 400))
    k = "JPEG"
    add(k, "gray baseline", post(C, jp["gray"]), 200)
    add(k, "RGB baseline", post(C, jp["rgb"]), 200)
    add(k, "progressive", post(C, jp["progressive"]), 200)
    add(k, "CMYK (Adobe, 4 components)", post(C, jp["cmyk"]), (200, 415))
    add(k, "SOI only", post(C, jp["rgb"][:2] + b"\xff"), 400)
    add(k, "truncated at half", post(C, jp["rgb"][:len(jp["rgb"]) // 2]), 400)
    add(k, "truncated after the header", post(C, jp["rgb"][:200]), 400)
    add(k, "claims 65535x65535", post(C, jpeg_dims(jp["rgb"], 65535, 65535)), 413)
    add(k, "claims 0x0", post(C, jpeg_dims(jp["rgb"], 0, 0)), 400)
    k = "GIF"
    add(k, "single frame", post(C, gif(gif_frames(40, 30, 1), 40, 30)), 200)
    add(k, "animated, 3 frames", post(C, anim), 200)
    one = gif(gif_frames(40, 30, 1), 40, 30)
    add(k, "truncated inside the image data", post(C, one[:len(one) // 2]), 400)
    add(k, "animated, cut in the 2nd frame", post(C, anim[:len(anim) * 3 // 5]), (200, 400))
    add(k, "header only", post(C, anim[:13]), 400)
    add(k, "claims 65535x65535", post(C, gif([b"\0"], 65535, 65535)), (400, 413))
    k = "BMP/PNM"
    add(k, "BMP 24-bit", post(C, bmp24(30, 20)), 200)
    add(k, "BMP top-down", post(C, bmp24(30, 20, height_field=-20)), 200)
    add(k, "BMP truncated", post(C, bmp24(30, 20)[:100]), 400)
    add(k, "BMP claims 100000x100000", post(C, bmp24(30, 20)[:18] + struct.pack("<ii", 100000, 100000)
                                          + bmp24(30, 20)[26:]), 413)
    add(k, "PGM", post(C, pgm(30, 20)), 200)
    add(k, "PGM claims 100000x100000", post(C, b"P5\n100000 100000\n255\n" + b"\0" * 100), 413)
    add(k, "PGM truncated", post(C, pgm(30, 20)[:40]), 400)
    k = "not images"
    add(k, "text as image/png", post(C, b"hello, this is not an image\n", "image/png"), 415)
    add(k, "HTML as image/jpeg", post(C, b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
                                      "image/jpeg"), 415)
    add(k, "text/plain", post(C, b"just text", "text/plain"), 415)
    add(k, "random bytes", post(C, bytes((i * 37 + 11) % 256 for i in range(4096))), 415)
    add(k, "PNG signature only, as JSON type", post(C, good[:8], "application/json"), 400)
    add(k, "TorchServe, HTML", post("/predictions/mlp2", b"<html></html>", "text/html"), 415)

    # -- JSON
    k = "JSON"
    z = [0.0] * 784
    add(k, "instances: a string", post_json(C, {"instances": "x"}), 422)
    add(k, "instances: numbers as strings", post_json(C, {"instances": [["0.5"] * 784]}), 422)
    add(k, "instances: booleans", post_json(C, {"instances": [[True] * 784]}), 422)
    add(k, "instances: null", post_json(C, {"instances": [None]}), 422)
    add(k, "instances: empty", post_json(C, {"instances": []}), 422)
    add(k, "783 values", post_json(C, {"instances": [z[:783]]}), 422)
    add(k, "785 values", post_json(C, {"instances": [z + [0.0]]}), 422)
    add(k, "27x28 rows", post_json(C, {"instances": [[[0.0] * 28] * 27]}), 422)
    add(k, "ragged rows", post_json(C, {"instances": [[[0.0] * 28] * 27 + [[0.0] * 29]]}), 422)
    add(k, "1x784x1", post_json(C, {"instances": [[[[v] for v in z]]]}), (200, 422))
    add(k, "NaN literal", post_json(C, '{"instances": [[' + ",".join(["NaN"] * 784) + ']]}'), 400)
    add(k, "Infinity literal", post_json(C, '{"instances": [[' + ",".join(["Infinity"] * 784) + ']]}'), 400)
    add(k, "1e999 (overflows)", post_json(C, '{"instances": [[' + ",".join(["1e999"] * 784) + ']]}'), 422)
    add(k, "1e308 (out of range)", post_json(C, '{"instances": [[' + ",".join(["1e308"] * 784) + ']]}'), 422)
    add(k, "-0.5", post_json(C, {"instances": [[-0.5] * 784]}), 422)
    add(k, "1000 digits", post_json(C, '{"instances": [[0.' + "1" * 1000 + "," + ",".join(["0"] * 783) + ']]}'),
        200)
    add(k, "scale 3", post_json(C, {"instances": [z], "scale": 3}), 422)
    add(k, "top-level array", post_json(C, [z]), 422)
    add(k, "top-level string", post_json(C, '"hello"'), 422)
    add(k, "top-level null", post_json(C, "null"), 422)
    add(k, "trailing garbage", post_json(C, '{"instances": []} xyz'), 400)
    add(k, "unterminated", post_json(C, '{"instances": [[0,0,'), 400)
    add(k, "100000 nested arrays", post_json(C, "[" * 100000 + "]" * 100000), 400)
    add(k, "100000 nested objects", post_json(C, '{"a":' * 100000 + "1" + "}" * 100000), 400)
    add(k, "instances nested 100000 deep", post_json(C, '{"instances":' + "[" * 100000 + "]" * 100000 + "}"), 400)
    add(k, "10,000 instances of [0]", post_json(C, '{"instances": [' + ",".join(["[0]"] * 10000) + "]}"), 413)
    add(k, "10,000 b64 instances", post_json(C, {"instances": [{"b64": ""}] * 10000}), 413)
    add(k, "10,000 full instances (15 MB)", post_json(C, '{"instances": [' + ",".join(
        ["[" + ",".join(["0"] * 784) + "]"] * 10000) + "]}"), 413)
    add(k, "200,000 numbers in one instance", post_json(C, '{"instances": [[' + ",".join(["0"] * 200000) + "]]}"),
        (413, 422))
    add(k, "b64 not base64", post_json(C, {"instances": [{"b64": "!!!not base64!!!"}]}), 400)
    add(k, "b64 of text", post_json(C, {"instances": [{"b64": "aGVsbG8gd29ybGQ="}]}), 415)
    add(k, "b64 of a truncated PNG", post_json(C, {"instances": [{"b64": __import__("base64").b64encode(
        big[:300]).decode()}]}), 400)
    add(k, "data: URL of no type", post_json(C, {"instances": [{"b64": "data:,hello"}]}), (400, 415))
    add(k, "invalid UTF-8 in a string", post_json(C, b'{"instances": [{"b64": "\xff\xfe\xfd"}]}'), 400)
    add(k, "invalid UTF-8 as a key", post_json(C, b'{"\xff\xfe": 1, "instances": "x"}'), 422)
    add(k, "UTF-8 BOM", post_json(C, b"\xef\xbb\xbf" + json.dumps({"instances": [z]}).encode()), (200, 400))
    add(k, "NUL between values", post_json(C, b'{"instances": [\x00]}'), 400)
    add(k, "raw control byte in a string", post_json(C, b'{"instances": [{"b64": "a\x01b"}]}'), 400)

    k = "KServe v2"
    I = "/v2/models/mlp2/infer"
    add(k, "not an object", post_json(I, [1, 2]), 400)
    add(k, "no inputs", post_json(I, {"id": "x"}), 400)
    add(k, "inputs: a string", post_json(I, {"inputs": "x"}), 400)
    add(k, "datatype BYTES", post_json(I, {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "BYTES",
                                                      "data": z}]}), 400)
    add(k, "shape [1,784], 10 values", post_json(I, {"inputs": [{"name": "input", "shape": [1, 784],
                                                                 "datatype": "FP32", "data": [0] * 10}]}), 400)
    add(k, "negative shape", post_json(I, {"inputs": [{"name": "input", "shape": [-1, 784], "datatype": "FP32",
                                                      "data": z}]}), 400)
    add(k, "shape 1e12 x 784", post_json(I, {"inputs": [{"name": "input", "shape": [10 ** 12, 784],
                                                         "datatype": "FP32", "data": z}]}), (400, 413))
    add(k, "shape of 100 dims", post_json(I, {"inputs": [{"name": "input", "shape": [1] * 100, "datatype": "FP32",
                                                         "data": z}]}), 400)
    add(k, "shape of floats", post_json(I, {"inputs": [{"name": "input", "shape": [1.5, 784], "datatype": "FP32",
                                                       "data": z}]}), 400)
    add(k, "data: a string", post_json(I, {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                                      "data": "zeros"}]}), 400)
    add(k, "UINT8 value 300", post_json(I, {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8",
                                                       "data": [300] * 784}]}), 400)
    add(k, "20 instances (over --max-batch)", post_json(I, {"inputs": [{"name": "input", "shape": [20, 784],
                                                                       "datatype": "FP32", "data": z * 20}]}), 413)
    add(k, "unknown model", post_json("/v2/models/nope/infer", {"inputs": []}), 404)
    add(k, "model name of invalid UTF-8", post_json(b"/v2/models/%ff%fe/infer", {"inputs": []}), 404)

    k = "TF Serving"
    P = "/v1/models/mlp2:predict"
    add(k, "instances: a string", post_json(P, {"instances": "nope"}), 400)
    add(k, "inputs: a number", post_json(P, {"inputs": 5}), 400)
    add(k, "instances and inputs", post_json(P, {"instances": [z], "inputs": [z]}), 400)
    add(k, "ragged", post_json(P, {"instances": [z, z[:10]]}), 400)
    add(k, "20 instances (over --max-batch)", post_json(P, {"instances": [z] * 20}), 413)
    add(k, "b64 of text", post_json(P, {"instances": [{"b64": "aGVsbG8="}]}), (400, 415))
    add(k, "unknown version", post_json("/v1/models/mlp2/versions/7:predict", {"instances": [z]}), 404)

    # -- multipart
    k = "multipart"
    body, ct = multipart([("a", "a.png", good)])
    add(k, "no boundary parameter", post(C, body, "multipart/form-data"), 400)
    add(k, "empty boundary", post(C, body, "multipart/form-data; boundary="), 400)
    add(k, "200-char boundary", post(C, body, "multipart/form-data; boundary=" + "b" * 200), 400)
    add(k, "boundary not in the body", post(C, body, "multipart/form-data; boundary=other"), 400)
    add(k, "no closing boundary", post(C, body[:-len(b"--\r\n") - len(b"fmnistBoundary7d93") - 2], ct), 400)
    add(k, "part without a header end", post(C, b"--fmnistBoundary7d93\r\nContent-Disposition: form-data; "
                                            b"name=a" + b"x" * 1000, ct), 400)
    endless = b"".join(b"--fmnistBoundary7d93\r\nContent-Disposition: form-data; name=\"f\"; filename=\"f\"\r\n\r\n"
                       b"x\r\n" for _ in range(10000)) + b"--fmnistBoundary7d93--\r\n"
    add(k, "10,000 parts", post(C, endless, ct), 413)
    endless_open = b"--fmnistBoundary7d93\r\n" * 30000
    add(k, "30,000 empty boundary lines", post(C, endless_open, ct), (400, 413))
    body2, _ = multipart([("a", "a.png", b"just text")])
    add(k, "a text part", post(C, body2, ct), 415)
    body3, _ = multipart([("a", "a.png", b"")])
    add(k, "an empty part", post(C, body3, ct), 400)
    body4, _ = multipart([("a", "\udcff\udcfe.png", good)])
    add(k, "filename of invalid UTF-8", post(C, body4, ct), 200,
        check=lambda j: j["predictions"][0]["filename"] is not None)
    body5, _ = multipart([("a", "a.png", good[:40])])
    add(k, "a truncated PNG part", post(C, body5, ct), 400)
    body6, _ = multipart([("f%d" % i, "f.png", good) for i in range(MAX_BATCH + 1)])
    add(k, "17 files (over --max-batch)", post(C, body6, ct), 413)

    # -- HTTP framing
    k = "HTTP"
    # Over the 16 KiB cap and within the 64 KiB pool: our JSON 431.  Past
    # the pool: libmicrohttpd's own 431 (server/http.h).
    add(k, "20 KiB header", request("GET", "/healthz", headers=(b"X-Big: " + b"a" * 20 * 1024,)), 431)
    add(k, "60 KiB header", request("GET", "/healthz", headers=(b"X-Big: " + b"a" * 60 * 1024,)), 431)
    add(k, "400 headers of 70 bytes", request("GET", "/healthz", headers=tuple(
        b"X-H%d: %s" % (i, b"v" * 60) for i in range(400))), 431)
    add(k, "100 KiB header", request("GET", "/healthz", headers=(b"X-Big: " + b"a" * 100 * 1024,)), 431, lib=True)
    add(k, "1000 headers of 70 bytes", request("GET", "/healthz", headers=tuple(
        b"X-H%d: %s" % (i, b"v" * 60) for i in range(1000))), 431, lib=True)
    add(k, "60 small headers", request("GET", "/healthz", headers=tuple(b"X-H%d: v" % i for i in range(60))), 200)
    add(k, "1 MiB header", request("GET", "/healthz", headers=(b"X-Big: " + b"a" * (1 << 20),)), 431, lib=True)
    add(k, "9 KiB request target", request("GET", "/healthz?" + "a" * 9000), 414)
    add(k, "unknown method BREW", request("BREW", "/healthz"), 405)
    add(k, "unknown method on classify", request("PATCH", "/v1/classify", b"x"), 405)
    add(k, "lower-case get", request("get", "/healthz"), 405)
    add(k, "TRACE", request("TRACE", "/healthz"), 405)
    add(k, "CONNECT", request("CONNECT", "127.0.0.1:80"), (400, 405))
    add(k, "HTTP/1.0 GET", request("GET", "/healthz", version=b"HTTP/1.0", close=False), 200)
    add(k, "HTTP/1.0 POST image", post(C, good, version=b"HTTP/1.0", close=False), 200)
    add(k, "HTTP/2.0 request line", request("GET", "/healthz", version=b"HTTP/2.0"), 505, lib=True)
    add(k, "HTTP/0.9 request line", b"GET /healthz\r\n\r\n", (), lib=None)
    add(k, "garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", (), lib=None)
    add(k, "header line without a colon", request("GET", "/healthz", headers=(b"Bad Header",)), 400, lib=True)
    add(k, "Content-Length: abc", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
        lib=True)
    add(k, "Content-Length over the cap", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (1 << 40), 413)
    add(k, "Content-Length and chunked", b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", (400,))
    add(k, "body shorter than Content-Length, then EOF", lambda port: parse(exchange(
        port, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + good, shut=True,
        timeout=IDLE + 3)), (), lib=None)
    add(k, "pipelined: 4 requests in one write", pipelined, 200)
    add(k, "Expect: 100-continue", expect_continue, 200)
    add(k, "Expect: 100-continue over the cap", expect_continue_over, 413)
    add(k, "chunked, small", lambda port: chunked(port, None, 100), 200)
    add(k, "chunked, 2 MiB (over the cap)", lambda port: chunked(port, 2 << 20), 413)
    add(k, "chunked, bad chunk size", lambda port: chunked(port, None, 100, bad=True), 400, lib=True)
    add(k, "invalid UTF-8 in the path", request("GET", b"/v1/\xff\xfe"), 404)
    add(k, "%ff%fe model name", request("GET", b"/v1/models/%ff%fe"), 404)
    add(k, "?model= of invalid UTF-8", post(C + "&model=%ff%c0%80", good), 404)
    add(k, "?top=1e99", post("/v1/classify?top=1e99", good), 400)
    add(k, "?invert=maybe", post("/v1/classify?invert=maybe", good), 400)
    add(k, "%zz escape", request("GET", "/v1/models/%zz"), 400)
    add(k, "%00 in the path", request("GET", "/v1/models/a%00b"), (400, 404))

    # -- static files: traversal
    k = "static traversal"
    for p in [b"/../secret.txt", b"/../../../../etc/passwd", b"/%2e%2e/secret.txt", b"/%2E%2E%2Fsecret.txt",
              b"/..%2fsecret.txt", b"/.%2e/secret.txt", b"/sub/../../secret.txt", b"/%252e%252e/secret.txt",
              b"//etc/passwd", b"/..\\secret.txt", b"/index.html/../../secret.txt", b"/out.txt",
              b"/sub/out-dir/secret.txt", b"/.hidden", b"/index.html%00.png"]:
        add(k, p.decode(), request("GET", p), (400, 403, 404))
    add(k, "absolute-form target", request("GET", b"http://127.0.0.1/etc/passwd"), 400)
    add(k, "absolute path", request("GET", b"/etc/passwd"), 404)
    return cases


def multipart(files, boundary="fmnistBoundary7d93"):
    parts = []
    for field, filename, payload in files:
        parts.append(b"--" + boundary.encode() + b"\r\n"
                     + b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     % (field.encode(), filename.encode("utf-8", "surrogateescape"))
                     + b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n")
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n", "multipart/form-data; boundary=" + boundary


def make_static(root):
    """A static dir with index.html, a sub dir, and symlinks out of it; secret.txt beside it."""
    sdir = os.path.join(root, "static")
    os.makedirs(os.path.join(sdir, "sub"))
    with open(os.path.join(sdir, "index.html"), "w") as f:
        f.write("<!doctype html><title>fmnist-hardening</title>\n")
    with open(os.path.join(root, "secret.txt"), "w") as f:
        f.write("TOPSECRET-CONTENT\n")
    os.symlink(os.path.join(root, "secret.txt"), os.path.join(sdir, "out.txt"))
    os.symlink(root, os.path.join(sdir, "sub", "out-dir"))
    return sdir
