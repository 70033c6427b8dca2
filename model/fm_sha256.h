/* fm_sha256.h - SHA-256 (FIPS 180-4), small and self-contained.
 *
 * Used to fingerprint weight files: a loaded model reports the digest of the
 * exact bytes it came from, so a prediction can be traced to its weights.
 * Not constant-time and not meant for secrets (nothing here is secret). */
#ifndef FM_SHA256_H
#define FM_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* Incremental interface: init, update any number of times, final. */
typedef struct fm_sha256_ctx {
    uint32_t h[8];     /* chaining state */
    uint64_t n_bytes;  /* message length so far */
    uint8_t block[64]; /* pending partial block */
    size_t n_block;    /* bytes in block, < 64 */
} fm_sha256_ctx;

void fm_sha256_init(fm_sha256_ctx *c);
void fm_sha256_update(fm_sha256_ctx *c, const void *data, size_t len);
void fm_sha256_final(fm_sha256_ctx *c, uint8_t out[32]); /* leaves c unusable until init */

/* One-shot digest of data[0..len). */
void fm_sha256(const void *data, size_t len, uint8_t out[32]);
/* Same, as 64 lowercase hex digits and a NUL. */
void fm_sha256_hex(const void *data, size_t len, char out[65]);

#endif
