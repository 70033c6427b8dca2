/* test_image.c - Check tests for server/image.c: format identification,
 * decoding of every supported format and PNG flavour, the size limit, error
 * codes for malformed input, and the trim / scale / centre / invert pipeline.
 *
 * Every fixture is generated here: PNG with libpng (colour types, bit
 * depths, palette + tRNS, Adam7), BMP with stb_image_write, JPEG with a
 * small baseline encoder below, GIF and PNM written byte by byte, broken files made by cutting and flipping
 * bytes of good ones.  Left out: HTTP (the server's tests) and long fuzzing
 * (the libFuzzer target); a short seeded mutation loop here catches the
 * obvious under the sanitizers.
 *
 * Runs in Check's fork mode and with CK_FORK=no; exit status is the verdict. */
#include "image.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <png.h>
#include <zlib.h>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

/* ---- fixture helpers ---------------------------------------------------- */

typedef struct membuf {
    uint8_t *buf; /* malloc'd */
    size_t len, cap;
} membuf;

static void mb_append(membuf *m, const void *p, size_t n) {
    if (n > m->cap - m->len) {
        size_t cap = m->cap ? m->cap : 256;
        while (cap - m->len < n)
            cap *= 2;
        uint8_t *b = realloc(m->buf, cap);
        ck_assert_ptr_nonnull(b);
        m->buf = b;
        m->cap = cap;
    }
    if (n > 0)
        memcpy(m->buf + m->len, p, n);
    m->len += n;
}

static void mb_byte(membuf *m, unsigned b) {
    uint8_t v = (uint8_t)b;
    mb_append(m, &v, 1);
}

static void mb_be32(membuf *m, uint32_t v) {
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mb_append(m, b, 4);
}

static void mb_le16(membuf *m, unsigned v) {
    mb_byte(m, v & 0xFF);
    mb_byte(m, (v >> 8) & 0xFF);
}

static void mb_free(membuf *m) {
    free(m->buf);
    m->buf = NULL;
    m->len = m->cap = 0;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* Appends a PNG chunk (length, type, data, CRC over type and data). */
static void mb_chunk(membuf *m, const char type[4], const uint8_t *data, size_t n) {
    mb_be32(m, (uint32_t)n);
    size_t start = m->len;
    mb_append(m, type, 4);
    mb_append(m, data, n);
    mb_be32(m, crc32_png(m->buf + start, n + 4));
}

/* Offset of the first chunk of the given type in a PNG, or 0. */
static size_t png_find_chunk(const membuf *m, const char type[4]) {
    size_t i = 8;
    while (i + 12 <= m->len) {
        size_t n = (size_t)m->buf[i] << 24 | (size_t)m->buf[i + 1] << 16 |
                   (size_t)m->buf[i + 2] << 8 | m->buf[i + 3];
        if (memcmp(m->buf + i + 4, type, 4) == 0)
            return i;
        i += 12 + n;
    }
    return 0;
}

/* What a fixture PNG looks like; rows are in libpng's packed layout. */
typedef struct png_spec {
    int w, h, color_type, bit_depth, interlace;
    const png_color *palette;
    int n_palette;
    const png_byte *trns; /* palette alpha, n_trns entries */
    int n_trns;
} png_spec;

static void png_fixture_write(png_structp png, png_bytep d, size_t n) {
    mb_append(png_get_io_ptr(png), d, n);
}

/* Holds the setjmp, so the caller's locals stay determinate. */
static int png_fixture_run(png_structp png, png_infop info, const png_spec *s,
                           png_bytepp rows) {
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->bit_depth,
                 s->color_type, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (s->palette)
        png_set_PLTE(png, info, s->palette, s->n_palette);
    if (s->trns)
        png_set_tRNS(png, info, s->trns, s->n_trns, NULL);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    return 0;
}

static membuf png_fixture(const png_spec *s, const uint8_t *data) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    ck_assert_ptr_nonnull(png);
    png_infop info = png_create_info_struct(png);
    ck_assert_ptr_nonnull(info);
    png_set_write_fn(png, &m, png_fixture_write, NULL);
    int channels = s->color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                   : s->color_type == PNG_COLOR_TYPE_RGB      ? 3
                   : s->color_type == PNG_COLOR_TYPE_RGBA     ? 4
                                                              : 1;
    size_t rowbytes = ((size_t)s->w * (size_t)channels * (size_t)s->bit_depth + 7) / 8;
    png_bytepp rows = malloc((size_t)s->h * sizeof *rows);
    ck_assert_ptr_nonnull(rows);
    for (size_t y = 0; y < (size_t)s->h; y++)
        rows[y] = (png_bytep)(uintptr_t)(data + y * rowbytes); /* libpng reads only */
    int rc = png_fixture_run(png, info, s, rows);
    png_destroy_write_struct(&png, &info);
    free(rows);
    ck_assert_int_eq(rc, 0);
    return m;
}

static membuf png_gray8(const uint8_t *px, int w, int h, int interlace) {
    png_spec s = {w, h, PNG_COLOR_TYPE_GRAY, 8, interlace, NULL, 0, NULL, 0};
    return png_fixture(&s, px);
}

/* A baseline JPEG encoder for fixtures.  (stb_image_write's JPEG writer
 * shifts signed ints out of range, which UBSan reports, so it is not used.)
 * 8x8 blocks, no subsampling, all-ones quantisation (close to lossless), the
 * standard Huffman tables of ITU-T T.81 Annex K for every component; comp 1
 * writes gray, comp 3 converts RGB to YCbCr (JFIF). */
static const uint8_t jpg_dc_bits[16] = {0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t jpg_dc_vals[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t jpg_ac_bits[16] = {0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d};
static const uint8_t jpg_ac_vals[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
    0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
    0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
    0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
    0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
    0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};
#define PI 3.14159265358979323846
#define SQRT1_2 0.70710678118654752440

/* zigzag position -> natural (row-major) index */
static const uint8_t jpg_zigzag[64] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,  12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6,  7,  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
    30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

typedef struct huff {
    uint16_t code[256];
    uint8_t size[256];
} huff;

static void huff_build(huff *t, const uint8_t bits[16], const uint8_t *vals) {
    unsigned code = 0;
    size_t k = 0;
    memset(t, 0, sizeof *t);
    for (int len = 1; len <= 16; len++) {
        for (unsigned i = 0; i < bits[len - 1]; i++, k++) {
            t->code[vals[k]] = (uint16_t)code++;
            t->size[vals[k]] = (uint8_t)len;
        }
        code <<= 1;
    }
}

typedef struct bitw {
    membuf *m;
    unsigned acc; /* bits not yet written, fewer than 8 */
    int n;
} bitw;

static void put_bits(bitw *b, unsigned code, int len) {
    for (int k = len - 1; k >= 0; k--) {
        b->acc = (b->acc << 1) | ((code >> k) & 1u);
        if (++b->n == 8) {
            mb_byte(b->m, b->acc);
            if (b->acc == 0xFF)
                mb_byte(b->m, 0); /* byte stuffing */
            b->acc = 0;
            b->n = 0;
        }
    }
}

static int jpg_category(int v) {
    int c = 0;
    for (unsigned a = (unsigned)(v < 0 ? -v : v); a; a >>= 1)
        c++;
    return c;
}

static void put_value(bitw *b, int v, int cat) {
    put_bits(b, (unsigned)(v < 0 ? v + (1 << cat) - 1 : v), cat);
}

/* f: one 8x8 block of level-shifted samples, row-major. */
static void jpg_block(bitw *b, const double f[64], int *pred, const huff *dc, const huff *ac) {
    int q[64];
    for (int v = 0; v < 8; v++)
        for (int u = 0; u < 8; u++) {
            double sum = 0.0;
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    sum += f[y * 8 + x] * cos((2 * x + 1) * u * PI / 16) *
                           cos((2 * y + 1) * v * PI / 16);
            double cu = u ? 1.0 : SQRT1_2, cv = v ? 1.0 : SQRT1_2;
            q[v * 8 + u] = (int)lround(0.25 * cu * cv * sum);
        }
    int diff = q[0] - *pred, cat = jpg_category(diff);
    *pred = q[0];
    put_bits(b, dc->code[cat], dc->size[cat]);
    put_value(b, diff, cat);
    int run = 0;
    for (int k = 1; k < 64; k++) {
        int v = q[jpg_zigzag[k]];
        if (v == 0) {
            run++;
            continue;
        }
        for (; run > 15; run -= 16)
            put_bits(b, ac->code[0xF0], ac->size[0xF0]);
        cat = jpg_category(v);
        put_bits(b, ac->code[run << 4 | cat], ac->size[run << 4 | cat]);
        put_value(b, v, cat);
        run = 0;
    }
    if (run > 0)
        put_bits(b, ac->code[0x00], ac->size[0x00]); /* end of block */
}

static void mb_be16(membuf *m, unsigned v) {
    mb_byte(m, (v >> 8) & 0xFF);
    mb_byte(m, v & 0xFF);
}

static membuf jpeg_fixture(const uint8_t *px, int w, int h, int comp) {
    membuf m = {0};
    int nc = comp == 1 ? 1 : 3;
    mb_be16(&m, 0xFFD8);
    mb_be16(&m, 0xFFDB); /* DQT: table 0, all ones */
    mb_be16(&m, 67);
    mb_byte(&m, 0);
    for (int k = 0; k < 64; k++)
        mb_byte(&m, 1);
    mb_be16(&m, 0xFFC0); /* SOF0 */
    mb_be16(&m, (unsigned)(8 + 3 * nc));
    mb_byte(&m, 8);
    mb_be16(&m, (unsigned)h);
    mb_be16(&m, (unsigned)w);
    mb_byte(&m, (unsigned)nc);
    for (int c = 0; c < nc; c++) {
        mb_byte(&m, (unsigned)c + 1);
        mb_byte(&m, 0x11);
        mb_byte(&m, 0);
    }
    mb_be16(&m, 0xFFC4); /* DHT: DC 0 and AC 0 */
    mb_be16(&m, 2 + 17 + 12 + 17 + 162);
    mb_byte(&m, 0x00);
    mb_append(&m, jpg_dc_bits, 16);
    mb_append(&m, jpg_dc_vals, 12);
    mb_byte(&m, 0x10);
    mb_append(&m, jpg_ac_bits, 16);
    mb_append(&m, jpg_ac_vals, 162);
    mb_be16(&m, 0xFFDA); /* SOS */
    mb_be16(&m, (unsigned)(6 + 2 * nc));
    mb_byte(&m, (unsigned)nc);
    for (int c = 0; c < nc; c++) {
        mb_byte(&m, (unsigned)c + 1);
        mb_byte(&m, 0x00);
    }
    mb_byte(&m, 0);
    mb_byte(&m, 63);
    mb_byte(&m, 0);

    huff dc, ac;
    huff_build(&dc, jpg_dc_bits, jpg_dc_vals);
    huff_build(&ac, jpg_ac_bits, jpg_ac_vals);
    bitw b = {&m, 0, 0};
    int pred[3] = {0, 0, 0};
    for (int by = 0; by < h; by += 8)
        for (int bx = 0; bx < w; bx += 8)
            for (int c = 0; c < nc; c++) {
                double f[64];
                for (int y = 0; y < 8; y++)
                    for (int x = 0; x < 8; x++) {
                        int sx = bx + x < w ? bx + x : w - 1; /* replicate edges */
                        int sy = by + y < h ? by + y : h - 1;
                        const uint8_t *p = px + ((size_t)sy * (size_t)w + (size_t)sx) * (size_t)comp;
                        double v;
                        if (nc == 1)
                            v = p[0];
                        else if (c == 0)
                            v = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
                        else if (c == 1)
                            v = -0.168736 * p[0] - 0.331264 * p[1] + 0.5 * p[2] + 128.0;
                        else
                            v = 0.5 * p[0] - 0.418688 * p[1] - 0.081312 * p[2] + 128.0;
                        f[y * 8 + x] = v - 128.0;
                    }
                jpg_block(&b, f, &pred[c], &dc, &ac);
            }
    if (b.n > 0)
        put_bits(&b, 0x7F, 8 - b.n); /* pad with ones */
    mb_be16(&m, 0xFFD9);
    return m;
}

static void stbw_append(void *ctx, void *data, int size) {
    mb_append(ctx, data, (size_t)size);
}

static membuf bmp_fixture(const uint8_t *px, int w, int h, int comp) {
    membuf m = {0};
    ck_assert(stbi_write_bmp_to_func(stbw_append, &m, w, h, comp, px));
    return m;
}

/* A GIF89a with a 256-entry gray palette (entry i is (i,i,i)) and one image
 * of w x h palette indices, LZW-coded without compression: a clear code
 * every 100 literals keeps the codes 9 bits wide.  transparent < 0: none. */
static membuf gif_fixture(const uint8_t *idx, int w, int h, int transparent) {
    membuf m = {0};
    mb_append(&m, "GIF89a", 6);
    mb_le16(&m, (unsigned)w);
    mb_le16(&m, (unsigned)h);
    mb_byte(&m, 0xF7); /* global table, 8 bits colour, 256 entries */
    mb_byte(&m, 0);    /* background index */
    mb_byte(&m, 0);    /* aspect */
    for (unsigned i = 0; i < 256; i++) {
        mb_byte(&m, i);
        mb_byte(&m, i);
        mb_byte(&m, i);
    }
    if (transparent >= 0) { /* graphic control extension */
        const uint8_t gce[] = {0x21, 0xF9, 4, 1, 0, 0, (uint8_t)transparent, 0};
        mb_append(&m, gce, sizeof gce);
    }
    mb_byte(&m, 0x2C);
    mb_le16(&m, 0);
    mb_le16(&m, 0);
    mb_le16(&m, (unsigned)w);
    mb_le16(&m, (unsigned)h);
    mb_byte(&m, 0); /* no local table, not interlaced */
    mb_byte(&m, 8); /* LZW minimum code size */

    membuf bits = {0};
    uint32_t acc = 0;
    int nacc = 0;
    size_t n = (size_t)w * (size_t)h;
#define EMIT(code)                                                                     \
    do {                                                                               \
        acc |= (uint32_t)(code) << nacc;                                               \
        nacc += 9;                                                                     \
        while (nacc >= 8) {                                                            \
            mb_byte(&bits, acc & 0xFF);                                                \
            acc >>= 8;                                                                 \
            nacc -= 8;                                                                 \
        }                                                                              \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        if (i % 100 == 0)
            EMIT(256); /* clear */
        EMIT(idx[i]);
    }
    EMIT(257); /* end of information */
#undef EMIT
    if (nacc > 0)
        mb_byte(&bits, acc & 0xFF);
    for (size_t i = 0; i < bits.len; i += 255) {
        size_t k = bits.len - i < 255 ? bits.len - i : 255;
        mb_byte(&m, (unsigned)k);
        mb_append(&m, bits.buf + i, k);
    }
    mb_byte(&m, 0);    /* block terminator */
    mb_byte(&m, 0x3B); /* trailer */
    mb_free(&bits);
    return m;
}

static membuf pnm_fixture(const char *header, const uint8_t *px, size_t n) {
    membuf m = {0};
    mb_append(&m, header, strlen(header));
    mb_append(&m, px, n);
    return m;
}

/* A PNG that is only a signature, an IHDR and an IDAT header: enough for
 * png_read_info to return with the claimed size. */
static membuf png_header_only(uint32_t w, uint32_t h, unsigned color_type) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    membuf m = {0};
    mb_append(&m, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                        (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                        8, (uint8_t)color_type, 0, 0, 0};
    mb_chunk(&m, "IHDR", ihdr, sizeof ihdr);
    const uint8_t idat[] = {0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
    mb_chunk(&m, "IDAT", idat, sizeof idat);
    mb_chunk(&m, "IEND", NULL, 0);
    return m;
}

/* Deterministic pattern of 8-bit values. */
static uint8_t pat(size_t x, size_t y) { return (uint8_t)((x * 37u + y * 101u + 13u) & 0xFF); }

/* Runs img_to_input and checks the status, reporting the message. */
static img_info run(const membuf *m, img_invert mode, int want, float out[IMG_N]) {
    img_info info;
    char err[256];
    int rc = img_to_input(m->buf, m->len, 0, mode, out, &info, err, sizeof err);
    ck_assert_msg(rc == want, "status %s, want %s: %s", img_status_name(rc),
                  img_status_name(want), rc == IMG_OK ? "" : err);
    if (rc != IMG_OK)
        ck_assert_msg(err[0] != '\0', "no message for %s", img_status_name(rc));
    return info;
}

static int run_status(const uint8_t *d, size_t n, size_t max_px) {
    float out[IMG_N];
    img_info info;
    char err[256];
    return img_to_input(d, n, max_px, IMG_INVERT_AUTO, out, &info, err, sizeof err);
}

static void assert_exact28(const float out[IMG_N], const uint8_t *px) {
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert_msg(out[i] == (float)px[i] / 255.0f, "pixel %zu: %g, want %u/255", i,
                      (double)out[i], px[i]);
}

static void assert_near(float got, float want, float tol, size_t i) {
    ck_assert_msg(fabsf(got - want) <= tol, "pixel %zu: %.7f, want %.7f (tol %g)", i,
                  (double)got, (double)want, (double)tol);
}

static void assert_range(const float out[IMG_N]) {
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert_msg(out[i] >= 0.0f && out[i] <= 1.0f, "pixel %zu out of [0,1]: %g", i,
                      (double)out[i]);
}

static float luma601(unsigned r, unsigned g, unsigned b) {
    if (r == g && g == b)
        return (float)r;
    return 0.299f * (float)r + 0.587f * (float)g + 0.114f * (float)b;
}

/* ---- identification and names ------------------------------------------- */

START_TEST(test_sniff) {
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    uint8_t bmp[18] = {'B', 'M'};
    bmp[14] = 40;
    ck_assert_int_eq(img_sniff(png, sizeof png), IMG_FMT_PNG);
    ck_assert_int_eq(img_sniff(png, 7), IMG_FMT_UNKNOWN);
    ck_assert_int_eq(img_sniff(jpg, sizeof jpg), IMG_FMT_JPEG);
    ck_assert_int_eq(img_sniff((const uint8_t *)"GIF89a", 6), IMG_FMT_GIF);
    ck_assert_int_eq(img_sniff((const uint8_t *)"GIF87a", 6), IMG_FMT_GIF);
    ck_assert_int_eq(img_sniff((const uint8_t *)"P5\n", 3), IMG_FMT_PNM);
    ck_assert_int_eq(img_sniff((const uint8_t *)"P6 ", 3), IMG_FMT_PNM);
    ck_assert_int_eq(img_sniff((const uint8_t *)"P3\n", 3), IMG_FMT_UNKNOWN);
    ck_assert_int_eq(img_sniff(bmp, sizeof bmp), IMG_FMT_BMP);
    ck_assert_int_eq(img_sniff((const uint8_t *)"BMW is a carmaker", 17), IMG_FMT_UNKNOWN);
    ck_assert_int_eq(img_sniff(NULL, 10), IMG_FMT_UNKNOWN);
    ck_assert_str_eq(img_format_name(IMG_FMT_PNG), "png");
    ck_assert_str_eq(img_format_name(IMG_FMT_JPEG), "jpeg");
    ck_assert_str_eq(img_format_name(IMG_FMT_BMP), "bmp");
    ck_assert_str_eq(img_format_name(IMG_FMT_GIF), "gif");
    ck_assert_str_eq(img_format_name(IMG_FMT_PNM), "pnm");
    ck_assert_str_eq(img_format_name(IMG_FMT_UNKNOWN), "unknown");
    ck_assert_str_eq(img_status_name(IMG_OK), "ok");
    ck_assert_str_eq(img_status_name(IMG_EMPTY), "empty");
    ck_assert_str_eq(img_status_name(IMG_UNKNOWN_FORMAT), "unknown_format");
    ck_assert_str_eq(img_status_name(IMG_CORRUPT), "corrupt");
    ck_assert_str_eq(img_status_name(IMG_TOO_LARGE), "too_large");
    ck_assert_str_eq(img_status_name(IMG_NOMEM), "nomem");
    ck_assert_str_eq(img_status_name(99), "invalid");
}
END_TEST

/* ---- PNG flavours --------------------------------------------------------- */

START_TEST(test_png_gray8_exact) {
    uint8_t px[IMG_N];
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++)
            px[y * 28 + x] = pat(x, y);
    px[0] = 0;
    px[1] = 255;
    membuf m = png_gray8(px, 28, 28, PNG_INTERLACE_NONE);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, px);
    ck_assert_str_eq(info.format, "png");
    ck_assert_uint_eq(info.width, 28);
    ck_assert_uint_eq(info.height, 28);
    ck_assert_int_eq(info.channels, 1);
    ck_assert(!info.has_alpha && !info.trimmed && !info.resized && !info.inverted);
    ck_assert_uint_eq(info.item_w, 28);
    ck_assert_uint_eq(info.item_h, 28);

    uint8_t back[IMG_N];
    img_input_to_gray8(out, back);
    ck_assert_mem_eq(back, px, IMG_N);
    mb_free(&m);
}
END_TEST

START_TEST(test_png_gray16) {
    uint8_t raw[IMG_N * 2], want[IMG_N];
    for (size_t i = 0; i < IMG_N; i++) {
        want[i] = pat(i % 28, i / 28);
        unsigned v = want[i] * 257u; /* scales back to exactly want[i] */
        raw[2 * i] = (uint8_t)(v >> 8);
        raw[2 * i + 1] = (uint8_t)v;
    }
    png_spec s = {28, 28, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    membuf m = png_fixture(&s, raw);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, want);
    ck_assert_int_eq(info.channels, 1);
    mb_free(&m);

    /* Arbitrary 16-bit values land within half an 8-bit step. */
    for (size_t i = 0; i < IMG_N; i++) {
        unsigned v = (unsigned)(i * 83u + 7u) & 0xFFFFu;
        raw[2 * i] = (uint8_t)(v >> 8);
        raw[2 * i + 1] = (uint8_t)v;
    }
    m = png_fixture(&s, raw);
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], (float)((i * 83u + 7u) & 0xFFFFu) / 65535.0f, 0.5f / 255.0f + 1e-6f,
                    i);
    mb_free(&m);
}
END_TEST

/* 16-bit RGBA with samples v*257 decodes exactly like 8-bit RGBA with v. */
START_TEST(test_png_rgba16_matches_rgba8) {
    uint8_t p8[IMG_N * 4], p16[IMG_N * 8];
    for (size_t i = 0; i < IMG_N * 4; i++) {
        size_t px = i / 4, x = px % 28, y = px / 28;
        bool border = x == 0 || y == 0 || x == 27 || y == 27;
        p8[i] = i % 4 == 3 ? (border ? 255 : (uint8_t)(x * 9)) : pat(x + i % 4, y);
        p16[2 * i] = p8[i];     /* v*257 = v<<8 | v */
        p16[2 * i + 1] = p8[i];
    }
    png_spec s8 = {28, 28, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    png_spec s16 = s8;
    s16.bit_depth = 16;
    membuf a = png_fixture(&s8, p8), b = png_fixture(&s16, p16);
    float oa[IMG_N], ob[IMG_N];
    img_info ia = run(&a, IMG_INVERT_AUTO, IMG_OK, oa);
    img_info ib = run(&b, IMG_INVERT_AUTO, IMG_OK, ob);
    ck_assert_mem_eq(oa, ob, sizeof oa);
    ck_assert_int_eq(ia.channels, 4);
    ck_assert_int_eq(ib.channels, 4);
    ck_assert(ia.has_alpha && ib.has_alpha);
    mb_free(&a);
    mb_free(&b);
}
END_TEST

START_TEST(test_png_gray1) {
    uint8_t packed[28 * 4], want[IMG_N]; /* 28 bits -> 4 bytes per row */
    memset(packed, 0, sizeof packed);
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++) {
            bool on = (x / 4 + y / 4) % 2 == 1;
            want[y * 28 + x] = on ? 255 : 0;
            if (on)
                packed[y * 4 + x / 8] |= (uint8_t)(0x80u >> (x % 8));
        }
    png_spec s = {28, 28, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    membuf m = png_fixture(&s, packed);
    float out[IMG_N];
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, want);
    mb_free(&m);
}
END_TEST

/* Palette with tRNS: index 0 opaque black (the border), 1 fully transparent
 * white, 2 an opaque colour, 3 half-transparent white. */
static const png_color pal4[4] = {{0, 0, 0}, {255, 255, 255}, {100, 150, 200}, {255, 255, 255}};
static const png_byte trns4[4] = {255, 0, 255, 128};

static uint8_t pal_index(size_t x, size_t y) {
    if (x == 0 || y == 0 || x == 27 || y == 27)
        return 0;
    return (uint8_t)(1 + (x + 2 * y) % 3);
}

static void assert_palette_out(const float out[IMG_N]) {
    float want[4] = {0.0f, 0.0f, luma601(100, 150, 200) / 255.0f, 128.0f / 255.0f};
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], want[pal_index(i % 28, i / 28)], 1e-6f, i);
}

START_TEST(test_png_palette_trns) {
    uint8_t idx[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        idx[i] = pal_index(i % 28, i / 28);
    png_spec s = {28, 28, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, pal4, 4, trns4, 4};
    membuf m = png_fixture(&s, idx);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_palette_out(out);
    ck_assert_int_eq(info.channels, 4);
    ck_assert(info.has_alpha);
    ck_assert(!info.border_transparent);
    ck_assert_float_eq(info.background, 0.0f);
    mb_free(&m);

    /* The same at 2 bits per index (four to a byte, first in the high bits). */
    uint8_t packed[28 * 7];
    memset(packed, 0, sizeof packed);
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++)
            packed[y * 7 + x / 4] |= (uint8_t)(idx[y * 28 + x] << (6 - 2 * (x % 4)));
    s.bit_depth = 2;
    m = png_fixture(&s, packed);
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_palette_out(out);
    mb_free(&m);

    /* Without tRNS the palette is opaque: white stays white. */
    s.bit_depth = 8;
    s.trns = NULL;
    s.n_trns = 0;
    m = png_fixture(&s, idx);
    info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(!info.has_alpha);
    ck_assert_int_eq(info.channels, 3);
    ck_assert_float_eq(out[28 + 1], pal_index(1, 1) == 2 ? luma601(100, 150, 200) / 255.0f
                                                         : 1.0f);
    mb_free(&m);
}
END_TEST

START_TEST(test_png_gray_alpha) {
    /* Opaque black ring; inside, white at alpha 128 on the left half and
     * white at alpha 0 on the right: composited onto the black background. */
    uint8_t ga[IMG_N * 2];
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++) {
            uint8_t *p = ga + 2 * (y * 28 + x);
            bool ring = x == 0 || y == 0 || x == 27 || y == 27;
            p[0] = ring ? 0 : 255;
            p[1] = ring ? 255 : x < 14 ? 128 : 0;
        }
    png_spec s = {28, 28, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    membuf m = png_fixture(&s, ga);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    for (size_t y = 1; y < 27; y++)
        for (size_t x = 1; x < 27; x++)
            assert_near(out[y * 28 + x], x < 14 ? 128.0f / 255.0f : 0.0f, 1e-6f, y * 28 + x);
    ck_assert_int_eq(info.channels, 2);
    ck_assert(info.has_alpha && !info.border_transparent && !info.inverted);
    mb_free(&m);
}
END_TEST

/* A cut-out on a transparent canvas: 56x56, fully transparent except an
 * opaque 28x14 rectangle.  Dark item: background chosen white, so it is
 * inverted to light on black; light item: background black, no inversion. */
START_TEST(test_png_rgba_cutout) {
    for (int dark = 0; dark <= 1; dark++) {
        uint8_t rgba[56 * 56 * 4];
        memset(rgba, 0, sizeof rgba);
        for (size_t y = 21; y < 35; y++)
            for (size_t x = 14; x < 42; x++) {
                uint8_t *p = rgba + 4 * (y * 56 + x);
                p[0] = p[1] = p[2] = dark ? 20 : 230;
                p[3] = 255;
            }
        png_spec s = {56, 56, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
        membuf m = png_fixture(&s, rgba);
        float out[IMG_N];
        img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
        ck_assert(info.has_alpha && info.border_transparent && info.trimmed);
        ck_assert_uint_eq(info.trim_x, 14);
        ck_assert_uint_eq(info.trim_y, 21);
        ck_assert_uint_eq(info.trim_w, 28);
        ck_assert_uint_eq(info.trim_h, 14);
        ck_assert(!info.resized); /* 28x14 already has its longest side 28 */
        ck_assert_uint_eq(info.item_y, 7);
        ck_assert_int_eq(info.inverted, dark);
        ck_assert_float_eq(info.background, dark ? 1.0f : 0.0f);
        float item = dark ? 1.0f - 20.0f / 255.0f : 230.0f / 255.0f;
        for (size_t i = 0; i < IMG_N; i++) {
            size_t y = i / 28;
            assert_near(out[i], y >= 7 && y < 21 ? item : 0.0f, 1e-6f, i);
        }
        mb_free(&m);
    }
}
END_TEST

START_TEST(test_png_interlaced) {
    /* 28x28 gray: exact. */
    uint8_t px[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        px[i] = pat(i % 28, i / 28);
    membuf m = png_gray8(px, 28, 28, PNG_INTERLACE_ADAM7);
    float out[IMG_N];
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, px);
    mb_free(&m);

    /* 37x23 RGBA on white: Adam7 and plain decode to the same input. */
    uint8_t rgba[37 * 23 * 4];
    for (size_t y = 0; y < 23; y++)
        for (size_t x = 0; x < 37; x++) {
            uint8_t *p = rgba + 4 * (y * 37 + x);
            bool item = x > 5 && x < 30 && y > 4 && y < 19;
            p[0] = item ? pat(x, y) : 255;
            p[1] = item ? pat(y, x) : 255;
            p[2] = item ? 40 : 255;
            p[3] = item ? (uint8_t)(128 + x) : 255;
        }
    png_spec s = {37, 23, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    membuf plain = png_fixture(&s, rgba);
    s.interlace = PNG_INTERLACE_ADAM7;
    membuf adam7 = png_fixture(&s, rgba);
    float o1[IMG_N], o2[IMG_N];
    img_info i1 = run(&plain, IMG_INVERT_AUTO, IMG_OK, o1);
    img_info i2 = run(&adam7, IMG_INVERT_AUTO, IMG_OK, o2);
    ck_assert_mem_eq(o1, o2, sizeof o1);
    ck_assert(i1.trimmed && i2.trimmed && i1.inverted && i2.inverted);
    mb_free(&plain);
    mb_free(&adam7);
}
END_TEST

START_TEST(test_png_rgb_luma) {
    uint8_t rgb[IMG_N * 3];
    for (size_t i = 0; i < IMG_N; i++) {
        rgb[3 * i] = pat(i % 28, i / 28);
        rgb[3 * i + 1] = pat(i / 28, i % 28);
        rgb[3 * i + 2] = (uint8_t)(i * 7);
    }
    const uint8_t prim[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {90, 90, 90}};
    for (size_t k = 0; k < 4; k++)
        memcpy(rgb + 3 * (100 + k), prim[k], 3);
    png_spec s = {28, 28, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, NULL, 0, NULL, 0};
    membuf m = png_fixture(&s, rgb);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert_int_eq(info.channels, 3);
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], luma601(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) / 255.0f,
                    1e-6f, i);
    assert_near(out[100], 0.299f, 1e-6f, 100);
    assert_near(out[101], 0.587f, 1e-6f, 101);
    assert_near(out[102], 0.114f, 1e-6f, 102);
    ck_assert(out[103] == 90.0f / 255.0f); /* gray stays exact */
    mb_free(&m);
}
END_TEST

/* ---- JPEG, BMP, GIF, PNM ---------------------------------------------------- */

START_TEST(test_jpeg_close) {
    uint8_t gray[IMG_N], rgb[IMG_N * 3];
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++) {
            uint8_t v = (uint8_t)(x * 6 + y * 3);
            gray[y * 28 + x] = v;
            rgb[3 * (y * 28 + x)] = rgb[3 * (y * 28 + x) + 1] = rgb[3 * (y * 28 + x) + 2] = v;
        }
    for (int comp = 1; comp <= 3; comp += 2) {
        membuf m = jpeg_fixture(comp == 1 ? gray : rgb, 28, 28, comp);
        float out[IMG_N];
        img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
        ck_assert_str_eq(info.format, "jpeg");
        ck_assert_int_eq(info.channels, comp);
        double sum = 0.0;
        for (size_t i = 0; i < IMG_N; i++) {
            assert_near(out[i], gray[i] / 255.0f, 6.0f / 255.0f, i);
            sum += fabs((double)out[i] - gray[i] / 255.0);
        }
        ck_assert_msg(sum / IMG_N < 1.5 / 255.0, "mean error %g", sum / IMG_N);
        mb_free(&m);
    }
}
END_TEST

START_TEST(test_bmp_exact) {
    uint8_t rgb[IMG_N * 3], rgba[IMG_N * 4];
    for (size_t i = 0; i < IMG_N; i++) {
        uint8_t v = pat(i % 28, i / 28);
        bool colour = i % 5 == 0;
        rgb[3 * i] = v;
        rgb[3 * i + 1] = colour ? (uint8_t)(v / 2) : v;
        rgb[3 * i + 2] = colour ? 17 : v;
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = 255;
    }
    membuf m = bmp_fixture(rgb, 28, 28, 3);
    float out[IMG_N], out_td[IMG_N], out4[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert_str_eq(info.format, "bmp");
    for (size_t i = 0; i < IMG_N; i++) {
        float want = luma601(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) / 255.0f;
        if (i % 5 != 0)
            ck_assert(out[i] == want);
        else
            assert_near(out[i], want, 1e-6f, i);
    }

    /* The same rows stored top-down (negative height). */
    membuf td = {0};
    mb_append(&td, m.buf, m.len);
    uint32_t off = (uint32_t)td.buf[10] | (uint32_t)td.buf[11] << 8;
    size_t stride = (28 * 3 + 3) & ~(size_t)3;
    for (size_t y = 0; y < 28; y++)
        memcpy(td.buf + off + y * stride, m.buf + off + (27 - y) * stride, stride);
    int32_t neg = -28;
    uint32_t u = (uint32_t)neg;
    for (int k = 0; k < 4; k++)
        td.buf[22 + k] = (uint8_t)(u >> (8 * k));
    run(&td, IMG_INVERT_AUTO, IMG_OK, out_td);
    ck_assert_mem_eq(out, out_td, sizeof out);
    mb_free(&td);

    /* 32-bit with an alpha mask, all opaque. */
    membuf m4 = bmp_fixture(rgba, 28, 28, 4);
    run(&m4, IMG_INVERT_AUTO, IMG_OK, out4);
    ck_assert_mem_eq(out, out4, sizeof out);
    mb_free(&m4);
    mb_free(&m);
}
END_TEST

START_TEST(test_gif) {
    uint8_t idx[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        idx[i] = pat(i % 28, i / 28);
    membuf m = gif_fixture(idx, 28, 28, -1);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert_str_eq(info.format, "gif");
    assert_exact28(out, idx);
    mb_free(&m);

    /* Transparent index 255 inside an opaque border of gray 10: the
     * transparent pixels take the background. */
    for (size_t y = 0; y < 28; y++)
        for (size_t x = 0; x < 28; x++) {
            bool border = x == 0 || y == 0 || x == 27 || y == 27;
            idx[y * 28 + x] = border ? 10 : (x + y) % 2 ? 255 : 200;
        }
    m = gif_fixture(idx, 28, 28, 255);
    info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(info.has_alpha);
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert(out[i] == (idx[i] == 255 ? 10.0f : (float)idx[i]) / 255.0f);
    mb_free(&m);

    /* The classic 1x1 transparent GIF (43 bytes). */
    static const uint8_t tiny[] = {
        'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80,
        0x00, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x21, 0xf9, 0x04,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};
    ck_assert_int_eq(run_status(tiny, sizeof tiny, 0), IMG_OK);
}
END_TEST

START_TEST(test_pnm) {
    uint8_t px[IMG_N], rgb[IMG_N * 3];
    for (size_t i = 0; i < IMG_N; i++) {
        px[i] = pat(i % 28, i / 28);
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = px[i];
    }
    float out[IMG_N];
    membuf m = pnm_fixture("P5\n28 28\n255\n", px, IMG_N);
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert_str_eq(info.format, "pnm");
    ck_assert_int_eq(info.channels, 1);
    assert_exact28(out, px);
    mb_free(&m);

    m = pnm_fixture("P6\n# a comment\n28 28\n255\n", rgb, sizeof rgb);
    info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert_int_eq(info.channels, 3);
    assert_exact28(out, px);
    mb_free(&m);

    /* maxval 15: samples are scaled to 0..255. */
    uint8_t px15[IMG_N], want15[IMG_N];
    for (size_t i = 0; i < IMG_N; i++) {
        px15[i] = (uint8_t)(i % 16);
        want15[i] = (uint8_t)(i % 16 * 17);
    }
    m = pnm_fixture("P5 28 28 15\n", px15, IMG_N);
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, want15);
    mb_free(&m);

    /* 16-bit, big-endian samples v*257. */
    uint8_t px16[IMG_N * 2];
    for (size_t i = 0; i < IMG_N; i++)
        px16[2 * i] = px16[2 * i + 1] = px[i];
    m = pnm_fixture("P5\n28 28\n65535\n", px16, sizeof px16);
    run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    assert_exact28(out, px);
    mb_free(&m);

    /* Broken headers and short data. */
    m = pnm_fixture("P5\n28 28\n255\n", px, IMG_N - 1);
    run(&m, IMG_INVERT_AUTO, IMG_CORRUPT, out);
    mb_free(&m);
    m = pnm_fixture("P5\n99999999999 28\n255\n", px, IMG_N);
    run(&m, IMG_INVERT_AUTO, IMG_CORRUPT, out);
    mb_free(&m);
    m = pnm_fixture("P5\n28 28\n70000\n", px, IMG_N);
    run(&m, IMG_INVERT_AUTO, IMG_CORRUPT, out);
    mb_free(&m);
    m = pnm_fixture("P5\n0 28\n255\n", px, IMG_N);
    run(&m, IMG_INVERT_AUTO, IMG_CORRUPT, out);
    mb_free(&m);
    m = pnm_fixture("P5\n28", px, 0);
    run(&m, IMG_INVERT_AUTO, IMG_CORRUPT, out);
    mb_free(&m);
    m = pnm_fixture("P2\n28 28\n255\n0 0 0\n", px, 0);
    run(&m, IMG_INVERT_AUTO, IMG_UNKNOWN_FORMAT, out);
    mb_free(&m);
}
END_TEST

/* ---- errors ----------------------------------------------------------------- */

START_TEST(test_empty) {
    float out[IMG_N];
    img_info info;
    char err[128];
    ck_assert_int_eq(img_to_input(NULL, 0, 0, IMG_INVERT_AUTO, out, &info, err, sizeof err),
                     IMG_EMPTY);
    ck_assert(strlen(err) > 0);
    ck_assert_str_eq(info.format, "unknown");
    const uint8_t b = 0x89;
    ck_assert_int_eq(img_to_input(&b, 0, 0, IMG_INVERT_AUTO, out, &info, err, sizeof err),
                     IMG_EMPTY);
    /* err and info may be left out. */
    ck_assert_int_eq(img_to_input(NULL, 0, 0, IMG_INVERT_AUTO, out, NULL, NULL, 0), IMG_EMPTY);
}
END_TEST

START_TEST(test_unknown_format) {
    static const char *const texts[] = {
        "hello, world\n",
        "<!DOCTYPE html><html><body>not an image</body></html>",
        "{\"image\": \"base64...\"}",
        "BMW",
        "GIF8",
        "\x89PNG",
        "x",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        membuf m = {0};
        mb_append(&m, texts[k], strlen(texts[k]));
        float out[IMG_N];
        img_info info = run(&m, IMG_INVERT_AUTO, IMG_UNKNOWN_FORMAT, out);
        ck_assert_str_eq(info.format, "unknown");
        mb_free(&m);
    }
}
END_TEST

/* Random-looking (incompressible) 28x28 content, so cuts land in IDAT. */
static membuf noisy_png(void) {
    uint8_t px[IMG_N];
    uint32_t s = 12345;
    for (size_t i = 0; i < IMG_N; i++) {
        s = s * 1103515245u + 12345u;
        px[i] = (uint8_t)(s >> 24);
    }
    return png_gray8(px, 28, 28, PNG_INTERLACE_NONE);
}

START_TEST(test_truncated_png) {
    membuf m = noisy_png();
    size_t iend = png_find_chunk(&m, "IEND");
    ck_assert_uint_gt(iend, 0);
    const size_t cuts[] = {8, 12, 20, 33, 40, m.len / 2, iend - 5, iend - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++)
        ck_assert_msg(run_status(m.buf, cuts[k], 0) == IMG_CORRUPT, "cut at %zu", cuts[k]);
    /* Only IEND missing: the pixels are all there (tolerated). */
    ck_assert_int_eq(run_status(m.buf, iend, 0), IMG_OK);
    mb_free(&m);
}
END_TEST

START_TEST(test_png_bad_crc) {
    membuf m = noisy_png();
    size_t idat = png_find_chunk(&m, "IDAT");
    ck_assert_uint_gt(idat, 0);

    membuf bad = {0};
    mb_append(&bad, m.buf, m.len);
    bad.buf[idat + 8 + 20] ^= 0x01; /* a byte of IDAT data */
    ck_assert_int_eq(run_status(bad.buf, bad.len, 0), IMG_CORRUPT);
    mb_free(&bad);

    mb_append(&bad, m.buf, m.len);
    bad.buf[8 + 8 + 13] ^= 0xFF; /* IHDR's CRC */
    ck_assert_int_eq(run_status(bad.buf, bad.len, 0), IMG_CORRUPT);
    mb_free(&bad);

    /* A tEXt chunk with a bad CRC is ancillary: dropped, image fine. */
    mb_append(&bad, m.buf, idat);
    size_t text = bad.len;
    mb_chunk(&bad, "tEXt", (const uint8_t *)"Comment\0hi", 10);
    bad.buf[text + 8 + 2] ^= 0x01;
    mb_append(&bad, m.buf + idat, m.len - idat);
    ck_assert_int_eq(run_status(bad.buf, bad.len, 0), IMG_OK);
    mb_free(&bad);
    mb_free(&m);
}
END_TEST

START_TEST(test_truncated_jpeg) {
    uint8_t px[64 * 64];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)((i * 2654435761u) >> 24);
    membuf m = jpeg_fixture(px, 64, 64, 1);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_OK);
    const size_t cuts[] = {3, 10, 100, m.len / 2, m.len - 10, m.len - 2, m.len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++)
        ck_assert_msg(run_status(m.buf, cuts[k], 0) == IMG_CORRUPT, "cut at %zu of %zu",
                      cuts[k], m.len);
    /* Trailing bytes after EOI are tolerated. */
    mb_append(&m, "trailing", 8);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_OK);
    mb_free(&m);
}
END_TEST

START_TEST(test_truncated_bmp) {
    uint8_t rgb[28 * 28 * 3];
    memset(rgb, 77, sizeof rgb);
    membuf m = bmp_fixture(rgb, 28, 28, 3);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_OK);
    ck_assert_int_eq(run_status(m.buf, m.len - 10, 0), IMG_CORRUPT);
    ck_assert_int_eq(run_status(m.buf, 30, 0), IMG_CORRUPT);
    /* Height INT32_MIN (stb would take abs() of it). */
    m.buf[22] = m.buf[23] = m.buf[24] = 0;
    m.buf[25] = 0x80;
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_CORRUPT);
    /* Width 0. */
    m.buf[22] = 28;
    m.buf[25] = 0;
    memset(m.buf + 18, 0, 4);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_CORRUPT);
    mb_free(&m);
}
END_TEST

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

START_TEST(test_png_bomb_header) {
    membuf m = png_header_only(100000, 100000, 0);
    float out[IMG_N];
    img_info info;
    char err[256];
    double t0 = now_s();
    int rc = img_to_input(m.buf, m.len, IMG_DEFAULT_MAX_PIXELS, IMG_INVERT_AUTO, out, &info,
                          err, sizeof err);
    double dt = now_s() - t0;
    ck_assert_int_eq(rc, IMG_TOO_LARGE);
    ck_assert_msg(strstr(err, "PNG is 100000x100000 = 10000000000 pixels, over the limit "
                              "of 16777216") != NULL,
                  "message: %s", err);
    ck_assert_msg(dt < 0.5, "took %g s", dt);
    ck_assert_str_eq(info.format, "png");
    ck_assert_uint_eq(info.width, 100000);
    ck_assert_uint_eq(info.height, 100000);
    mb_free(&m);

    /* Within the pixel limit but far more than the file could hold. */
    m = png_header_only(4000, 4000, 6);
    t0 = now_s();
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_CORRUPT);
    ck_assert_msg(now_s() - t0 < 0.5, "slow refusal");
    mb_free(&m);

    /* Zero width: libpng refuses the IHDR. */
    m = png_header_only(0, 28, 0);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_CORRUPT);
    mb_free(&m);
    /* Over 2^31: invalid PNG. */
    m = png_header_only(0x80000000u, 1, 0);
    ck_assert_int_eq(run_status(m.buf, m.len, 0), IMG_CORRUPT);
    mb_free(&m);
}
END_TEST

/* Every format checks the limit from its header. */
START_TEST(test_max_pixels_all_formats) {
    uint8_t px[IMG_N * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)i;
    membuf f[5];
    f[0] = png_gray8(px, 28, 28, PNG_INTERLACE_NONE);
    f[1] = jpeg_fixture(px, 28, 28, 3);
    f[2] = bmp_fixture(px, 28, 28, 3);
    f[3] = gif_fixture(px, 28, 28, -1);
    f[4] = pnm_fixture("P6\n28 28\n255\n", px, sizeof px);
    for (size_t k = 0; k < 5; k++) {
        ck_assert_int_eq(run_status(f[k].buf, f[k].len, 784), IMG_OK);
        float out[IMG_N];
        img_info info;
        char err[256];
        int rc = img_to_input(f[k].buf, f[k].len, 783, IMG_INVERT_AUTO, out, &info, err,
                              sizeof err);
        ck_assert_msg(rc == IMG_TOO_LARGE, "fixture %zu: %s", k, img_status_name(rc));
        ck_assert_msg(strstr(err, "28x28 = 784 pixels, over the limit of 783") != NULL, "%s",
                      err);
        ck_assert_uint_eq(info.width, 28);
        mb_free(&f[k]);
    }
}
END_TEST

START_TEST(test_err_buffer) {
    membuf m = png_header_only(100000, 100000, 0);
    float out[IMG_N];
    char err[8];
    memset(err, 'x', sizeof err);
    ck_assert_int_eq(img_to_input(m.buf, m.len, 0, IMG_INVERT_AUTO, out, NULL, err, sizeof err),
                     IMG_TOO_LARGE);
    ck_assert_uint_eq(strlen(err), sizeof err - 1);
    ck_assert_int_eq(img_to_input(m.buf, m.len, 0, IMG_INVERT_AUTO, out, NULL, err, 0),
                     IMG_TOO_LARGE);
    mb_free(&m);
}
END_TEST

/* ---- odd sizes ---------------------------------------------------------------- */

START_TEST(test_1x1) {
    const uint8_t light = 200, dark = 30;
    float out[IMG_N];
    membuf m = png_gray8(&light, 1, 1, PNG_INTERLACE_NONE);
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], 1.0f - 200.0f / 255.0f, 1e-5f, i);
    ck_assert(info.inverted && info.resized && !info.trimmed);
    mb_free(&m);

    m = png_gray8(&dark, 1, 1, PNG_INTERLACE_NONE);
    info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], 30.0f / 255.0f, 1e-5f, i);
    ck_assert(!info.inverted);
    mb_free(&m);
}
END_TEST

START_TEST(test_strips) {
    /* 1 x 100000 and 100000 x 1: a gray strip with a white middle third. */
    size_t n = 100000;
    uint8_t *px = malloc(n);
    ck_assert_ptr_nonnull(px);
    for (size_t i = 0; i < n; i++)
        px[i] = i > n / 3 && i < 2 * n / 3 ? 255 : 60;
    for (int vertical = 0; vertical <= 1; vertical++) {
        membuf m = vertical ? png_gray8(px, 1, (int)n, PNG_INTERLACE_NONE)
                            : png_gray8(px, (int)n, 1, PNG_INTERLACE_NONE);
        float out[IMG_N];
        img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
        assert_range(out);
        ck_assert_uint_eq(info.width, vertical ? 1 : n);
        ck_assert(info.trimmed && info.resized && !info.inverted);
        ck_assert_uint_eq(vertical ? info.item_w : info.item_h, 1);
        ck_assert_uint_eq(vertical ? info.item_h : info.item_w, 28);
        ck_assert_uint_eq(vertical ? info.item_x : info.item_y, 13);
        /* The kept middle third is white; the canvas is the gray. */
        float sum = 0.0f;
        for (size_t i = 0; i < IMG_N; i++)
            sum += out[i];
        assert_near(sum, 28.0f * 1.0f + (IMG_N - 28) * 60.0f / 255.0f, 1e-2f, 0);
        ck_assert_int_eq(run_status(m.buf, m.len, n - 1), IMG_TOO_LARGE);
        mb_free(&m);
    }
    free(px);
}
END_TEST

/* ---- the pipeline ------------------------------------------------------------- */

/* 280x140 white with a black 200x100 rectangle at (40,20). */
static membuf white_with_dark_rect(void) {
    uint8_t *px = malloc(280 * 140);
    ck_assert_ptr_nonnull(px);
    for (size_t y = 0; y < 140; y++)
        for (size_t x = 0; x < 280; x++)
            px[y * 280 + x] = x >= 40 && x < 240 && y >= 20 && y < 120 ? 0 : 255;
    membuf m = png_gray8(px, 280, 140, PNG_INTERLACE_NONE);
    free(px);
    return m;
}

START_TEST(test_pipeline_light_background) {
    membuf m = white_with_dark_rect();
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(info.trimmed && info.resized && info.inverted && !info.has_alpha);
    ck_assert_uint_eq(info.trim_x, 40);
    ck_assert_uint_eq(info.trim_y, 20);
    ck_assert_uint_eq(info.trim_w, 200);
    ck_assert_uint_eq(info.trim_h, 100);
    ck_assert_uint_eq(info.item_x, 0);
    ck_assert_uint_eq(info.item_y, 7);
    ck_assert_uint_eq(info.item_w, 28);
    ck_assert_uint_eq(info.item_h, 14);
    ck_assert_float_eq(info.background, 1.0f);
    /* Light item over the full width and rows 7..20, black elsewhere. */
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert_float_eq(out[i], i / 28 >= 7 && i / 28 < 21 ? 1.0f : 0.0f);

    /* invert=false keeps the dark item on white. */
    info = run(&m, IMG_INVERT_OFF, IMG_OK, out);
    ck_assert(!info.inverted);
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert_float_eq(out[i], i / 28 >= 7 && i / 28 < 21 ? 0.0f : 1.0f);
    mb_free(&m);
}
END_TEST

START_TEST(test_pipeline_dark_background) {
    /* 56x56 black with a 10 wide, 20 tall light rectangle at (23,18). */
    uint8_t px[56 * 56];
    for (size_t y = 0; y < 56; y++)
        for (size_t x = 0; x < 56; x++)
            px[y * 56 + x] = x >= 23 && x < 33 && y >= 18 && y < 38 ? 200 : 0;
    membuf m = png_gray8(px, 56, 56, PNG_INTERLACE_NONE);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(info.trimmed && info.resized && !info.inverted);
    ck_assert_uint_eq(info.trim_x, 23);
    ck_assert_uint_eq(info.trim_y, 18);
    ck_assert_uint_eq(info.trim_w, 10);
    ck_assert_uint_eq(info.trim_h, 20);
    ck_assert_uint_eq(info.item_x, 7);
    ck_assert_uint_eq(info.item_y, 0);
    ck_assert_uint_eq(info.item_w, 14);
    ck_assert_uint_eq(info.item_h, 28);
    ck_assert_float_eq(info.background, 0.0f);
    for (size_t i = 0; i < IMG_N; i++) {
        size_t x = i % 28;
        assert_near(out[i], x >= 7 && x < 21 ? 200.0f / 255.0f : 0.0f, 1e-5f, i);
    }

    /* invert=true flips it. */
    info = run(&m, IMG_INVERT_ON, IMG_OK, out);
    ck_assert(info.inverted);
    for (size_t i = 0; i < IMG_N; i++) {
        size_t x = i % 28;
        assert_near(out[i], x >= 7 && x < 21 ? 1.0f - 200.0f / 255.0f : 1.0f, 1e-5f, i);
    }
    mb_free(&m);
}
END_TEST

START_TEST(test_pipeline_28_modes) {
    /* A 28x28 image on white is still used as is unless invert=true. */
    uint8_t px[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        px[i] = i % 28 > 10 && i % 28 < 18 ? pat(i % 28, i / 28) : 255;
    membuf m = png_gray8(px, 28, 28, PNG_INTERLACE_NONE);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(!info.inverted && !info.trimmed && !info.resized);
    ck_assert_float_eq(info.background, 1.0f);
    assert_exact28(out, px);
    info = run(&m, IMG_INVERT_OFF, IMG_OK, out);
    assert_exact28(out, px);
    info = run(&m, IMG_INVERT_ON, IMG_OK, out);
    ck_assert(info.inverted);
    for (size_t i = 0; i < IMG_N; i++)
        ck_assert(out[i] == 1.0f - (float)px[i] / 255.0f);
    mb_free(&m);
}
END_TEST

START_TEST(test_pipeline_uniform) {
    /* Nothing but background: nothing trimmed, a uniform canvas. */
    uint8_t px[40 * 30];
    memset(px, 10, sizeof px);
    membuf m = png_gray8(px, 40, 30, PNG_INTERLACE_NONE);
    float out[IMG_N];
    img_info info = run(&m, IMG_INVERT_AUTO, IMG_OK, out);
    ck_assert(!info.trimmed && info.resized && !info.inverted);
    ck_assert_uint_eq(info.trim_w, 40);
    ck_assert_uint_eq(info.trim_h, 30);
    for (size_t i = 0; i < IMG_N; i++)
        assert_near(out[i], 10.0f / 255.0f, 1e-5f, i);
    mb_free(&m);
}
END_TEST

/* ---- PNG encoder and gray8 --------------------------------------------------- */

START_TEST(test_png_encode_roundtrip) {
    uint8_t px[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        px[i] = pat(i % 28, i / 28);
    uint8_t *png = NULL;
    size_t len = 0;
    char err[128];
    ck_assert_int_eq(img_png_encode_gray8(px, 28, 28, &png, &len, err, sizeof err), IMG_OK);
    ck_assert_ptr_nonnull(png);
    ck_assert_uint_gt(len, 8);
    ck_assert_int_eq(img_sniff(png, len), IMG_FMT_PNG);
    float out[IMG_N];
    img_info info;
    ck_assert_int_eq(img_to_input(png, len, 0, IMG_INVERT_AUTO, out, &info, err, sizeof err),
                     IMG_OK);
    uint8_t back[IMG_N];
    img_input_to_gray8(out, back);
    ck_assert_mem_eq(back, px, IMG_N);
    free(png);

    /* A non-square size, read back with libpng's simplified API. */
    uint8_t small[5 * 3] = {0, 1, 2, 3, 4, 50, 100, 150, 200, 250, 255, 254, 253, 252, 251};
    ck_assert_int_eq(img_png_encode_gray8(small, 5, 3, &png, &len, err, sizeof err), IMG_OK);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    ck_assert(png_image_begin_read_from_memory(&im, png, len));
    ck_assert_uint_eq(im.width, 5);
    ck_assert_uint_eq(im.height, 3);
    im.format = PNG_FORMAT_GRAY;
    uint8_t dec[15];
    ck_assert(png_image_finish_read(&im, NULL, dec, 0, NULL));
    ck_assert_mem_eq(dec, small, sizeof small);
    free(png);

    /* Bad arguments. */
    png = (uint8_t *)err;
    ck_assert_int_eq(img_png_encode_gray8(px, 0, 28, &png, &len, err, sizeof err), IMG_EMPTY);
    ck_assert_ptr_null(png);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(img_png_encode_gray8(NULL, 28, 28, &png, &len, NULL, 0), IMG_EMPTY);
    ck_assert_int_eq(img_png_encode_gray8(px, 28, -1, &png, &len, NULL, 0), IMG_EMPTY);
}
END_TEST

/* The stored-block encoder: the file libpng reads back is the image; its
 * zlib stream passes zlib's own checks (Adler-32 included); sizes that need
 * more than one 65,535-byte block. */
static void check_stored(const uint8_t *px, int w, int h) {
    uint8_t *png = NULL;
    size_t len = 0;
    char err[128];
    ck_assert_int_eq(img_png_store_gray8(px, w, h, &png, &len, err, sizeof err), IMG_OK);
    size_t raw = (size_t)(w + 1) * (size_t)h;
    size_t blocks = (raw + 65534) / 65535;
    ck_assert_uint_eq(len, 8 + 25 + 12 + 2 + 5 * blocks + raw + 4 + 12);
    ck_assert_int_eq(img_sniff(png, len), IMG_FMT_PNG);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    ck_assert(png_image_begin_read_from_memory(&im, png, len));
    ck_assert_uint_eq(im.width, (unsigned)w);
    ck_assert_uint_eq(im.height, (unsigned)h);
    im.format = PNG_FORMAT_GRAY;
    uint8_t *dec = malloc((size_t)w * (size_t)h);
    ck_assert_ptr_nonnull(dec);
    ck_assert(png_image_finish_read(&im, NULL, dec, 0, NULL));
    ck_assert_mem_eq(dec, px, (size_t)w * (size_t)h);
    /* The IDAT payload inflates (zlib verifies the Adler-32) to the rows,
     * each behind a 0 filter byte. */
    uLongf n = (uLongf)raw;
    uint8_t *rows = malloc(raw);
    ck_assert_ptr_nonnull(rows);
    ck_assert_mem_eq(png + 37, "IDAT", 4);
    size_t zlen = (size_t)png[33] << 24 | (size_t)png[34] << 16 | (size_t)png[35] << 8 | png[36];
    ck_assert_int_eq(uncompress(rows, &n, png + 41, (uLong)zlen), Z_OK);
    ck_assert_uint_eq(n, raw);
    for (int y = 0; y < h; y++) {
        ck_assert_uint_eq(rows[(size_t)y * (size_t)(w + 1)], 0);
        ck_assert_mem_eq(rows + (size_t)y * (size_t)(w + 1) + 1, px + (size_t)y * (size_t)w, (size_t)w);
    }
    free(rows);
    free(dec);
    free(png);
}

START_TEST(test_png_store_roundtrip) {
    uint8_t px[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        px[i] = pat(i % 28, i / 28);
    check_stored(px, 28, 28);
    uint8_t one = 200;
    check_stored(&one, 1, 1);
    /* 301 x 250 rows: 75,250 bytes, two blocks; 65,535 bytes exactly: one. */
    size_t big = 300 * 250;
    uint8_t *b = malloc(big);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < big; i++)
        b[i] = (uint8_t)(i * 7 + i / 300);
    check_stored(b, 300, 250);
    check_stored(b, 65534, 1);
    check_stored(b, 255, 255); /* 256 * 255 = 65,280: one block */
    free(b);
    /* The 28x28 input: the same pixels as the libpng encoder's file. */
    uint8_t *png = NULL;
    size_t len = 0;
    ck_assert_int_eq(img_png_store_gray8(px, 28, 28, &png, &len, NULL, 0), IMG_OK);
    ck_assert_uint_eq(len, 880);
    float out[IMG_N];
    img_info info;
    char err[128];
    ck_assert_int_eq(img_to_input(png, len, 0, IMG_INVERT_AUTO, out, &info, err, sizeof err), IMG_OK);
    uint8_t back[IMG_N];
    img_input_to_gray8(out, back);
    ck_assert_mem_eq(back, px, IMG_N);
    free(png);
    /* Bad arguments. */
    png = (uint8_t *)err;
    ck_assert_int_eq(img_png_store_gray8(px, 0, 28, &png, &len, err, sizeof err), IMG_EMPTY);
    ck_assert_ptr_null(png);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(img_png_store_gray8(NULL, 28, 28, &png, &len, NULL, 0), IMG_EMPTY);
    ck_assert_int_eq(img_png_store_gray8(px, 28, -1, &png, &len, NULL, 0), IMG_EMPTY);
    ck_assert_int_eq(img_png_store_gray8(px, 1 << 30, 4, &png, &len, err, sizeof err), IMG_TOO_LARGE);
}
END_TEST

START_TEST(test_input_to_gray8) {
    float in[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        in[i] = (float)(i % 256) / 255.0f;
    in[0] = -0.5f;
    in[1] = 1.5f;
    in[2] = NAN;
    in[3] = 0.5f / 255.0f;  /* rounds up */
    in[4] = 0.49f / 255.0f; /* rounds down */
    uint8_t out[IMG_N];
    img_input_to_gray8(in, out);
    ck_assert_uint_eq(out[0], 0);
    ck_assert_uint_eq(out[1], 255);
    ck_assert_uint_eq(out[2], 0);
    ck_assert_uint_eq(out[3], 1);
    ck_assert_uint_eq(out[4], 0);
    for (size_t i = 5; i < IMG_N; i++)
        ck_assert_uint_eq(out[i], i % 256);

    /* The same byte as round(clamp01(x) * 255) computed in that order, for
     * special values, every float near the rounding ties and bounds, and
     * random bit patterns (any float). */
    static const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.0f, -1.0f, 1e-45f,
                                    -1e-45f, 1.0000001f, 0.99999994f, FLT_MAX, -FLT_MAX};
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (int round = 0; round < 4000; round++) {
        for (size_t i = 0; i < IMG_N; i++) {
            if (round == 0 && i < sizeof special / sizeof special[0]) {
                in[i] = special[i];
            } else if (round % 2 == 0) { /* near (k + 0.5) / 255 and the ends */
                float t = ((float)(i % 257) - 0.5f) / 255.0f;
                uint32_t b;
                memcpy(&b, &t, sizeof b);
                b += (uint32_t)(round / 2 % 64) - 32u;
                memcpy(&in[i], &b, sizeof b);
            } else {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17; /* xorshift64 */
                uint32_t b = (uint32_t)(seed >> 32);
                memcpy(&in[i], &b, sizeof b);
            }
        }
        img_input_to_gray8(in, out);
        for (size_t i = 0; i < IMG_N; i++) {
            float x = in[i] > 0.0f ? in[i] : 0.0f;
            x = x < 1.0f ? x : 1.0f;
            uint8_t want = (uint8_t)(x * 255.0f + 0.5f);
            if (out[i] != want)
                ck_abort_msg("img_input_to_gray8(%a) = %u, want %u", (double)in[i], out[i], want);
        }
    }
}
END_TEST

/* ---- robustness: seeded mutations of good files --------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

START_TEST(test_mutations) {
    uint8_t px[40 * 30 * 4];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)((i * 2654435761u) >> 24);
    membuf f[8];
    png_spec s = {40, 30, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_ADAM7, NULL, 0, NULL, 0};
    f[0] = png_fixture(&s, px);
    png_spec sp = {28, 28, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, pal4, 4, trns4, 4};
    uint8_t idx[IMG_N];
    for (size_t i = 0; i < IMG_N; i++)
        idx[i] = px[i] & 3;
    f[1] = png_fixture(&sp, idx);
    f[2] = jpeg_fixture(px, 40, 30, 3);
    f[3] = bmp_fixture(px, 40, 30, 3);
    f[4] = bmp_fixture(px, 40, 30, 4);
    f[5] = gif_fixture(px, 40, 30, 7);
    f[6] = pnm_fixture("P6\n40 30\n255\n", px, 40 * 30 * 3);
    f[7] = png_gray8(px, 40, 30, PNG_INTERLACE_NONE);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    membuf t = {0};
    for (size_t k = 0; k < 8; k++) {
        for (int iter = 0; iter < 250; iter++) {
            t.len = 0;
            mb_append(&t, f[k].buf, f[k].len);
            int flips = 1 + (int)(rng_next(&seed) % 4);
            for (int j = 0; j < flips; j++) {
                size_t at = (size_t)(rng_next(&seed) % t.len);
                /* bias towards headers, where the interesting fields are */
                if (rng_next(&seed) % 2)
                    at %= t.len < 64 ? t.len : 64;
                t.buf[at] = (uint8_t)rng_next(&seed);
            }
            if (rng_next(&seed) % 4 == 0)
                t.len = (size_t)(rng_next(&seed) % t.len);
            float out[IMG_N];
            img_info info;
            char err[256];
            int rc = img_to_input(t.buf, t.len, 1u << 20, (img_invert)(iter % 3), out, &info,
                                  err, sizeof err);
            ck_assert_msg(rc >= IMG_OK && rc <= IMG_NOMEM, "status %d", rc);
            ck_assert_msg(rc != IMG_NOMEM, "nomem on a small file");
            if (rc == IMG_OK)
                assert_range(out);
            else
                ck_assert(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        }
        mb_free(&f[k]);
    }
    mb_free(&t);
}
END_TEST

static Suite *image_suite(void) {
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("decode");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sniff);
    tcase_add_test(tc, test_png_gray8_exact);
    tcase_add_test(tc, test_png_gray16);
    tcase_add_test(tc, test_png_rgba16_matches_rgba8);
    tcase_add_test(tc, test_png_gray1);
    tcase_add_test(tc, test_png_palette_trns);
    tcase_add_test(tc, test_png_gray_alpha);
    tcase_add_test(tc, test_png_rgba_cutout);
    tcase_add_test(tc, test_png_interlaced);
    tcase_add_test(tc, test_png_rgb_luma);
    tcase_add_test(tc, test_jpeg_close);
    tcase_add_test(tc, test_bmp_exact);
    tcase_add_test(tc, test_gif);
    tcase_add_test(tc, test_pnm);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_unknown_format);
    tcase_add_test(tc, test_truncated_png);
    tcase_add_test(tc, test_png_bad_crc);
    tcase_add_test(tc, test_truncated_jpeg);
    tcase_add_test(tc, test_truncated_bmp);
    tcase_add_test(tc, test_png_bomb_header);
    tcase_add_test(tc, test_max_pixels_all_formats);
    tcase_add_test(tc, test_err_buffer);
    tcase_add_test(tc, test_mutations);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_1x1);
    tcase_add_test(tc, test_strips);
    tcase_add_test(tc, test_pipeline_light_background);
    tcase_add_test(tc, test_pipeline_dark_background);
    tcase_add_test(tc, test_pipeline_28_modes);
    tcase_add_test(tc, test_pipeline_uniform);
    tcase_add_test(tc, test_png_encode_roundtrip);
    tcase_add_test(tc, test_png_store_roundtrip);
    tcase_add_test(tc, test_input_to_gray8);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(image_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* The same hack as at the end of server/image.c: GCC reports stb's static
 * declarations without definitions at the end of the translation unit. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
