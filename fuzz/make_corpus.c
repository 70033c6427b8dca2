/* make_corpus.c - writes the fuzzers' seed corpora from real valid inputs.
 *
 *   make_corpus OUTDIR [DATA_DIR]
 *
 * Creates OUTDIR/{image,json,multipart,url,safetensors,idx}/ and fills them:
 * the first test images of Fashion-MNIST (from DATA_DIR, default
 * fm_data_dir(NULL); synthetic garments when the data set is absent) encoded
 * as PNG in several colour types, bit depths and with Adam7 interlacing,
 * palette + tRNS and gAMA chunks (libpng), JPEG and BMP (stb_image_write),
 * GIF (a minimal LZW encoder below), binary PNM, and a PNG header that
 * claims 100000x100000; JSON requests for every protocol (flat, nested,
 * scale 255, b64 and data: URL images); multipart bodies; request targets;
 * tiny safetensors files written by fm_st_save_buffer (with and without
 * architecture metadata); IDX image and label files, plain and gzip. */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <errno.h>
#include <png.h>
#include <stb_image_write.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "fm_arch.h"
#include "fm_idx.h"
#include "fm_rng.h"
#include "fm_st.h"
#include "image.h"

#define N_IMG 4

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static const char *outdir;
static uint8_t imgs[N_IMG][FM_IMG_SIZE];
static uint8_t labels[N_IMG];

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("make_corpus: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void add(buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) die("out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void addf(buf *b, const char *fmt, ...) {
    char tmp[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) die("addf overflow");
    add(b, tmp, (size_t)n);
}

static void put(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", outdir, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) die("%s: %s", path, strerror(errno));
}

static void put_buf(const char *dir, const char *name, buf *b) {
    put(dir, name, b->p, b->len);
    free(b->p);
    *b = (buf){0};
}

/* ---- images --------------------------------------------------------- */

static void png_write_cb(png_structp png, png_bytep data, png_size_t n) { add(png_get_io_ptr(png), data, n); }
static void png_flush_cb(png_structp png) { (void)png; }

/* A w x h PNG of gray pixels g (scaled by `scale` nearest-neighbour) in the
 * given colour type and depth. */
static void png_variant(const char *name, const uint8_t *g, int scale, int color, int depth, int interlace,
                        int gama) {
    int w = 28 * scale, h = 28 * scale;
    buf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!png || !info) die("libpng");
    uint8_t *rows = NULL;
    png_bytep *rp = NULL;
    if (setjmp(png_jmpbuf(png))) die("libpng error writing %s", name);
    png_set_write_fn(png, &b, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[16];
        png_byte trns[16];
        for (int i = 0; i < 16; i++) {
            pal[i].red = pal[i].green = pal[i].blue = (png_byte)(i * 17);
            trns[i] = (png_byte)(i == 0 ? 0 : 255);
        }
        png_set_PLTE(png, info, pal, 16);
        png_set_tRNS(png, info, trns, 16, NULL);
    }
    if (gama) png_set_gAMA(png, info, 0.45455);
    png_write_info(png, info);
    int ch = color == PNG_COLOR_TYPE_RGB ? 3 : color == PNG_COLOR_TYPE_RGBA ? 4 : color == PNG_COLOR_TYPE_GA ? 2 : 1;
    size_t rowbytes = png_get_rowbytes(png, info);
    rows = calloc((size_t)h, rowbytes);
    rp = malloc((size_t)h * sizeof *rp);
    if (!rows || !rp) die("out of memory");
    for (int y = 0; y < h; y++) {
        rp[y] = rows + (size_t)y * rowbytes;
        for (int x = 0; x < w; x++) {
            uint8_t v = g[(y / scale) * 28 + x / scale];
            if (color == PNG_COLOR_TYPE_PALETTE) {
                int idx = v >> 4;
                if (depth == 4) rp[y][x / 2] |= (png_byte)(x % 2 ? idx : idx << 4);
                else rp[y][x] = (png_byte)idx;
            } else if (depth == 1) {
                if (v > 127) rp[y][x / 8] |= (png_byte)(0x80 >> (x % 8));
            } else if (depth == 16) {
                for (int c = 0; c < ch; c++) {
                    uint16_t s = (uint16_t)(c == ch - 1 && (color & PNG_COLOR_MASK_ALPHA) ? 65535 : v * 257);
                    rp[y][(x * ch + c) * 2] = (png_byte)(s >> 8);
                    rp[y][(x * ch + c) * 2 + 1] = (png_byte)s;
                }
            } else {
                for (int c = 0; c < ch; c++)
                    rp[y][x * ch + c] = (c == ch - 1 && (color & PNG_COLOR_MASK_ALPHA)) ? (png_byte)(v ? 255 : 0)
                                        : c == 1 ? (png_byte)(v * 3 / 4) : v;
            }
        }
    }
    png_write_image(png, rp);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(rp);
    put_buf("image", name, &b);
}

static void stb_cb(void *ctx, void *data, int n) { add(ctx, data, (size_t)n); }

/* A GIF of 28x28 gray pixels: global 256-gray palette, one image, LZW with
 * 9-bit codes only (a clear code every 250 pixels keeps the width at 9). */
static void gif(const char *name, const uint8_t *g, int with_gce) {
    buf b = {0};
    addf(&b, "GIF89a");
    uint8_t lsd[7] = {28, 0, 28, 0, 0xF7, 0, 0};
    add(&b, lsd, 7);
    for (int i = 0; i < 256; i++) {
        uint8_t rgb[3] = {(uint8_t)i, (uint8_t)i, (uint8_t)i};
        add(&b, rgb, 3);
    }
    if (with_gce) {
        uint8_t gce[8] = {0x21, 0xF9, 4, 0x01, 0, 0, 0, 0}; /* transparent index 0 */
        add(&b, gce, 8);
    }
    uint8_t id[10] = {0x2C, 0, 0, 0, 0, 28, 0, 28, 0, 0};
    add(&b, id, 10);
    uint8_t mcs = 8;
    add(&b, &mcs, 1);
    buf codes = {0};
    uint32_t acc = 0;
    int nbits = 0;
#define EMIT(code)                                                                                                     \
    do {                                                                                                               \
        acc |= (uint32_t)(code) << nbits;                                                                              \
        nbits += 9;                                                                                                    \
        while (nbits >= 8) {                                                                                           \
            uint8_t byte = (uint8_t)acc;                                                                               \
            add(&codes, &byte, 1);                                                                                     \
            acc >>= 8;                                                                                                 \
            nbits -= 8;                                                                                                \
        }                                                                                                              \
    } while (0)
    for (int i = 0; i < FM_IMG_SIZE; i++) {
        if (i % 250 == 0) EMIT(256);
        EMIT(g[i]);
    }
    EMIT(257);
#undef EMIT
    if (nbits) {
        uint8_t byte = (uint8_t)acc;
        add(&codes, &byte, 1);
    }
    for (size_t off = 0; off < codes.len; off += 255) {
        uint8_t n = (uint8_t)(codes.len - off < 255 ? codes.len - off : 255);
        add(&b, &n, 1);
        add(&b, codes.p + off, n);
    }
    uint8_t end[2] = {0, 0x3B};
    add(&b, end, 2);
    free(codes.p);
    put_buf("image", name, &b);
}

static void images(void) {
    char name[64];
    for (int i = 0; i < N_IMG; i++) {
        uint8_t *png = NULL;
        size_t len = 0;
        if (img_png_encode_gray8(imgs[i], 28, 28, &png, &len, NULL, 0) != IMG_OK) die("png");
        snprintf(name, sizeof name, "test%d-gray8.png", i);
        put("image", name, png, len);
        free(png);
    }
    /* light background, larger: the trim/resize/invert path */
    uint8_t inv[FM_IMG_SIZE], rgb[56 * 56 * 3];
    for (int i = 0; i < FM_IMG_SIZE; i++) inv[i] = (uint8_t)(255 - imgs[1][i]);
    png_variant("test1-inverted-x2-gray8.png", inv, 2, PNG_COLOR_TYPE_GRAY, 8, 0, 0);
    png_variant("test0-rgb8.png", imgs[0], 1, PNG_COLOR_TYPE_RGB, 8, 0, 0);
    png_variant("test0-rgba8-x2.png", imgs[0], 2, PNG_COLOR_TYPE_RGBA, 8, 0, 0);
    png_variant("test2-gray16.png", imgs[2], 1, PNG_COLOR_TYPE_GRAY, 16, 0, 1);
    png_variant("test2-ga16.png", imgs[2], 1, PNG_COLOR_TYPE_GA, 16, 0, 0);
    png_variant("test3-ga8-interlaced.png", imgs[3], 1, PNG_COLOR_TYPE_GA, 8, 1, 0);
    png_variant("test3-palette4-trns.png", imgs[3], 1, PNG_COLOR_TYPE_PALETTE, 4, 0, 0);
    png_variant("test1-palette8-interlaced.png", imgs[1], 1, PNG_COLOR_TYPE_PALETTE, 8, 1, 1);
    png_variant("test0-gray1.png", imgs[0], 1, PNG_COLOR_TYPE_GRAY, 1, 0, 0);

    for (int y = 0; y < 56; y++)
        for (int x = 0; x < 56; x++)
            for (int c = 0; c < 3; c++) rgb[(y * 56 + x) * 3 + c] = (uint8_t)(255 - imgs[0][(y / 2) * 28 + x / 2] / (c + 1));
    buf b = {0};
    if (!stbi_write_jpg_to_func(stb_cb, &b, 28, 28, 1, imgs[1], 90)) die("jpg");
    put_buf("image", "test1-gray.jpg", &b);
    if (!stbi_write_jpg_to_func(stb_cb, &b, 56, 56, 3, rgb, 75)) die("jpg");
    put_buf("image", "test0-rgb-x2.jpg", &b);
    if (!stbi_write_bmp_to_func(stb_cb, &b, 28, 28, 1, imgs[2])) die("bmp");
    put_buf("image", "test2.bmp", &b);
    if (!stbi_write_bmp_to_func(stb_cb, &b, 56, 56, 3, rgb)) die("bmp");
    put_buf("image", "test0-rgb-x2.bmp", &b);
    gif("test3.gif", imgs[3], 0);
    gif("test0-transparent.gif", imgs[0], 1);

    addf(&b, "P5\n# fmnist\n28 28\n255\n");
    add(&b, imgs[2], FM_IMG_SIZE);
    put_buf("image", "test2.pgm", &b);
    addf(&b, "P6 56 56 255\n");
    add(&b, rgb, sizeof rgb);
    put_buf("image", "test0-x2.ppm", &b);

    /* a decompression bomb's header: IHDR claims 100000 x 100000 */
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    uint8_t ihdr[25] = {0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 0, 0, 0, 0};
    uint32_t crc = (uint32_t)crc32(0, ihdr + 4, 17);
    ihdr[21] = (uint8_t)(crc >> 24), ihdr[22] = (uint8_t)(crc >> 16), ihdr[23] = (uint8_t)(crc >> 8),
    ihdr[24] = (uint8_t)crc;
    add(&b, sig, 8);
    add(&b, ihdr, 25);
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    add(&b, iend, 12);
    put_buf("image", "bomb-100000x100000.png", &b);
}

/* ---- base64 --------------------------------------------------------- */

static char *b64(const uint8_t *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc(4 * ((n + 2) / 3) + 1), *o = s;
    if (!s) die("out of memory");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return s;
}

/* ---- JSON requests -------------------------------------------------- */

/* 784 values of image i: [0,1] floats, 0..255 ints, flat or 28x28 */
static void values(buf *b, int i, int scale255, int nested) {
    add(b, "[", 1);
    for (int k = 0; k < FM_IMG_SIZE; k++) {
        if (nested && k % 28 == 0) addf(b, "%s[", k ? "," : "");
        else if (k) add(b, ",", 1);
        if (scale255) addf(b, "%d", imgs[i][k]);
        else if (imgs[i][k] == 0) add(b, "0", 1);
        else addf(b, "%.4g", imgs[i][k] / 255.0);
        if (nested && k % 28 == 27) add(b, "]", 1);
    }
    add(b, "]", 1);
}

static void json_seed(const char *name, uint8_t sel, buf *b) {
    buf out = {0};
    add(&out, &sel, 1);
    add(&out, b->p, b->len);
    free(b->p);
    *b = (buf){0};
    put_buf("json", name, &out);
}

static void json(void) {
    buf b = {0};
    uint8_t *png = NULL;
    size_t png_len = 0;
    if (img_png_encode_gray8(imgs[0], 28, 28, &png, &png_len, NULL, 0) != IMG_OK) die("png");
    char *png64 = b64(png, png_len);
    free(png);

    /* native /v1/classify: sel 0 (bits 2-3: query) */
    addf(&b, "{\"instances\":[");
    values(&b, 0, 0, 0);
    addf(&b, "]}");
    json_seed("native-flat", 0, &b);
    addf(&b, "{\"scale\":255,\"instances\":[");
    values(&b, 1, 1, 1);
    addf(&b, ",");
    values(&b, 2, 1, 0);
    addf(&b, "]}");
    json_seed("native-nested-255", 4, &b);
    addf(&b, "{\"instances\":[{\"b64\":\"%s\"},{\"b64\":\"data:image/png;base64,%s\"}]}", png64, png64);
    json_seed("native-b64", 8, &b);
    addf(&b, "{\"instances\":[{\"input\":{\"b64\":\"%s\"}}]}", png64);
    json_seed("native-input-b64", 12, &b);

    /* KServe v2: sel 1 */
    addf(&b, "{\"id\":\"r1\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],\"datatype\":\"FP32\",\"data\":");
    values(&b, 0, 0, 0);
    addf(&b, "}],\"outputs\":[{\"name\":\"probabilities\"}]}");
    json_seed("kserve-fp32", 1, &b);
    addf(&b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[2,28,28],\"datatype\":\"UINT8\",\"data\":[");
    values(&b, 1, 1, 1);
    addf(&b, ",");
    values(&b, 3, 1, 1);
    addf(&b, "]}],\"parameters\":{\"classification\":3}}");
    json_seed("kserve-uint8-classification", 5, &b);
    addf(&b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"FP32\",\"data\":");
    values(&b, 2, 0, 1);
    addf(&b, "}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"classification\":2}}]}");
    json_seed("kserve-nested-outputs", 9, &b);

    /* TF Serving: sel 2 */
    addf(&b, "{\"signature_name\":\"serving_default\",\"instances\":[");
    values(&b, 3, 0, 1);
    addf(&b, "]}");
    json_seed("tfs-instances", 2, &b);
    addf(&b, "{\"inputs\":[");
    values(&b, 0, 0, 0);
    addf(&b, "]}");
    json_seed("tfs-inputs", 6, &b);
    addf(&b, "{\"instances\":[{\"b64\":\"%s\"}]}", png64);
    json_seed("tfs-b64", 10, &b);
    addf(&b, "{\"inputs\":{\"input\":[");
    values(&b, 1, 0, 0);
    addf(&b, "]}}");
    json_seed("tfs-inputs-named", 14, &b);

    /* TorchServe: sel 3 */
    addf(&b, "{\"data\":");
    values(&b, 2, 0, 0);
    addf(&b, "}");
    json_seed("torchserve-data", 3, &b);
    /* no Content-Type (bit 4) */
    addf(&b, "{\"instances\":[");
    values(&b, 3, 0, 1);
    addf(&b, "]}");
    json_seed("native-no-content-type", 16, &b);
    /* bare base64 and data URL (the b64 front) */
    addf(&b, "data:image/png;base64,%s", png64);
    json_seed("data-url", 0, &b);
    free(png64);
}

/* ---- multipart ------------------------------------------------------ */

static void multipart(void) {
    buf b = {0};
    uint8_t *png = NULL, *png2 = NULL;
    size_t len = 0, len2 = 0;
    if (img_png_encode_gray8(imgs[0], 28, 28, &png, &len, NULL, 0) != IMG_OK ||
        img_png_encode_gray8(imgs[1], 28, 28, &png2, &len2, NULL, 0) != IMG_OK)
        die("png");
    addf(&b, "multipart/form-data; boundary=------------------------d74496d66958873e\n"
             "--------------------------d74496d66958873e\r\n"
             "Content-Disposition: form-data; name=\"a\"; filename=\"shoe.png\"\r\n"
             "Content-Type: image/png\r\n\r\n");
    add(&b, png, len);
    addf(&b, "\r\n--------------------------d74496d66958873e\r\n"
             "Content-Disposition: form-data; name=\"b\"; filename=\"shirt \\\"1\\\".png\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n");
    add(&b, png2, len2);
    addf(&b, "\r\n--------------------------d74496d66958873e--\r\n");
    put_buf("multipart", "curl-two-files", &b);

    addf(&b, "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"\n"
             "preamble\r\n--a b:c \t\r\n"
             "content-disposition: form-data;\r\n name=file; filename=\"x.png\"\r\n\r\n");
    add(&b, png, len);
    addf(&b, "\r\n--a b:c--\r\nepilogue");
    put_buf("multipart", "quoted-boundary-folding", &b);

    addf(&b, "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW\n"
             "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
             "Content-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
             "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
             "Content-Disposition: form-data; name=\"image\"; filename=\"\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n\r\n"
             "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\n"
             "Content-Disposition: form-data; name=\"img\"; filename=\"t.png\"\r\n\r\n");
    add(&b, png2, len2);
    addf(&b, "\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n");
    put_buf("multipart", "browser-empty-file", &b);

    addf(&b, "multipart/form-data; boundary=x\n--x--\r\n");
    put_buf("multipart", "zero-parts", &b);
    free(png);
    free(png2);
}

/* ---- URLs ----------------------------------------------------------- */

static void urls(void) {
    static const char *const t[] = {
        "\x00/v1/samples?offset=0&count=3",
        "\x00/v1/models",
        "\x00/v1/models/mlp2/metadata",
        "\x00/v1/models/mlp2/versions/1",
        "\x00/v2/models/mlp2/versions/1/ready",
        "\x00/v2/health/ready",
        "\x00/healthz",
        "\x00/metrics",
        "\x00/ping",
        "\x00/",
        "\x00/index.html",
        "\x00/css/site.css",
        "\x00/css/",
        "\x00/out.html",
        "\x00/%2e%2e/secret.json",
        "\x00/a/../index.html",
        "\x00/.env",
        "\x00/v1/reports/mlp2.history.json",
        "\x00/v1/reports/evil.history.json",
        "\x00/v1/reports/grid-mlp2.csv",
        "\x01/v1/reports/README.md",
        "\x02/v1/classify?model=mlp2&top=3&invert=auto",
        "\x05/v1/classify?model=a+b%20c&top=%31%30&invert=false&field=img",
        "\x04/v1/models",
        "\x00/v1/samples?count=5&offset=+1&count=2&=x&&a",
    };
    char name[32];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(name, sizeof name, "url-%02zu", i);
        put("url", name, t[i], 1 + strlen(t[i] + 1));
    }
}

/* ---- safetensors ---------------------------------------------------- */

static void st_seed(const char *name, const char *arch_json, int strip_arch) {
    fm_arch a;
    fm_model m;
    fm_error err;
    fm_rng rng;
    if (fm_arch_from_json(&a, arch_json, &err) || fm_model_init(&m, &a, &err)) die("%s: %s", name, err.msg);
    fm_rng_seed(&rng, 7);
    fm_arch_init_params(&m.arch, m.params, &rng);
    if (fm_model_set_meta(&m, "metrics", "{\"test_accuracy\":0.5}", &err)) die("%s", err.msg);
    uint8_t *out = NULL;
    size_t len = 0;
    if (fm_st_save_buffer(&m, &out, &len, &err)) die("%s", err.msg);
    fm_model_free(&m);
    if (!strip_arch) {
        put("safetensors", name, out, len);
        free(out);
        return;
    }
    /* The same file as PyTorch would write it: no architecture metadata. */
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | out[i];
    cJSON *h = cJSON_ParseWithLength((const char *)out + 8, (size_t)n);
    if (!h) die("header");
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(h, "__metadata__"), "architecture");
    char *js = cJSON_PrintUnformatted(h);
    if (!js) die("out of memory");
    uint64_t nl = strlen(js);
    buf b = {0};
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(nl >> (8 * i));
    add(&b, le, 8);
    add(&b, js, (size_t)nl);
    add(&b, out + 8 + n, len - 8 - (size_t)n);
    put_buf("safetensors", name, &b);
    free(js);
    cJSON_Delete(h);
    free(out);
}

/* The two architectures fuzz_safetensors passes as `expect`, by input length
 * parity; keep in sync with FUZZ_ST_ARCH_* there. */
#include "fuzz_st_arch.h"

static void safetensors(void) {
    st_seed("tiny-mlp", FUZZ_ST_ARCH_MLP, 0);
    st_seed("tiny-cnn", FUZZ_ST_ARCH_CNN, 0);
    st_seed("tiny-resnet", FUZZ_ST_ARCH_RES, 0);
    st_seed("tiny-mlp-no-arch", FUZZ_ST_ARCH_MLP, 1);
    st_seed("tiny-cnn-no-arch", FUZZ_ST_ARCH_CNN, 1);
}

/* ---- architectures ---------------------------------------------------- */

/* Every named architecture's canonical JSON, the tiny ones of the
 * safetensors seeds, and a graph using every reference form and field. */
static void archs(void) {
    for (int i = 0; fm_arch_names[i]; i++) {
        fm_arch a;
        fm_error err;
        if (fm_arch_named(&a, fm_arch_names[i], &err)) die("%s", err.msg);
        char *j = fm_arch_to_json(&a), name[64];
        if (!j) die("out of memory");
        snprintf(name, sizeof name, "%s.json", fm_arch_names[i]);
        put("arch", name, j, strlen(j));
        free(j);
    }
    put("arch", "tiny-mlp.json", FUZZ_ST_ARCH_MLP, strlen(FUZZ_ST_ARCH_MLP));
    put("arch", "tiny-cnn.json", FUZZ_ST_ARCH_CNN, strlen(FUZZ_ST_ARCH_CNN));
    put("arch", "tiny-resnet.json", FUZZ_ST_ARCH_RES, strlen(FUZZ_ST_ARCH_RES));
    static const char every[] =
        "{\"name\":\"every\",\"input\":[2,9,9],\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,"
        "\"stride\":1,\"padding\":\"same\",\"bias\":false,\"name\":\"a\"},{\"type\":\"batchnorm2d\","
        "\"momentum\":0.2,\"eps\":0.001},{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,"
        "\"stride\":2,\"padding\":\"same\"},{\"type\":\"add\",\"inputs\":[-1,\"a\"]},{\"type\":\"maxpool2d\","
        "\"kernel\":2,\"name\":\"p\"},{\"type\":\"conv2d\",\"out\":5,\"kernel\":1,\"inputs\":[5]},"
        "{\"type\":\"add\",\"inputs\":[-1,\"p\"],\"projection\":\"conv\"},{\"type\":\"avgpool2d\",\"kernel\":1},"
        "{\"type\":\"add\",\"inputs\":[-1,-2]},{\"type\":\"global_avgpool\"},{\"type\":\"batchnorm1d\"},"
        "{\"type\":\"dropout\",\"p\":0.1},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10,\"bias\":false}]}";
    put("arch", "every-field.json", every, strlen(every));
}

/* ---- IDX ------------------------------------------------------------ */

static void gz(const char *name, const uint8_t *p, size_t n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("zlib");
    uLong cap = deflateBound(&z, (uLong)n);
    uint8_t *out = malloc(cap);
    if (!out) die("out of memory");
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) die("zlib");
    put("idx", name, out, cap - z.avail_out);
    deflateEnd(&z);
    free(out);
}

static void idx(void) {
    buf b = {0};
    uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
    add(&b, hdr, 16);
    for (int i = 0; i < 3; i++) add(&b, imgs[i], FM_IMG_SIZE);
    gz("t10k-images-3.gz", b.p, b.len);
    put_buf("idx", "t10k-images-3", &b);
    uint8_t small[16 + 2 * 4 * 4] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4};
    for (int i = 0; i < 32; i++) small[16 + i] = imgs[0][i * 20];
    put("idx", "images-2x4x4", small, sizeof small);
    uint8_t lh[8] = {0, 0, 8, 1, 0, 0, 0, N_IMG};
    add(&b, lh, 8);
    add(&b, labels, N_IMG);
    gz("t10k-labels-4.gz", b.p, b.len);
    put_buf("idx", "t10k-labels-4", &b);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: make_corpus OUTDIR [DATA_DIR]\n");
        return 2;
    }
    outdir = argv[1];
    const char *dirs[] = {"", "/image", "/json", "/multipart", "/url", "/safetensors", "/idx", "/arch"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", outdir, dirs[i]);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) die("%s: %s", path, strerror(errno));
    }
    fm_dataset ds;
    fm_error err;
    if (fm_dataset_load_split(&ds, fm_data_dir(argc > 2 ? argv[2] : NULL), FM_SPLIT_TEST, &err) == 0 &&
        ds.n >= N_IMG) {
        memcpy(imgs, ds.pixels, sizeof imgs);
        memcpy(labels, ds.labels, sizeof labels);
        fm_dataset_free(&ds);
        printf("make_corpus: seeds from the first %d Fashion-MNIST test images\n", N_IMG);
    } else {
        for (int i = 0; i < N_IMG; i++) {
            labels[i] = (uint8_t)(i * 3 % 10);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                    imgs[i][y * 28 + x] =
                        (x > 4 + i && x < 23 - i && y > 2 && y < 26) ? (uint8_t)(90 + 5 * y + 20 * i) : 0;
        }
        printf("make_corpus: data set not found (%s); synthetic seeds\n", err.msg);
    }
    images();
    json();
    multipart();
    urls();
    safetensors();
    archs();
    idx();
    return 0;
}
