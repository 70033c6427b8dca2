/* fm_fast.c - the kernels behind fm_fast.h.  The packed convolution keeps
 * the reference's GEMM (the same blocked loops and micro-kernels, the same
 * order of products), and only changes where the operands come from:
 * weights packed once, patches gathered into the panels. */
#include "fm_fast.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fm_common.h" /* FM_CLONES */
#include "fm_gemm.h"
#include "fm_layers.h"
#include "fm_simd.h"

/* Patches gathered straight into the GEMM's B panels (no im2col buffer, no
 * second pass to pack it): for a convolution without padding, element
 * (k, j) of the patch matrix, k = (c, kh, kw) and j = (n, oh, ow), is
 * x[n, c, oh*S+kh, ow*S+kw]: a fixed offset per column plus one per row.
 *
 * The offsets of a strip's 16 columns are the same for every row, and
 * with stride 1 they come in runs (consecutive output columns read
 * consecutive inputs; with stride 2 every lane is a run of its own),
 * so each half-strip of 8 lanes is built from a few unaligned 8-float loads
 * masked by lane: lane i of a run with load offset d reads load(xk + d)[i].
 * A strip with more than MAX_RUNS runs in a half, or whose loads would
 * reach past the input, is gathered element by element. */
typedef struct patch_src {
    const float *x;
    size_t len; /* floats readable from x */
    size_t C, H, W, K, S, OH, OW;
} patch_src;

enum { MAX_RUNS = 4 };

/* Offset of patch row k, k = (c, kh, kw), from a column's base offset. */
static size_t patch_row_offset(const patch_src *p, size_t k) {
    return k / (p->K * p->K) * p->H * p->W + k / p->K % p->K * p->W + k % p->K;
}

/* A position j = (image, output row, output column) of the patch matrix. */
typedef struct patch_pos {
    size_t n, oh, ow;
} patch_pos;

static patch_pos patch_pos_of(const patch_src *p, size_t j) {
    size_t Q = p->OH * p->OW;
    return (patch_pos){j / Q, j % Q / p->OW, j % Q % p->OW};
}

/* base[0..count) = input offsets of the count positions from *at, which
 * then moves past them (stepped: no division per position - for the first
 * convolution, 9 rows per strip, the divisions cost more than the copies);
 * base[count..width) repeat base[0] (padding: read, then zeroed or unused). */
static void patch_bases(const patch_src *p, patch_pos *at, size_t count, size_t width, size_t *base) {
    for (size_t i = 0; i < count; i++) {
        base[i] = at->n * p->C * p->H * p->W + at->oh * p->S * p->W + at->ow * p->S;
        if (++at->ow == p->OW) {
            at->ow = 0;
            if (++at->oh == p->OH) at->oh = 0, at->n++;
        }
    }
    for (size_t i = count; i < width; i++) base[i] = base[0];
}

/* xk from patch row k to row k + 1: (channel, kernel row, kernel column) stepped. */
static inline void patch_row_step(const patch_src *p, const float **xk, size_t *kh, size_t *kw) {
    if (++*kw < p->K) {
        (*xk)++;
    } else if (*kw = 0, ++*kh < p->K) {
        *xk += p->W - (p->K - 1);
    } else {
        *kh = 0;
        *xk += p->H * p->W - (p->K - 1) * p->W - (p->K - 1);
    }
}

/* Rows k0 .. k0+kc-1 of `width` columns at input offsets base[] into out,
 * width floats a row, element by element; columns from `used` on are
 * padding, zeroed.  (width is a constant at each call site.) */
static inline __attribute__((always_inline)) void gather_elements(const patch_src *p, size_t k0, size_t kc,
                                                                   const size_t *base, size_t used, size_t width,
                                                                   float *out) {
    size_t kh = k0 / p->K % p->K, kw = k0 % p->K;
    const float *xk = p->x + patch_row_offset(p, k0);
    for (size_t k = 0; k < kc; k++, out += width) {
        for (size_t c = 0; c < width; c++) out[c] = xk[base[c]];
        for (size_t c = used; c < width; c++) out[c] = 0.0f;
        patch_row_step(p, &xk, &kh, &kw);
    }
}

/* Rows k0 .. k0+kc-1 of one strip from R runs per half (R a constant at
 * each call site, so the loop over runs unrolls). */
static inline __attribute__((always_inline)) void gather_runs(const patch_src *p, size_t k0, size_t kc,
                                                               const float *xk, size_t d[2][MAX_RUNS],
                                                               v8i lanes[2][MAX_RUNS], size_t R, float *out) {
    size_t kh = k0 / p->K % p->K, kw = k0 % p->K;
    for (size_t k = 0; k < kc; k++, out += FM_GEMM_NR) {
        for (size_t h = 0; h < 2; h++) {
            v8i acc = {0, 0, 0, 0, 0, 0, 0, 0};
            for (size_t r = 0; r < R; r++) {
                v8f v;
                LOAD8(v, xk + d[h][r]);
                acc |= (v8i)v & lanes[h][r];
            }
            memcpy(out + h * 8, &acc, sizeof acc);
        }
        patch_row_step(p, &xk, &kh, &kw);
    }
}

FM_CLONES
static void pack_patches(const void *ctx, size_t k0, size_t kc, size_t j0, size_t nc, float *bp) {
    const patch_src *p = ctx;
    size_t first = patch_row_offset(p, k0), last = patch_row_offset(p, k0 + kc - 1);
    patch_pos at = patch_pos_of(p, j0);
    for (size_t s = 0; s < nc; s += FM_GEMM_NR, bp += kc * FM_GEMM_NR) {
        size_t nr = nc - s < FM_GEMM_NR ? nc - s : FM_GEMM_NR;
        size_t base[FM_GEMM_NR];
        patch_bases(p, &at, nr, FM_GEMM_NR, base);

        /* runs of each half: load offset d[h][r] (>= 0: base grows by at
         * least one per column) and the lanes it fills; padding lanes are in
         * no run and stay zero */
        size_t d[2][MAX_RUNS], nrun[2] = {0, 0};
        v8i lanes[2][MAX_RUNS];
        int fast = 1;
        for (size_t h = 0; h < 2 && fast; h++) {
            for (size_t i = 0; i < 8 && h * 8 + i < nr; i++) {
                size_t off = base[h * 8 + i] - i;
                if (nrun[h] == 0 || off != d[h][nrun[h] - 1]) {
                    if (nrun[h] == MAX_RUNS || off + 8 + last > p->len) {
                        fast = 0;
                        break;
                    }
                    d[h][nrun[h]] = off;
                    for (size_t l = 0; l < 8; l++) lanes[h][nrun[h]][l] = 0;
                    nrun[h]++;
                }
                lanes[h][nrun[h] - 1][i] = -1;
            }
        }

        if (fast) {
            /* both halves get the same number of runs (a half with fewer
             * repeats its last: OR-ing the same lanes twice changes nothing),
             * so the loop over runs has a trip count fixed for the strip
             * and is unrolled; a varying one cost a mispredicted branch a row */
            size_t R = nrun[0] > nrun[1] ? nrun[0] : nrun[1];
            for (size_t h = 0; h < 2; h++) {
                if (nrun[h] == 0) { /* all padding: lanes of zeros from a valid load */
                    d[h][0] = d[1 - h][0];
                    for (size_t l = 0; l < 8; l++) lanes[h][0][l] = 0;
                    nrun[h] = 1;
                }
                for (size_t r = nrun[h]; r < R; r++) {
                    d[h][r] = d[h][r - 1];
                    lanes[h][r] = lanes[h][r - 1];
                }
            }
            switch (R) {
            case 1: gather_runs(p, k0, kc, p->x + first, d, lanes, 1, bp); break;
            case 2: gather_runs(p, k0, kc, p->x + first, d, lanes, 2, bp); break;
            case 3: gather_runs(p, k0, kc, p->x + first, d, lanes, 3, bp); break;
            default: gather_runs(p, k0, kc, p->x + first, d, lanes, MAX_RUNS, bp); break;
            }
            continue;
        }
        gather_elements(p, k0, kc, base, nr, FM_GEMM_NR, bp);
    }
}

/* The patch matrix's rows j = (n, oh, ow) as A strips of FM_GEMM_MR rows
 * (fm_pack_a_fn): ap[strip][k][r] = x[n, c, oh+kh, ow+kw], k = (c, kh, kw),
 * zero past mc.  Used for small outputs only (a few strips). */
static void pack_patch_rows(const void *ctx, size_t i0, size_t mc, size_t k0, size_t kc, float *ap) {
    const patch_src *p = ctx;
    patch_pos at = patch_pos_of(p, i0);
    for (size_t s = 0; s < mc; s += FM_GEMM_MR) {
        size_t mr = mc - s < FM_GEMM_MR ? mc - s : FM_GEMM_MR;
        size_t base[FM_GEMM_MR];
        patch_bases(p, &at, mr, FM_GEMM_MR, base);
        gather_elements(p, k0, kc, base, mr, FM_GEMM_MR, ap);
        ap += kc * FM_GEMM_MR;
    }
}

int fm_conv2d_packs_b(size_t OH, size_t OW) { return OH * OW < FM_GEMM_NR; }

size_t fm_conv2d_packed_size(size_t O, size_t CKK, size_t OH, size_t OW) {
    return fm_conv2d_packs_b(OH, OW) ? fm_gemm_packed_size(O, CKK) : fm_gemm_packed_a_size(O, CKK);
}

void fm_conv2d_pack(float *pw, const float *w, size_t O, size_t CKK, size_t OH, size_t OW) {
    if (fm_conv2d_packs_b(OH, OW))
        fm_gemm_pack_b(1, O, CKK, w, CKK, pw);
    else
        fm_gemm_pack_a(O, CKK, w, CKK, pw);
}

/* ---- the scratch of the gathered convolutions ------------------------------------------ */

/* Layout for a chunk of nb <= chunk images:
 *   xp  [chunk, C, H + 2P, W + 2P]  the input with its zero padding (P > 0 only)
 *   out [chunk * Q * max(C*K*K, O)]  forward: the product [O, nb*Q] before it is
 *                                    split by image; backward: dcol [nb*Q, C*K*K] */
static size_t padded_floats(size_t C, size_t H, size_t W, size_t P, size_t chunk) {
    return P ? chunk * C * (H + 2 * P) * (W + 2 * P) : 0;
}

/* The input gradient of a stride-1 convolution whose output has few
 * channels is the convolution of the output gradient, padded by K-1-P,
 * with the weights turned 180 degrees and their channels swapped: a GEMM of
 * depth O*K*K instead of O (the col2im route multiplies by the weights one
 * output channel deep, then scatters), so it keeps the micro-kernel busy.
 * Not the reference's summation order (tested within a tolerance); below
 * TRANSPOSED_MAX_O channels only, so the study's convolutions (64 and 128
 * outputs where a gradient is needed) keep the reference's order. */
enum { TRANSPOSED_MAX_O = 48 };
static int dx_transposed(size_t O, size_t S) { return S == 1 && O < TRANSPOSED_MAX_O; }

size_t fm_conv2d_fast_scratch(size_t C, size_t O, size_t K, size_t H, size_t W, size_t S, size_t P, size_t chunk) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    size_t own = padded_floats(C, H, W, P, chunk) + chunk * Q * (ckk > O ? ckk : O);
    if (!dx_transposed(O, S)) return own;
    size_t Pt = K - 1 - P, okk = O * K * K; /* the transposed convolution: O -> C channels, H x W outputs */
    size_t t = C * okk + padded_floats(O, OH, OW, Pt, chunk) + chunk * H * W * (okk > C ? okk : C);
    return own > t ? own : t;
}

/* The nb images at x with a P-pixel zero border, into xp (what the gathers
 * read, so that they need no bounds tests); x itself when P = 0. */
static const float *padded(float *xp, const float *x, size_t nb, size_t C, size_t H, size_t W, size_t P) {
    if (!P) return x;
    size_t Hp = H + 2 * P, Wp = W + 2 * P;
    memset(xp, 0, nb * C * Hp * Wp * sizeof *xp);
    for (size_t nc = 0; nc < nb * C; nc++)
        for (size_t h = 0; h < H; h++) memcpy(xp + (nc * Hp + h + P) * Wp + P, x + (nc * H + h) * W, W * sizeof *xp);
    return xp;
}

static patch_src patch_source(const float *xp, size_t nb, size_t C, size_t H, size_t W, size_t K, size_t S, size_t P,
                              size_t OH, size_t OW) {
    size_t Hp = H + 2 * P, Wp = W + 2 * P;
    return (patch_src){xp, nb * C * Hp * Wp, C, Hp, Wp, K, S, OH, OW};
}

/* y[n, o, :] = out[o, n*Q .. n*Q + Q) + b[o] (b = NULL: none); out may be y's own
 * block when nb = 1 (then only the bias is added). */
static void split_by_image(float *y, const float *out, const float *b, size_t nb, size_t O, size_t Q) {
    size_t ld = nb * Q;
    for (size_t n = 0; n < nb; n++)
        for (size_t o = 0; o < O; o++) {
            float *yo = y + (n * O + o) * Q;
            const float *t = out + o * ld + n * Q;
            if (b)
                for (size_t q = 0; q < Q; q++) yo[q] = t[q] + b[o];
            else if (yo != t)
                memcpy(yo, t, Q * sizeof(float));
        }
}

/* ---- inference: weights packed once ------------------------------------------------ */

void fm_conv2d_forward_packed(float *y, const float *x, const float *pw, const float *b, size_t N, size_t C, size_t H,
                              size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk,
                              float *gemm) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    float *xp = scratch, *tmp = scratch + padded_floats(C, H, W, P, chunk);
    for (size_t n0 = 0; n0 < N; n0 += chunk) {
        size_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * Q;
        patch_src src = patch_source(padded(xp, x + n0 * C * H * W, nb, C, H, W, P), nb, C, H, W, K, S, P, OH, OW);
        if (fm_conv2d_packs_b(OH, OW)) {
            /* [nb*Q, O] = patches [nb*Q, ckk] x w^T: the same products summed in
             * the same order as w x patches, bit for bit; then to [n][O][Q] */
            fm_sgemm_fn_pb(nb * Q, O, ckk, pack_patch_rows, &src, pw, 0, tmp, O, gemm);
            for (size_t n = 0; n < nb; n++)
                for (size_t o = 0; o < O; o++) {
                    float *yo = y + ((n0 + n) * O + o) * Q;
                    const float *t = tmp + n * Q * O + o;
                    if (b)
                        for (size_t q = 0; q < Q; q++) yo[q] = t[q * O] + b[o];
                    else
                        for (size_t q = 0; q < Q; q++) yo[q] = t[q * O];
                }
            continue;
        }
        /* [O, nb*Q] = w[O, ckk] patches[ckk, nb*Q]: for one image that is y's
         * own layout, for several it is split image by image */
        float *out = nb == 1 ? y + n0 * O * Q : tmp;
        fm_sgemm_pa_fn(O, ld, ckk, pw, pack_patches, &src, 0, out, ld, gemm);
        split_by_image(y + n0 * O * Q, out, b, nb, O, Q);
    }
}

/* ---- training: the same products, the operands gathered -------------------------------- */

enum { ONE_IMAGE_Q = 128 }; /* output positions from which an image is its own GEMM */

void fm_conv2d_forward_fast(float *y, const float *x, const float *w, const float *b, size_t N, size_t C, size_t H,
                            size_t W, size_t O, size_t K, size_t S, size_t P, float *scratch, size_t chunk,
                            float *gemm) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    float *xp = scratch, *tmp = scratch + padded_floats(C, H, W, P, chunk);
    /* an image of many positions is GEMM enough on its own: it then writes
     * straight into y (no split by image) and its padded copy stays in cache;
     * each output is the same sum whatever the grouping */
    if (Q >= ONE_IMAGE_Q) chunk = 1;
    for (size_t n0 = 0; n0 < N; n0 += chunk) {
        size_t nb = N - n0 < chunk ? N - n0 : chunk, ld = nb * Q;
        patch_src src = patch_source(padded(xp, x + n0 * C * H * W, nb, C, H, W, P), nb, C, H, W, K, S, P, OH, OW);
        float *out = nb == 1 ? y + n0 * O * Q : tmp;
        fm_sgemm_b_fn(O, ld, ckk, w, ckk, pack_patches, &src, 0, out, ld, gemm);
        split_by_image(y + n0 * O * Q, out, b, nb, O, Q);
    }
}

/* The output gradient of a chunk, dy [nb, O, Q], as GEMM operand A in the
 * two orientations the backward pass multiplies it in. */
typedef struct dy_src {
    const float *dy;
    size_t O, Q;
} dy_src;

/* A [O, nb*Q] (rows o, columns positions): ap[strip][k][r] = dy[n, o, q] */
static void pack_dy_rows(const void *ctx, size_t i0, size_t mc, size_t k0, size_t kc, float *ap) {
    const dy_src *d = ctx;
    for (size_t s = 0; s < mc; s += FM_GEMM_MR, ap += kc * FM_GEMM_MR) {
        size_t mr = mc - s < FM_GEMM_MR ? mc - s : FM_GEMM_MR;
        size_t n = (k0) / d->Q, q = k0 % d->Q;
        for (size_t k = 0; k < kc; k++) {
            const float *col = d->dy + (n * d->O + i0 + s) * d->Q + q;
            float *a = ap + k * FM_GEMM_MR;
            for (size_t r = 0; r < mr; r++) a[r] = col[r * d->Q];
            for (size_t r = mr; r < FM_GEMM_MR; r++) a[r] = 0.0f;
            if (++q == d->Q) q = 0, n++;
        }
    }
}

/* A [nb*Q, O] (rows positions, columns o): ap[strip][k][r] = dy[n_r, k, q_r] */
static void pack_dy_cols(const void *ctx, size_t i0, size_t mc, size_t k0, size_t kc, float *ap) {
    const dy_src *d = ctx;
    for (size_t s = 0; s < mc; s += FM_GEMM_MR, ap += kc * FM_GEMM_MR) {
        size_t mr = mc - s < FM_GEMM_MR ? mc - s : FM_GEMM_MR, off[FM_GEMM_MR];
        for (size_t r = 0; r < mr; r++) {
            size_t j = i0 + s + r, n = j / d->Q, q = j % d->Q;
            off[r] = n * d->O * d->Q + q;
        }
        for (size_t k = 0; k < kc; k++) {
            const float *dk = d->dy + (k0 + k) * d->Q;
            float *a = ap + k * FM_GEMM_MR;
            for (size_t r = 0; r < mr; r++) a[r] = dk[off[r]];
            for (size_t r = mr; r < FM_GEMM_MR; r++) a[r] = 0.0f;
        }
    }
}

/* B [nb*Q, C*K*K] (rows positions, columns (c, kh, kw)): the position-major
 * patch matrix the weight gradient multiplies, gathered from the padded
 * input: bp[strip][k][c] = xp[base(position k0 + k) + row_offset(j0 + c)]. */
static void pack_col_panel(const void *ctx, size_t k0, size_t kc, size_t j0, size_t nc, float *bp) {
    const patch_src *p = ctx;
    for (size_t s = 0; s < nc; s += FM_GEMM_NR, bp += kc * FM_GEMM_NR) {
        size_t nr = nc - s < FM_GEMM_NR ? nc - s : FM_GEMM_NR, roff[FM_GEMM_NR];
        for (size_t c = 0; c < nr; c++) roff[c] = patch_row_offset(p, j0 + s + c);
        patch_pos at = patch_pos_of(p, k0);
        for (size_t k = 0; k < kc; k++) {
            size_t base;
            patch_bases(p, &at, 1, 1, &base);
            const float *xb = p->x + base;
            float *b = bp + k * FM_GEMM_NR;
            for (size_t c = 0; c < nr; c++) b[c] = xb[roff[c]];
            for (size_t c = nr; c < FM_GEMM_NR; c++) b[c] = 0.0f;
        }
    }
}

void fm_conv2d_backward_fast(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                             size_t N, size_t C, size_t H, size_t W, size_t O, size_t K, size_t S, size_t P,
                             float *scratch, size_t chunk, float *gemm) {
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P), Q = OH * OW, ckk = C * K * K;
    float *xp = scratch, *dcol = scratch + padded_floats(C, H, W, P, chunk);
    size_t chunk_all = chunk;
    chunk = fm_conv_chunk(chunk, Q, ckk); /* the reference's grouping: weight gradients summed alike */
    for (size_t n0 = 0; n0 < N; n0 += chunk) {
        size_t nb = N - n0 < chunk ? N - n0 : chunk;
        const float *dyc = dy + n0 * O * Q;
        if (db)
            for (size_t n = 0; n < nb; n++)
                for (size_t o = 0; o < O; o++) {
                    const float *dyo = dyc + (n * O + o) * Q;
                    float s = 0.0f;
                    for (size_t q = 0; q < Q; q++) s += dyo[q];
                    db[o] += s;
                }
        patch_src src = patch_source(padded(xp, x + n0 * C * H * W, nb, C, H, W, P), nb, C, H, W, K, S, P, OH, OW);
        dy_src d = {dyc, O, Q};
        /* dw[O, ckk] += dy[O, nb*Q] col[nb*Q, ckk] */
        if (dw) fm_sgemm_fn_fn(O, ckk, nb * Q, pack_dy_rows, &d, pack_col_panel, &src, 1, dw, ckk, gemm);
        if (dx && !dx_transposed(O, S)) { /* dcol[nb*Q, ckk] = dy^T w, then back onto the input */
            fm_sgemm_fn_b(nb * Q, ckk, O, pack_dy_cols, &d, w, ckk, 0, dcol, ckk, gemm);
            fm_col2im(dx + n0 * C * H * W, dcol, nb, C, H, W, K, S, P, OH, OW);
        }
    }
    if (dx && dx_transposed(O, S)) {
        /* wt[c, o, kh, kw] = w[o, c, K-1-kh, K-1-kw]; dx = conv(dy, wt), padding K-1-P */
        float *wt = scratch;
        for (size_t o = 0; o < O; o++)
            for (size_t c = 0; c < C; c++)
                for (size_t kh = 0; kh < K; kh++)
                    for (size_t kw = 0; kw < K; kw++)
                        wt[((c * O + o) * K + kh) * K + kw] = w[((o * C + c) * K + (K - 1 - kh)) * K + (K - 1 - kw)];
        fm_conv2d_forward_fast(dx, dy, wt, NULL, N, O, OH, OW, C, K, 1, K - 1 - P, scratch + C * O * K * K,
                               chunk_all, gemm);
    }
}

size_t fm_linear_packed_size(size_t O, size_t I) { return fm_gemm_packed_size(O, I); }

void fm_linear_pack(float *pw, const float *w, size_t O, size_t I) { fm_gemm_pack_b(1, O, I, w, I, pw); }

void fm_linear_forward_packed(float *y, const float *x, const float *pw, const float *b, size_t N, size_t I, size_t O,
                              float *gemm) {
    fm_sgemm_pb(N, O, I, x, I, pw, 0, y, O, gemm);
    if (!b) return;
    for (size_t n = 0; n < N; n++) {
        float *yn = y + n * O;
        for (size_t o = 0; o < O; o++) yn[o] += b[o];
    }
}

void fm_maxpool2_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t H, size_t W) {
    size_t OH = H / 2, OW = W / 2;
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++) {
            const float *xp = x + (n * C + c) * H * W;
            float *yp = y + (n * C + c) * OH * OW, bc = b[c];
            for (size_t oh = 0; oh < OH; oh++) {
                const float *restrict r0 = xp + 2 * oh * W, *restrict r1 = r0 + W;
                float *restrict yr = yp + oh * OW;
                for (size_t ow = 0; ow < OW; ow++) { /* the selects of fm_maxpool_forward */
                    float best = r0[2 * ow], v;
                    v = r0[2 * ow + 1], best = v > best ? v : best;
                    v = r1[2 * ow], best = v > best ? v : best;
                    v = r1[2 * ow + 1], best = v > best ? v : best;
                    v = best + bc;
                    yr[ow] = v > 0.0f ? v : 0.0f;
                }
            }
        }
}

void fm_bias_relu(float *y, const float *x, const float *b, size_t N, size_t C, size_t HW) {
    for (size_t nc = 0; nc < N * C; nc++) {
        const float *xp = x + nc * HW;
        float *yp = y + nc * HW, bc = b[nc % C];
        for (size_t i = 0; i < HW; i++) {
            float v = xp[i] + bc;
            yp[i] = v > 0.0f ? v : 0.0f;
        }
    }
}

