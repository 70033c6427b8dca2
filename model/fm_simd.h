/* fm_simd.h - the engine's eight-float vectors (GCC/clang vector
 * extensions: one AVX2 register in the x86-64-v3 clones, a pair of SSE
 * registers otherwise), shared by the GEMM and the layers.  Internal. */
#ifndef FM_SIMD_H
#define FM_SIMD_H

#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* An unaligned load of 8 floats.  A macro, not a function: returning a
 * vector by value changes the ABI warning-worthily. */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))

#endif
