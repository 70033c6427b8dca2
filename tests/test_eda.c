/* test_eda.c - Check tests of the data overview and the sample-grid PNG
 * (fm_eda.h).
 *
 * PNGs are decoded with libpng's own reader (the simplified png_image API)
 * and compared pixel for pixel; the grid is checked on small data sets built
 * in memory, tile by tile, through the documented layout.  fm_eda_main is
 * run on its flags, on an empty data directory and, when the Debian
 * package's data is installed, on the real set (skipped, passing, without
 * it).
 *
 * Runs under Check's fork mode and with CK_FORK=no alike: the temporary
 * directory is made and removed by an unchecked fixture, in the parent, and
 * every test uses file names of its own inside it. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdtemp, opendir */
#endif

#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_eda.h"
#include "fm_file.h"

#define PATH_LEN 4096

static char tmp_dir[PATH_LEN]; /* made by tmp_setup, removed by tmp_teardown */

/* ---- fixture and helpers ------------------------------------------------ */

static void tmp_setup(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/fm_eda_test.XXXXXX", base);
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        abort();
    }
}

/* Removes path and, when it is a directory, what it holds (only our files). */
static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        char sub[PATH_LEN];
        while (d && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void tmp_teardown(void) { remove_tree(tmp_dir); }

/* out = tmp_dir/name */
static void tmp_path(char *out, const char *name) {
    int len = snprintf(out, PATH_LEN, "%s/%s", tmp_dir, name);
    ck_assert(len > 0 && len < PATH_LEN);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Number of entries of dir whose name contains part. */
static size_t count_names(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static uint32_t be32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Decodes png with libpng, checking it is stored as 8-bit grey; returns the
 * malloc'd [h, w] pixels. */
static uint8_t *decode_gray(const uint8_t *png, size_t len, size_t *w, size_t *h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ck_assert_uint_ge(len, 33);
    ck_assert_mem_eq(png, sig, 8);
    ck_assert_mem_eq(png + 12, "IHDR", 4);
    ck_assert_uint_eq(png[24], 8); /* bit depth */
    ck_assert_uint_eq(png[25], 0); /* colour type: greyscale */

    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    ck_assert_msg(png_image_begin_read_from_memory(&im, png, len), "libpng: %s", im.message);
    ck_assert_uint_eq(im.format, PNG_FORMAT_GRAY);
    ck_assert_uint_eq(im.width, be32(png + 16));
    ck_assert_uint_eq(im.height, be32(png + 20));
    im.format = PNG_FORMAT_GRAY;
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    ck_assert_ptr_nonnull(px);
    ck_assert_msg(png_image_finish_read(&im, NULL, px, 0, NULL), "libpng: %s", im.message);
    *w = im.width;
    *h = im.height;
    png_image_free(&im);
    return px;
}

/* A synthetic image set owning its arrays through px and lb (the caller
 * frees them); owned stays NULL as for a view. */
static fm_dataset make_set(size_t n, size_t rows, size_t cols, const uint8_t *labels, uint8_t **px,
                           uint8_t **lb) {
    fm_dataset ds = {0};
    *px = malloc(n * rows * cols);
    *lb = malloc(n);
    ck_assert(*px && *lb);
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < rows * cols; p++) /* distinct per image and position */
            (*px)[i * rows * cols + p] = (uint8_t)((i * 37 + p * 11 + p / cols * 5) % 256);
    memcpy(*lb, labels, n);
    ds.n = n;
    ds.rows = rows;
    ds.cols = cols;
    ds.pixels = *px;
    ds.labels = *lb;
    ds.owned = NULL;
    return ds;
}

/* ---- PNG ---------------------------------------------------------------- */

START_TEST(png_round_trip) {
    /* odd sizes (no row padding hides), every grey level present */
    static const size_t dims[][2] = {{1, 1}, {37, 23}, {256, 3}, {3, 300}};
    size_t w = dims[_i][0], h = dims[_i][1];
    uint8_t *px = malloc(w * h), *png = NULL, *back;
    size_t len = 0, bw, bh;
    fm_error err = {{0}};
    ck_assert_ptr_nonnull(px);
    for (size_t i = 0; i < w * h; i++) px[i] = (uint8_t)((i * 131 + i / 7) % 256);
    ck_assert_int_eq(fm_png_encode_gray(px, w, h, &png, &len, &err), 0);
    ck_assert_ptr_nonnull(png);
    back = decode_gray(png, len, &bw, &bh);
    ck_assert_uint_eq(bw, w);
    ck_assert_uint_eq(bh, h);
    ck_assert_mem_eq(back, px, w * h);
    free(back);
    free(png);
    free(px);
}
END_TEST

START_TEST(png_bad_size) {
    uint8_t px[4] = {0}, *png = (uint8_t *)px;
    size_t len = 7;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_png_encode_gray(px, 0, 4, &png, &len, &err), -1);
    ck_assert_ptr_null(png);
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "0x4"));
    ck_assert_int_eq(fm_png_encode_gray(px, 4, FM_PNG_MAX_DIM + 1, &png, &len, NULL), -1);
}
END_TEST

START_TEST(png_write_atomic) {
    char path[PATH_LEN], bad[PATH_LEN], sub[PATH_LEN];
    uint8_t px[6 * 5], *png;
    char *file;
    size_t len, flen;
    fm_error err = {{0}};

    /* its own directory, so that the listing below sees only this test */
    tmp_path(sub, "atomic");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    tmp_path(path, "atomic/x.png");
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 8);
    for (int round = 0; round < 2; round++) { /* create, then replace */
        px[0] = (uint8_t)round;
        ck_assert_int_eq(fm_png_write_gray(path, px, 6, 5, &err), 0);
        ck_assert_int_eq(fm_png_encode_gray(px, 6, 5, &png, &len, &err), 0);
        ck_assert_int_eq(fm_read_file(path, 1 << 20, &file, &flen, &err), 0);
        ck_assert_uint_eq(flen, len);
        ck_assert_mem_eq(file, png, len);
        free(file);
        free(png);
    }
    ck_assert_uint_eq(count_names(sub, ".tmp"), 0);
    ck_assert_uint_eq(count_names(sub, ".png"), 1);

    /* a directory that does not exist: an error naming the file, nothing left */
    tmp_path(bad, "atomic/missing/y.png");
    ck_assert_int_eq(fm_png_write_gray(bad, px, 6, 5, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "y.png"));
    ck_assert(!file_exists(bad));
    /* a bad size fails before anything is written, and says which file */
    tmp_path(bad, "atomic/z.png");
    ck_assert_int_eq(fm_png_write_gray(bad, px, 0, 5, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "z.png"));
    ck_assert(!file_exists(bad));
    ck_assert_uint_eq(count_names(sub, ".tmp"), 0);
}
END_TEST

/* ---- sample grid -------------------------------------------------------- */

START_TEST(grid_layout) {
    fm_eda_grid_layout lay;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, 10, &lay, &err), 0);
    ck_assert_uint_eq(lay.scale, 3);
    ck_assert_uint_eq(lay.tile_w, 84);
    ck_assert_uint_eq(lay.tile_h, 84);
    ck_assert_uint_ge(lay.step_x, lay.tile_w);
    ck_assert_uint_ge(lay.step_y, lay.tile_h);
    ck_assert_uint_gt(lay.x0, 100); /* room for "0 T-shirt/top" on the left */
    ck_assert_uint_gt(lay.y0, 0);   /* and a title above */
    ck_assert_uint_ge(lay.w, lay.x0 + 9 * lay.step_x + lay.tile_w);
    ck_assert_uint_ge(lay.h, lay.y0 + 9 * lay.step_y + lay.tile_h);

    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, 20, &lay, &err), 0);
    ck_assert_uint_eq(lay.scale, 2);
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, 100, &lay, &err), 0);
    ck_assert_uint_eq(lay.scale, 1);

    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, 0, &lay, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "1..100"));
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, FM_EDA_MAX_PER_CLASS + 1, &lay, &err), -1);
    ck_assert_int_eq(fm_eda_grid_layout_of(0, 28, 10, &lay, &err), -1);
    /* too big even at 1x */
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 5000, 100, &lay, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "on a side"));
    /* too big at 3x, fine at a smaller scale */
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 3000, 10, &lay, &err), 0);
    ck_assert_uint_lt(lay.scale, 3);
    ck_assert_uint_le(lay.w, FM_PNG_MAX_DIM);
}
END_TEST

/* Builds a grid of a synthetic set (class 3 short of samples, class 5
 * absent, the rest with more than per_class) and checks every tile. */
static void check_grid(size_t rows, size_t cols, size_t per_class) {
    enum { N = 64 };
    uint8_t labels[N], *px, *lb, *img;
    size_t w, h, seen[FM_N_CLASSES] = {0};
    fm_eda_grid_layout lay;
    fm_error err = {{0}};

    for (size_t i = 0; i < N; i++) {
        labels[i] = (uint8_t)((i * 7 + i / 10) % FM_N_CLASSES);
        if (labels[i] == 5) labels[i] = 6;
        if (labels[i] == 3 && i > 20) labels[i] = 4; /* at most 2 of class 3 */
    }
    fm_dataset ds = make_set(N, rows, cols, labels, &px, &lb);
    ck_assert_int_eq(fm_eda_grid_layout_of(rows, cols, per_class, &lay, &err), 0);
    ck_assert_int_eq(fm_eda_sample_grid(&ds, per_class, &img, &w, &h, &err), 0);
    ck_assert_uint_eq(w, lay.w);
    ck_assert_uint_eq(h, lay.h);
    const uint8_t bg = img[0]; /* the margin */

    for (size_t i = 0; i < N; i++) { /* file order within each class */
        size_t c = labels[i], k = seen[c]++;
        if (k >= per_class) continue;
        size_t x = lay.x0 + k * lay.step_x, y = lay.y0 + c * lay.step_y;
        for (size_t yy = 0; yy < lay.tile_h; yy++)
            for (size_t xx = 0; xx < lay.tile_w; xx++)
                ck_assert_msg(img[(y + yy) * w + x + xx] ==
                                  px[i * rows * cols + (yy / lay.scale) * cols + xx / lay.scale],
                              "class %zu sample %zu (image %zu): wrong pixel at %zu,%zu", c, k, i, xx,
                              yy);
    }
    ck_assert_uint_eq(seen[5], 0);
    ck_assert_uint_eq(seen[3], 2);
    for (size_t c = 0; c < FM_N_CLASSES; c++) {
        /* tiles without a sample show the background inside */
        for (size_t k = seen[c]; k < per_class; k++) {
            size_t x = lay.x0 + k * lay.step_x, y = lay.y0 + c * lay.step_y;
            ck_assert_uint_eq(img[(y + lay.tile_h / 2) * w + x + lay.tile_w / 2], bg);
        }
        /* a caption left of every row: some dark pixels there */
        size_t dark = 0;
        for (size_t y = lay.y0 + c * lay.step_y; y < lay.y0 + (c + 1) * lay.step_y; y++)
            for (size_t x = 0; x < lay.x0; x++) dark += img[y * w + x] < 64;
        ck_assert_msg(dark > 20, "no caption for class %zu", c);
    }
    /* the title: dark pixels above the first row */
    size_t dark = 0;
    for (size_t i = 0; i < lay.y0 * w; i++) dark += img[i] < 64;
    ck_assert_uint_gt(dark, 100);
    free(img);
    free(px);
    free(lb);
}

START_TEST(grid_28x28) { check_grid(28, 28, 10); }
END_TEST

START_TEST(grid_small_per_class) { check_grid(28, 28, 3); }
END_TEST

START_TEST(grid_non_square) { check_grid(5, 9, 30); } /* rows != cols; scale 1 */
END_TEST

START_TEST(grid_bad_args) {
    uint8_t labels[2] = {0, 1}, *px, *lb, *img = (uint8_t *)labels;
    size_t w = 1, h = 1;
    fm_error err = {{0}};
    fm_dataset ds = make_set(2, 28, 28, labels, &px, &lb);
    ck_assert_int_eq(fm_eda_sample_grid(&ds, 0, &img, &w, &h, &err), -1);
    ck_assert_ptr_null(img);
    ck_assert_uint_eq(w, 0);
    ck_assert_uint_eq(h, 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "per class"));
    free(px);
    free(lb);
}
END_TEST

/* ---- statistics and JSON ------------------------------------------------ */

START_TEST(stats_exact) {
    enum { N = 30, R = 4, C = 3 };
    uint8_t labels[N], *px, *lb;
    fm_eda_stats st;
    for (size_t i = 0; i < N; i++) labels[i] = (uint8_t)(i % FM_N_CLASSES);
    fm_dataset ds = make_set(N, R, C, labels, &px, &lb);
    fm_eda_stats_of(&ds, &st);

    double sum = 0, ss = 0;
    unsigned lo = 255, hi = 0;
    for (size_t i = 0; i < N * R * C; i++) {
        sum += px[i];
        if (px[i] < lo) lo = px[i];
        if (px[i] > hi) hi = px[i];
    }
    double mean = sum / (N * R * C);
    for (size_t i = 0; i < N * R * C; i++) ss += (px[i] - mean) * (px[i] - mean);
    ck_assert_uint_eq(st.n, N);
    ck_assert_uint_eq(st.rows, R);
    ck_assert_uint_eq(st.cols, C);
    ck_assert_uint_eq(st.min, lo);
    ck_assert_uint_eq(st.max, hi);
    ck_assert_double_eq_tol(st.mean, mean, 1e-9);
    ck_assert_double_eq_tol(st.std, sqrt(ss / (N * R * C)), 1e-9);
    for (int c = 0; c < FM_N_CLASSES; c++) ck_assert_uint_eq(st.class_count[c], 3);
    ck_assert_double_eq(st.max_min_ratio, 1.0);
    ck_assert_int_eq(st.balanced, 1);

    /* one class with 2 of 30 (mean 3): ratio 4/2 = 2 ... */
    memcpy(lb, labels, N);
    lb[0] = 1; /* class 0: 2, class 1: 4 */
    fm_eda_stats_of(&ds, &st);
    ck_assert_uint_eq(st.class_count[0], 2);
    ck_assert_uint_eq(st.class_count[1], 4);
    ck_assert_double_eq_tol(st.max_min_ratio, 2.0, 1e-12);
    ck_assert_int_eq(st.balanced, 0);
    /* ... and a missing class: no ratio, imbalanced */
    lb[10] = lb[20] = 1;
    fm_eda_stats_of(&ds, &st);
    ck_assert_uint_eq(st.class_count[0], 0);
    ck_assert_double_eq(st.max_min_ratio, 0.0);
    ck_assert_int_eq(st.balanced, 0);
    free(px);
    free(lb);
}
END_TEST

START_TEST(stats_balance_tolerance) {
    /* 1% of the mean count: 1000 per class +-10 is balanced, +-11 is not */
    enum { N = 10000 };
    uint8_t *labels = malloc(N), *px, *lb;
    fm_eda_stats st;
    ck_assert_ptr_nonnull(labels);
    for (size_t i = 0; i < N; i++) labels[i] = (uint8_t)(i / 1000);
    for (size_t i = 0; i < 10; i++) labels[i] = 1; /* class 0: 990, class 1: 1010 */
    fm_dataset ds = make_set(N, 1, 1, labels, &px, &lb);
    fm_eda_stats_of(&ds, &st);
    ck_assert_uint_eq(st.class_count[0], 990);
    ck_assert_int_eq(st.balanced, 1);
    lb[10] = 1; /* 989 and 1011 */
    fm_eda_stats_of(&ds, &st);
    ck_assert_int_eq(st.balanced, 0);
    free(labels);
    free(px);
    free(lb);
}
END_TEST

START_TEST(stats_empty) {
    fm_dataset ds = {0};
    fm_eda_stats st;
    ds.rows = ds.cols = 28;
    fm_eda_stats_of(&ds, &st);
    ck_assert_uint_eq(st.n, 0);
    ck_assert_uint_eq(st.min, 0);
    ck_assert_uint_eq(st.max, 0);
    ck_assert_double_eq(st.mean, 0.0);
    ck_assert_int_eq(st.balanced, 0);
}
END_TEST

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "no number '%s'", key);
    return v->valuedouble;
}

START_TEST(json_overview) {
    fm_eda_stats tr = {0}, te = {0};
    tr.n = 60;
    tr.rows = tr.cols = 28;
    tr.min = 0;
    tr.max = 255;
    tr.mean = 72.94037;
    tr.std = 90.02118;
    for (int c = 0; c < FM_N_CLASSES; c++) tr.class_count[c] = 6;
    tr.max_min_ratio = 1.0;
    tr.balanced = 1;
    te = tr;
    te.n = 9;
    te.class_count[9] = 0; /* a missing class: ratio null, not balanced */
    te.max_min_ratio = 0.0;
    te.balanced = 0;

    for (int with_png = 0; with_png < 2; with_png++) {
        char *s = fm_eda_json(&tr, &te, with_png ? "out/x.png" : NULL);
        ck_assert_ptr_nonnull(s);
        cJSON *j = cJSON_Parse(s);
        ck_assert_ptr_nonnull(j);
        const cJSON *jt = cJSON_GetObjectItemCaseSensitive(j, "train");
        const cJSON *je = cJSON_GetObjectItemCaseSensitive(j, "test");
        ck_assert(cJSON_IsObject(jt) && cJSON_IsObject(je));
        ck_assert_double_eq(json_num(jt, "count"), 60);
        ck_assert_double_eq(json_num(je, "count"), 9);
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(jt, "shape");
        ck_assert_int_eq(cJSON_GetArraySize(shape), 2);
        ck_assert_double_eq(cJSON_GetArrayItem(shape, 0)->valuedouble, 28);
        ck_assert_double_eq(cJSON_GetArrayItem(shape, 1)->valuedouble, 28);
        const cJSON *pix = cJSON_GetObjectItemCaseSensitive(jt, "pixel");
        ck_assert_double_eq(json_num(pix, "min"), 0);
        ck_assert_double_eq(json_num(pix, "max"), 255);
        ck_assert_double_eq_tol(json_num(pix, "mean"), 72.9404, 1e-9);
        ck_assert_double_eq_tol(json_num(pix, "std"), 90.0212, 1e-9);
        const cJSON *pxs = cJSON_GetObjectItemCaseSensitive(jt, "pixel_scaled");
        ck_assert_double_eq(json_num(pxs, "max"), 1);
        ck_assert_double_eq_tol(json_num(pxs, "mean"), 72.94037 / 255, 1e-6);
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(jt, "classes");
        ck_assert_int_eq(cJSON_GetArraySize(cls), FM_N_CLASSES);
        ck_assert_str_eq(cls->child->string, "T-shirt/top"); /* label order */
        ck_assert_double_eq(json_num(cls, "Ankle boot"), 6);
        ck_assert_double_eq(json_num(jt, "max_min_ratio"), 1);
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jt, "balanced")));
        ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(je, "max_min_ratio")));
        ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(je, "balanced")));
        ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "balanced")));
        const cJSON *names = cJSON_GetObjectItemCaseSensitive(j, "classes");
        ck_assert_int_eq(cJSON_GetArraySize(names), FM_N_CLASSES);
        for (int c = 0; c < FM_N_CLASSES; c++)
            ck_assert_str_eq(cJSON_GetArrayItem(names, c)->valuestring, fm_class_names[c]);
        const cJSON *png = cJSON_GetObjectItemCaseSensitive(j, "png");
        if (with_png)
            ck_assert_str_eq(cJSON_GetStringValue(png), "out/x.png");
        else
            ck_assert(cJSON_IsNull(png));
        cJSON_Delete(j);
        free(s);
    }
}
END_TEST

/* ---- the command -------------------------------------------------------- */

static int run_eda(int n, ...) {
    char *argv[16];
    va_list ap;
    ck_assert_int_lt(n, 15);
    argv[0] = "eda";
    va_start(ap, n);
    for (int i = 0; i < n; i++) argv[1 + i] = va_arg(ap, char *);
    va_end(ap);
    argv[1 + n] = NULL;
    return fm_eda_main(1 + n, argv);
}

START_TEST(main_flags) {
    char png[PATH_LEN];
    tmp_path(png, "flags.png");
    ck_assert_int_eq(run_eda(1, "--help"), 0);
    ck_assert_int_ne(run_eda(1, "--bogus"), 0);
    ck_assert_int_ne(run_eda(1, "--pngx=a.png"), 0);
    ck_assert_int_ne(run_eda(1, "stray"), 0);
    ck_assert_int_ne(run_eda(1, "--png"), 0); /* value missing */
    ck_assert_int_ne(run_eda(2, "--per-class", "0"), 0);
    ck_assert_int_ne(run_eda(1, "--per-class=101"), 0);
    ck_assert_int_ne(run_eda(2, "--per-class", "3x"), 0);
    ck_assert_int_ne(run_eda(2, "--per-class", "-1"), 0);
    ck_assert(!file_exists(png));
}
END_TEST

START_TEST(main_missing_data) {
    char empty[PATH_LEN], png[PATH_LEN];
    tmp_path(empty, "empty-data");
    tmp_path(png, "missing.png");
    ck_assert_int_eq(mkdir(empty, 0755), 0);
    ck_assert_int_ne(run_eda(4, "--data", empty, "--png", png), 0);
    ck_assert(!file_exists(png));
    tmp_path(empty, "no-such-dir");
    ck_assert_int_ne(run_eda(3, "--json", "--data", empty), 0);
}
END_TEST

/* Whether the real training images are installed where fm_data_dir points. */
static int real_data_present(void) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", fm_data_dir(NULL));
    if (file_exists(path)) return 1;
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", fm_data_dir(NULL));
    return file_exists(path);
}

START_TEST(main_real_data) {
    if (!real_data_present()) {
        printf("test_eda: %s has no Fashion-MNIST data, skipping the real-data test\n",
               fm_data_dir(NULL));
        return;
    }
    char png[PATH_LEN], out[PATH_LEN], *file;
    size_t len, w, h;
    fm_error err = {{0}};
    fm_eda_grid_layout lay;
    /* a directory that does not exist yet: the command makes it */
    tmp_path(png, "real/sub/x.png");
    tmp_path(out, "real/overview.json");
    ck_assert_int_eq(run_eda(7, "--json", "--png", png, "--out", out, "--data", fm_data_dir(NULL)),
                     0);
    ck_assert(file_exists(png));

    ck_assert_int_eq(fm_read_file(png, 1 << 24, &file, &len, &err), 0);
    uint8_t *img = decode_gray((const uint8_t *)file, len, &w, &h);
    ck_assert_int_eq(fm_eda_grid_layout_of(28, 28, 10, &lay, &err), 0);
    ck_assert_uint_eq(w, lay.w);
    ck_assert_uint_eq(h, lay.h);
    free(img);
    free(file);

    ck_assert_int_eq(fm_read_file(out, 1 << 20, &file, &len, &err), 0);
    cJSON *j = cJSON_Parse(file);
    ck_assert_ptr_nonnull(j);
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(j, "train");
    const cJSON *te = cJSON_GetObjectItemCaseSensitive(j, "test");
    ck_assert_double_eq(json_num(tr, "count"), 60000);
    ck_assert_double_eq(json_num(te, "count"), 10000);
    ck_assert_double_eq(json_num(cJSON_GetObjectItemCaseSensitive(tr, "classes"), "Bag"), 6000);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "balanced")));
    ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "png")), png);
    cJSON_Delete(j);
    free(file);

    /* text form, fewer samples */
    ck_assert_int_eq(run_eda(6, "--per-class", "2", "--png", png, "--data", fm_data_dir(NULL)), 0);
    ck_assert_uint_eq(count_names(tmp_dir, ".tmp"), 0);
}
END_TEST

static Suite *eda_suite(void) {
    Suite *s = suite_create("eda");
    TCase *tc = tcase_create("png");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_loop_test(tc, png_round_trip, 0, 4);
    tcase_add_test(tc, png_bad_size);
    tcase_add_test(tc, png_write_atomic);
    suite_add_tcase(s, tc);

    tc = tcase_create("grid");
    tcase_add_test(tc, grid_layout);
    tcase_add_test(tc, grid_28x28);
    tcase_add_test(tc, grid_small_per_class);
    tcase_add_test(tc, grid_non_square);
    tcase_add_test(tc, grid_bad_args);
    suite_add_tcase(s, tc);

    tc = tcase_create("stats");
    tcase_add_test(tc, stats_exact);
    tcase_add_test(tc, stats_balance_tolerance);
    tcase_add_test(tc, stats_empty);
    tcase_add_test(tc, json_overview);
    suite_add_tcase(s, tc);

    tc = tcase_create("command");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_set_timeout(tc, 300); /* loads the real data set under sanitizers */
    tcase_add_test(tc, main_flags);
    tcase_add_test(tc, main_missing_data);
    tcase_add_test(tc, main_real_data);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(eda_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
