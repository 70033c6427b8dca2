/* handlers.c - srv_handle(): routing, and the helpers every protocol shares
 * (JSON replies, model lookup, image and tensor decoding, inference), plus
 * the small routes: health, metrics, reports and static files.
 *
 * http.c hands over a complete srv_request (body already gathered under its
 * cap); everything here is a plain function over that struct, so the unit
 * tests drive every route without a socket.  The protocol-specific routes
 * live in api_native.c, api_kserve.c, api_tfs.c and api_torchserve.c.
 *
 * Left out: anything about connections, timeouts, headers other than those
 * in srv_response, and request logging/metrics (http.c records each finished
 * request under resp->route; we record inferences).
 *
 * Status codes (every error body is {"error": "<what is wrong and what to
 * do>"}, application/json, never HTML):
 *
 *   200  success
 *   204  OPTIONS (preflight): Allow lists the route's methods, no body
 *   400  bytes that cannot be read: empty body; malformed JSON (including
 *        the non-JSON literals NaN/Infinity and trailing garbage) or JSON
 *        nested deeper than 32 levels; malformed multipart; bad base64 or
 *        data: URL; a corrupt or truncated image; a bad query parameter
 *        (top, invert, offset, count, seed, model); a bad %-escape in the
 *        path; a report name outside the safe pattern.  On the KServe v2 and
 *        TF Serving routes 400 also covers every semantic error, because
 *        their specs say so (KServe: 400; TF Serving: INVALID_ARGUMENT).
 *   403  static path refused (dot segment, traversal, symlink out of root)
 *   404  unknown route, model (the message lists the loaded ones), model
 *        version (only "1" exists), report or static file
 *   405  method not allowed on the route; Allow lists the right ones
 *   413  more images/instances than --max-batch; an image over --max-pixels;
 *        more multipart parts or JSON values than --max-batch examples need
 *   415  a body that is neither an image (by its magic bytes, whatever the
 *        Content-Type) nor JSON nor multipart/form-data by Content-Type; an
 *        image (multipart file, b64) in a format we do not decode
 *   422  native API only (/v1/classify): well-formed JSON that means nothing
 *        we can run: not an object, "instances" missing, not an array or
 *        empty, an instance of the wrong shape or length, a value that is not
 *        a number, outside [0,1] (or [0,255] with "scale": 255), or so large
 *        it overflows (1e999), a "scale" other than 1 or 255
 *   500  an unexpected system error (opening a file that resolved)
 *   503  no model loaded, draining (/readyz, /v2/health/ready), out of memory,
 *        test set not loaded (/v1/samples), metrics disabled (/metrics)
 *
 * CORS policy: with cfg->cors_origin "*", every response carries "*".  With
 * one configured origin, every response carries it when the request has no
 * Origin header or its Origin equals it (case-insensitively); a request from
 * another origin gets no header, so the browser refuses it and learns
 * nothing.  OPTIONS answers 204 with Allow (and the CORS origin when on);
 * http.c adds Access-Control-Allow-Methods/-Headers for preflights. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "parse.h"

/* ================================================================ responses */

/* JSON string body of s (already valid UTF-8) into a new buffer. */
static char *json_quote(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *out = malloc(n * 6 + 3);
    if (!out) return NULL;
    size_t k = 0;
    out[k++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c == '\n') {
            out[k++] = '\\', out[k++] = 'n';
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, 7, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '"';
    out[k] = '\0';
    *len = k;
    return out;
}

void srv_error(srv_response *resp, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    api_utf8_sanitize(msg);
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->fd = -1; /* an error never carries a file (callers never open one first) */
    resp->file_size = 0;
    resp->cache_control[0] = '\0';
    resp->status = status;
    resp->content_type = "application/json";
    size_t qlen;
    char *q = json_quote(msg, &qlen);
    size_t cap = q ? qlen + 16 : 0;
    char *body = q ? malloc(cap) : NULL;
    if (body) {
        int n = snprintf(body, cap, "{\"error\":%s}", q);
        resp->body = body;
        resp->body_len = (size_t)n;
    } else { /* out of memory for the message: a short one, and say so */
        static const char oom[] = "{\"error\":\"out of memory; retry later\"}";
        resp->status = 503;
        resp->body = malloc(sizeof oom);
        if (resp->body) {
            memcpy(resp->body, oom, sizeof oom);
            resp->body_len = sizeof oom - 1;
        } /* else http.c sends the same text from a static buffer */
    }
    free(q);
}

void srv_response_free(srv_response *r) {
    if (!r) return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
}

cJSON *api_put(int *ok, cJSON *obj, const char *key, cJSON *item) {
    if (!item) {
        *ok = 0;
        return NULL;
    }
    /* The key is not copied (one allocation less per member; an answer has
     * ~60): it must outlive the tree, as literals and class names do. */
    if (!obj || !cJSON_AddItemToObjectCS(obj, key, item)) {
        cJSON_Delete(item);
        *ok = 0;
        return NULL;
    }
    return item;
}

cJSON *api_push(int *ok, cJSON *arr, cJSON *item) {
    if (!item) {
        *ok = 0;
        return NULL;
    }
    if (!arr || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        *ok = 0;
        return NULL;
    }
    return item;
}

void api_float_text(float v, char buf[32]) {
    if (isfinite(v))
        jw_fmt_float(v, buf);
    else
        memcpy(buf, "null", 5);
}

cJSON *api_float(float v) {
    char buf[32];
    api_float_text(v, buf);
    return cJSON_CreateRaw(buf);
}

cJSON *api_int(long long v) {
    char buf[24];
    buf[jw_fmt_int(v, buf)] = '\0'; /* at most 20 characters */
    return cJSON_CreateRaw(buf);
}

/* JSON text s[n] (malloc'd, taken) as the answer; NULL gives 503. */
static void reply_text(srv_response *resp, int status, char *s, size_t n) {
    if (!s) {
        srv_error(resp, 503, "out of memory while building the response; retry later");
        return;
    }
    free(resp->body);
    resp->body = s;
    resp->body_len = n;
    resp->status = status;
    resp->content_type = "application/json";
}

void api_reply(srv_response *resp, int status, cJSON *root, int ok) {
    /* 4 KiB up front: most answers are printed without regrowing */
    char *s = ok && root ? cJSON_PrintBuffered(root, 4096, 0) : NULL;
    cJSON_Delete(root);
    reply_text(resp, status, s, s ? strlen(s) : 0);
}

void api_reply_jw(srv_response *resp, int status, jw *w) {
    size_t n;
    char *s = jw_take(w, &n);
    reply_text(resp, status, s, n);
}

const char *api_json_type(const cJSON *v) {
    if (!v) return "missing";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

void api_clip(char *dst, size_t sz, const char *src) {
    size_t n = strnlen(src, sz - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void api_utf8_sanitize(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        size_t n = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7F) *p = '?';
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        int good = n > 0;
        for (size_t i = 1; good && i <= n; i++) {
            unsigned char d = p[i];
            if (i == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) good = 0;
        }
        if (!good) {
            *p++ = '?';
            continue;
        }
        p += n + 1;
    }
}

/* Pre-scan: depth and a count of separators outside strings, so a hostile
 * body can neither recurse deeply nor make cJSON allocate a node per byte
 * far beyond what a legitimate batch needs; and control bytes, which cJSON
 * would let through. */
static int json_prescan(const uint8_t *b, size_t len, size_t max_values, srv_response *resp) {
    size_t depth = 0, values = 0;
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = b[i];
        if (c < 0x20 && (in_str || (c != ' ' && c != '\t' && c != '\r' && c != '\n'))) {
            /* cJSON takes every byte <= 0x20 for white space (a NUL too)
             * and raw control bytes inside strings; JSON allows neither. */
            srv_error(resp, 400, "malformed JSON: control byte 0x%02x at byte %zu %s", c, i,
                      in_str ? "inside a string (escape it)" : "(only space, tab, CR and LF separate values)");
            return -1;
        }
        if (in_str) {
            if (esc) esc = 0;
            else if (c == '\\') esc = 1;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '[' || c == '{') {
            if (++depth > API_JSON_MAX_DEPTH) {
                srv_error(resp, 400, "JSON nested deeper than %d levels (at byte %zu); an instance needs at most 4",
                          API_JSON_MAX_DEPTH, i);
                return -1;
            }
        } else if (c == ']' || c == '}') {
            if (depth > 0) depth--;
        } else if (c == ',' || c == ':') {
            if (++values > max_values) {
                srv_error(resp, 413, "the JSON body holds more values than %zu examples (--max-batch) can use; "
                          "send fewer instances per request", max_values / (FM_IMG_SIZE + 64));
                return -1;
            }
        }
    }
    return 0;
}

/* cJSON_Parse answers NULL for bad JSON and for a failed allocation alike;
 * these hooks tell the two apart (a failed allocation is a 503, not a 400). */
static _Thread_local int json_alloc_failed;

static void *json_malloc(size_t n) {
    void *p = malloc(n);
    if (!p) json_alloc_failed = 1;
    return p;
}

static void json_free(void *p) {
    free(p);
}

static void json_hooks_init(void) {
    cJSON_Hooks h = {json_malloc, json_free};
    cJSON_InitHooks(&h);
}

int api_parse_json(const srv_ctx *ctx, const srv_request *req, cJSON **out, srv_response *resp) {
    static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
    pthread_once(&hooks_once, json_hooks_init);
    *out = NULL;
    if (!req->body || req->body_len == 0) {
        srv_error(resp, 400, "empty body: send a JSON object");
        return -1;
    }
    size_t max_values = api_max_batch(ctx) * (FM_IMG_SIZE + 64) + 4096;
    if (json_prescan(req->body, req->body_len, max_values, resp)) return -1;
    const char *end = NULL;
    json_alloc_failed = 0;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)req->body, req->body_len, &end, 0);
    size_t off = end ? (size_t)(end - (const char *)req->body) : 0;
    if (!root && json_alloc_failed) {
        srv_error(resp, 503, "out of memory parsing the JSON body; retry later");
        return -1;
    }
    if (!root) {
        if (off > req->body_len) off = req->body_len;
        srv_error(resp, 400, "malformed JSON near byte %zu (NaN and Infinity are not JSON; send numbers)", off);
        return -1;
    }
    for (size_t i = off; i < req->body_len; i++) {
        uint8_t c = req->body[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            cJSON_Delete(root);
            srv_error(resp, 400, "malformed JSON: unexpected bytes after the value at byte %zu", i);
            return -1;
        }
    }
    *out = root;
    return 0;
}

/* ============================================================ models, query */

size_t api_max_batch(const srv_ctx *ctx) {
    return ctx->cfg && ctx->cfg->max_batch ? ctx->cfg->max_batch : 256;
}

static void model_list(const srv_snap *snap, char *buf, size_t sz) {
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; snap && i < snap->n_models && k + 1 < sz; i++) {
        int n = snprintf(buf + k, sz - k, "%s%s", i ? ", " : "", snap->models[i].name);
        if (n < 0) break;
        k += (size_t)n;
    }
}

const srv_model *api_find_model(const srv_snap *snap, const char *name, srv_response *resp) {
    if (!snap || snap->n_models == 0) {
        srv_error(resp, 503, "no model is loaded; put a .safetensors file in the weights directory and send SIGHUP");
        return NULL;
    }
    const srv_model *m = srv_snap_find(snap, name);
    if (!m) {
        char list[768], shown[80];
        model_list(snap, list, sizeof list);
        api_clip(shown, sizeof shown, name);
        srv_error(resp, 404, "unknown model '%s'; available models: %s (GET /v1/models lists them)", shown, list);
        return NULL;
    }
    snprintf(resp->model, sizeof resp->model, "%s", m->name);
    return m;
}

int api_check_version(const srv_model *m, const char *version, srv_response *resp) {
    if (!version || strcmp(version, API_VERSION) == 0) return 0;
    char shown[40];
    api_clip(shown, sizeof shown, version);
    srv_error(resp, 404, "model '%s' has no version '%s'; the only version is \"1\"", m->name, shown);
    return -1;
}

int api_query_model(const srv_request *req, char *buf, size_t bufsz, srv_response *resp) {
    int rc = px_query_get(req->query ? req->query : "", "model", buf, bufsz);
    if (rc == PX_OK || rc == PX_ENOTFOUND) {
        if (rc == PX_ENOTFOUND) buf[0] = '\0';
        return 0;
    }
    if (rc == PX_ETOOLONG) {
        srv_error(resp, 404, "unknown model: the name in ?model= is too long (GET /v1/models lists the models)");
        return -1;
    }
    srv_error(resp, 400, "bad ?model= parameter: %s", px_strerror(rc));
    return -1;
}

int api_query_top(const srv_request *req, int def, int *top, srv_response *resp) {
    char v[32];
    int rc = px_query_get(req->query ? req->query : "", "top", v, sizeof v);
    *top = def;
    if (rc == PX_ENOTFOUND) return 0;
    if (rc == PX_OK && px_parse_int(v, 1, API_MAX_TOP, top) == PX_OK) return 0;
    srv_error(resp, 400, "bad ?top= parameter: expected an integer from 1 to %d", API_MAX_TOP);
    return -1;
}

int api_query_invert(const srv_request *req, img_invert *mode, srv_response *resp) {
    char v[16];
    int rc = px_query_get(req->query ? req->query : "", "invert", v, sizeof v);
    *mode = IMG_INVERT_AUTO;
    if (rc == PX_ENOTFOUND) return 0;
    if (rc == PX_OK) {
        if (strcasecmp(v, "auto") == 0) return 0;
        if (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0) return *mode = IMG_INVERT_ON, 0;
        if (strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0) return *mode = IMG_INVERT_OFF, 0;
    }
    srv_error(resp, 400, "bad ?invert= parameter: expected auto, true or false");
    return -1;
}

/* ================================================================ inference */

int api_inputs_init(api_inputs *in, size_t cap, srv_response *resp) {
    memset(in, 0, sizeof *in);
    if (cap == 0) cap = 1;
    in->cap = cap;
    in->x = calloc(cap * FM_IMG_SIZE, sizeof *in->x);
    in->probs = calloc(cap * FM_N_CLASSES, sizeof *in->probs);
    in->classes = calloc(cap, sizeof *in->classes);
    in->items = calloc(cap, sizeof *in->items);
    if (!in->x || !in->probs || !in->classes || !in->items) {
        api_inputs_free(in);
        srv_error(resp, 503, "out of memory for %zu inputs; retry later or send fewer", cap);
        return -1;
    }
    return 0;
}

void api_inputs_free(api_inputs *in) {
    free(in->x);
    free(in->probs);
    free(in->classes);
    free(in->items);
    memset(in, 0, sizeof *in);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int api_infer(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, api_inputs *in, srv_response *resp) {
    const fm_arch *a = &m->m.arch;
    if ((size_t)a->in_c * (size_t)a->in_h * (size_t)a->in_w != FM_IMG_SIZE) {
        srv_error(resp, 500, "model '%s' expects a %dx%dx%d input, not 1x28x28; it cannot be served", m->name,
                  a->in_c, a->in_h, a->in_w);
        return -1;
    }
    fm_ws *ws = srv_thread_ws(snap, m);
    if (!ws) {
        srv_error(resp, 503, "out of memory for the workspace of model '%s'; retry later", m->name);
        return -1;
    }
    double t0 = now_s();
    fm_model_predict(&m->m, ws, in->x, in->n, in->probs);
    double dt = now_s() - t0;
    for (size_t i = 0; i < in->n; i++) {
        const float *p = in->probs + i * FM_N_CLASSES;
        int best = 0;
        for (int k = 1; k < FM_N_CLASSES; k++)
            if (p[k] > p[best]) best = k;
        in->classes[i] = best;
    }
    if (ctx->metrics) srv_metrics_inference(ctx->metrics, m->name, in->n, dt, in->classes);
    return 0;
}

void api_rank(const float p[FM_N_CLASSES], int order[FM_N_CLASSES]) {
    for (int i = 0; i < FM_N_CLASSES; i++) order[i] = i;
    for (int i = 1; i < FM_N_CLASSES; i++) { /* insertion sort: stable, so ties keep index order */
        int v = order[i], j = i;
        while (j > 0 && p[order[j - 1]] < p[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

/* =========================================================== input decoding */

int api_img_http(int st) {
    switch (st) {
    case IMG_UNKNOWN_FORMAT: return 415;
    case IMG_TOO_LARGE: return 413;
    case IMG_NOMEM: return 503;
    default: return 400;
    }
}

int api_decode_image(const srv_ctx *ctx, const uint8_t *data, size_t len, img_invert mode, api_inputs *in,
                     size_t i, const char *what, srv_response *resp) {
    char err[256];
    api_item *it = &in->items[i];
    size_t max_pixels = ctx->cfg ? ctx->cfg->max_pixels : 0;
    int st = img_to_input(data, len, max_pixels, mode, in->x + i * FM_IMG_SIZE, &it->info, err, sizeof err);
    if (st != IMG_OK) {
        if (st == IMG_UNKNOWN_FORMAT)
            srv_error(resp, 415, "%s: %s (supported: PNG, JPEG, BMP, GIF, PNM)", what, err);
        else
            srv_error(resp, api_img_http(st), "%s: %s", what, err);
        return -1;
    }
    it->is_image = 1;
    return 0;
}

int api_decode_b64_image(const srv_ctx *ctx, const char *text, img_invert mode, api_inputs *in, size_t i,
                         const char *what, srv_response *resp) {
    const char *payload;
    size_t plen;
    if (px_strip_data_url(text, strlen(text), &payload, &plen, NULL, NULL) != PX_OK) {
        srv_error(resp, 400, "%s: a data: URL must look like data:image/png;base64,<data>", what);
        return -1;
    }
    size_t cap = px_b64_decoded_max(plen);
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) {
        srv_error(resp, 503, "%s: out of memory decoding base64; retry later", what);
        return -1;
    }
    size_t n = 0;
    int rc = px_b64_decode(payload, plen, buf, cap ? cap : 1, &n);
    if (rc != PX_OK) {
        free(buf);
        srv_error(resp, 400, "%s: invalid base64 (%s)", what, px_strerror(rc));
        return -1;
    }
    rc = api_decode_image(ctx, buf, n, mode, in, i, what, resp);
    free(buf);
    return rc;
}

/* A multipart part is an image input when it is a non-empty file, or a
 * plain field whose bytes are an image.  Other fields are ignored. */
static int part_is_image(const px_part *p) {
    if (p->data_len == 0) return 0;
    return p->filename != NULL || img_sniff(p->data, p->data_len) != IMG_FMT_UNKNOWN;
}


static void part_filename(const px_part *p, api_item *it) {
    if (!p->filename) return;
    size_t len = 0;
    if (px_unquote(p->filename, p->filename_len, it->filename, sizeof it->filename, &len) != PX_OK) {
        size_t n = p->filename_len < sizeof it->filename - 1 ? p->filename_len : sizeof it->filename - 1;
        memcpy(it->filename, p->filename, n); /* too long: keep the raw start */
        it->filename[n] = '\0';
    }
    api_utf8_sanitize(it->filename);
    it->has_filename = 1;
}

static int read_multipart(const srv_ctx *ctx, const srv_request *req, img_invert mode, const char *field,
                          api_inputs *in, srv_response *resp) {
    char boundary[PX_BOUNDARY_MAX + 1], err[256];
    int rc = px_multipart_boundary(req->content_type, boundary, sizeof boundary);
    if (rc != PX_OK) {
        srv_error(resp, 400, "multipart/form-data needs a valid boundary parameter in Content-Type (%s)",
                  px_strerror(rc));
        return -1;
    }
    size_t max_batch = api_max_batch(ctx), max_parts = max_batch + 16;
    px_part *parts = malloc(max_parts * sizeof *parts);
    if (!parts) {
        srv_error(resp, 503, "out of memory reading the multipart body; retry later");
        return -1;
    }
    size_t n_parts = 0;
    err[0] = '\0';
    rc = px_multipart_parse(req->body, req->body_len, boundary, parts, max_parts, &n_parts, err, sizeof err);
    if (rc != PX_OK) {
        free(parts);
        if (rc == PX_ETOOMANY)
            srv_error(resp, 413, "the multipart form has more than %zu parts; send at most %zu images (--max-batch)",
                      max_parts, max_batch);
        else
            srv_error(resp, 400, "malformed multipart body: %s", err[0] ? err : px_strerror(rc));
        return -1;
    }
    /* Which parts: with field, the first image part of that name (else the
     * first image part at all); without, every image part in order. */
    size_t n = 0, pick = n_parts;
    for (size_t i = 0; i < n_parts; i++) {
        if (!part_is_image(&parts[i])) continue;
        n++;
        if (field && pick == n_parts) pick = i;
        if (field && parts[i].name_len == strlen(field) && memcmp(parts[i].name, field, parts[i].name_len) == 0) {
            pick = i;
            break;
        }
    }
    if (n == 0) {
        free(parts);
        srv_error(resp, 400, "the multipart form holds no image file; send one as a file field "
                  "(curl -F file=@shoe.png)");
        return -1;
    }
    if (field) n = 1;
    if (n > max_batch) {
        free(parts);
        srv_error(resp, 413, "%zu images in one request; the limit is %zu (--max-batch)", n, max_batch);
        return -1;
    }
    if (api_inputs_init(in, n, resp)) {
        free(parts);
        return -1;
    }
    for (size_t i = 0; i < n_parts && in->n < n; i++) {
        if (field ? i != pick : !part_is_image(&parts[i])) continue;
        api_item *it = &in->items[in->n];
        part_filename(&parts[i], it);
        char what[320];
        if (it->has_filename)
            snprintf(what, sizeof what, "file '%.200s' (part %zu)", it->filename, i + 1);
        else
            snprintf(what, sizeof what, "part %zu", i + 1);
        if (api_decode_image(ctx, parts[i].data, parts[i].data_len, mode, in, in->n, what, resp)) {
            free(parts);
            api_inputs_free(in);
            return -1;
        }
        in->n++;
    }
    free(parts);
    return 0;
}

int api_read_images(const srv_ctx *ctx, const srv_request *req, img_invert mode, const char *field,
                    api_inputs *in, srv_response *resp) {
    memset(in, 0, sizeof *in);
    if (!req->body || req->body_len == 0) {
        srv_error(resp, 400, "empty body: send an image (curl --data-binary @shoe.png), a multipart form with "
                  "image files, or JSON {\"instances\": [...]}");
        return -1;
    }
    if (px_content_type_is(req->content_type, "multipart/form-data"))
        return read_multipart(ctx, req, mode, field, in, resp);
    if (img_sniff(req->body, req->body_len) == IMG_FMT_UNKNOWN) return 1;
    if (api_inputs_init(in, 1, resp)) return -1;
    if (api_decode_image(ctx, req->body, req->body_len, mode, in, 0, "image", resp)) {
        api_inputs_free(in);
        return -1;
    }
    in->n = 1;
    return 0;
}

/* Fills out from a rectangular nested array of shape dims[0..nd). */
static int tensor_fill(const cJSON *v, const int *dims, int nd, int level, double scale, float *out, size_t *k,
                       const char *what, int bad, srv_response *resp) {
    if (level == nd) {
        if (!cJSON_IsNumber(v)) {
            srv_error(resp, bad, "%s: value %zu is %s %s, expected a number", what, *k,
                      cJSON_IsArray(v) || cJSON_IsObject(v) ? "an" : "a", api_json_type(v));
            return -1;
        }
        double d = v->valuedouble;
        if (!isfinite(d) || d < 0.0 || d > scale) {
            srv_error(resp, bad, "%s: value %zu is %.6g, outside [0, %g]%s", what, *k, d, scale,
                      scale == 1.0 ? " (send \"scale\": 255 with 0-255 pixels)" : "");
            return -1;
        }
        out[(*k)++] = scale == 1.0 ? (float)d : (float)d / 255.0f;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != dims[level]) {
        srv_error(resp, bad, "%s: ragged array: expected %d elements at depth %d, found %s", what, dims[level],
                  level + 1, cJSON_IsArray(v) ? "a different count" : api_json_type(v));
        return -1;
    }
    for (const cJSON *c = v->child; c; c = c->next)
        if (tensor_fill(c, dims, nd, level + 1, scale, out, k, what, bad, resp)) return -1;
    return 0;
}

int api_read_tensor(const cJSON *v, double scale, float out[FM_IMG_SIZE], const char *what, int bad,
                    srv_response *resp) {
    int dims[4], nd = 0;
    const cJSON *c = v;
    while (cJSON_IsArray(c) && nd < 4) {
        dims[nd++] = cJSON_GetArraySize(c);
        c = c->child;
    }
    int shape_ok = (nd == 1 && dims[0] == FM_IMG_SIZE) || (nd == 2 && dims[0] == FM_IMG_H && dims[1] == FM_IMG_W) ||
                   (nd == 3 && dims[0] == 1 && dims[1] == FM_IMG_H && dims[2] == FM_IMG_W) ||
                   (nd == 2 && dims[0] == 1 && dims[1] == FM_IMG_SIZE);
    if (!cJSON_IsArray(v) || !shape_ok || cJSON_IsArray(c)) {
        char shape[64] = "";
        size_t k = 0;
        for (int i = 0; i < nd && k < sizeof shape - 12; i++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%d", i ? "x" : "", dims[i]);
        srv_error(resp, bad, "%s: expected 784 numbers or a 28x28 array (also 1x28x28), got %s%s", what,
                  nd ? "an array of shape " : api_json_type(v), nd ? (cJSON_IsArray(c) ? "deeper than 3" : shape) : "");
        return -1;
    }
    size_t k = 0;
    return tensor_fill(v, dims, nd, 0, scale, out, &k, what, bad, resp);
}

int api_read_instance(const srv_ctx *ctx, const cJSON *v, double scale, img_invert mode, api_inputs *in,
                      size_t i, const char *what, int bad, srv_response *resp) {
    for (int wrap = 0; wrap < 2; wrap++) {
        if (cJSON_IsArray(v)) return api_read_tensor(v, scale, in->x + i * FM_IMG_SIZE, what, bad, resp);
        if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) != 1) break;
        const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(v, "b64");
        if (b64) {
            if (!cJSON_IsString(b64)) {
                srv_error(resp, bad, "%s: \"b64\" must be a string of base64 image data, not %s", what,
                          api_json_type(b64));
                return -1;
            }
            return api_decode_b64_image(ctx, b64->valuestring, mode, in, i, what, resp);
        }
        v = cJSON_GetObjectItemCaseSensitive(v, "input");
        if (!v || wrap) break;
    }
    srv_error(resp, bad, "%s: expected 784 numbers, a 28x28 array, or {\"b64\": \"<base64 image>\"}", what);
    return -1;
}

int api_read_scale(const cJSON *root, double *scale, int bad, srv_response *resp) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "scale");
    *scale = 1.0;
    if (!s) return 0;
    if (cJSON_IsNumber(s) && (s->valuedouble == 1.0 || s->valuedouble == 255.0)) {
        *scale = s->valuedouble;
        return 0;
    }
    srv_error(resp, bad, "\"scale\" must be 1 (values in [0,1]) or 255 (pixels 0-255)");
    return -1;
}

/* ========================================================== reply pieces */

/* base64 of data[len] into out (4 * ceil(len / 3) bytes); returns that count. */
static size_t b64_encode(const uint8_t *data, size_t len, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0, i = 0;
    for (; i + 3 <= len; i += 3) { /* whole groups: no tests */
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[k++] = tab[v >> 18 & 63];
        out[k++] = tab[v >> 12 & 63];
        out[k++] = tab[v >> 6 & 63];
        out[k++] = tab[v & 63];
    }
    for (; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        out[k++] = tab[v >> 18 & 63];
        out[k++] = tab[v >> 12 & 63];
        out[k++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        out[k++] = i + 2 < len ? tab[v & 63] : '=';
    }
    return k;
}

#define PNG_URL_PREFIX "data:image/png;base64,"

/* Bytes of the data URL of a len-byte PNG (no NUL). */
static size_t png_url_size(size_t len) { return strlen(PNG_URL_PREFIX) + (len + 2) / 3 * 4; }

/* "data:image/png;base64,..." of png[len] into out (png_url_size(len)
 * bytes, no NUL); returns that length. */
static size_t png_url_write(const uint8_t *png, size_t len, char *out) {
    size_t pre = strlen(PNG_URL_PREFIX);
    memcpy(out, PNG_URL_PREFIX, pre);
    return pre + b64_encode(png, len, out + pre);
}

char *api_png_data_url(const uint8_t *px, int w, int h) {
    uint8_t *png = NULL;
    size_t len = 0;
    if (img_png_store_gray8(px, w, h, &png, &len, NULL, 0) != IMG_OK) return NULL;
    char *url = malloc(png_url_size(len) + 1);
    if (url) url[png_url_write(png, len, url)] = '\0';
    free(png);
    return url;
}

/* The same URL written as a JSON string value straight into w (base64 needs
 * no escaping); 0, or -1 when the PNG could not be made (nothing written). */
static int png_data_url_jw(jw *w, const uint8_t *px, int wd, int ht) {
    uint8_t *png = NULL;
    size_t len = 0;
    if (img_png_store_gray8(px, wd, ht, &png, &len, NULL, 0) != IMG_OK) return -1;
    char *out = jw_reserve(w, png_url_size(len) + 2);
    if (out) {
        out[0] = '"';
        size_t n = 1 + png_url_write(png, len, out + 1);
        out[n++] = '"';
        jw_commit(w, n);
    }
    free(png);
    return 0;
}

int api_preprocessing(jw *w, const api_item *it, const float x[FM_IMG_SIZE]) {
    const img_info *f = &it->info;
    jw_obj(w);
    jw_key(w, "format");
    jw_str(w, f->format ? f->format : "unknown");
    jw_key(w, "width");
    jw_int(w, (long long)f->width);
    jw_key(w, "height");
    jw_int(w, (long long)f->height);
    jw_key(w, "channels");
    jw_int(w, f->channels);
    jw_key(w, "has_alpha");
    jw_bool(w, f->has_alpha);
    jw_key(w, "trimmed");
    jw_bool(w, f->trimmed);
    jw_key(w, "resized");
    jw_bool(w, f->resized);
    jw_key(w, "inverted");
    jw_bool(w, f->inverted);
    jw_key(w, "background");
    jw_float(w, f->background);
    uint8_t g[FM_IMG_SIZE];
    img_input_to_gray8(x, g);
    jw_key(w, "input_png");
    int rc = png_data_url_jw(w, g, FM_IMG_W, FM_IMG_H);
    jw_obj_end(w);
    return rc;
}

/* ================================================================ routing */

/* 1 when method is one of the comma-separated tokens of allow. */
static int method_in(const char *method, const char *allow) {
    size_t ml = strlen(method);
    const char *p = allow;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        size_t n = strcspn(p, ", ");
        if (n == ml && n > 0 && strncmp(p, method, n) == 0) return 1;
        p += n;
    }
    return 0;
}

/* Applies a route's method list: 1 = go on; 0 = answered (OPTIONS 204 or 405). */
static int allowed(const srv_request *req, srv_response *resp, const char *allow) {
    if (strcmp(req->method, "OPTIONS") == 0) {
        resp->status = 204;
        resp->content_type = NULL; /* no body */
        snprintf(resp->allow, sizeof resp->allow, "%s", allow);
        return 0;
    }
    if (method_in(req->method, allow)) return 1;
    char m[24];
    api_clip(m, sizeof m, req->method);
    srv_error(resp, 405, "method %s is not allowed on %s; use %s", m, resp->route, allow);
    snprintf(resp->allow, sizeof resp->allow, "%s", allow);
    return 0;
}

#define ALLOW_GET "GET, HEAD, OPTIONS"
#define ALLOW_POST "POST, OPTIONS"
#define ALLOW_POST_PUT "POST, PUT, OPTIONS"

static void set_cors(const srv_ctx *ctx, const srv_request *req, srv_response *resp) {
    const char *conf = ctx->cfg ? ctx->cfg->cors_origin : NULL;
    if (!conf || !*conf || strlen(conf) >= sizeof resp->cors_origin) return;
    if (strcmp(conf, "*") != 0 && req->origin && strcasecmp(req->origin, conf) != 0) return;
    snprintf(resp->cors_origin, sizeof resp->cors_origin, "%s", conf);
}

/* Splits s (modified) on '/' into at most max segments; -1 on an empty
 * segment or too many. */
static int split(char *s, char **seg, int max) {
    int n = 0;
    for (char *p = s;;) {
        char *slash = strchr(p, '/');
        if (slash) *slash = '\0';
        if (!*p || n == max) return -1;
        seg[n++] = p;
        if (!slash) return n;
        p = slash + 1;
    }
}

static void no_route(srv_response *resp, const char *path) {
    char shown[160];
    api_clip(shown, sizeof shown, path);
    srv_error(resp, 404, "no such route: %s (API: /v1/classify, /v1/models, /v1/samples, /v2/models/{name}/infer, "
              "/v1/models/{name}:predict, /predictions/{name}, /healthz)", shown);
}

/* ------------------------------------------------------- the small routes */

static void reply_status(srv_response *resp, int status, const char *key, const char *value) {
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, key, cJSON_CreateString(value));
    api_reply(resp, status, o, ok);
}

static void h_readyz(srv_ctx *ctx, const srv_snap *snap, srv_response *resp) {
    int ok = 1, draining = atomic_load(&ctx->draining);
    size_t n = snap ? snap->n_models : 0;
    cJSON *o = cJSON_CreateObject();
    if (n > 0 && !draining) {
        api_put(&ok, o, "status", cJSON_CreateString("ready"));
        api_put(&ok, o, "models", cJSON_CreateNumber((double)n));
        api_put(&ok, o, "generation", cJSON_CreateNumber((double)snap->generation));
        api_reply(resp, 200, o, ok);
        return;
    }
    api_put(&ok, o, "status", cJSON_CreateString(draining ? "draining" : "no models"));
    api_put(&ok, o, "error", cJSON_CreateString(draining ? "shutting down: finishing in-flight requests"
                                                         : "no model is loaded; add weights and send SIGHUP"));
    api_reply(resp, 503, o, ok);
}

static void h_metrics(srv_ctx *ctx, srv_response *resp) {
    if (!ctx->metrics) {
        srv_error(resp, 503, "metrics are not enabled in this server");
        return;
    }
    size_t len = 0;
    char *s = srv_metrics_render(ctx->metrics, &len);
    if (!s) {
        srv_error(resp, 503, "out of memory rendering metrics; retry later");
        return;
    }
    resp->status = 200;
    resp->body = s;
    resp->body_len = len;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* Opens a path px_static_resolve returned and puts it in resp. */
/* Opens a file to send.  Its ETag is made of size, modification time and
 * inode; when the client's If-None-Match lists it, the answer is 304 with
 * no body (the file is not kept open).  Returns 0 when resp is ready to
 * queue (200 with the file, or 304), -1 after an error response. */
static int open_file(const char *path, const srv_request *req, srv_response *resp) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (fd >= 0) close(fd);
        if (fd >= 0 || e == ELOOP || e == EACCES)
            srv_error(resp, 403, "refused: not a readable regular file");
        else if (e == ENOENT)
            srv_error(resp, 404, "no such file");
        else
            srv_error(resp, 500, "cannot open the file: %s", strerror(e));
        return -1;
    }
    snprintf(resp->etag, sizeof resp->etag, "\"%llx-%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec,
             (unsigned long long)st.st_ino);
    if (req->if_none_match && (strstr(req->if_none_match, resp->etag) || strcmp(req->if_none_match, "*") == 0)) {
        close(fd);
        resp->status = 304;
        return 0;
    }
    resp->status = 200;
    resp->fd = fd;
    resp->file_size = (uint64_t)st.st_size;
    return 0;
}

static void resolve_error(srv_response *resp, int rc, const char *what, const char *shown) {
    int st = px_http_status(rc);
    if (st == 404)
        srv_error(resp, 404, "%s not found: %s", what, shown);
    else if (st == 403)
        srv_error(resp, 403, "%s refused: %s (dot segments, traversal and links out of the directory are not served)",
                  what, shown);
    else if (st == 500)
        srv_error(resp, 500, "%s: %s", what, px_strerror(rc));
    else
        srv_error(resp, st, "bad %s path: %s (%s)", what, shown, px_strerror(rc));
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int report_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > 128 || !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'))) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return 0;
    }
    return strstr(name, "..") == NULL;
}

static void h_report(srv_ctx *ctx, const srv_request *req, srv_response *resp, const char *name) {
    if (!allowed(req, resp, ALLOW_GET)) return;
    char shown[160];
    api_clip(shown, sizeof shown, name);
    if (!report_name_ok(name)) {
        srv_error(resp, 400, "bad report name '%s': letters, digits, '-', '_' and '.', starting with a letter", shown);
        return;
    }
    const char *type = NULL;
    if (ends_with(name, ".history.json") || ends_with(name, ".eval.json")) type = "application/json";
    else if (strncmp(name, "grid-", 5) == 0 && ends_with(name, ".md")) type = "text/markdown; charset=utf-8";
    else if (strncmp(name, "grid-", 5) == 0 && ends_with(name, ".csv")) type = "text/csv; charset=utf-8";
    else if (strcmp(name, "eda-samples.png") == 0) type = "image/png";
    else if (strcmp(name, "eda.json") == 0) type = "application/json";
    else if (strcmp(name, "README.md") == 0) type = "text/markdown; charset=utf-8";
    if (!type) {
        srv_error(resp, 404, "'%s' is not a report; reports are NAME.history.json, NAME.eval.json, grid-*.md, "
                  "grid-*.csv, eda.json, eda-samples.png and README.md", shown);
        return;
    }
    const char *dir = ctx->cfg && ctx->cfg->weights_dir ? ctx->cfg->weights_dir : "weights";
    char root[PATH_MAX], url[256], file[PATH_MAX];
    if (!realpath(dir, root)) {
        srv_error(resp, 404, "report not found: %s (the weights directory is not available)", shown);
        return;
    }
    snprintf(url, sizeof url, "/%s", name);
    int rc = px_static_resolve(root, url, file, sizeof file);
    if (rc != PX_OK) {
        resolve_error(resp, rc, "report", shown);
        return;
    }
    if (open_file(file, req, resp)) return;
    resp->content_type = type;
    snprintf(resp->cache_control, sizeof resp->cache_control, "no-cache");
}

static void h_static(srv_ctx *ctx, const srv_request *req, srv_response *resp, const char *decoded) {
    resp->route = "static";
    if (!allowed(req, resp, ALLOW_GET)) return;
    if (!ctx->static_root[0]) {
        no_route(resp, decoded);
        return;
    }
    char file[PATH_MAX], shown[160];
    api_clip(shown, sizeof shown, decoded);
    int rc = px_static_resolve(ctx->static_root, req->path, file, sizeof file);
    if (rc == PX_ENOTFOUND) {
        no_route(resp, decoded);
        return;
    }
    if (rc != PX_OK) {
        resolve_error(resp, rc, "file", shown);
        return;
    }
    if (open_file(file, req, resp)) return;
    resp->content_type = px_mime_type(file);
    /* Revalidated on every use (cheap: a 304 when the ETag matches), so a
     * deploy never leaves visitors on an old app.js beside a new index.html. */
    snprintf(resp->cache_control, sizeof resp->cache_control, "no-cache");
}

/* ------------------------------------------------------ protocol dispatch */

/* /v1/models/REST: TF Serving status, metadata and :predict. */
static void route_tfs(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp, char *rest,
                      const char *path) {
    char *seg[6];
    char *verb = strchr(rest, ':');
    if (verb) *verb++ = '\0';
    int n = split(rest, seg, 6);
    const char *version = NULL;
    if (n == 3 || n == 4) {
        if (strcmp(seg[1], "versions") != 0) n = -1;
        version = seg[2];
    }
    if (verb) {
        resp->route = "/v1/models/{name}:predict";
        if ((n != 1 && n != 3) || strcmp(verb, "predict") != 0) {
            if (n == 1 || n == 3) {
                char v[40];
                api_clip(v, sizeof v, verb);
                srv_error(resp, 404, "unsupported verb ':%s'; TF Serving's REST API here has :predict", v);
            } else {
                no_route(resp, path);
            }
            resp->route = "other";
            return;
        }
        if (!allowed(req, resp, ALLOW_POST)) return;
        const srv_model *m = api_find_model(snap, seg[0], resp);
        if (!m || api_check_version(m, version, resp)) return;
        api_tfs_predict(ctx, snap, m, req, resp);
        return;
    }
    int meta = (n == 2 && strcmp(seg[1], "metadata") == 0) || (n == 4 && strcmp(seg[3], "metadata") == 0);
    if (!(n == 1 || n == 3 || meta)) {
        no_route(resp, path);
        return;
    }
    resp->route = meta ? "/v1/models/{name}/metadata" : "/v1/models/{name}";
    if (!allowed(req, resp, ALLOW_GET)) return;
    const srv_model *m = api_find_model(snap, seg[0], resp);
    if (!m || api_check_version(m, version, resp)) return;
    if (meta) api_tfs_metadata(m, resp);
    else api_tfs_status(snap, m, resp);
}

/* /v2/models/REST: KServe model metadata, ready, infer. */
static void route_kserve(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp, char *rest,
                         const char *path) {
    char *seg[6];
    int n = split(rest, seg, 6);
    const char *version = NULL, *what = NULL;
    if (n >= 3 && strcmp(seg[1], "versions") == 0) {
        version = seg[2];
        if (n == 4) what = seg[3];
        else if (n != 3) n = -1;
    } else if (n == 2) {
        what = seg[1];
    } else if (n != 1) {
        n = -1;
    }
    if (n < 0 || (what && strcmp(what, "ready") != 0 && strcmp(what, "infer") != 0)) {
        no_route(resp, path);
        return;
    }
    int infer = what && strcmp(what, "infer") == 0;
    resp->route = !what ? "/v2/models/{name}" : infer ? "/v2/models/{name}/infer" : "/v2/models/{name}/ready";
    if (!allowed(req, resp, infer ? ALLOW_POST : ALLOW_GET)) return;
    const srv_model *m = api_find_model(snap, seg[0], resp);
    if (!m || api_check_version(m, version, resp)) return;
    if (infer) api_kserve_infer(ctx, snap, m, version, req, resp);
    else if (what) api_kserve_model_ready(ctx, m, resp);
    else api_kserve_model_meta(m, resp);
}

/* /predictions/NAME[/VERSION] */
static void route_ts(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp, char *rest,
                     const char *path) {
    char *seg[3];
    int n = split(rest, seg, 3);
    if (n != 1 && n != 2) {
        no_route(resp, path);
        return;
    }
    resp->route = "/predictions/{name}";
    if (!allowed(req, resp, ALLOW_POST_PUT)) return;
    const srv_model *m = api_find_model(snap, seg[0], resp);
    if (!m) return;
    if (n == 2 && strcmp(seg[1], "1.0") != 0 && api_check_version(m, seg[1], resp)) return;
    api_ts_predict(ctx, snap, m, req, resp);
}

static int prefix(const char *s, const char *p, const char **rest) {
    size_t n = strlen(p);
    if (strncmp(s, p, n) != 0) return 0;
    *rest = s + n;
    return 1;
}

static void route(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp) {
    char path[PX_STATIC_MAX_PATH + 1], rest[PX_STATIC_MAX_PATH + 1];
    int rc = px_path_decode(req->path, path, sizeof path);
    if (rc != PX_OK || path[0] != '/') {
        srv_error(resp, 400, "bad request path: %s", rc != PX_OK ? px_strerror(rc) : "it must start with '/'");
        return;
    }
    size_t len = strlen(path);
    char api[sizeof path]; /* API paths compare without one trailing '/' */
    memcpy(api, path, len + 1);
    if (len > 1 && api[len - 1] == '/') api[len - 1] = '\0';
    const char *r;

    struct {
        const char *path, *allow;
        int id;
    } fixed[] = {
        {"/healthz", ALLOW_GET, 1},      {"/readyz", ALLOW_GET, 2},          {"/metrics", ALLOW_GET, 3},
        {"/ping", ALLOW_GET, 4},         {"/v1/classify", ALLOW_POST_PUT, 5}, {"/v1/models", ALLOW_GET, 6},
        {"/v1/samples", ALLOW_GET, 7},   {"/v2", ALLOW_GET, 8},              {"/v2/health/live", ALLOW_GET, 9},
        {"/v2/health/ready", ALLOW_GET, 10},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (strcmp(api, fixed[i].path) != 0) continue;
        resp->route = fixed[i].path;
        if (!allowed(req, resp, fixed[i].allow)) return;
        switch (fixed[i].id) {
        case 1: reply_status(resp, 200, "status", "ok"); return;
        case 2: h_readyz(ctx, snap, resp); return;
        case 3: h_metrics(ctx, resp); return;
        case 4: api_ts_ping(ctx, snap, resp); return;
        case 5: api_native_classify(ctx, snap, req, resp); return;
        case 6: api_native_models(ctx, snap, req, resp); return;
        case 7: api_native_samples(ctx, req, resp); return;
        case 8: api_kserve_server_meta(resp); return;
        case 9: api_kserve_live(resp); return;
        default: api_kserve_ready(ctx, snap, resp); return;
        }
    }
    if (prefix(api, "/v1/reports/", &r)) {
        resp->route = "/v1/reports/{file}";
        h_report(ctx, req, resp, r);
        return;
    }
    if (prefix(api, "/v1/models/", &r)) {
        snprintf(rest, sizeof rest, "%s", r);
        route_tfs(ctx, snap, req, resp, rest, path);
        return;
    }
    if (prefix(api, "/v2/models/", &r)) {
        snprintf(rest, sizeof rest, "%s", r);
        route_kserve(ctx, snap, req, resp, rest, path);
        return;
    }
    if (prefix(api, "/predictions/", &r)) {
        snprintf(rest, sizeof rest, "%s", r);
        route_ts(ctx, snap, req, resp, rest, path);
        return;
    }
    if (prefix(api, "/v1/", &r) || prefix(api, "/v2/", &r) || strcmp(api, "/v1") == 0 ||
        strcmp(api, "/predictions") == 0) {
        no_route(resp, path);
        return;
    }
    h_static(ctx, req, resp, path);
}

void srv_handle(srv_ctx *ctx, const srv_request *req, srv_response *resp) {
    memset(resp, 0, sizeof *resp);
    resp->fd = -1;
    resp->route = "other";
    resp->status = 500;
    resp->content_type = "application/json";
    set_cors(ctx, req, resp);
    if (!req->method || !req->path) {
        srv_error(resp, 400, "malformed request");
        return;
    }
    srv_snap *snap = ctx->registry ? srv_registry_acquire(ctx->registry) : NULL;
    route(ctx, snap, req, resp);
    srv_snap_release(snap);
}
