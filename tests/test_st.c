/* test_st.c - Check tests of safetensors weight files (fm_st.h), SHA-256
 * (fm_sha256.h) and the fm_model helpers.
 *
 * Round trips every named architecture; reads a file laid out the way
 * PyTorch's safetensors writer does it (names sorted, so "0.bias" comes
 * before "0.weight" and "10.*" before "4.*"); refuses a table of malformed
 * headers, each by a distinctive part of its message, every truncation of a
 * valid file, and single-byte corruptions without crashing; checks that
 * saving is atomic (no temporary files left, an old file survives a failed
 * save).  Malformed files are built by textual edits of one valid header for
 * a tiny 11-layer network, so each case says only what it breaks.
 *
 * Runs under Check's fork mode and with CK_FORK=no alike: the temporary
 * directory is made and removed by an unchecked fixture, in the parent, and
 * each test works in a fresh subdirectory of it. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdtemp, opendir */
#endif

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_sha256.h"
#include "fm_st.h"

#define PATH_LEN 4096

static char tmp_dir[PATH_LEN]; /* made by tmp_setup, removed by tmp_teardown */

/* ---- fixture and file helpers -------------------------------------------- */

static void tmp_setup(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/fm_st_test.XXXXXX", base);
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
        chmod(path, 0700);
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

/* out = dir/name */
static void path_join(char out[PATH_LEN], const char *dir, const char *name) {
    int n = snprintf(out, PATH_LEN, "%s/%s", dir, name);
    ck_assert(n > 0 && n < PATH_LEN);
}

/* A fresh, empty subdirectory of tmp_dir for one test. */
static void mksub(char out[PATH_LEN]) {
    path_join(out, tmp_dir, "t.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* Entries of dir other than . and ..; the first one's name in first. */
static int count_entries(const char *dir, char *first, size_t n) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int count = 0;
    if (first) first[0] = '\0';
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (count++ == 0 && first) snprintf(first, n, "%s", e->d_name);
    }
    closedir(d);
    return count;
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static int model_is_zero(const fm_model *m) {
    static const fm_model zero;
    return memcmp(m, &zero, sizeof zero) == 0;
}

/* ---- the tiny network and a file of it in PyTorch's layout ---------------- */

/* 1x6x6 -> conv 2@3x3 -> 2x4x4 -> pool -> 2x2x2 -> flatten 8 -> 4 -> 3 -> 10:
 * parameters at layers 0, 4, 7 and 10, 111 floats in all. */
static const char *const tiny_json =
    "{\"name\":\"tiny\",\"input\":[1,6,6],\"layers\":["
    "{\"type\":\"conv2d\",\"out\":2,\"kernel\":3},{\"type\":\"relu\"},{\"type\":\"maxpool2d\",\"kernel\":2},"
    "{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":4},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.5},"
    "{\"type\":\"linear\",\"out\":3},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.25},"
    "{\"type\":\"linear\",\"out\":10}]}";
#define TINY_PARAMS 111

static void tiny_arch(fm_arch *a) {
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_from_json(a, tiny_json, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a->n_params, TINY_PARAMS);
}

/* Distinct, exactly representable values: param p holds tiny_value(p). */
static float tiny_value(size_t p) { return (float)p * 0.25f - 13.0f; }

/* Tensors in the order PyTorch's writer sorts them; off/count in floats. */
static const struct {
    const char *name, *shape;
    size_t off, count;
} pt_order[] = {
    {"0.bias", "[2]", 18, 2},        {"0.weight", "[2,1,3,3]", 0, 18}, {"10.bias", "[10]", 101, 10},
    {"10.weight", "[10,3]", 71, 30}, {"4.bias", "[4]", 52, 4},         {"4.weight", "[4,8]", 20, 32},
    {"7.bias", "[3]", 68, 3},        {"7.weight", "[3,4]", 56, 12},
};
#define N_PT (sizeof pt_order / sizeof pt_order[0])

/* The header of tiny in PyTorch's layout, data in pt_order (444 bytes):
 * {"__metadata__":{"format":"pt"},"0.bias":{"dtype":"F32","shape":[2],
 *  "data_offsets":[0,8]},"0.weight":{...,"data_offsets":[8,80]},
 *  "10.bias":[80,120] "10.weight":[120,240] "4.bias":[240,256]
 *  "4.weight":[256,384] "7.bias":[384,396] "7.weight":[396,444]} */
static void pt_header(char *h, size_t n) {
    size_t o = (size_t)snprintf(h, n, "{\"__metadata__\":{\"format\":\"pt\"}"), pos = 0;
    for (size_t i = 0; i < N_PT; i++) {
        size_t bytes = pt_order[i].count * 4;
        o += (size_t)snprintf(h + o, n - o, ",\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                              pt_order[i].name, pt_order[i].shape, pos, pos + bytes);
        pos += bytes;
    }
    snprintf(h + o, n - o, "}");
    ck_assert_uint_lt(o + 1, n);
}

static void pt_data(float *d) {
    size_t k = 0;
    for (size_t i = 0; i < N_PT; i++)
        for (size_t j = 0; j < pt_order[i].count; j++) d[k++] = tiny_value(pt_order[i].off + j);
    ck_assert_uint_eq(k, TINY_PARAMS);
}

/* 8-byte length + header + data (+ extra zero bytes), in an exact-size
 * allocation so that the sanitizer sees any read past the end. */
static uint8_t *make_file(const char *header, const void *data, size_t n_data, size_t extra, size_t *len) {
    size_t hl = strlen(header);
    *len = 8 + hl + n_data + extra;
    uint8_t *b = calloc(1, *len);
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    memcpy(b + 8 + hl, data, n_data);
    return b;
}

/* Uniform in [-1, 1), and whole numbers in the I64 tensors (batch norm's
 * num_batches_tracked, which files hold as int64). */
static void random_params(fm_model *m, uint64_t seed) {
    fm_rng r;
    fm_rng_seed(&r, seed);
    for (size_t i = 0; i < m->arch.n_params; i++) m->params[i] = 2.0f * fm_rng_uniform(&r) - 1.0f;
    fm_tensor t[FM_MAX_TENSORS];
    for (int l = 0; l < m->arch.n_layers; l++) {
        int nt = fm_layer_tensors(&m->arch, l, t);
        for (int k = 0; k < nt; k++)
            if (t[k].flags & FM_T_I64) m->params[t[k].off] = (float)fm_rng_below(&r, 100000);
    }
}

/* ---- SHA-256 ------------------------------------------------------------- */

START_TEST(test_sha256_vectors) {
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        fm_sha256_hex(v[i].msg, strlen(v[i].msg), hex);
        ck_assert_str_eq(hex, v[i].hex);
    }
    /* one million 'a', one-shot and fed in uneven pieces */
    size_t n = 1000000;
    char *a = malloc(n);
    ck_assert_ptr_nonnull(a);
    memset(a, 'a', n);
    fm_sha256_hex(a, n, hex);
    ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    fm_sha256_ctx c;
    uint8_t d1[32], d2[32];
    fm_sha256_init(&c);
    for (size_t off = 0, step = 1; off < n; off += step, step = step * 3 % 1013 + 1)
        fm_sha256_update(&c, a + off, step < n - off ? step : n - off);
    fm_sha256_final(&c, d1);
    fm_sha256(a, n, d2);
    ck_assert_mem_eq(d1, d2, 32);
    free(a);
    /* every length around the 55/56/64-byte padding boundaries, byte by byte */
    uint8_t msg[130];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 7 + 1);
    for (size_t len = 0; len <= sizeof msg; len++) {
        fm_sha256_init(&c);
        for (size_t i = 0; i < len; i++) fm_sha256_update(&c, msg + i, 1);
        fm_sha256_final(&c, d1);
        fm_sha256(msg, len, d2);
        ck_assert_mem_eq(d1, d2, 32);
    }
}
END_TEST

/* ---- fm_model helpers ------------------------------------------------------ */

START_TEST(test_model_meta) {
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    for (size_t i = 0; i < a.n_params; i++) ck_assert(m.params[i] == 0.0f);
    ck_assert_str_eq(m.sha256, "");
    ck_assert_ptr_null(fm_model_meta(&m, "training"));
    ck_assert_int_eq(fm_model_set_meta(&m, "training", "{\"epochs\":1}", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "dataset", "fashion-mnist", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "training", "{\"epochs\":2}", &err), 0);
    ck_assert_uint_eq(m.n_meta, 2);
    ck_assert_str_eq(fm_model_meta(&m, "training"), "{\"epochs\":2}");
    ck_assert_str_eq(fm_model_meta(&m, "dataset"), "fashion-mnist");
    fm_model_free(&m);
    ck_assert(model_is_zero(&m));
    fm_model_free(&m); /* safe twice */
}
END_TEST

/* ---- round trips ------------------------------------------------------------ */

START_TEST(test_round_trip_named) {
    const char *name = fm_arch_names[_i];
    char dir[PATH_LEN], p1[PATH_LEN], p2[PATH_LEN];
    mksub(dir);
    char base[64];
    snprintf(base, sizeof base, "%s.safetensors", name);
    path_join(p1, dir, base);
    snprintf(base, sizeof base, "%s-again.safetensors", name);
    path_join(p2, dir, base);
    fm_arch a;
    fm_model m, l, l2;
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_named(&a, name, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    random_params(&m, 1000 + (uint64_t)_i);
    m.params[0] = -0.0f; /* signed zero and tiny values survive too */
    m.params[1] = 1e-42f;
    ck_assert_int_eq(fm_model_set_meta(&m, "training", "{\"epochs\":15,\"seed\":42}", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "metrics", "{\"test_accuracy\":0.9123}", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "dataset", "Fashion-MNIST \"quoted\" \\ \xc3\xa9", &err), 0);
    ck_assert_msg(fm_st_save(&m, p1, &err) == 0, "%s", err.msg);

    ck_assert_msg(fm_st_load(&l, p1, NULL, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(l.arch.n_params, a.n_params);
    ck_assert_mem_eq(l.params, m.params, a.n_params * sizeof(float));
    char *j1 = fm_arch_to_json(&a), *j2 = fm_arch_to_json(&l.arch);
    ck_assert_str_eq(j1, j2);
    for (int i = 0; i < a.n_layers; i++) {
        ck_assert_uint_eq(l.arch.layers[i].w_off, a.layers[i].w_off);
        ck_assert_uint_eq(l.arch.layers[i].b_off, a.layers[i].b_off);
    }
    /* metadata: the standard entries first, then the model's, in order */
    static const char *const keys[] = {"format", "architecture", "classes", "input", "training", "metrics", "dataset"};
    ck_assert_uint_eq(l.n_meta, 7);
    for (size_t i = 0; i < 7; i++) ck_assert_str_eq(l.meta[i].key, keys[i]);
    ck_assert_str_eq(fm_model_meta(&l, "format"), "pt");
    ck_assert_str_eq(fm_model_meta(&l, "architecture"), j1);
    ck_assert_str_eq(fm_model_meta(&l, "classes"),
                     "[\"T-shirt/top\",\"Trouser\",\"Pullover\",\"Dress\",\"Coat\",\"Sandal\",\"Shirt\",\"Sneaker\","
                     "\"Bag\",\"Ankle boot\"]");
    ck_assert_str_eq(fm_model_meta(&l, "input"),
                     "{\"shape\":[1,28,28],\"dtype\":\"float32\",\"layout\":\"NCHW\",\"scale\":\"pixel/255\","
                     "\"range\":[0,1],\"background\":\"black\"}");
    for (size_t i = 0; i < m.n_meta; i++) ck_assert_str_eq(fm_model_meta(&l, m.meta[i].key), m.meta[i].value);
    free(j1);
    free(j2);

    /* the digest is the file's; the file is padded; re-saving reproduces it */
    size_t n1, n2, nb;
    uint8_t *b1 = read_file(p1, &n1), *bb;
    char hex[65];
    fm_sha256_hex(b1, n1, hex);
    ck_assert_str_eq(l.sha256, hex);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b1[i];
    ck_assert_uint_eq(hl % 8, 0);
    size_t n_i64 = 0; /* each I64 count takes 8 bytes in the file, a float in memory */
    fm_tensor tt[FM_MAX_TENSORS];
    for (int li = 0; li < a.n_layers; li++) {
        int nt = fm_layer_tensors(&a, li, tt);
        for (int k = 0; k < nt; k++) n_i64 += (tt[k].flags & FM_T_I64) ? tt[k].count : 0;
    }
    ck_assert_uint_eq(n1, 8 + hl + a.n_params * 4 + n_i64 * 4);
    ck_assert_msg(fm_st_save(&l, p2, &err) == 0, "%s", err.msg);
    uint8_t *b2 = read_file(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(b1, b2, n1);
    ck_assert_int_eq(fm_st_save_buffer(&m, &bb, &nb, &err), 0);
    ck_assert_uint_eq(nb, n1);
    ck_assert_mem_eq(bb, b1, n1);

    /* from memory, and with the right expectation */
    ck_assert_msg(fm_st_load_buffer(&l2, b1, n1, &a, &err) == 0, "%s", err.msg);
    ck_assert_mem_eq(l2.params, m.params, a.n_params * sizeof(float));
    ck_assert_str_eq(l2.sha256, hex);
    fm_model_free(&l2);
    /* a different expectation is refused, and the model left zeroed */
    fm_arch other;
    ck_assert_int_eq(fm_arch_named(&other, strcmp(name, "mlp2") == 0 ? "cnn1" : "mlp2", &err), 0);
    ck_assert_int_eq(fm_st_load(&l2, p1, &other, &err), -1);
    ck_assert_msg(strstr(err.msg, "does not match") && strstr(err.msg, p1), "%s", err.msg);
    ck_assert(model_is_zero(&l2));

    ck_assert_int_eq(count_entries(dir, NULL, 0), 2); /* no temporaries */
    free(b1);
    free(b2);
    free(bb);
    fm_model_free(&l);
    fm_model_free(&m);
    remove_tree(dir);
}
END_TEST

/* Standard keys in the model's metadata: "format" and "input" are the
 * model's, "architecture" and "classes" always derived. */
START_TEST(test_standard_keys) {
    fm_arch a;
    fm_model m, l;
    fm_error err = {{0}};
    uint8_t *b;
    size_t n;
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "architecture", "{\"bogus\":1}", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "format", "np", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "classes", "[\"cat\"]", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "input", "{\"shape\":[1,6,6]}", &err), 0);
    ck_assert_int_eq(fm_model_set_meta(&m, "notes", "", &err), 0);
    ck_assert_msg(fm_st_save_buffer(&m, &b, &n, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_st_load_buffer(&l, b, n, NULL, &err) == 0, "%s", err.msg);
    char *j = fm_arch_to_json(&a);
    ck_assert_str_eq(fm_model_meta(&l, "architecture"), j);
    ck_assert_str_eq(fm_model_meta(&l, "format"), "np");
    ck_assert_ptr_nonnull(strstr(fm_model_meta(&l, "classes"), "Ankle boot"));
    ck_assert_str_eq(fm_model_meta(&l, "input"), "{\"shape\":[1,6,6]}");
    ck_assert_str_eq(fm_model_meta(&l, "notes"), "");
    ck_assert_uint_eq(l.n_meta, 5);
    free(j);
    free(b);
    fm_model_free(&l);

    /* a model that would answer NaN is not saved */
    m.params[60] = NAN;
    ck_assert_int_eq(fm_st_save_buffer(&m, &b, &n, &err), -1);
    ck_assert_ptr_null(b);
    ck_assert_msg(strstr(err.msg, "refusing to save") && strstr(err.msg, "\"7.weight\""), "%s", err.msg);
    m.params[60] = INFINITY;
    ck_assert_int_eq(fm_st_save_buffer(&m, &b, &n, &err), -1);
    ck_assert_msg(strstr(err.msg, "Inf"), "%s", err.msg);
    fm_model_free(&m);
}
END_TEST

/* A file as PyTorch writes it: names sorted, no architecture metadata. */
START_TEST(test_pytorch_order) {
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    char h[2048];
    float d[TINY_PARAMS];
    size_t n;
    tiny_arch(&a);
    pt_header(h, sizeof h);
    pt_data(d);
    uint8_t *b = make_file(h, d, sizeof d, 0, &n);
    ck_assert_msg(fm_st_load_buffer(&m, b, n, &a, &err) == 0, "%s", err.msg);
    for (size_t p = 0; p < TINY_PARAMS; p++) ck_assert_float_eq(m.params[p], tiny_value(p));
    ck_assert_uint_eq(m.n_meta, 1);
    ck_assert_str_eq(fm_model_meta(&m, "format"), "pt");
    ck_assert_str_eq(m.arch.name, "tiny");
    fm_model_free(&m);
    /* without an expectation there is nothing to go by */
    ck_assert_int_eq(fm_st_load_buffer(&m, b, n, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "no \"architecture\" metadata"), "%s", err.msg);
    ck_assert(model_is_zero(&m));
    free(b);

    /* an architecture in the file that names the same layers differently
     * (another name, other dropout rates) is accepted, and the file's wins */
    char *j = fm_arch_to_json(&a), esc[2048], h2[4096];
    size_t o = 0;
    for (const char *s = j; *s; s++) {
        if (*s == '"') esc[o++] = '\\';
        esc[o++] = *s;
        ck_assert_uint_lt(o, sizeof esc - 2);
    }
    esc[o] = '\0';
    free(j);
    char *p = strstr(esc, "0.5");
    ck_assert_ptr_nonnull(p);
    p[2] = '1';
    p = strstr(esc, "tiny");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "tinx", 4);
    int k = snprintf(h2, sizeof h2, "{\"__metadata__\":{\"architecture\":\"%s\",%s", esc,
                     h + strlen("{\"__metadata__\":{"));
    ck_assert(k > 0 && (size_t)k < sizeof h2);
    b = make_file(h2, d, sizeof d, 0, &n);
    ck_assert_msg(fm_st_load_buffer(&m, b, n, &a, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(m.arch.name, "tinx");
    ck_assert_float_eq(m.arch.layers[6].rate, 0.1f);
    fm_model_free(&m);
    free(b);
}
END_TEST

/* ---- malformed files ---------------------------------------------------------- */

/* "architecture":"{\"input\":[1,6,6],\"layers\":[flatten, linear 10]}" */
#define ARCH_FLAT10                                                                                  \
    "\"architecture\":\"{\\\"input\\\":[1,6,6],\\\"layers\\\":[{\\\"type\\\":\\\"flatten\\\"},{\\\"type\\\":" \
    "\\\"linear\\\",\\\"out\\\":10}]}\""

static const struct bad_case {
    const char *what;
    const char *find, *repl; /* textual edit of the valid header; find NULL: none */
    size_t extra;            /* zero bytes appended to the data */
    const char *msg;         /* expected in the error */
} bad[] = {
    {"leading space", "{\"__metadata__\"", " {\"__metadata__\"", 0, "start with '{'"},
    {"not JSON", "\"format\":\"pt\"", "\"format\":pt", 0, "not valid JSON"},
    {"text after the object", "[396,444]}}", "[396,444]}} x", 0, "unexpected text after"},
    {"two objects", "[396,444]}}", "[396,444]}}{}", 0, "unexpected text after"},
    {"invalid UTF-8", "\"format\":\"pt\"", "\"format\":\"p\xc3\"", 0, "UTF-8"},
    {"overlong UTF-8", "\"format\":\"pt\"", "\"format\":\"\xc0\xaf\"", 0, "UTF-8"},
    {"entry not an object", "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", "\"0.bias\":[0,8]", 0,
     "\"0.bias\": entry is not an object"},
    {"dtype F16", "\"0.bias\":{\"dtype\":\"F32\"", "\"0.bias\":{\"dtype\":\"F16\"", 0, "dtype \"F16\" is not supported"},
    {"dtype lower case", "\"0.bias\":{\"dtype\":\"F32\"", "\"0.bias\":{\"dtype\":\"f32\"", 0, "dtype \"f32\""},
    {"dtype missing", "\"0.bias\":{\"dtype\":\"F32\",", "\"0.bias\":{", 0, "no \"dtype\""},
    {"dtype not a string", "\"0.bias\":{\"dtype\":\"F32\"", "\"0.bias\":{\"dtype\":32", 0, "no \"dtype\""},
    {"shape missing", "\"shape\":[2],", "", 0, "no \"shape\""},
    {"shape rank", "\"shape\":[2,1,3,3]", "\"shape\":[2,9,1]", 0, "shape has rank 3, the architecture needs [2, 1, 3, 3]"},
    {"shape rank 0", "\"shape\":[2]", "\"shape\":[]", 0, "shape has rank 0"},
    {"shape dims", "\"shape\":[10,3]", "\"shape\":[3,10]", 0, "shape [3, 10] does not match the architecture's [10, 3]"},
    {"shape fraction", "\"shape\":[2]", "\"shape\":[2.5]", 0, "shape must hold non-negative integers"},
    {"shape negative", "\"shape\":[2]", "\"shape\":[-2]", 0, "shape must hold non-negative integers"},
    {"shape huge", "\"shape\":[10,3]", "\"shape\":[4294967296,4294967296]", 0, "absurdly large"},
    {"missing tensor", "\"7.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[384,396]},", "", 0,
     "missing tensor \"7.bias\""},
    {"unexpected tensor", "{\"__metadata__\"",
     "{\"11.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\"", 0,
     "unexpected tensor \"11.weight\""},
    {"parameter of a relu", "{\"__metadata__\"", "{\"1.weight\":{},\"__metadata__\"", 0, "unexpected tensor \"1.weight\""},
    {"duplicate tensor", "{\"__metadata__\"",
     "{\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\"", 0,
     "duplicate tensor \"0.bias\""},
    {"offsets missing", ",\"data_offsets\":[0,8]", "", 0, "\"data_offsets\" must be two"},
    {"three offsets", "[0,8]", "[0,8,8]", 0, "\"data_offsets\" must be two"},
    {"one offset", "[0,8]", "[8]", 0, "\"data_offsets\" must be two"},
    {"offset string", "[0,8]", "[0,\"8\"]", 0, "\"data_offsets\" must be two"},
    {"offset fraction", "[0,8]", "[0,8.5]", 0, "\"data_offsets\" must be two"},
    {"offset negative", "[0,8]", "[-8,0]", 0, "\"data_offsets\" must be two"},
    {"offset absurd", "[396,444]", "[396,1e300]", 0, "\"data_offsets\" must be two"},
    {"offsets an object", "[0,8]", "{\"0\":0}", 0, "\"data_offsets\" must be two"},
    {"begin after end", "[0,8]", "[8,0]", 0, "end before they begin"},
    {"end past data", "[396,444]", "[396,448]", 0, "reach past the end of the data (444 bytes)"},
    {"end 2^53", "[396,444]", "[396,9007199254740992]", 0, "reach past the end"},
    {"size mismatch", "[0,8]", "[0,12]", 0, "hold 12 bytes, but F32 [2] needs 8"},
    {"overlap", "[8,80]", "[4,76]", 0, "\"0.bias\" and \"0.weight\" overlap"},
    {"same offsets", "[384,396]", "[0,12]", 0, "overlap"},
    {"gap", "[396,444]", "[400,448]", 4, "gap of 4 unused bytes before tensor \"7.weight\""},
    {"trailing data", NULL, NULL, 4, "4 unused bytes after the last tensor"},
    {"metadata not an object", "\"__metadata__\":{\"format\":\"pt\"}", "\"__metadata__\":[\"pt\"]", 0,
     "\"__metadata__\" is not an object"},
    {"metadata number", "\"format\":\"pt\"", "\"format\":1", 0, "metadata \"format\" is not a string"},
    {"metadata null", "\"format\":\"pt\"", "\"format\":null", 0, "metadata \"format\" is not a string"},
    {"metadata object", "\"format\":\"pt\"", "\"format\":\"pt\",\"training\":{\"epochs\":1}", 0,
     "metadata \"training\" is not a string"},
    {"duplicate metadata key", "\"format\":\"pt\"", "\"format\":\"pt\",\"a\":\"1\",\"format\":\"pt\"", 0,
     "duplicate metadata key \"format\""},
    {"two metadata objects", "{\"__metadata__\"", "{\"__metadata__\":{},\"__metadata__\"", 0,
     "duplicate key \"__metadata__\""},
    {"architecture not JSON", "\"format\":\"pt\"", "\"format\":\"pt\",\"architecture\":\"nope\"", 0,
     "\"architecture\" metadata: architecture is not valid JSON"},
    {"architecture invalid", "\"format\":\"pt\"", "\"format\":\"pt\",\"architecture\":\"{}\"", 0,
     "\"architecture\" metadata: architecture needs"},
    {"architecture mismatch", "\"format\":\"pt\"", "\"format\":\"pt\"," ARCH_FLAT10, 0,
     "does not match the expected \"tiny\": 2 layers in the file, 11 expected"},
    {"classes wrong", "\"format\":\"pt\"", "\"format\":\"pt\",\"classes\":\"[\\\"cat\\\",\\\"dog\\\"]\"", 0,
     "\"classes\" metadata is not the 10 Fashion-MNIST classes"},
    {"classes reordered", "\"format\":\"pt\"",
     "\"format\":\"pt\",\"classes\":\"[\\\"Trouser\\\",\\\"T-shirt/top\\\",\\\"Pullover\\\",\\\"Dress\\\",\\\"Coat\\\","
     "\\\"Sandal\\\",\\\"Shirt\\\",\\\"Sneaker\\\",\\\"Bag\\\",\\\"Ankle boot\\\"]\"",
     0, "\"classes\" metadata"},
};

/* The valid header with one textual edit. */
static void edit(char *out, size_t n, const char *h, const char *find, const char *repl) {
    if (!find) {
        snprintf(out, n, "%s", h);
        return;
    }
    const char *p = strstr(h, find);
    ck_assert_msg(p != NULL, "edit target not found: %s", find);
    snprintf(out, n, "%.*s%s%s", (int)(p - h), h, repl, p + strlen(find));
}

START_TEST(test_malformed_table) {
    const struct bad_case *c = &bad[_i];
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    char h[2048], h2[4096];
    float d[TINY_PARAMS];
    size_t n;
    tiny_arch(&a);
    pt_header(h, sizeof h);
    pt_data(d);
    edit(h2, sizeof h2, h, c->find, c->repl);
    uint8_t *b = make_file(h2, d, sizeof d, c->extra, &n);
    memset(&m, 0xAB, sizeof m); /* whatever it held is overwritten */
    int rc = fm_st_load_buffer(&m, b, n, &a, &err);
    ck_assert_msg(rc == -1, "case \"%s\" was accepted", c->what);
    ck_assert_msg(strstr(err.msg, c->msg) != NULL, "case \"%s\": expected \"%s\" in: %s", c->what, c->msg, err.msg);
    ck_assert(model_is_zero(&m));
    free(b);
}
END_TEST

/* Cases that the header edits above cannot express: lengths, NUL, data. */
START_TEST(test_malformed_raw) {
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    char h[2048];
    float d[TINY_PARAMS];
    size_t n;
    tiny_arch(&a);
    pt_header(h, sizeof h);
    pt_data(d);
    uint8_t *b = make_file(h, d, sizeof d, 0, &n);
    ck_assert_int_eq(fm_st_load_buffer(&m, b, n, &a, &err), 0); /* the base case is valid */
    fm_model_free(&m);
    size_t hl = strlen(h);
    struct {
        const char *what;
        uint64_t n_hdr;
        size_t len;
        const char *msg;
    } lens[] = {
        {"empty", hl, 0, "only 0 bytes"},
        {"7 bytes", hl, 7, "only 7 bytes"},
        {"length only", hl, 8, "larger than the rest of the file (0 bytes)"},
        {"zero length", 0, n, "header length is 0"},
        {"100 MB + 1", FM_ST_MAX_HEADER + 1, n, "exceeds the limit"},
        {"2^64 - 1", UINT64_MAX, n, "exceeds the limit"},
        {"one past the file", n - 8 + 1, n, "larger than the rest of the file"},
        {"header without its last byte", hl - 1, n, "not valid JSON"},
        {"header into the data", hl + 4, n, "NUL byte"}, /* -8.5f is 00 00 08 c1 */
    };
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t *c = malloc(lens[i].len ? lens[i].len : 1);
        memcpy(c, b, lens[i].len);
        if (lens[i].len >= 8)
            for (int k = 0; k < 8; k++) c[k] = (uint8_t)(lens[i].n_hdr >> (8 * k));
        ck_assert_int_eq(fm_st_load_buffer(&m, c, lens[i].len, &a, &err), -1);
        ck_assert_msg(strstr(err.msg, lens[i].msg), "%s: expected \"%s\" in: %s", lens[i].what, lens[i].msg, err.msg);
        ck_assert(model_is_zero(&m));
        free(c);
    }
    /* a header that is an array, and one with a NUL in a string */
    uint8_t *c = make_file("[1,2]   ", d, 0, 0, &n);
    ck_assert_int_eq(fm_st_load_buffer(&m, c, n, &a, &err), -1);
    ck_assert_msg(strstr(err.msg, "start with '{'"), "%s", err.msg);
    free(c);
    n = 8 + hl + sizeof d;
    c = malloc(n);
    memcpy(c, b, n);
    const char *f = strstr(h, "pt");
    ck_assert_ptr_nonnull(f);
    c[8 + (size_t)(f - h) + 1] = '\0';
    ck_assert_int_eq(fm_st_load_buffer(&m, c, n, &a, &err), -1);
    ck_assert_msg(strstr(err.msg, "NUL byte"), "%s", err.msg);
    free(c);
    /* non-finite weights: NaN and both infinities, anywhere */
    const float nonfinite[] = {NAN, INFINITY, -INFINITY};
    const size_t where[] = {0, 17, 57, TINY_PARAMS - 1};
    for (size_t i = 0; i < 3; i++) {
        for (size_t k = 0; k < 4; k++) {
            float d2[TINY_PARAMS];
            memcpy(d2, d, sizeof d);
            d2[where[k]] = nonfinite[i];
            c = make_file(h, d2, sizeof d2, 0, &n);
            ck_assert_int_eq(fm_st_load_buffer(&m, c, n, &a, &err), -1);
            ck_assert_msg(strstr(err.msg, i == 0 ? "holds NaN" : "holds Inf") && strstr(err.msg, "non-finite"), "%s",
                          err.msg);
            ck_assert(model_is_zero(&m));
            free(c);
        }
    }
    free(b);
}
END_TEST

/* Every truncation of a valid file is refused (never a crash), and so is
 * any single corrupted header byte that still parses (never a crash). */
START_TEST(test_truncation_and_corruption) {
    fm_arch a;
    fm_model m, l;
    fm_error err = {{0}};
    uint8_t *full;
    size_t n;
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    random_params(&m, 7);
    ck_assert_int_eq(fm_model_set_meta(&m, "training", "{\"epochs\":3}", &err), 0);
    ck_assert_int_eq(fm_st_save_buffer(&m, &full, &n, &err), 0);
    for (size_t len = 0; len < n; len++) {
        uint8_t *c = malloc(len ? len : 1);
        memcpy(c, full, len);
        ck_assert_msg(fm_st_load_buffer(&l, c, len, NULL, &err) == -1, "truncated to %zu of %zu bytes: accepted", len, n);
        ck_assert(model_is_zero(&l));
        ck_assert_msg(fm_st_load_buffer(&l, c, len, &a, &err) == -1, "truncated to %zu bytes: accepted", len);
        free(c);
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | full[i];
    static const uint8_t subst[] = {0x00, '{', '}', '"', '9', ',', 0xff, 0x80};
    uint8_t *c = malloc(n);
    for (size_t pos = 0; pos < 8 + hl; pos++) {
        for (size_t s = 0; s < sizeof subst; s++) {
            memcpy(c, full, n);
            if (c[pos] == subst[s]) continue;
            c[pos] = subst[s];
            if (fm_st_load_buffer(&l, c, n, NULL, &err) == 0) fm_model_free(&l); /* e.g. inside a value */
            ck_assert(model_is_zero(&l));
        }
    }
    free(c);
    free(full);
    fm_model_free(&m);
}
END_TEST

/* ---- atomic save ------------------------------------------------------------ */

START_TEST(test_save_missing_dir) {
    char dir[PATH_LEN], path[PATH_LEN], nope[PATH_LEN];
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    mksub(dir);
    path_join(nope, dir, "nope");
    path_join(path, nope, "m.safetensors");
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    ck_assert_int_eq(fm_st_save(&m, path, &err), -1);
    ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, "No such file"), "%s", err.msg);
    struct stat st;
    ck_assert_int_ne(stat(nope, &st), 0);
    ck_assert_int_eq(count_entries(dir, NULL, 0), 0);
    fm_model_free(&m);
    remove_tree(dir);
}
END_TEST

START_TEST(test_save_replaces) {
    char dir[PATH_LEN], path[PATH_LEN], first[256];
    fm_arch a;
    fm_model m, l;
    fm_error err = {{0}};
    mksub(dir);
    path_join(path, dir, "m.safetensors");
    write_file(path, "old contents", 12);
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    random_params(&m, 3);
    ck_assert_msg(fm_st_save(&m, path, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_st_load(&l, path, &a, &err) == 0, "%s", err.msg);
    ck_assert_mem_eq(l.params, m.params, TINY_PARAMS * sizeof(float));
    fm_model_free(&l);
    ck_assert_int_eq(count_entries(dir, first, sizeof first), 1);
    ck_assert_str_eq(first, "m.safetensors");
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0644);

    /* a relative path: the directory to sync is "." */
    char cwd[PATH_LEN];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    int rc = fm_st_save(&m, "m.safetensors", &err);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert_int_eq(count_entries(dir, NULL, 0), 1);
    fm_model_free(&m);
    remove_tree(dir);
}
END_TEST

/* A full disk, simulated with RLIMIT_FSIZE (write fails with EFBIG): the
 * temporary is removed and the old file is untouched. */
START_TEST(test_save_disk_full) {
    char dir[PATH_LEN], path[PATH_LEN], first[256];
    fm_arch a;
    fm_model m;
    fm_error err = {{0}};
    mksub(dir);
    path_join(path, dir, "m.safetensors");
    write_file(path, "old", 3);
    tiny_arch(&a);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 256;
    /* no ck_assert while the limit holds: Check itself writes to a file */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    int set = setrlimit(RLIMIT_FSIZE, &lim);
    int rc = fm_st_save(&m, path, &err);
    int reset = setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    ck_assert_int_eq(set, 0);
    ck_assert_int_eq(reset, 0);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "write failed"), "%s", err.msg);
    ck_assert_int_eq(count_entries(dir, first, sizeof first), 1);
    ck_assert_str_eq(first, "m.safetensors");
    size_t n;
    uint8_t *b = read_file(path, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(b, "old", 3);
    free(b);

    /* nor is a model that cannot be saved, nor one in a read-only directory */
    m.params[5] = NAN;
    ck_assert_int_eq(fm_st_save(&m, path, &err), -1);
    ck_assert_msg(strstr(err.msg, "refusing to save"), "%s", err.msg);
    m.params[5] = 0.0f;
    if (geteuid() != 0) { /* root writes anyway */
        ck_assert_int_eq(chmod(dir, 0500), 0);
        ck_assert_int_eq(fm_st_save(&m, path, &err), -1);
        ck_assert_msg(strstr(err.msg, "cannot create a file in its directory"), "%s", err.msg);
        ck_assert_int_eq(chmod(dir, 0700), 0);
    }
    ck_assert_int_eq(count_entries(dir, NULL, 0), 1);
    fm_model_free(&m);
    remove_tree(dir);
}
END_TEST

START_TEST(test_load_errors) {
    char dir[PATH_LEN], path[PATH_LEN];
    fm_model m;
    fm_error err = {{0}};
    mksub(dir);
    path_join(path, dir, "absent.safetensors");
    ck_assert_int_eq(fm_st_load(&m, path, NULL, &err), -1);
    ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, "cannot open"), "%s", err.msg);
    ck_assert(model_is_zero(&m));
    ck_assert_int_eq(fm_st_load(&m, dir, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "not a regular file"), "%s", err.msg);
    write_file(path, "\x08\0\0\0\0\0\0\0{}      ", 16);
    ck_assert_int_eq(fm_st_load(&m, path, NULL, &err), -1);
    ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0 && strstr(err.msg, "no \"architecture\""), "%s", err.msg);
    ck_assert(model_is_zero(&m));
    remove_tree(dir);
}
END_TEST

static Suite *st_suite(void) {
    Suite *s = suite_create("fm_st");
    TCase *tc = tcase_create("sha256");
    tcase_add_test(tc, test_sha256_vectors);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_set_timeout(tc, 60); /* five models of up to 1.3 MB, under sanitizers */
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_model_meta);
    int n_named = 0;
    while (fm_arch_names[n_named]) n_named++;
    tcase_add_loop_test(tc, test_round_trip_named, 0, n_named);
    tcase_add_test(tc, test_standard_keys);
    tcase_add_test(tc, test_pytorch_order);
    tcase_add_loop_test(tc, test_malformed_table, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, test_malformed_raw);
    tcase_add_test(tc, test_truncation_and_corruption);
    tcase_add_test(tc, test_save_missing_dir);
    tcase_add_test(tc, test_save_replaces);
    tcase_add_test(tc, test_save_disk_full);
    tcase_add_test(tc, test_load_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(st_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
