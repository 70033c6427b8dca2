/* fm_gemm.h - the one matrix multiply every layer is built on.
 *
 *   C[M,N] = (accumulate ? C : 0) + op(A)[M,K] * op(B)[K,N]
 *
 * op(X) is X or its transpose (trans_* != 0).  Row-major storage with
 * leading dimensions lda, ldb, ldc (the length of a stored row).  A and B are
 * packed into caller-provided scratch of FM_GEMM_SCRATCH floats (no
 * allocation inside, so it is safe on the serving hot path and between
 * threads, each with its own scratch).  The summation order depends only on
 * the sizes, never on threads: results are bit-reproducible. */
#ifndef FM_GEMM_H
#define FM_GEMM_H

#include <stddef.h>

#define FM_GEMM_MR 6
#define FM_GEMM_NR 16
#define FM_GEMM_MC 72
#define FM_GEMM_KC 256
#define FM_GEMM_NC 512
#define FM_GEMM_SCRATCH ((size_t)FM_GEMM_MC * FM_GEMM_KC + (size_t)FM_GEMM_KC * FM_GEMM_NC)

void fm_sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, const float *A, size_t lda,
              const float *B, size_t ldb, int accumulate, float *C, size_t ldc, float *scratch);

/* Weights are constant during inference, so B can be packed once: the
 * packed form of op(B) [K,N] takes fm_gemm_packed_size(N, K) floats, is
 * made by fm_gemm_pack_b and used by fm_sgemm_pb, which computes exactly
 * (bit for bit) what fm_sgemm(0, trans_b, ...) computes from B itself,
 * without packing B again on every call. */
size_t fm_gemm_packed_size(size_t N, size_t K);
void fm_gemm_pack_b(int trans_b, size_t N, size_t K, const float *B, size_t ldb, float *packed);
void fm_sgemm_pb(size_t M, size_t N, size_t K, const float *A, size_t lda, const float *packed, int accumulate,
                 float *C, size_t ldc, float *scratch);

/* The same for A, when A is the constant operand (a convolution's weights
 * [O, C*K*K] times its im2col patches): fm_sgemm_pa computes exactly what
 * fm_sgemm(0, 0, ...) computes from A itself. */
size_t fm_gemm_packed_a_size(size_t M, size_t K);
void fm_gemm_pack_a(size_t M, size_t K, const float *A, size_t lda, float *packed);
void fm_sgemm_pa(size_t M, size_t N, size_t K, const float *packed, const float *B, size_t ldb, int accumulate,
                 float *C, size_t ldc, float *scratch);

/* fm_sgemm_pa with B produced panel by panel by pack(ctx, k0, kc, j0, nc,
 * bp): rows [k0, k0+kc) x columns [j0, j0+nc) of B as strips of
 * FM_GEMM_NR columns, bp[strip][k][c], zero past nc - what fm_sgemm would
 * pack from B itself, so the result is the same bit for bit.  A
 * convolution uses it to gather its patches straight into the panels. */
typedef void (*fm_pack_b_fn)(const void *ctx, size_t k0, size_t kc, size_t j0, size_t nc, float *bp);
void fm_sgemm_pa_fn(size_t M, size_t N, size_t K, const float *packed, fm_pack_b_fn pack, const void *ctx,
                    int accumulate, float *C, size_t ldc, float *scratch);

/* fm_sgemm_pb with A produced block by block by pack(ctx, i0, mc, k0, kc,
 * ap): rows [i0, i0+mc) x columns [k0, k0+kc) of A as strips of FM_GEMM_MR
 * rows, ap[strip][k][r], zero past mc - what fm_sgemm would pack from A
 * itself, so the result is the same bit for bit.  A convolution with a
 * small output gathers its patches (as rows) this way. */
typedef void (*fm_pack_a_fn)(const void *ctx, size_t i0, size_t mc, size_t k0, size_t kc, float *ap);
void fm_sgemm_fn_pb(size_t M, size_t N, size_t K, fm_pack_a_fn pack, const void *ctx, const float *packed,
                    int accumulate, float *C, size_t ldc, float *scratch);

/* The same loops with the operands from other sources: A a matrix and B
 * gathered (fm_sgemm_b_fn), A gathered and B a matrix (fm_sgemm_fn_b), both
 * gathered (fm_sgemm_fn_fn).  Bit for bit what fm_sgemm gives on the
 * matrices the functions gather from.  A convolution's training passes
 * gather their patches and output gradients this way. */
void fm_sgemm_b_fn(size_t M, size_t N, size_t K, const float *A, size_t lda, fm_pack_b_fn pack, const void *ctx,
                   int accumulate, float *C, size_t ldc, float *scratch);
void fm_sgemm_fn_b(size_t M, size_t N, size_t K, fm_pack_a_fn pack, const void *ctx, const float *B, size_t ldb,
                   int accumulate, float *C, size_t ldc, float *scratch);
void fm_sgemm_fn_fn(size_t M, size_t N, size_t K, fm_pack_a_fn pack_a, const void *ctx_a, fm_pack_b_fn pack_b,
                    const void *ctx_b, int accumulate, float *C, size_t ldc, float *scratch);

/* Which micro-kernel the CPU dispatch picked ("avx2+fma" or "generic"), for logs. */
const char *fm_gemm_kernel_name(void);

#endif
