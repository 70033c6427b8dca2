/* fm_rng.h - explicit, seedable random numbers (xoshiro256**, seeded by
 * splitmix64).  State is always passed by pointer: there is no global RNG,
 * so a training run is reproducible from its seed, and independent streams
 * (one per epoch, batch and worker thread) are derived with fm_rng_derive()
 * instead of being shared between threads. */
#ifndef FM_RNG_H
#define FM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_rng {
    uint64_t s[4];
} fm_rng;

void fm_rng_seed(fm_rng *r, uint64_t seed);
/* A stream that depends only on (seed, a, b, c): e.g. (seed, epoch, batch, thread). */
void fm_rng_derive(fm_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c);
uint64_t fm_rng_u64(fm_rng *r);
uint32_t fm_rng_u32(fm_rng *r);
/* Uniform in [0, 1) with 24 bits of precision (exactly representable). */
float fm_rng_uniform(fm_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t fm_rng_below(fm_rng *r, uint64_t n);
/* Fisher-Yates shuffle of idx[0..n). */
void fm_rng_shuffle(fm_rng *r, uint32_t *idx, size_t n);

#endif
