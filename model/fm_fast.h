/* fm_fast.h - the optimised inference kernels the plan (fm_plan.h) runs:
 * weights packed once at load in the GEMM's panel layout, a convolution's
 * patches gathered straight into the GEMM panels, bias + relu + 2x2 max-pool
 * in one pass.  Each is proven bit-identical to the reference kernels of
 * fm_layers.h (the same products summed in the same order; tests/test_fast.c),
 * so a model serves exactly what it was evaluated with.  Not here: training
 * (backward), anything with a different summation order. */
#ifndef FM_FAST_H
#define FM_FAST_H

#include <stddef.h>

/* 1 when a convolution with an OH x OW output is better computed as
 * patches x weights^T (operand B = the weights), 0 for weights x patches:
 * an output of fewer positions than a GEMM strip's 16 columns (cnn3's third
 * convolution: 9) would leave most of each strip padding. */
int fm_conv2d_packs_b(size_t OH, size_t OW);
/* Floats of a convolution's packed weights [O, C*K*K] for an OH x OW output,
 * and the packing itself (operand A, or B when fm_conv2d_packs_b). */
size_t fm_conv2d_packed_size(size_t O, size_t CKK, size_t OH, size_t OW);
void fm_conv2d_pack(float *pw, const float *w, size_t O, size_t CKK, size_t OH, size_t OW);
/* fm_conv2d_forward with the weights packed by fm_conv2d_pack: bit for bit
 * the same y.  b = NULL leaves the bias out (see fm_maxpool2_bias_relu).
 * Scratch: fm_conv2d_fast_scratch floats. */
void fm_conv2d_forward_packed(float *y, const float *x, const float *pw, const float *b, size_t N, size_t C, size_t H,
                              size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk,
                              float *gemm);

/* The training convolution: fm_conv2d_forward / fm_conv2d_backward with the
 * patches gathered straight into the GEMM's panels from a zero-padded copy
 * of the input (no im2col matrix, no second packing pass), and the output
 * gradient read in place in both orientations the backward needs (no
 * transposed copy).  The GEMM sees the same numbers in the same order, so
 * the results are bit for bit the reference's.  Scratch:
 * fm_conv2d_fast_scratch floats. */
size_t fm_conv2d_fast_scratch(size_t C, size_t O, size_t K, size_t H, size_t W, size_t S, size_t P, size_t chunk);
void fm_conv2d_forward_fast(float *y, const float *x, const float *w, const float *b, size_t N, size_t C, size_t H,
                            size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk,
                            float *gemm);
void fm_conv2d_backward_fast(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                             size_t N, size_t C, size_t H, size_t W, size_t O, size_t K, size_t S, size_t P,
                             float *scratch, size_t chunk, float *gemm);

/* A linear layer's weights [O, I] packed as GEMM operand B (fm_gemm_pack_b),
 * and fm_linear_forward from them: bit for bit the same y. */
size_t fm_linear_packed_size(size_t O, size_t I);
void fm_linear_pack(float *pw, const float *w, size_t O, size_t I);
void fm_linear_forward_packed(float *y, const float *x, const float *pw, const float *b, size_t N, size_t I, size_t O,
                              float *gemm);

/* Inference tails of a convolution whose bias was left out, in one pass
 * instead of three:
 *   y[N,C,H/2,W/2] = relu(maxpool2x2(x) + b[c])   (conv, relu, 2x2 max-pool)
 *   y[N,C,HW]      = relu(x + b[c])               (conv, relu; y may equal x)
 * Bit for bit what adding the bias, relu and pooling in turn give: rounding
 * x + b is monotonic in x, so the largest of four sums is the sum with the
 * largest of the four, and relu only turns signs of zero into +0. */
void fm_maxpool2_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t H, size_t W);
void fm_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t HW);

#endif
