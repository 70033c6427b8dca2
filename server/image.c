/* image.c - image file bytes -> Fashion-MNIST model input (see image.h).
 *
 * Job: identify the format by its magic bytes; read the header and check the
 * size against the caller's limit before any pixel is decoded; decode (PNG
 * with libpng, JPEG/BMP/GIF/PNM with stb_image, all from memory) to 8-bit
 * samples; reduce to luminance and composite alpha onto the background; then
 * trim / scale / centre / invert the way Fashion-MNIST was made from product
 * photos.  Also: a PNG encoder for 8-bit gray and a float -> uint8 helper.
 *
 * Left out: HTTP and JSON (the server's job), files (everything is in
 * memory), colour management (samples are used as stored), animation (first
 * GIF frame only), EXIF orientation.
 *
 * Hostile input: every file is untrusted (the server takes uploads and the
 * project fuzzes this file).  Header fields are checked before they size an
 * allocation; products of sizes are bounded first (w*h <= max_pixels <=
 * INT_MAX/4); stb_image is only handed files whose headers we parsed
 * ourselves where stb 2.27 is lax (PNM integer overflow and missing data,
 * BMP negative heights and missing data, JPEG truncation and oversized
 * Huffman tables). */
#include "image.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h> /* brings <setjmp.h> */
#include <zlib.h>

/* stb_image: only what we serve (PNG goes through libpng), from memory only,
 * every symbol static so nothing clashes with a system libstb.  Its buffers
 * are released with free().  Thread safety: in C11 stb keeps its failure
 * reason _Thread_local, and its other globals are settings we never set.  Dimensions: one side may reach 2^24 (a 1 x 16M
 * strip is within the default pixel limit); the pixel limit is ours. */
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_MAX_DIMENSIONS (1 << 24)
#define STBI_MALLOC(sz) malloc(sz)
#define STBI_REALLOC(p, newsz) realloc(p, newsz)
#define STBI_FREE(p) free(p)
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION

/* Third-party code is not held to our warning set (only -Wunused-function
 * fires with our flags today; the rest cover stricter builds). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wshadow"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <stb_image.h>
#include <stb_image_resize.h>
#pragma GCC diagnostic pop

#if defined(__GNUC__)
#define IMG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define IMG_PRINTF(a, b)
#endif

/* Hard ceiling on pixels: stb_image_resize takes int strides and computes
 * row offsets as int, so 4 bytes (one float) per pixel must fit an int. */
#define HARD_MAX_PIXELS ((size_t)INT_MAX / sizeof(float))

/* Trim tolerance, in 8-bit luminance units: Fashion-MNIST trimmed "the edges
 * that are close to the colour of the corner pixels", closeness being within
 * 5% of the maximum intensity. */
#define TRIM_TOL (0.05f * 255.0f)

/* Decoded image before luminance: [h][w][nch] 8-bit samples, nch 1..4
 * (gray, gray+alpha, RGB, RGBA).  px is malloc'd; release with free(). */
typedef struct raw_image {
    uint8_t *px;
    size_t w, h;
    int nch;
} raw_image;

static int fail(char *err, size_t errsz, int status, const char *fmt, ...)
    IMG_PRINTF(4, 5);

/* Writes the message (when there is a buffer) and returns status, so that
 * callers can write `return fail(err, errsz, IMG_CORRUPT, "...")`. */
static int fail(char *err, size_t errsz, int status, const char *fmt, ...) {
    if (err && errsz > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return status;
}

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* ---- identification ---------------------------------------------------- */

static bool pnm_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool bmp_header_size_ok(uint32_t hsz) {
    return hsz == 12 || hsz == 40 || hsz == 56 || hsz == 108 || hsz == 124;
}

img_format img_sniff(const uint8_t *d, size_t n) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!d)
        return IMG_FMT_UNKNOWN;
    if (n >= 8 && memcmp(d, png_sig, 8) == 0)
        return IMG_FMT_PNG;
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return IMG_FMT_JPEG;
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0))
        return IMG_FMT_GIF;
    if (n >= 3 && d[0] == 'P' && (d[1] == '5' || d[1] == '6') && pnm_space(d[2]))
        return IMG_FMT_PNM;
    /* "BM" alone would match text; the DIB header size must be one we know. */
    if (n >= 18 && d[0] == 'B' && d[1] == 'M' && bmp_header_size_ok(le32(d + 14)))
        return IMG_FMT_BMP;
    return IMG_FMT_UNKNOWN;
}

const char *img_format_name(img_format fmt) {
    switch (fmt) {
    case IMG_FMT_PNG: return "png";
    case IMG_FMT_JPEG: return "jpeg";
    case IMG_FMT_BMP: return "bmp";
    case IMG_FMT_GIF: return "gif";
    case IMG_FMT_PNM: return "pnm";
    case IMG_FMT_UNKNOWN: break;
    }
    return "unknown";
}

/* Upper-case name for messages. */
static const char *fmt_upper(img_format fmt) {
    switch (fmt) {
    case IMG_FMT_PNG: return "PNG";
    case IMG_FMT_JPEG: return "JPEG";
    case IMG_FMT_BMP: return "BMP";
    case IMG_FMT_GIF: return "GIF";
    case IMG_FMT_PNM: return "PNM";
    case IMG_FMT_UNKNOWN: break;
    }
    return "image";
}

const char *img_status_name(int status) {
    switch (status) {
    case IMG_OK: return "ok";
    case IMG_EMPTY: return "empty";
    case IMG_UNKNOWN_FORMAT: return "unknown_format";
    case IMG_CORRUPT: return "corrupt";
    case IMG_TOO_LARGE: return "too_large";
    case IMG_NOMEM: return "nomem";
    default: return "invalid";
    }
}

/* The size check every decoder makes from the header, before decoding. */
static int check_size(img_format fmt, size_t w, size_t h, size_t max_px, char *err,
                      size_t errsz) {
    if (w == 0 || h == 0)
        return fail(err, errsz, IMG_CORRUPT, "%s has zero width or height (%zux%zu)",
                    fmt_upper(fmt), w, h);
    if (w > max_px / h)
        return fail(err, errsz, IMG_TOO_LARGE,
                    "%s is %zux%zu = %llu pixels, over the limit of %zu (--max-pixels)",
                    fmt_upper(fmt), w, h, (unsigned long long)w * h, max_px);
    return IMG_OK;
}

/* ---- PNG (libpng) ------------------------------------------------------- */

/* State shared with libpng's callbacks.  It lives in decode_png's frame,
 * which never calls setjmp, so nothing here becomes indeterminate after a
 * longjmp (the reason png_run is a separate function: it holds the setjmp
 * and, after a longjmp, touches none of its own locals). */
typedef struct png_ctx {
    const uint8_t *data; /* the file; libpng reads it through png_on_read */
    size_t len, pos;
    size_t max_px;
    int status;          /* set when png_run refuses without a libpng error */
    bool nomem;          /* the allocation hook saw a failure */
    char msg[160];       /* libpng's error message */
    raw_image *img;      /* px is allocated by png_run, freed by the caller */
    png_bytep *rows;     /* [h] pointers into img->px, likewise */
} png_ctx;

static void png_on_read(png_structp png, png_bytep dst, size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos)
        png_error(png, "file ends early (truncated)");
    memcpy(dst, c->data + c->pos, n);
    c->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    if (c)
        snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

/* libpng warnings (bad ancillary chunks, which it skips) are not ours to
 * print: a server does not write to stderr per request. */
static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static png_voidp png_on_malloc(png_structp png, png_alloc_size_t n) {
    void *p = malloc(n);
    if (!p) {
        png_ctx *c = png_get_mem_ptr(png);
        if (c)
            c->nomem = true;
    }
    return p;
}

static void png_on_free(png_structp png, png_voidp p) {
    (void)png;
    free(p);
}

/* Reads header and pixels.  Returns 0, or -1 with c->status set (our own
 * refusal, message already in err) or with c->msg / c->nomem set (libpng). */
static int png_run(png_structp png, png_infop pinfo, png_ctx *c, img_info *info,
                   char *err, size_t errsz) {
    if (setjmp(png_jmpbuf(png)))
        return -1;

    /* A bad CRC in a critical chunk (IHDR, PLTE, IDAT) is fatal; in an
     * ancillary chunk the chunk is dropped. */
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_WARN_DISCARD);
    /* libpng's own 1,000,000 per side default would refuse a 1 x 2,000,000
     * strip that our pixel limit allows; the pixel limit below decides. */
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
#ifdef PNG_HANDLE_AS_UNKNOWN_SUPPORTED
    {
        /* Metadata we never use: skip it unread (its CRC is still checked). */
        static const png_byte skip[] = "iCCP\0iTXt\0tEXt\0zTXt\0sPLT\0eXIf";
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip,
                                    (int)(sizeof skip / 5));
    }
#endif
    png_read_info(png, pinfo);

    size_t w = png_get_image_width(png, pinfo);
    size_t h = png_get_image_height(png, pinfo);
    info->width = w;
    info->height = h;
    int rc = check_size(IMG_FMT_PNG, w, h, c->max_px, err, errsz);
    if (rc != IMG_OK) {
        c->status = rc;
        return -1;
    }
    /* Deflate expands at most 1032:1, so a file of len bytes cannot hold
     * more than about 1032*len bytes of rows: refuse a header that claims
     * more before allocating the image (cheap bomb and truncation check). */
    unsigned long long raw = (unsigned long long)png_get_rowbytes(png, pinfo) * h;
    if (raw / 1024 > (unsigned long long)c->len + 1024) {
        c->status = fail(err, errsz, IMG_CORRUPT,
                         "PNG claims %zux%zu pixels (%llu bytes) but the file has only %zu "
                         "bytes, more than deflate can compress (truncated?)",
                         w, h, raw, c->len);
        return -1;
    }

    /* One layout for every colour type: 8-bit gray, gray+alpha, RGB or RGBA.
     * expand: palette -> RGB, gray 1/2/4 -> 8 bits, tRNS -> alpha. */
    png_set_expand(png);
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
    png_set_scale_16(png); /* rounds: v8 = round(v16 * 255 / 65535) */
#else
    png_set_strip_16(png);
#endif
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);

    int nch = png_get_channels(png, pinfo);
    size_t rowbytes = png_get_rowbytes(png, pinfo);
    if (nch < 1 || nch > 4 || png_get_bit_depth(png, pinfo) != 8 ||
        rowbytes != w * (size_t)nch)
        png_error(png, "unexpected pixel layout after transforms");

    c->img->w = w;
    c->img->h = h;
    c->img->nch = nch;
    c->img->px = malloc(w * h * (size_t)nch); /* <= 4 * max_px <= INT_MAX */
    c->rows = malloc(h * sizeof *c->rows);
    if (!c->img->px || !c->rows) {
        c->status = fail(err, errsz, IMG_NOMEM, "out of memory for a %zux%zu PNG", w, h);
        return -1;
    }
    for (size_t y = 0; y < h; y++)
        c->rows[y] = c->img->px + y * rowbytes;
    png_read_image(png, c->rows); /* all passes when interlaced */
    /* No png_read_end: chunks after the image data change nothing here, and
     * a missing IEND is tolerated as other decoders do. */
    return 0;
}

static int decode_png(const uint8_t *data, size_t len, size_t max_px, raw_image *img,
                      img_info *info, char *err, size_t errsz) {
    png_ctx c = {0};
    c.data = data;
    c.len = len;
    c.max_px = max_px;
    c.img = img;
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &c, png_on_error,
                                               png_on_warning, &c, png_on_malloc,
                                               png_on_free);
    if (!png)
        return fail(err, errsz, IMG_NOMEM, "out of memory starting the PNG decoder");
    png_infop pinfo = png_create_info_struct(png);
    if (!pinfo) {
        png_destroy_read_struct(&png, NULL, NULL);
        return fail(err, errsz, IMG_NOMEM, "out of memory starting the PNG decoder");
    }
    png_set_read_fn(png, &c, png_on_read);

    int rc = png_run(png, pinfo, &c, info, err, errsz);

    png_destroy_read_struct(&png, &pinfo, NULL);
    free(c.rows);
    if (rc == 0)
        return IMG_OK;
    free(img->px);
    img->px = NULL;
    if (c.status != IMG_OK)
        return c.status;
    if (c.nomem)
        return fail(err, errsz, IMG_NOMEM, "out of memory decoding the PNG");
    return fail(err, errsz, IMG_CORRUPT, "PNG is corrupt: %s", c.msg);
}

/* ---- header checks for what stb_image 2.27 does not check ---------------- */

/* Walks a JPEG's marker segments to its end-of-image marker and returns
 * NULL, or says what is wrong.  stb_image 2.27 needs this twice over: a file
 * cut inside its entropy-coded data still "decodes" (stb pads with zeros),
 * and a Huffman table (DHT) with more than 256 codes overruns stb's tables.
 * Segments are skipped by their lengths (so an EOI inside an EXIF thumbnail
 * does not count) and entropy-coded data up to the next marker. */
static const char *jpeg_check(const uint8_t *d, size_t n) {
    static const char *const truncated = "truncated: no end-of-image marker";
    bool scanned = false;
    size_t i = 2; /* after SOI */
    for (;;) {
        while (i < n && d[i] != 0xFF) /* stray bytes between segments */
            i++;
        if (i + 1 >= n)
            return truncated;
        uint8_t m = d[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        i += 2;
        if (m == 0xD9)
            return scanned ? NULL : "no image data before end-of-image";
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) /* no length field */
            continue;
        if (i + 2 > n)
            return truncated;
        size_t seglen = (size_t)d[i] << 8 | d[i + 1];
        if (seglen < 2)
            return "bad segment length";
        if (seglen > n - i)
            return truncated;
        if (m == 0xC4) { /* DHT: one or more tables of 1 + 16 + n bytes */
            size_t p = i + 2, end = i + seglen;
            while (p < end) {
                if (end - p < 17)
                    return "bad Huffman table";
                size_t codes = 0;
                for (size_t k = 1; k <= 16; k++)
                    codes += d[p + k];
                if (codes > 256 || codes > end - p - 17)
                    return "bad Huffman table";
                p += 17 + codes;
            }
        }
        i += seglen;
        if (m == 0xDA) { /* SOS: skip entropy-coded data to the next marker */
            scanned = true;
            while (i + 1 < n && !(d[i] == 0xFF && d[i + 1] != 0x00 &&
                                  !(d[i + 1] >= 0xD0 && d[i + 1] <= 0xD7)))
                i++;
        }
    }
}

/* GIF: stb_image reads past the end of a cut file as zeros and "decodes" it.
 * Walks the blocks up to the end of the first image's data sub-blocks (the
 * frame stb decodes); NULL when they are all inside the file. */
static const char *gif_check(const uint8_t *d, size_t n) {
    static const char *const truncated = "truncated inside the first image";
    if (n < 13)
        return truncated;
    size_t i = 13;
    if (d[10] & 0x80) /* global color table */
        i += (size_t)3 << ((d[10] & 7) + 1);
    for (;;) {
        if (i >= n)
            return truncated;
        uint8_t b = d[i++];
        if (b == 0x3B)
            return "no image before the trailer";
        if (b == 0x2C) { /* image descriptor, local table, LZW code size */
            if (n - i < 9)
                return truncated;
            uint8_t packed = d[i + 8];
            i += 9;
            if (packed & 0x80)
                i += (size_t)3 << ((packed & 7) + 1);
            i++; /* LZW minimum code size */
        } else if (b == 0x21) { /* extension: label */
            i++;
        } else {
            return "unknown block";
        }
        for (;;) { /* data sub-blocks up to the empty one */
            if (i >= n)
                return truncated;
            size_t sz = d[i++];
            if (sz == 0)
                break;
            if (sz > n - i)
                return truncated;
            i += sz;
        }
        if (b == 0x2C)
            return NULL;
    }
}

/* BMP: stb's info returns a top-down (negative) height as is and takes
 * abs(INT_MIN), and a short file decodes with zeros; read the header here.
 * On success *w, *h are the pixel size and *need the bytes the pixel rows
 * need (0 for the RLE kinds stb refuses anyway). Returns 0, or -1. */
static int bmp_header(const uint8_t *d, size_t n, size_t *w, size_t *h,
                      unsigned long long *row_bytes, unsigned long long *last_row,
                      uint32_t *offset) {
    if (n < 26)
        return -1;
    *offset = le32(d + 10);
    uint32_t hsz = le32(d + 14);
    if (!bmp_header_size_ok(hsz) || n < 14 + (size_t)hsz)
        return -1;
    uint32_t bpp, compression = 0;
    if (hsz == 12) {
        *w = le16(d + 18);
        *h = le16(d + 20);
        bpp = le16(d + 24);
    } else {
        int32_t sw = (int32_t)le32(d + 18), sh = (int32_t)le32(d + 22);
        if (sw <= 0 || sh == 0 || sh == INT32_MIN)
            return -1;
        *w = (size_t)sw;
        *h = sh < 0 ? (size_t)-(int64_t)sh : (size_t)sh;
        bpp = le16(d + 28);
        compression = le32(d + 30);
    }
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return -1;
    unsigned long long bits = (unsigned long long)*w * bpp;
    bool plain = compression == 0 || compression == 3;
    *row_bytes = plain ? (bits + 31) / 32 * 4 : 0;
    *last_row = plain ? (bits + 7) / 8 : 0; /* some writers do not pad it */
    return 0;
}

/* PNM (P5/P6) header, parsed the way stb parses it (whitespace, '#'
 * comments to end of line, decimal integers) but with at most 9 digits per
 * number, so stb's int parser cannot overflow.  *off: first data byte. */
static int pnm_header(const uint8_t *d, size_t n, size_t *w, size_t *h, int *nch,
                      unsigned *maxval, size_t *off) {
    size_t i = 2;
    unsigned v[3];
    if (n < 3)
        return -1;
    *nch = d[1] == '6' ? 3 : 1;
    uint8_t c = d[i++];
    for (int k = 0; k < 3; k++) {
        for (;;) { /* whitespace and comments */
            while (pnm_space(c)) {
                if (i >= n)
                    return -1;
                c = d[i++];
            }
            if (c != '#')
                break;
            while (c != '\n' && c != '\r') {
                if (i >= n)
                    return -1;
                c = d[i++];
            }
        }
        int digits = 0;
        v[k] = 0;
        while (c >= '0' && c <= '9') {
            if (++digits > 9 || i >= n)
                return -1;
            v[k] = v[k] * 10 + (unsigned)(c - '0');
            c = d[i++];
        }
        if (digits == 0)
            return -1;
    }
    if (!pnm_space(c)) /* one whitespace byte ends the header */
        return -1;
    *w = v[0];
    *h = v[1];
    *maxval = v[2];
    *off = i;
    return v[2] >= 1 && v[2] <= 65535 ? 0 : -1;
}

/* 16-bit PNM: stb 2.27 returns these samples in host byte order (wrong on
 * little-endian machines), so they are read here, big-endian as the format
 * says, and scaled to 8 bits by maxval. */
static int pnm16_decode(const uint8_t *d, size_t w, size_t h, int nch, unsigned maxval,
                        raw_image *img) {
    size_t n = w * h * (size_t)nch;
    img->px = malloc(n);
    if (!img->px)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = (unsigned)d[2 * i] << 8 | d[2 * i + 1];
        if (v > maxval)
            v = maxval;
        img->px[i] = (uint8_t)((v * 510u + maxval) / (2u * maxval));
    }
    img->w = w;
    img->h = h;
    img->nch = nch;
    return 0;
}

/* ---- JPEG, BMP, GIF, PNM (stb_image) ----------------------------------------------- */

static int decode_stb(img_format fmt, const uint8_t *data, size_t len, size_t max_px,
                      raw_image *img, img_info *info, char *err, size_t errsz) {
    const char *name = fmt_upper(fmt);
    if (len > INT_MAX)
        return fail(err, errsz, IMG_TOO_LARGE, "%s file is %zu bytes, over %d", name, len,
                    INT_MAX);

    size_t w = 0, h = 0, pnm_off = 0;
    unsigned pnm_max = 255;
    int pnm_nch = 1, rc;
    unsigned long long bmp_row = 0, bmp_last = 0;
    uint32_t bmp_off = 0;
    if (fmt == IMG_FMT_PNM) {
        if (pnm_header(data, len, &w, &h, &pnm_nch, &pnm_max, &pnm_off) != 0)
            return fail(err, errsz, IMG_CORRUPT,
                        "PNM header is malformed (want P5 or P6, width, height, "
                        "maxval 1..65535)");
    } else if (fmt == IMG_FMT_BMP) {
        if (bmp_header(data, len, &w, &h, &bmp_row, &bmp_last, &bmp_off) != 0)
            return fail(err, errsz, IMG_CORRUPT, "BMP header is malformed or unsupported");
    } else {
        if (fmt == IMG_FMT_JPEG) { /* before stb parses any table */
            const char *why = jpeg_check(data, len);
            if (why)
                return fail(err, errsz, IMG_CORRUPT, "JPEG is corrupt (%s)", why);
        }
        if (fmt == IMG_FMT_GIF) {
            const char *why = gif_check(data, len);
            if (why)
                return fail(err, errsz, IMG_CORRUPT, "GIF is corrupt (%s)", why);
        }
        int iw, ih, ic;
        if (!stbi_info_from_memory(data, (int)len, &iw, &ih, &ic)) {
            const char *why = stbi_failure_reason();
            if (why && strcmp(why, "too large") == 0)
                return fail(err, errsz, IMG_TOO_LARGE,
                            "%s is over %d pixels on a side", name, STBI_MAX_DIMENSIONS);
            return fail(err, errsz, IMG_CORRUPT, "%s header is corrupt (%s)", name,
                        why ? why : "unreadable");
        }
        w = iw > 0 ? (size_t)iw : 0;
        h = ih > 0 ? (size_t)ih : 0;
    }
    info->width = w;
    info->height = h;
    rc = check_size(fmt, w, h, max_px, err, errsz);
    if (rc != IMG_OK)
        return rc;
    if (w > STBI_MAX_DIMENSIONS || h > STBI_MAX_DIMENSIONS)
        return fail(err, errsz, IMG_TOO_LARGE, "%s is over %d pixels on a side", name,
                    STBI_MAX_DIMENSIONS);

    /* Now that w*h is bounded, products of sizes cannot overflow. */
    if (fmt == IMG_FMT_BMP && bmp_row > 0) {
        unsigned long long need = bmp_off + bmp_row * (h - 1) + bmp_last;
        if (need > len)
            return fail(err, errsz, IMG_CORRUPT,
                        "BMP is truncated: its pixels need %llu bytes, the file has %zu",
                        need, len);
    }
    if (fmt == IMG_FMT_PNM) {
        size_t need = w * h * (size_t)pnm_nch * (pnm_max > 255 ? 2 : 1);
        if (need > len - pnm_off)
            return fail(err, errsz, IMG_CORRUPT,
                        "PNM is truncated: its pixels need %zu bytes, the file has %zu "
                        "after the header",
                        need, len - pnm_off);
        if (pnm_max > 255) {
            if (pnm16_decode(data + pnm_off, w, h, pnm_nch, pnm_max, img) != 0)
                return fail(err, errsz, IMG_NOMEM, "out of memory for a %zux%zu PNM", w,
                            h);
            return IMG_OK;
        }
    }

    int lw, lh, lc;
    uint8_t *px = stbi_load_from_memory(data, (int)len, &lw, &lh, &lc, 0);
    if (!px) {
        const char *why = stbi_failure_reason();
        if (why && strcmp(why, "outofmem") == 0)
            return fail(err, errsz, IMG_NOMEM, "out of memory decoding a %zux%zu %s", w, h,
                        name);
        if (why && strcmp(why, "too large") == 0)
            return fail(err, errsz, IMG_TOO_LARGE, "%s is too large to decode", name);
        return fail(err, errsz, IMG_CORRUPT, "%s is corrupt (%s)", name,
                    why ? why : "undecodable");
    }
    if ((size_t)lw != w || (size_t)lh != h || lc < 1 || lc > 4) {
        free(px);
        return fail(err, errsz, IMG_CORRUPT,
                    "%s decoded to %dx%d (%d channels), not the %zux%zu of its header",
                    name, lw, lh, lc, w, h);
    }
    img->px = px;
    img->w = w;
    img->h = h;
    img->nch = lc;
    if (fmt == IMG_FMT_PNM && pnm_max != 255) { /* stb does not scale by maxval */
        size_t n = w * h * (size_t)lc;
        for (size_t i = 0; i < n; i++) {
            unsigned v = px[i] > pnm_max ? pnm_max : px[i];
            px[i] = (uint8_t)((v * 510u + pnm_max) / (2u * pnm_max));
        }
    }
    return IMG_OK;
}

/* ---- luminance, background, compositing ---------------------------------- */

/* Rec. 601 luma in 8-bit units; a gray pixel (R == G == B) stays exact. */
static float px_luma(const uint8_t *p, int nch) {
    if (nch <= 2 || (p[0] == p[1] && p[1] == p[2]))
        return p[0];
    return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
}

static unsigned px_alpha(const uint8_t *p, int nch) {
    return nch == 2 ? p[1] : nch == 4 ? p[3] : 255u;
}

typedef struct border_hist {
    size_t count[256]; /* luminance histogram of the opaque border pixels */
    size_t n;
} border_hist;

static void hist_add(border_hist *bh, const raw_image *img, size_t y, size_t x) {
    const uint8_t *p = img->px + (y * img->w + x) * (size_t)img->nch;
    if (px_alpha(p, img->nch) >= 128) {
        float l = px_luma(p, img->nch) + 0.5f;
        bh->count[l >= 255.0f ? 255 : (size_t)l]++;
        bh->n++;
    }
}

/* Background luminance in 8-bit units (see img_to_input in image.h for the
 * rule); *chosen tells that no border pixel was opaque. */
static float find_background(const raw_image *img, bool is28, bool *chosen) {
    border_hist bh;
    memset(&bh, 0, sizeof bh);
    size_t w = img->w, h = img->h;
    for (size_t x = 0; x < w; x++) {
        hist_add(&bh, img, 0, x);
        if (h > 1)
            hist_add(&bh, img, h - 1, x);
    }
    for (size_t y = 1; y + 1 < h; y++) {
        hist_add(&bh, img, y, 0);
        if (w > 1)
            hist_add(&bh, img, y, w - 1);
    }
    *chosen = bh.n == 0;
    if (bh.n > 0) { /* median */
        size_t half = (bh.n + 1) / 2, cum = 0;
        for (size_t v = 0; v < 256; v++) {
            cum += bh.count[v];
            if (cum >= half)
                return (float)v;
        }
    }
    if (is28)
        return 0.0f;
    /* A cut-out on a transparent canvas: contrast with the item. */
    double sum = 0.0;
    size_t n = 0, npx = w * h;
    for (size_t i = 0; i < npx; i++) {
        const uint8_t *p = img->px + i * (size_t)img->nch;
        if (px_alpha(p, img->nch) >= 128) {
            sum += px_luma(p, img->nch);
            n++;
        }
    }
    return n > 0 && sum / (double)n < 127.5 ? 255.0f : 0.0f;
}

/* plane[i] = luminance composited onto bg, in 8-bit units.  Returns whether
 * any pixel was not fully opaque. */
static bool to_luma(const raw_image *img, float bg, float *plane) {
    size_t npx = img->w * img->h;
    if (img->nch == 1) { /* gray, opaque: the common upload (vectorises) */
        for (size_t i = 0; i < npx; i++) plane[i] = img->px[i];
        return false;
    }
    bool translucent = false;
    for (size_t i = 0; i < npx; i++) {
        const uint8_t *p = img->px + i * (size_t)img->nch;
        unsigned a = px_alpha(p, img->nch);
        float l = px_luma(p, img->nch);
        if (a != 255) {
            translucent = true;
            l = ((float)a * l + (float)(255u - a) * bg) / 255.0f;
        }
        plane[i] = l;
    }
    return translucent;
}

static float clamp01(float x) {
    x = x > 0.0f ? x : 0.0f; /* NaN -> 0; two selects (max, min) vectorise */
    return x < 1.0f ? x : 1.0f;
}

/* ---- trim / scale / centre ---------------------------------------------- */

/* Bounding box of the pixels further than TRIM_TOL from bg; false when every
 * pixel is background. */
static bool find_item(const float *plane, size_t w, size_t h, float bg, size_t *x0,
                      size_t *y0, size_t *x1, size_t *y1) {
    bool found = false;
    *x0 = w;
    *y0 = h;
    *x1 = 0;
    *y1 = 0;
    for (size_t y = 0; y < h; y++) {
        const float *row = plane + y * w;
        for (size_t x = 0; x < w; x++) {
            if (fabsf(row[x] - bg) > TRIM_TOL) {
                found = true;
                if (x < *x0) *x0 = x;
                if (x > *x1) *x1 = x;
                if (y < *y0) *y0 = y;
                if (y > *y1) *y1 = y;
            }
        }
    }
    return found;
}

/* Scales the tw x th box at src (row stride w floats) into dst [rh][rw]:
 * area (box) filter along an axis that shrinks, bilinear (triangle) along an
 * axis that grows, which avoids the ringing of the cubic defaults. */
static int scale_box(const float *src, size_t w, size_t tw, size_t th, float *dst, size_t rw,
                     size_t rh) {
    stbir_filter fx = rw < tw ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE;
    stbir_filter fy = rh < th ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE;
    return stbir_resize(src, (int)tw, (int)th, (int)(w * sizeof(float)), dst, (int)rw,
                        (int)rh, (int)(rw * sizeof(float)), STBIR_TYPE_FLOAT, 1,
                        STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP,
                        fx, fy, STBIR_COLORSPACE_LINEAR, NULL)
               ? 0
               : -1;
}

/* Fashion-MNIST-like 28x28 from a plane of any other size: trim, scale the
 * longest side to 28, centre on background.  Fills out in 8-bit units. */
static int make_canvas(const float *plane, size_t w, size_t h, float bg,
                       float out[IMG_N], img_info *info) {
    size_t x0, y0, x1, y1;
    if (find_item(plane, w, h, bg, &x0, &y0, &x1, &y1)) {
        info->trimmed = x0 > 0 || y0 > 0 || x1 + 1 < w || y1 + 1 < h;
    } else { /* all background: keep the whole image */
        x0 = y0 = 0;
        x1 = w - 1;
        y1 = h - 1;
    }
    size_t tw = x1 - x0 + 1, th = y1 - y0 + 1, rw, rh;
    info->trim_x = x0;
    info->trim_y = y0;
    info->trim_w = tw;
    info->trim_h = th;
    if (tw >= th) {
        rw = IMG_SIDE;
        rh = (size_t)floor((double)th * IMG_SIDE / (double)tw + 0.5);
    } else {
        rh = IMG_SIDE;
        rw = (size_t)floor((double)tw * IMG_SIDE / (double)th + 0.5);
    }
    if (rw < 1) rw = 1;
    if (rh < 1) rh = 1;

    float item[IMG_N]; /* [rh][rw] */
    const float *src = plane + y0 * w + x0;
    info->resized = rw != tw || rh != th;
    if (info->resized) {
        if (scale_box(src, w, tw, th, item, rw, rh) != 0)
            return -1;
    } else {
        for (size_t y = 0; y < rh; y++)
            memcpy(item + y * rw, src + y * w, rw * sizeof(float));
    }
    size_t ox = (IMG_SIDE - rw) / 2, oy = (IMG_SIDE - rh) / 2;
    info->item_x = ox;
    info->item_y = oy;
    info->item_w = rw;
    info->item_h = rh;
    for (size_t i = 0; i < IMG_N; i++)
        out[i] = bg;
    for (size_t y = 0; y < rh; y++)
        memcpy(out + (oy + y) * IMG_SIDE + ox, item + y * rw, rw * sizeof(float));
    return 0;
}

/* ---- public ------------------------------------------------------------- */

int img_to_input(const uint8_t *data, size_t len, size_t max_pixels, img_invert mode,
                 float out[IMG_N], img_info *info, char *err, size_t errsz) {
    img_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    info->format = img_format_name(IMG_FMT_UNKNOWN);
    if (err && errsz > 0)
        err[0] = '\0';
    if (!data || len == 0)
        return fail(err, errsz, IMG_EMPTY, "no image data (empty request body)");
    if (max_pixels == 0)
        max_pixels = IMG_DEFAULT_MAX_PIXELS;
    if (max_pixels > HARD_MAX_PIXELS)
        max_pixels = HARD_MAX_PIXELS;

    img_format fmt = img_sniff(data, len);
    if (fmt == IMG_FMT_UNKNOWN) {
        if (len >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '7')
            return fail(err, errsz, IMG_UNKNOWN_FORMAT,
                        "PNM variant P%c is not supported; send binary P5 (gray) or P6 "
                        "(colour)",
                        data[1]);
        unsigned b[4] = {0, 0, 0, 0};
        for (size_t i = 0; i < 4 && i < len; i++)
            b[i] = data[i];
        return fail(err, errsz, IMG_UNKNOWN_FORMAT,
                    "unrecognised image format (first bytes %02x %02x %02x %02x); send "
                    "PNG, JPEG, BMP, GIF or PNM",
                    b[0], b[1], b[2], b[3]);
    }
    info->format = img_format_name(fmt);

    raw_image img = {NULL, 0, 0, 0};
    int rc = fmt == IMG_FMT_PNG ? decode_png(data, len, max_pixels, &img, info, err, errsz)
                                : decode_stb(fmt, data, len, max_pixels, &img, info, err, errsz);
    if (rc != IMG_OK)
        return rc;
    info->channels = img.nch;

    bool is28 = img.w == IMG_SIDE && img.h == IMG_SIDE;
    float *plane = malloc(img.w * img.h * sizeof(float)); /* [h][w], <= INT_MAX bytes */
    if (!plane) {
        free(img.px);
        return fail(err, errsz, IMG_NOMEM, "out of memory for a %zux%zu image", img.w,
                    img.h);
    }
    bool chosen;
    float bg = find_background(&img, is28, &chosen);
    info->border_transparent = chosen;
    info->background = bg / 255.0f;
    info->has_alpha = to_luma(&img, bg, plane);
    free(img.px);

    float canvas[IMG_N]; /* 8-bit units */
    if (is28) {
        memcpy(canvas, plane, sizeof canvas);
        info->trim_w = info->trim_h = IMG_SIDE;
        info->item_w = info->item_h = IMG_SIDE;
    } else if (make_canvas(plane, img.w, img.h, bg, canvas, info) != 0) {
        free(plane);
        return fail(err, errsz, IMG_NOMEM, "out of memory scaling a %zux%zu image", img.w,
                    img.h);
    }
    free(plane);

    info->inverted = mode == IMG_INVERT_ON ||
                     (mode == IMG_INVERT_AUTO && !is28 && info->background > 0.5f);
    for (size_t i = 0; i < IMG_N; i++) out[i] = clamp01(canvas[i] / 255.0f);
    if (info->inverted)
        for (size_t i = 0; i < IMG_N; i++) out[i] = 1.0f - out[i];
    return IMG_OK;
}

void img_input_to_gray8(const float in[IMG_N], uint8_t out[IMG_N]) {
    /* round(clamp01(x) * 255) written as scale, clamp to [0.5, 255.5], then
     * truncate: the same byte for every float (rounding is monotonic, so
     * x <= 0, x >= 1 and NaN land on the bounds, and x in (0, 1) is the same
     * expression), and this form vectorises - clamping first made GCC
     * branch twice per pixel.  test_input_to_gray8 checks it against the
     * first form. */
    for (size_t i = 0; i < IMG_N; i++) {
        float v = in[i] * 255.0f + 0.5f;
        v = v > 0.5f ? v : 0.5f; /* NaN too */
        v = v < 255.5f ? v : 255.5f;
        out[i] = (uint8_t)(int32_t)v;
    }
}

/* ---- PNG encoder ---------------------------------------------------------- */

/* Growable output buffer; lives in img_png_encode_gray8's frame (which does
 * not call setjmp), like png_ctx above. */
typedef struct png_sink {
    uint8_t *buf; /* malloc'd; handed to the caller on success */
    size_t len, cap;
    bool nomem;
    char msg[160];
} png_sink;

static void sink_write(png_structp png, png_bytep src, size_t n) {
    png_sink *s = png_get_io_ptr(png);
    if (n > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap - s->len < n) {
            if (cap > SIZE_MAX / 2) {
                s->nomem = true;
                png_error(png, "output too large");
            }
            cap *= 2;
        }
        uint8_t *p = realloc(s->buf, cap);
        if (!p) {
            s->nomem = true;
            png_error(png, "out of memory");
        }
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, src, n);
    s->len += n;
}

static void sink_flush(png_structp png) { (void)png; }

static void sink_error(png_structp png, png_const_charp msg) {
    png_sink *s = png_get_error_ptr(png);
    if (s)
        snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "unknown error");
    png_longjmp(png, 1);
}

static int png_write_run(png_structp png, png_infop pinfo, const uint8_t *px, size_t w,
                         size_t h) {
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_IHDR(png, pinfo, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, pinfo);
    for (size_t y = 0; y < h; y++)
        png_write_row(png, px + y * w);
    png_write_end(png, NULL);
    return 0;
}

int img_png_encode_gray8(const uint8_t *px, int w, int h, uint8_t **out, size_t *out_len,
                         char *err, size_t errsz) {
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!px || !out || !out_len || w <= 0 || h <= 0)
        return fail(err, errsz, IMG_EMPTY, "nothing to encode (%dx%d)", w, h);
    if ((size_t)w > SIZE_MAX / (size_t)h)
        return fail(err, errsz, IMG_TOO_LARGE, "%dx%d is too large to encode", w, h);

    png_sink s;
    memset(&s, 0, sizeof s);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s, sink_error,
                                              png_on_warning);
    if (!png)
        return fail(err, errsz, IMG_NOMEM, "out of memory starting the PNG encoder");
    png_infop pinfo = png_create_info_struct(png);
    if (!pinfo) {
        png_destroy_write_struct(&png, NULL);
        return fail(err, errsz, IMG_NOMEM, "out of memory starting the PNG encoder");
    }
    png_set_write_fn(png, &s, sink_write, sink_flush);
    /* These images are small (the 28x28 input is 812 bytes before deflate):
     * a small zlib window and hash need far less memory to set up and clear
     * per request than the 32 KiB / level-8 defaults, for the same output
     * size at this scale. */
    if ((size_t)w * (size_t)h <= 64 * 64) {
        png_set_compression_window_bits(png, 12);
        png_set_compression_mem_level(png, 2);
    }

    int rc = png_write_run(png, pinfo, px, (size_t)w, (size_t)h);

    png_destroy_write_struct(&png, &pinfo);
    if (rc != 0) {
        free(s.buf);
        if (s.nomem)
            return fail(err, errsz, IMG_NOMEM, "out of memory encoding a %dx%d PNG", w, h);
        return fail(err, errsz, IMG_CORRUPT, "PNG encoding failed: %s", s.msg);
    }
    *out = s.buf;
    *out_len = s.len;
    return IMG_OK;
}

/* ---- PNG with stored deflate blocks ---------------------------------------- */

static uint8_t *put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* Writes the chunk's CRC (over type and data, which end at end) and returns
 * the byte after it. */
static uint8_t *end_chunk(uint8_t *type, uint8_t *end) {
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, type, (uInt)(end - type));
    return put_be32(end, (uint32_t)crc);
}

#define STORED_MAX 65535u /* bytes in one stored block */

int img_png_store_gray8(const uint8_t *px, int w, int h, uint8_t **out, size_t *out_len,
                        char *err, size_t errsz) {
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!px || !out || !out_len || w <= 0 || h <= 0)
        return fail(err, errsz, IMG_EMPTY, "nothing to encode (%dx%d)", w, h);
    /* Each row is a filter byte (0, none) and w pixels; the zlib stream is
     * 2 header bytes, 5 bytes per block, the data and the Adler-32; the
     * IDAT chunk's length field is 31 bits. */
    size_t row = (size_t)w + 1;
    if ((size_t)h > (size_t)0x7fffffff / row)
        return fail(err, errsz, IMG_TOO_LARGE, "%dx%d is too large to encode", w, h);
    size_t raw = row * (size_t)h;
    size_t blocks = (raw + STORED_MAX - 1) / STORED_MAX;
    size_t zlen = 2 + 5 * blocks + raw + 4;
    if (zlen > 0x7fffffff)
        return fail(err, errsz, IMG_TOO_LARGE, "%dx%d is too large to encode", w, h);
    size_t total = 8 + (12 + 13) + (12 + zlen) + 12;
    uint8_t *buf = malloc(total);
    if (!buf)
        return fail(err, errsz, IMG_NOMEM, "out of memory encoding a %dx%d PNG", w, h);

    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *p = buf;
    memcpy(p, sig, 8);
    p += 8;
    p = put_be32(p, 13);
    uint8_t *type = p;
    memcpy(p, "IHDR", 4);
    p = put_be32(p + 4, (uint32_t)w);
    p = put_be32(p, (uint32_t)h);
    *p++ = 8; /* bit depth */
    *p++ = 0; /* colour type: gray */
    *p++ = 0; /* compression: deflate */
    *p++ = 0; /* filter method 0 */
    *p++ = 0; /* not interlaced */
    p = end_chunk(type, p);

    p = put_be32(p, (uint32_t)zlen);
    type = p;
    memcpy(p, "IDAT", 4);
    p += 4;
    *p++ = 0x78; /* CMF: deflate, 32 KiB window */
    *p++ = 0x01; /* FLG: no dictionary, (0x78 << 8 | 0x01) % 31 == 0 */
    uLong adler = adler32(0L, Z_NULL, 0);
    size_t y = 0, x = 0; /* next source byte: row y, column x (x == 0: the filter byte) */
    for (size_t left = raw; left > 0;) {
        unsigned n = left > STORED_MAX ? STORED_MAX : (unsigned)left;
        left -= n;
        *p++ = left == 0; /* BFINAL on the last block, BTYPE 00 (stored) */
        *p++ = (uint8_t)n;
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)~n;
        *p++ = (uint8_t)(~n >> 8);
        uint8_t *data = p;
        while (n > 0) {
            if (x == 0) {
                *p++ = 0;
                x = 1;
                n--;
                continue;
            }
            size_t k = row - x < n ? row - x : n;
            memcpy(p, px + y * (size_t)w + (x - 1), k);
            p += k;
            n -= (unsigned)k;
            x += k;
            if (x == row) {
                x = 0;
                y++;
            }
        }
        adler = adler32(adler, data, (uInt)(p - data));
    }
    p = put_be32(p, (uint32_t)adler);
    p = end_chunk(type, p);

    p = put_be32(p, 0);
    type = p;
    memcpy(p, "IEND", 4);
    p = end_chunk(type, p + 4);

    *out = buf;
    *out_len = (size_t)(p - buf);
    return IMG_OK;
}

/* A hack: with STB_IMAGE_STATIC and PNG left out, stb_image.h declares a few
 * PNG/zlib functions static and never defines them.  GCC reports that at the
 * end of the translation unit and consults the pragma state there, not at
 * the declaration, so the push/pop around the #include cannot silence it.
 * Clang honours the pop (and still checks this file for unused functions). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
