/* fuzz_json.c - libFuzzer target for the JSON request parsers, through
 * srv_handle() exactly as the server runs them (depth/size pre-scan, cJSON,
 * instance shapes, "scale", {"b64": ...} images and data: URLs, inference):
 *
 *   byte 0, bits 0-1  route: native POST /v1/classify, KServe v2
 *                     POST /v2/models/mlp2/infer, TF Serving
 *                     POST /v1/models/mlp2:predict, TorchServe
 *                     POST /predictions/mlp2
 *   byte 0, bits 2-3  query: none, top=3, invert=false&top=10,
 *                     model=mlp2&invert=true
 *   byte 0, bit 4     Content-Type: application/json, or none
 *   the rest          the request body
 *
 * Every response must keep the server's invariants (fuzz_handle: a valid
 * status, a JSON body that parses, {"error": string} for errors).  The body
 * also goes straight through px_strip_data_url + px_b64_decode (the base64
 * front of every b64 field), out of place and in place, which must agree. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void b64(const uint8_t *data, size_t size) {
    const char *payload, *mime;
    size_t payload_len, mime_len;
    if (px_strip_data_url((const char *)data, size, &payload, &payload_len, &mime, &mime_len) != PX_OK) return;
    if (payload < (const char *)data || payload + payload_len > (const char *)data + size) abort();
    size_t cap = px_b64_decoded_max(payload_len);
    uint8_t *out = malloc(cap ? cap : 1);
    char *inplace = malloc(payload_len ? payload_len : 1);
    if (!out || !inplace) abort();
    size_t n1 = 0, n2 = 0;
    int rc1 = px_b64_decode(payload, payload_len, out, cap, &n1);
    if (payload_len) memcpy(inplace, payload, payload_len);
    int rc2 = px_b64_decode(inplace, payload_len, (uint8_t *)inplace, payload_len, &n2);
    if (rc1 == PX_OK && n1 > cap) abort();
    /* In place the buffer is payload_len bytes, never less than the output. */
    if (rc1 != rc2 || n1 != n2 || (rc1 == PX_OK && n1 && memcmp(out, inplace, n1) != 0)) {
        fprintf(stderr, "b64: in-place decoding differs (rc %d/%d, len %zu/%zu)\n", rc1, rc2, n1, n2);
        abort();
    }
    free(out);
    free(inplace);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const paths[4] = {"/v1/classify", "/v2/models/mlp2/infer", "/v1/models/mlp2:predict",
                                         "/predictions/mlp2"};
    static const char *const queries[4] = {"", "top=3", "invert=false&top=10", "model=mlp2&invert=true"};
    if (size < 1) return 0;
    srv_ctx *ctx = fuzz_ctx();
    unsigned sel = data[0];
    /* A private copy, so a read past the end is caught by ASan. */
    uint8_t *body = malloc(size - 1 ? size - 1 : 1);
    if (!body) abort();
    memcpy(body, data + 1, size - 1);
    fuzz_handle(ctx, "POST", paths[sel & 3], queries[(sel >> 2) & 3], (sel & 16) ? NULL : "application/json",
                body, size - 1);
    b64(body, size - 1);
    free(body);
    return 0;
}
