/* api_native.c - fmnist's own API: POST /v1/classify, GET /v1/models,
 * GET /v1/samples.
 *
 * /v1/classify reads the body by what it is, not by what it claims: an image
 * is recognised by its magic bytes (curl --data-binary labels everything
 * application/x-www-form-urlencoded), multipart/form-data and JSON by
 * Content-Type (JSON also when a form-urlencoded or unlabelled body starts
 * with '{', which is what curl -d sends).  Every input form ends in the same
 * [n, 784] float buffer and one forward call, so the same image gives the
 * same probabilities however it arrives.
 *
 * Left out: streaming, binary tensors, per-part options in multipart forms
 * (top, invert and model are query parameters). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "fm_idx.h"
#include "parse.h"

/* ------------------------------------------------------------ /v1/classify */

static int looks_like_json(const srv_request *req) {
    if (px_content_type_is(req->content_type, "application/json")) return 1;
    if (req->content_type && !px_content_type_is(req->content_type, "application/x-www-form-urlencoded")) return 0;
    for (size_t i = 0; i < req->body_len; i++) {
        uint8_t c = req->body[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        return c == '{';
    }
    return 0;
}

static int read_json_instances(srv_ctx *ctx, const srv_request *req, img_invert mode, api_inputs *in,
                               srv_response *resp) {
    cJSON *root;
    if (api_parse_json(ctx, req, &root, resp)) return -1;
    double scale;
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(root, "instances");
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        srv_error(resp, 422, "expected a JSON object {\"instances\": [...]}, got %s %s",
                  cJSON_IsArray(root) || cJSON_IsObject(root) ? "an" : "a", api_json_type(root));
    } else if (api_read_scale(root, &scale, 422, resp)) {
        /* error set */
    } else if (!cJSON_IsArray(inst)) {
        srv_error(resp, 422, "\"instances\" must be an array of inputs (784 numbers, 28x28 arrays or "
                  "{\"b64\": ...}), got %s", api_json_type(inst));
    } else if (cJSON_GetArraySize(inst) == 0) {
        srv_error(resp, 422, "\"instances\" is empty: send at least one input");
    } else if ((size_t)cJSON_GetArraySize(inst) > api_max_batch(ctx)) {
        srv_error(resp, 413, "%d instances in one request; the limit is %zu (--max-batch)",
                  cJSON_GetArraySize(inst), api_max_batch(ctx));
    } else if (api_inputs_init(in, (size_t)cJSON_GetArraySize(inst), resp) == 0) {
        rc = 0;
        for (const cJSON *v = inst->child; v && rc == 0; v = v->next) {
            char what[48];
            snprintf(what, sizeof what, "instance %zu", in->n);
            rc = api_read_instance(ctx, v, scale, mode, in, in->n, what, 422, resp);
            if (rc == 0) in->n++;
        }
        if (rc) api_inputs_free(in);
    }
    cJSON_Delete(root);
    return rc;
}

/* One prediction object; -1 when a piece could not be made. */
static int prediction_json(jw *w, const api_inputs *in, size_t i, int top) {
    const float *p = in->probs + i * FM_N_CLASSES;
    int order[FM_N_CLASSES];
    api_rank(p, order);
    const api_item *it = &in->items[i];
    char text[FM_N_CLASSES][32]; /* each probability printed once, used twice */
    size_t len[FM_N_CLASSES];
    for (int k = 0; k < FM_N_CLASSES; k++) {
        api_float_text(p[k], text[k]);
        len[k] = strlen(text[k]);
    }
    jw_obj(w);
    if (it->has_filename) {
        jw_key(w, "filename");
        jw_str(w, it->filename);
    }
    jw_key(w, "label");
    jw_str(w, fm_class_names[order[0]]);
    jw_key(w, "class_id");
    jw_int(w, order[0]);
    jw_key(w, "confidence");
    jw_raw(w, text[order[0]], len[order[0]]);
    jw_key(w, "probabilities");
    jw_obj(w);
    for (int k = 0; k < FM_N_CLASSES; k++) {
        jw_key(w, fm_class_names[k]);
        jw_raw(w, text[k], len[k]);
    }
    jw_obj_end(w);
    jw_key(w, "top");
    jw_arr(w);
    for (int k = 0; k < top; k++) {
        jw_obj(w);
        jw_key(w, "label");
        jw_str(w, fm_class_names[order[k]]);
        jw_key(w, "class_id");
        jw_int(w, order[k]);
        jw_key(w, "probability");
        jw_raw(w, text[order[k]], len[order[k]]);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    int rc = 0;
    if (it->is_image) {
        jw_key(w, "preprocessing");
        rc = api_preprocessing(w, it, in->x + i * FM_IMG_SIZE);
    }
    jw_obj_end(w);
    return rc;
}

void api_native_classify(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp) {
    char name[128];
    int top;
    img_invert mode;
    if (api_query_model(req, name, sizeof name, resp) || api_query_top(req, 3, &top, resp) ||
        api_query_invert(req, &mode, resp))
        return;
    const srv_model *m = api_find_model(snap, name, resp);
    if (!m) return;
    api_inputs in;
    int rc = api_read_images(ctx, req, mode, NULL, &in, resp);
    if (rc < 0) return;
    if (rc == 1) {
        if (!looks_like_json(req)) {
            char ct[96];
            api_clip(ct, sizeof ct, req->content_type ? req->content_type : "(none)");
            srv_error(resp, 415, "unsupported body: not a PNG, JPEG, BMP, GIF or PNM image (by its first bytes), "
                      "and Content-Type %s is neither application/json nor multipart/form-data", ct);
            return;
        }
        if (read_json_instances(ctx, req, mode, &in, resp)) return;
    }
    if (api_infer(ctx, snap, m, &in, resp)) {
        api_inputs_free(&in);
        return;
    }
    /* ~2 KB per image with its input PNG: one allocation for one image */
    jw w;
    jw_init(&w, 4096);
    jw_obj(&w);
    jw_key(&w, "model");
    jw_str(&w, m->name);
    jw_key(&w, "predictions");
    jw_arr(&w);
    rc = 0;
    for (size_t i = 0; i < in.n && rc == 0; i++) rc = prediction_json(&w, &in, i, top);
    jw_arr_end(&w);
    jw_obj_end(&w);
    api_inputs_free(&in);
    if (rc) {
        jw_free(&w);
        srv_error(resp, 503, "out of memory while building the response; retry later");
        return;
    }
    api_reply_jw(resp, 200, &w);
}

/* -------------------------------------------------------------- /v1/models */

static cJSON *parse_meta(const srv_model *m, const char *key) {
    const char *s = fm_model_meta(&m->m, key);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    return j ? j : cJSON_CreateNull();
}

static cJSON *shape_json(int c, int h, int w) {
    int dims[3] = {c, h, w};
    return h == 1 && w == 1 ? cJSON_CreateIntArray(dims, 1) : cJSON_CreateIntArray(dims, 3);
}

cJSON *api_model_json(const srv_snap *snap, const srv_model *m, int *ok) {
    const fm_arch *a = &m->m.arch;
    cJSON *o = cJSON_CreateObject();
    api_put(ok, o, "name", cJSON_CreateString(m->name));
    api_put(ok, o, "default", cJSON_CreateBool(m == &snap->models[snap->default_index]));
    char *arch = fm_arch_to_json(a);
    cJSON *aj = arch ? cJSON_Parse(arch) : NULL;
    free(arch);
    api_put(ok, o, "architecture", aj);
    cJSON *sum = api_put(ok, o, "summary", cJSON_CreateObject());
    api_put(ok, sum, "input_shape", shape_json(a->in_c, a->in_h, a->in_w));
    cJSON *layers = api_put(ok, sum, "layers", cJSON_CreateArray());
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        cJSON *l = api_push(ok, layers, cJSON_CreateObject());
        api_put(ok, l, "index", cJSON_CreateNumber(i));
        api_put(ok, l, "type", cJSON_CreateString(fm_ltype_display(L->type)));
        api_put(ok, l, "output_shape", shape_json(L->out_c, L->out_h, L->out_w));
        api_put(ok, l, "params", cJSON_CreateNumber((double)(L->n_w + L->n_b)));
    }
    api_put(ok, sum, "total_params", cJSON_CreateNumber((double)a->n_params));
    api_put(ok, sum, "macs", cJSON_CreateNumber((double)fm_arch_macs(a)));
    api_put(ok, o, "parameters", cJSON_CreateNumber((double)a->n_params));
    api_put(ok, o, "input_shape", shape_json(a->in_c, a->in_h, a->in_w));
    api_put(ok, o, "classes", cJSON_CreateStringArray(fm_class_names, FM_N_CLASSES));
    api_put(ok, o, "test_accuracy", isfinite(m->test_accuracy) ? cJSON_CreateNumber(m->test_accuracy)
                                                               : cJSON_CreateNull());
    api_put(ok, o, "sha256", cJSON_CreateString(m->m.sha256));
    api_put(ok, o, "file_bytes", cJSON_CreateNumber((double)m->file_bytes));
    api_put(ok, o, "metrics", parse_meta(m, "metrics"));
    api_put(ok, o, "training", parse_meta(m, "training"));
    if (!o) *ok = 0;
    return o;
}

void api_native_models(srv_ctx *ctx, const srv_snap *snap, const srv_request *req, srv_response *resp) {
    (void)ctx, (void)req;
    if (!snap || snap->n_models == 0) {
        srv_error(resp, 503, "no model is loaded; put a .safetensors file in the weights directory and send SIGHUP");
        return;
    }
    int ok = 1;
    cJSON *root = cJSON_CreateObject();
    api_put(&ok, root, "default", cJSON_CreateString(snap->models[snap->default_index].name));
    api_put(&ok, root, "generation", cJSON_CreateNumber((double)snap->generation));
    cJSON *list = api_put(&ok, root, "models", cJSON_CreateArray());
    for (size_t i = 0; i < snap->n_models && ok; i++) api_push(&ok, list, api_model_json(snap, &snap->models[i], &ok));
    api_reply(resp, 200, root, ok);
}

/* ------------------------------------------------------------- /v1/samples */

static int query_size(const srv_request *req, const char *key, size_t min, size_t max, size_t def, size_t *out,
                      srv_response *resp) {
    char v[32];
    int rc = px_query_get(req->query ? req->query : "", key, v, sizeof v);
    *out = def;
    if (rc == PX_ENOTFOUND) return 0;
    if (rc == PX_OK && px_parse_size(v, min, max, out) == PX_OK) return 0;
    srv_error(resp, 400, "bad ?%s= parameter: expected an integer from %zu to %zu", key, min, max);
    return -1;
}

static cJSON *sample_json(const fm_dataset *ds, size_t idx, int *ok) {
    size_t n = ds->rows * ds->cols;
    const uint8_t *px = ds->pixels + idx * n;
    int label = ds->labels[idx] < FM_N_CLASSES ? ds->labels[idx] : 0;
    cJSON *o = cJSON_CreateObject();
    api_put(ok, o, "index", cJSON_CreateNumber((double)idx));
    api_put(ok, o, "label", cJSON_CreateString(fm_class_names[label]));
    api_put(ok, o, "class_id", cJSON_CreateNumber(label));
    char *url = api_png_data_url(px, (int)ds->cols, (int)ds->rows);
    api_put(ok, o, "png", url ? cJSON_CreateString(url) : NULL);
    free(url);
    cJSON *arr = api_put(ok, o, "pixels", cJSON_CreateArray());
    for (size_t i = 0; i < n && *ok; i++) api_push(ok, arr, cJSON_CreateNumber(px[i]));
    if (!o) *ok = 0;
    return o;
}

void api_native_samples(srv_ctx *ctx, const srv_request *req, srv_response *resp) {
    const fm_dataset *ds = ctx->samples;
    if (!ds || ds->n == 0) {
        srv_error(resp, 503, "the Fashion-MNIST test set is not available on this server; install "
                  "dataset-fashion-mnist or start fmnist-serve with --data DIR (or FMNIST_DATA)");
        return;
    }
    size_t offset, count, random, seed;
    if (query_size(req, "offset", 0, ds->n - 1, 0, &offset, resp) || query_size(req, "count", 1, 100, 30, &count, resp) ||
        query_size(req, "random", 0, 1, 0, &random, resp) ||
        query_size(req, "seed", 0, (size_t)UINT32_MAX, 0, &seed, resp))
        return;
    if (!random && count > ds->n - offset) count = ds->n - offset;
    if (random && count > ds->n) count = ds->n;
    size_t idx[100];
    if (random) { /* count <= 100 distinct indices: rejection is cheap */
        fm_rng rng;
        fm_rng_seed(&rng, (uint64_t)seed);
        for (size_t i = 0; i < count; i++) {
            size_t v;
            int dup;
            do {
                v = (size_t)fm_rng_below(&rng, ds->n);
                dup = 0;
                for (size_t j = 0; j < i; j++) dup |= idx[j] == v;
            } while (dup);
            idx[i] = v;
        }
    } else {
        for (size_t i = 0; i < count; i++) idx[i] = offset + i;
    }
    int ok = 1;
    cJSON *root = cJSON_CreateObject();
    api_put(&ok, root, "total", cJSON_CreateNumber((double)ds->n));
    api_put(&ok, root, "offset", cJSON_CreateNumber(random ? 0 : (double)offset));
    api_put(&ok, root, "count", cJSON_CreateNumber((double)count));
    if (random) api_put(&ok, root, "seed", cJSON_CreateNumber((double)seed));
    cJSON *list = api_put(&ok, root, "samples", cJSON_CreateArray());
    for (size_t i = 0; i < count && ok; i++) api_push(&ok, list, sample_json(ds, idx[i], &ok));
    api_reply(resp, 200, root, ok);
}
