/* api.h - private seams between handlers.c (routing, shared helpers) and the
 * protocol files behind srv_handle(): api_native.c (/v1/classify, /v1/models,
 * /v1/samples), api_kserve.c (Open Inference Protocol v2), api_tfs.c
 * (TensorFlow Serving REST) and api_torchserve.c (TorchServe-style).
 *
 * Conventions for every function here:
 *  - A function that can fail takes the srv_response and, on failure, fills
 *    it with a JSON error (srv_error) and returns -1; 0 means success.  The
 *    caller then just returns: the response is complete.
 *  - JSON is built with cJSON through api_put / api_push, which track
 *    allocation failures in an `int ok` flag instead of checking every call;
 *    api_reply turns a tree whose flag dropped into a 503.
 *  - `bad` parameters are the status for well-formed but meaningless input:
 *    422 on the native API, 400 on KServe and TF Serving (their specs).
 *  - Nothing here keeps state between requests, so every function is
 *    thread-safe (the per-thread workspace lives in registry.c). */
#ifndef SRV_API_H
#define SRV_API_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "image.h"
#include "jsonw.h"
#include "srv.h"

#define API_JSON_MAX_DEPTH 32    /* deepest legitimate request is 8 levels */
#define API_MAX_TOP FM_N_CLASSES /* top=K and classification=K range: 1..10 */
#define API_VERSION "1"          /* the only model version we serve */
#ifndef FMNIST_VERSION
#define FMNIST_VERSION "0.1.0"
#endif

/* One input example and where it came from. */
typedef struct api_item {
    int is_image;       /* 1: decoded from an image file (info valid) */
    img_info info;
    int has_filename;   /* multipart part with filename= */
    char filename[256]; /* sanitized UTF-8 */
} api_item;

/* A request's examples, allocated once per request for its exact count
 * (n <= cfg->max_batch, so a few hundred KiB at most). */
typedef struct api_inputs {
    size_t n;          /* examples filled so far / in total */
    size_t cap;
    float *x;          /* [cap, 784] model input, values in [0,1] */
    float *probs;      /* [cap, 10] after api_infer */
    int *classes;      /* [cap] argmax after api_infer */
    api_item *items;   /* [cap] */
} api_inputs;

/* ---- responses and JSON --------------------------------------------- */

/* Attach item to obj under key / append it to arr.  On any failure (item
 * NULL, parent NULL, no memory) the item is freed and *ok set to 0.
 * Returns item (NULL on failure) so a child container can be filled.
 * key is not copied: it must outlive the tree (a literal, a class name). */
cJSON *api_put(int *ok, cJSON *obj, const char *key, cJSON *item);
cJSON *api_push(int *ok, cJSON *arr, cJSON *item);
/* A float printed with %.9g (round-trips exactly); null when not finite. */
cJSON *api_float(float v);
/* The same text into buf (the one float printed once, used twice). */
void api_float_text(float v, char buf[32]);
/* An integer as a raw number: cJSON's own printer tries %1.15g, reads it
 * back with sscanf and may print again, on every number. */
cJSON *api_int(long long v);
/* Prints root into resp as application/json with status and frees root.
 * !ok or a print failure gives 503. */
void api_reply(srv_response *resp, int status, cJSON *root, int ok);
/* The same for text written with jsonw (the hot answers); frees w's text. */
void api_reply_jw(srv_response *resp, int status, jw *w);
/* Parses the request body as one JSON value after a pre-scan that refuses
 * nesting deeper than API_JSON_MAX_DEPTH (400) and more values than
 * max_batch examples could need (413); trailing non-blank bytes are 400. */
int api_parse_json(const srv_ctx *ctx, const srv_request *req, cJSON **out, srv_response *resp);
/* "string", "number", "array", ... for error messages. */
const char *api_json_type(const cJSON *v);
/* Copies src into dst[sz], cut to fit, for quoting user input in messages. */
void api_clip(char *dst, size_t sz, const char *src);
/* Replaces invalid UTF-8 and control bytes of s in place with '?'. */
void api_utf8_sanitize(char *s);

/* ---- models and inference ------------------------------------------- */

size_t api_max_batch(const srv_ctx *ctx);
/* The model called name (NULL or "" = the default).  503 when no model is
 * loaded, 404 (listing the available models) when the name is unknown.
 * Sets resp->model on success. */
const srv_model *api_find_model(const srv_snap *snap, const char *name, srv_response *resp);
/* 404 unless version is NULL or "1". */
int api_check_version(const srv_model *m, const char *version, srv_response *resp);
/* The ?model= query parameter into buf ("" when absent); 400/404 on errors. */
int api_query_model(const srv_request *req, char *buf, size_t bufsz, srv_response *resp);
/* ?top=K (1..10, default def) and ?invert=auto|true|false (default auto). */
int api_query_top(const srv_request *req, int def, int *top, srv_response *resp);
int api_query_invert(const srv_request *req, img_invert *mode, srv_response *resp);

int api_inputs_init(api_inputs *in, size_t cap, srv_response *resp); /* 503 on OOM */
void api_inputs_free(api_inputs *in);                                 /* safe on zeroed */
/* Runs the model over in->x [n] into in->probs / in->classes and records
 * the metrics; 503 when no workspace can be had. */
int api_infer(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, api_inputs *in, srv_response *resp);
/* Class indices of p[10] by falling probability (ties: lower index first). */
void api_rank(const float p[FM_N_CLASSES], int order[FM_N_CLASSES]);

/* ---- input decoding ------------------------------------------------- */

/* HTTP status for an img_status (400, 415, 400, 413, 503). */
int api_img_http(int img_status);
/* Decodes one image file into in->x[i] / in->items[i]; what names it in errors. */
int api_decode_image(const srv_ctx *ctx, const uint8_t *data, size_t len, img_invert mode, api_inputs *in,
                     size_t i, const char *what, srv_response *resp);
/* The same from base64 text, with or without a data: URL prefix. */
int api_decode_b64_image(const srv_ctx *ctx, const char *text, img_invert mode, api_inputs *in, size_t i,
                         const char *what, srv_response *resp);
/* Reads the body as images: multipart/form-data (every image part, or with
 * field != NULL only that field, else the first image part) or a raw image
 * recognised by its magic bytes.  Returns 1 when the body is neither (the
 * caller tries JSON or answers 415), 0 with *in filled, -1 on error. */
int api_read_images(const srv_ctx *ctx, const srv_request *req, img_invert mode, const char *field,
                    api_inputs *in, srv_response *resp);
/* One 28x28 example from JSON: 784 numbers, [28][28], [1][28][28] or [1][784]
 * with values in [0, scale] (scale 1 or 255) into out. */
int api_read_tensor(const cJSON *v, double scale, float out[FM_IMG_SIZE], const char *what, int bad,
                    srv_response *resp);
/* One instance: a tensor as above, {"b64": "<image>"}, or {"input": either}. */
int api_read_instance(const srv_ctx *ctx, const cJSON *v, double scale, img_invert mode, api_inputs *in,
                      size_t i, const char *what, int bad, srv_response *resp);
/* Checks the optional top-level "scale" (absent: 1; 1 or 255). */
int api_read_scale(const cJSON *root, double *scale, int bad, srv_response *resp);

/* ---- pieces of replies ---------------------------------------------- */

/* "data:image/png;base64,..." of w x h gray pixels; malloc'd, NULL on OOM. */
char *api_png_data_url(const uint8_t *px, int w, int h);
/* {"format","width","height",...,"input_png"} for an image input, written
 * into w; -1 when the input PNG could not be made (w is then incomplete). */
int api_preprocessing(jw *w, const api_item *item, const float x[FM_IMG_SIZE]);
/* The native description of a model (/v1/models). */
cJSON *api_model_json(const srv_snap *snap, const srv_model *m, int *ok);

/* ---- the protocol handlers (model-level routing done by handlers.c) --- */

void api_native_classify(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp);
void api_native_models(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp);
void api_native_samples(srv_ctx *ctx, const srv_request *req, srv_response *resp);

void api_kserve_server_meta(srv_response *resp);
void api_kserve_live(srv_response *resp);
void api_kserve_ready(srv_ctx *ctx, const srv_snap *snap, srv_response *resp);
void api_kserve_model_meta(const srv_model *m, srv_response *resp);
void api_kserve_model_ready(srv_ctx *ctx, const srv_model *m, srv_response *resp);
void api_kserve_infer(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const char *version,
                      const srv_request *req, srv_response *resp);

void api_tfs_status(const srv_snap *snap, const srv_model *m, srv_response *resp);
void api_tfs_metadata(const srv_model *m, srv_response *resp);
void api_tfs_predict(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const srv_request *req,
                     srv_response *resp);

void api_ts_ping(srv_ctx *ctx, const srv_snap *snap, srv_response *resp);
void api_ts_predict(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const srv_request *req,
                    srv_response *resp);

#endif
