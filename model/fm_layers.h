/* fm_layers.h - the reference kernels: stateless forward/backward pairs,
 * one per layer, plain enough to check by reading.  Training, the gradient
 * checks and the PyTorch cross-checks use these; the optimised inference
 * kernels (fm_fast.h) are proven equal to them.
 *
 * Shape vocabulary: N batch, C input channels, H x W input plane, O output
 * channels/features, K kernel side, S stride, P padding, OH x OW output
 * plane, I input features.  All tensors are row-major float32, NCHW for
 * images.  Argument order everywhere: outputs, saved state, inputs, weights,
 * sizes, scratch.  Backward functions *accumulate* parameter gradients (+=)
 * so that several batches or threads can share a gradient buffer, and
 * *overwrite* input gradients.  Gradients carry a d prefix. */
#ifndef FM_LAYERS_H
#define FM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "fm_rng.h"

/* y[N,O] = x[N,I] w[O,I]^T + b[O] (b may be NULL: no bias) */
void fm_linear_forward(float *y, const float *x, const float *w, const float *b, size_t N, size_t I, size_t O,
                       float *gemm);
/* dx[N,I] = dy w (skipped when dx is NULL); dw[O,I] += dy^T x; db[O] += sum_n dy (dw, db may be NULL) */
void fm_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, size_t N,
                        size_t I, size_t O, float *gemm);

/* Output side of a convolution or pool: (H + 2P - K) / S + 1. */
static inline size_t fm_conv_out(size_t H, size_t K, size_t S, size_t P) { return (H + 2 * P - K) / S + 1; }

/* Scratch floats conv2d needs for chunks of `chunk` images (forward and
 * backward).  A layer whose chunk of patches would pass FM_CONV_BUDGET
 * floats works on fewer images at a time (the cache, not the scratch, sets
 * the limit there). */
#ifndef FM_CONV_BUDGET
#define FM_CONV_BUDGET ((size_t)600000)
#endif
/* The images per chunk a convolution with Q output positions and C*K*K =
 * ckk patch rows actually uses: at most chunk, at most FM_CONV_BUDGET / (Q ckk). */
size_t fm_conv_chunk(size_t chunk, size_t Q, size_t ckk);
size_t fm_conv2d_scratch(size_t C, size_t O, size_t K, size_t OH, size_t OW, size_t chunk);
/* y[N,O,OH,OW] = sum_{c,kh,kw} w[O,C,K,K] x[N,C,oh*S+kh-P,ow*S+kw-P] + b[O],
 * zero outside x.  Computed as im2col + GEMM (w times the patches, which
 * gives y's channel-major layout), `chunk` images at a time.  b = NULL:
 * no bias. */
void fm_conv2d_forward(float *y, const float *x, const float *w, const float *b, size_t N, size_t C, size_t H,
                       size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk, float *gemm);
/* The patch matrices behind it: col[(n,oh,ow), (c,kh,kw)] (position-major,
 * what backward multiplies) and colT = col^T (what forward multiplies),
 * zeros where the kernel hangs over the edge; nb images. */
void fm_im2col(float *col, const float *x, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S, size_t P,
               size_t OH, size_t OW);
void fm_im2col_t(float *colT, const float *x, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S, size_t P,
                 size_t OH, size_t OW);
/* The adjoint of fm_im2col: dx[n, c, ih, iw] = the sum of the col entries
 * copied from there, positions in turn (dx overwritten). */
void fm_col2im(float *dx, const float *dcol, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S, size_t P,
               size_t OH, size_t OW);
/* dx, dw += , db += for the forward above (each skipped when NULL). */
void fm_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, size_t N,
                        size_t C, size_t H, size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch,
                        size_t chunk, float *gemm);

/* y[N,C,H/S,W/S] = max over each S x S window (stride S, floor); arg[same]
 * records which of the S*S inputs won (first maximum on ties); S <= 15.
 * arg may be NULL (inference): the same values, nothing recorded. */
void fm_maxpool_forward(float *y, uint8_t *arg, const float *x, size_t N, size_t C, size_t H, size_t W, size_t S);
/* dx[N,C,H,W] = dy routed to each window's arg-max, zero elsewhere */
void fm_maxpool_backward(float *dx, const float *dy, const uint8_t *arg, size_t N, size_t C, size_t H, size_t W,
                         size_t S);

/* y[N,C,H/S,W/S] = mean over each S x S window (stride S, floor) */
void fm_avgpool_forward(float *y, const float *x, size_t N, size_t C, size_t H, size_t W, size_t S);
void fm_avgpool_backward(float *dx, const float *dy, size_t N, size_t C, size_t H, size_t W, size_t S);
/* y[N,C] = mean over the H*W plane (PyTorch's AdaptiveAvgPool2d(1) + Flatten) */
void fm_gap_forward(float *y, const float *x, size_t N, size_t C, size_t HW);
void fm_gap_backward(float *dx, const float *dy, size_t N, size_t C, size_t HW);

/* Batch normalisation over N x HW values per channel (HW = 1: batchnorm1d).
 * Training: batch mean and biased variance normalise; stats receives
 * mean[C], invstd[C] (1/sqrt(var + eps), what backward needs) and the
 * unbiased variance[C] (what the running estimate takes, as PyTorch).
 * Sums are accumulated in double.
 *   y = (x - mean) * invstd * gamma + beta */
void fm_batchnorm_forward_train(float *y, float *stats, const float *x, const float *gamma, const float *beta,
                                size_t N, size_t C, size_t HW, float eps);
/* Eval: y = (x - rmean) / sqrt(rvar + eps) * gamma + beta */
void fm_batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta, const float *rmean,
                               const float *rvar, size_t N, size_t C, size_t HW, float eps);
/* Training backward (batch statistics): with xh = (x - mean) invstd and
 * M = N*HW, dgamma += sum dy xh, dbeta += sum dy,
 *   dx = gamma invstd / M (M dy - sum dy - xh sum dy xh)   (dx, dgamma, dbeta may be NULL) */
void fm_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                 const float *stats, const float *gamma, size_t N, size_t C, size_t HW);
/* Eval backward (running statistics are constants): dx = dy gamma / sqrt(rvar + eps),
 * dgamma += sum dy xh, dbeta += sum dy (each may be NULL) */
void fm_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                const float *gamma, const float *rmean, const float *rvar, size_t N, size_t C,
                                size_t HW, float eps);
/* running = (1 - m) running + m batch, from the mean and unbiased variance
 * of n_sets stats blocks (each as fm_batchnorm_forward_train writes them:
 * one per thread's share of a batch), averaged in order; *tracked += 1. */
void fm_batchnorm_update(float *rmean, float *rvar, float *tracked, const float *const *stats, size_t n_sets,
                         size_t C, float momentum);

/* y = max(x, 0), n elements (y may equal x) */
void fm_relu_forward(float *y, const float *x, size_t n);
/* dx = dy * (y > 0) (dx may equal dy) */
void fm_relu_backward(float *dx, const float *dy, const float *y, size_t n);

/* y = a + b, n elements (y may equal a) */
void fm_add_forward(float *y, const float *a, const float *b, size_t n);
/* y += x, n elements */
void fm_accumulate(float *y, const float *x, size_t n);

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
double fm_xent_forward_backward(float *dlogits, size_t *n_correct, const float *logits, const uint8_t *labels,
                                size_t N, size_t K, float scale);
/* The same against label-smoothed targets q = (1 - s) onehot + s / K
 * (s = 0 is exactly fm_xent_forward_backward): loss -sum q log softmax. */
double fm_xent_smooth_forward_backward(float *dlogits, size_t *n_correct, const float *logits,
                                       const uint8_t *labels, size_t N, size_t K, float scale, float smoothing);

#endif
