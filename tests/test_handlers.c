/* test_handlers.c - Check tests for fmnist-serve's request handlers
 * (server/handlers.c and server/api_*.c), driven through srv_handle()
 * directly, without a socket.
 *
 * The fixture builds a temporary weights directory with two small real
 * models (mlp2 and cnn1 with seeded Glorot weights, metadata test accuracy
 * 0.5) plus report files, a static directory, a registry, a five-image data
 * set and a srv_ctx.  Every route is called with its input forms and its
 * errors; JSON replies are parsed back with cJSON; probabilities are checked
 * against a direct fm_predict on the same input, and the same image sent raw,
 * as PUT, multipart, base64, data URL, JSON (flat, nested, scale 255 and
 * [0,1]), KServe (FP32 flat/nested, UINT8), TF Serving (row, columnar) and
 * TorchServe must give the same numbers.
 *
 * Runs in Check's fork mode and with CK_FORK=no alike: the fixture is an
 * unchecked one (made in the parent, read-only afterwards except for the
 * draining flag and cfg fields, which every test that changes restores);
 * exit status is the verdict. */

#include <check.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "fm_idx.h"
#include "fm_st.h"
#include "image.h"
#include "jsonw.h"
#include "parse.h"
#include "srv.h"
#include "srv_fixture.h"

/* ---- fixture ------------------------------------------------------------ */

#define N_SAMPLES 5
#define MAX_BATCH 4

static char tmp_dir[PATH_MAX], weights_dir[PATH_MAX + 16], static_dir[PATH_MAX + 16];
static srv_config cfg;
static srv_registry registry;
static srv_ctx ctx;
static uint8_t sample_px[N_SAMPLES * FM_IMG_SIZE];
static uint8_t sample_lb[N_SAMPLES] = {9, 0, 1, 2, 3};
static fm_dataset samples;

static uint8_t img_a[FM_IMG_SIZE], img_b[FM_IMG_SIZE]; /* two 28x28 gray images */
static uint8_t *png_a, *png_b, *png_big;              /* PNG files of them; big: 60x40 */
static size_t png_a_len, png_b_len, png_big_len;
static float ref_a[FM_N_CLASSES], ref_b[FM_N_CLASSES]; /* cnn1 probabilities by direct fm_predict */

static uint8_t *png_of(const uint8_t *px, int w, int h, size_t *len) {
    uint8_t *out = NULL;
    ck_assert_int_eq(img_png_encode_gray8(px, w, h, &out, len, NULL, 0), IMG_OK);
    return out;
}

static void reference(const uint8_t *img, float probs[FM_N_CLASSES]) {
    float x[FM_IMG_SIZE];
    for (int i = 0; i < FM_IMG_SIZE; i++) x[i] = img[i] / 255.0f;
    srv_snap *s = srv_registry_acquire(&registry);
    const srv_model *m = srv_snap_find(s, "cnn1");
    ck_assert_ptr_nonnull(m);
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &m->m.arch, SRV_INFER_CHUNK, 0, NULL), 0);
    fm_predict(&m->m.arch, m->m.params, &ws, x, 1, probs);
    fm_ws_destroy(&ws);
    srv_snap_release(s);
}

static void setup(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_handlers.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
    snprintf(weights_dir, sizeof weights_dir, "%s/weights", tmp_dir);
    snprintf(static_dir, sizeof static_dir, "%s/static", tmp_dir);
    ck_assert_int_eq(mkdir(weights_dir, 0755), 0);
    ck_assert_int_eq(mkdir(static_dir, 0755), 0);
    fx_save_model(weights_dir, "mlp2", 1);
    fx_save_model(weights_dir, "cnn1", 2);
    fx_write_file(weights_dir, "mlp2.history.json", "{\"epochs\":[1,2,3]}\n");
    fx_write_file(weights_dir, "grid-lr.csv", "lr,acc\n0.1,0.5\n");
    fx_write_file(weights_dir, "notes.txt", "not a report\n");
    fx_write_file(tmp_dir, "secret.json", "{\"secret\":true}\n");
    char link[PATH_MAX * 2];
    snprintf(link, sizeof link, "%s/evil.history.json", weights_dir);
    ck_assert_int_eq(symlink("../secret.json", link), 0);
    fx_write_file(static_dir, "index.html", "<!doctype html><title>fmnist</title>\n");
    fx_write_file(static_dir, "app.js", "console.log('fmnist');\n");
    fx_write_file(static_dir, ".env", "SECRET=1\n");
    snprintf(link, sizeof link, "%s/out.html", static_dir);
    ck_assert_int_eq(symlink("../secret.json", link), 0);

    srv_snap *snap;
    fm_error err;
    ck_assert_msg(srv_snap_load(&snap, weights_dir, "cnn1", 1, NULL, &err) == 0, "%s", err.msg);
    srv_registry_publish(&registry, snap);

    for (size_t i = 0; i < sizeof sample_px; i++) sample_px[i] = (uint8_t)((i * 7 + i / 28) % 256);
    samples = (fm_dataset){.n = N_SAMPLES, .rows = 28, .cols = 28, .pixels = sample_px, .labels = sample_lb};

    cfg = (srv_config){.host = "127.0.0.1", .port = 0, .weights_dir = weights_dir, .default_model = "cnn1",
                       .static_dir = static_dir, .cors_origin = NULL, .max_body_bytes = 4 << 20,
                       .max_batch = MAX_BATCH, .max_pixels = IMG_DEFAULT_MAX_PIXELS};
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    ctx.registry = &registry;
    ctx.metrics = NULL;
    ck_assert_ptr_nonnull(realpath(static_dir, ctx.static_root));
    ctx.samples = &samples;

    /* image a: a light "garment" on black; image b: stripes */
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            img_a[y * 28 + x] = (x > 6 && x < 21 && y > 3 && y < 25) ? (uint8_t)(120 + 4 * y) : 0;
            img_b[y * 28 + x] = (uint8_t)((y % 4 < 2) ? 200 : 30);
        }
    png_a = png_of(img_a, 28, 28, &png_a_len);
    png_b = png_of(img_b, 28, 28, &png_b_len);
    uint8_t big[60 * 40];
    for (int i = 0; i < 60 * 40; i++) big[i] = (i % 60 > 20 && i % 60 < 40 && i / 60 > 5 && i / 60 < 35) ? 20 : 250;
    png_big = png_of(big, 60, 40, &png_big_len);
    reference(img_a, ref_a);
    reference(img_b, ref_b);
}

static void teardown(void) {
    srv_registry_shutdown(&registry);
    srv_thread_ws_free();
    free(png_a);
    free(png_b);
    free(png_big);
    fx_remove_tree(tmp_dir);
}

static void test_teardown(void) {
    srv_thread_ws_free(); /* the calling thread's workspaces (fork mode: the child's) */
}

/* ---- request helpers ---------------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->s = realloc(b->s, cap);
        ck_assert_ptr_nonnull(b->s);
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    ck_assert(n >= 0 && (size_t)n < sizeof tmp);
    sb_add(b, tmp, (size_t)n);
}

static srv_response call_o(const char *method, const char *path, const char *query, const char *ct, const void *body,
                           size_t len, const char *origin) {
    srv_request req = {.method = method, .path = path, .query = query ? query : "", .content_type = ct,
                       .origin = origin, .body = body, .body_len = len};
    srv_response r;
    srv_handle(&ctx, &req, &r);
    ck_assert_ptr_nonnull(r.route);
    return r;
}

static srv_response call(const char *method, const char *path, const char *query, const char *ct, const void *body,
                         size_t len) {
    return call_o(method, path, query, ct, body, len, NULL);
}

static srv_response get(const char *path, const char *query) {
    return call("GET", path, query, NULL, NULL, 0);
}

static srv_response post_json(const char *path, const char *query, const char *json) {
    return call("POST", path, query, "application/json", json, strlen(json));
}

/* Parses a JSON reply (checking its content type); caller deletes. */
static cJSON *body_json(const srv_response *r) {
    ck_assert_ptr_nonnull(r->body);
    ck_assert_ptr_nonnull(r->content_type);
    ck_assert_str_eq(r->content_type, "application/json");
    ck_assert_int_lt(r->fd, 0);
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    ck_assert_msg(j != NULL, "reply is not JSON: %.200s", r->body);
    return j;
}

/* Asserts an error reply: status and a non-empty {"error": "..."}. */
static void expect_error_msg(srv_response *r, int status, const char *needle) {
    ck_assert_msg(r->status == status, "expected %d, got %d: %.300s", status, r->status, r->body ? r->body : "");
    cJSON *j = body_json(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert(cJSON_IsString(e) && strlen(e->valuestring) > 5);
    if (needle) ck_assert_msg(strstr(e->valuestring, needle) != NULL, "'%s' not in '%s'", needle, e->valuestring);
    cJSON_Delete(j);
    srv_response_free(r);
}

static void expect_error(srv_response *r, int status) {
    expect_error_msg(r, status, NULL);
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", key);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", key);
    return v->valuestring;
}

static void check_sum(const double p[FM_N_CLASSES]) {
    double s = 0;
    for (int k = 0; k < FM_N_CLASSES; k++) {
        ck_assert(isfinite(p[k]) && p[k] >= 0 && p[k] <= 1);
        s += p[k];
    }
    ck_assert_msg(fabs(s - 1.0) < 1e-5, "sum %.9g", s);
}

static void check_ref(const double p[FM_N_CLASSES], const float ref[FM_N_CLASSES]) {
    for (int k = 0; k < FM_N_CLASSES; k++)
        ck_assert_msg(fabs(p[k] - ref[k]) < 1e-6, "class %d: %.9g vs %.9g", k, p[k], (double)ref[k]);
}

/* Checks one native prediction object; returns its probabilities. */
static void check_prediction(const cJSON *pred, int top, double p[FM_N_CLASSES]) {
    const cJSON *probs = cJSON_GetObjectItemCaseSensitive(pred, "probabilities");
    ck_assert(cJSON_IsObject(probs));
    ck_assert_int_eq(cJSON_GetArraySize(probs), FM_N_CLASSES);
    int k = 0, best = 0;
    for (const cJSON *c = probs->child; c; c = c->next, k++) {
        ck_assert_str_eq(c->string, fm_class_names[k]); /* class order */
        ck_assert(cJSON_IsNumber(c));
        p[k] = c->valuedouble;
        if (p[k] > p[best]) best = k;
    }
    check_sum(p);
    ck_assert_int_eq((int)num(pred, "class_id"), best);
    ck_assert_str_eq(str(pred, "label"), fm_class_names[best]);
    ck_assert(num(pred, "confidence") == p[best]);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(pred, "top");
    ck_assert(cJSON_IsArray(t));
    ck_assert_int_eq(cJSON_GetArraySize(t), top);
    double prev = 2;
    for (const cJSON *c = t->child; c; c = c->next) {
        int id = (int)num(c, "class_id");
        ck_assert(id >= 0 && id < FM_N_CLASSES);
        ck_assert_str_eq(str(c, "label"), fm_class_names[id]);
        ck_assert(num(c, "probability") == p[id]);
        ck_assert(num(c, "probability") <= prev);
        prev = num(c, "probability");
    }
}

/* A 200 /v1/classify reply: n predictions; probabilities of each into p. */
static cJSON *classify_ok(srv_response *r, int n, int top, double p[][FM_N_CLASSES]) {
    ck_assert_msg(r->status == 200, "status %d: %.300s", r->status, r->body ? r->body : "");
    ck_assert_str_eq(r->route, "/v1/classify");
    cJSON *j = body_json(r);
    ck_assert_str_eq(str(j, "model"), r->model);
    const cJSON *preds = cJSON_GetObjectItemCaseSensitive(j, "predictions");
    ck_assert(cJSON_IsArray(preds));
    ck_assert_int_eq(cJSON_GetArraySize(preds), n);
    int i = 0;
    for (const cJSON *c = preds->child; c; c = c->next, i++) check_prediction(c, top, p[i]);
    srv_response_free(r);
    return j;
}

static void same(const double a[FM_N_CLASSES], const double b[FM_N_CLASSES]) {
    for (int k = 0; k < FM_N_CLASSES; k++) ck_assert_msg(a[k] == b[k], "class %d: %.9g != %.9g", k, a[k], b[k]);
}

/* multipart body with files (name, filename, data) */
typedef struct mpart {
    const char *name, *filename;
    const void *data;
    size_t len;
} mpart;

static void multipart(sbuf *b, const mpart *parts, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sb_printf(b, "--XyZb\r\nContent-Disposition: form-data; name=\"%s\"", parts[i].name);
        if (parts[i].filename) sb_printf(b, "; filename=\"%s\"", parts[i].filename);
        sb_printf(b, "\r\nContent-Type: application/octet-stream\r\n\r\n");
        sb_add(b, parts[i].data, parts[i].len);
        sb_printf(b, "\r\n");
    }
    sb_printf(b, "--XyZb--\r\n");
}
#define MP_CT "multipart/form-data; boundary=XyZb"

static char *b64(const uint8_t *d, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        o[k++] = t[v >> 18 & 63];
        o[k++] = t[v >> 12 & 63];
        o[k++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        o[k++] = i + 2 < n ? t[v & 63] : '=';
    }
    o[k] = '\0';
    return o;
}

/* 784 pixel values as JSON: flat or 28x28 nested, as ints or /255 floats */
static void pixels_json(sbuf *b, const uint8_t *img, int nested, int unit) {
    sb_printf(b, "[");
    for (int i = 0; i < FM_IMG_SIZE; i++) {
        if (nested && i % 28 == 0) sb_printf(b, "%s[", i ? "," : "");
        else if (i) sb_printf(b, ",");
        if (unit) sb_printf(b, "%.9g", (double)(img[i] / 255.0f));
        else sb_printf(b, "%d", img[i]);
        if (nested && i % 28 == 27) sb_printf(b, "]");
    }
    sb_printf(b, "]");
}

/* ---- health, metrics, routing basics ------------------------------------ */

START_TEST(test_healthz_readyz) {
    srv_response r = get("/healthz", NULL);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = body_json(&r);
    ck_assert_str_eq(str(j, "status"), "ok");
    ck_assert_str_eq(r.route, "/healthz");
    cJSON_Delete(j);
    srv_response_free(&r);

    r = get("/readyz", NULL);
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
    r = call("HEAD", "/readyz", NULL, NULL, NULL, 0);
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);

    atomic_store(&ctx.draining, 1);
    r = get("/readyz", NULL);
    expect_error(&r, 503);
    r = get("/healthz", NULL); /* alive while draining */
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
    r = get("/v2/health/ready", NULL);
    ck_assert_int_eq(r.status, 503);
    j = body_json(&r);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "ready")));
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/ping", NULL);
    ck_assert_int_eq(r.status, 503);
    srv_response_free(&r);
    atomic_store(&ctx.draining, 0);

    /* no snapshot at all: not ready, and inference says 503 */
    static srv_registry empty; /* no snapshot */
    ctx.registry = &empty;
    r = get("/readyz", NULL);
    expect_error(&r, 503);
    r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    expect_error(&r, 503);
    r = get("/v1/models", NULL);
    expect_error(&r, 503);
    ctx.registry = &registry;
    r = call("POST", "/readyz", NULL, NULL, "x", 1);
    expect_error(&r, 405);
}
END_TEST

START_TEST(test_metrics) {
    srv_response r = get("/metrics", NULL);
    expect_error(&r, 503);
    ctx.metrics = srv_metrics_create();
    ck_assert_ptr_nonnull(ctx.metrics);
    r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
    r = get("/metrics", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_ptr_nonnull(r.body);
    ck_assert_ptr_nonnull(strstr(r.body, "cnn1"));
    ck_assert_str_eq(r.route, "/metrics");
    srv_response_free(&r);
    srv_metrics_destroy(ctx.metrics);
    ctx.metrics = NULL;
}
END_TEST

START_TEST(test_methods_and_options) {
    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"GET", "/v1/classify", "POST, PUT, OPTIONS"},
        {"DELETE", "/v1/models", "GET, HEAD, OPTIONS"},
        {"POST", "/healthz", "GET, HEAD, OPTIONS"},
        {"GET", "/v2/models/cnn1/infer", "POST, OPTIONS"},
        {"PUT", "/v2/models/cnn1/infer", "POST, OPTIONS"},
        {"POST", "/v2/models/cnn1", "GET, HEAD, OPTIONS"},
        {"GET", "/v1/models/cnn1:predict", "POST, OPTIONS"},
        {"GET", "/predictions/cnn1", "POST, PUT, OPTIONS"},
        {"POST", "/v1/samples", "GET, HEAD, OPTIONS"},
        {"POST", "/", "GET, HEAD, OPTIONS"},
        {"DELETE", "/index.html", "GET, HEAD, OPTIONS"},
        {"POST", "/v1/reports/mlp2.history.json", "GET, HEAD, OPTIONS"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_response r = call(cases[i].method, cases[i].path, NULL, NULL, NULL, 0);
        ck_assert_str_eq(r.allow, cases[i].allow);
        ck_assert_int_eq(r.status, 405);
        expect_error(&r, 405);
        r = call("OPTIONS", cases[i].path, NULL, NULL, NULL, 0);
        ck_assert_int_eq(r.status, 204);
        ck_assert_str_eq(r.allow, cases[i].allow);
        ck_assert_ptr_null(r.body);
        ck_assert_str_eq(r.cors_origin, ""); /* CORS off */
        srv_response_free(&r);
    }
}
END_TEST

START_TEST(test_cors) {
    cfg.cors_origin = "*";
    srv_response r = get("/healthz", NULL);
    ck_assert_str_eq(r.cors_origin, "*");
    srv_response_free(&r);
    r = call_o("POST", "/v1/classify", NULL, NULL, "", 0, "http://a.example");
    ck_assert_str_eq(r.cors_origin, "*"); /* errors too */
    expect_error(&r, 400);
    r = call_o("OPTIONS", "/v1/classify", NULL, NULL, NULL, 0, "http://a.example");
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(r.cors_origin, "*");
    ck_assert_str_eq(r.allow, "POST, PUT, OPTIONS");
    srv_response_free(&r);

    cfg.cors_origin = "https://page.example";
    r = call_o("GET", "/healthz", NULL, NULL, NULL, 0, "https://page.example");
    ck_assert_str_eq(r.cors_origin, "https://page.example");
    srv_response_free(&r);
    r = call_o("GET", "/healthz", NULL, NULL, NULL, 0, NULL);
    ck_assert_str_eq(r.cors_origin, "https://page.example");
    srv_response_free(&r);
    r = call_o("GET", "/healthz", NULL, NULL, NULL, 0, "https://evil.example");
    ck_assert_str_eq(r.cors_origin, "");
    srv_response_free(&r);
    cfg.cors_origin = NULL;
    r = call_o("GET", "/healthz", NULL, NULL, NULL, 0, "https://page.example");
    ck_assert_str_eq(r.cors_origin, "");
    srv_response_free(&r);
}
END_TEST

START_TEST(test_unknown_routes) {
    srv_response r = get("/v1/nope", NULL);
    expect_error(&r, 404);
    r = get("/v2/nope/x", NULL);
    expect_error(&r, 404);
    r = get("/v1/models/cnn1/bogus", NULL);
    expect_error(&r, 404);
    r = get("/v2/models/cnn1/versions", NULL);
    expect_error(&r, 404);
    r = get("/v2/models//infer", NULL);
    expect_error(&r, 404);
    r = get("/v1/%zz", NULL);
    expect_error(&r, 400);
    r = get("/v1/a%00b", NULL);
    expect_error(&r, 400);
    /* srv_error on a fresh response, as http.c uses it */
    srv_response e = {0};
    srv_error(&e, 413, "too big: %d \"bytes\"\n\x01\xff", 5);
    ck_assert_int_eq(e.fd, -1);
    expect_error_msg(&e, 413, "too big: 5 \"bytes\"");
}
END_TEST

/* ---- /v1/classify ------------------------------------------------------- */

START_TEST(test_classify_raw_png) {
    double p[1][FM_N_CLASSES], q[1][FM_N_CLASSES];
    srv_response r = call("POST", "/v1/classify", NULL, "application/x-www-form-urlencoded", png_a, png_a_len);
    cJSON *j = classify_ok(&r, 1, 3, p);
    ck_assert_str_eq(str(j, "model"), "cnn1");
    check_ref(p[0], ref_a);
    const cJSON *pred = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(pred, "filename"));
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(pred, "preprocessing");
    ck_assert(cJSON_IsObject(pre));
    ck_assert_str_eq(str(pre, "format"), "png");
    ck_assert_int_eq((int)num(pre, "width"), 28);
    ck_assert_int_eq((int)num(pre, "height"), 28);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "trimmed")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "resized")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "inverted")));
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(pre, "background")));
    /* input_png decodes back to the very pixels the model saw */
    const char *url = str(pre, "input_png");
    ck_assert(strncmp(url, "data:image/png;base64,", 22) == 0);
    uint8_t bin[4096];
    size_t n;
    ck_assert_int_eq(px_b64_decode(url + 22, strlen(url + 22), bin, sizeof bin, &n), PX_OK);
    float x[FM_IMG_SIZE];
    img_info info;
    ck_assert_int_eq(img_to_input(bin, n, 0, IMG_INVERT_OFF, x, &info, NULL, 0), IMG_OK);
    for (int i = 0; i < FM_IMG_SIZE; i++) ck_assert(x[i] == img_a[i] / 255.0f);
    cJSON_Delete(j);

    /* PUT (curl -T) and no Content-Type at all give the same */
    r = call("PUT", "/v1/classify", NULL, NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 3, q);
    same(p[0], q[0]);
    cJSON_Delete(j);
    /* a lying Content-Type does not matter: magic bytes decide */
    r = call("POST", "/v1/classify", NULL, "text/plain", png_a, png_a_len);
    j = classify_ok(&r, 1, 3, q);
    same(p[0], q[0]);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_classify_query) {
    double p[1][FM_N_CLASSES], q[1][FM_N_CLASSES];
    srv_response r = call("POST", "/v1/classify", "top=5", NULL, png_a, png_a_len);
    cJSON *j = classify_ok(&r, 1, 5, p);
    cJSON_Delete(j);
    r = call("POST", "/v1/classify", "top=10&model=cnn1", NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 10, q);
    same(p[0], q[0]);
    cJSON_Delete(j);
    r = call("POST", "/v1/classify", "top=1&model=mlp2", NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 1, q);
    ck_assert_str_eq(str(j, "model"), "mlp2");
    cJSON_Delete(j);
    static const char *bad[] = {"top=0", "top=11", "top=abc", "top=", "invert=maybe", "model=%zz"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = call("POST", "/v1/classify", bad[i], NULL, png_a, png_a_len);
        expect_error(&r, 400);
    }
    r = call("POST", "/v1/classify", "model=nope", NULL, png_a, png_a_len);
    ck_assert_str_eq(r.model, "");
    expect_error_msg(&r, 404, "cnn1, mlp2");
    r = call("POST", "/v1/classify", "model=cnn1", NULL, png_a, png_a_len);
    ck_assert_str_eq(r.model, "cnn1");
    srv_response_free(&r);

    /* invert=true on a 28x28 image inverts it; false/auto leave it */
    r = call("POST", "/v1/classify", "invert=true", NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 3, q);
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0),
                                                        "preprocessing");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "inverted")));
    int differs = 0;
    for (int k = 0; k < FM_N_CLASSES; k++) differs |= p[0][k] != q[0][k];
    ck_assert(differs);
    cJSON_Delete(j);
    r = call("POST", "/v1/classify", "invert=false", NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 3, q);
    same(p[0], q[0]);
    cJSON_Delete(j);
    /* a larger light-background photo: trimmed, resized, auto-inverted */
    r = call("POST", "/v1/classify", "invert=auto", NULL, png_big, png_big_len);
    j = classify_ok(&r, 1, 3, q);
    pre = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0),
                                           "preprocessing");
    ck_assert_int_eq((int)num(pre, "width"), 60);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "resized")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pre, "inverted")));
    cJSON_Delete(j);
    r = call("POST", "/v1/classify", "invert=false", NULL, png_big, png_big_len);
    j = classify_ok(&r, 1, 3, q);
    pre = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0),
                                           "preprocessing");
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "inverted")));
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_classify_multipart) {
    sbuf b = {0};
    mpart parts[] = {
        {"note", NULL, "just a field", 12},
        {"file", "shoe \\\"a\\\".png", png_a, png_a_len}, /* quoted-string escapes */
        {"other", "b.png", png_b, png_b_len},
        {"empty", "", "", 0},
    };
    multipart(&b, parts, 4);
    double p[2][FM_N_CLASSES];
    srv_response r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    cJSON *j = classify_ok(&r, 2, 3, p);
    const cJSON *preds = cJSON_GetObjectItemCaseSensitive(j, "predictions");
    ck_assert_str_eq(str(cJSON_GetArrayItem(preds, 0), "filename"), "shoe \"a\".png");
    ck_assert_str_eq(str(cJSON_GetArrayItem(preds, 1), "filename"), "b.png");
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(preds, 1), "preprocessing")));
    check_ref(p[0], ref_a);
    check_ref(p[1], ref_b);
    cJSON_Delete(j);
    free(b.s);

    /* over the batch limit */
    memset(&b, 0, sizeof b);
    mpart many[MAX_BATCH + 1];
    for (int i = 0; i <= MAX_BATCH; i++) many[i] = (mpart){"f", "a.png", png_a, png_a_len};
    multipart(&b, many, MAX_BATCH + 1);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    expect_error(&r, 413);
    free(b.s);

    /* a file that is not an image: 415 naming it; a broken one: 400 */
    memset(&b, 0, sizeof b);
    mpart txt[] = {{"file", "notes.txt", "hello world", 11}};
    multipart(&b, txt, 1);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    expect_error_msg(&r, 415, "notes.txt");
    free(b.s);
    memset(&b, 0, sizeof b);
    mpart cut[] = {{"file", "cut.png", png_a, png_a_len / 2}};
    multipart(&b, cut, 1);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    expect_error_msg(&r, 400, "cut.png");
    free(b.s);

    /* no image part; malformed body; no boundary */
    memset(&b, 0, sizeof b);
    mpart none[] = {{"note", NULL, "text", 4}};
    multipart(&b, none, 1);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    expect_error(&r, 400);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len - 12); /* truncated */
    expect_error(&r, 400);
    free(b.s);
    r = call("POST", "/v1/classify", NULL, "multipart/form-data", "--x\r\n", 5);
    expect_error(&r, 400);
}
END_TEST

START_TEST(test_classify_json_forms) {
    double p[1][FM_N_CLASSES], q[1][FM_N_CLASSES];
    srv_response r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    cJSON *j = classify_ok(&r, 1, 3, p);
    cJSON_Delete(j);

    for (int form = 0; form < 6; form++) {
        sbuf b = {0};
        char *enc = b64(png_a, png_a_len);
        sb_printf(&b, "{%s\"instances\": [", form == 0 || form == 1 ? "\"scale\": 255, " : "");
        switch (form) {
        case 0: pixels_json(&b, img_a, 0, 0); break; /* flat ints, scale 255 */
        case 1: pixels_json(&b, img_a, 1, 0); break; /* 28x28 ints, scale 255 */
        case 2: pixels_json(&b, img_a, 0, 1); break; /* flat in [0,1] */
        case 3: pixels_json(&b, img_a, 1, 1); break; /* 28x28 in [0,1] */
        case 4: sb_printf(&b, "{\"b64\": \"%s\"}", enc); break;
        default: sb_printf(&b, "{\"b64\": \"data:image/png;base64,%s\"}", enc); break;
        }
        sb_printf(&b, "]}");
        free(enc);
        /* application/json, and what curl -d sends */
        r = call("POST", "/v1/classify", NULL, form % 2 ? "application/json; charset=utf-8"
                                                        : "application/x-www-form-urlencoded", b.s, b.len);
        j = classify_ok(&r, 1, 3, q);
        same(p[0], q[0]);
        const cJSON *pred = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "predictions"), 0);
        ck_assert(!cJSON_GetObjectItemCaseSensitive(pred, "preprocessing") == (form < 4));
        cJSON_Delete(j);
        free(b.s);
    }

    /* multipart with the one file: the very same numbers */
    sbuf b = {0};
    mpart one[] = {{"image", "a.png", png_a, png_a_len}};
    multipart(&b, one, 1);
    r = call("POST", "/v1/classify", NULL, MP_CT, b.s, b.len);
    j = classify_ok(&r, 1, 3, q);
    same(p[0], q[0]);
    cJSON_Delete(j);
    free(b.s);
    memset(&b, 0, sizeof b);

    /* a batch of two instances and [1][28][28] */
    sb_printf(&b, "{\"scale\":255,\"instances\":[[");
    pixels_json(&b, img_a, 1, 0);
    sb_printf(&b, "],");
    pixels_json(&b, img_b, 0, 0);
    sb_printf(&b, "]}");
    double pp[2][FM_N_CLASSES];
    r = post_json("/v1/classify", NULL, b.s);
    j = classify_ok(&r, 2, 3, pp);
    check_ref(pp[0], ref_a);
    check_ref(pp[1], ref_b);
    cJSON_Delete(j);
    free(b.s);
}
END_TEST

START_TEST(test_classify_errors) {
    srv_response r = call("POST", "/v1/classify", NULL, NULL, NULL, 0);
    expect_error(&r, 400);
    r = call("POST", "/v1/classify", NULL, "image/png", "", 0);
    expect_error(&r, 400);
    r = call("POST", "/v1/classify", NULL, "text/plain", "hello, world", 12);
    expect_error_msg(&r, 415, "text/plain");
    r = call("POST", "/v1/classify", NULL, "application/octet-stream", "\x01\x02\x03garbage", 10);
    expect_error(&r, 415);
    r = call("POST", "/v1/classify", NULL, "text/plain", "{\"instances\":[]}", 16);
    expect_error(&r, 415);
    r = call("POST", "/v1/classify", NULL, NULL, png_a, 40); /* truncated PNG */
    expect_error(&r, 400);
    uint8_t bad[64];
    memcpy(bad, png_a, 64);
    bad[20] ^= 0xff; /* header CRC broken */
    r = call("POST", "/v1/classify", NULL, NULL, bad, 64);
    expect_error(&r, 400);
    size_t saved = cfg.max_pixels;
    cfg.max_pixels = 100;
    r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    expect_error(&r, 413);
    cfg.max_pixels = saved;
}
END_TEST

/* JSON that cannot be read: 400; read but meaningless: 422; too many: 413 */
START_TEST(test_classify_json_errors) {
    static const struct {
        const char *body;
        int status;
    } cases[] = {
        {"{", 400},
        {"{\"instances\": [[NaN]]}", 400},
        {"{\"instances\": [[Infinity]]}", 400},
        {"{\"instances\": []} trailing", 400},
        {"{\"instances\": [{\"b64\": \"!!!not base64\"}]}", 400},
        {"{\"instances\": [{\"b64\": \"aGVsbG8gd29ybGQ=\"}]}", 415},
        {"{\"instances\": [{\"b64\": \"data:image/png,abc\"}]}", 400},
        {"{\"instances\": [{\"b64\": \"\"}]}", 400},
        {"[1,2,3]", 422},
        {"\"instances\"", 422},
        {"{}", 422},
        {"{\"instances\": 5}", 422},
        {"{\"instances\": {}}", 422},
        {"{\"instances\": []}", 422},
        {"{\"instances\": [[0.5]]}", 422},
        {"{\"instances\": [\"abc\"]}", 422},
        {"{\"instances\": [null]}", 422},
        {"{\"instances\": [{\"b64\": 5}]}", 422},
        {"{\"instances\": [{\"pixels\": []}]}", 422},
        {"{\"instances\": [[]]}", 422},
        {"{\"instances\": [1]}", 422},
        {"{\"scale\": 3, \"instances\": [[0]]}", 422},
        {"{\"scale\": \"255\", \"instances\": [[0]]}", 422},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_response r = post_json("/v1/classify", NULL, cases[i].body);
        ck_assert_msg(r.status == cases[i].status, "case %zu %s: %d %s", i, cases[i].body, r.status, r.body);
        expect_error(&r, cases[i].status);
    }
    /* 784 values with one bad: string, bool, out of range, huge, overflow, nested array, ragged rows */
    static const char *poison[] = {"\"x\"", "true", "1.5", "-0.1", "1e300", "1e999", "-1e999", "[0]", "null", "{}"};
    for (size_t k = 0; k < sizeof poison / sizeof poison[0]; k++) {
        sbuf b = {0};
        sb_printf(&b, "{\"instances\": [[");
        for (int i = 0; i < FM_IMG_SIZE; i++) sb_printf(&b, "%s%s", i ? "," : "", i == 300 ? poison[k] : "0.5");
        sb_printf(&b, "]]}");
        srv_response r = post_json("/v1/classify", NULL, b.s);
        ck_assert_msg(r.status == 422, "poison %s: %d", poison[k], r.status);
        expect_error(&r, 422);
        free(b.s);
    }
    sbuf b = {0}; /* scale 255 allows 255, not 256 */
    sb_printf(&b, "{\"scale\": 255, \"instances\": [[");
    for (int i = 0; i < FM_IMG_SIZE; i++) sb_printf(&b, "%s%d", i ? "," : "", i == 5 ? 256 : 255);
    sb_printf(&b, "]]}");
    srv_response r = post_json("/v1/classify", NULL, b.s);
    expect_error(&r, 422);
    free(b.s);
    memset(&b, 0, sizeof b); /* ragged: one row of 27 */
    sb_printf(&b, "{\"instances\": [[");
    for (int y = 0; y < 28; y++) {
        sb_printf(&b, "%s[", y ? "," : "");
        for (int x = 0; x < (y == 9 ? 27 : 28); x++) sb_printf(&b, "%s0", x ? "," : "");
        sb_printf(&b, "]");
    }
    sb_printf(&b, "]]}");
    r = post_json("/v1/classify", NULL, b.s);
    expect_error(&r, 422);
    free(b.s);
    /* over the batch limit */
    memset(&b, 0, sizeof b);
    sb_printf(&b, "{\"instances\": [");
    for (int i = 0; i <= MAX_BATCH; i++) {
        if (i) sb_printf(&b, ",");
        pixels_json(&b, img_a, 0, 1);
    }
    sb_printf(&b, "]}");
    r = post_json("/v1/classify", NULL, b.s);
    expect_error(&r, 413);
    free(b.s);
    /* far too many values for any batch: refused before parsing */
    memset(&b, 0, sizeof b);
    sb_printf(&b, "{\"instances\": [[");
    for (int i = 0; i < 20000; i++) sb_printf(&b, "%s0", i ? "," : "");
    sb_printf(&b, "]]}");
    r = post_json("/v1/classify", NULL, b.s);
    expect_error(&r, 413);
    free(b.s);
}
END_TEST

START_TEST(test_json_depth) {
    static const char *open[] = {"[", "{\"a\":"};
    for (int k = 0; k < 2; k++) {
        sbuf b = {0};
        sb_printf(&b, "{\"instances\":");
        for (int i = 0; i < 10000; i++) sb_add(&b, open[k], strlen(open[k]));
        srv_response r = post_json("/v1/classify", NULL, b.s);
        expect_error_msg(&r, 400, "nested");
        r = post_json("/v2/models/cnn1/infer", NULL, b.s);
        expect_error(&r, 400);
        r = post_json("/v1/models/cnn1:predict", NULL, b.s);
        expect_error(&r, 400);
        free(b.s);
    }
    /* brackets inside strings do not count */
    sbuf b = {0};
    sb_printf(&b, "{\"x\": \"");
    for (int i = 0; i < 100; i++) sb_printf(&b, "[[[[\\\"{{");
    sb_printf(&b, "\", \"instances\": []}");
    srv_response r = post_json("/v1/classify", NULL, b.s);
    expect_error(&r, 422); /* got through to the meaning: empty instances */
    free(b.s);
}
END_TEST

/* ---- /v1/models, /v1/samples, reports, static ---------------------------- */

START_TEST(test_models) {
    srv_response r = get("/v1/models", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.route, "/v1/models");
    cJSON *j = body_json(&r);
    ck_assert_str_eq(str(j, "default"), "cnn1");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "models");
    ck_assert_int_eq(cJSON_GetArraySize(list), 2);
    const char *names[] = {"cnn1", "mlp2"};
    int i = 0;
    for (const cJSON *m = list->child; m; m = m->next, i++) {
        ck_assert_str_eq(str(m, "name"), names[i]);
        ck_assert(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(m, "default")));
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "default")) == (i == 0));
        const cJSON *arch = cJSON_GetObjectItemCaseSensitive(m, "architecture");
        ck_assert(cJSON_IsObject(arch));
        ck_assert_str_eq(str(arch, "name"), names[i]);
        fm_arch a;
        ck_assert_int_eq(fm_arch_named(&a, names[i], NULL), 0);
        ck_assert(num(m, "parameters") == (double)a.n_params);
        const cJSON *sum = cJSON_GetObjectItemCaseSensitive(m, "summary");
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sum, "layers");
        ck_assert_int_eq(cJSON_GetArraySize(layers), a.n_layers);
        double total = 0;
        for (const cJSON *l = layers->child; l; l = l->next) {
            ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(l, "type")));
            ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(l, "output_shape")));
            total += num(l, "params");
        }
        ck_assert(total == (double)a.n_params);
        const cJSON *last = cJSON_GetArrayItem(layers, a.n_layers - 1);
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(last, "output_shape")), 1);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(m, "input_shape");
        ck_assert_int_eq(cJSON_GetArraySize(in), 3);
        ck_assert_int_eq(cJSON_GetArrayItem(in, 0)->valueint, 1);
        ck_assert_int_eq(cJSON_GetArrayItem(in, 2)->valueint, 28);
        const cJSON *cl = cJSON_GetObjectItemCaseSensitive(m, "classes");
        ck_assert_int_eq(cJSON_GetArraySize(cl), 10);
        ck_assert_str_eq(cJSON_GetArrayItem(cl, 9)->valuestring, "Ankle boot");
        ck_assert(num(m, "test_accuracy") == 0.5);
        ck_assert_int_eq((int)strlen(str(m, "sha256")), 64);
        char path[PATH_MAX * 2];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s.safetensors", weights_dir, names[i]);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert(num(m, "file_bytes") == (double)st.st_size);
    }
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v1/models/", NULL); /* trailing slash */
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
}
END_TEST

START_TEST(test_samples) {
    srv_response r = get("/v1/samples", "offset=1&count=3");
    ck_assert_int_eq(r.status, 200);
    cJSON *j = body_json(&r);
    ck_assert(num(j, "total") == N_SAMPLES);
    ck_assert(num(j, "offset") == 1);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "samples");
    ck_assert_int_eq(cJSON_GetArraySize(list), 3);
    int i = 1;
    for (const cJSON *s = list->child; s; s = s->next, i++) {
        ck_assert_int_eq((int)num(s, "index"), i);
        ck_assert_int_eq((int)num(s, "class_id"), sample_lb[i]);
        ck_assert_str_eq(str(s, "label"), fm_class_names[sample_lb[i]]);
        const char *png = str(s, "png");
        ck_assert(strncmp(png, "data:image/png;base64,", 22) == 0);
        uint8_t bin[4096];
        size_t n;
        ck_assert_int_eq(px_b64_decode(png + 22, strlen(png + 22), bin, sizeof bin, &n), PX_OK);
        float x[FM_IMG_SIZE];
        img_info info;
        ck_assert_int_eq(img_to_input(bin, n, 0, IMG_INVERT_OFF, x, &info, NULL, 0), IMG_OK);
        const cJSON *px = cJSON_GetObjectItemCaseSensitive(s, "pixels");
        ck_assert_int_eq(cJSON_GetArraySize(px), FM_IMG_SIZE);
        int k = 0;
        for (const cJSON *v = px->child; v; v = v->next, k++) {
            ck_assert_int_eq(v->valueint, sample_px[(size_t)i * FM_IMG_SIZE + (size_t)k]);
            ck_assert(x[k] == v->valueint / 255.0f);
        }
    }
    cJSON_Delete(j);
    srv_response_free(&r);

    r = get("/v1/samples", "offset=3&count=100"); /* clipped at the end */
    j = body_json(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "samples")), 2);
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v1/samples", NULL); /* defaults */
    j = body_json(&r);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "samples")), N_SAMPLES);
    cJSON_Delete(j);
    srv_response_free(&r);

    int seen[N_SAMPLES] = {0};
    r = get("/v1/samples", "random=1&seed=7&count=4");
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    list = cJSON_GetObjectItemCaseSensitive(j, "samples");
    ck_assert_int_eq(cJSON_GetArraySize(list), 4);
    for (const cJSON *s = list->child; s; s = s->next) ck_assert_int_eq(seen[(int)num(s, "index")]++, 0);
    char *first = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v1/samples", "random=1&seed=7&count=4"); /* reproducible */
    ck_assert_str_eq(r.body, first);
    free(first);
    srv_response_free(&r);

    static const char *bad[] = {"count=0", "count=101", "offset=5", "offset=-1", "count=x", "random=2", "seed=abc"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        r = get("/v1/samples", bad[k]);
        expect_error(&r, 400);
    }
    ctx.samples = NULL;
    r = get("/v1/samples", NULL);
    expect_error_msg(&r, 503, "test set");
    ctx.samples = &samples;
}
END_TEST

static void expect_file(srv_response *r, const char *type, const char *cache, const char *content) {
    ck_assert_msg(r->status == 200, "status %d %s", r->status, r->body ? r->body : "");
    ck_assert_int_ge(r->fd, 0);
    ck_assert_ptr_null(r->body);
    ck_assert_str_eq(r->content_type, type);
    ck_assert_str_eq(r->cache_control, cache);
    ck_assert_msg(r->etag[0] == '"' && r->etag[strlen(r->etag) - 1] == '"', "ETag %s", r->etag);
    ck_assert_int_eq((int)r->file_size, (int)strlen(content));
    char buf[256] = {0};
    ck_assert_int_eq((int)pread(r->fd, buf, sizeof buf - 1, 0), (int)strlen(content));
    ck_assert_str_eq(buf, content);
    srv_response_free(r);
    ck_assert_int_eq(r->fd, -1);
}

START_TEST(test_reports) {
    srv_response r = get("/v1/reports/mlp2.history.json", NULL);
    ck_assert_str_eq(r.route, "/v1/reports/{file}");
    expect_file(&r, "application/json", "no-cache", "{\"epochs\":[1,2,3]}\n");
    r = call("HEAD", "/v1/reports/grid-lr.csv", NULL, NULL, NULL, 0);
    expect_file(&r, "text/csv; charset=utf-8", "no-cache", "lr,acc\n0.1,0.5\n");
    r = get("/v1/reports/..%2fsecret.json", NULL);
    expect_error(&r, 400);
    r = get("/v1/reports/../secret.json", NULL);
    expect_error(&r, 400);
    r = get("/v1/reports/a..history.json", NULL);
    expect_error(&r, 400);
    r = get("/v1/reports/.hidden.history.json", NULL);
    expect_error(&r, 400);
    r = get("/v1/reports/sub/x.history.json", NULL);
    expect_error(&r, 400);
    r = get("/v1/reports/notes.txt", NULL); /* exists, but not a report */
    expect_error(&r, 404);
    r = get("/v1/reports/cnn1.safetensors", NULL);
    expect_error(&r, 404);
    r = get("/v1/reports/grid-missing.md", NULL);
    expect_error(&r, 404);
    r = get("/v1/reports/evil.history.json", NULL); /* symlink out of the directory */
    expect_error(&r, 403);
}
END_TEST

START_TEST(test_static) {
    srv_response r = get("/", NULL);
    ck_assert_str_eq(r.route, "static");
    expect_file(&r, "text/html; charset=utf-8", "no-cache", "<!doctype html><title>fmnist</title>\n");
    r = get("/index.html", "v=2");
    expect_file(&r, "text/html; charset=utf-8", "no-cache", "<!doctype html><title>fmnist</title>\n");
    r = call("HEAD", "/app.js", NULL, NULL, NULL, 0);
    expect_file(&r, "text/javascript; charset=utf-8", "no-cache", "console.log('fmnist');\n");
    r = get("/nope.html", NULL);
    expect_error(&r, 404);
    r = get("/%2e%2e/secret.json", NULL);
    expect_error(&r, 403);
    r = get("/../secret.json", NULL);
    expect_error(&r, 403);
    r = get("/.env", NULL);
    expect_error(&r, 403);
    r = get("/out.html", NULL);
    expect_error(&r, 403);
    r = get("//etc/passwd", NULL);
    expect_error(&r, 403);
    r = get("/a%5c..%5csecret.json", NULL);
    expect_error(&r, 403);
    char saved = ctx.static_root[0];
    ctx.static_root[0] = '\0';
    r = get("/", NULL);
    expect_error(&r, 404);
    r = get("/index.html", NULL);
    expect_error(&r, 404);
    ctx.static_root[0] = saved;
}
END_TEST

/* ---- KServe v2 ---------------------------------------------------------- */

static void kserve_body(sbuf *b, const char *shape, const char *dtype, int nested, int uint8, const char *extra) {
    sb_printf(b, "{%s\"inputs\": [{\"name\": \"input\", \"shape\": %s, \"datatype\": \"%s\", \"data\": ", extra, shape,
              dtype);
    if (nested) sb_printf(b, "[");
    pixels_json(b, img_a, nested, !uint8);
    if (nested) sb_printf(b, "]");
    sb_printf(b, "}]}");
}

/* A 200 infer reply: the probabilities of its single example. */
static cJSON *kserve_ok(srv_response *r, double p[FM_N_CLASSES]) {
    ck_assert_msg(r->status == 200, "status %d: %.300s", r->status, r->body ? r->body : "");
    ck_assert_str_eq(r->route, "/v2/models/{name}/infer");
    cJSON *j = body_json(r);
    ck_assert_str_eq(str(j, "model_name"), "cnn1");
    ck_assert_str_eq(str(j, "model_version"), "1");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(j, "outputs");
    ck_assert_int_eq(cJSON_GetArraySize(outs), 1);
    const cJSON *o = outs->child;
    ck_assert_str_eq(str(o, "name"), "probabilities");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(o, "shape");
    ck_assert_int_eq(cJSON_GetArrayItem(shape, 0)->valueint, 1);
    if (strcmp(str(o, "datatype"), "FP32") == 0) {
        ck_assert_int_eq(cJSON_GetArrayItem(shape, 1)->valueint, 10);
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
        ck_assert_int_eq(cJSON_GetArraySize(data), 10);
        int k = 0;
        for (const cJSON *v = data->child; v; v = v->next) p[k++] = v->valuedouble;
        check_sum(p);
    }
    srv_response_free(r);
    return j;
}

START_TEST(test_kserve_meta) {
    srv_response r = get("/v2", NULL);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = body_json(&r);
    ck_assert_str_eq(str(j, "name"), "fmnist");
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "version")));
    ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "extensions")));
    cJSON_Delete(j);
    srv_response_free(&r);

    r = get("/v2/health/live", NULL);
    j = body_json(&r);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "live")));
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v2/health/ready", NULL);
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ready")));
    cJSON_Delete(j);
    srv_response_free(&r);

    static const char *meta_paths[] = {"/v2/models/cnn1", "/v2/models/cnn1/versions/1"};
    for (int i = 0; i < 2; i++) {
        r = get(meta_paths[i], NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.route, "/v2/models/{name}");
        j = body_json(&r);
        ck_assert_str_eq(str(j, "name"), "cnn1");
        ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "versions"), 0)->valuestring, "1");
        ck_assert_str_eq(str(j, "platform"), "fmnist");
        const cJSON *in = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "inputs"), 0);
        ck_assert_str_eq(str(in, "name"), "input");
        ck_assert_str_eq(str(in, "datatype"), "FP32");
        char *shape = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(in, "shape"));
        ck_assert_str_eq(shape, "[-1,1,28,28]");
        free(shape);
        const cJSON *out = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "outputs"), 0);
        ck_assert_str_eq(str(out, "name"), "probabilities");
        shape = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(out, "shape"));
        ck_assert_str_eq(shape, "[-1,10]");
        free(shape);
        cJSON_Delete(j);
        srv_response_free(&r);
    }
    r = get("/v2/models/mlp2/ready", NULL);
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    ck_assert_str_eq(str(j, "name"), "mlp2");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ready")));
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v2/models/cnn1/versions/1/ready", NULL);
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
    r = get("/v2/models/nope", NULL);
    expect_error(&r, 404);
    r = get("/v2/models/nope/ready", NULL);
    expect_error(&r, 404);
    r = get("/v2/models/cnn1/versions/2", NULL);
    expect_error(&r, 404);
}
END_TEST

START_TEST(test_kserve_infer) {
    double p[1][FM_N_CLASSES], q[FM_N_CLASSES];
    srv_response r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    cJSON *j = classify_ok(&r, 1, 3, p);
    cJSON_Delete(j);

    static const struct {
        const char *path, *shape, *dtype;
        int nested, uint8;
    } forms[] = {
        {"/v2/models/cnn1/infer", "[1,784]", "FP32", 0, 0},
        {"/v2/models/cnn1/infer", "[1,28,28]", "FP32", 1, 0},
        {"/v2/models/cnn1/versions/1/infer", "[1,1,28,28]", "UINT8", 0, 1},
        {"/v2/models/cnn1/infer", "[1,1,28,28]", "UINT8", 1, 1},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        sbuf b = {0};
        kserve_body(&b, forms[i].shape, forms[i].dtype, forms[i].nested, forms[i].uint8, "\"id\": \"req-42\", ");
        r = post_json(forms[i].path, NULL, b.s);
        j = kserve_ok(&r, q);
        same(p[0], q);
        ck_assert_str_eq(str(j, "id"), "req-42");
        cJSON_Delete(j);
        free(b.s);
    }

    /* classification extension: top-K strings value:index:label */
    sbuf b = {0};
    kserve_body(&b, "[1,784]", "FP32", 0, 0,
                "\"outputs\": [{\"name\": \"probabilities\", \"parameters\": {\"classification\": 3}}], ");
    r = post_json("/v2/models/cnn1/infer", NULL, b.s);
    j = kserve_ok(&r, q);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "id")); /* none sent, none echoed */
    const cJSON *o = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "outputs"), 0);
    ck_assert_str_eq(str(o, "datatype"), "BYTES");
    char *shape = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "shape"));
    ck_assert_str_eq(shape, "[1,3]");
    free(shape);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
    ck_assert_int_eq(cJSON_GetArraySize(data), 3);
    double prev = 2;
    for (const cJSON *v = data->child; v; v = v->next) {
        double val;
        int idx, used = 0;
        ck_assert(cJSON_IsString(v));
        ck_assert_int_eq(sscanf(v->valuestring, "%lf:%d:%n", &val, &idx, &used), 2);
        ck_assert(idx >= 0 && idx < 10);
        ck_assert_str_eq(v->valuestring + used, fm_class_names[idx]);
        ck_assert(fabs(val - p[0][idx]) < 1e-6);
        ck_assert(val <= prev);
        prev = val;
        const char *colon = strchr(v->valuestring, ':');
        ck_assert_int_eq((int)(colon - strchr(v->valuestring, '.')), 7); /* %f: six decimals */
    }
    cJSON_Delete(j);
    free(b.s);

    /* a batch of two, flat [2,784] */
    memset(&b, 0, sizeof b);
    sb_printf(&b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[2,784],\"datatype\":\"UINT8\",\"data\":[");
    pixels_json(&b, img_a, 0, 0);
    sb_printf(&b, ",");
    pixels_json(&b, img_b, 0, 0);
    sb_printf(&b, "]}]}");
    r = post_json("/v2/models/cnn1/infer", NULL, b.s);
    ck_assert_int_eq(r.status, 200);
    j = body_json(&r);
    o = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "outputs"), 0);
    data = cJSON_GetObjectItemCaseSensitive(o, "data");
    ck_assert_int_eq(cJSON_GetArraySize(data), 20);
    for (int k = 0; k < 10; k++) {
        ck_assert(fabs(cJSON_GetArrayItem(data, k)->valuedouble - ref_a[k]) < 1e-6);
        ck_assert(fabs(cJSON_GetArrayItem(data, 10 + k)->valuedouble - ref_b[k]) < 1e-6);
    }
    cJSON_Delete(j);
    srv_response_free(&r);
    free(b.s);
}
END_TEST

START_TEST(test_kserve_errors) {
    static const struct {
        const char *shape, *dtype, *extra;
        int nested, uint8, status;
    } cases[] = {
        {"[1,783]", "FP32", "", 0, 0, 400},        /* shape that is not an image */
        {"[2,784]", "FP32", "", 0, 0, 400},        /* data count != product(shape) */
        {"[784]", "FP32", "", 0, 0, 400},          /* no batch dimension */
        {"[0,784]", "FP32", "", 0, 0, 400},
        {"[1,28,28,1]", "FP32", "", 0, 0, 400},
        {"[1.5,784]", "FP32", "", 0, 0, 400},
        {"[\"1\",784]", "FP32", "", 0, 0, 400},
        {"[1,784]", "FP64", "", 0, 0, 400},
        {"[1,784]", "FP32", "", 0, 1, 400},        /* 0..255 values declared FP32 */
        {"[5,784]", "FP32", "", 0, 0, 413},        /* over --max-batch */
        {"[1,784]", "FP32", "\"id\": 5, ", 0, 0, 400},
        {"[1,784]", "FP32", "\"parameters\": [], ", 0, 0, 400},
        {"[1,784]", "FP32", "\"outputs\": [{\"name\": \"logits\"}], ", 0, 0, 400},
        {"[1,784]", "FP32", "\"outputs\": [{\"name\": \"probabilities\", \"parameters\": {\"classification\": 11}}], ", 0, 0, 400},
        {"[1,784]", "FP32", "\"outputs\": [{\"name\": \"probabilities\", \"parameters\": {\"binary_data\": true}}], ", 0, 0, 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sbuf b = {0};
        kserve_body(&b, cases[i].shape, cases[i].dtype, cases[i].nested, cases[i].uint8, cases[i].extra);
        srv_response r = post_json("/v2/models/cnn1/infer", NULL, b.s);
        ck_assert_msg(r.status == cases[i].status, "case %zu: %d %.200s", i, r.status, r.body);
        expect_error(&r, cases[i].status);
        free(b.s);
    }
    static const char *bodies[] = {
        "{}", "[]", "{\"inputs\": []}", "{\"inputs\": {}}",
        "{\"inputs\": [{\"name\": \"x\", \"shape\": [1,784], \"datatype\": \"FP32\", \"data\": []}]}",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784], \"datatype\": \"FP32\", \"data\": 5}]}",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784], \"datatype\": \"FP32\", \"data\": [\"a\"]}]}",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784], \"datatype\": \"FP32\", \"data\": [0.5]}]}",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784], \"datatype\": \"UINT8\", \"data\": [1.5]}]}",
        "{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784]}]}",
        ("{\"inputs\": [{\"name\": \"input\", \"shape\": [1,784], \"datatype\": \"FP32\", \"data\": [], "
         "\"parameters\": {\"binary_data_size\": 3136}}]}"),
        "not json",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        srv_response r = post_json("/v2/models/cnn1/infer", NULL, bodies[i]);
        ck_assert_msg(r.status == 400, "body %zu: %d", i, r.status);
        expect_error(&r, 400);
    }
    srv_response r = post_json("/v2/models/nope/infer", NULL, "{}");
    expect_error_msg(&r, 404, "mlp2");
    r = post_json("/v2/models/cnn1/versions/7/infer", NULL, "{}");
    expect_error(&r, 404);
    r = call("POST", "/v2/models/cnn1/infer", NULL, NULL, NULL, 0);
    expect_error(&r, 400);
}
END_TEST

/* ---- TF Serving --------------------------------------------------------- */

START_TEST(test_tfs) {
    static const char *status_paths[] = {"/v1/models/cnn1", "/v1/models/cnn1/versions/1"};
    for (int i = 0; i < 2; i++) {
        srv_response r = get(status_paths[i], NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.route, "/v1/models/{name}");
        cJSON *j = body_json(&r);
        const cJSON *v = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "model_version_status"), 0);
        ck_assert_str_eq(str(v, "version"), "1");
        ck_assert_str_eq(str(v, "state"), "AVAILABLE");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "status");
        ck_assert_str_eq(str(st, "error_code"), "OK");
        ck_assert_str_eq(str(st, "error_message"), "");
        ck_assert_str_eq(str(j, "name"), "cnn1"); /* native fields beside */
        cJSON_Delete(j);
        srv_response_free(&r);
    }
    srv_response r = get("/v1/models/cnn1/metadata", NULL);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = body_json(&r);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "model_spec");
    ck_assert_str_eq(str(spec, "name"), "cnn1");
    ck_assert_str_eq(str(spec, "signature_name"), "");
    ck_assert_str_eq(str(spec, "version"), "1");
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "metadata"), "signature_def"),
        "signature_def"), "serving_default");
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(sig, "inputs"), "input")));
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(sig, "outputs")));
    ck_assert_str_eq(str(sig, "method_name"), "tensorflow/serving/predict");
    cJSON_Delete(j);
    srv_response_free(&r);
    r = get("/v1/models/nope", NULL);
    expect_error(&r, 404);
    r = get("/v1/models/cnn1/versions/3/metadata", NULL);
    expect_error(&r, 404);

    double p[1][FM_N_CLASSES];
    r = call("POST", "/v1/classify", NULL, NULL, png_a, png_a_len);
    j = classify_ok(&r, 1, 3, p);
    cJSON_Delete(j);
    char *enc = b64(png_a, png_a_len);
    for (int form = 0; form < 8; form++) {
        sbuf b = {0};
        const char *key = form < 5 ? "predictions" : "outputs";
        switch (form) {
        case 0: sb_printf(&b, "{\"signature_name\": \"serving_default\", \"instances\": ["); pixels_json(&b, img_a, 0, 1); sb_printf(&b, "]}"); break;
        case 1: sb_printf(&b, "{\"instances\": [["); pixels_json(&b, img_a, 1, 1); sb_printf(&b, "]]}"); break;
        case 2: sb_printf(&b, "{\"instances\": [{\"b64\": \"%s\"}]}", enc); break;
        case 3: sb_printf(&b, "{\"instances\": [{\"input\": {\"b64\": \"%s\"}}]}", enc); break;
        case 4: sb_printf(&b, "{\"instances\": [{\"input\": "); pixels_json(&b, img_a, 1, 1); sb_printf(&b, "}]}"); break;
        case 5: sb_printf(&b, "{\"inputs\": ["); pixels_json(&b, img_a, 1, 1); sb_printf(&b, "]}"); break;
        case 6: sb_printf(&b, "{\"inputs\": {\"input\": ["); pixels_json(&b, img_a, 0, 1); sb_printf(&b, "]}}"); break;
        default: sb_printf(&b, "{\"scale\": 255, \"inputs\": ["); pixels_json(&b, img_a, 0, 0); sb_printf(&b, "]}"); break;
        }
        r = post_json(form % 2 ? "/v1/models/cnn1:predict" : "/v1/models/cnn1/versions/1:predict", NULL, b.s);
        ck_assert_msg(r.status == 200, "form %d: %d %.300s", form, r.status, r.body);
        ck_assert_str_eq(r.route, "/v1/models/{name}:predict");
        j = body_json(&r);
        const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, key);
        ck_assert_int_eq(cJSON_GetArraySize(rows), 1);
        const cJSON *row = rows->child;
        ck_assert_int_eq(cJSON_GetArraySize(row), 10);
        double q[FM_N_CLASSES];
        int k = 0;
        for (const cJSON *v = row->child; v; v = v->next) q[k++] = v->valuedouble;
        check_sum(q);
        same(p[0], q);
        cJSON_Delete(j);
        srv_response_free(&r);
        free(b.s);
    }
    free(enc);
    static const char *bad[] = {
        "{}",
        "{\"instances\": [], \"inputs\": []}",
        "{\"instances\": []}",
        "{\"instances\": [[0.5]]}",
        "{\"instances\": [{\"foo\": 1}]}",
        "{\"inputs\": {\"x\": []}}",
        "{\"signature_name\": \"other\", \"instances\": [[0]]}",
        "{\"instances\": 3}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = post_json("/v1/models/cnn1:predict", NULL, bad[i]);
        ck_assert_msg(r.status == 400, "bad %zu: %d", i, r.status);
        expect_error(&r, 400);
    }
    sbuf b = {0}; /* out-of-range value: 400 (TF Serving's INVALID_ARGUMENT) */
    sb_printf(&b, "{\"instances\": [");
    pixels_json(&b, img_a, 0, 0);
    sb_printf(&b, "]}");
    r = post_json("/v1/models/cnn1:predict", NULL, b.s);
    expect_error(&r, 400);
    free(b.s);
    r = post_json("/v1/models/nope:predict", NULL, "{}");
    expect_error(&r, 404);
    r = post_json("/v1/models/cnn1:classify", NULL, "{}");
    expect_error(&r, 404);
    r = post_json("/v1/models/cnn1/versions/2:predict", NULL, "{}");
    expect_error(&r, 404);
}
END_TEST

/* ---- TorchServe --------------------------------------------------------- */

/* ------------------------------------------------------------ JSON writer */

static void check_float_text(float v) {
    char fast[32], slow[32];
    size_t n = jw_fmt_float(v, fast);
    snprintf(slow, sizeof slow, "%.9g", (double)v);
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    ck_assert_msg(strcmp(fast, slow) == 0, "float 0x%08x: jw_fmt_float \"%s\", printf \"%s\"", (unsigned)bits, fast,
                  slow);
    ck_assert_uint_eq(n, strlen(slow));
}

static float float_of_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

START_TEST(test_jw_float_matches_printf) {
    static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 0.1f, 1e-4f, 1e-5f, 9.99999975e-05f,
                                    123456789.0f, 999999936.0f, 1e9f, 3e9f, FLT_MIN, FLT_MAX, FLT_TRUE_MIN,
                                    1e-36f, 1e-37f, 1e-38f, 0.999999940f, 0.99999994f, 2.56501448e-06f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        check_float_text(special[i]);
        check_float_text(-special[i]);
    }
    /* powers of ten and their neighbours, where the exponent estimate and
     * the carry into a tenth digit are decided */
    for (int p = -45; p <= 38; p++) {
        float v = (float)pow(10.0, p);
        check_float_text(v);
        check_float_text(nextafterf(v, 0.0f));
        check_float_text(nextafterf(v, INFINITY));
    }
    /* exact ties at the ninth digit: a / 2^(10+t) has 10 significant digits
     * ending in 5 when it lies in [10^-(t+1), 10^-t) and a is odd */
    for (int t = 0; t <= 5; t++)
        for (uint32_t a = 1; a < (1u << 14); a += 2) {
            double v = ldexp((double)a, -(10 + t));
            if (v >= pow(10.0, -(t + 1)) && v < pow(10.0, -t)) check_float_text((float)v);
        }
    /* random bit patterns (every finite float is a candidate) and random
     * probabilities in [0, 1] */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t b = (uint32_t)(x >> 32);
        if ((b >> 23 & 0xff) != 0xff) check_float_text(float_of_bits(b));
        check_float_text(float_of_bits((uint32_t)x % 0x3f800001u)); /* [0, 1] */
    }
}
END_TEST

/* The data URL of the echoed input decodes (server's own base64 decoder)
 * to exactly the PNG img_png_store_gray8 makes, for image sizes whose PNG
 * lengths leave each remainder mod 3. */
START_TEST(test_png_data_url) {
    int rem_seen[3] = {0, 0, 0};
    for (int w = 1; w <= 8; w++) {
        uint8_t px[16] = {0}, bin[512];
        for (int i = 0; i < w; i++) px[i] = (uint8_t)(i * 37);
        uint8_t *png = NULL;
        size_t len = 0, n = 0;
        ck_assert_int_eq(img_png_store_gray8(px, w, 1, &png, &len, NULL, 0), IMG_OK);
        rem_seen[len % 3] = 1;
        char *url = api_png_data_url(px, w, 1);
        ck_assert_ptr_nonnull(url);
        ck_assert(strncmp(url, "data:image/png;base64,", 22) == 0);
        ck_assert_uint_eq(strlen(url + 22), (len + 2) / 3 * 4);
        ck_assert_int_eq(px_b64_decode(url + 22, strlen(url + 22), bin, sizeof bin, &n), PX_OK);
        ck_assert_uint_eq(n, len);
        ck_assert(memcmp(bin, png, len) == 0);
        free(url);
        free(png);
    }
    ck_assert(rem_seen[0] && rem_seen[1] && rem_seen[2]);
}
END_TEST

/* jw_fmt_int prints what printf("%lld") prints: the ends of the range,
 * every power of ten and its neighbours, and pseudo-random values. */
static void check_int(long long v) {
    char fast[24], slow[32];
    size_t n = jw_fmt_int(v, fast);
    snprintf(slow, sizeof slow, "%lld", v);
    ck_assert_msg(n == strlen(slow) && memcmp(fast, slow, n) == 0, "%s: jw_fmt_int gave \"%.*s\"", slow, (int)n, fast);
}

START_TEST(test_jw_int_matches_printf) {
    static const long long ends[] = {0, 1, -1, 9, -9, LLONG_MAX, LLONG_MIN, LLONG_MIN + 1, LLONG_MAX - 1};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) check_int(ends[i]);
    for (long long p = 1; p <= LLONG_MAX / 10; p *= 10)
        for (long long d = -1; d <= 1; d++) check_int(p * 10 + d), check_int(-(p * 10 + d));
    unsigned long long x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        check_int((long long)x), check_int((long long)(x >> (i % 64)));
    }
}
END_TEST

START_TEST(test_jw_writer) {
    jw w;
    jw_init(&w, 0);
    jw_obj(&w);
    jw_key(&w, "a\"b\\c");
    jw_str(&w, "line\nfeed\ttab\x01 \x7f caf\xc3\xa9");
    jw_key(&w, "n");
    jw_arr(&w);
    jw_int(&w, -42);
    jw_float(&w, 0.25f);
    jw_float(&w, NAN);
    jw_bool(&w, 1);
    jw_bool(&w, 0);
    jw_obj(&w);
    jw_obj_end(&w);
    jw_arr(&w);
    jw_arr_end(&w);
    jw_arr_end(&w);
    jw_key(&w, "raw");
    jw_raw(&w, "{\"x\":1}", 7);
    char *p = jw_reserve(&w, 3);
    ck_assert_ptr_nonnull(p);
    memcpy(p, "\"z\"", 3);
    jw_commit(&w, 3);
    jw_obj_end(&w);
    size_t n;
    char *s = jw_take(&w, &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "{\"a\\\"b\\\\c\":\"line\\nfeed\\ttab\\u0001 \x7f caf\xc3\xa9\",\"n\":[-42,0.25,null,true,false,{},[]],"
                        "\"raw\":{\"x\":1},\"z\"}");
    ck_assert_uint_eq(n, strlen(s));
    free(s);
    /* a long answer grows the buffer and stays valid JSON */
    jw_init(&w, 16);
    jw_arr(&w);
    for (int i = 0; i < 5000; i++) jw_str(&w, "item");
    jw_arr_end(&w);
    s = jw_take(&w, &n);
    cJSON *j = cJSON_Parse(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetArraySize(j), 5000);
    cJSON_Delete(j);
    free(s);
    /* nothing written: an empty string, not NULL */
    jw_init(&w, 0);
    s = jw_take(&w, &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(n, 0);
    free(s);
}
END_TEST

START_TEST(test_torchserve) {
    srv_response r = get("/ping", NULL);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = body_json(&r);
    ck_assert_str_eq(str(j, "status"), "Healthy");
    cJSON_Delete(j);
    srv_response_free(&r);

    sbuf b = {0};
    mpart parts[] = {{"other", "b.png", png_b, png_b_len}, {"data", "a.png", png_a, png_a_len}};
    multipart(&b, parts, 2);
    for (int form = 0; form < 3; form++) {
        if (form == 2) r = call("POST", "/predictions/cnn1", NULL, MP_CT, b.s, b.len);
        else r = call(form ? "PUT" : "POST", "/predictions/cnn1", NULL, "application/octet-stream", png_a, png_a_len);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.route, "/predictions/{name}");
        ck_assert_str_eq(r.model, "cnn1");
        j = body_json(&r);
        ck_assert_int_eq(cJSON_GetArraySize(j), 5);
        double prev = 2;
        for (const cJSON *v = j->child; v; v = v->next) {
            int id = -1;
            for (int k = 0; k < 10; k++)
                if (strcmp(v->string, fm_class_names[k]) == 0) id = k;
            ck_assert_int_ge(id, 0);
            ck_assert(fabs(v->valuedouble - ref_a[id]) < 1e-6); /* the "data" field was used */
            ck_assert(v->valuedouble <= prev);
            prev = v->valuedouble;
        }
        cJSON_Delete(j);
        srv_response_free(&r);
    }
    free(b.s);
    r = call("POST", "/predictions/cnn1/1.0", NULL, NULL, png_a, png_a_len);
    ck_assert_int_eq(r.status, 200);
    srv_response_free(&r);
    r = call("POST", "/predictions/nope", NULL, NULL, png_a, png_a_len);
    expect_error(&r, 404);
    r = call("POST", "/predictions/cnn1", NULL, "text/plain", "hello", 5);
    expect_error(&r, 415);
    r = call("POST", "/predictions/cnn1", NULL, NULL, NULL, 0);
    expect_error(&r, 400);
}
END_TEST

static Suite *handlers_suite(void) {
    Suite *s = suite_create("handlers");
    TCase *tc = tcase_create("handlers");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, NULL, test_teardown);
    tcase_add_test(tc, test_healthz_readyz);
    tcase_add_test(tc, test_metrics);
    tcase_add_test(tc, test_methods_and_options);
    tcase_add_test(tc, test_cors);
    tcase_add_test(tc, test_unknown_routes);
    tcase_add_test(tc, test_classify_raw_png);
    tcase_add_test(tc, test_classify_query);
    tcase_add_test(tc, test_classify_multipart);
    tcase_add_test(tc, test_classify_json_forms);
    tcase_add_test(tc, test_classify_errors);
    tcase_add_test(tc, test_classify_json_errors);
    tcase_add_test(tc, test_json_depth);
    tcase_add_test(tc, test_models);
    tcase_add_test(tc, test_samples);
    tcase_add_test(tc, test_reports);
    tcase_add_test(tc, test_static);
    tcase_add_test(tc, test_kserve_meta);
    tcase_add_test(tc, test_kserve_infer);
    tcase_add_test(tc, test_kserve_errors);
    tcase_add_test(tc, test_tfs);
    tcase_add_test(tc, test_torchserve);
    tcase_add_test(tc, test_jw_float_matches_printf);
    tcase_add_test(tc, test_jw_int_matches_printf);
    tcase_add_test(tc, test_jw_writer);
    tcase_add_test(tc, test_png_data_url);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(handlers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int n_failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return n_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
