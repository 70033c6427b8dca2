/* api_tfs.c - TensorFlow Serving's REST API: GET /v1/models/NAME[/versions/1]
 * (status), GET .../metadata, POST /v1/models/NAME[/versions/1]:predict.
 *
 * The one signature, "serving_default", takes "input" (DT_FLOAT [-1,28,28],
 * values in [0,1]) and gives "probabilities" (DT_FLOAT [-1,10]).  Predict
 * accepts the row format {"instances": [...]} - each instance 784 numbers, a
 * 28x28 (or 1x28x28) array, {"b64": "<image>"} or {"input": one of those} -
 * answering {"predictions": [[10 probabilities], ...]}, and the columnar
 * format {"inputs": [...] or {"input": [...]}} answering {"outputs": ...}.
 * An optional top-level "scale": 255 (our extension) takes 0..255 pixels.
 *
 * Errors are {"error": "..."}, TF Serving's own shape: 400 for every invalid
 * argument, 404 for an unknown model or version.  The status route also
 * carries the native /v1/models fields beside model_version_status (TF
 * clients ignore them; the page reads them). */
#include <stdio.h>
#include <string.h>

#include "api.h"

static cJSON *version_status(int *ok) {
    cJSON *arr = cJSON_CreateArray();
    cJSON *v = api_push(ok, arr, cJSON_CreateObject());
    api_put(ok, v, "version", cJSON_CreateString(API_VERSION));
    api_put(ok, v, "state", cJSON_CreateString("AVAILABLE"));
    cJSON *st = api_put(ok, v, "status", cJSON_CreateObject());
    api_put(ok, st, "error_code", cJSON_CreateString("OK"));
    api_put(ok, st, "error_message", cJSON_CreateString(""));
    if (!arr) *ok = 0;
    return arr;
}

void api_tfs_status(const srv_snap *snap, const srv_model *m, srv_response *resp) {
    int ok = 1;
    cJSON *o = api_model_json(snap, m, &ok);
    api_put(&ok, o, "model_version_status", version_status(&ok));
    api_reply(resp, 200, o, ok);
}

static cJSON *tensor_info(const char *name, const int *dims, int nd, int *ok) {
    cJSON *t = cJSON_CreateObject();
    api_put(ok, t, "dtype", cJSON_CreateString("DT_FLOAT"));
    cJSON *shape = api_put(ok, t, "tensor_shape", cJSON_CreateObject());
    cJSON *dim = api_put(ok, shape, "dim", cJSON_CreateArray());
    for (int i = 0; i < nd; i++) {
        char s[16];
        snprintf(s, sizeof s, "%d", dims[i]);
        cJSON *d = api_push(ok, dim, cJSON_CreateObject());
        api_put(ok, d, "size", cJSON_CreateString(s));
        api_put(ok, d, "name", cJSON_CreateString(""));
    }
    api_put(ok, shape, "unknown_rank", cJSON_CreateFalse());
    api_put(ok, t, "name", cJSON_CreateString(name));
    if (!t) *ok = 0;
    return t;
}

void api_tfs_metadata(const srv_model *m, srv_response *resp) {
    static const int in_dims[] = {-1, FM_IMG_H, FM_IMG_W}, out_dims[] = {-1, FM_N_CLASSES};
    int ok = 1;
    cJSON *o = cJSON_CreateObject();
    cJSON *spec = api_put(&ok, o, "model_spec", cJSON_CreateObject());
    api_put(&ok, spec, "name", cJSON_CreateString(m->name));
    api_put(&ok, spec, "signature_name", cJSON_CreateString(""));
    api_put(&ok, spec, "version", cJSON_CreateString(API_VERSION));
    cJSON *meta = api_put(&ok, o, "metadata", cJSON_CreateObject());
    cJSON *outer = api_put(&ok, meta, "signature_def", cJSON_CreateObject());
    api_put(&ok, outer, "@type", cJSON_CreateString("type.googleapis.com/tensorflow.serving.SignatureDefMap"));
    cJSON *defs = api_put(&ok, outer, "signature_def", cJSON_CreateObject());
    cJSON *sig = api_put(&ok, defs, "serving_default", cJSON_CreateObject());
    cJSON *ins = api_put(&ok, sig, "inputs", cJSON_CreateObject());
    api_put(&ok, ins, "input", tensor_info("input:0", in_dims, 3, &ok));
    cJSON *outs = api_put(&ok, sig, "outputs", cJSON_CreateObject());
    api_put(&ok, outs, "probabilities", tensor_info("probabilities:0", out_dims, 2, &ok));
    api_put(&ok, sig, "method_name", cJSON_CreateString("tensorflow/serving/predict"));
    api_reply(resp, 200, o, ok);
}

void api_tfs_predict(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const srv_request *req,
                     srv_response *resp) {
    cJSON *root;
    img_invert mode;
    if (api_query_invert(req, &mode, resp) || api_parse_json(ctx, req, &root, resp)) return;
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(root, "instances");
    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    const cJSON *sig = cJSON_GetObjectItemCaseSensitive(root, "signature_name");
    double scale = 1.0;
    api_inputs in;
    memset(&in, 0, sizeof in);
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        srv_error(resp, 400, "expected a JSON object {\"instances\": [...]} or {\"inputs\": ...}");
    } else if (sig && (!cJSON_IsString(sig) || (strcmp(sig->valuestring, "") != 0 &&
                                                strcmp(sig->valuestring, "serving_default") != 0))) {
        srv_error(resp, 400, "unknown signature_name; the only signature is \"serving_default\"");
    } else if (!inst == !cols) {
        srv_error(resp, 400, "send exactly one of \"instances\" (row format) or \"inputs\" (columnar format)");
    } else if (api_read_scale(root, &scale, 400, resp) == 0) {
        const cJSON *list = inst ? inst : cols;
        if (cols && cJSON_IsObject(cols)) { /* {"inputs": {"input": [...]}} */
            list = cJSON_GetObjectItemCaseSensitive(cols, "input");
            if (cJSON_GetArraySize(cols) != 1) list = NULL;
        }
        size_t n = cJSON_IsArray(list) ? (size_t)cJSON_GetArraySize(list) : 0;
        if (!cJSON_IsArray(list) || n == 0) {
            srv_error(resp, 400, "%s must be a non-empty list of inputs (a batch), e.g. [[784 numbers]]",
                      inst ? "\"instances\"" : "\"inputs\" (or \"inputs\".\"input\")");
        } else if (n > api_max_batch(ctx)) {
            srv_error(resp, 413, "%zu inputs in one request; the limit is %zu (--max-batch)", n, api_max_batch(ctx));
        } else if (api_inputs_init(&in, n, resp) == 0) {
            rc = 0;
            for (const cJSON *v = list->child; v && rc == 0; v = v->next) {
                char what[48];
                snprintf(what, sizeof what, "%s %zu", inst ? "instance" : "input", in.n);
                rc = api_read_instance(ctx, v, scale, mode, &in, in.n, what, 400, resp);
                if (rc == 0) in.n++;
            }
        }
    }
    if (rc == 0 && api_infer(ctx, snap, m, &in, resp) == 0) {
        int ok = 1;
        cJSON *o = cJSON_CreateObject();
        cJSON *preds = api_put(&ok, o, inst ? "predictions" : "outputs", cJSON_CreateArray());
        for (size_t i = 0; i < in.n && ok; i++) {
            cJSON *row = api_push(&ok, preds, cJSON_CreateArray());
            for (int k = 0; k < FM_N_CLASSES; k++) api_push(&ok, row, api_float(in.probs[i * FM_N_CLASSES + k]));
        }
        api_reply(resp, 200, o, ok);
    }
    api_inputs_free(&in);
    cJSON_Delete(root);
}
