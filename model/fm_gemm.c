/* fm_gemm.c - blocked SGEMM in the GotoBLAS style: pack a KC x NC panel of B
 * into NR-wide strips, an MC x KC block of A into MR-tall strips, and run an
 * MR x NR register-blocked micro-kernel over them.  Portable C: the compiler
 * vectorises the micro-kernel; on x86-64 a second copy is compiled for AVX2 +
 * FMA and chosen at load time (target_clones), so the binary still runs on
 * any x86-64.  Not here: multithreading (the trainer splits batches across
 * threads instead), alpha/beta other than 1/0-or-1. */
#include "fm_gemm.h"

#include <stdint.h>
#include <string.h>

#include "fm_common.h" /* FM_CLONES */
#include "fm_simd.h"

enum { MR = FM_GEMM_MR, NR = FM_GEMM_NR, MC = FM_GEMM_MC, KC = FM_GEMM_KC, NC = FM_GEMM_NC };

/* Element (i, k) of op(A), element (k, j) of op(B). */
static inline float at_a(const float *A, size_t lda, int t, size_t i, size_t k) {
    return t ? A[k * lda + i] : A[i * lda + k];
}

/* Packs rows [i0, i0+mc) x cols [k0, k0+kc) of op(A) as strips of MR rows:
 * ap[strip][k][r], zero-padded past mc. */
FM_CLONES
static void pack_a(int t, const float *A, size_t lda, size_t i0, size_t mc, size_t k0, size_t kc,
                   float *ap) {
    for (size_t s = 0; s < mc; s += MR) {
        size_t mr = mc - s < MR ? mc - s : MR;
        if (mr == MR) { /* full strips: constant trip counts, no per-element tests */
            if (t) {
                for (size_t k = 0; k < kc; k++, ap += MR) memcpy(ap, A + (k0 + k) * lda + i0 + s, MR * sizeof(float));
            } else {
                const float *rows = A + (i0 + s) * lda + k0;
                for (size_t k = 0; k < kc; k++, ap += MR)
                    for (size_t r = 0; r < MR; r++) ap[r] = rows[r * lda + k];
            }
            continue;
        }
        for (size_t k = 0; k < kc; k++) {
            for (size_t r = 0; r < mr; r++) ap[r] = at_a(A, lda, t, i0 + s + r, k0 + k);
            for (size_t r = mr; r < MR; r++) ap[r] = 0.0f;
            ap += MR;
        }
    }
}

/* Packs rows [k0, k0+kc) x cols [j0, j0+nc) of op(B) as strips of NR
 * columns: bp[strip][k][c], zero-padded past nc. */
FM_CLONES
static void pack_b(int t, const float *B, size_t ldb, size_t k0, size_t kc, size_t j0, size_t nc,
                   float *bp) {
    for (size_t s = 0; s < nc; s += NR) {
        size_t nr = nc - s < NR ? nc - s : NR;
        if (nr == NR) { /* full strips with constant trip counts: vector moves, no per-element tests */
            if (!t) {
                for (size_t k = 0; k < kc; k++, bp += NR) memcpy(bp, B + (k0 + k) * ldb + j0 + s, NR * sizeof(float));
            } else {
                /* 16 rows of B read along k: each row streams through one cache line at a time */
                const float *rows = B + (j0 + s) * ldb + k0;
                for (size_t k = 0; k < kc; k++, bp += NR)
                    for (size_t c = 0; c < NR; c++) bp[c] = rows[c * ldb + k];
            }
            continue;
        }
        for (size_t k = 0; k < kc; k++) {
            if (!t) {
                memcpy(bp, B + (k0 + k) * ldb + j0 + s, nr * sizeof(float));
            } else {
                for (size_t c = 0; c < nr; c++) bp[c] = B[(j0 + s + c) * ldb + k0 + k];
            }
            for (size_t c = nr; c < NR; c++) bp[c] = 0.0f;
            bp += NR;
        }
    }
}

/* c[0..mr, 0..nr) (+)= sum_k a[k][r] * b[k][c]; the MR x NR accumulator
 * block lives in 12 eight-wide vector registers (v8f, fm_simd.h). */
FM_CLONES
static void kernel(size_t kc, const float *restrict a, const float *restrict b, float *restrict c,
                   size_t ldc, size_t mr, size_t nr, int overwrite) {
    v8f c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    v8f c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (size_t k = 0; k < kc; k++) {
        v8f b0, b1;
        LOAD8(b0, b);
        LOAD8(b1, b + 8);
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
        c40 += a[4] * b0; c41 += a[4] * b1;
        c50 += a[5] * b0; c51 += a[5] * b1;
        a += MR;
        b += NR;
    }
    if (mr == MR && nr == NR) { /* a full tile: straight from the registers (the
                                  * element loops below become a memcpy call per row) */
#define STORE_ROW(r, v0, v1)                                        \
        do {                                                        \
            float *cr_ = c + (r) * ldc;                             \
            if (!overwrite) {                                       \
                v8f t0_, t1_;                                       \
                LOAD8(t0_, cr_);                                    \
                LOAD8(t1_, cr_ + 8);                                \
                v0 = t0_ + v0;                                      \
                v1 = t1_ + v1;                                      \
            }                                                       \
            memcpy(cr_, &v0, 32);                                   \
            memcpy(cr_ + 8, &v1, 32);                               \
        } while (0)
        STORE_ROW(0, c00, c01); STORE_ROW(1, c10, c11); STORE_ROW(2, c20, c21);
        STORE_ROW(3, c30, c31); STORE_ROW(4, c40, c41); STORE_ROW(5, c50, c51);
#undef STORE_ROW
        return;
    }
    float acc[MR][NR];
    memcpy(acc[0], &c00, 32); memcpy(acc[0] + 8, &c01, 32);
    memcpy(acc[1], &c10, 32); memcpy(acc[1] + 8, &c11, 32);
    memcpy(acc[2], &c20, 32); memcpy(acc[2] + 8, &c21, 32);
    memcpy(acc[3], &c30, 32); memcpy(acc[3] + 8, &c31, 32);
    memcpy(acc[4], &c40, 32); memcpy(acc[4] + 8, &c41, 32);
    memcpy(acc[5], &c50, 32); memcpy(acc[5] + 8, &c51, 32);
    for (size_t r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        if (overwrite)
            for (size_t j = 0; j < nr; j++) cr[j] = acc[r][j];
        else
            for (size_t j = 0; j < nr; j++) cr[j] += acc[r][j];
    }
}

/* The micro-kernels for a single row of A (inference on one image): the
 * same operations per output element, in the same order, as kernel()'s
 * first row, so a row's result does not depend on how many rows came with
 * it (bit-identical to the batched answer), without computing MR - 1 rows
 * of padding.
 *
 * They take the row's nonzero entries, listed once per K block by
 * nonzeros() below: a zero a[k] (black background pixels, units cut by
 * ReLU: about half of them) is skipped with its row of B, which halves the
 * weights read from memory.  Skipping changes no bit when B is finite: 0 * b
 * is a zero, and adding a zero leaves the sum as it is (the sum starts at +0
 * and +0 + -0 is +0).  Weights are finite: fm_st refuses NaN and Inf,
 * training stops on a NaN loss.  Listing the nonzeros first, rather than
 * testing a[k] inside the loop, leaves the loop without a data-dependent
 * branch: the zero pattern of an image mispredicted at every change, once
 * per group of strips (bench_handler, 400 different test images: mlp2's
 * forward ~15 % faster; software prefetching of the listed rows measured
 * no further gain). */

/* The nonzero entries of a[0], a[as], ..., a[(kc - 1) * as]: their k in
 * nz_k, their values in nz_v; returns how many.  No branch on the data. */
static size_t nonzeros(size_t kc, const float *a, size_t as, uint32_t *restrict nz_k, float *restrict nz_v) {
    size_t n = 0;
    for (size_t k = 0; k < kc; k++) {
        float v = a[k * as];
        nz_k[n] = (uint32_t)k;
        nz_v[n] = v;
        n += v != 0.0f;
    }
    return n;
}

/* One strip (nr <= NR columns of C) from the row's n nonzeros. */
FM_CLONES
static void kernel1(size_t n, const uint32_t *restrict nz_k, const float *restrict nz_v, const float *restrict b,
                    float *restrict c, size_t nr, int overwrite) {
    v8f c00 = {0}, c01 = {0};
    for (size_t t = 0; t < n; t++) {
        const float *bk = b + (size_t)nz_k[t] * NR;
        v8f b0, b1;
        LOAD8(b0, bk);
        LOAD8(b1, bk + 8);
        c00 += nz_v[t] * b0; c01 += nz_v[t] * b1;
    }
    float acc[NR];
    memcpy(acc, &c00, 32); memcpy(acc + 8, &c01, 32);
    if (overwrite)
        for (size_t j = 0; j < nr; j++) c[j] = acc[j];
    else
        for (size_t j = 0; j < nr; j++) c[j] += acc[j];
}

/* kernel1 for four strips side by side (64 columns of C): eight
 * independent accumulator chains instead of two, so the FMA latency no
 * longer bounds a single row; each element still sums its products in k
 * order, bit for bit as kernel1 (and kernel) does.  Full strips only. */
FM_CLONES
static void kernel1x4(size_t n, const uint32_t *restrict nz_k, const float *restrict nz_v, const float *restrict b,
                      size_t bs, float *restrict c, int overwrite) {
    v8f c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0}, c7 = {0};
    const float *b0p = b, *b1p = b + bs, *b2p = b + 2 * bs, *b3p = b + 3 * bs;
    for (size_t t = 0; t < n; t++) {
        size_t o = (size_t)nz_k[t] * NR;
        float a = nz_v[t];
        v8f x0, x1, x2, x3, x4, x5, x6, x7;
        LOAD8(x0, b0p + o), LOAD8(x1, b0p + o + 8), LOAD8(x2, b1p + o), LOAD8(x3, b1p + o + 8);
        LOAD8(x4, b2p + o), LOAD8(x5, b2p + o + 8), LOAD8(x6, b3p + o), LOAD8(x7, b3p + o + 8);
        c0 += a * x0; c1 += a * x1; c2 += a * x2; c3 += a * x3;
        c4 += a * x4; c5 += a * x5; c6 += a * x6; c7 += a * x7;
    }
    float acc[4 * NR];
    memcpy(acc, &c0, 32), memcpy(acc + 8, &c1, 32), memcpy(acc + 16, &c2, 32), memcpy(acc + 24, &c3, 32);
    memcpy(acc + 32, &c4, 32), memcpy(acc + 40, &c5, 32), memcpy(acc + 48, &c6, 32), memcpy(acc + 56, &c7, 32);
    if (overwrite)
        memcpy(c, acc, sizeof acc);
    else
        for (size_t j = 0; j < 4 * NR; j++) c[j] += acc[j];
}

/* Where op(A)'s blocks and op(B)'s panels come from: a matrix packed here
 * into scratch, a matrix packed once beforehand (fm_gemm_pack_a/_b), or a
 * function that gathers them (a convolution's patches).  One kind each,
 * chosen by the caller; the blocked loop below asks the source, so no path
 * is picked by which arguments happen to be NULL. */
typedef enum src_kind { SRC_MATRIX, SRC_PACKED, SRC_FN } src_kind;
typedef struct gemm_a {
    src_kind kind;
    const float *m; /* MATRIX: op(A) = trans ? m^T : m, row length ld */
    size_t ld;
    int trans;
    const float *packed; /* PACKED: fm_gemm_pack_a's layout */
    fm_pack_a_fn fn;     /* FN */
    const void *ctx;
} gemm_a;
typedef struct gemm_b {
    src_kind kind;
    const float *m;
    size_t ld;
    int trans;
    const float *packed; /* PACKED: fm_gemm_pack_b's layout, consumed panel by panel */
    fm_pack_b_fn fn;
    const void *ctx;
} gemm_b;

/* Floats before block (pc, ic) of A packed by fm_gemm_pack_a: the K
 * blocks in order, each holding the M rows (padded to strips) in MC blocks. */
static size_t packed_a_offset(size_t M, size_t pc, size_t ic, size_t kc) {
    return pc * ((M + MR - 1) / MR * MR) + ic * kc;
}

/* The MC x KC block (ic, pc) of A as strips, in scratch or where it was
 * packed; *as = the stride between consecutive k of one row (MR in strips,
 * 1 for a single untransposed row read in place). */
static const float *a_block(const gemm_a *A, size_t M, size_t ic, size_t mc, size_t pc, size_t kc, float *scratch,
                            size_t *as) {
    *as = MR;
    switch (A->kind) {
    case SRC_PACKED: return A->packed + packed_a_offset(M, pc, ic, kc);
    case SRC_FN: A->fn(A->ctx, ic, mc, pc, kc, scratch); return scratch;
    case SRC_MATRIX: break;
    }
    if (mc == 1 && !A->trans) { /* one row (an image): read it in place */
        *as = 1;
        return A->m + ic * A->ld + pc;
    }
    pack_a(A->trans, A->m, A->ld, ic, mc, pc, kc, scratch);
    return scratch;
}

/* The KC x NC panel (pc, jc) of B as strips.  A packed B is read in order:
 * *cursor walks its panels. */
static const float *b_panel(const gemm_b *B, const float **cursor, size_t pc, size_t kc, size_t jc, size_t nc,
                            float *bpack) {
    switch (B->kind) {
    case SRC_PACKED: {
        const float *bp = *cursor;
        *cursor += (nc + NR - 1) / NR * NR * kc;
        return bp;
    }
    case SRC_FN: B->fn(B->ctx, pc, kc, jc, nc, bpack); return bpack;
    case SRC_MATRIX: break;
    }
    pack_b(B->trans, B->m, B->ld, pc, kc, jc, nc, bpack);
    return bpack;
}

/* The blocked loops over C[M,N] (+)= op(A) op(B). */
static void gemm(size_t M, size_t N, size_t K, const gemm_a *A, const gemm_b *B, int accumulate, float *C,
                 size_t ldc, float *scratch) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate)
            for (size_t i = 0; i < M; i++) memset(C + i * ldc, 0, N * sizeof(float));
        return;
    }
    float *bpack = scratch + (size_t)MC * KC; /* [NC/NR][KC][NR]; A blocks use [MC/MR][KC][MR] before it */
    const float *cursor = B->packed;
    for (size_t jc = 0; jc < N; jc += NC) {
        size_t nc = N - jc < NC ? N - jc : NC;
        for (size_t pc = 0; pc < K; pc += KC) {
            size_t kc = K - pc < KC ? K - pc : KC;
            int overwrite = pc == 0 && !accumulate;
            const float *bp = b_panel(B, &cursor, pc, kc, jc, nc, bpack);
            for (size_t ic = 0; ic < M; ic += MC) {
                size_t mc = M - ic < MC ? M - ic : MC;
                size_t as; /* stride of kernel1's A */
                const float *ap = a_block(A, M, ic, mc, pc, kc, scratch, &as);
                /* A row alone in its strip (one image, or the last of a
                 * batch) runs on its nonzeros: listed once for all strips of B. */
                size_t lone = mc % MR == 1 ? mc - 1 : SIZE_MAX;
                uint32_t nz_k[KC];
                float nz_v[KC];
                size_t n = lone != SIZE_MAX ? nonzeros(kc, ap + lone * kc, as, nz_k, nz_v) : 0;
                size_t jr = 0;
                if (mc == 1) /* four strips at a time while they last */
                    for (; jr + 4 * NR <= nc; jr += 4 * NR)
                        kernel1x4(n, nz_k, nz_v, bp + jr * kc, NR * kc, C + ic * ldc + jc + jr, overwrite);
                for (; jr < nc; jr += NR) {
                    size_t nr = nc - jr < NR ? nc - jr : NR;
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        float *c = C + (ic + ir) * ldc + jc + jr;
                        if (ir == lone)
                            kernel1(n, nz_k, nz_v, bp + jr * kc, c, nr, overwrite);
                        else
                            kernel(kc, ap + ir * kc, bp + jr * kc, c, ldc, mc - ir < MR ? mc - ir : MR, nr, overwrite);
                    }
                }
            }
        }
    }
}

void fm_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, const float *A, size_t lda,
              const float *B, size_t ldb, int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_MATRIX, .m = A, .ld = lda, .trans = trans_a};
    gemm_b b = {.kind = SRC_MATRIX, .m = B, .ld = ldb, .trans = trans_b};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

size_t fm_gemm_packed_size(size_t N, size_t K) {
    size_t total = 0;
    for (size_t jc = 0; jc < N; jc += NC) {
        size_t nc = N - jc < NC ? N - jc : NC;
        total += (nc + NR - 1) / NR * NR * K;
    }
    return total;
}

void fm_gemm_pack_b(int trans_b, size_t N, size_t K, const float *B, size_t ldb, float *packed) {
    for (size_t jc = 0; jc < N; jc += NC) {
        size_t nc = N - jc < NC ? N - jc : NC;
        for (size_t pc = 0; pc < K; pc += KC) {
            size_t kc = K - pc < KC ? K - pc : KC;
            pack_b(trans_b, B, ldb, pc, kc, jc, nc, packed);
            packed += (nc + NR - 1) / NR * NR * kc;
        }
    }
}

void fm_sgemm_pb(size_t M, size_t N, size_t K, const float *A, size_t lda, const float *packed, int accumulate,
                 float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_MATRIX, .m = A, .ld = lda};
    gemm_b b = {.kind = SRC_PACKED, .packed = packed};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

size_t fm_gemm_packed_a_size(size_t M, size_t K) { return (M + MR - 1) / MR * MR * K; }

void fm_gemm_pack_a(size_t M, size_t K, const float *A, size_t lda, float *packed) {
    for (size_t pc = 0; pc < K; pc += KC) {
        size_t kc = K - pc < KC ? K - pc : KC;
        for (size_t ic = 0; ic < M; ic += MC) {
            size_t mc = M - ic < MC ? M - ic : MC;
            pack_a(0, A, lda, ic, mc, pc, kc, packed + packed_a_offset(M, pc, ic, kc));
        }
    }
}

void fm_sgemm_pa(size_t M, size_t N, size_t K, const float *packed, const float *B, size_t ldb, int accumulate,
                 float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_PACKED, .packed = packed};
    gemm_b b = {.kind = SRC_MATRIX, .m = B, .ld = ldb};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

void fm_sgemm_pa_fn(size_t M, size_t N, size_t K, const float *packed, fm_pack_b_fn pack, const void *ctx,
                    int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_PACKED, .packed = packed};
    gemm_b b = {.kind = SRC_FN, .fn = pack, .ctx = ctx};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

void fm_sgemm_fn_pb(size_t M, size_t N, size_t K, fm_pack_a_fn pack, const void *ctx, const float *packed,
                    int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_FN, .fn = pack, .ctx = ctx};
    gemm_b b = {.kind = SRC_PACKED, .packed = packed};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

void fm_sgemm_b_fn(size_t M, size_t N, size_t K, const float *A, size_t lda, fm_pack_b_fn pack, const void *ctx,
                   int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_MATRIX, .m = A, .ld = lda};
    gemm_b b = {.kind = SRC_FN, .fn = pack, .ctx = ctx};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

void fm_sgemm_fn_b(size_t M, size_t N, size_t K, fm_pack_a_fn pack, const void *ctx, const float *B, size_t ldb,
                   int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_FN, .fn = pack, .ctx = ctx};
    gemm_b b = {.kind = SRC_MATRIX, .m = B, .ld = ldb};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

void fm_sgemm_fn_fn(size_t M, size_t N, size_t K, fm_pack_a_fn pack_a, const void *ctx_a, fm_pack_b_fn pack_b,
                    const void *ctx_b, int accumulate, float *C, size_t ldc, float *scratch) {
    gemm_a a = {.kind = SRC_FN, .fn = pack_a, .ctx = ctx_a};
    gemm_b b = {.kind = SRC_FN, .fn = pack_b, .ctx = ctx_b};
    gemm(M, N, K, &a, &b, accumulate, C, ldc, scratch);
}

const char *fm_gemm_kernel_name(void) {
#if FM_HAVE_CLONES
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "avx2+fma" : "generic";
#else
    return "generic";
#endif
}
