#!/usr/bin/python3
"""make-ood-set.py - builds the out-of-distribution evaluation set of issue #20 in tests/data/ood/.

    tools/install-deps.sh ood                   # python3-pil, python3-numpy, the fonts below
    /usr/bin/python3 tools/make-ood-set.py [--out tests/data/ood] [--data /usr/share/datasets/fashion-mnist]

Job: render a small, fixed set of images that look like what people upload
instead of Fashion-MNIST test items, write manifest.csv (one row per file:
kind, label, class, source package, glyph or test index, render recipe,
licence, split) and LICENSES.md.  Three kinds:

  drawing      product drawings of the ten classes, from freely licensed
               artwork packaged by Debian: Noto Color Emoji (colour,
               shaded), Symbola (line art), Material Design Icons, Font
               Awesome 4.7 and Google's Material Icons (flat icons).  Each
               glyph is rendered several ways: as drawn on white; smaller
               and off-centre on light grey; on a gradient or a textured
               light ground; as JPEG; with a transparent background (RGBA);
               a few on a dark ground; half of each glyph's renders mirrored
               (Fashion-MNIST's shoes point left); icons also recoloured,
               outlined or filled.
  transformed  Fashion-MNIST test images (a fixed sample, 15 per class)
               made to look like product photos: inverted to dark-on-light,
               tinted, upscaled, placed off-centre on a bigger light or
               textured canvas, mirrored, JPEG.
  non_fashion  inputs that are no fashion item: scribbles, digits in
               handwriting-like fonts, emoji and icons of other objects,
               noise, blank images.

Every kind is split into a validation half and a test half, balanced within
each class (or non-fashion sort), and every render of one glyph (one source
package's drawing of one codepoint, or one test image) goes to the same half.

Determinism: every random choice comes from a generator seeded by the
item's own name, so the output is byte-identical from run to run with the
same Debian packages (PIL, zlib, libjpeg and the fonts; other versions may
change pixels, not the manifest's shape).  The previous files under --out
are removed first.

Left out: glyphs that are no Fashion-MNIST class or only ambiguously one
(necktie, man's shoe, flat shoe, ballet shoes, shorts, socks, gloves,
scarf, kimono, sari, bikini, luggage, the two-bag "shopping bags", the
Symbola "necktie" which draws only a tie); Pullover, for which no packaged
artwork exists (it appears only among the transformed test images); photos
(no freely licensed product photos are packaged).
"""
import argparse
import colorsys
import csv
import gzip
import hashlib
import os
import random
import re
import shutil
import struct
import sys
import unicodedata

try:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
except ImportError as e:
    sys.exit("make-ood-set: %s (install python3-pil and python3-numpy: tools/install-deps.sh ood)" % e)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# ------------------------------------------------------------------ sources

# Debian package -> font file, how its glyphs are named, licence, notice.
SOURCES = {
    "fonts-noto-color-emoji": dict(
        font="/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", colour=True,
        licence="OFL-1.1 (font) / Apache-2.0 (artwork)",
        notice="Copyright 2013-2017 Google Inc. The font (fonts/*) is under the SIL Open Font "
               "License 1.1, the artwork and tools under the Apache License 2.0."),
    "fonts-symbola": dict(
        font="/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
        licence="Symbola licence (free for any use)",
        notice="Copyright (C) 2007-2015 George Douros. \"Fonts are free for any use; they may be "
               "opened, edited, modified, regenerated, packaged and redistributed.\""),
    "fonts-materialdesignicons-webfont": dict(
        font="/usr/share/fonts/truetype/materialdesignicons-webfont/materialdesignicons-webfont.ttf",
        css=("/usr/share/fonts-materialdesignicons-webfont/css/materialdesignicons.css", "mdi-"),
        licence="OFL-1.1 (font) / CC-BY-4.0 (icons)",
        notice="Copyright (c) 2014, Austin Andrews (http://materialdesignicons.com/). The font is "
               "under the SIL Open Font License 1.1, the icons in it under Creative Commons "
               "Attribution 4.0 International: icons by Austin Andrews and the Material Design "
               "Icons contributors, rendered, recoloured, outlined and placed on backgrounds here."),
    "fonts-font-awesome": dict(
        font="/usr/share/fonts/truetype/font-awesome/fontawesome-webfont.ttf",
        css=("/usr/share/fonts-font-awesome/css/font-awesome.css", "fa-"),
        licence="OFL-1.1",
        notice="Copyright 2012-2018, Dave Gandy. Font Awesome 4.7's font files are under the SIL "
               "Open Font License 1.1 (its CSS under the Expat licence)."),
    "fonts-material-design-icons-iconfont": dict(
        font="/usr/share/fonts/truetype/material-design-icons-iconfont/MaterialIcons-Regular.ttf",
        css=("/usr/share/fonts-material-design-icons-iconfont/css/material-design-icons.css",
             "material-icons."),
        licence="Apache-2.0",
        notice="Copyright 2014-2020 Material Design Authors, 2019-2023 Jossef Harush. Apache "
               "License 2.0 (/usr/share/common-licenses/Apache-2.0)."),
    "fonts-humor-sans": dict(
        font="/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf", licence="OFL-1.1",
        notice="Copyright 2009 Michael Ciuffo. SIL Open Font License 1.1."),
    "fonts-comic-neue": dict(
        font="/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf", licence="OFL-1.1",
        notice="Copyright 2014-2016 Craig Rozynski. SIL Open Font License 1.1."),
    "fonts-breip": dict(
        font="/usr/share/fonts/truetype/breip/Breip.ttf", licence="OFL-1.0",
        notice="Copyright 2006, Adam Breipohl. SIL Open Font License 1.0."),
    "fonts-dejavu-core": dict(
        font="/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", licence="Bitstream Vera licence",
        notice="Copyright (c) 2003 by Bitstream, Inc.; DejaVu changes are in the public domain. "
               "Bitstream Vera font licence (permissive)."),
    "dataset-fashion-mnist": dict(
        licence="Expat (MIT)",
        notice="Copyright 2017, Zalando SE. Expat (MIT) licence. Test images from "
               "/usr/share/datasets/fashion-mnist/t10k-*-ubyte.gz, transformed here."),
    "generated": dict(
        licence="MIT (this project)",
        notice="Drawn by tools/make-ood-set.py from its seeds; part of fmnist (MIT)."),
}

# The drawings: (class, package, glyph, style family).  Emoji by codepoint,
# icons by their CSS name.  Families: colour (Noto), line (outline drawings:
# black strokes, open interior), flat (solid silhouettes).
T, TR, DR, CO, SA, SH, SN, BA, AB = 0, 1, 3, 4, 5, 6, 7, 8, 9
NOTO, SYM = "fonts-noto-color-emoji", "fonts-symbola"
MDI, FA, MI = "fonts-materialdesignicons-webfont", "fonts-font-awesome", "fonts-material-design-icons-iconfont"
DRAWINGS = [
    (T, NOTO, 0x1F455, "colour"), (T, NOTO, 0x1F45A, "colour"), (T, NOTO, 0x1F3BD, "colour"),
    (T, SYM, 0x1F455, "line"), (T, SYM, 0x1F3BD, "line"),
    (T, MDI, "tshirt-crew", "line"), (T, MDI, "tshirt-v", "line"),
    (TR, NOTO, 0x1F456, "colour"), (TR, SYM, 0x1F456, "line"),
    (DR, NOTO, 0x1F457, "colour"), (DR, SYM, 0x1F457, "line"),
    (CO, NOTO, 0x1F9E5, "colour"), (CO, NOTO, 0x1F97C, "colour"), (CO, SYM, 0x1F9E5, "line"),
    (SA, NOTO, 0x1F461, "colour"), (SA, NOTO, 0x1F460, "colour"), (SA, NOTO, 0x1FA74, "colour"),
    (SA, SYM, 0x1F461, "line"), (SA, SYM, 0x1F460, "line"),
    # Noto draws U+1F454 as a shirt with a tie; Symbola's U+1F45A is a
    # buttoned, collared blouse (a shirt), where Noto's is a plain top.
    (SH, NOTO, 0x1F454, "colour"), (SH, SYM, 0x1F45A, "line"),
    (SN, NOTO, 0x1F45F, "colour"), (SN, SYM, 0x1F45F, "line"),
    (BA, NOTO, 0x1F45B, "colour"), (BA, NOTO, 0x1F45C, "colour"), (BA, NOTO, 0x1F45D, "colour"),
    (BA, NOTO, 0x1F392, "colour"), (BA, NOTO, 0x1F4BC, "colour"),
    (BA, SYM, 0x1F45B, "line"), (BA, SYM, 0x1F45C, "line"), (BA, SYM, 0x1F45D, "line"),
    (BA, SYM, 0x1F392, "line"), (BA, SYM, 0x1F4BC, "line"),
    (BA, MDI, "shopping", "flat"), (BA, MDI, "briefcase", "flat"),
    (BA, FA, "shopping-bag", "flat"), (BA, FA, "briefcase", "flat"),
    (BA, MI, "backpack", "flat"), (BA, MI, "shopping_bag", "flat"), (BA, MI, "local_mall", "flat"),
    (AB, NOTO, 0x1F462, "colour"), (AB, NOTO, 0x1F97E, "colour"), (AB, SYM, 0x1F462, "line"),
]
DRAWINGS_PER_CLASS = 26   # renders per class, spread over its glyphs (at least 2 each)

# Objects that are no fashion item, one render each.
OBJECTS = [
    (NOTO, c, "colour") for c in (0x1F431, 0x1F436, 0x1F697, 0x1F3E0, 0x1F333, 0x1F600, 0x1F355,
                                  0x1F34E, 0x2615, 0x26BD, 0x1F3B8, 0x1F33B, 0x1F41F, 0x2708,
                                  0x1F6B2, 0x1F382, 0x1F511, 0x1F4A1, 0x1F4F1, 0x1F680)
] + [
    (SYM, c, "line") for c in (0x1F408, 0x1F415, 0x1F697, 0x1F3E0, 0x1F332, 0x1F600, 0x1F34E, 0x2615)
] + [
    (MDI, n, "flat") for n in ("cat", "car", "home", "tree", "pizza", "food-apple", "fish")
] + [
    (FA, n, "flat") for n in ("bicycle", "plane", "coffee", "paw", "birthday-cake", "anchor")
] + [
    (MI, n, "flat") for n in ("pets", "directions_car", "local_florist", "face", "sailing",
                              "icecream", "headphones")
]
DIGIT_FONTS = ["fonts-humor-sans", "fonts-comic-neue", "fonts-breip", "fonts-dejavu-core"]
N_DIGITS, N_SCRIBBLES, N_NOISE, N_BLANK = 20, 24, 10, 10
TRANSFORMED_PER_CLASS = 15

# The ways an upload differs, cycled through per class so that every way
# occurs in every class: (ground, how much of the canvas the item fills,
# centred?, file format).
RECIPES = [
    ("white", (0.75, 0.92), True, "png"),
    ("grey", (0.35, 0.6), False, "png"),
    ("white", (0.7, 0.9), True, "jpeg"),
    ("transparent", (0.7, 0.92), True, "png"),
    ("gradient", (0.5, 0.8), False, "jpeg"),
    ("texture", (0.5, 0.8), False, "jpeg"),
    ("grey", (0.4, 0.65), False, "jpeg"),
    ("gradient", (0.55, 0.85), True, "jpeg"),
    ("dark", (0.6, 0.85), True, "png"),
    ("texture", (0.45, 0.75), True, "jpeg"),
]
STYLES = {"colour": ["colour", "colour", "colour", "gray"],
          "line": ["line", "filled", "line_colour"],
          "flat": ["flat", "flat_colour", "outline"]}


def seeded(*key):
    """A generator seeded by the item's name: adding an item moves no other."""
    h = hashlib.sha256("/".join(str(k) for k in key).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def np_rng(r):
    return np.random.default_rng(r.getrandbits(64))


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


# ------------------------------------------------------------------ glyphs

_fonts, _css, _notdef = {}, {}, {}


def font(pkg, size):
    key = (pkg, size)
    if key not in _fonts:
        path = SOURCES[pkg]["font"]
        if not os.path.exists(path):
            sys.exit("make-ood-set: %s is missing (install %s: tools/install-deps.sh ood)" % (path, pkg))
        _fonts[key] = ImageFont.truetype(path, size)
    return _fonts[key]


def codepoint(pkg, glyph):
    """The codepoint of an emoji (int) or of an icon named in its package's CSS."""
    if isinstance(glyph, int):
        return glyph
    if pkg not in _css:
        path, prefix = SOURCES[pkg]["css"]
        text = open(path, encoding="utf-8").read()
        _css[pkg] = {}
        for m in re.finditer(r"\." + re.escape(prefix) + r"([a-z0-9_-]+):{1,2}before\s*\{\s*content:\s*\"\\([0-9a-fA-F]+)\"", text):
            _css[pkg].setdefault(m.group(1), int(m.group(2), 16))
    if glyph not in _css[pkg]:
        sys.exit("make-ood-set: %s has no icon named %r (package changed?)" % (pkg, glyph))
    return _css[pkg][glyph]


def glyph_label(pkg, glyph):
    """The manifest's glyph: "U+1F455 T-SHIRT" for an emoji, "tshirt-crew U+F53F" for an icon."""
    cp = codepoint(pkg, glyph)
    if isinstance(glyph, int):
        return "U+%04X %s" % (cp, unicodedata.name(chr(cp), "?"))
    return "%s U+%04X" % (glyph, cp)


def glyph_slug(pkg, glyph):
    """The glyph's part of a file name: package and codepoint, or package and icon name."""
    name = "u%04x" % glyph if isinstance(glyph, int) else slug(glyph)
    return "%s-%s" % (pkg.replace("fonts-", ""), name)


def raw_glyph(pkg, cp):
    """RGBA of one glyph, cropped to its ink: Noto at its 109 px strike, outline fonts at 400 px."""
    colour = SOURCES[pkg].get("colour", False)
    f = font(pkg, 109 if colour else 400)
    ch = chr(cp)
    l, t, r, b = f.getbbox(ch)
    im = Image.new("RGBA", (r - l + 40, max(b - t, 1) + 40), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((20 - l, 20 - t), ch, font=f, fill=(0, 0, 0, 255), embedded_color=colour)
    box = im.getchannel("A").getbbox()
    if box is None:
        return None, None
    return im.crop(box), im.tobytes()


def glyph_rgba(pkg, glyph):
    cp = codepoint(pkg, glyph)
    im, raw = raw_glyph(pkg, cp)
    if pkg not in _notdef:
        _notdef[pkg] = raw_glyph(pkg, 0x10FFFD)[1]
    if im is None or raw == _notdef[pkg]:
        sys.exit("make-ood-set: %s has no glyph U+%04X (package changed?)" % (pkg, cp))
    return im


# ------------------------------------------------------------------ styles

DARK_INKS = [(20, 20, 20), (25, 35, 90), (90, 40, 20), (20, 70, 40), (110, 20, 30)]


def random_colour(r, lo=0.25, hi=0.85, sat=(0.35, 0.9)):
    h, s, v = r.random(), r.uniform(*sat), r.uniform(lo, hi)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def with_alpha(colour, alpha):
    im = Image.new("RGBA", alpha.size, colour + (0,))
    im.putalpha(alpha)
    return im


def interior(alpha):
    """Pixels enclosed by the strokes (not reachable from outside), as an L mask."""
    m = alpha.point(lambda a: 255 if a > 100 else 0).convert("L")
    pad = ImageOps.expand(m, 2, 0)
    ImageDraw.floodfill(pad, (0, 0), 128)
    inner = pad.point(lambda v: 255 if v == 0 else 0).crop((2, 2, pad.width - 2, pad.height - 2))
    return inner.filter(ImageFilter.MaxFilter(3))


def stylise(im, style, r, light_ink=False):
    """Applies a style to a glyph's RGBA; returns (RGBA, the style actually used)."""
    a = im.getchannel("A")
    ink = (235, 235, 235) if light_ink else (0, 0, 0)
    if style == "colour":
        return im, style
    if style == "gray":
        g = im.convert("RGB").convert("L").convert("RGB").convert("RGBA")
        g.putalpha(a)
        return g, style
    if style in ("line", "flat"):
        return with_alpha(ink, a), style
    if style in ("line_colour", "flat_colour"):
        c = random_colour(r, 0.55, 0.95) if light_ink else (r.choice(DARK_INKS) if style == "line_colour" else random_colour(r))
        return with_alpha(c, a), style
    if style == "filled":
        inner = interior(a)
        if inner.getbbox() is None or sum(inner.histogram()[128:]) < 0.05 * a.width * a.height:
            return with_alpha(ink, a), "line"   # open outline: nothing to fill
        fill = with_alpha(random_colour(r, 0.6, 0.95, (0.2, 0.7)), inner)
        return Image.alpha_composite(fill, with_alpha(ink, a)), style
    if style == "outline":
        width = max(3, int(round(min(a.size) * r.uniform(0.03, 0.05)))) | 1
        a = ImageOps.expand(a, width, 0)     # the filter repeats border pixels: give it empty ones
        edge = np.asarray(a, np.int16) - np.asarray(a.filter(ImageFilter.MinFilter(width)), np.int16)
        edge = Image.fromarray(np.clip(edge, 0, 255).astype(np.uint8))
        edge = edge.crop(edge.getbbox())
        c = ink if r.random() < 0.6 else (random_colour(r, 0.55, 0.95) if light_ink else r.choice(DARK_INKS))
        return with_alpha(c, edge), style
    raise ValueError(style)


# ------------------------------------------------------------------ grounds

def canvas_size(r, lo=120, hi=600):
    """A random upload size, smaller ones more likely."""
    side = int(lo + (hi - lo) * r.random() ** 1.5)
    aspect = r.choice([1.0, 1.0, 4 / 3, 3 / 4, 1.25])
    short = max(lo, int(side / max(aspect, 1 / aspect)))
    return (side, short) if aspect >= 1 else (short, side)


def ground(kind, size, r):
    """An RGB (RGBA for 'transparent') background of the given kind."""
    w, h = size
    g = np_rng(r)
    if kind == "white":
        return Image.new("RGB", size, (255, 255, 255))
    if kind == "grey":
        v = r.randint(200, 238)
        tint = [r.randint(-4, 4) for _ in range(3)]
        return Image.new("RGB", size, tuple(v + t for t in tint))
    if kind == "dark":
        v = r.randint(8, 60)
        return Image.new("RGB", size, (v, v, v + r.randint(0, 10)))
    if kind == "transparent":
        under = r.choice([(0, 0, 0), (255, 255, 255)])
        return Image.new("RGBA", size, under + (0,))
    if kind == "gradient":
        c1 = np.array([r.randint(185, 250) for _ in range(3)], np.float64)
        c2 = np.array([r.randint(185, 250) for _ in range(3)], np.float64)
        yy, xx = np.mgrid[0:h, 0:w]
        mode = r.choice(["vertical", "horizontal", "diagonal", "radial"])
        if mode == "vertical":
            t = yy / max(h - 1, 1)
        elif mode == "horizontal":
            t = xx / max(w - 1, 1)
        elif mode == "diagonal":
            t = (xx + yy) / max(w + h - 2, 1)
        else:
            t = np.hypot(xx - w / 2, yy - h / 2) / np.hypot(w / 2, h / 2)
        px = c1 * (1 - t[..., None]) + c2 * t[..., None]
        return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")
    if kind == "texture":
        base = np.array([r.randint(205, 240) for _ in range(3)], np.float64)
        mode = r.choice(["paper", "linen", "speckle"])
        if mode == "paper":      # soft blotches and grain
            low = Image.fromarray((g.random((max(h // 40, 3), max(w // 40, 3))) * 255).astype(np.uint8))
            blot = np.asarray(low.resize((w, h), Image.BICUBIC), np.float64) / 255 - 0.5
            px = base + 22 * blot[..., None] + g.normal(0, 4, (h, w, 1))
        elif mode == "linen":    # a woven cross-hatch
            period = r.uniform(3, 7)
            yy, xx = np.mgrid[0:h, 0:w]
            weave = np.sin(2 * np.pi * xx / period) + np.sin(2 * np.pi * yy / period)
            px = base + 6 * weave[..., None] + g.normal(0, 3, (h, w, 1))
        else:                    # dots of darker grit
            px = base + g.normal(0, 3, (h, w, 1))
            dots = g.random((h, w)) < 0.01
            px[dots] -= 45
        return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8), "RGB")
    raise ValueError(kind)


def place(item, canvas, fill, centred, r):
    """Pastes an RGBA item onto canvas, scaled to a random fraction in fill of the
    canvas (in whichever of width and height is tighter)."""
    cw, ch = canvas.size
    s = min(fill[0] + r.random() * (fill[1] - fill[0]), 0.97) * min(cw / item.width, ch / item.height)
    iw, ih = max(int(item.width * s), 8), max(int(item.height * s), 8)
    it = item.resize((iw, ih), Image.LANCZOS)
    if centred:
        x, y = (cw - iw) // 2, (ch - ih) // 2
    else:    # anywhere, but not touching the edge
        mx, my = min(cw // 50, (cw - iw) // 2), min(ch // 50, (ch - ih) // 2)
        x, y = r.randint(mx, cw - iw - mx), r.randint(my, ch - ih - my)
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    layer.paste(it, (x, y))
    if canvas.mode == "RGBA":
        return Image.alpha_composite(canvas, layer)
    return Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")


def save(im, path, fmt, r):
    """Writes PNG (optimised) or JPEG at a moderate quality; returns the variant text."""
    if fmt == "jpeg":
        q = r.randint(55, 85)
        im.convert("RGB").save(path, "JPEG", quality=q)
        return "jpeg q%d" % q
    im.save(path, "PNG", optimize=True)
    return "png " + im.mode


# ------------------------------------------------------------------ kinds

class Set:
    """The files written so far and their manifest rows."""

    def __init__(self, out):
        self.out = out
        self.rows = []

    def add(self, im, sub, name, fmt, r, kind, label, cls, source, glyph, variant, split=""):
        ext = ".jpg" if fmt == "jpeg" else ".png"
        rel = os.path.join(sub, name + ext)
        os.makedirs(os.path.join(self.out, sub), exist_ok=True)
        enc = save(im, os.path.join(self.out, rel), fmt, r)
        self.rows.append(dict(file=rel, kind=kind, label=label, **{"class": cls}, source=source,
                              glyph=glyph, variant="%s; %s; %dx%d" % (variant, enc, im.width, im.height),
                              licence=SOURCES[source]["licence"], split=split))


def render_one(item, recipe_index, mirror, r, style_family):
    """One upload-like render of a glyph's RGBA: returns (image, fmt, variant)."""
    grd, fill, centred, fmt = RECIPES[recipe_index % len(RECIPES)]
    dark = grd == "dark"
    im, style = stylise(item, r.choice(STYLES[style_family]), r, light_ink=dark)
    if mirror:
        im = ImageOps.mirror(im)
    size = canvas_size(r, 120, 320 if style_family == "colour" else 520)  # Noto's strike is 136 px
    canvas = ground(grd, size, r)
    out = place(im, canvas, fill, centred, r)
    return out, fmt, "%s ground; %s; %s%s" % (grd, "centred" if centred else "off-centre", style,
                                              "; mirrored" if mirror else "")


def make_drawings(s):
    """Each class's glyphs alternate between the halves (seeded order), and each
    half's glyphs share DRAWINGS_PER_CLASS / 2 renders, so both halves of a
    class hold about as many items whatever its number of glyphs."""
    per_class = {}
    for row in DRAWINGS:
        per_class.setdefault(row[0], []).append(row)
    for label, glyphs in sorted(per_class.items()):
        order = list(range(len(glyphs)))
        seeded("split", "drawing", label).shuffle(order)
        half = {gi: ("val", "test")[pos % 2] for pos, gi in enumerate(order)}
        in_half = {h: list(half.values()).count(h) for h in ("val", "test")}
        offset = 0
        for gi, (_, pkg, glyph, family) in enumerate(glyphs):
            base = glyph_rgba(pkg, glyph)
            gname = glyph_slug(pkg, glyph)
            k = max(2, -(-DRAWINGS_PER_CLASS // 2 // in_half[half[gi]]))
            for i in range(k):
                name = "%s-%s-%02d" % (slug(CLASSES[label]), gname, i)
                r = seeded("drawing", name)
                mirror = (i // 2 + gi) % 2 == 1         # not tied to the recipe's parity
                im, fmt, variant = render_one(base, offset + i, mirror, r, family)
                s.add(im, "drawing", name, fmt, r, "drawing", label, CLASSES[label], pkg,
                      glyph_label(pkg, glyph), variant, split=half[gi])
            offset += k


def read_idx(data_dir):
    ip = os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")
    lp = os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz")
    if not (os.path.exists(ip) and os.path.exists(lp)):
        sys.exit("make-ood-set: the Fashion-MNIST test set is not in %s (install dataset-fashion-mnist)" % data_dir)
    with gzip.open(ip, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 0x803 or rows != 28 or cols != 28:
            sys.exit("make-ood-set: %s is not a 28x28 IDX image file" % ip)
        images = np.frombuffer(f.read(n * 784), np.uint8).reshape(n, 28, 28)
    with gzip.open(lp, "rb") as f:
        struct.unpack(">II", f.read(8))
        labels = np.frombuffer(f.read(n), np.uint8)
    return images, labels


# (tint, ground, centred, format) cycled over the sampled test images
TRANSFORMS = [
    ("gray", "white", True, "png"),
    ("colour", "grey", False, "jpeg"),
    ("light", "white", True, "png"),
    ("colour", "texture", False, "jpeg"),
    ("dark", "white", False, "jpeg"),
    ("light", "gradient", False, "png"),
    ("colour", "white", True, "jpeg"),
    ("as_is", "black", True, "jpeg"),
    ("gray", "texture", False, "jpeg"),
    ("colour", "gradient", True, "png"),
    ("light", "grey", False, "jpeg"),
    ("colour", "transparent", True, "png"),
]


def make_transformed(s, data_dir):
    images, labels = read_idx(data_dir)
    for label in range(10):
        pool = [int(i) for i in np.flatnonzero(labels == label)]
        picked = sorted(seeded("transformed-sample", label).sample(pool, TRANSFORMED_PER_CLASS))
        for j, idx in enumerate(picked):
            name = "%s-test%05d" % (slug(CLASSES[label]), idx)
            r = seeded("transformed", name)
            tint, grd, centred, fmt = TRANSFORMS[(j + label) % len(TRANSFORMS)]
            x = images[idx].astype(np.float64) / 255          # item bright on black
            mirror = (j // 2 + label) % 2 == 1      # not tied to the transform's parity
            if mirror:
                x = x[:, ::-1]
            photo = 1 - x                                     # the product's gray, on white
            if tint == "gray":
                lo = np.array([0, 0, 0], np.float64)
            elif tint == "colour":
                lo = np.array(random_colour(r, 0.2, 0.6), np.float64) / 255
            elif tint == "light":
                lo = np.array(random_colour(r, 0.62, 0.88, (0.15, 0.5)), np.float64) / 255
            elif tint == "dark":
                lo = np.array(random_colour(r, 0.05, 0.25, (0.0, 0.5)), np.float64) / 255
            else:
                lo = None
            side = r.randint(60, 260) if lo is not None else r.randint(120, 300)
            if lo is None:   # the item as Fashion-MNIST shows it, rescaled onto black
                rgb = np.repeat(x[..., None], 3, axis=2)
                alpha = np.ones_like(x)
            else:            # darkest -> the tint, white -> white; alpha from the item's ink
                rgb = lo + (1 - lo) * photo[..., None]
                alpha = np.clip(x / 0.1, 0, 1)
            item = Image.fromarray(np.dstack([rgb * 255, alpha * 255]).round().astype(np.uint8), "RGBA")
            item = item.resize((side, side), Image.BICUBIC)
            if grd == "black":
                canvas = Image.new("RGB", (side, side), (0, 0, 0))
                fill = (1.0, 1.0)
            else:
                canvas = ground(grd, canvas_size(r, max(side + 10, 120), max(side * 2, 140)), r)
                fill = (0.45, 0.9)
            im = place(item, canvas, fill, centred, r)
            variant = "%s tint; %s ground; %s%s" % (tint, grd, "centred" if centred else "off-centre",
                                                     "; mirrored" if mirror else "")
            s.add(im, "transformed", name, fmt, r, "transformed", label, CLASSES[label],
                  "dataset-fashion-mnist", "test %d" % idx, variant)


def scribble(r, size, i):
    """Pen strokes: a doodled curve through random points, a back-and-forth
    scrawl (crossing something out), or a wandering loop."""
    w, h = size
    im = ground(r.choice(["white", "white", "grey"]), size, r)
    d = ImageDraw.Draw(im)
    mode = ["doodle", "scrawl", "loops"][i % 3]
    for _ in range(r.randint(1, 4)):
        if mode == "doodle":     # Catmull-Rom through 4-9 points
            ctrl = [(r.uniform(0.1, 0.9) * w, r.uniform(0.1, 0.9) * h) for _ in range(r.randint(4, 9))]
            ctrl = [ctrl[0]] + ctrl + [ctrl[-1]]
            pts = []
            for j in range(1, len(ctrl) - 2):
                p0, p1, p2, p3 = ctrl[j - 1:j + 3]
                for t in np.linspace(0, 1, 16, endpoint=False):
                    pts.append(tuple(0.5 * (2 * p1[c] + (p2[c] - p0[c]) * t + (2 * p0[c] - 5 * p1[c] + 4 * p2[c] - p3[c]) * t * t
                                            + (3 * p1[c] - p0[c] - 3 * p2[c] + p3[c]) * t ** 3) for c in (0, 1)))
        elif mode == "scrawl":   # zigzag along a slanted band
            x0, y0 = r.uniform(0.1, 0.4) * w, r.uniform(0.2, 0.8) * h
            x1, y1 = r.uniform(0.6, 0.9) * w, r.uniform(0.2, 0.8) * h
            amp = r.uniform(0.05, 0.25) * h
            n = r.randint(6, 20)
            pts = [(x0 + (x1 - x0) * j / n + r.gauss(0, 3), y0 + (y1 - y0) * j / n + amp * (1 if j % 2 else -1) + r.gauss(0, 4))
                   for j in range(n + 1)]
        else:                    # circles drifting across
            cx, cy, rad = r.uniform(0.3, 0.7) * w, r.uniform(0.3, 0.7) * h, r.uniform(0.05, 0.2) * min(w, h)
            drift = (r.uniform(-0.5, 0.5) * w / 60, r.uniform(-0.5, 0.5) * h / 60)
            pts = [(cx + drift[0] * k + rad * np.cos(k * 0.35), cy + drift[1] * k + rad * np.sin(k * 0.35))
                   for k in range(r.randint(40, 110))]
        pts = [(min(max(x, 2), w - 3), min(max(y, 2), h - 3)) for x, y in pts]
        d.line(pts, fill=r.choice(DARK_INKS + [(200, 30, 30), (30, 60, 200)]), width=r.randint(2, 10), joint="curve")
    return im, mode


def noise(r, size, i):
    w, h = size
    g = np_rng(r)
    mode = ["gray", "colour", "clouds", "salt", "bands"][i % 5]
    if mode == "gray":
        px = np.repeat(g.integers(0, 256, (h, w, 1)), 3, axis=2)
    elif mode == "colour":
        px = g.integers(0, 256, (h, w, 3))
    elif mode == "clouds":
        low = Image.fromarray(g.integers(0, 256, (max(h // 24, 2), max(w // 24, 2), 3)).astype(np.uint8), "RGB")
        return low.resize(size, Image.BICUBIC), mode
    elif mode == "salt":
        px = np.full((h, w, 3), 255)
        px[g.random((h, w)) < 0.08] = 0
    else:
        px = np.repeat(np.repeat(g.integers(0, 256, (1, w, 1)), h, axis=0), 3, axis=2)
    return Image.fromarray(px.astype(np.uint8), "RGB"), mode


def blank(r, size, i):
    kinds = ["white", "black", "light grey", "mid grey", "pale colour", "white", "transparent",
             "light gradient", "near-white noise", "dark grey"]
    k = kinds[i % len(kinds)]
    if k == "transparent":
        return Image.new("RGBA", size, (0, 0, 0, 0)), k
    if k == "light gradient":
        return ground("gradient", size, r), k
    if k == "near-white noise":
        px = np.clip(250 + np_rng(r).normal(0, 2, (size[1], size[0], 1)), 0, 255)
        return Image.fromarray(np.repeat(px, 3, axis=2).astype(np.uint8), "RGB"), k
    colour = {"white": (255, 255, 255), "black": (0, 0, 0), "light grey": (225, 225, 225),
              "mid grey": (128, 128, 128), "dark grey": (50, 50, 50),
              "pale colour": random_colour(r, 0.85, 0.97, (0.1, 0.3))}[k]
    return Image.new("RGB", size, colour), k


def make_non_fashion(s):
    nf = "non_fashion"
    for i in range(N_SCRIBBLES):
        name = "scribble-%02d" % i
        r = seeded(nf, name)
        im, mode = scribble(r, canvas_size(r), i)
        fmt = "jpeg" if i % 4 == 3 else "png"
        s.add(im, nf, name, fmt, r, nf, -1, "scribble", "generated", name, mode)
    for i in range(N_DIGITS):
        pkg = DIGIT_FONTS[i % len(DIGIT_FONTS)]
        digit = (i * 3 + i // 10) % 10
        name = "digit-%d-%s" % (digit, pkg.replace("fonts-", ""))
        r = seeded(nf, name)
        glyph = raw_glyph(pkg, ord(str(digit)))[0]
        glyph = glyph.rotate(r.uniform(-12, 12), Image.BICUBIC, expand=True)
        mnist_like = i % 4 == 3                     # white on black, like MNIST
        im, _ = stylise(glyph, "line", r, light_ink=mnist_like)
        canvas = ground("dark" if mnist_like else r.choice(["white", "grey"]), canvas_size(r, 120, 360), r)
        im = place(im, canvas, (0.5, 0.85), r.random() < 0.5, r)
        fmt = "jpeg" if i % 5 == 4 else "png"
        s.add(im, nf, name, fmt, r, nf, -1, "digit", pkg, "U+%04X digit %d" % (ord(str(digit)), digit),
              "white on black" if mnist_like else "dark on light")
    for i, (pkg, glyph, family) in enumerate(OBJECTS):
        name = "object-" + glyph_slug(pkg, glyph)
        r = seeded(nf, name)
        im, fmt, variant = render_one(glyph_rgba(pkg, glyph), i, (i // 2) % 2 == 1, r, family)
        s.add(im, nf, name, fmt, r, nf, -1, "object", pkg, glyph_label(pkg, glyph), variant)
    for i in range(N_NOISE):
        name = "noise-%02d" % i
        r = seeded(nf, name)
        im, mode = noise(r, canvas_size(r, 120, 240), i)
        s.add(im, nf, name, "png" if i % 5 == 0 else "jpeg", r, nf, -1, "noise", "generated", name, mode + " noise")
    for i in range(N_BLANK):
        name = "blank-%02d" % i
        r = seeded(nf, name)
        im, mode = blank(r, canvas_size(r, 120, 400), i)
        fmt = "jpeg" if i == 5 else "png"
        s.add(im, nf, name, fmt, r, nf, -1, "blank", "generated", name, mode)


# ------------------------------------------------------------------ split

def split(rows):
    """val/test halves for the rows without one: within each (kind, class),
    whole glyph groups, greedily balanced (largest groups first)."""
    buckets = {}
    for row in rows:
        if row["split"]:
            continue
        buckets.setdefault((row["kind"], row["class"]), {}).setdefault((row["source"], row["glyph"]), []).append(row)
    for key in sorted(buckets):
        groups = sorted(buckets[key].items())
        seeded("split", *key).shuffle(groups)
        groups.sort(key=lambda g: -len(g[1]))            # stable: big groups first, ties shuffled
        count = {"val": 0, "test": 0}
        ngroups = {"val": 0, "test": 0}
        for _, members in groups:
            half = min(("val", "test"), key=lambda h: (count[h], ngroups[h], h == "test"))
            count[half] += len(members)
            ngroups[half] += 1
            for row in members:
                row["split"] = half


FIELDS = ["file", "kind", "label", "class", "source", "glyph", "variant", "licence", "split"]


def write_manifest(out, rows):
    with open(os.path.join(out, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        w.writeheader()
        for row in sorted(rows, key=lambda r: r["file"]):
            w.writerow(row)


def write_licences(out, rows):
    used = {}
    for row in rows:
        used.setdefault(row["source"], {}).setdefault(row["kind"], set()).add(
            row["glyph"] + (" (%s)" % row["class"] if row["kind"] == "drawing" else ""))
    lines = ["# Licences of the out-of-distribution set",
             "",
             "Written by `tools/make-ood-set.py` with the set itself. Every image here was rendered by",
             "that script from the sources below (Debian packages, or its own seeded drawing code). The",
             "full licence texts are in each package's `/usr/share/doc/PACKAGE/copyright` and",
             "`/usr/share/common-licenses/`; each package's statement is repeated here.", ""]
    for pkg in sorted(used):
        src = SOURCES[pkg]
        lines += ["## %s" % pkg, "",
                  "- Licence: %s" % src["licence"],
                  "- Notice: %s" % src["notice"]]
        if pkg != "generated":
            lines.append("- Copyright file: `/usr/share/doc/%s/copyright`" % pkg)
        if "font" in src:
            lines.append("- File used: `%s`" % src["font"])
        for kind in sorted(used[pkg]):
            glyphs = sorted(used[pkg][kind])
            if pkg in ("dataset-fashion-mnist", "generated"):
                lines.append("- Used for %s: %d items" % (kind, len(glyphs)))
            else:
                lines.append("- Used for %s: %s" % (kind, "; ".join(glyphs)))
        lines.append("")
    with open(os.path.join(out, "LICENSES.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "ood"), help="output directory")
    ap.add_argument("--data", default=os.environ.get("FMNIST_DATA", "/usr/share/datasets/fashion-mnist"),
                    help="directory of the Fashion-MNIST IDX test set")
    args = ap.parse_args()
    out = args.out
    for sub in ("drawing", "transformed", "non_fashion"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    s = Set(out)
    make_drawings(s)
    make_transformed(s, args.data)
    make_non_fashion(s)
    split(s.rows)
    write_manifest(out, s.rows)
    write_licences(out, s.rows)
    total = sum(os.path.getsize(os.path.join(out, row["file"])) for row in s.rows)
    counts = {}
    for row in s.rows:
        k = counts.setdefault((row["kind"], row["class"]), [0, 0])
        k[row["split"] == "test"] += 1
    print("%-12s %-12s %5s %5s" % ("kind", "class", "val", "test"))
    for (kind, cls), (v, t) in sorted(counts.items()):
        print("%-12s %-12s %5d %5d" % (kind, cls, v, t))
    print("%d files, %.2f MB in %s" % (len(s.rows), total / 1e6, out))


if __name__ == "__main__":
    main()
