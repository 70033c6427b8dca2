/* test_graph.c - architectures as graphs (fm_arch.c, fm_ops.c) and the
 * networks built from them (fm_net.c): parsing and refusal of bad
 * descriptions, canonical JSON, the descriptor table's completeness, a
 * finite-difference check of whole residual networks (batch norm in
 * training and eval mode, both projections, strided convolutions, global
 * pooling) with respect to every parameter and the input, the inference
 * plan against the reference for every named modern architecture, and the
 * running statistics across threads.  The study's sequential networks are
 * covered by test_net.c; PyTorch's own numbers by test_torch_ref.c. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_arch.h"
#include "fm_layers.h"
#include "fm_net.h"
#include "fm_ops.h"
#include "fm_rng.h"
#include "fm_train.h"

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* ---- parsing and refusal ------------------------------------------------------------ */

static const char *const RES_OK =
    "{\"name\":\"t\",\"input\":[1,8,8],\"layers\":["
    "{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"padding\":\"same\",\"bias\":false},{\"type\":\"batchnorm2d\"},"
    "{\"type\":\"relu\",\"name\":\"a\"},"
    "{\"type\":\"conv2d\",\"out\":6,\"kernel\":3,\"stride\":2,\"padding\":\"same\"},"
    "{\"type\":\"add\",\"inputs\":[-1,\"a\"]},{\"type\":\"global_avgpool\"},{\"type\":\"linear\",\"out\":10}]}";

START_TEST(test_parse_graph) {
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_from_json(&a, RES_OK, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(a.n_layers, 7);
    ck_assert(a.graph);
    ck_assert_int_eq(a.layers[4].n_in, 2);
    ck_assert_int_eq(a.layers[4].in[0], 3);
    ck_assert_int_eq(a.layers[4].in[1], 2);
    ck_assert_int_eq(a.layers[4].proj, FM_PROJ_CONV_BN); /* 4x8x8 -> 6x4x4: a projection, stride 2 */
    ck_assert_int_eq(a.layers[4].stride, 2);
    ck_assert_int_eq(a.layers[3].out_h, 4);
    ck_assert_int_eq(a.layers[2].n_consumers, 2);
    /* trainable: conv 36 + bn 8 + conv 216 + 6 + proj 24 + bn 12 + linear 60 + 10 */
    ck_assert_uint_eq(a.n_trainable, 36 + 8 + 216 + 6 + 24 + 12 + 60 + 10);
    ck_assert_uint_eq(a.n_params, a.n_trainable + 2 * 4 + 1 + 2 * 6 + 1);
    /* canonical JSON: references by name or index, defaults left out; round trip */
    char *j = fm_arch_to_json(&a);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(strstr(j, "{\"type\":\"add\",\"inputs\":[3,\"a\"]}"));
    ck_assert_ptr_nonnull(strstr(j, "\"stride\":2"));
    ck_assert_ptr_nonnull(strstr(j, "\"bias\":false"));
    ck_assert_ptr_null(strstr(j, "momentum"));
    fm_arch b;
    ck_assert_msg(fm_arch_from_json(&b, j, &err) == 0, "%s", err.msg);
    char why[160];
    ck_assert_msg(!fm_arch_differs(&a, &b, why, sizeof why), "%s", why);
    char *j2 = fm_arch_to_json(&b);
    ck_assert_str_eq(j, j2);
    free(j), free(j2);
    /* the study's descriptions print as they are written: no new fields */
    ck_assert_int_eq(fm_arch_named(&a, "cnn2", &err), 0);
    j = fm_arch_to_json(&a);
    ck_assert_ptr_null(strstr(j, "inputs"));
    ck_assert_ptr_null(strstr(j, "stride"));
    ck_assert_ptr_null(strstr(j, "bias"));
    free(j);
}
END_TEST

/* Each bad description is refused with a message naming the layer and the problem. */
START_TEST(test_refuse) {
    static const struct {
        const char *layers, *want;
    } bad[] = {
        {"{\"type\":\"conv3d\"}", "layer 0: unknown type \"conv3d\""},
        {"{\"type\":\"relu\",\"inputs\":[1]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "refers forward"},
        {"{\"type\":\"relu\",\"inputs\":[\"x\"]},{\"type\":\"flatten\",\"name\":\"x\"},{\"type\":\"linear\",\"out\":10}",
         "refers forward"},
        {"{\"type\":\"relu\",\"inputs\":[\"nowhere\"]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "names no earlier layer"},
        {"{\"type\":\"relu\",\"inputs\":[0]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "refers forward"},
        {"{\"type\":\"relu\",\"inputs\":[-3]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "refers to nothing"},
        {"{\"type\":\"add\",\"inputs\":[-1]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "layer 0 (add): \"inputs\" must be an array of 2 references"},
        {"{\"type\":\"add\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "needs \"inputs\""},
        {"{\"type\":\"conv2d\",\"out\":4,\"strid\":2},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "layer 0 (conv2d): unknown field \"strid\""},
        {"{\"type\":\"conv2d\",\"out\":4,\"stride\":7},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "\"stride\" must be an integer in [1, 4]"},
        {"{\"type\":\"batchnorm1d\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "batchnorm1d needs a flat vector"},
        {"{\"type\":\"flatten\"},{\"type\":\"batchnorm2d\"},{\"type\":\"linear\",\"out\":10}", "batchnorm2d needs an image"},
        {"{\"type\":\"batchnorm2d\",\"eps\":0},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "\"eps\" must be"},
        {"{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"name\":\"c\"},{\"type\":\"conv2d\",\"out\":3,\"kernel\":5},"
         "{\"type\":\"add\",\"inputs\":[\"c\",-1]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "no 1x1 projection"},
        {"{\"type\":\"conv2d\",\"out\":3,\"name\":\"c\"},{\"type\":\"relu\"},{\"type\":\"add\",\"inputs\":[-1,\"c\"],"
         "\"projection\":\"conv\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "\"projection\" given, but both inputs are"},
        {"{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"relu\",\"name\":\"a\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "name \"a\" is already layer 0's"},
        {"{\"type\":\"relu\"},{\"type\":\"relu\",\"inputs\":[\"input\"]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "layer 0 (relu): its output is never used"},
        {"{\"type\":\"global_avgpool\"},{\"type\":\"global_avgpool\"},{\"type\":\"linear\",\"out\":10}",
         "layer 1 (global_avgpool): global_avgpool needs an image input"},
        {"{\"type\":\"conv2d\",\"out\":4},{\"type\":\"linear\",\"out\":10}", "linear needs a flat input"},
        {"{\"type\":\"relu\",\"inputs\":[1.5]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "not a layer index"},
        {"{\"type\":\"relu\",\"inputs\":[{}]},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}",
         "must be a layer index, a layer name or \"input\""},
        {"{\"type\":\"relu\",\"name\":\"input\"},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}", "not \"input\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[1024];
        snprintf(json, sizeof json, "{\"input\":[1,8,8],\"layers\":[%s]}", bad[i].layers);
        fm_arch a;
        fm_error err = {{0}};
        ck_assert_msg(fm_arch_from_json(&a, json, &err) != 0, "case %zu accepted: %s", i, bad[i].layers);
        ck_assert_msg(strstr(err.msg, bad[i].want) != NULL, "case %zu: \"%s\" does not say \"%s\"", i, err.msg,
                      bad[i].want);
    }
}
END_TEST

/* Every row of the descriptor table has what the engine calls
 * unconditionally, and its name finds it. */
START_TEST(test_table_complete) {
    for (int t = 0; t < FM_N_LTYPES; t++) {
        const fm_op *op = fm_op_of((fm_ltype)t);
        ck_assert_msg(op->name && op->torch && op->shape && op->forward && op->backward, "row %d incomplete", t);
        ck_assert_int_eq(fm_op_find(op->name), t);
        ck_assert(op->n_in >= 1 && op->n_in <= FM_MAX_INPUTS);
        ck_assert_msg(!op->stat_floats == !op->update, "%s: statistics without an update, or the reverse", op->name);
    }
    ck_assert_int_eq(fm_op_find("conv3d"), -1);
}
END_TEST

/* Random parameters with batch-norm statistics that are not the identity. */
static float *random_model_params(const fm_arch *a, uint64_t seed) {
    float *p = xmalloc(a->n_params * sizeof *p);
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    fm_arch_init_params(a, p, &rng);
    fm_tensor t[FM_MAX_TENSORS];
    for (int li = 0; li < a->n_layers; li++) {
        int nt = fm_layer_tensors(a, li, t);
        for (int k = 0; k < nt; k++) {
            const char *s = strrchr(t[k].name, '.') + 1;
            for (size_t e = 0; e < t[k].count; e++) {
                float *v = p + t[k].off + e;
                if (strcmp(s, "running_var") == 0) *v = 0.5f + fm_rng_uniform(&rng);
                else if (strcmp(s, "running_mean") == 0 || strcmp(s, "bias") == 0) *v = 0.2f * fm_rng_uniform(&rng) - 0.1f;
                else if (strcmp(s, "weight") == 0 && !(t[k].flags & FM_T_DECAY)) *v = 0.8f + 0.4f * fm_rng_uniform(&rng);
            }
        }
    }
    return p;
}

/* ---- a whole residual network by finite differences --------------------------------- */

/* Residual blocks on a 2x6x6 input: a strided one with a conv (bias)
 * projection, one with a conv + batch norm projection, an identity one
 * that adds a layer to itself, a batchnorm1d after the global pool with a
 * skip around it: every new layer in training mode.  Each batch norm's
 * output reaches the loss along some path that no later batch norm
 * normalises (in training mode a batch norm makes the loss invariant to
 * the scale of its input, which would hide errors in the terms that scale
 * affects). */
static const char *const GRAD_NET =
    "{\"name\":\"g\",\"input\":[2,6,6],\"layers\":["
    "{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"padding\":\"same\",\"bias\":false},{\"type\":\"batchnorm2d\"},"
    "{\"type\":\"relu\",\"name\":\"a\"},"
    "{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"stride\":2,\"padding\":\"same\",\"bias\":false},"
    "{\"type\":\"batchnorm2d\"},{\"type\":\"relu\"},"
    "{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"batchnorm2d\",\"momentum\":0.3},"
    "{\"type\":\"add\",\"inputs\":[-1,\"a\"],\"projection\":\"conv\"},{\"type\":\"relu\",\"name\":\"b\"},"
    "{\"type\":\"conv2d\",\"out\":5,\"kernel\":1},"
    "{\"type\":\"add\",\"inputs\":[-1,\"b\"]},{\"type\":\"avgpool2d\",\"kernel\":1,\"name\":\"c\"},"
    "{\"type\":\"add\",\"inputs\":[\"c\",-1]},{\"type\":\"global_avgpool\",\"name\":\"g\"},{\"type\":\"batchnorm1d\"},"
    "{\"type\":\"add\",\"inputs\":[-1,\"g\"]},{\"type\":\"linear\",\"out\":10}]}";

/* GRAD_NET without its relus: every remaining layer is smooth. */
static const char *const GRAD_NET_SMOOTH =
    "{\"name\":\"s\",\"input\":[2,6,6],\"layers\":["
    "{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"padding\":\"same\",\"bias\":false},{\"type\":\"batchnorm2d\",\"name\":\"a\"},"
    "{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"stride\":2,\"padding\":\"same\",\"bias\":false},"
    "{\"type\":\"batchnorm2d\"},"
    "{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"batchnorm2d\",\"momentum\":0.3},"
    "{\"type\":\"add\",\"inputs\":[-1,\"a\"],\"projection\":\"conv\",\"name\":\"b\"},"
    "{\"type\":\"conv2d\",\"out\":5,\"kernel\":1},"
    "{\"type\":\"add\",\"inputs\":[-1,\"b\"]},{\"type\":\"avgpool2d\",\"kernel\":1,\"name\":\"c\"},"
    "{\"type\":\"add\",\"inputs\":[\"c\",-1]},{\"type\":\"global_avgpool\",\"name\":\"g\"},{\"type\":\"batchnorm1d\"},"
    "{\"type\":\"add\",\"inputs\":[-1,\"g\"]},{\"type\":\"linear\",\"out\":10}]}";

/* L = sum_i logits_i r_i over a batch of n, in double. */
static double loss_at(const fm_arch *a, const float *p, fm_ws *ws, const float *x, size_t n, const float *r,
                      int train) {
    const float *z = fm_forward(a, p, ws, x, n, train, NULL);
    double L = 0.0;
    for (size_t i = 0; i < n * FM_N_CLASSES; i++) L += (double)z[i] * r[i];
    return L;
}

/* One coordinate v of the check: 1 when the backward value g agrees with
 * the central difference, 0 when a relu kink lies within h (the two
 * one-sided slopes disagree by more than smooth curvature explains: a
 * kink, not a wrong gradient, so the coordinate says nothing); fails the
 * test on a real disagreement. */
static int check_coord(const fm_arch *a, float *p, fm_ws *ws, float *x, size_t n, const float *r, int train,
                       float *v, float g, float h, int kinks, const char *what, size_t e) {
    float v0 = *v;
    double L0 = loss_at(a, p, ws, x, n, r, train);
    *v = v0 + h;
    double vp = *v, Lp = loss_at(a, p, ws, x, n, r, train);
    *v = v0 - h;
    double vm = *v, Lm = loss_at(a, p, ws, x, n, r, train);
    *v = v0;
    double sp = (Lp - L0) / (vp - v0), sm = (L0 - Lm) / (v0 - vm), num = (Lp - Lm) / (vp - vm);
    /* a kink at a fraction of the step makes the one-sided slopes differ by
     * up to twice the central difference's error; smooth curvature (h L''
     * ~ 1e-3 here) and float roundoff of L (~1e-6 / h ~ 2e-3) by less than
     * the tolerance */
    if (kinks && fabs(sp - sm) > 4e-3 + 1e-2 * fabs(num)) return 0;
    ck_assert_msg(fabs(num - g) <= 4e-3 + 2e-2 * fabs(num), "%s[%zu] (%s mode): finite difference %.7g, backward %.7g",
                  what, e, train ? "train" : "eval", num, (double)g);
    return 1;
}

/* _i even: training mode (batch statistics); odd: eval mode (running
 * statistics are constants: the gradient an explanation uses).  _i < 2:
 * GRAD_NET, whose relus make the loss piecewise smooth; after batch norm
 * many relu inputs sit near 0, so some coordinates see a kink within h:
 * those are skipped (check_coord), at most a quarter of them.  _i >= 2:
 * the same graph without relu, smooth, where no coordinate may be skipped. */
START_TEST(test_residual_gradcheck) {
    int train = _i % 2 == 0;
    fm_arch a;
    fm_error err = {{0}};
    int smooth = _i >= 2;
    ck_assert_msg(fm_arch_from_json(&a, smooth ? GRAD_NET_SMOOTH : GRAD_NET, &err) == 0, "%s", err.msg);
    size_t n = 3, in = 2 * 6 * 6;
    fm_ws ws;
    ck_assert_msg(fm_ws_create(&ws, &a, n, 1, &err) == 0, "%s", err.msg);
    float *p = random_model_params(&a, 77), *g = xmalloc(a.n_params * sizeof *g);
    float *x = xmalloc(n * in * sizeof *x), *dx = xmalloc(n * in * sizeof *dx), r[3 * FM_N_CLASSES];
    fm_rng rng;
    fm_rng_seed(&rng, 78);
    fm_tensor t[FM_MAX_TENSORS];
    for (size_t i = 0; i < n * in; i++) x[i] = fm_rng_uniform(&rng);
    for (size_t i = 0; i < n * FM_N_CLASSES; i++) r[i] = 2.0f * fm_rng_uniform(&rng) - 1.0f;
    loss_at(&a, p, &ws, x, n, r, train);
    fm_backward_input(&a, p, &ws, x, r, n, g, dx);
    const float h = smooth ? 1.0f / 256.0f : 1.0f / 2048.0f; /* no kinks: a larger step, less roundoff */
    size_t checked = 0, kinks = 0, total = 0;
    double gmax = 0.0;
    for (int li = 0; li < a.n_layers; li++) {
        int nt = fm_layer_tensors(&a, li, t);
        for (int k = 0; k < nt; k++)
            for (size_t e = 0; e < t[k].count; e++) {
                size_t i = t[k].off + e;
                if (!(t[k].flags & FM_T_TRAIN)) {
                    ck_assert_msg(g[i] == 0.0f, "%s: a buffer got a gradient", t[k].name);
                    continue;
                }
                total++;
                if (check_coord(&a, p, &ws, x, n, r, train, &p[i], g[i], h, !smooth, t[k].name, e))
                    checked++;
                else
                    kinks++;
                if (fabs(g[i]) > gmax) gmax = fabs(g[i]);
            }
    }
    for (size_t i = 0; i < n * in; i++, total++) { /* and the input */
        if (check_coord(&a, p, &ws, x, n, r, train, &x[i], dx[i], h, !smooth, "input", i))
            checked++;
        else
            kinks++;
    }
    ck_assert_uint_eq(total, a.n_trainable + n * in);
    ck_assert_msg(kinks * 4 <= total, "%zu of %zu coordinates skipped at kinks", kinks, total);
    ck_assert(gmax > 0.05);
    if (getenv("FM_TEST_VERBOSE"))
        printf("residual (%s): %zu coordinates checked, %zu skipped at relu kinks\n", train ? "train" : "eval", checked,
               kinks);
    fm_ws_destroy(&ws);
    free(p), free(g), free(x), free(dx);
}
END_TEST

/* ---- the plan against the reference ------------------------------------------------- */

/* For every modern named architecture: the plan (batch norm folded into the
 * convolutions, fused relu and add) gives the reference's probabilities
 * within 2e-5, in batches and one image at a time; and a graph without
 * batch norm plans bit-identically (the same sums in the same order). */
START_TEST(test_plan_matches_reference) {
    const char *name = fm_arch_names[FM_N_STUDY_ARCHS + _i];
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_named(&a, name, &err) == 0, "%s", err.msg);
    size_t n = 5, in = 784;
    fm_model m = {0};
    ck_assert_msg(fm_model_init(&m, &a, &err) == 0, "%s", err.msg);
    float *p = random_model_params(&a, 500 + (uint64_t)_i);
    memcpy(m.params, p, a.n_params * sizeof *p);
    ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s", err.msg);
    float *x = xmalloc(n * in * sizeof *x), ref[5 * 10], got[5 * 10];
    fm_rng rng;
    fm_rng_seed(&rng, 9);
    for (size_t i = 0; i < n * in; i++) x[i] = i % 3 ? fm_rng_uniform(&rng) : 0.0f;
    fm_ws iw, one;
    ck_assert_int_eq(fm_ws_create(&iw, &a, n, 0, &err), 0);
    ck_assert_int_eq(fm_ws_create(&one, &a, 1, 0, &err), 0);
    fm_predict(&a, p, &iw, x, n, ref);
    fm_model_predict(&m, &iw, x, n, got);
    for (size_t i = 0; i < n * 10; i++)
        ck_assert_msg(fabsf(got[i] - ref[i]) <= 2e-5f, "%s: planned %.9g, reference %.9g at %zu", name, (double)got[i],
                      (double)ref[i], i);
    for (size_t e = 0; e < n; e++) {
        fm_model_predict(&m, &one, x + e * in, 1, got + e * 10);
        for (size_t k = 0; k < 10; k++) ck_assert(fabsf(got[e * 10 + k] - ref[e * 10 + k]) <= 2e-5f);
    }
    fm_model_free(&m);
    fm_ws_destroy(&iw);
    fm_ws_destroy(&one);
    free(p), free(x);
}
END_TEST

START_TEST(test_plan_identical_without_bn) {
    static const char *json =
        "{\"name\":\"r\",\"input\":[1,28,28],\"layers\":["
        "{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\",\"name\":\"a\"},"
        "{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":8,\"kernel\":3,\"padding\":\"same\"},"
        "{\"type\":\"add\",\"inputs\":[-1,\"a\"]},{\"type\":\"relu\",\"name\":\"b\"},"
        "{\"type\":\"conv2d\",\"out\":16,\"kernel\":3,\"stride\":2,\"padding\":\"same\"},{\"type\":\"relu\"},"
        "{\"type\":\"add\",\"inputs\":[-1,\"b\"],\"projection\":\"conv\"},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"avgpool2d\",\"kernel\":2},{\"type\":\"flatten\"},"
        "{\"type\":\"dropout\",\"p\":0.3},{\"type\":\"linear\",\"out\":10}]}";
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_from_json(&a, json, &err) == 0, "%s", err.msg);
    fm_model m = {0};
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    float *p = random_model_params(&a, 42);
    memcpy(m.params, p, a.n_params * sizeof *p);
    ck_assert_int_eq(fm_model_pack(&m, &err), 0);
    size_t n = 7;
    float *x = xmalloc(n * 784 * sizeof *x), ref[7 * 10], got[7 * 10];
    for (size_t i = 0; i < n * 784; i++) x[i] = (float)((i * 37) % 101) / 100.0f;
    fm_ws iw;
    ck_assert_int_eq(fm_ws_create(&iw, &a, 3, 0, &err), 0);
    fm_predict(&a, p, &iw, x, n, ref);
    fm_model_predict(&m, &iw, x, n, got);
    ck_assert_mem_eq(ref, got, sizeof ref);
    fm_model_free(&m);
    fm_ws_destroy(&iw);
    free(p), free(x);
}
END_TEST

/* ---- threads and running statistics --------------------------------------------------- */

/* A training step of a batch-norm network through the thread pool: the
 * same thread count gives the same gradient and running statistics bit for
 * bit; with one thread the statistics are those of the whole batch. */
START_TEST(test_pool_batchnorm) {
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_int_eq(fm_arch_named(&a, "resnet8", &err), 0);
    size_t n = 12;
    uint8_t *pix = xmalloc(n * 784), *lab = xmalloc(n);
    for (size_t i = 0; i < n * 784; i++) pix[i] = (uint8_t)((i * 131) % 256);
    for (size_t i = 0; i < n; i++) lab[i] = (uint8_t)(i % 10);
    fm_dataset ds = {.n = n, .rows = 28, .cols = 28, .pixels = pix, .labels = lab};
    uint32_t idx[12];
    for (uint32_t i = 0; i < n; i++) idx[i] = i;
    float *p0 = random_model_params(&a, 3), *runs[3];
    for (int r = 0; r < 3; r++) {
        fm_pool pool;
        size_t threads = r < 2 ? 2 : 1;
        ck_assert_int_eq(fm_pool_create(&pool, &a, threads, n, &err), 0);
        runs[r] = xmalloc(2 * a.n_params * sizeof(float));
        memcpy(runs[r], p0, a.n_params * sizeof(float));
        fm_pool_gradient(&pool, runs[r], &ds, idx, n, 1, 0, 0, NULL);
        fm_pool_update_stats(&pool, runs[r]);
        memcpy(runs[r] + a.n_params, pool.grads[0], a.n_params * sizeof(float));
        ck_assert_uint_eq(pool.n_active, threads);
        fm_pool_destroy(&pool);
    }
    ck_assert_mem_eq(runs[0], runs[1], 2 * a.n_params * sizeof(float));
    /* one thread: the first batch norm's running mean moved by 0.1 (batch mean - old) */
    const fm_layer *bn = &a.layers[1];
    ck_assert_int_eq(bn->type, FM_BATCHNORM2D);
    float *one = runs[2];
    ck_assert(one[bn->p_off + 4 * 16] == 1.0f); /* num_batches_tracked */
    ck_assert(memcmp(one + bn->p_off + 32, p0 + bn->p_off + 32, 16 * sizeof(float)) != 0);
    for (int r = 0; r < 3; r++) free(runs[r]);
    free(p0), free(pix), free(lab);
}
END_TEST

static Suite *graph_suite(void) {
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("arch");
    tcase_add_test(tc, test_parse_graph);
    tcase_add_test(tc, test_refuse);
    tcase_add_test(tc, test_table_complete);
    suite_add_tcase(s, tc);
    tc = tcase_create("gradient");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_residual_gradcheck, 0, 4);
    suite_add_tcase(s, tc);
    int n_modern = 0;
    while (fm_arch_names[FM_N_STUDY_ARCHS + n_modern]) n_modern++;
    tc = tcase_create("plan");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_plan_matches_reference, 0, n_modern);
    tcase_add_test(tc, test_plan_identical_without_bn);
    tcase_add_test(tc, test_pool_batchnorm);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(graph_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
