/* fuzz_multipart.c - libFuzzer target for multipart/form-data handling.
 *
 * Input: a Content-Type header value up to the first '\n', then the body.
 * px_multipart_boundary extracts the boundary; px_multipart_parse splits the
 * body (at most 8 parts here) and every part it returns must lie inside the
 * body with its name present; px_unquote resolves the name and filename.
 * Then the whole request goes to POST /v1/classify through srv_handle(), the
 * path the server takes (image parts decoded, a JSON part read as JSON), and
 * the response must keep the server's invariants (fuzz_handle). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const void *p, size_t n, const uint8_t *body, size_t len) {
    const uint8_t *q = p;
    return q >= body && n <= len && (size_t)(q - body) <= len - n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl) return 0;
    char *ct = fuzz_strndup(data, (size_t)(nl - data));
    size_t len = size - (size_t)(nl - data) - 1;
    uint8_t *body = malloc(len ? len : 1); /* private copy: reads past the end are caught */
    if (!body) abort();
    memcpy(body, nl + 1, len);

    char boundary[PX_BOUNDARY_MAX + 1];
    int rc = px_multipart_boundary(ct, boundary, sizeof boundary);
    if (rc == PX_OK) {
        size_t blen = strlen(boundary);
        if (blen == 0 || blen > PX_BOUNDARY_MAX) abort();
        px_part parts[8];
        size_t n = 0;
        char err[256];
        rc = px_multipart_parse(body, len, boundary, parts, 8, &n, err, sizeof err);
        if (n > 8) abort();
        if (rc == PX_OK) {
            for (size_t i = 0; i < n; i++) {
                const px_part *p = &parts[i];
                if (!p->name || !inside(p->name, p->name_len, body, len) ||
                    (p->filename && !inside(p->filename, p->filename_len, body, len)) ||
                    (p->content_type && !inside(p->content_type, p->content_type_len, body, len)) ||
                    (p->data_len && !inside(p->data, p->data_len, body, len))) {
                    fprintf(stderr, "part %zu points outside the body\n", i);
                    abort();
                }
                char name[512];
                size_t nlen;
                if (px_unquote(p->name, p->name_len, name, sizeof name, &nlen) == PX_OK && nlen > p->name_len) abort();
                if (p->filename &&
                    px_unquote(p->filename, p->filename_len, name, sizeof name, &nlen) == PX_OK &&
                    nlen > p->filename_len)
                    abort();
            }
        }
    }
    srv_ctx *ctx = fuzz_ctx();
    fuzz_handle(ctx, "POST", "/v1/classify", "", ct, body, len);
    free(body);
    free(ct);
    return 0;
}
