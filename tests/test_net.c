/* test_net.c - Check tests that prove the network tier: whole-model
 * gradients and forward (fm_net.h), eval mode and inference (fm_predict), the
 * optimisers (fm_optim.h), the data-parallel pool (fm_train.h), and a short
 * training run on the real data.
 *
 * Whole-model gradient check, per named architecture, on a batch of 2
 * random images with dropout ON: every forward starts from the same copied
 * fm_rng state, so the masks are the ones backward used.  For a unit
 * direction d, grads . d is compared with a central difference along d:
 *
 *   (a) of the engine's own float32 loss, along one random d over all the
 *       parameters (kann's check).  This is limited by float32 itself: the
 *       loss carries rounding noise of ~1e-6, so the step must be large for
 *       the noise / 2h to stay small, but a large step makes ReLUs and
 *       max-pool arg-maxes change (tens of thousands of units per image:
 *       kinks cannot be avoided, only made rare).  Measured on these
 *       networks, the error relative to |g.d| + typ (typ = |g| / sqrt(n),
 *       the typical size of g.d for a random unit d, so a d that happens to
 *       be nearly orthogonal to g does not demand the impossible) is 2e-3
 *       at most for H_NET = 3e-3, between the noise floor (worse below 1e-3)
 *       and the kink regime (worse above 1e-2).  NET_RTOL = 3e-2 keeps a
 *       15x margin; a wrong gradient is off by O(1).
 *   (b) of an independent forward pass in double (ref_loss, written from
 *       the layer definitions, using the engine's dropout masks), along one
 *       random d over all parameters and one per parameter tensor (every
 *       weight and bias, so an error in a 10-float bias cannot hide behind
 *       200k weights).  In double, H_REF = 1e-6 makes the truncation error
 *       (~h^2) and the roundoff (~1e-16 / h relative) negligible, and a kink
 *       crossing within +-1e-6 is unlikely and worth ~1/(number of units)
 *       of g.d if it happens.  What remains is the float32 error of the
 *       engine's gradient, ~1e-6 relative (measured: <= 4e-7 of |g.d| + typ).
 *       REF_RTOL = 1e-4 keeps a 100x margin.
 * The reference also checks the forward pass: the engine's logits match
 * it to 1e-4 (1 + |z|), float32 logits being good to ~1e-6.
 *
 * Runs in Check's fork mode and with CK_FORK=no alike; the real-data test
 * passes with a note when the data set is not installed. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fm_arch.h"
#include "fm_idx.h"
#include "fm_layers.h"
#include "fm_net.h"
#include "fm_optim.h"
#include "fm_rng.h"
#include "fm_train.h"

#define H_NET 3e-3    /* (a) step of the engine's own finite difference */
#define NET_RTOL 3e-2 /* (a) tolerance; see the header comment */
#define H_REF 1e-6    /* (b) step of the double reference's finite difference */
#define REF_RTOL 1e-4 /* (b) tolerance */
#define GRAD_N 2      /* images in the gradient-check batch */

/* ck_assert_msg records a mark point (a write to Check's pipe) even when it
 * passes, which is slow in long loops; this calls Check only to fail. */
#define REQUIRE(cond, ...)                      \
    do {                                        \
        if (!(cond)) ck_abort_msg(__VA_ARGS__); \
    } while (0)

/* ---- helpers ------------------------------------------------------------- */

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void make_arch(fm_arch *a, const char *name) {
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_named(a, name, &err) == 0, "%s: %s", name, err.msg);
}

/* Glorot weights as the trainer uses, and biases uniform in [-0.1, 0.1) so
 * that bias gradients and ReLU patterns are not special-cased by zeros. */
static float *random_params(const fm_arch *a, uint64_t seed) {
    float *p = xmalloc(a->n_params * sizeof(float));
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    fm_arch_init_params(a, p, &rng);
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        for (size_t k = 0; k < L->n_b; k++) p[L->b_off + k] = 0.2f * fm_rng_uniform(&rng) - 0.1f;
    }
    return p;
}

/* n images of uniform [0, 1) pixels */
static float *random_images(const fm_arch *a, size_t n, uint64_t seed) {
    size_t in_size = (size_t)a->in_c * a->in_h * a->in_w;
    float *x = xmalloc(n * in_size * sizeof(float));
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * in_size; i++) x[i] = fm_rng_uniform(&rng);
    return x;
}

/* A copy of a with every dropout rate set to 0 (same shapes and offsets). */
static fm_arch without_dropout(const fm_arch *a) {
    fm_arch b = *a;
    for (int i = 0; i < b.n_layers; i++)
        if (b.layers[i].type == FM_DROPOUT) b.layers[i].rate = 0.0f;
    return b;
}

static int has_dropout(const fm_arch *a) {
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].type == FM_DROPOUT && a->layers[i].rate > 0.0f) return 1;
    return 0;
}

/* A synthetic data set of n random 28x28 images with random labels (a view
 * by convention: the caller frees the two blocks). */
static fm_dataset synthetic_set(size_t n, uint64_t seed, uint8_t **pix, uint8_t **lab) {
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    *pix = xmalloc(n * FM_IMG_SIZE);
    *lab = xmalloc(n);
    for (size_t i = 0; i < n * FM_IMG_SIZE; i++) (*pix)[i] = (uint8_t)fm_rng_below(&rng, 256);
    for (size_t i = 0; i < n; i++) (*lab)[i] = (uint8_t)fm_rng_below(&rng, FM_N_CLASSES);
    fm_dataset ds = {n, FM_IMG_H, FM_IMG_W, *pix, *lab, NULL};
    return ds;
}

/* ---- whole-network gradient along random directions --------------------------- */

/* Mean cross-entropy of the batch by the engine in training mode, dropout
 * masks from a copy of *rng0 (so every call draws the same masks). */
static double net_loss(const fm_arch *a, const float *params, fm_ws *ws, const float *x,
                       const uint8_t *lab, size_t n, const fm_rng *rng0) {
    fm_rng rng = *rng0;
    const float *logits = fm_forward(a, params, ws, x, n, 1, &rng);
    return fm_xent_forward_backward(NULL, NULL, logits, lab, n, FM_N_CLASSES, 0.0f) / (double)n;
}

/* The same loss by an independent forward pass in double, written from the
 * definitions (fm_layers.h, fm_arch.h; PyTorch semantics: cross-correlation
 * with zero padding, floor pooling, channel-major flatten, inverted dropout)
 * for parameters p [n_params] in double.  Dropout uses the keep masks the
 * engine drew into ws by its last training forward.  logits (optional,
 * [n, 10]) receives the logits. */
static double ref_loss(const fm_arch *a, const double *p, const fm_ws *ws, const float *x,
                       const uint8_t *lab, size_t n, double *logits) {
    size_t in_size = (size_t)a->in_c * a->in_h * a->in_w;
    double *cur = xmalloc(a->max_size * sizeof(double)),
           *nxt = xmalloc(a->max_size * sizeof(double));
    double loss = 0.0;
    for (size_t e = 0; e < n; e++) {
        for (size_t i = 0; i < in_size; i++) cur[i] = x[e * in_size + i];
        for (int li = 0; li < a->n_layers; li++) {
            const fm_layer *L = &a->layers[li];
            long C = L->in_c, H = L->in_h, W = L->in_w, O = L->out_c, OH = L->out_h, OW = L->out_w;
            const double *w = p + L->w_off, *b = p + L->b_off;
            switch (L->type) {
            case FM_LINEAR: /* y[o] = b[o] + sum_i w[o, i] x[i] */
                for (long o = 0; o < O; o++) {
                    double s = b[o];
                    for (long i = 0; i < C; i++) s += w[o * C + i] * cur[i];
                    nxt[o] = s;
                }
                break;
            case FM_CONV2D: { /* y[o, r, c] = b[o] + sum w[o, ci, kh, kw] x[ci, r+kh-P, c+kw-P] */
                long K = L->kernel, P = L->same ? K / 2 : 0;
                for (long o = 0; o < O; o++)
                    for (long r = 0; r < OH; r++)
                        for (long c = 0; c < OW; c++) {
                            double s = b[o];
                            for (long ci = 0; ci < C; ci++)
                                for (long kh = 0; kh < K; kh++) {
                                    long ih = r + kh - P;
                                    if (ih < 0 || ih >= H) continue;
                                    for (long kw = 0; kw < K; kw++) {
                                        long iw = c + kw - P;
                                        if (iw < 0 || iw >= W) continue;
                                        s += w[((o * C + ci) * K + kh) * K + kw] *
                                             cur[(ci * H + ih) * W + iw];
                                    }
                                }
                            nxt[(o * OH + r) * OW + c] = s;
                        }
                break;
            }
            case FM_MAXPOOL2D: { /* max over S x S windows, stride S, floor */
                long S = L->kernel;
                for (long ci = 0; ci < C; ci++)
                    for (long r = 0; r < OH; r++)
                        for (long c = 0; c < OW; c++) {
                            double m = -INFINITY;
                            for (long i = 0; i < S; i++)
                                for (long j = 0; j < S; j++)
                                    m = fmax(m, cur[(ci * H + r * S + i) * W + c * S + j]);
                            nxt[(ci * OH + r) * OW + c] = m;
                        }
                break;
            }
            case FM_RELU:
                for (size_t i = 0; i < L->out_size; i++) nxt[i] = cur[i] > 0.0 ? cur[i] : 0.0;
                break;
            case FM_DROPOUT:
                for (size_t i = 0; i < L->out_size; i++)
                    nxt[i] = L->rate == 0.0f                     ? cur[i]
                             : ws->mask[li][e * L->out_size + i] ? cur[i] / (1.0 - L->rate)
                                                                 : 0.0;
                break;
            case FM_FLATTEN:
                memcpy(nxt, cur, L->out_size * sizeof(double));
                break;
            default: /* the study's layers only; the others are checked in test_graph.c */
                ck_abort_msg("ref_loss: layer type %s is not covered", fm_ltype_name(L->type));
            }
            double *t = cur;
            cur = nxt, nxt = t;
        }
        double m = cur[0], s = 0.0;
        for (int k = 1; k < FM_N_CLASSES; k++) m = fmax(m, cur[k]);
        for (int k = 0; k < FM_N_CLASSES; k++) s += exp(cur[k] - m);
        loss += log(s) + m - cur[lab[e]];
        if (logits) memcpy(logits + e * FM_N_CLASSES, cur, FM_N_CLASSES * sizeof(double));
    }
    free(cur), free(nxt);
    return loss / (double)n;
}

/* What one architecture's check works on. */
typedef struct gcheck {
    const fm_arch *a;
    const float *params, *grads; /* [n_params] the point and the engine's gradient there */
    fm_ws *ws;                   /* training workspace; its masks are the ones backward used */
    const float *x;              /* [GRAD_N, in_size] */
    const uint8_t *lab;          /* [GRAD_N] */
    fm_rng rng0;                 /* the dropout stream of every forward */
    fm_rng dir;                  /* draws the directions */
    double *d, *pp, *pm;         /* [n_params] scratch */
    float *fp, *fm;              /* [n_params] scratch */
} gcheck;

/* d = a random unit vector supported on [lo, hi); returns grads . d and
 * sets *typ = |grads[lo, hi)| / sqrt(hi - lo), the typical size of grads . d
 * for a random unit d (the scale for the tolerances below). */
static double random_direction(gcheck *g, size_t lo, size_t hi, double *typ) {
    size_t np = g->a->n_params;
    double norm = 0.0, gd = 0.0, gg = 0.0;
    memset(g->d, 0, np * sizeof(double));
    for (size_t i = lo; i < hi; i++) {
        g->d[i] = 2.0 * fm_rng_uniform(&g->dir) - 1.0;
        norm += g->d[i] * g->d[i];
    }
    norm = sqrt(norm);
    for (size_t i = lo; i < hi; i++) {
        g->d[i] /= norm;
        gd += (double)g->grads[i] * g->d[i];
        gg += (double)g->grads[i] * g->grads[i];
    }
    *typ = sqrt(gg / (double)(hi - lo));
    return gd;
}

/* (a) The engine against itself along d over all parameters: central
 * difference of the float forward (step H_NET) against grads . d. */
static void check_engine_direction(gcheck *g) {
    const fm_arch *a = g->a;
    double typ, gd = random_direction(g, 0, a->n_params, &typ), ana = 0.0;
    for (size_t i = 0; i < a->n_params; i++) {
        g->fp[i] = (float)(g->params[i] + H_NET * g->d[i]);
        g->fm[i] = (float)(g->params[i] - H_NET * g->d[i]);
        /* with the step actually stored, float rounding included */
        ana += (double)g->grads[i] * ((double)g->fp[i] - (double)g->fm[i]) / (2.0 * H_NET);
    }
    double Lp = net_loss(a, g->fp, g->ws, g->x, g->lab, GRAD_N, &g->rng0);
    double Lm = net_loss(a, g->fm, g->ws, g->x, g->lab, GRAD_N, &g->rng0);
    double num = (Lp - Lm) / (2.0 * H_NET), err = fabs(num - ana),
           tol = NET_RTOL * (fabs(ana) + typ);
    if (getenv("FM_TEST_VERBOSE"))
        printf("  %-5s engine fd, all params:   g.d %-11.4g fd %-11.4g err/(|g.d|+typ) %.2e\n",
               a->name, gd, num, err / (fabs(ana) + typ));
    REQUIRE(err <= tol, "%s: engine finite difference %.9g, grads . d %.9g (|diff| %.3g > %.3g)",
            a->name, num, ana, err, tol);
}

/* (b) The engine's gradient against central differences of the double
 * reference along d over [lo, hi) (step H_REF). */
static void check_ref_direction(gcheck *g, size_t lo, size_t hi, const char *what) {
    const fm_arch *a = g->a;
    double typ, gd = random_direction(g, lo, hi, &typ);
    for (size_t i = 0; i < a->n_params; i++) {
        g->pp[i] = (double)g->params[i] + H_REF * g->d[i];
        g->pm[i] = (double)g->params[i] - H_REF * g->d[i];
    }
    double Lp = ref_loss(a, g->pp, g->ws, g->x, g->lab, GRAD_N, NULL);
    double Lm = ref_loss(a, g->pm, g->ws, g->x, g->lab, GRAD_N, NULL);
    double num = (Lp - Lm) / (2.0 * H_REF), err = fabs(num - gd), tol = REF_RTOL * (fabs(gd) + typ);
    if (getenv("FM_TEST_VERBOSE"))
        printf("  %-5s ref fd, %-15s n=%-7zu g.d %-11.4g fd %-11.4g err/(|g.d|+typ) %.2e\n",
               a->name, what, hi - lo, gd, num, err / (fabs(gd) + typ));
    REQUIRE(err <= tol,
            "%s %s: reference finite difference %.9g, grads . d %.9g (|diff| %.3g > %.3g)", a->name,
            what, num, gd, err, tol);
}

/* _i indexes the study's part of fm_arch_names: mlp2, mlp3, cnn1, cnn2, cnn3. */
START_TEST(test_net_gradcheck) {
    fm_arch a;
    make_arch(&a, fm_arch_names[_i]);
    size_t np = a.n_params;
    fm_error err = {{0}};
    fm_ws ws;
    ck_assert_msg(fm_ws_create(&ws, &a, GRAD_N, 1, &err) == 0, "%s", err.msg);
    float *params = random_params(&a, 10 + (uint64_t)_i), *x = random_images(&a, GRAD_N, 20);
    float *grads = xmalloc(np * sizeof(float)), dlogits[GRAD_N * FM_N_CLASSES];
    double zref[GRAD_N * FM_N_CLASSES];
    const uint8_t lab[GRAD_N] = {2, 7};
    gcheck g = {&a,
                params,
                grads,
                &ws,
                x,
                lab,
                {{0}},
                {{0}},
                xmalloc(np * sizeof(double)),
                xmalloc(np * sizeof(double)),
                xmalloc(np * sizeof(double)),
                xmalloc(np * sizeof(float)),
                xmalloc(np * sizeof(float))};
    fm_rng_seed(&g.rng0, 30);
    fm_rng_seed(&g.dir, 40);

    fm_rng rng = g.rng0;
    const float *logits = fm_forward(&a, params, &ws, x, GRAD_N, 1, &rng);
    double loss =
        fm_xent_forward_backward(dlogits, NULL, logits, lab, GRAD_N, FM_N_CLASSES, 1.0f / GRAD_N) /
        GRAD_N;
    fm_backward(&a, params, &ws, x, dlogits, GRAD_N, grads);

    /* the forward pass itself against the reference: float32 logits of
     * O(1) carry errors of ~1e-6 (sums of up to 1152 products, a few layers
     * deep); 1e-4 is a wide margin and catches any layout or indexing slip */
    for (size_t i = 0; i < np; i++) g.pp[i] = params[i];
    double lref = ref_loss(&a, g.pp, &ws, x, lab, GRAD_N, zref);
    for (size_t i = 0; i < GRAD_N * FM_N_CLASSES; i++)
        ck_assert_msg(fabs(logits[i] - zref[i]) <= 1e-4 * (1.0 + fabs(zref[i])),
                      "%s: logit %zu is %.7g, the double reference says %.7g", a.name, i,
                      (double)logits[i], zref[i]);
    ck_assert_double_eq_tol(loss, lref, 1e-5);
    /* the same rng state reproduces the same loss, bit for bit */
    ck_assert(net_loss(&a, params, &ws, x, lab, GRAD_N, &g.rng0) == loss);

    check_engine_direction(&g);
    check_ref_direction(&g, 0, np, "all params");
    char what[32];
    for (int i = 0; i < a.n_layers; i++) {
        const fm_layer *L = &a.layers[i];
        if (L->n_w == 0) continue;
        snprintf(what, sizeof what, "%d.weight", i);
        check_ref_direction(&g, L->w_off, L->w_off + L->n_w, what);
        snprintf(what, sizeof what, "%d.bias", i);
        check_ref_direction(&g, L->b_off, L->b_off + L->n_b, what);
    }

    /* backward accumulates (+=): a second call doubles the gradient (to
     * rounding: the second sum is added panel by panel onto the first) */
    float *g2 = xmalloc(np * sizeof(float));
    double gmax = 0.0;
    memcpy(g2, grads, np * sizeof(float));
    rng = g.rng0;
    fm_forward(&a, params, &ws, x, GRAD_N, 1, &rng);
    fm_backward(&a, params, &ws, x, dlogits, GRAD_N, g2);
    for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(grads[i]));
    for (size_t i = 0; i < np; i++)
        REQUIRE(fabs(g2[i] - 2.0 * grads[i]) <= 1e-5 * gmax,
                "%s: grads[%zu] = %g after two backward passes, "
                "%g after one",
                a.name, i, (double)g2[i], (double)grads[i]);
    free(g2);
    free(g.d), free(g.pp), free(g.pm), free(g.fp), free(g.fm);
    free(params), free(x), free(grads);
    fm_ws_destroy(&ws);
}
END_TEST

/* ---- eval mode and inference ------------------------------------------------------ */

/* fm_predict in an inference workspace (max batch 4: chunks of 4, 4, 2)
 * gives the probabilities of fm_forward(train=0) + fm_softmax in a training
 * workspace; each row is a distribution. */
START_TEST(test_predict_matches_forward) {
    fm_arch a;
    make_arch(&a, fm_arch_names[_i]);
    size_t n = 10;
    fm_error err = {{0}};
    fm_ws tw, iw;
    ck_assert_msg(fm_ws_create(&tw, &a, n, 1, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_ws_create(&iw, &a, 4, 0, &err) == 0, "%s", err.msg);
    float *params = random_params(&a, 50), *x = random_images(&a, n, 51);
    float pa[10 * FM_N_CLASSES], pb[10 * FM_N_CLASSES];
    fm_predict(&a, params, &iw, x, n, pa);
    const float *logits = fm_forward(&a, params, &tw, x, n, 0, NULL);
    fm_softmax(pb, logits, n, FM_N_CLASSES);
    for (size_t r = 0; r < n; r++) {
        double sum = 0.0;
        for (size_t k = 0; k < FM_N_CLASSES; k++) {
            size_t i = r * FM_N_CLASSES + k;
            ck_assert_msg(fabsf(pa[i] - pb[i]) <= 1e-6f,
                          "%s: predict %g, forward+softmax %g at %zu", a.name, (double)pa[i],
                          (double)pb[i], i);
            ck_assert(pa[i] >= 0.0f && pa[i] <= 1.0f);
            sum += pa[i];
        }
        ck_assert_msg(fabs(sum - 1.0) <= 1e-5, "%s: row %zu sums to %.9g", a.name, r, sum);
    }
    free(params), free(x);
    fm_ws_destroy(&tw);
    fm_ws_destroy(&iw);
}
END_TEST

/* Inference fuses a convolution's bias, relu and 2x2 max-pool into one
 * pass (fm_maxpool2_bias_relu, fm_bias_relu): its logits are bit for bit
 * those of the layer-by-layer training forward (dropout rates set to 0 so
 * that forward is deterministic), batched and one image at a time, plain
 * and with the weights packed. */
START_TEST(test_fused_inference_identical) {
    fm_arch a;
    make_arch(&a, fm_arch_names[_i]);
    for (int l = 0; l < a.n_layers; l++)
        if (a.layers[l].type == FM_DROPOUT) a.layers[l].rate = 0.0f;
    size_t n = 9;
    fm_error err = {{0}};
    fm_ws tw, iw, one;
    ck_assert_msg(fm_ws_create(&tw, &a, n, 1, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_ws_create(&iw, &a, n, 0, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_ws_create(&one, &a, 1, 0, &err) == 0, "%s", err.msg);
    float *params = random_params(&a, 70), *x = random_images(&a, n, 71);
    for (size_t i = 0; i < n * a.in_c * a.in_h * a.in_w; i += 4) x[i] = 0.0f; /* background pixels */
    fm_rng rng;
    fm_rng_seed(&rng, 72);
    float ref[9 * FM_N_CLASSES], got[9 * FM_N_CLASSES], pref[9 * FM_N_CLASSES], pgot[9 * FM_N_CLASSES];
    memcpy(ref, fm_forward(&a, params, &tw, x, n, 1, &rng), sizeof ref);
    memcpy(got, fm_forward(&a, params, &iw, x, n, 0, NULL), sizeof got);
    ck_assert_msg(memcmp(ref, got, sizeof ref) == 0, "%s: batched inference differs from the training forward", a.name);
    fm_softmax(pref, ref, n, FM_N_CLASSES);
    fm_model m = {0};
    ck_assert_msg(fm_model_init(&m, &a, &err) == 0, "%s", err.msg);
    memcpy(m.params, params, a.n_params * sizeof *params);
    ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s", err.msg);
    size_t in_size = (size_t)a.in_c * a.in_h * a.in_w;
    for (size_t i = 0; i < n; i++) {
        fm_predict(&a, params, &one, x + i * in_size, 1, pgot + i * FM_N_CLASSES);
        ck_assert_msg(memcmp(pref + i * FM_N_CLASSES, pgot + i * FM_N_CLASSES, FM_N_CLASSES * sizeof(float)) == 0,
                      "%s: image %zu alone differs", a.name, i);
        fm_model_predict(&m, &one, x + i * in_size, 1, pgot + i * FM_N_CLASSES);
        ck_assert_msg(memcmp(pref + i * FM_N_CLASSES, pgot + i * FM_N_CLASSES, FM_N_CLASSES * sizeof(float)) == 0,
                      "%s: image %zu alone with packed weights differs", a.name, i);
    }
    fm_model_free(&m);
    free(params), free(x);
    fm_ws_destroy(&tw);
    fm_ws_destroy(&iw);
    fm_ws_destroy(&one);
}
END_TEST

/* Packed weights (fm_model_pack, what the server serves with) give bit for
 * bit the probabilities of the plain path, for one image and for batches
 * (the server answers single images, `fmnist-train eval` runs batches). */
START_TEST(test_packed_predict_identical) {
    fm_arch a;
    make_arch(&a, fm_arch_names[_i]);
    fm_error err = {{0}};
    fm_model m = {0};
    ck_assert_msg(fm_model_init(&m, &a, &err) == 0, "%s", err.msg);
    float *params = random_params(&a, 60), *x = random_images(&a, 70, 61);
    memcpy(m.params, params, a.n_params * sizeof *params);
    ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s", err.msg);
    ck_assert_ptr_nonnull(m.plan);
    static const size_t batches[] = {1, 7, 64};
    for (size_t b = 0; b < 3; b++) {
        fm_ws ws;
        ck_assert_msg(fm_ws_create(&ws, &a, batches[b], 0, &err) == 0, "%s", err.msg);
        float *pa = malloc(70 * FM_N_CLASSES * sizeof *pa), *pb = malloc(70 * FM_N_CLASSES * sizeof *pb);
        ck_assert(pa && pb);
        fm_predict(&a, params, &ws, x, 70, pa);
        fm_model_predict(&m, &ws, x, 70, pb);
        ck_assert_msg(memcmp(pa, pb, 70 * FM_N_CLASSES * sizeof *pa) == 0, "%s: packed and plain differ (batch %zu)",
                      a.name, batches[b]);
        free(pa), free(pb);
        fm_ws_destroy(&ws);
    }
    fm_model_free(&m);
    free(params), free(x);
}
END_TEST

/* Eval mode never applies dropout: two eval passes are identical, draw
 * nothing from the rng they are given, and equal a training pass of the same
 * network with every dropout rate set to 0; a training pass with dropout
 * does differ (so the comparison is not vacuous). */
START_TEST(test_eval_never_drops) {
    fm_arch a;
    make_arch(&a, fm_arch_names[_i]);
    fm_arch a0 = without_dropout(&a);
    size_t n = 4, nz = n * FM_N_CLASSES;
    fm_error err = {{0}};
    fm_ws tw, iw;
    ck_assert_msg(fm_ws_create(&tw, &a, n, 1, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_ws_create(&iw, &a, n, 0, &err) == 0, "%s", err.msg);
    float *params = random_params(&a, 60), *x = random_images(&a, n, 61);
    float e1[4 * FM_N_CLASSES], e2[4 * FM_N_CLASSES], e3[4 * FM_N_CLASSES], t0[4 * FM_N_CLASSES];
    fm_rng rng, before;
    fm_rng_seed(&rng, 62);
    before = rng;
    memcpy(e1, fm_forward(&a, params, &tw, x, n, 0, &rng), sizeof e1);
    memcpy(e2, fm_forward(&a, params, &tw, x, n, 0, &rng), sizeof e2);
    memcpy(e3, fm_forward(&a, params, &iw, x, n, 0, &rng), sizeof e3);
    ck_assert(memcmp(&rng, &before, sizeof rng) == 0);
    ck_assert(memcmp(e1, e2, sizeof e1) == 0);
    for (size_t i = 0; i < nz; i++) ck_assert_float_eq_tol(e3[i], e1[i], 1e-6);
    memcpy(t0, fm_forward(&a0, params, &tw, x, n, 1, &rng), sizeof t0);
    ck_assert_msg(memcmp(t0, e1, sizeof t0) == 0,
                  "%s: eval pass differs from a p = 0 training pass", a.name);
    if (has_dropout(&a)) {
        const float *t = fm_forward(&a, params, &tw, x, n, 1, &rng);
        double diff = 0.0;
        for (size_t i = 0; i < nz; i++) diff += fabs(t[i] - e1[i]);
        ck_assert_msg(diff > 1e-3, "%s: training pass shows no dropout", a.name);
    }
    free(params), free(x);
    fm_ws_destroy(&tw);
    fm_ws_destroy(&iw);
}
END_TEST

/* ---- optimisers ------------------------------------------------------------------- */

START_TEST(test_sgd_plain) {
    /* p -= lr g, lr = 0.1: [1 -2 0.5] - 0.1 [0.5 -1 2] = [0.95 -1.9 0.3] */
    fm_optim o;
    fm_error err = {{0}};
    ck_assert_msg(fm_optim_create(&o, FM_OPT_SGD, 3, 0.1f, 0.0f, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(o.m); /* plain SGD keeps no state */
    float p[3] = {1, -2, 0.5f};
    const float g[3] = {0.5f, -1, 2}, want[3] = {0.95f, -1.9f, 0.3f};
    fm_optim_step(&o, p, g);
    for (int i = 0; i < 3; i++) ck_assert_float_eq_tol(p[i], want[i], 1e-7);
    ck_assert_uint_eq(o.t, 1);
    fm_optim_destroy(&o);
}
END_TEST

START_TEST(test_sgd_momentum) {
    /* Keras momentum, mu = 0.9, lr = 0.1: v = mu v - lr g; p += v.
     *   p0 = [1 1], g1 = [1 -2], g2 = [0.5 0.5]
     *   step 1: v = [-0.1  0.2]                           p = [0.9   1.2 ]
     *   step 2: v = [-0.09 - 0.05, 0.18 - 0.05]
     *             = [-0.14 0.13]                          p = [0.76  1.33] */
    fm_optim o;
    fm_error err = {{0}};
    ck_assert_msg(fm_optim_create(&o, FM_OPT_SGD, 2, 0.1f, 0.9f, &err) == 0, "%s", err.msg);
    float p[2] = {1, 1};
    const float g[2][2] = {{1, -2}, {0.5f, 0.5f}}, want1[2] = {0.9f, 1.2f},
                want2[2] = {0.76f, 1.33f};
    double dp[2] = {1, 1}, dv[2] = {0, 0}; /* the formula in double */
    for (int s = 0; s < 2; s++) {
        fm_optim_step(&o, p, g[s]);
        for (int i = 0; i < 2; i++) {
            dv[i] = 0.9 * dv[i] - 0.1 * g[s][i];
            dp[i] += dv[i];
            ck_assert_double_eq_tol(p[i], dp[i], 2e-7);
            ck_assert_float_eq_tol(p[i], s == 0 ? want1[i] : want2[i], 2e-7);
        }
    }
    ck_assert_float_eq_tol(o.m[0], -0.14f, 1e-7);
    ck_assert_float_eq_tol(o.m[1], 0.13f, 1e-7);
    fm_optim_destroy(&o);
}
END_TEST

START_TEST(test_adam) {
    /* Adam with Keras' defaults (b1 0.9, b2 0.999, eps 1e-7), lr 0.1:
     *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
     *   lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  p -= lr_t m / (sqrt(v) + eps)
     * p0 = [1 1 1], g1 = [1 -0.5 1e-6], g2 = [0.5 0.5 1e-6].  The third
     * coordinate's gradient is so small that eps shapes its step (without
     * eps it would move by exactly lr_t * sqrt(1-b2)/(1-b1) per step).
     * t = 1: lr_1 = 0.1 sqrt(0.001) / 0.1 = 0.0316227766
     *        m = [0.1 -0.05 1e-7], v = [1e-3 2.5e-4 1e-15]
     *        sqrt v = [0.0316228 0.0158114 3.16228e-8]
     *        p = 1 - lr_1 m / (sqrt v + eps)
     *          = [1 - 0.0316228 * 0.1 / 0.0316229,
     *             1 + 0.0316228 * 0.05 / 0.0158115,
     *             1 - 0.0316228 * 1e-7 / 1.316228e-7]
     *          = [0.900000316227, 1.09999936755, 0.975974692665]
     * t = 2: lr_2 = 0.1 sqrt(1 - 0.998001) / (1 - 0.81)
     *             = 0.1 * 0.0447102 / 0.19 = 0.0235316725
     *        m = [0.09 + 0.05, -0.045 + 0.05, 0.9e-7 + 1e-7]
     *          = [0.14 0.005 1.9e-7]
     *        v = [0.000999 + 0.00025, 0.00024975 + 0.00025, 0.999e-15 + 1e-15]
     *          = [0.001249 0.00049975 1.999e-15]
     *        p = [0.806782616111, 1.0947362332, 0.945078332445]
     *        (without eps the last would be 0.8)
     * Tolerance 5e-7: the engine works in float32 (an ulp at 1 is 1.2e-7; a
     * step is a handful of roundings) with float constants (1 - 0.999f is
     * 1.3e-5 off 0.001 relative, which moves the eps-dominated coordinate by
     * ~2e-7, as emulating float32 arithmetic shows); a missing bias
     * correction or a misplaced eps moves some coordinate by far more
     * (>= 6e-7 for eps in the first two, 0.14 in the third). */
    fm_optim o;
    fm_error err = {{0}};
    ck_assert_msg(fm_optim_create(&o, FM_OPT_ADAM, 3, 0.1f, 0.0f, &err) == 0, "%s", err.msg);
    ck_assert(o.beta1 == 0.9f && o.beta2 == 0.999f && o.eps == 1e-7f);
    float p[3] = {1, 1, 1};
    const double g[2][3] = {{1, -0.5, 1e-6}, {0.5, 0.5, 1e-6}};
    float gf[3];
    const double want[2][3] = {{0.900000316227, 1.09999936755, 0.975974692665},
                               {0.806782616111, 1.0947362332, 0.945078332445}};
    double dp[3] = {1, 1, 1}, dm[3] = {0}, dv[3] = {0}; /* the formula in double */
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < 3; i++) gf[i] = (float)g[s][i];
        fm_optim_step(&o, p, gf);
        int t = s + 1;
        double lr_t = 0.1 * sqrt(1.0 - pow(0.999, t)) / (1.0 - pow(0.9, t));
        for (int i = 0; i < 3; i++) {
            double gi = g[s][i];
            dm[i] = 0.9 * dm[i] + 0.1 * gi;
            dv[i] = 0.999 * dv[i] + 0.001 * gi * gi;
            dp[i] -= lr_t * dm[i] / (sqrt(dv[i]) + 1e-7);
            ck_assert_double_eq_tol(dp[i], want[s][i], 1e-11); /* the literals are the formula */
            ck_assert_msg(fabs(p[i] - want[s][i]) <= 5e-7,
                          "adam step %d p[%d] = %.9g, expected %.9g", t, i, (double)p[i],
                          want[s][i]);
        }
    }
    ck_assert_uint_eq(o.t, 2);
    const double want_m[3] = {0.14, 0.005, 1.9e-7}, want_v[3] = {0.001249, 0.00049975, 1.999e-15};
    for (int i = 0; i < 3; i++) {
        ck_assert_double_eq_tol(o.m[i], want_m[i], 3e-5 * want_m[i]);
        ck_assert_double_eq_tol(o.v[i], want_v[i], 3e-5 * want_v[i]);
    }
    fm_optim_destroy(&o);
}
END_TEST

START_TEST(test_optim_rejects) {
    fm_optim o;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_optim_create(&o, FM_OPT_SGD, 3, 0.0f, 0.0f, &err), -1);
    ck_assert(err.msg[0] != '\0');
    ck_assert_int_eq(fm_optim_create(&o, FM_OPT_SGD, 3, 0.1f, 1.0f, &err), -1);
    ck_assert_int_eq(fm_optim_create(&o, FM_OPT_ADAM, 3, NAN, 0.0f, &err), -1);
    ck_assert_int_eq(fm_optim_parse("adam"), FM_OPT_ADAM);
    ck_assert_int_eq(fm_optim_parse("sgd"), FM_OPT_SGD);
    ck_assert_int_eq(fm_optim_parse("rmsprop"), -1);
}
END_TEST

/* ---- the data-parallel pool --------------------------------------------------------- */

/* One epoch of Adam on ds (batches of 64) from the same initial parameters;
 * returns the parameters (caller frees). */
static float *train_epoch(const fm_arch *a, const fm_dataset *ds, size_t n_threads, uint64_t seed) {
    fm_error err = {{0}};
    fm_pool pool;
    fm_optim opt;
    ck_assert_msg(fm_pool_create(&pool, a, n_threads, 64, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_optim_create(&opt, FM_OPT_ADAM, a->n_params, 1e-3f, 0.0f, &err) == 0, "%s",
                  err.msg);
    float *params = random_params(a, 70);
    uint32_t *idx = xmalloc(ds->n * sizeof *idx);
    for (size_t i = 0; i < ds->n; i++) idx[i] = (uint32_t)i;
    fm_rng rng;
    fm_rng_derive(&rng, seed, 0, 0, 0);
    fm_rng_shuffle(&rng, idx, ds->n);
    for (size_t b = 0; b * 64 < ds->n; b++) {
        size_t n = ds->n - b * 64 < 64 ? ds->n - b * 64 : 64;
        fm_pool_gradient(&pool, params, ds, idx + b * 64, n, seed, 0, b, NULL);
        fm_optim_step(&opt, params, pool.grads[0]);
    }
    free(idx);
    fm_optim_destroy(&opt);
    fm_pool_destroy(&pool);
    return params;
}

/* The same seed and thread count twice give bit-identical parameters
 * (dropout on: mlp2 and cnn2); another seed gives other parameters. */
START_TEST(test_pool_deterministic) {
    static const char *const names[2] = {"mlp2", "cnn2"};
    static const size_t sizes[2] = {256,
                                    40}; /* 4 batches; 1 (the CNN is ~10x the work per image) */
    fm_arch a;
    make_arch(&a, names[_i]);
    uint8_t *pix, *lab;
    fm_dataset ds = synthetic_set(sizes[_i], 80, &pix, &lab);
    float *p1 = train_epoch(&a, &ds, 2, 5), *p2 = train_epoch(&a, &ds, 2, 5),
          *p3 = train_epoch(&a, &ds, 2, 6);
    ck_assert_msg(memcmp(p1, p2, a.n_params * sizeof(float)) == 0,
                  "%s: same seed, different parameters", a.name);
    ck_assert_msg(memcmp(p1, p3, a.n_params * sizeof(float)) != 0, "%s: the seed changes nothing",
                  a.name);
    free(p1), free(p2), free(p3), free(pix), free(lab);
}
END_TEST

/* Without dropout the batch gradient does not depend on how the batch is
 * split: 2 and 3 threads match 1 thread.  Only the float summation order
 * differs (per-thread partial sums over 10 or 7 examples, then added), so
 * the tolerance is relative to each tensor's largest gradient: summing n =
 * 20 per-example contributions in another order errs by <= n u sum|terms|,
 * ~1e-6 of the tensor's scale; 1e-4 leaves a wide margin and still catches
 * a dropped or doubled example (a 1/20 = 5% change).  The summed loss and
 * the count of correct predictions match too. */
START_TEST(test_pool_thread_split) {
    static const char *const names[2] = {"cnn1", "mlp2"};
    fm_arch named;
    make_arch(&named, names[_i]);
    fm_arch a = without_dropout(&named);
    size_t n = 20;
    uint8_t *pix, *lab;
    fm_dataset ds = synthetic_set(n, 90, &pix, &lab);
    uint32_t idx[20];
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)(n - 1 - i); /* any order */
    float *params = random_params(&a, 91), *g[3];
    double loss[3];
    size_t correct[3];
    for (size_t t = 0; t < 3; t++) {
        fm_error err = {{0}};
        fm_pool pool;
        ck_assert_msg(fm_pool_create(&pool, &a, t + 1, n, &err) == 0, "%s", err.msg);
        correct[t] = 0;
        loss[t] = fm_pool_gradient(&pool, params, &ds, idx, n, 1, 0, 0, &correct[t]);
        g[t] = xmalloc(a.n_params * sizeof(float));
        memcpy(g[t], pool.grads[0], a.n_params * sizeof(float));
        fm_pool_destroy(&pool);
    }
    for (size_t t = 1; t < 3; t++) {
        ck_assert_double_eq_tol(loss[t], loss[0], 1e-12 * loss[0]);
        ck_assert_uint_eq(correct[t], correct[0]);
        for (int l = 0; l < a.n_layers; l++) {
            const fm_layer *L = &a.layers[l];
            size_t lo = L->w_off, hi = L->b_off + L->n_b;
            if (hi == lo) continue;
            double gmax = 0.0, emax = 0.0;
            for (size_t i = lo; i < hi; i++) gmax = fmax(gmax, fabs(g[0][i]));
            ck_assert(gmax > 0.0);
            for (size_t i = lo; i < hi; i++) emax = fmax(emax, fabs(g[t][i] - g[0][i]));
            if (getenv("FM_TEST_VERBOSE"))
                printf("  %s layer %d, %zu threads: max|g| %.3g, max diff %.3g\n", a.name, l, t + 1,
                       gmax, emax);
            ck_assert_msg(emax <= 1e-4 * gmax,
                          "%s layer %d: %zu threads differ from 1 by %.3g (max |g| %.3g)", a.name,
                          l, t + 1, emax, gmax);
        }
    }
    for (size_t t = 0; t < 3; t++) free(g[t]);
    free(params), free(pix), free(lab);
}
END_TEST

/* ---- a short training run on the real data ----------------------------------------- */

/* mlp2, seed 1, Adam lr 1e-3, batches of 64, 3 epochs over the first 4000
 * training images, 2 threads: the mean training loss falls every epoch and
 * accuracy on the next 1000 (held-out) training images exceeds 80%. */
START_TEST(test_train_smoke) {
    const char *dir = fm_data_dir(NULL);
    struct stat st;
    if (stat(dir, &st) != 0) {
        printf("note: %s not found; skipping the training smoke run (install dataset-fashion-mnist "
               "or set " FM_DATA_ENV ")\n",
               dir);
        return;
    }
    fm_error err = {{0}};
    fm_dataset all;
    ck_assert_msg(fm_dataset_load_split(&all, dir, FM_SPLIT_TRAIN, &err) == 0, "%s", err.msg);
    ck_assert(all.n >= 5000);
    fm_dataset tr = fm_dataset_view(&all, 0, 4000), va = fm_dataset_view(&all, 4000, 1000);
    fm_arch a;
    make_arch(&a, "mlp2");
    float *params = xmalloc(a.n_params * sizeof(float));
    const uint64_t seed = 1;
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    fm_arch_init_params(&a, params, &rng);
    fm_pool pool;
    fm_optim opt;
    ck_assert_msg(fm_pool_create(&pool, &a, 2, 64, &err) == 0, "%s", err.msg);
    ck_assert_msg(fm_optim_create(&opt, FM_OPT_ADAM, a.n_params, 1e-3f, 0.0f, &err) == 0, "%s",
                  err.msg);
    uint32_t *idx = xmalloc(tr.n * sizeof *idx);
    for (size_t i = 0; i < tr.n; i++) idx[i] = (uint32_t)i;
    double prev = INFINITY;
    for (uint64_t epoch = 0; epoch < 3; epoch++) {
        fm_rng_derive(&rng, seed, epoch, UINT64_MAX, 0);
        fm_rng_shuffle(&rng, idx, tr.n);
        double loss = 0.0;
        size_t correct = 0;
        for (size_t b = 0; b * 64 < tr.n; b++) {
            size_t n = tr.n - b * 64 < 64 ? tr.n - b * 64 : 64;
            loss += fm_pool_gradient(&pool, params, &tr, idx + b * 64, n, seed, epoch, b, &correct);
            fm_optim_step(&opt, params, pool.grads[0]);
        }
        loss /= (double)tr.n;
        printf("train smoke: epoch %d  loss %.4f  train accuracy %.4f\n", (int)epoch + 1, loss,
               (double)correct / (double)tr.n);
        ck_assert_msg(loss < prev, "epoch %d: loss %.4f did not fall (previous %.4f)",
                      (int)epoch + 1, loss, prev);
        prev = loss;
    }
    fm_eval ev;
    fm_pool_evaluate(&pool, params, &va, &ev, NULL, NULL);
    printf("train smoke: validation loss %.4f  accuracy %.4f (%zu/%zu)\n", ev.loss, ev.accuracy,
           ev.n_correct, ev.n);
    ck_assert_uint_eq(ev.n, 1000);
    ck_assert_msg(ev.accuracy > 0.80, "validation accuracy %.4f <= 0.80", ev.accuracy);
    free(idx), free(params);
    fm_optim_destroy(&opt);
    fm_pool_destroy(&pool);
    fm_dataset_free(&all);
}
END_TEST


/* ---- serving options ----------------------------------------------------------------- */

/* The "serving" metadata: mirror averaging of the logits, temperature,
 * the uncertainty threshold; malformed entries are refused. */
START_TEST(test_serving_options) {
    fm_arch a;
    make_arch(&a, "cnn1");
    fm_error err = {{0}};
    fm_model m = {0};
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    float *p = random_params(&a, 90);
    memcpy(m.params, p, a.n_params * sizeof *p);
    size_t n = 3;
    float *x = random_images(&a, n, 91), *xf = xmalloc(n * 784 * sizeof *xf);
    for (size_t e = 0; e < n; e++)
        for (size_t r = 0; r < 28; r++)
            for (size_t c = 0; c < 28; c++) xf[e * 784 + r * 28 + c] = x[e * 784 + r * 28 + 27 - c];
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &a, 2, 0, &err), 0);
    float z[3 * 10], zf[3 * 10], want[3 * 10], got[3 * 10];
    ck_assert_int_eq(fm_model_pack(&m, &err), 0);
    ck_assert(m.tta == 0 && m.temperature == 1.0f && m.uncertain_below == 0.0f);
    fm_model_logits(&m, &ws, x, n, z);
    fm_model_logits(&m, &ws, xf, n, zf);
    ck_assert_int_eq(fm_model_set_meta(&m, "serving", "{\"tta\":\"hflip\",\"temperature\":2,\"uncertain_below\":0.5}", &err), 0);
    ck_assert_int_eq(fm_model_pack(&m, &err), 0);
    ck_assert(m.tta == 1 && m.temperature == 2.0f && m.uncertain_below == 0.5f);
    for (size_t i = 0; i < n * 10; i++) want[i] = 0.5f * (z[i] + zf[i]) / 2.0f;
    fm_softmax(want, want, n, 10);
    fm_model_predict(&m, &ws, x, n, got);
    for (size_t i = 0; i < n * 10; i++) ck_assert_float_eq_tol(got[i], want[i], 1e-6);
    float flat[10], sure[10] = {0};
    for (int k = 0; k < 10; k++) flat[k] = 0.1f;
    sure[3] = 0.9f, sure[4] = 0.1f;
    ck_assert(fm_model_uncertain(&m, flat, 0.0f) && !fm_model_uncertain(&m, sure, 0.0f));
    static const char *const bad[] = {"[1]", "{\"tta\":\"vflip\"}", "{\"temperature\":0}", "{\"temperature\":\"2\"}",
                                      "{\"uncertain_below\":1.5}", "not json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(fm_model_set_meta(&m, "serving", bad[i], &err), 0);
        ck_assert_msg(fm_model_pack(&m, &err) != 0, "serving %s accepted", bad[i]);
        ck_assert_ptr_nonnull(strstr(err.msg, "serving"));
    }
    fm_ws_destroy(&ws);
    fm_model_free(&m);
    free(p), free(x), free(xf);
}
END_TEST


/* The feature-space detector of the serving metadata: its score is the
 * smallest squared Mahalanobis distance of the normalised features to the
 * class means under the precision L L^T (computed here directly), and a
 * score above max_distance marks an answer uncertain; malformed ones are
 * refused. */
START_TEST(test_ood_detector) {
    fm_arch a;
    make_arch(&a, "mlp2");
    fm_error err = {{0}};
    fm_model m = {0};
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    float *p = random_params(&a, 95);
    memcpy(m.params, p, a.n_params * sizeof *p);
    enum { F = 256 };
    int src = a.layers[a.n_layers - 1].in[0];
    ck_assert_uint_eq(a.layers[src].out_size, F);
    fm_rng rng;
    fm_rng_seed(&rng, 96);
    static float means[10 * F], chol[F * F];
    for (int i = 0; i < 10 * F; i++) means[i] = (fm_rng_uniform(&rng) - 0.5f) * 0.1f;
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) chol[i * F + j] = i == j ? 1.0f + fm_rng_uniform(&rng) : i > j ? 0.01f * (fm_rng_uniform(&rng) - 0.5f) : 0.0f;
    cJSON *ood = cJSON_CreateObject(), *mj = cJSON_AddArrayToObject(ood, "means");
    cJSON_AddNumberToObject(ood, "layer", src);
    cJSON_AddNumberToObject(ood, "max_distance", 3.0);
    for (int c = 0; c < 10; c++) cJSON_AddItemToArray(mj, cJSON_CreateFloatArray(means + c * F, F));
    cJSON_AddItemToObject(ood, "chol", cJSON_CreateFloatArray(chol, F * F));
    cJSON *sv = cJSON_CreateObject();
    cJSON_AddItemToObject(sv, "ood", ood);
    char *text = cJSON_PrintUnformatted(sv);
    ck_assert_int_eq(fm_model_set_meta(&m, "serving", text, &err), 0);
    ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s", err.msg);
    ck_assert_ptr_nonnull(m.ood);
    size_t n = 2;
    float *x = random_images(&a, n, 97), f[2 * F], z[2 * 10], sc[2];
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &a, 2, 0, &err), 0);
    fm_model_features(&m, &ws, x, n, f);
    fm_model_logits_scores(&m, &ws, x, n, z, sc);
    for (size_t e = 0; e < n; e++) {
        double nn = 0, best = INFINITY;
        for (int i = 0; i < F; i++) nn += (double)f[e * F + i] * f[e * F + i];
        nn = 1 / sqrt(nn);
        for (int c = 0; c < 10; c++) { /* (v^T L)(L^T v) */
            double d2 = 0;
            for (int j = 0; j < F; j++) {
                double t = 0;
                for (int i = 0; i < F; i++) t += (double)chol[i * F + j] * (f[e * F + i] * nn - means[c * F + i]);
                d2 += t * t;
            }
            best = fmin(best, d2);
        }
        ck_assert_msg(fabs(sc[e] - best) <= 1e-4 * best, "score %g, by hand %g", (double)sc[e], best);
    }
    float probs[10] = {0.9f, 0.1f};
    ck_assert(fm_model_uncertain(&m, probs, 3.5f) && !fm_model_uncertain(&m, probs, 2.5f));
    free(text);
    cJSON_DeleteItemFromObjectCaseSensitive(ood, "chol");
    cJSON_AddItemToObject(ood, "chol", cJSON_CreateFloatArray(chol, 10)); /* too short */
    text = cJSON_PrintUnformatted(sv);
    ck_assert_int_eq(fm_model_set_meta(&m, "serving", text, &err), 0);
    ck_assert(fm_model_pack(&m, &err) != 0 && strstr(err.msg, "chol"));
    free(text);
    cJSON_ReplaceItemInObjectCaseSensitive(ood, "layer", cJSON_CreateNumber(0));
    text = cJSON_PrintUnformatted(sv);
    ck_assert_int_eq(fm_model_set_meta(&m, "serving", text, &err), 0);
    ck_assert(fm_model_pack(&m, &err) != 0 && strstr(err.msg, "layer"));
    free(text);
    cJSON_Delete(sv);
    fm_ws_destroy(&ws);
    fm_model_free(&m);
    free(p), free(x);
}
END_TEST

/* ---- the suite ------------------------------------------------------------------------ */

static Suite *net_suite(void) {
    int n_arch = FM_N_STUDY_ARCHS; /* the modern ones: test_graph.c */
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("gradient");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_net_gradcheck, 0, n_arch);
    suite_add_tcase(s, tc);

    tc = tcase_create("eval");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_predict_matches_forward, 0, n_arch);
    tcase_add_loop_test(tc, test_packed_predict_identical, 0, n_arch);
    tcase_add_loop_test(tc, test_fused_inference_identical, 0, n_arch);
    tcase_add_loop_test(tc, test_eval_never_drops, 0, n_arch);
    tcase_add_test(tc, test_serving_options);
    tcase_add_test(tc, test_ood_detector);
    suite_add_tcase(s, tc);

    tc = tcase_create("optim");
    tcase_add_test(tc, test_sgd_plain);
    tcase_add_test(tc, test_sgd_momentum);
    tcase_add_test(tc, test_adam);
    tcase_add_test(tc, test_optim_rejects);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_pool_deterministic, 0, 2);
    tcase_add_loop_test(tc, test_pool_thread_split, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_train_smoke);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(net_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
