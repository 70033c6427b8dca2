/* fm_layers.c - the reference kernels behind fm_layers.h.  Dense and
 * convolution layers reduce to fm_sgemm; the rest are simple loops.  No
 * allocation: scratch is always the caller's.  Not here: the optimised
 * inference paths (packed weights, patches gathered into GEMM panels,
 * fused tails, folded batch norm) - fm_fast.c, proven equal to these. */
#include "fm_layers.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fm_gemm.h"

void fm_linear_forward(float *y, const float *x, const float *w, const float *b, size_t N, size_t I, size_t O,
                       float *gemm) {
    fm_sgemm(0, 1, N, O, I, x, I, w, I, 0, y, O, gemm);
    if (!b) return;
    for (size_t n = 0; n < N; n++) {
        float *yn = y + n * O;
        for (size_t o = 0; o < O; o++) yn[o] += b[o];
    }
}

void fm_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, size_t N,
                        size_t I, size_t O, float *gemm) {
    /* y = x w^T + b  =>  dx = dy w,  dw = dy^T x,  db = sum_n dy */
    if (dx) fm_sgemm(0, 0, N, I, O, dy, O, w, I, 0, dx, I, gemm);
    if (dw) fm_sgemm(1, 0, O, I, N, dy, O, x, I, 1, dw, I, gemm);
    if (!db) return;
    for (size_t n = 0; n < N; n++) {
        const float *dyn = dy + n * O;
        for (size_t o = 0; o < O; o++) db[o] += dyn[o];
    }
}

/* Scratch layout for a chunk of nb images, Q = OH*OW output positions each:
 *   col  [nb*Q, C*K*K]  im2col rows, one per output position
 *   tmp  [nb*Q, O]      output (or its gradient) in position-major order
 *   dcol [nb*Q, C*K*K]  backward only */
size_t fm_conv2d_scratch(size_t C, size_t O, size_t K, size_t OH, size_t OW, size_t chunk) {
    size_t q = chunk * OH * OW;
    return q * (2 * C * K * K + O);
}

/* col[(n,oh,ow), (c,kh,kw)] = x[n, c, oh*S+kh-P, ow*S+kw-P] or 0 outside */
void fm_im2col(float *col, const float *x, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S,
                   size_t P, size_t OH, size_t OW) {
    for (size_t n = 0; n < nb; n++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                for (size_t c = 0; c < C; c++) {
                    const float *xc = x + (n * C + c) * H * W;
                    for (size_t kh = 0; kh < K; kh++) {
                        ptrdiff_t ih = (ptrdiff_t)(oh * S + kh) - (ptrdiff_t)P;
                        int row_in = ih >= 0 && (size_t)ih < H;
                        for (size_t kw = 0; kw < K; kw++) {
                            ptrdiff_t iw = (ptrdiff_t)(ow * S + kw) - (ptrdiff_t)P;
                            *col++ = row_in && iw >= 0 && (size_t)iw < W ? xc[(size_t)ih * W + (size_t)iw] : 0.0f;
                        }
                    }
                }
}

/* dx[n, c, ih, iw] = sum of dcol entries im2col copied from it */
void fm_col2im(float *dx, const float *dcol, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S,
                   size_t P, size_t OH, size_t OW) {
    memset(dx, 0, nb * C * H * W * sizeof(float));
    for (size_t n = 0; n < nb; n++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++)
                for (size_t c = 0; c < C; c++) {
                    float *dxc = dx + (n * C + c) * H * W;
                    for (size_t kh = 0; kh < K; kh++) {
                        size_t ih = oh * S + kh;
                        for (size_t kw = 0; kw < K; kw++, dcol++) {
                            size_t iw = ow * S + kw;
                            if (ih >= P && ih - P < H && iw >= P && iw - P < W) dxc[(ih - P) * W + (iw - P)] += *dcol;
                        }
                    }
                }
}

/* The transposed layout for the forward pass: colT[(c,kh,kw), (n,oh,ow)],
 * row length ld = nb*OH*OW.  With stride 1 each (c, kh, kw, n, oh) is a run
 * of OW consecutive input values (zeros where the kernel hangs over the
 * edge), so it is mostly memcpy. */
void fm_im2col_t(float *colT, const float *x, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S,
                     size_t P, size_t OH, size_t OW) {
    size_t ld = nb * OH * OW;
    for (size_t c = 0; c < C; c++)
        for (size_t kh = 0; kh < K; kh++)
            for (size_t kw = 0; kw < K; kw++) {
                float *dst = colT + ((c * K + kh) * K + kw) * ld;
                /* output columns ow whose input column ow*S + kw - P is inside [0, W) */
                size_t lo = P > kw ? (P - kw + S - 1) / S : 0;
                size_t hi = W + P > kw ? (W + P - kw + S - 1) / S : 0;
                if (hi > OW) hi = OW;
                if (hi < lo) hi = lo;
                for (size_t n = 0; n < nb; n++)
                    for (size_t oh = 0; oh < OH; oh++, dst += OW) {
                        ptrdiff_t ih = (ptrdiff_t)(oh * S + kh) - (ptrdiff_t)P;
                        if (ih < 0 || (size_t)ih >= H) {
                            memset(dst, 0, OW * sizeof(float));
                            continue;
                        }
                        const float *xr = x + ((n * C + c) * H + (size_t)ih) * W;
                        for (size_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                        if (S == 1) {
                            memcpy(dst + lo, xr + kw + lo - P, (hi - lo) * sizeof(float));
                        } else {
                            const float *src = xr + lo * S + kw - P;
                            for (size_t ow = lo; ow < hi; ow++, src += S) dst[ow] = *src;
                        }
                        for (size_t ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
                    }
            }
}

/* Images per chunk: at most `chunk` (what the scratch was sized for), fewer
 * when a chunk's patch matrix would outgrow the caches (FM_CONV_BUDGET
 * floats); the study's layers all fit 16 images, so their grouping (and
 * with it the order weight gradients are summed in) is as it always was. */
size_t fm_conv_chunk(size_t chunk, size_t Q, size_t ckk) {
    size_t per_image = Q * ckk;
    size_t fit = FM_CONV_BUDGET / (per_image > 0 ? per_image : 1);
    if (fit < 1) fit = 1;
    return fit < chunk ? fit : chunk;
}

void fm_conv2d_forward(float *y, const float *x, const float *w, const float *b, size_t N, size_t C, size_t H,
                       size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk, float *gemm) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    float *colT = scratch, *tmp = scratch + chunk * Q * ckk; /* laid out for the caller's chunk */
    chunk = fm_conv_chunk(chunk, Q, ckk);
    for (size_t n0 = 0; n0 < N; n0 += chunk) {
        size_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * Q;
        /* [O, nb*Q] = w[O, ckk] colT[ckk, nb*Q]: for one image that is y's
         * own layout, for several it is gathered image by image */
        float *out = nb == 1 ? y + n0 * O * Q : tmp;
        fm_im2col_t(colT, x + n0 * C * H * W, nb, C, H, W, K, S, P, OH, OW);
        fm_sgemm(0, 0, O, ld, ckk, w, ckk, colT, ld, 0, out, ld, gemm);
        for (size_t n = 0; n < nb; n++)
            for (size_t o = 0; o < O; o++) {
                float *yo = y + ((n0 + n) * O + o) * Q;
                const float *t = out + o * ld + n * Q;
                if (b)
                    for (size_t q = 0; q < Q; q++) yo[q] = t[q] + b[o];
                else if (yo != t)
                    memcpy(yo, t, Q * sizeof(float));
            }
    }
}

void fm_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, size_t N,
                        size_t C, size_t H, size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch,
                        size_t chunk, float *gemm) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    float *col = scratch, *tmp = scratch + chunk * Q * ckk, *dcol = tmp + chunk * Q * O;
    chunk = fm_conv_chunk(chunk, Q, ckk);
    for (size_t n0 = 0; n0 < N; n0 += chunk) {
        size_t nb = N - n0 < chunk ? N - n0 : chunk;
        /* tmp[(n,q), o] = dy[n, o, q]; db[o] += sum dy */
        for (size_t n = 0; n < nb; n++)
            for (size_t o = 0; o < O; o++) {
                const float *dyo = dy + ((n0 + n) * O + o) * Q;
                float *t = tmp + n * Q * O + o, s = 0.0f;
                for (size_t q = 0; q < Q; q++) {
                    t[q * O] = dyo[q];
                    s += dyo[q];
                }
                if (db) db[o] += s;
            }
        fm_im2col(col, x + n0 * C * H * W, nb, C, H, W, K, S, P, OH, OW);
        /* tmp = col w^T  =>  dw[O, ckk] += tmp^T col,  dcol[nb*Q, ckk] = tmp w */
        if (dw) fm_sgemm(1, 0, O, ckk, nb * Q, tmp, O, col, ckk, 1, dw, ckk, gemm);
        if (dx) {
            fm_sgemm(0, 0, nb * Q, ckk, O, tmp, O, w, ckk, 0, dcol, ckk, gemm);
            fm_col2im(dx + n0 * C * H * W, dcol, nb, C, H, W, K, S, P, OH, OW);
        }
    }
}

void fm_maxpool_forward(float *y, uint8_t *arg, const float *x, size_t N, size_t C, size_t H,
                        size_t W, size_t S) {
    size_t OH = H / S, OW = W / S;
    if (S == 2 && !arg) { /* inference: the same selects, no arg-max to keep; vectorises */
        for (size_t nc = 0; nc < N * C; nc++) {
            const float *xp = x + nc * H * W;
            float *yp = y + nc * OH * OW;
            for (size_t oh = 0; oh < OH; oh++) {
                const float *restrict r0 = xp + 2 * oh * W, *restrict r1 = r0 + W;
                float *restrict yr = yp + oh * OW;
                for (size_t ow = 0; ow < OW; ow++) {
                    float best = r0[2 * ow], v;
                    v = r0[2 * ow + 1], best = v > best ? v : best;
                    v = r1[2 * ow], best = v > best ? v : best;
                    v = r1[2 * ow + 1], best = v > best ? v : best;
                    yr[ow] = best;
                }
            }
        }
        return;
    }
    if (S == 2) { /* the study's 2x2 pooling, branch-free (selects, not jumps): same results */
        for (size_t nc = 0; nc < N * C; nc++) {
            const float *xp = x + nc * H * W;
            float *yp = y + nc * OH * OW;
            uint8_t *ap = arg + nc * OH * OW;
            for (size_t oh = 0; oh < OH; oh++) {
                const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
                for (size_t ow = 0; ow < OW; ow++) {
                    float best = r0[2 * ow], v;
                    uint8_t bi = 0;
                    v = r0[2 * ow + 1], bi = v > best ? 1 : bi, best = v > best ? v : best;
                    v = r1[2 * ow], bi = v > best ? 2 : bi, best = v > best ? v : best;
                    v = r1[2 * ow + 1], bi = v > best ? 3 : bi, best = v > best ? v : best;
                    yp[oh * OW + ow] = best;
                    ap[oh * OW + ow] = bi;
                }
            }
        }
        return;
    }
    for (size_t nc = 0; nc < N * C; nc++) {
        const float *xp = x + nc * H * W;
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                float best = -FLT_MAX;
                uint8_t bi = 0;
                for (size_t i = 0; i < S; i++)
                    for (size_t j = 0; j < S; j++) {
                        float v = xp[(oh * S + i) * W + ow * S + j];
                        if (v > best || (i == 0 && j == 0)) best = v, bi = (uint8_t)(i * S + j);
                    }
                size_t o = (nc * OH + oh) * OW + ow;
                y[o] = best;
                if (arg) arg[o] = bi;
            }
    }
}

void fm_maxpool_backward(float *dx, const float *dy, const uint8_t *arg, size_t N, size_t C,
                         size_t H, size_t W, size_t S) {
    size_t OH = H / S, OW = W / S;
    memset(dx, 0, N * C * H * W * sizeof(float));
    for (size_t nc = 0; nc < N * C; nc++) {
        float *dxp = dx + nc * H * W;
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                size_t o = (nc * OH + oh) * OW + ow;
                size_t i = arg[o] / S, j = arg[o] % S;
                dxp[(oh * S + i) * W + ow * S + j] += dy[o];
            }
    }
}

void fm_avgpool_forward(float *y, const float *x, size_t N, size_t C, size_t H, size_t W, size_t S) {
    size_t OH = H / S, OW = W / S;
    float inv = 1.0f / (float)(S * S);
    for (size_t nc = 0; nc < N * C; nc++) {
        const float *xp = x + nc * H * W;
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                float s = 0.0f;
                for (size_t i = 0; i < S; i++)
                    for (size_t j = 0; j < S; j++) s += xp[(oh * S + i) * W + ow * S + j];
                y[(nc * OH + oh) * OW + ow] = s * inv;
            }
    }
}

void fm_avgpool_backward(float *dx, const float *dy, size_t N, size_t C, size_t H, size_t W, size_t S) {
    size_t OH = H / S, OW = W / S;
    float inv = 1.0f / (float)(S * S);
    memset(dx, 0, N * C * H * W * sizeof(float)); /* rows and columns past the last window get none */
    for (size_t nc = 0; nc < N * C; nc++) {
        float *dxp = dx + nc * H * W;
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                float g = dy[(nc * OH + oh) * OW + ow] * inv;
                for (size_t i = 0; i < S; i++)
                    for (size_t j = 0; j < S; j++) dxp[(oh * S + i) * W + ow * S + j] = g;
            }
    }
}

void fm_gap_forward(float *y, const float *x, size_t N, size_t C, size_t HW) {
    float inv = 1.0f / (float)HW;
    for (size_t nc = 0; nc < N * C; nc++) {
        const float *xp = x + nc * HW;
        float s = 0.0f;
        for (size_t i = 0; i < HW; i++) s += xp[i];
        y[nc] = s * inv;
    }
}

void fm_gap_backward(float *dx, const float *dy, size_t N, size_t C, size_t HW) {
    float inv = 1.0f / (float)HW;
    for (size_t nc = 0; nc < N * C; nc++) {
        float g = dy[nc] * inv, *dxp = dx + nc * HW;
        for (size_t i = 0; i < HW; i++) dxp[i] = g;
    }
}

/* stats layout: [0, C) mean, [C, 2C) invstd, [2C, 3C) unbiased variance */
void fm_batchnorm_forward_train(float *y, float *stats, const float *x, const float *gamma, const float *beta,
                                size_t N, size_t C, size_t HW, float eps) {
    double M = (double)(N * HW);
    for (size_t c = 0; c < C; c++) {
        double s = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) s += xp[i];
        }
        double mean = s / M, ss = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                double d = xp[i] - mean;
                ss += d * d;
            }
        }
        double var = ss / M;
        float mf = (float)mean, is = (float)(1.0 / sqrt(var + (double)eps));
        stats[c] = mf;
        stats[C + c] = is;
        stats[2 * C + c] = (float)(M > 1.0 ? ss / (M - 1.0) : var);
        float g = gamma[c] * is, bb = beta[c];
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW;
            float *yp = y + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) yp[i] = (xp[i] - mf) * g + bb;
        }
    }
}

void fm_batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta, const float *rmean,
                               const float *rvar, size_t N, size_t C, size_t HW, float eps) {
    for (size_t c = 0; c < C; c++) {
        float g = gamma[c] / sqrtf(rvar[c] + eps), m = rmean[c], bb = beta[c];
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW;
            float *yp = y + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) yp[i] = (xp[i] - m) * g + bb;
        }
    }
}

void fm_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                 const float *stats, const float *gamma, size_t N, size_t C, size_t HW) {
    double M = (double)(N * HW);
    for (size_t c = 0; c < C; c++) {
        float mf = stats[c], is = stats[C + c];
        double sdy = 0.0, sdyxh = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW, *gp = dy + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                sdy += gp[i];
                sdyxh += (double)gp[i] * ((xp[i] - mf) * is);
            }
        }
        if (dgamma) dgamma[c] += (float)sdyxh;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        /* dx = gamma invstd (dy - mean(dy) - xh mean(dy xh)) */
        float k = gamma[c] * is, a = (float)(sdy / M), bxh = (float)(sdyxh / M);
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW, *gp = dy + (n * C + c) * HW;
            float *dp = dx + (n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) dp[i] = k * (gp[i] - a - (xp[i] - mf) * is * bxh);
        }
    }
}

void fm_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                const float *gamma, const float *rmean, const float *rvar, size_t N, size_t C,
                                size_t HW, float eps) {
    for (size_t c = 0; c < C; c++) {
        float is = 1.0f / sqrtf(rvar[c] + eps), m = rmean[c], k = gamma[c] * is;
        double sdy = 0.0, sdyxh = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *xp = x + (n * C + c) * HW, *gp = dy + (n * C + c) * HW;
            float *dp = dx ? dx + (n * C + c) * HW : NULL;
            for (size_t i = 0; i < HW; i++) {
                sdy += gp[i];
                sdyxh += (double)gp[i] * ((xp[i] - m) * is);
                if (dp) dp[i] = gp[i] * k;
            }
        }
        if (dgamma) dgamma[c] += (float)sdyxh;
        if (dbeta) dbeta[c] += (float)sdy;
    }
}

void fm_batchnorm_update(float *rmean, float *rvar, float *tracked, const float *const *stats, size_t n_sets,
                         size_t C, float momentum) {
    if (n_sets == 0) return;
    for (size_t c = 0; c < C; c++) {
        float m = 0.0f, v = 0.0f;
        for (size_t s = 0; s < n_sets; s++) {
            m += stats[s][c];
            v += stats[s][2 * C + c];
        }
        m /= (float)n_sets;
        v /= (float)n_sets;
        rmean[c] = (1.0f - momentum) * rmean[c] + momentum * m;
        rvar[c] = (1.0f - momentum) * rvar[c] + momentum * v;
    }
    *tracked += 1.0f;
}

void fm_add_forward(float *y, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void fm_accumulate(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void fm_relu_forward(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void fm_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void fm_dropout_forward(float *y, uint8_t *keep, const float *x, size_t n, float p, fm_rng *rng) {
    float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        keep[i] = fm_rng_uniform(rng) >= p;
        y[i] = keep[i] ? x[i] * scale : 0.0f;
    }
}

void fm_dropout_backward(float *dx, const float *dy, const uint8_t *keep, size_t n, float p) {
    float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) dx[i] = keep[i] ? dy[i] * scale : 0.0f;
}

void fm_softmax(float *probs, const float *logits, size_t N, size_t K) {
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        float *p = probs + n * K;
        float mx = z[0];
        for (size_t k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double sum = 0.0;
        for (size_t k = 0; k < K; k++) sum += exp((double)z[k] - mx);
        for (size_t k = 0; k < K; k++) p[k] = (float)(exp((double)z[k] - mx) / sum);
    }
}

double fm_xent_forward_backward(float *dlogits, size_t *n_correct, const float *logits,
                                const uint8_t *labels, size_t N, size_t K, float scale) {
    double loss = 0.0;
    size_t correct = 0;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        size_t am = 0;
        for (size_t k = 1; k < K; k++)
            if (z[k] > z[am]) am = k;
        double mx = z[am], sum = 0.0;
        for (size_t k = 0; k < K; k++) sum += exp((double)z[k] - mx);
        /* -log softmax_y = log sum exp(z - mx) - (z_y - mx) */
        loss += log(sum) - ((double)z[labels[n]] - mx);
        correct += am == labels[n];
        if (dlogits) {
            float *d = dlogits + n * K;
            for (size_t k = 0; k < K; k++) {
                double p = exp((double)z[k] - mx) / sum;
                d[k] = (float)((p - (k == labels[n])) * scale);
            }
        }
    }
    if (n_correct) *n_correct += correct;
    return loss;
}

double fm_xent_smooth_forward_backward(float *dlogits, size_t *n_correct, const float *logits,
                                       const uint8_t *labels, size_t N, size_t K, float scale, float smoothing) {
    if (smoothing == 0.0f) return fm_xent_forward_backward(dlogits, n_correct, logits, labels, N, K, scale);
    double loss = 0.0, s = smoothing, off = s / (double)K;
    size_t correct = 0;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * K;
        size_t am = 0;
        for (size_t k = 1; k < K; k++)
            if (z[k] > z[am]) am = k;
        double mx = z[am], sum = 0.0, zsum = 0.0;
        for (size_t k = 0; k < K; k++) {
            sum += exp((double)z[k] - mx);
            zsum += (double)z[k] - mx;
        }
        double lse = log(sum);
        /* -sum_k q_k (z_k - mx - lse), q = (1 - s) onehot + s/K */
        loss += (1.0 - s) * (lse - ((double)z[labels[n]] - mx)) + off * ((double)K * lse - zsum);
        correct += am == labels[n];
        if (dlogits) {
            float *d = dlogits + n * K;
            for (size_t k = 0; k < K; k++) {
                double p = exp((double)z[k] - mx) / sum, q = off + (k == labels[n] ? 1.0 - s : 0.0);
                d[k] = (float)((p - q) * scale);
            }
        }
    }
    if (n_correct) *n_correct += correct;
    return loss;
}
