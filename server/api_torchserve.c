/* api_torchserve.c - TorchServe-style routes: POST|PUT /predictions/NAME
 * (curl -T shoe.png sends PUT) and GET /ping.
 *
 * Like TorchServe's image_classifier handler, a prediction is the top five
 * classes as one JSON object {"label": probability, ...}, highest first
 * (cJSON keeps insertion order).  The body is a raw image or a multipart
 * form whose field "data" holds it (else its first image part), as
 * TorchServe clients send.  ?invert= works as on /v1/classify.
 *
 * Left out: TorchServe's management API, batching across requests, JSON
 * bodies (use /v1/classify or the v2 protocol for tensors). */
#include <stdio.h>
#include <string.h>

#include "api.h"

#define TS_TOP 5

void api_ts_ping(srv_ctx *ctx, const srv_snap *snap, srv_response *resp) {
    int ok = 1, healthy = snap && snap->n_models > 0 && !atomic_load(&ctx->draining);
    cJSON *o = cJSON_CreateObject();
    api_put(&ok, o, "status", cJSON_CreateString(healthy ? "Healthy" : "Unhealthy"));
    if (!healthy) api_put(&ok, o, "error", cJSON_CreateString("no model is loaded, or the server is shutting down"));
    api_reply(resp, healthy ? 200 : 503, o, ok);
}

void api_ts_predict(srv_ctx *ctx, const srv_snap *snap, const srv_model *m, const srv_request *req,
                    srv_response *resp) {
    img_invert mode;
    if (api_query_invert(req, &mode, resp)) return;
    api_inputs in;
    int rc = api_read_images(ctx, req, mode, "data", &in, resp);
    if (rc < 0) return;
    if (rc == 1) {
        char ct[96];
        api_clip(ct, sizeof ct, req->content_type ? req->content_type : "(none)");
        srv_error(resp, 415, "unsupported body: send a PNG, JPEG, BMP, GIF or PNM image (curl -T shoe.png) or a "
                  "multipart form with the image in field \"data\" (Content-Type was %s)", ct);
        return;
    }
    if (api_infer(ctx, snap, m, &in, resp)) {
        api_inputs_free(&in);
        return;
    }
    int order[FM_N_CLASSES], ok = 1;
    api_rank(in.probs, order);
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; k < TS_TOP; k++) api_put(&ok, o, fm_class_names[order[k]], api_float(in.probs[order[k]]));
    api_inputs_free(&in);
    api_reply(resp, 200, o, ok);
}
