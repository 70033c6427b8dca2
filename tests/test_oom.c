/* test_oom.c - allocation failure injection in fmnist-serve's request path.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup
 * (and --wrap=free; tests/meson.build), so every allocation made by the server and engine
 * code (handlers, protocols, image decoding - libpng through its allocator
 * hooks, stb_image - parsing, registry workspaces, metrics) goes through
 * the __wrap_ functions below; cJSON, a shared library, is routed there by
 * cJSON_InitHooks.  For each request of a list covering every route that
 * allocates, the test runs the request with the Nth allocation failing, for
 * N = 1, 2, ... until a run in which no allocation failed, and checks each
 * answer: either the normal status, or 500/503 with a JSON {"error": ...}
 * body - never a crash, never another status, never a body that is not
 * JSON - and that every block allocated during the request was freed with
 * the response (free is wrapped too: a table of live blocks), so no
 * failure path leaks.
 *
 * One Check test per route family (each forks in Check's default mode). */

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fm_idx.h"
#include "fm_st.h"
#include "image.h"
#include "srv.h"
#include "srv_fixture.h"

/* ---- the injector ------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);

static long fail_at;   /* fail the allocation with this number (1-based); 0: never */
static long n_allocs;  /* allocations counted since arming */
static bool injected;  /* an allocation was failed in this run */

/* Live blocks allocated while tracking (open addressing; frees of blocks
 * allocated before, or by code not wrapped, are not in it and ignored). */
#define LIVE_SLOTS (1u << 18)
static void *live[LIVE_SLOTS];
static long n_live;
static bool tracking;
#define TOMB ((void *)1)

static size_t slot_of(const void *p) {
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 46) & (LIVE_SLOTS - 1);
}

static void live_add(void *p) {
    if (!tracking || !p) return;
    for (size_t i = slot_of(p);; i = (i + 1) & (LIVE_SLOTS - 1))
        if (live[i] == NULL || live[i] == TOMB) {
            live[i] = p;
            n_live++;
            return;
        }
}

static void live_del(void *p) {
    if (!p || n_live == 0) return;
    for (size_t i = slot_of(p), k = 0; live[i] != NULL && k < LIVE_SLOTS; i = (i + 1) & (LIVE_SLOTS - 1), k++)
        if (live[i] == p) {
            live[i] = TOMB;
            n_live--;
            return;
        }
}

static void live_reset(void) {
    memset(live, 0, sizeof live);
    n_live = 0;
}

static bool should_fail(void) {
    if (fail_at <= 0) return false;
    if (++n_allocs == fail_at) {
        injected = true;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n) {
    void *p = should_fail() ? NULL : __real_malloc(n);
    live_add(p);
    return p;
}

void *__wrap_calloc(size_t n, size_t sz) {
    void *p = should_fail() ? NULL : __real_calloc(n, sz);
    live_add(p);
    return p;
}

void *__wrap_realloc(void *p, size_t n) {
    if (should_fail()) return NULL;
    void *q = __real_realloc(p, n);
    if (q || n == 0) live_del(p);
    live_add(q);
    return q;
}

void __wrap_free(void *p) {
    live_del(p);
    __real_free(p);
}

char *__wrap_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = __wrap_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void *hook_malloc(size_t n) {
    return __wrap_malloc(n);
}

static void hook_free(void *p) {
    __wrap_free(p);
}

/* ---- fixture (smaller than test_handlers.c's; files by srv_fixture.c) ----- */

static char tmp_dir[PATH_MAX], weights_dir[PATH_MAX + 16], static_dir[PATH_MAX + 16];
static srv_config cfg;
static srv_registry registry;
static srv_ctx ctx;
static uint8_t sample_px[3 * FM_IMG_SIZE];
static uint8_t sample_lb[3] = {1, 2, 3};
static fm_dataset samples;
static uint8_t *png, *png_big;
static size_t png_len, png_big_len;

static void setup(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_oom.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
    snprintf(weights_dir, sizeof weights_dir, "%s/weights", tmp_dir);
    snprintf(static_dir, sizeof static_dir, "%s/static", tmp_dir);
    ck_assert_int_eq(mkdir(weights_dir, 0755), 0);
    ck_assert_int_eq(mkdir(static_dir, 0755), 0);
    fx_save_model(weights_dir, "mlp2", 1);
    fx_save_model(weights_dir, "cnn1", 2);
    fx_write_file(weights_dir, "mlp2.history.json", "{\"epochs\":[1,2,3]}\n");
    fx_write_file(static_dir, "index.html", "<!doctype html><title>fmnist</title>\n");

    srv_snap *snap;
    fm_error err;
    ck_assert_msg(srv_snap_load(&snap, weights_dir, "cnn1", 1, NULL, &err) == 0, "%s", err.msg);
    srv_registry_publish(&registry, snap);
    for (size_t i = 0; i < sizeof sample_px; i++) sample_px[i] = (uint8_t)(i * 13 % 256);
    samples = (fm_dataset){.n = 3, .rows = 28, .cols = 28, .pixels = sample_px, .labels = sample_lb};
    cfg = (srv_config){.host = "127.0.0.1", .weights_dir = weights_dir, .default_model = "cnn1",
                       .static_dir = static_dir, .max_body_bytes = 4 << 20, .max_batch = 4,
                       .max_pixels = IMG_DEFAULT_MAX_PIXELS};
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    ctx.registry = &registry;
    ctx.metrics = srv_metrics_create();
    ck_assert_ptr_nonnull(ctx.metrics);
    ck_assert_ptr_nonnull(realpath(static_dir, ctx.static_root));
    ctx.samples = &samples;

    uint8_t img[FM_IMG_SIZE], big[90 * 60];
    for (int i = 0; i < FM_IMG_SIZE; i++) img[i] = (i % 28 > 7 && i % 28 < 20 && i / 28 > 3) ? 200 : 0;
    for (int i = 0; i < 90 * 60; i++) big[i] = (i % 90 > 30 && i % 90 < 60 && i / 90 > 10 && i / 90 < 50) ? 20 : 240;
    ck_assert_int_eq(img_png_encode_gray8(img, 28, 28, &png, &png_len, NULL, 0), IMG_OK);
    ck_assert_int_eq(img_png_encode_gray8(big, 90, 60, &png_big, &png_big_len, NULL, 0), IMG_OK);
    cJSON_Hooks hooks = {hook_malloc, hook_free};
    cJSON_InitHooks(&hooks);
}

static void teardown(void) {
    fail_at = 0;
    srv_registry_shutdown(&registry);
    srv_thread_ws_free();
    srv_metrics_destroy(ctx.metrics);
    free(png);
    free(png_big);
    fx_remove_tree(tmp_dir);
}

/* ---- requests ----------------------------------------------------------- */

typedef struct body {
    char *s;
    size_t len;
} body;

static body text(const char *s) {
    return (body){strdup(s), strlen(s)};
}

static body bytes(const void *p, size_t n) {
    body b = {malloc(n ? n : 1), n};
    memcpy(b.s, p, n);
    return b;
}

static body multipart2(void) {
    size_t cap = 2 * png_len + 1024, k = 0;
    char *s = malloc(cap);
    for (int i = 0; i < 2; i++) {
        k += (size_t)snprintf(s + k, cap - k, "--XyZb\r\nContent-Disposition: form-data; name=\"f%d\"; "
                                              "filename=\"f%d.png\"\r\nContent-Type: image/png\r\n\r\n", i, i);
        memcpy(s + k, png, png_len);
        k += png_len;
        k += (size_t)snprintf(s + k, cap - k, "\r\n");
    }
    k += (size_t)snprintf(s + k, cap - k, "--XyZb--\r\n");
    return (body){s, k};
}

static body pixels_json(const char *prefix, const char *suffix) {
    size_t cap = strlen(prefix) + strlen(suffix) + FM_IMG_SIZE * 6 + 16, k = 0;
    char *s = malloc(cap);
    k += (size_t)snprintf(s, cap, "%s[", prefix);
    for (int i = 0; i < FM_IMG_SIZE; i++) k += (size_t)snprintf(s + k, cap - k, "%s%d", i ? "," : "", (i * 7) % 256);
    k += (size_t)snprintf(s + k, cap - k, "]%s", suffix);
    return (body){s, k};
}

static body b64_json(void) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t cap = png_len * 2 + 64, k = 0;
    char *s = malloc(cap);
    k += (size_t)snprintf(s, cap, "{\"instances\":[{\"b64\":\"");
    for (size_t i = 0; i < png_len; i += 3) {
        uint32_t v = (uint32_t)png[i] << 16 | (i + 1 < png_len ? (uint32_t)png[i + 1] << 8 : 0) |
                     (i + 2 < png_len ? png[i + 2] : 0);
        s[k++] = t[v >> 18 & 63];
        s[k++] = t[v >> 12 & 63];
        s[k++] = i + 1 < png_len ? t[v >> 6 & 63] : '=';
        s[k++] = i + 2 < png_len ? t[v & 63] : '=';
    }
    k += (size_t)snprintf(s + k, cap - k, "\"}]}");
    return (body){s, k};
}

/* Runs the request with allocation N failing for N = 1, 2, ... until a run
 * with no failure; checks every answer.  Returns the number of runs. */
static long sweep(const char *name, const char *method, const char *path, const char *query, const char *ct,
                  body b, int want) {
    srv_request req = {.method = method, .path = path, .query = query ? query : "", .content_type = ct,
                       .origin = NULL, .body = (const uint8_t *)b.s, .body_len = b.len};
    srv_response r;
    /* Warm-up: the thread's workspaces and any lazily made state exist. */
    srv_handle(&ctx, &req, &r);
    ck_assert_msg(r.status == want, "%s: normal run answered %d, expected %d: %.200s", name, r.status, want,
                  r.body ? r.body : "");
    srv_response_free(&r);
    long n;
    for (n = 1; n < 100000; n++) {
        live_reset();
        tracking = true;
        fail_at = n;
        n_allocs = 0;
        injected = false;
        srv_handle(&ctx, &req, &r);
        fail_at = 0;
        bool hit = injected;
        if (hit && r.status != want) {
            ck_assert_msg(r.status == 500 || r.status == 503, "%s: allocation %ld failed: status %d: %.200s", name, n,
                          r.status, r.body ? r.body : "");
            ck_assert_msg(r.body && r.content_type && strcmp(r.content_type, "application/json") == 0,
                          "%s: allocation %ld failed: %d without a JSON body", name, n, r.status);
            cJSON *j = cJSON_ParseWithLength(r.body, r.body_len);
            ck_assert_msg(j && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error")),
                          "%s: allocation %ld failed: body %.200s", name, n, r.body);
            cJSON_Delete(j);
        } else {
            ck_assert_msg(r.status == want, "%s: run %ld answered %d: %.200s", name, n, r.status,
                          r.body ? r.body : "");
        }
        srv_response_free(&r);
        tracking = false;
        ck_assert_msg(n_live == 0, "%s: allocation %ld failed: %ld blocks not freed", name, n, n_live);
        if (!hit) break;
    }
    free(b.s);
    fprintf(stderr, "%-28s %ld allocations failed one at a time\n", name, n - 1);
    return n;
}

START_TEST(test_classify) {
    ck_assert_int_gt(sweep("classify raw PNG", "POST", "/v1/classify", NULL, "image/png", bytes(png, png_len), 200), 5);
    sweep("classify 90x60 PNG, invert", "POST", "/v1/classify", "invert=auto&top=3", "image/png",
          bytes(png_big, png_big_len), 200);
    sweep("classify multipart", "POST", "/v1/classify", "model=mlp2", "multipart/form-data; boundary=XyZb",
          multipart2(), 200);
    sweep("classify JSON", "POST", "/v1/classify", NULL, "application/json",
          pixels_json("{\"instances\":[", "],\"scale\":255}"), 200);
    sweep("classify JSON b64", "POST", "/v1/classify", NULL, "application/json", b64_json(), 200);
}
END_TEST

START_TEST(test_protocols) {
    sweep("KServe infer", "POST", "/v2/models/cnn1/infer", NULL, "application/json",
          pixels_json("{\"id\":\"x\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],\"datatype\":\"UINT8\","
                      "\"data\":", "}]}"), 200);
    sweep("KServe metadata", "GET", "/v2/models/cnn1", NULL, NULL, (body){NULL, 0}, 200);
    sweep("TF predict", "POST", "/v1/models/mlp2:predict", NULL, "application/json",
          pixels_json("{\"instances\":[", "]}"), 400); /* 0..255 values are out of range for TF: 400 */
    sweep("TF predict b64", "POST", "/v1/models/mlp2:predict", NULL, "application/json", b64_json(), 200);
    sweep("TF metadata", "GET", "/v1/models/mlp2/metadata", NULL, NULL, (body){NULL, 0}, 200);
    sweep("TorchServe", "PUT", "/predictions/cnn1", NULL, "image/png", bytes(png, png_len), 200);
}
END_TEST

START_TEST(test_small_routes) {
    sweep("models", "GET", "/v1/models", NULL, NULL, (body){NULL, 0}, 200);
    sweep("samples", "GET", "/v1/samples", "count=2", NULL, (body){NULL, 0}, 200);
    sweep("metrics", "GET", "/metrics", NULL, NULL, (body){NULL, 0}, 200);
    sweep("report", "GET", "/v1/reports/mlp2.history.json", NULL, NULL, (body){NULL, 0}, 200);
    sweep("static", "GET", "/index.html", NULL, NULL, (body){NULL, 0}, 200);
    sweep("healthz", "GET", "/healthz", NULL, NULL, (body){NULL, 0}, 200);
    sweep("unknown model (404)", "POST", "/v1/classify", "model=nope", "image/png", bytes(png, png_len), 404);
    sweep("bad JSON (422)", "POST", "/v1/classify", NULL, "application/json", text("{\"instances\":\"x\"}"), 422);
    sweep("truncated PNG (400)", "POST", "/v1/classify", NULL, "image/png", bytes(png, png_len / 2), 400);
}
END_TEST

static Suite *oom_suite(void) {
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("oom");
    tcase_set_timeout(tc, 300);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_classify);
    tcase_add_test(tc, test_protocols);
    tcase_add_test(tc, test_small_routes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(oom_suite());
    srunner_run_all(sr, CK_NORMAL);
    int n_failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return n_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
