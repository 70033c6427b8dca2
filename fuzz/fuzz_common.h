/* fuzz_common.h - shared fixture of the libFuzzer targets that go through
 * srv_handle(): a private temporary directory with one small real model
 * (mlp2, seeded Glorot weights, saved with fm_st_save and loaded back with
 * srv_snap_load, exactly as the server does), report files, a static
 * directory with a file, a sub-directory, a dot-file and a symlink pointing
 * out of it, and a five-image sample set.  The directory is removed at exit.
 *
 * Limits are set low so that a single input cannot make one execution slow
 * or large: FUZZ_MAX_PIXELS per image (a decompression bomb is refused from
 * its header) and FUZZ_MAX_BATCH examples per request. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "srv.h"

#define FUZZ_MAX_PIXELS ((size_t)1 << 16) /* 256x256 */
#define FUZZ_MAX_BATCH 4

/* Builds the fixture once (aborts on failure: a broken fixture would make
 * every execution meaningless); returns the context for srv_handle. */
srv_ctx *fuzz_ctx(void);

/* Calls srv_handle and checks the invariants every response must keep: a
 * status in 100..599, a route label, a JSON error body for statuses >= 400.
 * Frees the response.  Aborts (a crash libFuzzer reports) on a violation. */
void fuzz_handle(srv_ctx *ctx, const char *method, const char *path, const char *query,
                 const char *content_type, const uint8_t *body, size_t len);

/* A NUL-terminated malloc'd copy of data[0..len) (aborts on OOM). */
char *fuzz_strndup(const uint8_t *data, size_t len);

#endif
