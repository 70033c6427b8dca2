/* test_idx.c - Check tests of the IDX reader and the data set (fm_idx.h).
 *
 * Each test writes small IDX files of its own - header bytes built by hand,
 * written with stdio (plain) or zlib's gzopen("wb") (gzip) - into a mkdtemp
 * directory under $TMPDIR (or /tmp) that is removed afterwards, and checks
 * both the values read and that every malformed input is refused with a
 * message naming the file.  Most tests run twice, plain (_i == 0) and gzip
 * (_i == 1).  If the Debian package's data is installed, one test loads the
 * real sets and checks their counts and class balance.
 *
 * Runs under Check's fork mode and with CK_FORK=no alike: the temporary
 * directory is made and removed by an unchecked fixture, in the parent. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdtemp, setenv, opendir */
#endif

#include <check.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_idx.h"

#define MAGIC_IMAGES 0x00000803u
#define MAGIC_LABELS 0x00000801u
#define PATH_LEN 4096

static char tmp_dir[PATH_LEN]; /* made by tmp_setup, removed by tmp_teardown */

/* ---- fixture and file helpers ------------------------------------------ */

static void tmp_setup(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/fm_idx_test.XXXXXX", base);
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

static void write_bytes(const char *path, int gz, const uint8_t *data, size_t len) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        if (len > 0) ck_assert_int_eq(gzwrite(f, data, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        if (len > 0) ck_assert_uint_eq(fwrite(data, 1, len, f), len);
        ck_assert_int_eq(fclose(f), 0);
    }
}

static uint8_t *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert(size >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes tmp_dir/name: magic, nd sizes, then len payload bytes (which need
 * not agree with the sizes: that is the point of several tests).  The full
 * path goes to path_out. */
static void write_idx(char *path_out, const char *name, int gz, uint32_t magic,
                      const uint32_t *dims, unsigned nd, const uint8_t *data,
                      size_t len) {
    size_t hlen = 4 * (1 + (size_t)nd);
    uint8_t *buf = malloc(hlen + len + 1);
    ck_assert_ptr_nonnull(buf);
    put_be32(buf, magic);
    for (unsigned i = 0; i < nd; i++) put_be32(buf + 4 * (1 + (size_t)i), dims[i]);
    if (len > 0) memcpy(buf + hlen, data, len);
    tmp_path(path_out, name);
    write_bytes(path_out, gz, buf, hlen + len);
    free(buf);
}

static void write_images(char *path_out, const char *name, int gz, uint32_t n,
                         uint32_t rows, uint32_t cols, const uint8_t *px, size_t len) {
    uint32_t dims[3] = {n, rows, cols};
    write_idx(path_out, name, gz, MAGIC_IMAGES, dims, 3, px, len);
}

static void write_labels(char *path_out, const char *name, int gz, uint32_t n,
                         const uint8_t *lb, size_t len) {
    uint32_t dims[1] = {n};
    write_idx(path_out, name, gz, MAGIC_LABELS, dims, 1, lb, len);
}

#define ck_assert_msg_has(err, needle)                                            \
    ck_assert_msg(strstr((err).msg, (needle)) != NULL,                           \
                  "error message \"%s\" lacks \"%s\"", (err).msg, (needle))

/* Expects fm_idx_read_images(path) to fail with a message naming path and
 * containing needle (when non-NULL). */
static void expect_images_fail(const char *path, const char *needle) {
    uint8_t *px = (uint8_t *)1;
    size_t n = 0, rows = 0, cols = 0;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_idx_read_images(path, &px, &n, &rows, &cols, &err), -1);
    ck_assert_ptr_null(px);
    ck_assert_msg_has(err, path);
    if (needle) ck_assert_msg_has(err, needle);
}

static void expect_labels_fail(const char *path, const char *needle) {
    uint8_t *lb = (uint8_t *)1;
    size_t n = 0;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_idx_read_labels(path, &lb, &n, &err), -1);
    ck_assert_ptr_null(lb);
    ck_assert_msg_has(err, path);
    if (needle) ck_assert_msg_has(err, needle);
}

/* A small valid set: 5 images of 3x4, labels spanning 0..9. */
enum { SN = 5, SH = 3, SW = 4 };
static const uint8_t small_labels[SN] = {0, 9, 3, 5, 7};
static void small_pixels(uint8_t px[SN * SH * SW]) {
    for (size_t i = 0; i < (size_t)SN * SH * SW; i++) px[i] = (uint8_t)(i * 37 % 256);
    px[0] = 0;
    px[1] = 255;
}

/* ---- tests --------------------------------------------------------------- */

START_TEST(test_round_trip) {
    int gz = _i;
    uint8_t px[SN * SH * SW];
    char ip[PATH_LEN], lp[PATH_LEN];
    fm_error err = {{0}};
    small_pixels(px);
    write_images(ip, gz ? "img.gz" : "img", gz, SN, SH, SW, px, sizeof px);
    write_labels(lp, gz ? "lab.gz" : "lab", gz, SN, small_labels, SN);

    uint8_t *rpx, *rlb;
    size_t n, rows, cols;
    ck_assert_int_eq(fm_idx_read_images(ip, &rpx, &n, &rows, &cols, &err), 0);
    ck_assert_uint_eq(n, SN);
    ck_assert_uint_eq(rows, SH);
    ck_assert_uint_eq(cols, SW);
    ck_assert_mem_eq(rpx, px, sizeof px);
    free(rpx);
    ck_assert_int_eq(fm_idx_read_labels(lp, &rlb, &n, &err), 0);
    ck_assert_uint_eq(n, SN);
    ck_assert_mem_eq(rlb, small_labels, SN);
    free(rlb);

    fm_dataset ds;
    ck_assert_int_eq(fm_dataset_load(&ds, ip, lp, &err), 0);
    ck_assert_uint_eq(ds.n, SN);
    ck_assert_uint_eq(ds.rows, SH);
    ck_assert_uint_eq(ds.cols, SW);
    ck_assert_ptr_nonnull(ds.owned);
    ck_assert_ptr_eq(ds.pixels, ds.owned);
    ck_assert_ptr_eq(ds.labels, ds.owned + sizeof px);
    ck_assert_mem_eq(ds.pixels, px, sizeof px);
    ck_assert_mem_eq(ds.labels, small_labels, SN);

    float all[SN * SH * SW], part[3 * SH * SW];
    fm_dataset_to_float(&ds, 0, SN, all);
    ck_assert(all[0] == 0.0f);
    ck_assert(all[1] == 1.0f);
    for (size_t i = 0; i < sizeof px; i++) {
        ck_assert(all[i] == (float)px[i] / 255.0f);
        ck_assert(all[i] >= 0.0f && all[i] <= 1.0f);
    }
    fm_dataset_to_float(&ds, 1, 3, part);
    ck_assert_mem_eq(part, all + SH * SW, sizeof part);

    fm_dataset_free(&ds);
    ck_assert_ptr_null(ds.owned);
    ck_assert_uint_eq(ds.n, 0);
    fm_dataset_free(&ds); /* twice: a no-op */
}
END_TEST

START_TEST(test_wrong_magic) {
    int gz = _i;
    uint8_t px[SN * SH * SW] = {0}, lb[SN] = {0};
    uint32_t dims[3] = {SN, SH, SW};
    char p[PATH_LEN];

    write_idx(p, "bad_magic", gz, 0x12345678u, dims, 3, px, sizeof px);
    expect_images_fail(p, "not an IDX file");
    write_idx(p, "float_type", gz, 0x00000d03u, dims, 3, px, sizeof px);
    expect_images_fail(p, "element type");
    /* a label file given as images, and images given as labels */
    write_labels(p, "labels_as_images", gz, SN, lb, SN);
    expect_images_fail(p, "a label file?");
    write_images(p, "images_as_labels", gz, SN, SH, SW, px, sizeof px);
    expect_labels_fail(p, "an image file?");
}
END_TEST

START_TEST(test_wrong_ndims) {
    int gz = _i;
    uint8_t px[SN * SH * SW] = {0};
    uint32_t dims[4] = {SN, SH, SW, 1};
    char p[PATH_LEN];

    write_idx(p, "two_dims", gz, 0x00000802u, dims, 2, px, (size_t)SN * SH);
    expect_images_fail(p, "2 dimensions");
    write_idx(p, "four_dims", gz, 0x00000804u, dims, 4, px, sizeof px);
    expect_images_fail(p, "4 dimensions");
    write_idx(p, "label_two_dims", gz, 0x00000802u, dims, 2, px, (size_t)SN * SH);
    expect_labels_fail(p, "2 dimensions");
    dims[1] = 0;
    write_idx(p, "zero_rows", gz, MAGIC_IMAGES, dims, 3, px, 0);
    expect_images_fail(p, "size of 0");
}
END_TEST

START_TEST(test_truncated) {
    int gz = _i;
    uint8_t px[SN * SH * SW] = {0}, lb[SN] = {0};
    uint32_t dims[3] = {SN, SH, SW};
    char p[PATH_LEN];

    write_images(p, "short_pixels", gz, SN, SH, SW, px, sizeof px - 1);
    expect_images_fail(p, "truncated");
    write_labels(p, "short_labels", gz, SN, lb, SN - 1);
    expect_labels_fail(p, "truncated");
    write_images(p, "no_pixels", gz, SN, SH, SW, px, 0);
    expect_images_fail(p, "truncated");
    write_idx(p, "short_header", gz, MAGIC_IMAGES, dims, 1, NULL, 0); /* 8 of 16 */
    expect_images_fail(p, "truncated IDX header");
    tmp_path(p, "empty");
    write_bytes(p, gz, NULL, 0);
    expect_images_fail(p, "empty");
    write_bytes(p, gz, (const uint8_t *)"\0\0", 2);
    expect_labels_fail(p, "truncated IDX header");
}
END_TEST

START_TEST(test_trailing) {
    int gz = _i;
    uint8_t px[SN * SH * SW + 1] = {0}, lb[SN + 3] = {0};
    char ip[PATH_LEN], lp[PATH_LEN], good[PATH_LEN];
    fm_dataset ds;
    fm_error err = {{0}};

    write_images(ip, "long_pixels", gz, SN, SH, SW, px, sizeof px);
    expect_images_fail(ip, "trailing");
    write_labels(lp, "long_labels", gz, SN, lb, sizeof lb);
    expect_labels_fail(lp, "trailing");
    /* and through fm_dataset_load, for each file in turn */
    write_labels(good, "good_labels", gz, SN, lb, SN);
    ck_assert_int_eq(fm_dataset_load(&ds, ip, good, &err), -1);
    ck_assert_msg_has(err, ip);
    ck_assert_msg_has(err, "trailing");
    ck_assert_ptr_null(ds.owned);
    write_images(good, "good_images", gz, SN, SH, SW, px, sizeof px - 1);
    ck_assert_int_eq(fm_dataset_load(&ds, good, lp, &err), -1);
    ck_assert_msg_has(err, lp);
    ck_assert_msg_has(err, "trailing");
}
END_TEST

START_TEST(test_huge_count) {
    /* Headers claiming absurd sizes are refused from the header alone; a
     * truncated file claiming just under the limit fails on its data without
     * the claimed gigabyte ever being allocated (the buffer grows with what
     * is read). */
    int gz = _i;
    uint8_t px[FM_IMG_SIZE] = {0};
    uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu}; /* 2^96: overflows */
    char p[PATH_LEN];

    write_images(p, "huge_count", gz, 0xffffffffu, 28, 28, px, sizeof px);
    expect_images_fail(p, "refusing");
    write_idx(p, "huge_all", gz, MAGIC_IMAGES, huge, 3, px, sizeof px);
    expect_images_fail(p, "refusing");
    write_images(p, "over_limit", gz, (uint32_t)(FM_IDX_MAX_BYTES / FM_IMG_SIZE + 1),
                 28, 28, px, sizeof px);
    expect_images_fail(p, "refusing");
    write_labels(p, "huge_labels", gz, 0xffffffffu, px, 10);
    expect_labels_fail(p, "refusing");

    write_images(p, "near_limit", gz, (uint32_t)(FM_IDX_MAX_BYTES / FM_IMG_SIZE), 28,
                 28, px, sizeof px);
    expect_images_fail(p, "truncated");
    write_labels(p, "near_limit_labels", gz, (uint32_t)FM_IDX_MAX_BYTES, px, 10);
    expect_labels_fail(p, "truncated");
}
END_TEST

START_TEST(test_label_out_of_range) {
    int gz = _i;
    uint8_t px[SN * SH * SW] = {0}, lb[SN] = {1, 2, 10, 3, 4};
    char ip[PATH_LEN], lp[PATH_LEN];
    fm_dataset ds;
    fm_error err = {{0}};

    write_labels(lp, "label10", gz, SN, lb, SN);
    expect_labels_fail(lp, "label 10 at index 2");
    write_images(ip, "img", gz, SN, SH, SW, px, sizeof px);
    ck_assert_int_eq(fm_dataset_load(&ds, ip, lp, &err), -1);
    ck_assert_msg_has(err, lp);
    ck_assert_msg_has(err, "label 10");
    lb[2] = 255;
    write_labels(lp, "label255", gz, SN, lb, SN);
    expect_labels_fail(lp, "label 255");
}
END_TEST

START_TEST(test_count_mismatch) {
    int gz = _i;
    uint8_t px[SN * SH * SW] = {0};
    char ip[PATH_LEN], lp[PATH_LEN];
    fm_dataset ds;
    fm_error err = {{0}};

    write_images(ip, "img5", gz, SN, SH, SW, px, sizeof px);
    write_labels(lp, "lab4", gz, SN - 1, small_labels, SN - 1);
    ck_assert_int_eq(fm_dataset_load(&ds, ip, lp, &err), -1);
    ck_assert_msg_has(err, ip);
    ck_assert_msg_has(err, lp);
    ck_assert_msg_has(err, "5 images");
    ck_assert_msg_has(err, "4 labels");
    ck_assert_ptr_null(ds.owned);
    ck_assert_uint_eq(ds.n, 0);
}
END_TEST

START_TEST(test_missing_file) {
    char p[PATH_LEN], q[PATH_LEN];
    fm_dataset ds;
    fm_error err = {{0}};

    tmp_path(p, "no-such-file.gz");
    expect_images_fail(p, "No such file");
    expect_labels_fail(p, NULL);
    tmp_path(q, "no-such-labels");
    write_images(p, "present", 0, SN, SH, SW, (const uint8_t[SN * SH * SW]){0},
                 (size_t)SN * SH * SW);
    ck_assert_int_eq(fm_dataset_load(&ds, p, q, &err), -1);
    ck_assert_msg_has(err, q);

    /* a directory is not a data file */
    expect_images_fail(tmp_dir, NULL);

    /* no data directory at all */
    tmp_path(p, "no-such-dir");
    ck_assert_int_eq(fm_dataset_load_split(&ds, p, FM_SPLIT_TRAIN, &err), -1);
    ck_assert_msg_has(err, p);
    ck_assert_msg_has(err, "apt-get install dataset-fashion-mnist");
    ck_assert_msg_has(err, "FMNIST_DATA");
    ck_assert_msg_has(err, "--data");

    /* a directory without the files */
    tmp_path(p, "empty-dir");
    ck_assert_int_eq(mkdir(p, 0700), 0);
    ck_assert_int_eq(fm_dataset_load_split(&ds, p, FM_SPLIT_TEST, &err), -1);
    ck_assert_msg_has(err, "t10k-images-idx3-ubyte");
    ck_assert_msg_has(err, "apt-get install dataset-fashion-mnist");
    ck_assert_msg_has(err, "FMNIST_DATA");
}
END_TEST

/* Corrupts a valid gzip file in several ways; each must give an error, not
 * wrong data or a crash. */
START_TEST(test_corrupt_gzip) {
    enum { N = 40, H = 8, W = 8 };
    uint8_t px[N * H * W];
    char p[PATH_LEN], q[PATH_LEN];
    size_t len;
    uint32_t state = 12345;

    for (size_t i = 0; i < sizeof px; i++) { /* fixed LCG: compressible but not trivial */
        state = state * 1103515245u + 12345u;
        px[i] = (uint8_t)((state >> 16) % 16 * 16);
    }
    write_images(p, "good.gz", 1, N, H, W, px, sizeof px);
    uint8_t *gzb = read_whole(p, &len);
    ck_assert(len > 40);
    tmp_path(q, "bad.gz");

    /* wrong CRC in the trailer */
    gzb[len - 8] ^= 0xff;
    write_bytes(q, 0, gzb, len);
    expect_images_fail(q, "gzip");
    gzb[len - 8] ^= 0xff;

    /* wrong length in the trailer */
    gzb[len - 4] ^= 0x01;
    write_bytes(q, 0, gzb, len);
    expect_images_fail(q, "gzip");
    gzb[len - 4] ^= 0x01;

    /* stream cut short, in the trailer and in the deflate data */
    write_bytes(q, 0, gzb, len - 4);
    expect_images_fail(q, "gzip");
    write_bytes(q, 0, gzb, len / 2);
    expect_images_fail(q, NULL);
    write_bytes(q, 0, gzb, 12); /* the gzip header and a little more */
    expect_images_fail(q, NULL);

    /* unknown compression method in the gzip header */
    gzb[2] = 7;
    write_bytes(q, 0, gzb, len);
    expect_images_fail(q, "gzip");
    gzb[2] = 8;

    /* garbage inside the deflate data */
    for (size_t i = 12; i < len - 8 && i < 40; i++) gzb[i] = 0xff;
    write_bytes(q, 0, gzb, len);
    expect_images_fail(q, NULL);

    /* still fine after all that: the good file loads */
    uint8_t *rpx;
    size_t n, rows, cols;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_idx_read_images(p, &rpx, &n, &rows, &cols, &err), 0);
    ck_assert_mem_eq(rpx, px, sizeof px);
    free(rpx);
    free(gzb);
}
END_TEST

START_TEST(test_split_view) {
    enum { N = 10, H = 1, W = 2 };
    uint8_t px[N * H * W], lb[N];
    char ip[PATH_LEN], lp[PATH_LEN];
    fm_dataset all, train, val;
    fm_error err = {{0}};

    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)i;
    for (size_t i = 0; i < N; i++) lb[i] = (uint8_t)(i % FM_N_CLASSES);
    write_images(ip, "img", 0, N, H, W, px, sizeof px);
    write_labels(lp, "lab", 0, N, lb, N);
    ck_assert_int_eq(fm_dataset_load(&all, ip, lp, &err), 0);

    ck_assert_int_eq(fm_dataset_split(&all, 3, &train, &val, &err), 0);
    ck_assert_uint_eq(train.n, 7);
    ck_assert_uint_eq(val.n, 3);
    ck_assert_uint_eq(val.rows, H);
    ck_assert_uint_eq(val.cols, W);
    ck_assert_ptr_eq(train.pixels, all.pixels); /* views: no copy */
    ck_assert_ptr_eq(train.labels, all.labels);
    ck_assert_ptr_eq(val.pixels, all.pixels + 7 * H * W);
    ck_assert_ptr_eq(val.labels, all.labels + 7);
    ck_assert_ptr_null(train.owned);
    ck_assert_ptr_null(val.owned);
    ck_assert_uint_eq(val.pixels[0], 14);
    ck_assert_uint_eq(val.labels[2], 9);

    float f[2 * H * W];
    fm_dataset_to_float(&val, 1, 2, f);
    ck_assert(f[0] == 16.0f / 255.0f);
    ck_assert(f[3] == 19.0f / 255.0f);

    /* a split is deterministic */
    fm_dataset train2, val2;
    ck_assert_int_eq(fm_dataset_split(&all, 3, &train2, &val2, &err), 0);
    ck_assert_ptr_eq(val2.pixels, val.pixels);

    fm_dataset v = fm_dataset_view(&all, 2, 5);
    ck_assert_uint_eq(v.n, 5);
    ck_assert_ptr_eq(v.pixels, all.pixels + 2 * H * W);
    ck_assert_ptr_eq(v.labels, all.labels + 2);
    ck_assert_ptr_null(v.owned);
    fm_dataset end = fm_dataset_view(&all, N, 0);
    ck_assert_uint_eq(end.n, 0);

    ck_assert_int_eq(fm_dataset_split(&all, 0, &train, &val, &err), 0);
    ck_assert_uint_eq(train.n, N);
    ck_assert_uint_eq(val.n, 0);
    ck_assert_int_eq(fm_dataset_split(&all, N, &train, &val, &err), -1);
    ck_assert_msg_has(err, "no training data");
    ck_assert_int_eq(fm_dataset_split(&all, N + 1, &train, &val, &err), -1);

    fm_dataset_free(&v); /* views: nothing freed, the parent stays valid */
    fm_dataset_free(&train);
    ck_assert_uint_eq(all.pixels[19], 19);
    fm_dataset_free(&all);
    fm_dataset zero = {0};
    fm_dataset_free(&zero);
    fm_dataset_free(NULL);
}
END_TEST

START_TEST(test_data_dir) {
    const char *old = getenv(FM_DATA_ENV);
    char *saved = old ? strdup(old) : NULL;

    ck_assert_int_eq(unsetenv(FM_DATA_ENV), 0);
    ck_assert_str_eq(fm_data_dir(NULL), FM_DEFAULT_DATA_DIR);
    ck_assert_str_eq(fm_data_dir(""), FM_DEFAULT_DATA_DIR);
    ck_assert_str_eq(fm_data_dir("/from/flag"), "/from/flag");
    ck_assert_int_eq(setenv(FM_DATA_ENV, "/from/env", 1), 0);
    ck_assert_str_eq(fm_data_dir(NULL), "/from/env");
    ck_assert_str_eq(fm_data_dir(""), "/from/env");
    ck_assert_str_eq(fm_data_dir("/from/flag"), "/from/flag");
    ck_assert_int_eq(setenv(FM_DATA_ENV, "", 1), 0);
    ck_assert_str_eq(fm_data_dir(NULL), FM_DEFAULT_DATA_DIR);

    if (saved) {
        setenv(FM_DATA_ENV, saved, 1);
        free(saved);
    } else {
        unsetenv(FM_DATA_ENV);
    }
}
END_TEST

/* fm_dataset_load_split on a made-up directory: names, .gz preferred over
 * plain, plain accepted, 28x28 required, FMNIST_DATA used for dir == NULL. */
START_TEST(test_load_split) {
    enum { N = 3 };
    static uint8_t px[(N + 1) * FM_IMG_SIZE];
    char dir[PATH_LEN], p[PATH_LEN], sub[PATH_LEN];
    fm_dataset ds;
    fm_error err = {{0}};

    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i % 251);
    tmp_path(dir, "data");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    /* train: gzip images, plain labels; a plain image file with another count
     * sits beside the .gz, which must win */
    snprintf(sub, sizeof sub, "data/train-images-idx3-ubyte.gz");
    write_images(p, sub, 1, N, 28, 28, px, (size_t)N * FM_IMG_SIZE);
    snprintf(sub, sizeof sub, "data/train-images-idx3-ubyte");
    write_images(p, sub, 0, N + 1, 28, 28, px, (size_t)(N + 1) * FM_IMG_SIZE);
    snprintf(sub, sizeof sub, "data/train-labels-idx1-ubyte");
    write_labels(p, sub, 0, N, small_labels, N);
    ck_assert_int_eq(fm_dataset_load_split(&ds, dir, FM_SPLIT_TRAIN, &err), 0);
    ck_assert_uint_eq(ds.n, N);
    ck_assert_uint_eq(ds.rows, 28);
    ck_assert_uint_eq(ds.cols, 28);
    ck_assert_mem_eq(ds.pixels, px, (size_t)N * FM_IMG_SIZE);
    ck_assert_mem_eq(ds.labels, small_labels, N);
    fm_dataset_free(&ds);

    /* test split through $FMNIST_DATA; its images are not 28x28 */
    snprintf(sub, sizeof sub, "data/t10k-images-idx3-ubyte");
    write_images(p, sub, 0, N, 28, 27, px, (size_t)N * 28 * 27);
    snprintf(sub, sizeof sub, "data/t10k-labels-idx1-ubyte.gz");
    write_labels(p, sub, 1, N, small_labels, N);
    const char *old = getenv(FM_DATA_ENV);
    char *saved = old ? strdup(old) : NULL;
    ck_assert_int_eq(setenv(FM_DATA_ENV, dir, 1), 0);
    int rc = fm_dataset_load_split(&ds, NULL, FM_SPLIT_TEST, &err);
    if (saved) {
        setenv(FM_DATA_ENV, saved, 1);
        free(saved);
    } else {
        unsetenv(FM_DATA_ENV);
    }
    ck_assert_int_eq(rc, -1);
    ck_assert_msg_has(err, "28x27");
    ck_assert_msg_has(err, "t10k-images-idx3-ubyte");
    ck_assert_ptr_null(ds.owned);
}
END_TEST

/* The real data, when the Debian package is installed. */
START_TEST(test_real_data) {
    static const struct {
        fm_split split;
        size_t n;
    } sets[] = {{FM_SPLIT_TRAIN, 60000}, {FM_SPLIT_TEST, 10000}};
    struct stat st;

    if (stat(FM_DEFAULT_DATA_DIR, &st) != 0) {
        printf("note: %s absent, real-data test skipped (apt-get install "
               "dataset-fashion-mnist)\n",
               FM_DEFAULT_DATA_DIR);
        return;
    }
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        fm_dataset ds;
        fm_error err = {{0}};
        size_t count[FM_N_CLASSES] = {0};
        int rc = fm_dataset_load_split(&ds, FM_DEFAULT_DATA_DIR, sets[s].split, &err);
        ck_assert_msg(rc == 0, "loading %s: %s", FM_DEFAULT_DATA_DIR, err.msg);
        ck_assert_uint_eq(ds.n, sets[s].n);
        ck_assert_uint_eq(ds.rows, FM_IMG_H);
        ck_assert_uint_eq(ds.cols, FM_IMG_W);
        for (size_t i = 0; i < ds.n; i++) count[ds.labels[i]]++;
        for (int c = 0; c < FM_N_CLASSES; c++)
            ck_assert_uint_eq(count[c], sets[s].n / FM_N_CLASSES);
        if (sets[s].split == FM_SPLIT_TRAIN) {
            fm_dataset train, val;
            ck_assert_int_eq(fm_dataset_split(&ds, FM_DEFAULT_N_VAL, &train, &val, &err), 0);
            ck_assert_uint_eq(train.n, 54000);
            ck_assert_uint_eq(val.n, 6000);
        }
        fm_dataset_free(&ds);
    }
}
END_TEST

static Suite *idx_suite(void) {
    Suite *s = suite_create("fm_idx");
    TCase *tc = tcase_create("files");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_loop_test(tc, test_round_trip, 0, 2);
    tcase_add_loop_test(tc, test_wrong_magic, 0, 2);
    tcase_add_loop_test(tc, test_wrong_ndims, 0, 2);
    tcase_add_loop_test(tc, test_truncated, 0, 2);
    tcase_add_loop_test(tc, test_trailing, 0, 2);
    tcase_add_loop_test(tc, test_huge_count, 0, 2);
    tcase_add_loop_test(tc, test_label_out_of_range, 0, 2);
    tcase_add_loop_test(tc, test_count_mismatch, 0, 2);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_corrupt_gzip);
    tcase_add_test(tc, test_split_view);
    tcase_add_test(tc, test_data_dir);
    tcase_add_test(tc, test_load_split);
    suite_add_tcase(s, tc);

    TCase *real = tcase_create("real_data");
    tcase_set_timeout(real, 120); /* decompresses 30 MB, under sanitizers */
    tcase_add_test(real, test_real_data);
    suite_add_tcase(s, real);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(idx_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
