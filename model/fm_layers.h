/* fm_layers.h - stateless forward/backward kernels, one pair per layer.
 *
 * Shape vocabulary: N batch, C input channels, H x W input plane, O output
 * channels/features, K kernel side, P padding, OH x OW output plane, I input
 * features.  All tensors are row-major float32, NCHW for images.  Argument
 * order everywhere: outputs, saved state, inputs, weights, sizes, scratch.
 * Backward functions *accumulate* parameter gradients (+=) so that several
 * batches or threads can share a gradient buffer, and *overwrite* input
 * gradients.  Gradients carry a d prefix. */
#ifndef FM_LAYERS_H
#define FM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_rng.h"

/* y[N,O] = x[N,I] w[O,I]^T + b[O].  pw: w packed by fm_gemm_pack_b(1, O, I, w, I, pw)
 * (same result, faster for inference), or NULL. */
void fm_linear_forward(float *y, const float *x, const float *w, const float *pw, const float *b, size_t N,
                       size_t I, size_t O, float *gemm);
/* dx[N,I] = dy w (skipped when dx is NULL); dw[O,I] += dy^T x; db[O] += sum_n dy */
void fm_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, size_t N, size_t I, size_t O, float *gemm);

/* Scratch floats conv2d needs for chunks of `chunk` images (forward and backward). */
size_t fm_conv2d_scratch(size_t C, size_t O, size_t K, size_t OH, size_t OW, size_t chunk);
/* y[N,O,OH,OW] = sum_{c,kh,kw} w[O,C,K,K] x[N,C,oh+kh-P,ow+kw-P] + b[O], zero outside x;
 * stride 1, OH = H + 2P - K + 1.  Computed as im2col + GEMM (w times the
 * patches, which gives y's channel-major layout), `chunk` images at a time. */
/* pw: w packed once for inference, or NULL: as GEMM operand A,
 * fm_gemm_pack_a(O, C*K*K, w, C*K*K, pw), or - when fm_conv2d_packs_b(OH,
 * OW) says so - as operand B, fm_gemm_pack_b(1, O, C*K*K, w, C*K*K, pw).
 * b = NULL leaves the bias out (see fm_maxpool2_bias_relu). */
/* 1 when a convolution with an OH x OW output is better computed as
 * patches x weights^T (operand B = the weights), 0 for weights x patches:
 * an output of fewer positions than a GEMM strip's 16 columns (cnn3's third
 * convolution: 9) would leave most of each strip padding. */
int fm_conv2d_packs_b(size_t OH, size_t OW);
void fm_conv2d_forward(float *y, const float *x, const float *w, const float *pw, const float *b, size_t N, size_t C,
                       size_t H, size_t W, size_t O, size_t K, size_t P, float *scratch, size_t chunk,
                       float *gemm);
/* dx (skipped when NULL), dw += , db += for the forward above. */
void fm_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, size_t N, size_t C, size_t H, size_t W, size_t O, size_t K,
                        size_t P, float *scratch, size_t chunk, float *gemm);

/* y[N,C,H/S,W/S] = max over each S x S window (stride S, floor); arg[same]
 * records which of the S*S inputs won (first maximum on ties); S <= 15.
 * arg may be NULL (inference): the same values, nothing recorded. */
void fm_maxpool_forward(float *y, uint8_t *arg, const float *x, size_t N, size_t C, size_t H,
                        size_t W, size_t S);
/* dx[N,C,H,W] = dy routed to each window's arg-max, zero elsewhere */
void fm_maxpool_backward(float *dx, const float *dy, const uint8_t *arg, size_t N, size_t C,
                         size_t H, size_t W, size_t S);

/* Inference tails of a convolution whose bias was left out (b = NULL to
 * fm_conv2d_forward), in one pass instead of three:
 *   y[N,C,H/2,W/2] = relu(maxpool2x2(x) + b[c])   (conv, relu, 2x2 max-pool)
 *   y[N,C,HW]      = relu(x + b[c])               (conv, relu; y may equal x)
 * Bit for bit what adding the bias, relu and pooling in turn give: rounding
 * x + b is monotonic in x, so the largest of four sums is the sum with the
 * largest of the four, and relu only turns signs of zero into +0. */
void fm_maxpool2_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t H, size_t W);
void fm_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t HW);

/* y = max(x, 0), n elements (y may equal x) */
void fm_relu_forward(float *y, const float *x, size_t n);
/* dx = dy * (y > 0) (dx may equal dy) */
void fm_relu_backward(float *dx, const float *dy, const float *y, size_t n);

/* Inverted dropout, training only: keep[i] ~ Bernoulli(1-p) from rng,
 * y = x * keep / (1-p) (so eval mode is the identity). */
void fm_dropout_forward(float *y, uint8_t *keep, const float *x, size_t n, float p, fm_rng *rng);
void fm_dropout_backward(float *dx, const float *dy, const uint8_t *keep, size_t n, float p);

/* probs[N,K] = softmax(logits) (log-sum-exp shifted) */
void fm_softmax(float *probs, const float *logits, size_t N, size_t K);
/* Fused softmax + cross-entropy against class ids.  Returns the summed loss
 * (in double) over the N examples; counts correct arg-max predictions into
 * *n_correct when non-NULL; writes dlogits = (softmax - onehot) * scale when
 * dlogits is non-NULL (scale = 1/batch for a mean loss). */
double fm_xent_forward_backward(float *dlogits, size_t *n_correct, const float *logits,
                                const uint8_t *labels, size_t N, size_t K, float scale);

#endif
