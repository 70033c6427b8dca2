/* fuzz_url.c - libFuzzer target for URL and query parsing and static path
 * resolution.
 *
 * Input: byte 0 picks the method (GET, HEAD, POST, PUT, DELETE, OPTIONS,
 * PATCH, BREW); the rest is a request target "path?query" (cut at the first
 * NUL, split at the first '?').  The pieces go through px_path_decode,
 * px_static_resolve (against a static directory holding files, a
 * sub-directory, a dot-file and a symlink out), px_mime_type, px_query_get
 * for every query key the server reads (and the first key of the query
 * itself), px_parse_int / px_parse_size on the values, px_content_type_is
 * and px_multipart_boundary on the query text, then the whole request goes
 * through srv_handle() (routing, reports, samples, models, static files).
 * A resolved static path must lie under the static root. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const methods[8] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"};
    if (size < 1) return 0;
    srv_ctx *ctx = fuzz_ctx();
    const char *method = methods[data[0] & 7];
    char *target = fuzz_strndup(data + 1, size - 1);
    char *q = strchr(target, '?');
    const char *query = "";
    if (q) {
        *q = '\0';
        query = q + 1;
    }
    /* Private copies of exact length, so ASan sees any over-read. */
    char *path = fuzz_strndup((const uint8_t *)target, strlen(target));
    char *qs = fuzz_strndup((const uint8_t *)query, strlen(query));

    char buf[PX_STATIC_MAX_PATH + 1];
    (void)px_path_decode(path, buf, sizeof buf);
    char file[4096];
    if (px_static_resolve(ctx->static_root, path, file, sizeof file) == PX_OK) {
        size_t rl = strlen(ctx->static_root);
        if (strncmp(file, ctx->static_root, rl) != 0 || file[rl] != '/') {
            fprintf(stderr, "resolved outside the root: %s\n", file);
            abort();
        }
    }
    (void)px_mime_type(path);

    static const char *const keys[] = {"model", "top", "invert", "offset", "count", "field", "a b", "%"};
    char val[64];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (px_query_get(qs, keys[i], val, sizeof val) != PX_OK) continue;
        int iv;
        size_t sv;
        (void)px_parse_int(val, -1000, 1000, &iv);
        (void)px_parse_size(val, 0, 60000, &sv);
    }
    char key[64];
    size_t kl = strcspn(qs, "=&");
    if (kl && kl < sizeof key) {
        memcpy(key, qs, kl);
        key[kl] = '\0';
        (void)px_query_get(qs, key, val, sizeof val);
    }
    (void)px_content_type_is(qs, "application/json");
    char boundary[PX_BOUNDARY_MAX + 1];
    (void)px_multipart_boundary(qs, boundary, sizeof boundary);

    fuzz_handle(ctx, method, path, qs, NULL, NULL, 0);
    free(qs);
    free(path);
    free(target);
    return 0;
}
