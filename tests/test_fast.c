/* test_fast.c - the fast kernels (fm_fast.h) against the reference kernels
 * (fm_layers.h) they stand for, on shapes with wide and narrow outputs,
 * padding, strides, 1x1 and 5x5 kernels, several images per chunk and
 * inputs sized exactly (ASan sees any read past them):
 *   - the gathered training convolution: forward, weight and bias
 *     gradients bit for bit; the input gradient bit for bit where it takes
 *     the reference's route (col2im), within a stated tolerance where it is
 *     a transposed convolution (few output channels, stride 1);
 *   - the packed inference convolution and linear layer: bit for bit;
 *   - the fused tails (bias + relu, bias + relu + 2x2 max-pool): bit for bit.
 * Whole networks (plan against reference) are test_net.c's and
 * test_graph.c's. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_fast.h"
#include "fm_gemm.h"
#include "fm_layers.h"
#include "fm_rng.h"

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void fill(float *x, size_t n, fm_rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * fm_rng_uniform(r) - 1.0f;
}

/* {C, H, W, O, K, S, P, N, chunk} */
static const size_t shapes[][9] = {
    {1, 28, 28, 32, 3, 1, 0, 2, 2},  /* cnn3's first convolution */
    {32, 13, 13, 64, 3, 1, 0, 3, 2}, /* its second */
    {64, 5, 5, 128, 3, 1, 0, 2, 2},  /* its third (3x3 output) */
    {1, 28, 28, 16, 3, 1, 1, 2, 2},  /* a ResNet stem: same padding */
    {16, 28, 28, 16, 3, 1, 1, 2, 1}, /* a 16-channel block: the transposed input gradient */
    {16, 28, 28, 32, 3, 2, 1, 3, 3}, /* into the second stage: stride 2 */
    {32, 14, 14, 64, 3, 2, 1, 2, 2}, /* into the third */
    {16, 28, 28, 32, 1, 2, 0, 2, 2}, /* a projection: 1x1, stride 2 */
    {2, 4, 3, 5, 3, 1, 1, 3, 3},     {3, 7, 9, 4, 2, 1, 0, 4, 2},  {1, 5, 20, 3, 5, 1, 2, 2, 2},
    {2, 3, 3, 3, 3, 1, 1, 5, 5},     {4, 6, 6, 7, 3, 1, 1, 6, 4},  {1, 2, 40, 2, 2, 1, 0, 3, 3},
    {5, 9, 4, 3, 4, 1, 0, 2, 1},     {3, 7, 7, 50, 3, 1, 1, 2, 2}, /* 50 outputs: the col2im route */
    {4, 9, 8, 6, 3, 2, 0, 3, 2},     {2, 11, 11, 4, 5, 2, 2, 2, 2},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

typedef struct conv_case {
    size_t C, H, W, O, K, S, P, N, chunk, OH, OW, nx, nw, ny;
    float *x, *w, *b, *dy, *scratch, *gemm;
} conv_case;

static conv_case make_case(size_t i, fm_rng *rng) {
    const size_t *s = shapes[i];
    conv_case c = {s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    c.OH = fm_conv_out(c.H, c.K, c.S, c.P), c.OW = fm_conv_out(c.W, c.K, c.S, c.P);
    c.nx = c.N * c.C * c.H * c.W, c.nw = c.O * c.C * c.K * c.K, c.ny = c.N * c.O * c.OH * c.OW;
    c.x = falloc(c.nx), c.w = falloc(c.nw), c.b = falloc(c.O), c.dy = falloc(c.ny);
    fill(c.x, c.nx, rng), fill(c.w, c.nw, rng), fill(c.b, c.O, rng), fill(c.dy, c.ny, rng);
    for (size_t k = 0; k < c.nx; k += 3) c.x[k] = 0.0f; /* zeros, as images and relu outputs have */
    size_t ref = fm_conv2d_scratch(c.C, c.O, c.K, c.OH, c.OW, c.chunk);
    size_t fast = fm_conv2d_fast_scratch(c.C, c.O, c.K, c.H, c.W, c.S, c.P, c.chunk);
    c.scratch = falloc(ref > fast ? ref : fast);
    c.gemm = falloc(FM_GEMM_SCRATCH);
    return c;
}

static void free_case(conv_case *c) { free(c->x), free(c->w), free(c->b), free(c->dy), free(c->scratch), free(c->gemm); }

START_TEST(test_conv_fast_forward_identical) {
    fm_rng rng;
    fm_rng_seed(&rng, 1000 + (uint64_t)_i);
    conv_case c = make_case((size_t)_i, &rng);
    float *y0 = falloc(c.ny), *y1 = falloc(c.ny);
    for (int bias = 0; bias < 2; bias++) {
        fm_conv2d_forward(y0, c.x, c.w, bias ? c.b : NULL, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch, c.chunk,
                          c.gemm);
        fm_conv2d_forward_fast(y1, c.x, c.w, bias ? c.b : NULL, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch,
                               c.chunk, c.gemm);
        ck_assert_msg(memcmp(y0, y1, c.ny * sizeof *y0) == 0, "shape %d (bias %d): gathered forward differs", _i, bias);
    }
    free(y0), free(y1);
    free_case(&c);
}
END_TEST

/* The input gradient by the transposed convolution sums O*K*K products in
 * another order than col2im: each value is a sum of at most O*K*K <= 16*9
 * products of numbers in [-1, 1], so the two differ by at most
 * ~2 * O*K*K * u * sum|terms| (u = 2^-24); measured well below the bound. */
START_TEST(test_conv_fast_backward) {
    fm_rng rng;
    fm_rng_seed(&rng, 2000 + (uint64_t)_i);
    conv_case c = make_case((size_t)_i, &rng);
    float *dx0 = falloc(c.nx), *dx1 = falloc(c.nx), *dw0 = falloc(c.nw), *dw1 = falloc(c.nw);
    float *db0 = falloc(c.O), *db1 = falloc(c.O);
    for (size_t k = 0; k < c.nw; k++) dw0[k] = dw1[k] = 0.5f; /* accumulated into */
    for (size_t k = 0; k < c.O; k++) db0[k] = db1[k] = -0.25f;
    fm_conv2d_backward(dx0, dw0, db0, c.dy, c.x, c.w, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch, c.chunk, c.gemm);
    fm_conv2d_backward_fast(dx1, dw1, db1, c.dy, c.x, c.w, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch, c.chunk,
                            c.gemm);
    ck_assert_msg(memcmp(dw0, dw1, c.nw * sizeof *dw0) == 0, "shape %d: weight gradient differs", _i);
    ck_assert_msg(memcmp(db0, db1, c.O * sizeof *db0) == 0, "shape %d: bias gradient differs", _i);
    int transposed = c.S == 1 && c.O < 48;
    if (!transposed) {
        ck_assert_msg(memcmp(dx0, dx1, c.nx * sizeof *dx0) == 0, "shape %d: input gradient differs", _i);
    } else {
        double bound = 2.0 * (double)(c.O * c.K * c.K) / 16777216.0 * (double)(c.O * c.K * c.K), worst = 0.0;
        for (size_t k = 0; k < c.nx; k++) {
            double d = fabs((double)dx0[k] - dx1[k]);
            ck_assert_msg(d <= bound, "shape %d: input gradient %zu: col2im %.9g, transposed %.9g", _i, k,
                          (double)dx0[k], (double)dx1[k]);
            if (d > worst) worst = d;
        }
        if (getenv("FM_TEST_VERBOSE")) printf("shape %d: transposed input gradient, worst %.3g (bound %.3g)\n", _i, worst, bound);
    }
    /* dx = NULL and db = NULL: the weight gradient alone, the same */
    float *dw2 = falloc(c.nw);
    for (size_t k = 0; k < c.nw; k++) dw2[k] = 0.5f;
    fm_conv2d_backward_fast(NULL, dw2, NULL, c.dy, c.x, c.w, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch, c.chunk,
                            c.gemm);
    ck_assert(memcmp(dw0, dw2, c.nw * sizeof *dw0) == 0);
    free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1), free(dw2);
    free_case(&c);
}
END_TEST

/* Inference with the weights packed once (either orientation), the patches
 * gathered from a padded copy: bit for bit the reference. */
START_TEST(test_conv_packed_identical) {
    fm_rng rng;
    fm_rng_seed(&rng, 3000 + (uint64_t)_i);
    conv_case c = make_case((size_t)_i, &rng);
    size_t ckk = c.C * c.K * c.K;
    float *pw = falloc(fm_conv2d_packed_size(c.O, ckk, c.OH, c.OW)), *y0 = falloc(c.ny), *y1 = falloc(c.ny);
    fm_conv2d_pack(pw, c.w, c.O, ckk, c.OH, c.OW);
    for (int bias = 0; bias < 2; bias++) {
        fm_conv2d_forward(y0, c.x, c.w, bias ? c.b : NULL, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch, c.chunk,
                          c.gemm);
        fm_conv2d_forward_packed(y1, c.x, pw, bias ? c.b : NULL, c.N, c.C, c.H, c.W, c.O, c.K, c.S, c.P, c.scratch,
                                 c.chunk, c.gemm);
        ck_assert_msg(memcmp(y0, y1, c.ny * sizeof *y0) == 0, "shape %d (bias %d, %s): packed conv differs", _i, bias,
                      fm_conv2d_packs_b(c.OH, c.OW) ? "weights as B" : "weights as A");
    }
    free(pw), free(y0), free(y1);
    free_case(&c);
}
END_TEST

START_TEST(test_linear_packed_identical) {
    static const size_t sizes[][3] = {{1, 784, 256}, {7, 256, 10}, {64, 1152, 128}, {3, 17, 33}, {13, 5, 1}};
    fm_rng rng;
    fm_rng_seed(&rng, 4000);
    float *gemm = falloc(FM_GEMM_SCRATCH);
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t N = sizes[t][0], I = sizes[t][1], O = sizes[t][2];
        float *x = falloc(N * I), *w = falloc(O * I), *b = falloc(O), *y0 = falloc(N * O), *y1 = falloc(N * O);
        float *pw = falloc(fm_linear_packed_size(O, I));
        fill(x, N * I, &rng), fill(w, O * I, &rng), fill(b, O, &rng);
        for (size_t k = 0; k < N * I; k += 2) x[k] = 0.0f;
        fm_linear_pack(pw, w, O, I);
        fm_linear_forward(y0, x, w, b, N, I, O, gemm);
        fm_linear_forward_packed(y1, x, pw, b, N, I, O, gemm);
        ck_assert_msg(memcmp(y0, y1, N * O * sizeof *y0) == 0, "%zux%zu->%zu: packed linear differs", N, I, O);
        free(x), free(w), free(b), free(y0), free(y1), free(pw);
    }
    free(gemm);
}
END_TEST

/* bias + relu and bias + relu + 2x2 max-pool in one pass: the layer-by-layer result. */
START_TEST(test_fused_tails_identical) {
    size_t N = 3, C = 5, H = 7, W = 6, n = N * C * H * W, m = N * C * (H / 2) * (W / 2);
    fm_rng rng;
    fm_rng_seed(&rng, 5000);
    float *x = falloc(n), *b = falloc(C), *t = falloc(n), *y0 = falloc(m), *y1 = falloc(m), *z = falloc(n);
    fill(x, n, &rng), fill(b, C, &rng);
    x[3] = -0.0f, x[10] = 0.0f;
    for (size_t i = 0; i < n; i++) t[i] = x[i] + b[(i / (H * W)) % C];
    fm_relu_forward(t, t, n);
    fm_maxpool_forward(y0, NULL, t, N, C, H, W, 2);
    fm_maxpool2_bias_relu(y1, x, b, N, C, H, W);
    ck_assert_mem_eq(y0, y1, m * sizeof *y0);
    fm_bias_relu(z, x, b, N, C, H * W);
    ck_assert_mem_eq(z, t, n * sizeof *z);
    fm_bias_relu(x, x, b, N, C, H * W); /* in place */
    ck_assert_mem_eq(x, t, n * sizeof *x);
    free(x), free(b), free(t), free(y0), free(y1), free(z);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fast");
    TCase *tc = tcase_create("conv");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_conv_fast_forward_identical, 0, (int)N_SHAPES);
    tcase_add_loop_test(tc, test_conv_fast_backward, 0, (int)N_SHAPES);
    tcase_add_loop_test(tc, test_conv_packed_identical, 0, (int)N_SHAPES);
    suite_add_tcase(s, tc);
    tc = tcase_create("other");
    tcase_add_test(tc, test_linear_packed_identical);
    tcase_add_test(tc, test_fused_tails_identical);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
