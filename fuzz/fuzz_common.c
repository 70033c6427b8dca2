/* fuzz_common.c - the srv_handle fixture shared by fuzz_json, fuzz_multipart
 * and fuzz_url; see fuzz_common.h. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* nftw, mkdtemp */
#endif

#include "fuzz_common.h"

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fm_arch.h"
#include "fm_idx.h"
#include "fm_rng.h"
#include "fm_st.h"
#include "image.h"

static char tmp_dir[PATH_MAX];
static char weights_dir[PATH_MAX + 16], static_dir[PATH_MAX + 16];
static srv_config cfg;
static srv_registry registry;
static srv_ctx ctx;
static int ready;
static uint8_t sample_px[5 * FM_IMG_SIZE];
static uint8_t sample_lb[5] = {9, 0, 1, 2, 3};
static fm_dataset samples;

static void die(const char *what, const char *why) {
    fprintf(stderr, "fuzz fixture: %s: %s\n", what, why ? why : "failed");
    abort();
}

static void put_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die("write", path);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void) {
    srv_registry_shutdown(&registry);
    srv_thread_ws_free();
    if (tmp_dir[0]) nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

srv_ctx *fuzz_ctx(void) {
    if (ready) return &ctx;
    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/fmnist-fuzz.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) die("mkdtemp", tmp_dir);
    atexit(cleanup);
    snprintf(weights_dir, sizeof weights_dir, "%s/weights", tmp_dir);
    snprintf(static_dir, sizeof static_dir, "%s/static", tmp_dir);
    char sub[PATH_MAX * 2];
    snprintf(sub, sizeof sub, "%s/css", static_dir);
    if (mkdir(weights_dir, 0755) || mkdir(static_dir, 0755) || mkdir(sub, 0755)) die("mkdir", tmp_dir);

    fm_arch a;
    fm_model m;
    fm_error err;
    fm_rng rng;
    char path[PATH_MAX * 2];
    if (fm_arch_named(&a, "mlp2", &err) || fm_model_init(&m, &a, &err)) die("model", err.msg);
    fm_rng_seed(&rng, 1);
    fm_arch_init_params(&m.arch, m.params, &rng);
    if (fm_model_set_meta(&m, "metrics", "{\"test_accuracy\":0.5}", &err)) die("meta", err.msg);
    snprintf(path, sizeof path, "%s/mlp2.safetensors", weights_dir);
    if (fm_st_save(&m, path, &err)) die("save", err.msg);
    fm_model_free(&m);

    put_file(weights_dir, "mlp2.history.json", "{\"epochs\":[1,2,3]}\n");
    put_file(weights_dir, "grid-mlp2.csv", "lr,acc\n0.1,0.5\n");
    put_file(weights_dir, "README.md", "# weights\n");
    put_file(tmp_dir, "secret.json", "{\"secret\":true}\n");
    put_file(static_dir, "index.html", "<!doctype html><title>fmnist</title>\n");
    put_file(static_dir, "app.js", "console.log('fmnist');\n");
    put_file(sub, "site.css", "body{}\n");
    put_file(static_dir, ".env", "SECRET=1\n");
    snprintf(path, sizeof path, "%s/out.html", static_dir);
    if (symlink("../secret.json", path)) die("symlink", path);
    snprintf(path, sizeof path, "%s/evil.history.json", weights_dir);
    if (symlink("../secret.json", path)) die("symlink", path);

    srv_snap *snap;
    if (srv_snap_load(&snap, weights_dir, "mlp2", 1, NULL, &err)) die("srv_snap_load", err.msg);
    srv_registry_publish(&registry, snap);

    for (size_t i = 0; i < sizeof sample_px; i++) sample_px[i] = (uint8_t)((i * 7 + i / 28) % 256);
    samples = (fm_dataset){.n = 5, .rows = 28, .cols = 28, .pixels = sample_px, .labels = sample_lb};

    cfg = (srv_config){.host = "127.0.0.1", .port = 0, .weights_dir = weights_dir, .default_model = "mlp2",
                       .static_dir = static_dir, .cors_origin = "*", .max_body_bytes = 1 << 20,
                       .max_batch = FUZZ_MAX_BATCH, .max_pixels = FUZZ_MAX_PIXELS};
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    ctx.registry = &registry;
    ctx.metrics = srv_metrics_create();
    if (!ctx.metrics) die("srv_metrics_create", NULL);
    if (!realpath(static_dir, ctx.static_root)) die("realpath", static_dir);
    ctx.samples = &samples;
    ready = 1;
    return &ctx;
}

void fuzz_handle(srv_ctx *c, const char *method, const char *path, const char *query,
                 const char *content_type, const uint8_t *body, size_t len) {
    srv_request req = {.method = method, .path = path, .query = query, .content_type = content_type,
                       .origin = "http://example.com", .body = len ? body : NULL, .body_len = len};
    srv_response r;
    srv_handle(c, &req, &r);
    if (r.status < 100 || r.status > 599 || !r.route || ((r.body || r.fd >= 0) && !r.content_type)) {
        fprintf(stderr, "bad response: status %d\n", r.status);
        abort();
    }
    if (r.status >= 400) {
        /* Every error is {"error": "..."}; a 405 also says what is allowed. */
        if (!r.body || r.body_len == 0 || r.fd >= 0 || strncmp(r.body, "{\"error\":", 9) != 0) {
            fprintf(stderr, "error %d without a JSON error body\n", r.status);
            abort();
        }
        cJSON *j = cJSON_ParseWithLength(r.body, r.body_len);
        if (!j || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error"))) {
            fprintf(stderr, "error %d: body is not {\"error\": string}: %.*s\n", r.status, (int)r.body_len, r.body);
            abort();
        }
        cJSON_Delete(j);
        if (r.status == 405 && !r.allow[0]) {
            fprintf(stderr, "405 without Allow\n");
            abort();
        }
    } else if (r.body && r.content_type && strncmp(r.content_type, "application/json", 16) == 0) {
        cJSON *j = cJSON_ParseWithLength(r.body, r.body_len);
        if (!j) {
            fprintf(stderr, "status %d: JSON reply does not parse: %.*s\n", r.status, (int)r.body_len, r.body);
            abort();
        }
        cJSON_Delete(j);
    }
    srv_response_free(&r);
}

char *fuzz_strndup(const uint8_t *data, size_t len) {
    char *s = malloc(len + 1);
    if (!s) abort();
    if (len) memcpy(s, data, len);
    s[len] = '\0';
    return s;
}
