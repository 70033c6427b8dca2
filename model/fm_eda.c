/* fm_eda.c - `fmnist-train eda`: the data overview (counts, shapes, pixel
 * statistics, class balance; text or JSON) and the sample-grid figure (the
 * study's Figure 1) as an 8-bit grey PNG written with libpng (see fm_eda.h).
 *
 * The figure's captions use a small bitmap font embedded below: 5x9 cells
 * (7 rows above the baseline, 2 for descenders) for ASCII 32..126, drawn
 * for this file; characters outside that range print as '?'.
 *
 * libpng reports errors by longjmp: the encoder keeps everything it must
 * clean up in a heap context whose pointer is set before setjmp and never
 * changed after, so nothing depends on the value of a clobbered local.
 *
 * Left out: anti-aliased text, colour, a PNG reader (tests use libpng's). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdir, stat */
#endif

#include "fm_eda.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fm_file.h"

/* ------------------------------------------------------------ statistics */

void fm_eda_stats_of(const fm_dataset *ds, fm_eda_stats *st) {
    size_t hist[256] = {0};
    size_t npx = ds->n * ds->rows * ds->cols;

    memset(st, 0, sizeof *st);
    st->n = ds->n;
    st->rows = ds->rows;
    st->cols = ds->cols;
    for (size_t i = 0; i < npx; i++) hist[ds->pixels[i]]++;
    for (size_t i = 0; i < ds->n; i++)
        if (ds->labels[i] < FM_N_CLASSES) st->class_count[ds->labels[i]]++;

    if (npx > 0) {
        unsigned lo = 0, hi = 255;
        while (hist[lo] == 0) lo++;
        while (hist[hi] == 0) hi--;
        st->min = lo;
        st->max = hi;
        double sum = 0.0, ss = 0.0;
        for (unsigned v = 0; v < 256; v++) sum += (double)v * (double)hist[v];
        st->mean = sum / (double)npx;
        /* second pass over the bins: no cancellation as in E[x^2] - mean^2 */
        for (unsigned v = 0; v < 256; v++) {
            double d = (double)v - st->mean;
            ss += d * d * (double)hist[v];
        }
        st->std = sqrt(ss / (double)npx);
    }

    size_t cmin = st->class_count[0], cmax = st->class_count[0];
    for (int c = 1; c < FM_N_CLASSES; c++) {
        if (st->class_count[c] < cmin) cmin = st->class_count[c];
        if (st->class_count[c] > cmax) cmax = st->class_count[c];
    }
    st->max_min_ratio = cmin > 0 ? (double)cmax / (double)cmin : 0.0;
    double mean_count = (double)st->n / FM_N_CLASSES;
    st->balanced = st->n > 0;
    for (int c = 0; c < FM_N_CLASSES; c++)
        if (fabs((double)st->class_count[c] - mean_count) > FM_EDA_BALANCE_TOL * mean_count)
            st->balanced = 0;
}

/* ------------------------------------------------------------------ JSON */

static double round_to(double x, double unit) { return round(x / unit) * unit; }

static cJSON *pixel_json(const fm_eda_stats *st, double div, double unit) {
    cJSON *p = cJSON_CreateObject();
    if (!p) return NULL;
    if (!cJSON_AddNumberToObject(p, "min", st->min / div) ||
        !cJSON_AddNumberToObject(p, "max", st->max / div) ||
        !cJSON_AddNumberToObject(p, "mean", round_to(st->mean / div, unit)) ||
        !cJSON_AddNumberToObject(p, "std", round_to(st->std / div, unit))) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static cJSON *split_json(const fm_eda_stats *st) {
    cJSON *j = cJSON_CreateObject(), *shape = NULL, *classes = NULL, *px = NULL, *pxs = NULL;
    if (!j) return NULL;
    if (!cJSON_AddNumberToObject(j, "count", (double)st->n)) goto fail;
    if (!(shape = cJSON_AddArrayToObject(j, "shape"))) goto fail;
    cJSON *h = cJSON_CreateNumber((double)st->rows), *w = cJSON_CreateNumber((double)st->cols);
    if (!h || !w || !cJSON_AddItemToArray(shape, h)) {
        cJSON_Delete(h);
        cJSON_Delete(w);
        goto fail;
    }
    if (!cJSON_AddItemToArray(shape, w)) {
        cJSON_Delete(w);
        goto fail;
    }
    if (!(px = pixel_json(st, 1.0, 1e-4)) || !cJSON_AddItemToObject(j, "pixel", px)) {
        cJSON_Delete(px);
        goto fail;
    }
    if (!(pxs = pixel_json(st, 255.0, 1e-6)) || !cJSON_AddItemToObject(j, "pixel_scaled", pxs)) {
        cJSON_Delete(pxs);
        goto fail;
    }
    if (!(classes = cJSON_AddObjectToObject(j, "classes"))) goto fail;
    for (int c = 0; c < FM_N_CLASSES; c++)
        if (!cJSON_AddNumberToObject(classes, fm_class_names[c], (double)st->class_count[c])) goto fail;
    if (st->max_min_ratio > 0.0
            ? !cJSON_AddNumberToObject(j, "max_min_ratio", round_to(st->max_min_ratio, 1e-4))
            : !cJSON_AddNullToObject(j, "max_min_ratio"))
        goto fail;
    if (!cJSON_AddBoolToObject(j, "balanced", st->balanced)) goto fail;
    return j;
fail:
    cJSON_Delete(j);
    return NULL;
}

char *fm_eda_json(const fm_eda_stats *train, const fm_eda_stats *test, const char *png_path) {
    cJSON *j = cJSON_CreateObject(), *tr = NULL, *te = NULL, *names = NULL;
    char *s = NULL;
    if (!j) return NULL;
    if (!(tr = split_json(train)) || !cJSON_AddItemToObject(j, "train", tr)) {
        cJSON_Delete(tr);
        goto done;
    }
    if (!(te = split_json(test)) || !cJSON_AddItemToObject(j, "test", te)) {
        cJSON_Delete(te);
        goto done;
    }
    if (!cJSON_AddBoolToObject(j, "balanced", train->balanced && test->balanced)) goto done;
    if (!(names = cJSON_CreateStringArray(fm_class_names, FM_N_CLASSES)) ||
        !cJSON_AddItemToObject(j, "classes", names)) {
        cJSON_Delete(names);
        goto done;
    }
    if (png_path ? !cJSON_AddStringToObject(j, "png", png_path) : !cJSON_AddNullToObject(j, "png"))
        goto done;
    s = cJSON_Print(j);
done:
    cJSON_Delete(j);
    return s;
}

/* ------------------------------------------------------------------- PNG */

/* Everything the encoder must free after a longjmp, on the heap (see the
 * file comment). */
typedef struct png_ctx {
    uint8_t *data; /* the PNG so far */
    size_t len, cap;
    char msg[256]; /* libpng's error message */
} png_ctx;

static void png_ctx_write(png_structp png, png_bytep d, png_size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->cap - c->len) {
        size_t ncap = c->cap ? c->cap : 4096;
        while (ncap - c->len < n) {
            if (ncap > SIZE_MAX / 2) png_error(png, "PNG too large");
            ncap *= 2;
        }
        uint8_t *nd = realloc(c->data, ncap);
        if (!nd) png_error(png, "out of memory");
        c->data = nd;
        c->cap = ncap;
    }
    memcpy(c->data + c->len, d, n);
    c->len += n;
}

static void png_ctx_flush(png_structp png) { (void)png; }

static void png_ctx_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void png_ctx_warning(png_structp png, png_const_charp msg) {
    (void)png; /* warnings do not stop the image; nothing to do with them */
    (void)msg;
}

int fm_png_encode_gray(const uint8_t *px, size_t w, size_t h, uint8_t **out, size_t *len,
                       fm_error *err) {
    *out = NULL;
    *len = 0;
    if (w == 0 || h == 0 || w > FM_PNG_MAX_DIM || h > FM_PNG_MAX_DIM)
        return fm_seterr(err, "PNG of %zux%zu pixels: each side must be 1..%zu", w, h,
                         FM_PNG_MAX_DIM);
    png_ctx *c = calloc(1, sizeof *c);
    if (!c) return fm_seterr(err, "out of memory encoding a PNG");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, png_ctx_error,
                                              png_ctx_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(c);
        return fm_seterr(err, "out of memory encoding a PNG");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fm_seterr(err, "PNG encoding failed: %s", c->msg);
        free(c->data);
        free(c);
        return -1;
    }
    png_set_write_fn(png, c, png_ctx_write, png_ctx_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < h; y++) png_write_row(png, px + y * w);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = c->data;
    *len = c->len;
    free(c);
    return 0;
}

int fm_png_write_gray(const char *path, const uint8_t *px, size_t w, size_t h, fm_error *err) {
    uint8_t *buf;
    size_t len;
    if (fm_png_encode_gray(px, w, h, &buf, &len, err)) {
        fm_err_prefix(err, path);
        return -1;
    }
    fm_chunk chunk = {buf, len};
    int rc = fm_write_atomic(path, &chunk, 1, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ font */

#define FONT_W 5      /* glyph columns; bit 4 of a row byte is the leftmost */
#define FONT_H 9      /* rows 0..6 above the baseline, 7..8 descenders */
#define FONT_BODY 7   /* height of capitals and digits */
#define FONT_FIRST 32 /* ' ' */
#define FONT_LAST 126 /* '~' */

static const uint8_t font_5x9[FONT_LAST - FONT_FIRST + 1][FONT_H] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' ' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00, 0x00}, /* '!' */
    {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '"' */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00, 0x00}, /* '#' */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00, 0x00}, /* '$' */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00, 0x00}, /* '%' */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00, 0x00}, /* '&' */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '\'' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00, 0x00}, /* '(' */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00, 0x00}, /* ')' */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00, 0x00}, /* '*' */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00, 0x00}, /* '+' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* ',' */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '-' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00, 0x00}, /* '.' */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00, 0x00}, /* '/' */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00, 0x00}, /* '0' */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* '1' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00, 0x00}, /* '2' */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00, 0x00}, /* '3' */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00, 0x00}, /* '4' */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00, 0x00}, /* '5' */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* '6' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00, 0x00}, /* '7' */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* '8' */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00, 0x00}, /* '9' */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00, 0x00}, /* ':' */
    {0x00, 0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x04, 0x08}, /* ';' */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00, 0x00}, /* '<' */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00}, /* '=' */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00, 0x00}, /* '>' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00, 0x00}, /* '?' */
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e, 0x00, 0x00}, /* '@' */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00, 0x00}, /* 'A' */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00, 0x00}, /* 'B' */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00, 0x00}, /* 'C' */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00, 0x00}, /* 'D' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00, 0x00}, /* 'E' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00, 0x00}, /* 'F' */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00, 0x00}, /* 'G' */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00, 0x00}, /* 'H' */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* 'I' */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00, 0x00}, /* 'J' */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00, 0x00}, /* 'K' */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00, 0x00}, /* 'L' */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00, 0x00}, /* 'M' */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00, 0x00}, /* 'N' */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* 'O' */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00, 0x00}, /* 'P' */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00, 0x00}, /* 'Q' */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00, 0x00}, /* 'R' */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00, 0x00}, /* 'S' */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* 'T' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* 'U' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00, 0x00}, /* 'V' */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00, 0x00}, /* 'W' */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00, 0x00}, /* 'X' */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* 'Y' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00, 0x00}, /* 'Z' */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00, 0x00}, /* '[' */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00, 0x00}, /* '\\' */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00, 0x00}, /* ']' */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '^' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00}, /* '_' */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '`' */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00, 0x00}, /* 'a' */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00, 0x00}, /* 'b' */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00, 0x00}, /* 'c' */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00, 0x00}, /* 'd' */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00, 0x00}, /* 'e' */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00, 0x00}, /* 'f' */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x11, 0x0e}, /* 'g' */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00, 0x00}, /* 'h' */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* 'i' */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* 'j' */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00, 0x00}, /* 'k' */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* 'l' */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x15, 0x15, 0x00, 0x00}, /* 'm' */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00, 0x00}, /* 'n' */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* 'o' */
    {0x00, 0x00, 0x1e, 0x11, 0x11, 0x11, 0x1e, 0x10, 0x10}, /* 'p' */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x01}, /* 'q' */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00, 0x00}, /* 'r' */
    {0x00, 0x00, 0x0f, 0x10, 0x0e, 0x01, 0x1e, 0x00, 0x00}, /* 's' */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00, 0x00}, /* 't' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00, 0x00}, /* 'u' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00, 0x00}, /* 'v' */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00, 0x00}, /* 'w' */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00, 0x00}, /* 'x' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* 'y' */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00, 0x00}, /* 'z' */
    {0x03, 0x04, 0x04, 0x08, 0x04, 0x04, 0x03, 0x00, 0x00}, /* '{' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* '|' */
    {0x18, 0x04, 0x04, 0x02, 0x04, 0x04, 0x18, 0x00, 0x00}, /* '}' */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00, 0x00}, /* '~' */
};

/* Width in pixels of s drawn at `scale` (one blank column between glyphs). */
static size_t text_width(const char *s, size_t scale) {
    size_t n = strlen(s);
    return n ? (n * (FONT_W + 1) - 1) * scale : 0;
}

/* Draws s with its top-left corner at (x, y), each font pixel a scale x
 * scale square of value ink; clipped to the image [h, w]. */
static void draw_text(uint8_t *img, size_t w, size_t h, size_t x, size_t y, const char *s,
                      size_t scale, uint8_t ink) {
    for (; *s; s++, x += (FONT_W + 1) * scale) {
        unsigned ch = (unsigned char)*s;
        if (ch < FONT_FIRST || ch > FONT_LAST) ch = '?';
        const uint8_t *glyph = font_5x9[ch - FONT_FIRST];
        for (size_t gy = 0; gy < FONT_H; gy++)
            for (size_t gx = 0; gx < FONT_W; gx++) {
                if (!(glyph[gy] & (0x10u >> gx))) continue;
                for (size_t dy = 0; dy < scale; dy++)
                    for (size_t dx = 0; dx < scale; dx++) {
                        size_t px = x + gx * scale + dx, py = y + gy * scale + dy;
                        if (px < w && py < h) img[py * w + px] = ink;
                    }
            }
    }
}

/* ------------------------------------------------------------ sample grid */

#define GRID_BG 236      /* light grey background */
#define GRID_INK 0       /* text */
#define GRID_EMPTY 176   /* outline of a tile with no sample */
#define GRID_MARGIN 16   /* around the figure */
#define GRID_TEXT 2      /* text scale: 10x18-pixel glyph cells */
#define GRID_LABEL_GAP 12 /* between a row's label and its first tile */
#define GRID_TITLE_GAP 14 /* between the title and the first row */
/* a row is at least tall enough for a label with descenders, centred on its body */
#define GRID_MIN_ROW ((FONT_BODY + 2 * (FONT_H - FONT_BODY)) * GRID_TEXT)

static void grid_title(char *buf, size_t n, size_t per_class) {
    snprintf(buf, n, "Fashion-MNIST: the first %zu image%s of each class, in file order", per_class,
             per_class == 1 ? "" : "s");
}

static void grid_label(char *buf, size_t n, int cls) {
    snprintf(buf, n, "%d %s", cls, fm_class_names[cls]);
}

int fm_eda_grid_layout_of(size_t rows, size_t cols, size_t per_class, fm_eda_grid_layout *lay,
                          fm_error *err) {
    char text[128];
    size_t label_w = 0, gap, row_h, grid_w;

    memset(lay, 0, sizeof *lay);
    if (per_class < 1 || per_class > FM_EDA_MAX_PER_CLASS)
        return fm_seterr(err, "samples per class must be 1..%d, got %zu", FM_EDA_MAX_PER_CLASS,
                         per_class);
    if (rows == 0 || cols == 0 || rows > FM_PNG_MAX_DIM || cols > FM_PNG_MAX_DIM)
        return fm_seterr(err, "cannot draw images of %zux%zu pixels", rows, cols);
    for (int c = 0; c < FM_N_CLASSES; c++) {
        grid_label(text, sizeof text, c);
        if (text_width(text, GRID_TEXT) > label_w) label_w = text_width(text, GRID_TEXT);
    }
    grid_title(text, sizeof text, per_class);
    /* Larger samples for small grids: 3x up to 10 per class (a 28x28 image
     * becomes 84x84), 2x up to 25, then 1x; smaller when that is too big. */
    lay->scale = per_class <= 10 ? 3 : per_class <= 25 ? 2 : 1;
    for (;; lay->scale--) {
        lay->tile_w = cols * lay->scale;
        lay->tile_h = rows * lay->scale;
        gap = 2 * lay->scale;
        row_h = lay->tile_h > GRID_MIN_ROW ? lay->tile_h : GRID_MIN_ROW;
        grid_w = per_class * lay->tile_w + (per_class - 1) * gap;
        lay->x0 = GRID_MARGIN + label_w + GRID_LABEL_GAP;
        lay->y0 = GRID_MARGIN + FONT_H * GRID_TEXT + GRID_TITLE_GAP;
        lay->step_x = lay->tile_w + gap;
        lay->step_y = row_h + gap;
        lay->w = lay->x0 + grid_w + GRID_MARGIN;
        if (lay->w < 2 * GRID_MARGIN + text_width(text, GRID_TEXT))
            lay->w = 2 * GRID_MARGIN + text_width(text, GRID_TEXT);
        lay->h = lay->y0 + FM_N_CLASSES * row_h + (FM_N_CLASSES - 1) * gap + GRID_MARGIN;
        if (lay->w <= FM_PNG_MAX_DIM && lay->h <= FM_PNG_MAX_DIM) return 0;
        if (lay->scale == 1) break;
    }
    fm_seterr(err, "a grid of %zu images of %zux%zu per class would be %zux%zu pixels, more "
              "than %zu on a side",
              per_class, rows, cols, lay->w, lay->h, FM_PNG_MAX_DIM);
    memset(lay, 0, sizeof *lay);
    return -1;
}

/* Copies image src [rows, cols] into img [h, w] at (x, y), each pixel a
 * scale x scale square (nearest-neighbour upscaling). */
static void blit_scaled(uint8_t *img, size_t w, size_t x, size_t y, const uint8_t *src,
                        size_t rows, size_t cols, size_t scale) {
    for (size_t r = 0; r < rows * scale; r++) {
        uint8_t *dst = img + (y + r) * w + x;
        const uint8_t *s = src + (r / scale) * cols;
        for (size_t c = 0; c < cols * scale; c++) dst[c] = s[c / scale];
    }
}

/* One-pixel outline of the tile at (x, y), marking a missing sample. */
static void outline(uint8_t *img, size_t w, size_t x, size_t y, size_t tw, size_t th) {
    for (size_t i = 0; i < tw; i++) img[y * w + x + i] = img[(y + th - 1) * w + x + i] = GRID_EMPTY;
    for (size_t i = 0; i < th; i++) img[(y + i) * w + x] = img[(y + i) * w + x + tw - 1] = GRID_EMPTY;
}

int fm_eda_sample_grid(const fm_dataset *ds, size_t per_class, uint8_t **out, size_t *w,
                       size_t *h, fm_error *err) {
    fm_eda_grid_layout lay;
    size_t shown[FM_N_CLASSES] = {0};
    size_t img_px = ds->rows * ds->cols;
    char text[128];

    *out = NULL;
    *w = *h = 0;
    if (fm_eda_grid_layout_of(ds->rows, ds->cols, per_class, &lay, err)) return -1;
    uint8_t *img = malloc(lay.w * lay.h);
    if (!img) return fm_seterr(err, "out of memory for a %zux%zu figure", lay.w, lay.h);
    memset(img, GRID_BG, lay.w * lay.h);

    grid_title(text, sizeof text, per_class);
    draw_text(img, lay.w, lay.h, GRID_MARGIN, GRID_MARGIN, text, GRID_TEXT, GRID_INK);
    for (int c = 0; c < FM_N_CLASSES; c++) {
        size_t y = lay.y0 + (size_t)c * lay.step_y;
        size_t row_h = lay.step_y - 2 * lay.scale; /* step_y less the gap */
        grid_label(text, sizeof text, c);
        draw_text(img, lay.w, lay.h, GRID_MARGIN, y + (row_h - FONT_BODY * GRID_TEXT) / 2, text,
                  GRID_TEXT, GRID_INK);
    }
    /* first per_class images of each class, in file order */
    for (size_t i = 0; i < ds->n; i++) {
        unsigned c = ds->labels[i];
        if (c >= FM_N_CLASSES || shown[c] == per_class) continue;
        blit_scaled(img, lay.w, lay.x0 + shown[c] * lay.step_x, lay.y0 + c * lay.step_y,
                    ds->pixels + i * img_px, ds->rows, ds->cols, lay.scale);
        shown[c]++;
    }
    for (size_t c = 0; c < FM_N_CLASSES; c++)
        for (size_t k = shown[c]; k < per_class; k++)
            outline(img, lay.w, lay.x0 + k * lay.step_x, lay.y0 + c * lay.step_y, lay.tile_w,
                    lay.tile_h);
    *out = img;
    *w = lay.w;
    *h = lay.h;
    return 0;
}

/* --------------------------------------------------------------- command */

static int fail(const char *fmt, ...) FM_PRINTF(1, 2);
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fmnist-train: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void eda_usage(void) {
    printf("usage: fmnist-train eda [--data DIR] [--png FILE] [--json] [--out FILE.json]\n"
           "                        [--per-class N]\n\n"
           "Exploratory data analysis of Fashion-MNIST: image counts and shapes of the train\n"
           "and test sets, pixel range (min, max, mean, std; raw 0-255 and scaled /255), class\n"
           "distribution and balance, and a PNG grid of sample training images per class.\n"
           "  --data DIR       data directory (default: $%s or %s)\n"
           "  --png FILE       sample-grid PNG to write (default: %s)\n"
           "  --json           print the overview as JSON instead of text\n"
           "  --out FILE.json  also write the JSON overview to FILE.json, atomically (default: none)\n"
           "  --per-class N    sample images per class in the grid, 1..%d (default: %d)\n"
           "  --help           this text\n",
           FM_DATA_ENV, FM_DEFAULT_DATA_DIR, FM_EDA_DEFAULT_PNG, FM_EDA_MAX_PER_CLASS,
           FM_EDA_DEFAULT_PER_CLASS);
}

/* Creates the missing directories above path (like mkdir -p of its
 * dirname), so that the default weights/... works in a fresh checkout. */
static int make_parent_dirs(const char *path, fm_error *err) {
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf) return fm_seterr(err, "out of memory");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (buf[i] != '/' || buf[i - 1] == '/') continue;
        buf[i] = '\0';
        struct stat st;
        if (stat(buf, &st) != 0 && mkdir(buf, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            fm_seterr(err, "%s: cannot create directory %s: %s", path, buf, strerror(e));
            free(buf);
            return -1;
        }
        buf[i] = '/';
    }
    free(buf);
    return 0;
}

/* The value of flag `name` at argv[*i]: "--name=VALUE" or "--name VALUE".
 * Returns 1 when argv[*i] is that flag (with *val set, NULL when the value
 * is missing), 0 when it is another argument. */
static int flag_value(char **argv, int argc, int *i, const char *name, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static void print_split_pixels(const char *name, const fm_eda_stats *st) {
    printf("  %-6s raw: min %3u  max %3u  mean %8.4f  std %8.4f   scaled: min %.4f  max %.4f  "
           "mean %.6f  std %.6f\n",
           name, st->min, st->max, st->mean, st->std, st->min / 255.0, st->max / 255.0,
           st->mean / 255.0, st->std / 255.0);
}

static void print_balance(const char *name, const fm_eda_stats *st) {
    size_t lo = st->class_count[0], hi = st->class_count[0];
    for (int c = 1; c < FM_N_CLASSES; c++) {
        if (st->class_count[c] < lo) lo = st->class_count[c];
        if (st->class_count[c] > hi) hi = st->class_count[c];
    }
    if (st->max_min_ratio > 0.0)
        printf("  %-6s max/min class count ratio %.4f (%zu to %zu per class): %s\n", name,
               st->max_min_ratio, lo, hi, st->balanced ? "balanced" : "imbalanced");
    else
        printf("  %-6s a class has no images (largest has %zu): imbalanced\n", name, hi);
}

/* "6000 (10.00%)": a class count and its share of the split */
static void count_cell(char *buf, size_t n, size_t count, size_t total) {
    snprintf(buf, n, "%zu (%.2f%%)", count, total ? 100.0 * (double)count / (double)total : 0.0);
}

static void print_text(const char *dir, const fm_eda_stats *tr, const fm_eda_stats *te,
                       const char *png, size_t per_class, const fm_eda_grid_layout *lay) {
    printf("Fashion-MNIST in %s\n\n", dir);
    printf("train: %zu images of %zux%zu (%zu pixels), test: %zu images of %zux%zu (%zu pixels)\n\n",
           tr->n, tr->rows, tr->cols, tr->rows * tr->cols, te->n, te->rows, te->cols,
           te->rows * te->cols);
    printf("pixel range over all pixels of each split (raw 0-255, scaled = raw/255):\n");
    print_split_pixels("train", tr);
    print_split_pixels("test", te);
    printf("\nclass distribution:\n");
    printf("  %2s  %-12s %16s %16s\n", "id", "class", "train", "test");
    for (int c = 0; c < FM_N_CLASSES; c++) {
        char a[48], b[48];
        count_cell(a, sizeof a, tr->class_count[c], tr->n);
        count_cell(b, sizeof b, te->class_count[c], te->n);
        printf("  %2d  %-12s %16s %16s\n", c, fm_class_names[c], a, b);
    }
    char a[48], b[48];
    count_cell(a, sizeof a, tr->n, tr->n);
    count_cell(b, sizeof b, te->n, te->n);
    printf("  %2s  %-12s %16s %16s\n", "", "total", a, b);
    printf("\nclass balance (balanced: every class within %.0f%% of the mean count):\n",
           100.0 * FM_EDA_BALANCE_TOL);
    print_balance("train", tr);
    print_balance("test", te);
    printf("  verdict: %s\n\n", tr->balanced && te->balanced
                                    ? "balanced - accuracy is a fair summary metric"
                                    : "imbalanced - look at per-class metrics, not accuracy alone");
    printf("sample grid: %s (%zux%zu pixels: the first %zu training image%s of each class, %zux)\n",
           png, lay->w, lay->h, per_class, per_class == 1 ? "" : "s", lay->scale);
}

int fm_eda_main(int argc, char **argv) {
    const char *data_flag = NULL, *png = FM_EDA_DEFAULT_PNG, *out = NULL, *val;
    size_t per_class = FM_EDA_DEFAULT_PER_CLASS;
    int json = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            eda_usage();
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (flag_value(argv, argc, &i, "--data", &val)) {
            if (!val || !*val) return fail("eda: --data needs a directory");
            data_flag = val;
        } else if (flag_value(argv, argc, &i, "--png", &val)) {
            if (!val || !*val) return fail("eda: --png needs a file name");
            png = val;
        } else if (flag_value(argv, argc, &i, "--out", &val)) {
            if (!val || !*val) return fail("eda: --out needs a file name");
            out = val;
        } else if (flag_value(argv, argc, &i, "--per-class", &val)) {
            char *end;
            unsigned long v;
            if (!val) return fail("eda: --per-class needs a number");
            errno = 0;
            v = strtoul(val, &end, 10);
            if (!*val || *val == '-' || *val == '+' || *end || errno || v < 1 ||
                v > FM_EDA_MAX_PER_CLASS)
                return fail("eda: --per-class: expected 1..%d, got '%s'", FM_EDA_MAX_PER_CLASS, val);
            per_class = (size_t)v;
        } else if (a[0] == '-') {
            return fail("eda: unknown flag '%s' (see fmnist-train eda --help)", a);
        } else {
            return fail("eda: unexpected argument '%s' (see fmnist-train eda --help)", a);
        }
    }

    const char *dir = fm_data_dir(data_flag);
    fm_error err;
    fm_dataset train = {0}, test = {0};
    fm_eda_stats st_train, st_test;
    fm_eda_grid_layout lay;
    uint8_t *img = NULL;
    char *js = NULL;
    size_t w, h;
    int rc = 1;

    if (fm_dataset_load_split(&train, dir, FM_SPLIT_TRAIN, &err) ||
        fm_dataset_load_split(&test, dir, FM_SPLIT_TEST, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    fm_eda_stats_of(&train, &st_train);
    fm_eda_stats_of(&test, &st_test);
    if (fm_eda_grid_layout_of(train.rows, train.cols, per_class, &lay, &err) ||
        fm_eda_sample_grid(&train, per_class, &img, &w, &h, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    if (make_parent_dirs(png, &err) || fm_png_write_gray(png, img, w, h, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    if (json || out) {
        js = fm_eda_json(&st_train, &st_test, png);
        if (!js) {
            fail("out of memory building the JSON overview");
            goto done;
        }
    }
    if (json)
        puts(js);
    else
        print_text(dir, &st_train, &st_test, png, per_class, &lay);
    if (out) {
        fm_chunk ch[2] = {{js, strlen(js)}, {"\n", 1}};
        if (make_parent_dirs(out, &err) || fm_write_atomic(out, ch, 2, &err)) {
            fail("%s", err.msg);
            goto done;
        }
    }
    rc = 0;
done:
    if (fflush(stdout) != 0 && rc == 0) rc = fail("cannot write the overview to stdout");
    free(js);
    free(img);
    fm_dataset_free(&train);
    fm_dataset_free(&test);
    return rc;
}
