/* api_kserve.c - the KServe / Open Inference Protocol v2 REST routes:
 * GET /v2, /v2/health/{live,ready}, /v2/models/NAME[/versions/1][/ready],
 * POST /v2/models/NAME[/versions/1]/infer.
 *
 * Each model has one version, "1", one input tensor "input" (FP32, shape
 * [-1,1,28,28]; [N,784] and [N,28,28] are accepted too, and UINT8 0..255
 * pixels) and one output "probabilities" (FP32 [N,10]).  The classification
 * extension (Triton's) is supported: an output requested with
 * "parameters": {"classification": K} comes back as BYTES [N,K] strings
 * "value:index:label", value printed like std::to_string (%f).
 *
 * Left out: the binary tensor data extension (binary_data, and bodies with
 * Inference-Header-Content-Length), shared memory, model repository routes.
 * Every request error is 400 (the spec's choice), an unknown model or version
 * 404, over --max-batch 413, no workspace 503. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

void api_kserve_server_meta(srv_response *resp) {
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "name", cJSON_CreateString("fmnist"));
    api_put(&ok, o, "version", cJSON_CreateString(FMNIST_VERSION));
    cJSON *ext = api_put(&ok, o, "extensions", cJSON_CreateArray());
    api_push(&ok, ext, cJSON_CreateString("classification"));
    api_reply(resp, 200, o, ok);
}

void api_kserve_live(srv_response *resp) {
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "live", cJSON_CreateTrue());
    api_reply(resp, 200, o, ok);
}

void api_kserve_ready(srv_ctx *ctx, const srv_snap *snap, srv_response *resp) {
    int ok = 1, ready = snap && snap->n_models > 0 && !atomic_load(&ctx->draining);
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "ready", cJSON_CreateBool(ready));
    if (!ready)
        api_put(&ok, o, "error", cJSON_CreateString(atomic_load(&ctx->draining) ? "shutting down"
                                                                                 : "no model is loaded"));
    api_reply(resp, ready ? 200 : 503, o, ok);
}

static cJSON *tensor_meta(const char *name, const int *shape, int nd, int *ok) {
    cJSON *t = cJSON_CreateObject();
    api_put(ok, t, "name", cJSON_CreateString(name));
    api_put(ok, t, "datatype", cJSON_CreateString("FP32"));
    api_put(ok, t, "shape", cJSON_CreateIntArray(shape, nd));
    if (!t) *ok = 0;
    return t;
}

void api_kserve_model_meta(const srv_model *m, srv_response *resp) {
    static const int in_shape[] = {-1, 1, FM_IMG_H, FM_IMG_W}, out_shape[] = {-1, FM_N_CLASSES};
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "name", cJSON_CreateString(m->name));
    cJSON *v = api_put(&ok, o, "versions", cJSON_CreateArray());
    api_push(&ok, v, cJSON_CreateString(API_VERSION));
    api_put(&ok, o, "platform", cJSON_CreateString("fmnist"));
    cJSON *in = api_put(&ok, o, "inputs", cJSON_CreateArray());
    api_push(&ok, in, tensor_meta("input", in_shape, 4, &ok));
    cJSON *out = api_put(&ok, o, "outputs", cJSON_CreateArray());
    api_push(&ok, out, tensor_meta("probabilities", out_shape, 2, &ok));
    api_reply(resp, 200, o, ok);
}

void api_kserve_model_ready(srv_ctx *ctx, const srv_model *m, srv_response *resp) {
    int ok = 1, ready = !atomic_load(&ctx->draining);
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "name", cJSON_CreateString(m->name));
    api_put(&ok, o, "ready", cJSON_CreateBool(ready));
    api_reply(resp, ready ? 200 : 503, o, ok);
}

/* ------------------------------------------------------------------ infer */

/* Flattens data (flat or nested, row-major) into out[want]; counts strictly. */
static int flatten(const cJSON *v, int uint8, float *out, size_t want, size_t *k, srv_response *resp) {
    if (cJSON_IsArray(v)) {
        for (const cJSON *c = v->child; c; c = c->next)
            if (flatten(c, uint8, out, want, k, resp)) return -1;
        return 0;
    }
    if (!cJSON_IsNumber(v)) {
        srv_error(resp, 400, "input \"data\" element %zu is a %s; expected numbers", *k, api_json_type(v));
        return -1;
    }
    if (*k >= want) {
        srv_error(resp, 400, "input \"data\" holds more than the %zu elements its shape says", want);
        return -1;
    }
    double d = v->valuedouble;
    if (uint8 ? !(d >= 0.0 && d <= 255.0 && d == floor(d)) : !(isfinite(d) && d >= 0.0 && d <= 1.0)) {
        srv_error(resp, 400, "input \"data\" element %zu is %.6g; %s", *k, d,
                  uint8 ? "UINT8 data are integers 0..255" : "FP32 data are in [0, 1] (or send UINT8 pixels)");
        return -1;
    }
    out[(*k)++] = uint8 ? (float)d / 255.0f : (float)d;
    return 0;
}

/* Reads inputs[0] into in (allocated here). */
static int read_input(srv_ctx *ctx, const cJSON *root, api_inputs *in, srv_response *resp) {
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) != 1) {
        srv_error(resp, 400, "\"inputs\" must be an array holding exactly one tensor named \"input\"");
        return -1;
    }
    const cJSON *t = inputs->child;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(t, "datatype");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(t, "data");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(t, "parameters");
    if (!cJSON_IsObject(t) || !cJSON_IsString(name) || strcmp(name->valuestring, "input") != 0) {
        srv_error(resp, 400, "the input tensor must be an object named \"input\" (GET /v2/models/{name} shows it)");
        return -1;
    }
    if (params && !cJSON_IsObject(params)) {
        srv_error(resp, 400, "input \"parameters\" must be an object");
        return -1;
    }
    if (cJSON_GetObjectItemCaseSensitive(params, "binary_data_size")) {
        srv_error(resp, 400, "the binary tensor data extension is not supported; send \"data\" as JSON");
        return -1;
    }
    int uint8 = cJSON_IsString(dtype) && strcmp(dtype->valuestring, "UINT8") == 0;
    if (!cJSON_IsString(dtype) || (!uint8 && strcmp(dtype->valuestring, "FP32") != 0)) {
        srv_error(resp, 400, "input \"datatype\" must be \"FP32\" (values in [0,1]) or \"UINT8\" (pixels 0..255)");
        return -1;
    }
    long dims[4];
    int nd = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : 0;
    int good = nd >= 2 && nd <= 4;
    for (int i = 0; good && i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        good = cJSON_IsNumber(d) && d->valuedouble >= 0 && d->valuedouble <= 1e9 && d->valuedouble == floor(d->valuedouble);
        if (good) dims[i] = (long)d->valuedouble;
    }
    good = good && ((nd == 2 && dims[1] == FM_IMG_SIZE) || (nd == 3 && dims[1] == FM_IMG_H && dims[2] == FM_IMG_W) ||
                    (nd == 4 && dims[1] == 1 && dims[2] == FM_IMG_H && dims[3] == FM_IMG_W));
    if (!good || dims[0] < 1) {
        srv_error(resp, 400, "input \"shape\" must be [N,784], [N,28,28] or [N,1,28,28] with N >= 1");
        return -1;
    }
    if ((size_t)dims[0] > api_max_batch(ctx)) {
        srv_error(resp, 413, "batch of %ld in one request; the limit is %zu (--max-batch)", dims[0], api_max_batch(ctx));
        return -1;
    }
    if (!cJSON_IsArray(data)) {
        srv_error(resp, 400, "input \"data\" must be an array (flat or nested, row-major), got %s",
                  api_json_type(data));
        return -1;
    }
    if (api_inputs_init(in, (size_t)dims[0], resp)) return -1;
    size_t want = (size_t)dims[0] * FM_IMG_SIZE, k = 0;
    if (flatten(data, uint8, in->x, want, &k, resp)) {
        api_inputs_free(in);
        return -1;
    }
    if (k != want) {
        api_inputs_free(in);
        srv_error(resp, 400, "input \"data\" holds %zu elements but its shape needs %zu", k, want);
        return -1;
    }
    in->n = (size_t)dims[0];
    return 0;
}

/* The requested outputs: classification K (0 = plain probabilities). */
static int read_outputs(const cJSON *root, int *classify, srv_response *resp) {
    const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
    *classify = 0;
    if (!outputs) return 0;
    if (!cJSON_IsArray(outputs) || cJSON_GetArraySize(outputs) > 1) {
        srv_error(resp, 400, "\"outputs\" must be an array of at most one output, \"probabilities\"");
        return -1;
    }
    const cJSON *o = outputs->child;
    if (!o) return 0;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (!cJSON_IsObject(o) || !cJSON_IsString(name) || strcmp(name->valuestring, "probabilities") != 0) {
        srv_error(resp, 400, "unknown output: the only output is \"probabilities\"");
        return -1;
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!params) return 0;
    if (!cJSON_IsObject(params)) {
        srv_error(resp, 400, "output \"parameters\" must be an object");
        return -1;
    }
    const cJSON *bin = cJSON_GetObjectItemCaseSensitive(params, "binary_data");
    if (bin && !cJSON_IsFalse(bin)) {
        srv_error(resp, 400, "the binary tensor data extension is not supported; leave binary_data false");
        return -1;
    }
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(params, "classification");
    if (!k) return 0;
    if (!cJSON_IsNumber(k) || k->valuedouble < 1 || k->valuedouble > API_MAX_TOP ||
        k->valuedouble != floor(k->valuedouble)) {
        srv_error(resp, 400, "\"classification\" must be an integer from 1 to %d", API_MAX_TOP);
        return -1;
    }
    *classify = (int)k->valuedouble;
    return 0;
}

void api_kserve_infer(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const char *version,
                      const srv_request *req, srv_response *resp) {
    cJSON *root;
    if (api_parse_json(ctx, req, &root, resp)) return;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    int classify = 0;
    api_inputs in;
    memset(&in, 0, sizeof in);
    if (!cJSON_IsObject(root)) {
        srv_error(resp, 400, "expected a JSON object {\"inputs\": [...]}");
    } else if (id && !cJSON_IsString(id)) {
        srv_error(resp, 400, "\"id\" must be a string");
    } else if (params && !cJSON_IsObject(params)) {
        srv_error(resp, 400, "\"parameters\" must be an object");
    } else if (read_outputs(root, &classify, resp) == 0 && read_input(ctx, root, &in, resp) == 0 &&
               api_infer(ctx, snap, m, &in, resp) == 0) {
        int ok = 1;
        cJSON *o = cJSON_CreateObject();
        api_put(&ok, o, "model_name", cJSON_CreateString(m->name));
        api_put(&ok, o, "model_version", cJSON_CreateString(version ? version : API_VERSION));
        if (id) {
            char *s = strdup(id->valuestring);
            if (s) api_utf8_sanitize(s);
            api_put(&ok, o, "id", s ? cJSON_CreateString(s) : NULL);
            free(s);
        }
        cJSON *outs = api_put(&ok, o, "outputs", cJSON_CreateArray());
        cJSON *t = api_push(&ok, outs, cJSON_CreateObject());
        int shape[2] = {(int)in.n, classify ? classify : FM_N_CLASSES};
        api_put(&ok, t, "name", cJSON_CreateString("probabilities"));
        api_put(&ok, t, "shape", cJSON_CreateIntArray(shape, 2));
        api_put(&ok, t, "datatype", cJSON_CreateString(classify ? "BYTES" : "FP32"));
        cJSON *data = api_put(&ok, t, "data", cJSON_CreateArray());
        for (size_t i = 0; i < in.n && ok; i++) {
            const float *p = in.probs + i * FM_N_CLASSES;
            if (!classify) {
                for (int k = 0; k < FM_N_CLASSES; k++) api_push(&ok, data, api_float(p[k]));
                continue;
            }
            int order[FM_N_CLASSES];
            api_rank(p, order);
            for (int k = 0; k < classify; k++) {
                char s[64];
                snprintf(s, sizeof s, "%f:%d:%s", (double)p[order[k]], order[k], fm_class_names[order[k]]);
                api_push(&ok, data, cJSON_CreateString(s));
            }
        }
        api_reply(resp, 200, o, ok);
    }
    api_inputs_free(&in);
    cJSON_Delete(root);
}
