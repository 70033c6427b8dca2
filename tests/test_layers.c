/* test_layers.c - Check tests that prove the maths of the layer kernels
 * (fm_layers.h) and of the GEMM under them (fm_gemm.h).
 *
 * Three kinds of evidence:
 *   - golden forward cases small enough to verify by hand (the arithmetic is
 *     written next to each);
 *   - independent references: fm_sgemm and conv2d against naive loops in
 *     double, with a rounding-error bound as the tolerance;
 *   - finite-difference gradient checks on tiny random shapes, w.r.t. inputs
 *     AND parameters, of the scalar loss L = sum_i y_i r_i with a fixed
 *     random r (so backward is fed dy = r), L accumulated in double.
 *
 * Finite differences.  The kernels are float32: unit roundoff u = 2^-24 ~
 * 6e-8.  The central difference (L(v+h) - L(v-h)) / (v+h - v-h) has a
 * truncation error h^2/6 |L'''| and a roundoff error ~ dL / h, where dL is the
 * float error of L.  (We divide by the step actually stored, v+h and v-h as
 * floats, so rounding of the perturbed value itself costs nothing.)
 *
 *   - Piecewise-linear layers (linear, conv2d, relu, maxpool, dropout): along
 *     one coordinate L is affine between kinks, so the truncation error is
 *     exactly 0 provided no kink lies within h.  We draw inputs so that none
 *     does: relu inputs have |x| >= 0.1 > h, maxpool inputs are distinct and
 *     at least 0.2 > 2h apart, so a +-h move can neither flip a sign nor
 *     change an arg-max (no coordinate is skipped).  Only roundoff is left,
 *     so h may be large: H_PL = 1/16.  Each output is a float sum of at most
 *     m = 26 products of numbers <= 1 in magnitude, and a coordinate changes
 *     at most k = 80 outputs; with random-signed rounding errors dL ~
 *     u * sqrt(k * m) * max|y| ~ 6e-8 * 46 * 5 ~ 1.4e-5, so the derivative
 *     errs by ~ dL / (2h) ~ 1e-4 (observed: at most 7e-6, since most outputs
 *     are smaller than max|y|).  TOL_PL = 5e-4 (+ 1e-3 relative) is a 5x
 *     margin over that estimate, and far below the O(0.1) error of a real
 *     bug (a missing term, a transposed index, a wrong scale).
 *   - Batch norm is smooth too; its own step and tolerance are explained
 *     next to its test (H_BN, TOL_BN).
 *   - Softmax-cross-entropy is smooth and its loss is computed in double
 *     from float logits, so roundoff is ~1e-16 / h: negligible.  Truncation
 *     is h^2/6 max|d^3 L / dz^3| <= h^2/6 * 0.0963 (the largest value of
 *     p(1-p)(1-2p)), 1.6e-8 for H_XENT = 1e-3; dlogits is a float (error
 *     <= 6e-8).  TOL_XENT = 1e-6 is a 5x margin over the sum.
 *
 * Every test also checks that the gradient it compares is not trivially
 * zero, so a kernel that does nothing cannot pass.
 *
 * Runs in Check's fork mode and with CK_FORK=no alike: no state outlives a
 * test, and every allocation is freed (LeakSanitizer would see it). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_gemm.h"
#include "fm_layers.h"
#include "fm_rng.h"

#define H_PL 0.0625f /* finite-difference step, piecewise-linear layers */
#define TOL_PL 5e-4  /* absolute tolerance (plus TOL_REL relative), see above */
#define TOL_REL 1e-3
#define H_XENT 1e-3f /* finite-difference step, softmax-cross-entropy */
#define TOL_XENT 1e-6

static const double U = 1.0 / 16777216.0; /* float32 unit roundoff, 2^-24 */

/* ck_assert_msg records a mark point (a write to Check's pipe) even when it
 * passes, which is slow in loops of millions; this calls Check only to fail. */
#define REQUIRE(cond, ...)                      \
    do {                                        \
        if (!(cond)) ck_abort_msg(__VA_ARGS__); \
    } while (0)

/* ---- helpers ------------------------------------------------------------- */

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static uint8_t *balloc(size_t n) {
    uint8_t *p = calloc(n ? n : 1, 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* x[i] uniform in [lo, hi) */
static void fill(float *x, size_t n, fm_rng *r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * fm_rng_uniform(r);
}

/* x[i] uniform in +-[0.1, 1): away from ReLU's kink at 0 by more than H_PL */
static void fill_away_from_zero(float *x, size_t n, fm_rng *r) {
    for (size_t i = 0; i < n; i++) {
        float m = 0.1f + 0.9f * fm_rng_uniform(r);
        x[i] = fm_rng_uniform(r) < 0.5f ? -m : m;
    }
}

/* x = a random permutation of {0.2 * (i - n/2)}: distinct values 0.2 apart,
 * so no pooling window is within 2 * H_PL of a tie */
static void fill_distinct(float *x, size_t n, fm_rng *r) {
    uint32_t *perm = malloc(n * sizeof *perm);
    ck_assert_ptr_nonnull(perm);
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    fm_rng_shuffle(r, perm, n);
    for (size_t i = 0; i < n; i++) x[i] = 0.2f * ((float)perm[i] - (float)(n / 2));
    free(perm);
}

static void assert_close(double got, double want, double tol, const char *what, size_t i) {
    REQUIRE(fabs(got - want) <= tol, "%s[%zu] = %.9g, expected %.9g (tolerance %.3g)", what, i, got,
            want, tol);
}

/* ---- the finite-difference checker ---------------------------------------- */

/* A layer under test: forward() recomputes y[ny] from the current inputs and
 * parameters (which the checker perturbs in place). */
typedef struct probe {
    void (*forward)(struct probe *pr);
    float *y;
    size_t ny;
    const float *r; /* [ny] loss weights: L = sum y r */
    void *ctx;
} probe;

static double probe_loss(probe *pr) {
    pr->forward(pr);
    double L = 0.0;
    for (size_t i = 0; i < pr->ny; i++) L += (double)pr->y[i] * (double)pr->r[i];
    return L;
}

/* Compares g[i] (analytic dL/dv[i]) with central differences for every i;
 * v is restored afterwards.  Returns max |g|, for the non-triviality check. */
static double check_grad(probe *pr, const char *what, float *v, const float *g, size_t n, float h,
                         double atol, double rtol) {
    double gmax = 0.0, emax = 0.0;
    for (size_t i = 0; i < n; i++) {
        float v0 = v[i];
        v[i] = v0 + h;
        double vp = v[i], Lp = probe_loss(pr);
        v[i] = v0 - h;
        double vm = v[i], Lm = probe_loss(pr);
        v[i] = v0;
        double num = (Lp - Lm) / (vp - vm), err = fabs(num - (double)g[i]);
        REQUIRE(err <= atol + rtol * fabs(num),
                "%s[%zu]: finite difference %.9g, backward %.9g (|diff| %.3g > tolerance)", what, i,
                num, (double)g[i], err);
        if (fabs((double)g[i]) > gmax) gmax = fabs((double)g[i]);
        if (err > emax) emax = err;
    }
    if (getenv("FM_TEST_VERBOSE"))
        printf("  %-28s n=%-4zu max|g| %-10.4g max err %.3g\n", what, n, gmax, emax);
    return gmax;
}

/* ---- GEMM against a naive double loop --------------------------------------- */

/* One case: all four transpose combinations, accumulate 0 and 1, leading
 * dimensions wider than the rows (lda = cols + 3), canaries around C.
 * Tolerance: the standard bound for a float dot product of length K plus one
 * addition (C0 + sum), |err| <= (K + 2) u (|C0| + sum_k |a_ik b_kj|). */
static void gemm_case(size_t M, size_t N, size_t K, float *scratch, fm_rng *rng) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            size_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
            size_t lda = ac + 3, ldb = bc + 3, ldc = N + 2;
            float *A = falloc(ar * lda), *B = falloc(br * ldb), *C0 = falloc(M * ldc),
                  *C = falloc(M * ldc);
            double *ref = malloc(M * N * sizeof *ref), *mag = malloc(M * N * sizeof *mag);
            ck_assert(ref && mag);
            fill(A, ar * lda, rng, -1.0f, 1.0f);
            fill(B, br * ldb, rng, -1.0f, 1.0f);
            fill(C0, M * ldc, rng, -1.0f, 1.0f);
            for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < N; j++) {
                    double s = 0.0, a = 0.0;
                    for (size_t k = 0; k < K; k++) {
                        double x = ta ? A[k * lda + i] : A[i * lda + k];
                        double y = tb ? B[j * ldb + k] : B[k * ldb + j];
                        s += x * y;
                        a += fabs(x * y);
                    }
                    ref[i * N + j] = s;
                    mag[i * N + j] = a;
                }
            for (int acc = 0; acc < 2; acc++) {
                memcpy(C, C0, M * ldc * sizeof(float));
                fm_sgemm(ta, tb, M, N, K, A, lda, B, ldb, acc, C, ldc, scratch);
                for (size_t i = 0; i < M; i++) {
                    for (size_t j = 0; j < N; j++) {
                        double c0 = acc ? C0[i * ldc + j] : 0.0;
                        double want = c0 + ref[i * N + j];
                        double tol = (double)(K + 2) * U * (fabs(c0) + mag[i * N + j]) + 1e-30;
                        REQUIRE(fabs(C[i * ldc + j] - want) <= tol,
                                "sgemm ta=%d tb=%d M=%zu N=%zu K=%zu acc=%d: C[%zu,%zu] = %.9g, "
                                "expected %.9g",
                                ta, tb, M, N, K, acc, i, j, (double)C[i * ldc + j], want);
                    }
                    /* the two floats past each row of C belong to nobody */
                    for (size_t j = N; j < ldc; j++)
                        REQUIRE(C[i * ldc + j] == C0[i * ldc + j],
                                "sgemm wrote past column N (M=%zu N=%zu K=%zu)", M, N, K);
                }
            }
            free(A), free(B), free(C0), free(C), free(ref), free(mag);
        }
}

/* Every combination of the sizes 1, 5, 17, 73: below, at and across
 * MR = 6, NR = 16 and MC = 72. */
START_TEST(test_gemm_small_sizes) {
    static const size_t sz[] = {1, 5, 17, 73};
    float *scratch = falloc(FM_GEMM_SCRATCH);
    fm_rng rng;
    fm_rng_seed(&rng, 11);
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t c = 0; c < 4; c++) gemm_case(sz[a], sz[b], sz[c], scratch, &rng);
    free(scratch);
}
END_TEST

/* Sizes across the cache blocks: K = 257..300 > KC = 256 (two K panels, so
 * the second one accumulates onto the first), M = 300 > MC = 72 (five M
 * blocks), N = 530 > NC = 512 (two N panels). */
START_TEST(test_gemm_large_sizes) {
    static const size_t cases[][3] = {
        {300, 5, 17},   {5, 300, 73},   {17, 73, 300}, {73, 530, 300},
        {13, 530, 260}, {300, 17, 300}, {1, 530, 257},
    };
    float *scratch = falloc(FM_GEMM_SCRATCH);
    fm_rng rng;
    fm_rng_seed(&rng, 12);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        gemm_case(cases[i][0], cases[i][1], cases[i][2], scratch, &rng);
    free(scratch);
}
END_TEST

/* A row's result does not depend on the rows computed with it: one image
 * alone (M = 1, the single-row kernel) gives bit for bit what it gets inside
 * a batch (the MR-row kernel), for both layouts of B and across K panels.
 * The server answers single images; `fmnist-train eval` runs batches. */
START_TEST(test_gemm_row_independent) {
    static const size_t cases[][3] = {{13, 256, 784}, {7, 10, 256}, {9, 128, 1152}, {6, 33, 300}, {3, 100, 40}};
    float *scratch = falloc(FM_GEMM_SCRATCH);
    fm_rng rng;
    fm_rng_seed(&rng, 13);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t M = cases[c][0], N = cases[c][1], K = cases[c][2];
        float *A = falloc(M * K), *B = falloc(K * N), *Cb = falloc(M * N), *C1 = falloc(N);
        /* zeros and negative zeros (black pixels, units cut by ReLU), which
         * the single-row kernels skip */
        for (size_t i = 0; i < M * K; i++)
            A[i] = i % 3 == 0 ? 0.0f : i % 7 == 0 ? -0.0f : fm_rng_uniform(&rng) - 0.5f;
        for (size_t i = 0; i < K * N; i++) B[i] = fm_rng_uniform(&rng) - 0.5f;
        for (int tb = 0; tb < 2; tb++) {
            size_t ldb = tb ? K : N;
            fm_sgemm(0, tb, M, N, K, A, K, B, ldb, 0, Cb, N, scratch);
            for (size_t i = 0; i < M; i++) {
                fm_sgemm(0, tb, 1, N, K, A + i * K, K, B, ldb, 0, C1, N, scratch);
                ck_assert_msg(memcmp(C1, Cb + i * N, N * sizeof(float)) == 0,
                              "row %zu of M=%zu N=%zu K=%zu tb=%d differs when computed alone", i, M, N, K, tb);
            }
        }
        free(A), free(B), free(Cb), free(C1);
    }
    free(scratch);
}
END_TEST

/* Packed operands give bit for bit what the unpacked call gives: B packed
 * (dense layers' weights) and A packed (convolutions' weights), across K, M
 * and N blocks, overwrite and accumulate.  And swapping the operands
 * (C^T = B^T A^T) changes no bit either: every element is the same fused
 * multiply-adds in the same order, which is why the convolution may run as
 * weights x patches (channel-major output) and still match the results of
 * patches x weights. */
START_TEST(test_gemm_packed_identical) {
    static const size_t cases[][3] = {{1, 256, 784}, {64, 121, 288}, {128, 9, 576}, {32, 676, 9},
                                      {73, 530, 300}, {7, 5, 1}};
    float *scratch = falloc(FM_GEMM_SCRATCH);
    fm_rng rng;
    fm_rng_seed(&rng, 14);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t M = cases[c][0], N = cases[c][1], K = cases[c][2];
        float *A = falloc(M * K), *B = falloc(K * N), *Bt = falloc(N * K), *C0 = falloc(M * N),
              *Cr = falloc(M * N), *Cp = falloc(M * N), *Ct = falloc(N * M);
        float *pa = falloc(fm_gemm_packed_a_size(M, K)), *pb = falloc(fm_gemm_packed_size(N, K));
        fill(A, M * K, &rng, -1.0f, 1.0f);
        fill(B, K * N, &rng, -1.0f, 1.0f);
        fill(C0, M * N, &rng, -1.0f, 1.0f);
        for (size_t k = 0; k < K; k++)
            for (size_t j = 0; j < N; j++) Bt[j * K + k] = B[k * N + j];
        fm_gemm_pack_a(M, K, A, K, pa);
        fm_gemm_pack_b(0, N, K, B, N, pb);
        for (int acc = 0; acc < 2; acc++) {
            memcpy(Cr, C0, M * N * sizeof(float));
            fm_sgemm(0, 0, M, N, K, A, K, B, N, acc, Cr, N, scratch);
            memcpy(Cp, C0, M * N * sizeof(float));
            fm_sgemm_pa(M, N, K, pa, B, N, acc, Cp, N, scratch);
            ck_assert_msg(memcmp(Cp, Cr, M * N * sizeof(float)) == 0, "packed A differs: M=%zu N=%zu K=%zu acc=%d",
                          M, N, K, acc);
            memcpy(Cp, C0, M * N * sizeof(float));
            fm_sgemm_pb(M, N, K, A, K, pb, acc, Cp, N, scratch);
            ck_assert_msg(memcmp(Cp, Cr, M * N * sizeof(float)) == 0, "packed B differs: M=%zu N=%zu K=%zu acc=%d",
                          M, N, K, acc);
        }
        /* C^T[N,M] = B^T A^T, from Bt [N,K] and A used transposed */
        fm_sgemm(0, 1, N, M, K, Bt, K, A, K, 0, Ct, M, scratch);
        fm_sgemm(0, 0, M, N, K, A, K, B, N, 0, Cr, N, scratch);
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                ck_assert_msg(memcmp(&Ct[j * M + i], &Cr[i * N + j], sizeof(float)) == 0,
                              "C^T = B^T A^T differs at (%zu,%zu): M=%zu N=%zu K=%zu", i, j, M, N, K);
        free(A), free(B), free(Bt), free(C0), free(Cr), free(Cp), free(Ct), free(pa), free(pb);
    }
    free(scratch);
}
END_TEST

/* K = 0: C = 0 (overwrite) or unchanged (accumulate); M or N = 0: nothing. */
START_TEST(test_gemm_degenerate) {
    float *scratch = falloc(FM_GEMM_SCRATCH);
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8}, C[4] = {9, 9, 9, 9};
    fm_sgemm(0, 0, 2, 2, 0, A, 1, B, 2, 1, C, 2, scratch);
    for (int i = 0; i < 4; i++) ck_assert(C[i] == 9.0f);
    fm_sgemm(0, 0, 0, 2, 2, A, 2, B, 2, 0, C, 2, scratch);
    fm_sgemm(0, 0, 2, 0, 2, A, 2, B, 2, 0, C, 2, scratch);
    for (int i = 0; i < 4; i++) ck_assert(C[i] == 9.0f);
    fm_sgemm(0, 0, 2, 2, 0, A, 1, B, 2, 0, C, 2, scratch);
    for (int i = 0; i < 4; i++) ck_assert(C[i] == 0.0f);
    /* [1 2; 3 4] [5 6; 7 8] = [19 22; 43 50], exact in float */
    fm_sgemm(0, 0, 2, 2, 2, A, 2, B, 2, 0, C, 2, scratch);
    ck_assert(C[0] == 19.0f && C[1] == 22.0f && C[2] == 43.0f && C[3] == 50.0f);
    ck_assert(strcmp(fm_gemm_kernel_name(), "generic") == 0 ||
              strcmp(fm_gemm_kernel_name(), "avx2+fma") == 0);
    free(scratch);
}
END_TEST

/* ---- linear ------------------------------------------------------------------ */

START_TEST(test_linear_golden) {
    /* x = [1 2 3; 0 1 0], w = [1 0 -1; 2 1 0], b = [0.5 -1]:
     * y[0] = [1 - 3 + 0.5, 2 + 2 - 1] = [-1.5, 3]
     * y[1] = [0 + 0.5,     1 - 1    ] = [ 0.5, 0]
     * backward with dy = [1 0; 0 2]:
     * dx = dy w = [1 0 -1; 4 2 0]
     * dw = dy^T x = [1 2 3; 0 2 0] (added to dw's previous 10s)
     * db = [1, 2] (added to 10s) */
    const float x[6] = {1, 2, 3, 0, 1, 0}, w[6] = {1, 0, -1, 2, 1, 0}, b[2] = {0.5f, -1};
    const float dy[4] = {1, 0, 0, 2};
    const float y_want[4] = {-1.5f, 3, 0.5f, 0}, dx_want[6] = {1, 0, -1, 4, 2, 0};
    const float dw_want[6] = {11, 12, 13, 10, 12, 10}, db_want[2] = {11, 12};
    float *gemm = falloc(FM_GEMM_SCRATCH);
    float y[4], dx[6], dw[6], db[2];
    fm_linear_forward(y, x, w, b, 2, 3, 2, gemm);
    for (size_t i = 0; i < 4; i++) ck_assert_msg(y[i] == y_want[i], "y[%zu] = %g", i, (double)y[i]);
    for (size_t i = 0; i < 6; i++) dw[i] = 10;
    db[0] = db[1] = 10;
    fm_linear_backward(dx, dw, db, dy, x, w, 2, 3, 2, gemm);
    for (size_t i = 0; i < 6; i++)
        ck_assert_msg(dx[i] == dx_want[i], "dx[%zu] = %g", i, (double)dx[i]);
    for (size_t i = 0; i < 6; i++)
        ck_assert_msg(dw[i] == dw_want[i], "dw[%zu] = %g", i, (double)dw[i]);
    for (size_t i = 0; i < 2; i++)
        ck_assert_msg(db[i] == db_want[i], "db[%zu] = %g", i, (double)db[i]);
    free(gemm);
}
END_TEST

typedef struct lin_ctx {
    float *x, *w, *b, *gemm;
    size_t N, I, O;
} lin_ctx;

static void lin_fwd(probe *pr) {
    lin_ctx *c = pr->ctx;
    fm_linear_forward(pr->y, c->x, c->w, c->b, c->N, c->I, c->O, c->gemm);
}

/* _i = 0: 3x4 -> 5; _i = 1: 7x20 -> 17 (crosses NR = 16 and MR = 6) */
START_TEST(test_linear_gradcheck) {
    static const size_t shapes[][3] = {{3, 4, 5}, {7, 20, 17}};
    size_t N = shapes[_i][0], I = shapes[_i][1], O = shapes[_i][2];
    fm_rng rng;
    fm_rng_seed(&rng, 100 + (uint64_t)_i);
    lin_ctx c = {falloc(N * I), falloc(O * I), falloc(O), falloc(FM_GEMM_SCRATCH), N, I, O};
    float *y = falloc(N * O), *r = falloc(N * O), *dx = falloc(N * I), *dw = falloc(O * I),
          *db = falloc(O), *dw2 = falloc(O * I), *db2 = falloc(O);
    fill(c.x, N * I, &rng, -1, 1);
    fill(c.w, O * I, &rng, -1, 1);
    fill(c.b, O, &rng, -1, 1);
    fill(r, N * O, &rng, -1, 1);
    /* backward accumulates: start dw, db at 0.25 and take it off again */
    for (size_t i = 0; i < O * I; i++) dw[i] = 0.25f;
    for (size_t i = 0; i < O; i++) db[i] = 0.25f;
    fm_linear_backward(dx, dw, db, r, c.x, c.w, N, I, O, c.gemm);
    for (size_t i = 0; i < O * I; i++) dw[i] -= 0.25f;
    for (size_t i = 0; i < O; i++) db[i] -= 0.25f;
    /* dx = NULL skips dx but still accumulates dw, db */
    fm_linear_backward(NULL, dw2, db2, r, c.x, c.w, N, I, O, c.gemm);
    for (size_t i = 0; i < O * I; i++) ck_assert_float_eq_tol(dw2[i], dw[i], 1e-6);
    for (size_t i = 0; i < O; i++) ck_assert_float_eq_tol(db2[i], db[i], 1e-6);

    probe pr = {lin_fwd, y, N * O, r, &c};
    ck_assert(check_grad(&pr, "linear dx", c.x, dx, N * I, H_PL, TOL_PL, TOL_REL) > 0.1);
    ck_assert(check_grad(&pr, "linear dw", c.w, dw, O * I, H_PL, TOL_PL, TOL_REL) > 0.1);
    ck_assert(check_grad(&pr, "linear db", c.b, db, O, H_PL, TOL_PL, TOL_REL) > 0.1);
    free(c.x), free(c.w), free(c.b), free(c.gemm);
    free(y), free(r), free(dx), free(dw), free(db), free(dw2), free(db2);
}
END_TEST

/* ---- conv2d -------------------------------------------------------------------- */

/* Convolves with the conv2d kernel: scratch and gemm sized here. */
static void conv_fwd_alloc(float *y, const float *x, const float *w, const float *b, size_t N,
                           size_t C, size_t H, size_t W, size_t O, size_t K, size_t P,
                           size_t chunk) {
    size_t OH = H + 2 * P - K + 1, OW = W + 2 * P - K + 1;
    float *scratch = falloc(fm_conv2d_scratch(C, O, K, OH, OW, chunk)),
          *gemm = falloc(FM_GEMM_SCRATCH);
    fm_conv2d_forward(y, x, w, b, N, C, H, W, O, K, 1, P, scratch, chunk, gemm);
    free(scratch), free(gemm);
}

START_TEST(test_conv_golden) {
    float y[9];
    /* x = 1..9 as 3x3, x[r][c] = 3r + c + 1:
     *   1 2 3
     *   4 5 6
     *   7 8 9 */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

    /* (a) valid 2x2 kernel [1 2; 3 4], bias 0.5 (cross-correlation, as PyTorch):
     * y[0][0] = 1*1 + 2*2 + 3*4 + 4*5 = 37     y[0][1] = 1*2 + 2*3 + 3*5 + 4*6 = 47
     * y[1][0] = 1*4 + 2*5 + 3*7 + 4*8 = 67     y[1][1] = 1*5 + 2*6 + 3*8 + 4*9 = 77
     * (a flipped kernel, i.e. true convolution, would give 23 33 53 63) */
    const float k2[4] = {1, 2, 3, 4}, half = 0.5f;
    conv_fwd_alloc(y, x, k2, &half, 1, 1, 3, 3, 1, 2, 0, 1);
    const float want_a[4] = {37.5f, 47.5f, 67.5f, 77.5f};
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(y[i] == want_a[i], "k2 y[%zu] = %g", i, (double)y[i]);

    /* (b) 'same' 3x3 Laplacian [0 1 0; 1 -4 1; 0 1 0], zero padding, bias 0:
     * y[r][c] = x[r-1][c] + x[r+1][c] + x[r][c-1] + x[r][c+1] - 4 x[r][c]
     * y[0][0] = 2 + 4 - 4               =   2    y[0][1] = 1 + 3 + 5 - 8       =   1
     * y[0][2] = 2 + 6 - 12              =  -4    y[1][0] = 1 + 7 + 5 - 16      =  -3
     * y[1][1] = 2 + 4 + 6 + 8 - 20      =   0    y[1][2] = 3 + 9 + 5 - 24      =  -7
     * y[2][0] = 4 + 8 - 28              = -16    y[2][1] = 5 + 7 + 9 - 32      = -11
     * y[2][2] = 6 + 8 - 36              = -22 */
    const float lap[9] = {0, 1, 0, 1, -4, 1, 0, 1, 0}, zero = 0.0f;
    conv_fwd_alloc(y, x, lap, &zero, 1, 1, 3, 3, 1, 3, 1, 1);
    const float want_b[9] = {2, 1, -4, -3, 0, -7, -16, -11, -22};
    for (size_t i = 0; i < 9; i++)
        ck_assert_msg(y[i] == want_b[i], "same y[%zu] = %g", i, (double)y[i]);

    /* (c) 'valid' 3x3 on a 3x3 input: one output, the centre of (b) plus bias 0.5 */
    conv_fwd_alloc(y, x, lap, &half, 1, 1, 3, 3, 1, 3, 0, 1);
    ck_assert(y[0] == 0.5f);

    /* (d) weight layout [O, C, K, K]: a 1x1 conv of 2 channels (all 1s, all
     * 2s) to 2 outputs with w = [[1, 10], [100, 1000]], b = [0, 0.5]:
     * y[0] = 1*1 + 10*2 = 21, y[1] = 100*1 + 1000*2 + 0.5 = 2100.5 at each pixel */
    const float x2[8] = {1, 1, 1, 1, 2, 2, 2, 2}, w2[4] = {1, 10, 100, 1000}, b2[2] = {0, 0.5f};
    float y2[8];
    conv_fwd_alloc(y2, x2, w2, b2, 1, 2, 2, 2, 2, 1, 0, 1);
    for (size_t i = 0; i < 4; i++) ck_assert(y2[i] == 21.0f && y2[4 + i] == 2100.5f);
}
END_TEST

typedef struct conv_ctx {
    float *x, *w, *b, *scratch, *gemm;
    size_t N, C, H, W, O, K, S, P, chunk;
} conv_ctx;

static void conv_fwd(probe *pr) {
    conv_ctx *c = pr->ctx;
    fm_conv2d_forward(pr->y, c->x, c->w, c->b, c->N, c->C, c->H, c->W, c->O, c->K, c->S, c->P, c->scratch,
                      c->chunk, c->gemm);
}

/* The cases: {N, C, H, W, O, K, S, P, chunk} */
static const size_t conv_cases[][9] = {
    {2, 2, 5, 6, 3, 3, 1, 0, 2}, /* valid, k = 3 */
    {2, 2, 5, 4, 3, 3, 1, 1, 2}, /* same, k = 3 */
    {1, 1, 5, 6, 2, 5, 1, 2, 1}, /* same, k = 5: padding 2 on a 5-row input */
    {2, 3, 4, 5, 2, 2, 1, 0, 2}, /* valid, k = 2 (even kernel) */
    {5, 2, 4, 4, 3, 3, 1, 1, 2}, /* N > chunk: chunks of 2, 2 and a tail of 1 */
    {3, 1, 6, 5, 2, 3, 1, 0, 1}, /* chunk = 1 */
    {2, 2, 7, 6, 3, 3, 2, 1, 2}, /* stride 2, same: 7x6 -> 4x3 (odd rows: the last row read once) */
    {2, 3, 6, 6, 4, 3, 2, 0, 2}, /* stride 2, valid: 6x6 -> 2x2 (the last row and column unread) */
    {2, 3, 7, 5, 4, 1, 2, 0, 1}, /* 1x1 stride 2 (a ResNet projection): 7x5 -> 4x3 */
};
#define N_CONV_CASES (sizeof conv_cases / sizeof conv_cases[0])

/* Forward against the definition in double (fm_layers.h):
 * y[n,o,oh,ow] = b[o] + sum_{c,kh,kw} w[o,c,kh,kw] x[n,c,oh*S+kh-P,ow*S+kw-P], zero
 * outside x; tolerance (C K^2 + 2) u sum |terms|, as for GEMM.  Then finite
 * differences for dx, dw, db. */
START_TEST(test_conv_gradcheck) {
    const size_t *cs = conv_cases[_i];
    size_t N = cs[0], C = cs[1], H = cs[2], W = cs[3], O = cs[4], K = cs[5], S = cs[6], P = cs[7],
           chunk = cs[8];
    size_t OH = fm_conv_out(H, K, S, P), OW = fm_conv_out(W, K, S, P);
    size_t nx = N * C * H * W, nw = O * C * K * K, ny = N * O * OH * OW;
    fm_rng rng;
    fm_rng_seed(&rng, 200 + (uint64_t)_i);
    conv_ctx c = {falloc(nx),
                  falloc(nw),
                  falloc(O),
                  falloc(fm_conv2d_scratch(C, O, K, OH, OW, chunk)),
                  falloc(FM_GEMM_SCRATCH),
                  N,
                  C,
                  H,
                  W,
                  O,
                  K,
                  S,
                  P,
                  chunk};
    float *y = falloc(ny), *r = falloc(ny), *dx = falloc(nx), *dw = falloc(nw), *db = falloc(O);
    fill(c.x, nx, &rng, -1, 1);
    fill(c.w, nw, &rng, -1, 1);
    fill(c.b, O, &rng, -1, 1);
    fill(r, ny, &rng, -1, 1);

    probe pr = {conv_fwd, y, ny, r, &c};
    conv_fwd(&pr);
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < O; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    double s = c.b[o], mag = fabs(s);
                    for (size_t ci = 0; ci < C; ci++)
                        for (size_t kh = 0; kh < K; kh++)
                            for (size_t kw = 0; kw < K; kw++) {
                                long ih = (long)(oh * S + kh) - (long)P, iw = (long)(ow * S + kw) - (long)P;
                                if (ih < 0 || iw < 0 || ih >= (long)H || iw >= (long)W) continue;
                                double t = (double)c.w[((o * C + ci) * K + kh) * K + kw] *
                                           c.x[((n * C + ci) * H + (size_t)ih) * W + (size_t)iw];
                                s += t, mag += fabs(t);
                            }
                    size_t i = ((n * O + o) * OH + oh) * OW + ow;
                    assert_close(y[i], s, (double)(C * K * K + 2) * U * mag, "conv y", i);
                }

    for (size_t i = 0; i < nw; i++) dw[i] = 0.25f; /* backward accumulates */
    for (size_t i = 0; i < O; i++) db[i] = 0.25f;
    fm_conv2d_backward(dx, dw, db, r, c.x, c.w, N, C, H, W, O, K, S, P, c.scratch, chunk, c.gemm);
    for (size_t i = 0; i < nw; i++) dw[i] -= 0.25f;
    for (size_t i = 0; i < O; i++) db[i] -= 0.25f;
    ck_assert(check_grad(&pr, "conv dx", c.x, dx, nx, H_PL, TOL_PL, TOL_REL) > 0.1);
    ck_assert(check_grad(&pr, "conv dw", c.w, dw, nw, H_PL, TOL_PL, TOL_REL) > 0.1);
    ck_assert(check_grad(&pr, "conv db", c.b, db, O, H_PL, TOL_PL, TOL_REL) > 0.1);

    /* dx = NULL: parameter gradients only, the same values */
    float *dw2 = falloc(nw), *db2 = falloc(O);
    fm_conv2d_backward(NULL, dw2, db2, r, c.x, c.w, N, C, H, W, O, K, S, P, c.scratch, chunk, c.gemm);
    for (size_t i = 0; i < nw; i++) ck_assert_float_eq_tol(dw2[i], dw[i], 1e-5);
    for (size_t i = 0; i < O; i++) ck_assert_float_eq_tol(db2[i], db[i], 1e-5);
    /* db = NULL (a convolution without bias): the same weight gradient */
    memset(dw2, 0, nw * sizeof *dw2);
    fm_conv2d_backward(NULL, dw2, NULL, r, c.x, c.w, N, C, H, W, O, K, S, P, c.scratch, chunk, c.gemm);
    for (size_t i = 0; i < nw; i++) ck_assert_float_eq_tol(dw2[i], dw[i], 1e-5);
    for (size_t i = 0; i < O; i++) ck_assert_float_eq_tol(db2[i], db[i], 1e-5);
    free(dw2), free(db2);
    free(c.x), free(c.w), free(c.b), free(c.scratch), free(c.gemm);
    free(y), free(r), free(dx), free(dw), free(db);
}
END_TEST

/* Chunking changes only the grouping: forward and backward with chunk = 1,
 * 2, 3 and N agree (to rounding) on N = 5 images. */
START_TEST(test_conv_chunk_invariance) {
    size_t N = 5, C = 2, H = 6, W = 5, O = 3, K = 3, P = 1, OH = 6, OW = 5;
    size_t nx = N * C * H * W, nw = O * C * K * K, ny = N * O * OH * OW;
    fm_rng rng;
    fm_rng_seed(&rng, 300);
    float *x = falloc(nx), *w = falloc(nw), *b = falloc(O), *dy = falloc(ny);
    float *gemm = falloc(FM_GEMM_SCRATCH), *scratch = falloc(fm_conv2d_scratch(C, O, K, OH, OW, N));
    float *y[4], *dx[4], *dw[4], *db[4];
    static const size_t chunks[4] = {1, 2, 3, 5};
    fill(x, nx, &rng, -1, 1);
    fill(w, nw, &rng, -1, 1);
    fill(b, O, &rng, -1, 1);
    fill(dy, ny, &rng, -1, 1);
    for (int k = 0; k < 4; k++) {
        y[k] = falloc(ny), dx[k] = falloc(nx), dw[k] = falloc(nw), db[k] = falloc(O);
        fm_conv2d_forward(y[k], x, w, b, N, C, H, W, O, K, 1, P, scratch, chunks[k], gemm);
        fm_conv2d_backward(dx[k], dw[k], db[k], dy, x, w, N, C, H, W, O, K, 1, P, scratch, chunks[k], gemm);
    }
    for (int k = 1; k < 4; k++) {
        for (size_t i = 0; i < ny; i++) ck_assert_float_eq_tol(y[k][i], y[0][i], 1e-5);
        for (size_t i = 0; i < nx; i++) ck_assert_float_eq_tol(dx[k][i], dx[0][i], 1e-5);
        for (size_t i = 0; i < nw; i++) ck_assert_float_eq_tol(dw[k][i], dw[0][i], 1e-4);
        for (size_t i = 0; i < O; i++) ck_assert_float_eq_tol(db[k][i], db[0][i], 1e-4);
    }
    for (int k = 0; k < 4; k++) free(y[k]), free(dx[k]), free(dw[k]), free(db[k]);
    free(x), free(w), free(b), free(dy), free(gemm), free(scratch);
}
END_TEST

/* ---- maxpool --------------------------------------------------------------------- */

START_TEST(test_maxpool_golden) {
    /* 4x4, 2x2 windows:
     *   1 5 | 2 0        max 5 at (0,1) -> arg 1    max 8 at (1,0) -> arg 2
     *   3 4 | 8 7
     *   ----+----
     *   9 0 | 1 1        max 9 at (0,0) -> arg 0    max 4 at (1,1) -> arg 3
     *   2 6 | 3 4 */
    const float x[16] = {1, 5, 2, 0, 3, 4, 8, 7, 9, 0, 1, 1, 2, 6, 3, 4};
    const float want[4] = {5, 8, 9, 4};
    const uint8_t want_arg[4] = {1, 2, 0, 3};
    float y[4], dx[16];
    uint8_t arg[4];
    fm_maxpool_forward(y, arg, x, 1, 1, 4, 4, 2);
    for (size_t i = 0; i < 4; i++) ck_assert(y[i] == want[i] && arg[i] == want_arg[i]);
    /* backward routes dy = [10 20 30 40] to the winners: positions 1, 6, 8, 15 */
    const float dy[4] = {10, 20, 30, 40};
    fm_maxpool_backward(dx, dy, arg, 1, 1, 4, 4, 2);
    for (size_t i = 0; i < 16; i++) {
        float want_dx = i == 1 ? 10 : i == 6 ? 20 : i == 8 ? 30 : i == 15 ? 40 : 0;
        ck_assert_msg(dx[i] == want_dx, "dx[%zu] = %g", i, (double)dx[i]);
    }
    /* ties go to the first maximum; all-negative windows work (no 0 floor):
     * [7 7; 7 7] -> 7, arg 0;  [-3 -1; -2 -1] -> -1, arg 1 */
    const float t[8] = {7, 7, -3, -1, 7, 7, -2, -1};
    fm_maxpool_forward(y, arg, t, 1, 1, 2, 4, 2);
    ck_assert(y[0] == 7 && arg[0] == 0 && y[1] == -1 && arg[1] == 1);
    /* 3x3 windows on a 4x5 input: floor -> one 1x1 output over rows 0-2, cols
     * 0-2 (row 3 and cols 3-4 ignored, even though they hold the largest
     * values): max of 0..8 laid out as below is 8 at (2,0) -> arg 6 */
    const float f[20] = {0, 1, 2, 90, 91, 3, 4, 5, 92, 93, 8, 7, 6, 94, 95, 96, 97, 98, 99, 100};
    fm_maxpool_forward(y, arg, f, 1, 1, 4, 5, 3);
    ck_assert(y[0] == 8 && arg[0] == 6);
    /* without arg (inference): the same values, odd sizes floored, NaN and
     * -0 handled as with arg (the same comparisons) */
    fm_rng rng;
    fm_rng_seed(&rng, 15);
    for (size_t S = 2; S <= 3; S++) {
        enum { NC = 3, HH = 13, WW = 11 };
        float xs[NC * HH * WW], y1[NC * 6 * 5], y2[NC * 6 * 5];
        uint8_t a1[NC * 6 * 5];
        for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) xs[i] = fm_rng_uniform(&rng) - 0.5f;
        xs[5] = NAN, xs[17] = -0.0f, xs[40] = NAN;
        size_t n = NC * (HH / S) * (WW / S);
        fm_maxpool_forward(y1, a1, xs, 1, NC, HH, WW, S);
        fm_maxpool_forward(y2, NULL, xs, 1, NC, HH, WW, S);
        ck_assert_mem_eq(y1, y2, n * sizeof(float));
    }
}
END_TEST

typedef struct pool_ctx {
    float *x;
    uint8_t *arg;
    size_t N, C, H, W, S;
} pool_ctx;

static void pool_fwd(probe *pr) {
    pool_ctx *c = pr->ctx;
    fm_maxpool_forward(pr->y, c->arg, c->x, c->N, c->C, c->H, c->W, c->S);
}

/* _i = 0: 2x2 windows, 2x2x4x6; _i = 1: 3x3 windows on odd 7x8 (floor: 2x2
 * outputs, row 6 and cols 6-7 never pooled, so their gradient is 0). */
START_TEST(test_maxpool_gradcheck) {
    static const size_t shapes[][5] = {{2, 2, 4, 6, 2}, {1, 2, 7, 8, 3}};
    size_t N = shapes[_i][0], C = shapes[_i][1], H = shapes[_i][2], W = shapes[_i][3],
           S = shapes[_i][4];
    size_t OH = H / S, OW = W / S, nx = N * C * H * W, ny = N * C * OH * OW;
    fm_rng rng;
    fm_rng_seed(&rng, 400 + (uint64_t)_i);
    pool_ctx c = {falloc(nx), balloc(ny), N, C, H, W, S};
    float *y = falloc(ny), *r = falloc(ny), *dx = falloc(nx);
    fill_distinct(c.x, nx, &rng);
    fill(r, ny, &rng, -1, 1);
    probe pr = {pool_fwd, y, ny, r, &c};
    pool_fwd(&pr);
    for (size_t i = 0; i < nx; i++) dx[i] = 123.0f; /* backward overwrites */
    fm_maxpool_backward(dx, r, c.arg, N, C, H, W, S);
    size_t nonzero = 0;
    for (size_t i = 0; i < nx; i++) {
        size_t h = (i / W) % H, w = i % W;
        if (h >= OH * S || w >= OW * S)
            ck_assert_msg(dx[i] == 0.0f, "floor-dropped dx[%zu] != 0", i);
        nonzero += dx[i] != 0.0f;
    }
    ck_assert_uint_eq(nonzero, ny); /* exactly one winner per window */
    ck_assert(check_grad(&pr, "maxpool dx", c.x, dx, nx, H_PL, TOL_PL, TOL_REL) > 0.1);
    free(c.x), free(c.arg), free(y), free(r), free(dx);
}
END_TEST

/* ---- relu ------------------------------------------------------------------------ */

START_TEST(test_relu_golden) {
    /* relu [-1 0 2 -0.5 3] = [0 0 2 0 3]; backward dy = 5s -> [0 0 5 0 5]
     * (the subgradient at 0 is taken as 0), in place too */
    float x[5] = {-1, 0, 2, -0.5f, 3}, y[5], d[5] = {5, 5, 5, 5, 5};
    const float want_y[5] = {0, 0, 2, 0, 3}, want_d[5] = {0, 0, 5, 0, 5};
    fm_relu_forward(y, x, 5);
    for (size_t i = 0; i < 5; i++) ck_assert(y[i] == want_y[i]);
    fm_relu_backward(d, d, y, 5);
    for (size_t i = 0; i < 5; i++) ck_assert(d[i] == want_d[i]);
    fm_relu_forward(x, x, 5);
    for (size_t i = 0; i < 5; i++) ck_assert(x[i] == want_y[i]);
}
END_TEST

typedef struct relu_ctx {
    float *x;
} relu_ctx;

static void relu_fwd(probe *pr) {
    relu_ctx *c = pr->ctx;
    fm_relu_forward(pr->y, c->x, pr->ny);
}

START_TEST(test_relu_gradcheck) {
    size_t n = 40;
    fm_rng rng;
    fm_rng_seed(&rng, 500);
    relu_ctx c = {falloc(n)};
    float *y = falloc(n), *r = falloc(n), *dx = falloc(n);
    fill_away_from_zero(c.x, n, &rng);
    fill(r, n, &rng, -1, 1);
    probe pr = {relu_fwd, y, n, r, &c};
    relu_fwd(&pr);
    fm_relu_backward(dx, r, y, n);
    ck_assert(check_grad(&pr, "relu dx", c.x, dx, n, H_PL, TOL_PL, TOL_REL) > 0.1);
    free(c.x), free(y), free(r), free(dx);
}
END_TEST

/* ---- dropout ------------------------------------------------------------------- */

typedef struct drop_ctx {
    float *x;
    uint8_t *keep;
    float p;
    fm_rng rng0; /* every forward starts from this state: the same mask */
} drop_ctx;

static void drop_fwd(probe *pr) {
    drop_ctx *c = pr->ctx;
    fm_rng rng = c->rng0;
    fm_dropout_forward(pr->y, c->keep, c->x, pr->ny, c->p, &rng);
}

/* A fixed mask from a seeded rng: keep[i] is exactly rng-uniform >= p, y =
 * x keep / (1-p); backward uses the same mask and scale, which the finite
 * differences (a fresh forward with the same rng state each time) confirm. */
START_TEST(test_dropout_mask_and_grad) {
    size_t n = 64;
    fm_rng rng;
    fm_rng_seed(&rng, 600);
    drop_ctx c = {falloc(n), balloc(n), 0.25f, {{0}}};
    fm_rng_seed(&c.rng0, 601);
    float *y = falloc(n), *r = falloc(n), *dx = falloc(n);
    fill(c.x, n, &rng, -1, 1);
    fill(r, n, &rng, -1, 1);
    probe pr = {drop_fwd, y, n, r, &c};
    drop_fwd(&pr);
    fm_rng replay = c.rng0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(c.keep[i], fm_rng_uniform(&replay) >= 0.25f);
        /* 1 / (1 - 0.25) = 4/3 */
        ck_assert_float_eq_tol(y[i], c.keep[i] ? c.x[i] * (4.0f / 3.0f) : 0.0f, 1e-6);
        kept += c.keep[i];
    }
    ck_assert(kept > 0 && kept < n); /* both branches exercised */
    fm_dropout_backward(dx, r, c.keep, n, 0.25f);
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq_tol(dx[i], c.keep[i] ? r[i] * (4.0f / 3.0f) : 0.0f, 1e-6);
    ck_assert(check_grad(&pr, "dropout dx", c.x, dx, n, H_PL, TOL_PL, TOL_REL) > 0.1);
    free(c.x), free(c.keep), free(y), free(r), free(dx);
}
END_TEST

/* p = 0 is the identity; p = 0.3 keeps 70% +- 1% (7 standard deviations at
 * n = 1e5) and is unbiased: mean(y) = mean(x) = 1 +- 0.01 (about 5 sd). */
START_TEST(test_dropout_statistics) {
    size_t n = 100000;
    float *x = falloc(n), *y = falloc(n);
    uint8_t *keep = balloc(n);
    fm_rng rng;
    fm_rng_seed(&rng, 700);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    fm_dropout_forward(y, keep, x, 1000, 0.0f, &rng);
    for (size_t i = 0; i < 1000; i++) ck_assert(keep[i] == 1 && y[i] == 1.0f);
    fm_dropout_forward(y, keep, x, n, 0.3f, &rng);
    double kept = 0.0, sum = 0.0;
    for (size_t i = 0; i < n; i++) kept += keep[i], sum += y[i];
    ck_assert_double_eq_tol(kept / (double)n, 0.7, 0.01);
    ck_assert_double_eq_tol(sum / (double)n, 1.0, 0.01);
    free(x), free(y), free(keep);
}
END_TEST

/* ---- softmax and cross-entropy --------------------------------------------------- */

START_TEST(test_softmax_golden) {
    /* row 0: softmax [0, ln 2, ln 3] = [1, 2, 3] / 6
     * row 1: [1000, -1000, 0] -> [1, 0, 0] (e^-1000 underflows), no inf/NaN
     * row 2: [-1000, -1000, -1000] -> [1/3, 1/3, 1/3] (shifted, so no 0/0)
     * row 3: [1000, 1000, 999] -> [1, 1, 1/e] / (2 + 1/e) */
    const float z[12] = {0,     (float)log(2.0), (float)log(3.0), 1000, -1000, 0,
                         -1000, -1000,           -1000,           1000, 1000,  999};
    double e1 = exp(-1.0);
    const double want[12] = {
        1 / 6.0,      2 / 6.0,      3 / 6.0,      1, 0, 0, 1 / 3.0, 1 / 3.0, 1 / 3.0,
        1 / (2 + e1), 1 / (2 + e1), e1 / (2 + e1)};
    float p[12];
    fm_softmax(p, z, 4, 3);
    for (size_t i = 0; i < 12; i++) {
        ck_assert(isfinite(p[i]));
        assert_close(p[i], want[i], 1e-7, "softmax", i);
    }
}
END_TEST

START_TEST(test_xent_golden) {
    /* z = [0, ln 2, ln 3]: p = [1/6, 1/3, 1/2].
     * label 2: loss = -ln(1/2) = ln 2, dlogits = p - onehot = [1/6, 1/3, -1/2]
     * label 0: loss = -ln(1/6) = ln 6, dlogits = [-5/6, 1/3, 1/2]
     * arg-max is 2, so only the first row is correct. */
    const float z[6] = {0, (float)log(2.0), (float)log(3.0), 0, (float)log(2.0), (float)log(3.0)};
    const uint8_t lab[2] = {2, 0};
    const double want_d[6] = {1 / 6.0, 1 / 3.0, -0.5, -5 / 6.0, 1 / 3.0, 0.5};
    float d[6], d4[6];
    size_t correct = 5; /* n_correct is added to, not overwritten */
    double loss = fm_xent_forward_backward(d, &correct, z, lab, 2, 3, 1.0f);
    ck_assert_double_eq_tol(loss, log(2.0) + log(6.0), 1e-6);
    ck_assert_uint_eq(correct, 6);
    for (size_t i = 0; i < 6; i++) assert_close(d[i], want_d[i], 1e-7, "dlogits", i);
    /* scale = 1/4 (a mean over a batch of 4) scales dlogits exactly */
    fm_xent_forward_backward(d4, NULL, z, lab, 2, 3, 0.25f);
    for (size_t i = 0; i < 6; i++) ck_assert(d4[i] == 0.25f * d[i]);
    /* no dlogits, no n_correct: the loss alone */
    ck_assert_double_eq_tol(fm_xent_forward_backward(NULL, NULL, z, lab, 2, 3, 1.0f), loss, 1e-12);

    /* stability: z = [1000, -1000, 0].  Label 1: loss = log(1 + e^-2000 +
     * e^-1000) + 2000 = 2000, dlogits = [1, -1, 0]; label 0: loss = 0,
     * dlogits = [0, 0, 0] to within e^-1000. */
    const float big[6] = {1000, -1000, 0, 1000, -1000, 0};
    const uint8_t lab2[2] = {1, 0};
    const double want_big[6] = {1, -1, 0, 0, 0, 0};
    loss = fm_xent_forward_backward(d, NULL, big, lab2, 2, 3, 1.0f);
    ck_assert(isfinite(loss));
    ck_assert_double_eq_tol(loss, 2000.0, 1e-9);
    for (size_t i = 0; i < 6; i++) {
        ck_assert(isfinite(d[i]));
        assert_close(d[i], want_big[i], 1e-7, "stable dlogits", i);
    }
    ck_assert_double_eq_tol(fm_xent_forward_backward(NULL, NULL, big + 3, lab2 + 1, 1, 3, 1.0f),
                            0.0, 1e-12);
}
END_TEST

/* dlogits of the summed loss (scale 1) against central differences of the
 * loss itself, which fm_xent_forward_backward returns in double (so this
 * check has its own loop rather than L = sum y r over float outputs). */
START_TEST(test_xent_gradcheck) {
    size_t N = 3, K = 10;
    fm_rng rng;
    fm_rng_seed(&rng, 800);
    float *z = falloc(N * K), *d = falloc(N * K);
    const uint8_t lab[3] = {3, 0, 9};
    fill(z, N * K, &rng, -3, 3);
    double loss = fm_xent_forward_backward(d, NULL, z, lab, N, K, 1.0f);
    /* the loss against -log softmax in double */
    double want = 0.0;
    for (size_t n = 0; n < N; n++) {
        double s = 0.0;
        for (size_t k = 0; k < K; k++) s += exp((double)z[n * K + k]);
        want += log(s) - z[n * K + lab[n]];
    }
    ck_assert_double_eq_tol(loss, want, 1e-12);
    double gmax = 0.0;
    for (size_t i = 0; i < N * K; i++) {
        float v0 = z[i];
        z[i] = v0 + H_XENT;
        double vp = z[i], Lp = fm_xent_forward_backward(NULL, NULL, z, lab, N, K, 1.0f);
        z[i] = v0 - H_XENT;
        double vm = z[i], Lm = fm_xent_forward_backward(NULL, NULL, z, lab, N, K, 1.0f);
        z[i] = v0;
        double num = (Lp - Lm) / (vp - vm);
        ck_assert_msg(fabs(num - d[i]) <= TOL_XENT,
                      "xent dz[%zu]: finite difference %.9g, backward %.9g", i, num, (double)d[i]);
        if (fabs(d[i]) > gmax) gmax = fabs(d[i]);
    }
    ck_assert(gmax > 0.1);
    /* each row of dlogits sums to 0 (softmax sums to 1, onehot to 1) */
    for (size_t n = 0; n < N; n++) {
        double s = 0.0;
        for (size_t k = 0; k < K; k++) s += d[n * K + k];
        ck_assert_double_eq_tol(s, 0.0, 1e-6);
    }
    free(z), free(d);
}
END_TEST


/* ---- label smoothing ------------------------------------------------------------- */

/* Smoothing s: the loss is -sum_k q_k log p_k, q = (1 - s) onehot + s/K,
 * checked against that sum in double and by finite differences; s = 0 is
 * exactly the plain cross-entropy. */
START_TEST(test_xent_smooth) {
    size_t N = 3, K = 10;
    const float sm = 0.1f;
    fm_rng rng;
    fm_rng_seed(&rng, 810);
    float *z = falloc(N * K), *d = falloc(N * K), *d0 = falloc(N * K), *d1 = falloc(N * K);
    const uint8_t lab[3] = {2, 7, 0};
    fill(z, N * K, &rng, -3, 3);
    double l0 = fm_xent_forward_backward(d0, NULL, z, lab, N, K, 0.5f);
    double l1 = fm_xent_smooth_forward_backward(d1, NULL, z, lab, N, K, 0.5f, 0.0f);
    ck_assert(l0 == l1);
    ck_assert_mem_eq(d0, d1, N * K * sizeof *d0);
    size_t correct = 0;
    double loss = fm_xent_smooth_forward_backward(d, &correct, z, lab, N, K, 1.0f, sm);
    double want = 0.0;
    for (size_t n = 0; n < N; n++) {
        double s = 0.0;
        for (size_t k = 0; k < K; k++) s += exp((double)z[n * K + k]);
        for (size_t k = 0; k < K; k++) {
            double q = sm / (double)K + (k == lab[n] ? 1.0 - sm : 0.0);
            want -= q * ((double)z[n * K + k] - log(s));
        }
    }
    ck_assert_double_eq_tol(loss, want, 1e-9);
    double gmax = 0.0;
    for (size_t i = 0; i < N * K; i++) {
        float v0 = z[i];
        z[i] = v0 + H_XENT;
        double vp = z[i], Lp = fm_xent_smooth_forward_backward(NULL, NULL, z, lab, N, K, 1.0f, sm);
        z[i] = v0 - H_XENT;
        double vm = z[i], Lm = fm_xent_smooth_forward_backward(NULL, NULL, z, lab, N, K, 1.0f, sm);
        z[i] = v0;
        double num = (Lp - Lm) / (vp - vm);
        ck_assert_msg(fabs(num - d[i]) <= TOL_XENT, "smoothed xent dz[%zu]: finite difference %.9g, backward %.9g", i,
                      num, (double)d[i]);
        if (fabs(d[i]) > gmax) gmax = fabs(d[i]);
    }
    ck_assert(gmax > 0.1);
    free(z), free(d), free(d0), free(d1);
}
END_TEST

/* ---- batch norm ---------------------------------------------------------------------- */

/* Batch norm is smooth, not piecewise linear: the central difference has a
 * truncation error h^2/6 |L'''|; with h = 1/64, values of order 1 and 12 to
 * 30 values a channel, that is ~1e-4.  Float roundoff of L (~1e-6 here)
 * adds ~1e-6 / h ~ 1e-4.  TOL_BN 2e-3 (+ 1e-2 relative) is a 10x margin
 * and far below the O(0.1) error of a wrong term. */
#define H_BN 0.015625f
#define TOL_BN 2e-3
#define TOL_BN_REL 1e-2

typedef struct bn_ctx {
    float *x, *gamma, *beta, *rmean, *rvar, *stats;
    size_t N, C, HW;
    int train;
} bn_ctx;

static void bn_fwd(probe *pr) {
    bn_ctx *c = pr->ctx;
    if (c->train)
        fm_batchnorm_forward_train(pr->y, c->stats, c->x, c->gamma, c->beta, c->N, c->C, c->HW, 1e-5f);
    else
        fm_batchnorm_forward_eval(pr->y, c->x, c->gamma, c->beta, c->rmean, c->rvar, c->N, c->C, c->HW, 1e-5f);
}

/* _i: {train, eval} x {batchnorm2d 3x2x2x2 (HW 4), batchnorm1d 6x5 (HW 1)} */
START_TEST(test_batchnorm_gradcheck) {
    int train = _i % 2 == 0;
    size_t N = _i < 2 ? 3 : 6, C = _i < 2 ? 2 : 5, HW = _i < 2 ? 4 : 1, nx = N * C * HW;
    fm_rng rng;
    fm_rng_seed(&rng, 900 + (uint64_t)_i);
    bn_ctx c = {falloc(nx), falloc(C), falloc(C), falloc(C), falloc(C), falloc(3 * C), N, C, HW, train};
    float *y = falloc(nx), *r = falloc(nx), *dx = falloc(nx), *dg = falloc(C), *db = falloc(C);
    fill(c.x, nx, &rng, -1, 2);
    fill(c.gamma, C, &rng, 0.5f, 1.5f);
    fill(c.beta, C, &rng, -1, 1);
    fill(c.rmean, C, &rng, -0.5f, 0.5f);
    fill(c.rvar, C, &rng, 0.5f, 2);
    fill(r, nx, &rng, -1, 1);
    probe pr = {bn_fwd, y, nx, r, &c};
    bn_fwd(&pr);
    if (train) {
        /* the normalised output of each channel has mean beta and (biased) variance gamma^2 */
        for (size_t ch = 0; ch < C; ch++) {
            double m = 0, v = 0;
            for (size_t n = 0; n < N; n++)
                for (size_t i = 0; i < HW; i++) m += y[(n * C + ch) * HW + i];
            m /= (double)(N * HW);
            for (size_t n = 0; n < N; n++)
                for (size_t i = 0; i < HW; i++) v += pow(y[(n * C + ch) * HW + i] - m, 2);
            v /= (double)(N * HW);
            ck_assert_double_eq_tol(m, c.beta[ch], 1e-5);
            ck_assert_double_eq_tol(v, (double)c.gamma[ch] * c.gamma[ch], 1e-3);
        }
    }
    for (size_t k = 0; k < C; k++) dg[k] = db[k] = 0.25f; /* accumulated */
    if (train)
        fm_batchnorm_backward_train(dx, dg, db, r, c.x, c.stats, c.gamma, N, C, HW);
    else
        fm_batchnorm_backward_eval(dx, dg, db, r, c.x, c.gamma, c.rmean, c.rvar, N, C, HW, 1e-5f);
    for (size_t k = 0; k < C; k++) dg[k] -= 0.25f, db[k] -= 0.25f;
    ck_assert(check_grad(&pr, train ? "bn(train) dx" : "bn(eval) dx", c.x, dx, nx, H_BN, TOL_BN, TOL_BN_REL) > 0.05);
    ck_assert(check_grad(&pr, "bn dgamma", c.gamma, dg, C, H_BN, TOL_BN, TOL_BN_REL) > 0.05);
    ck_assert(check_grad(&pr, "bn dbeta", c.beta, db, C, H_BN, TOL_BN, TOL_BN_REL) > 0.05);
    /* dx = NULL: the parameter gradients alone, the same */
    float *dg2 = falloc(C), *db2 = falloc(C);
    bn_fwd(&pr);
    if (train)
        fm_batchnorm_backward_train(NULL, dg2, db2, r, c.x, c.stats, c.gamma, N, C, HW);
    else
        fm_batchnorm_backward_eval(NULL, dg2, db2, r, c.x, c.gamma, c.rmean, c.rvar, N, C, HW, 1e-5f);
    for (size_t k = 0; k < C; k++) {
        ck_assert_float_eq_tol(dg2[k], dg[k], 1e-5);
        ck_assert_float_eq_tol(db2[k], db[k], 1e-5);
    }
    free(dg2), free(db2);
    free(c.x), free(c.gamma), free(c.beta), free(c.rmean), free(c.rvar), free(c.stats);
    free(y), free(r), free(dx), free(dg), free(db);
}
END_TEST

/* Batch statistics and the running update, by hand: one channel of
 * x = [1, 2, 3, 6]: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5,
 * unbiased 14 / 3; momentum 0.1 from running (0, 1): mean 0.3,
 * var 0.9 + 0.1 * 14/3, tracked 1.  Two sets are averaged in order. */
START_TEST(test_batchnorm_stats_update) {
    const float x[4] = {1, 2, 3, 6}, g = 2.0f, b = 0.5f;
    float y[4], st[3], st2[3] = {5.0f, 1.0f, 2.0f};
    fm_batchnorm_forward_train(y, st, x, &g, &b, 4, 1, 1, 0.0f);
    ck_assert_float_eq_tol(st[0], 3.0f, 1e-7);
    ck_assert_float_eq_tol(st[1], 1.0f / sqrtf(3.5f), 1e-7);
    ck_assert_float_eq_tol(st[2], 14.0f / 3.0f, 1e-6);
    ck_assert_float_eq_tol(y[3], (6.0f - 3.0f) / sqrtf(3.5f) * 2.0f + 0.5f, 1e-6);
    float rm = 0.0f, rv = 1.0f, tr = 0.0f;
    const float *sets[2] = {st, st2};
    fm_batchnorm_update(&rm, &rv, &tr, sets, 1, 1, 0.1f);
    ck_assert_float_eq_tol(rm, 0.3f, 1e-7);
    ck_assert_float_eq_tol(rv, 0.9f + 0.1f * 14.0f / 3.0f, 1e-6);
    ck_assert(tr == 1.0f);
    rm = 0.0f, rv = 1.0f;
    fm_batchnorm_update(&rm, &rv, &tr, sets, 2, 1, 0.1f); /* the sets' mean: (3 + 5) / 2, (14/3 + 2) / 2 */
    ck_assert_float_eq_tol(rm, 0.4f, 1e-7);
    ck_assert_float_eq_tol(rv, 0.9f + 0.1f * (14.0f / 3.0f + 2.0f) / 2.0f, 1e-6);
    ck_assert(tr == 2.0f);
}
END_TEST

/* ---- average pools, add --------------------------------------------------------------- */

typedef struct avg_ctx {
    float *x;
    size_t N, C, H, W, S;
    int global;
} avg_ctx;

static void avg_fwd(probe *pr) {
    avg_ctx *c = pr->ctx;
    if (c->global)
        fm_gap_forward(pr->y, c->x, c->N, c->C, c->H * c->W);
    else
        fm_avgpool_forward(pr->y, c->x, c->N, c->C, c->H, c->W, c->S);
}

START_TEST(test_avgpool_golden) {
    /* 2x2 windows of a 3x4 plane (floor: row 2 unused):
     *   1 2 | 3 5     means (1+2+4+5)/4 = 3, (3+5+6+2)/4 = 4
     *   4 5 | 6 2
     *   9 9   9 9     global mean (28 + 36) / 12 */
    const float x[12] = {1, 2, 3, 5, 4, 5, 6, 2, 9, 9, 9, 9};
    float y[2], g[1], dx[12];
    fm_avgpool_forward(y, x, 1, 1, 3, 4, 2);
    ck_assert(y[0] == 3.0f && y[1] == 4.0f);
    fm_gap_forward(g, x, 1, 1, 12);
    ck_assert_float_eq_tol(g[0], 64.0f / 12.0f, 1e-6);
    const float dy[2] = {4, 8};
    fm_avgpool_backward(dx, dy, 1, 1, 3, 4, 2);
    const float want[12] = {1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 0, 0};
    for (size_t i = 0; i < 12; i++) ck_assert_msg(dx[i] == want[i], "avgpool dx[%zu] = %g", i, (double)dx[i]);
    const float dg = 6.0f;
    fm_gap_backward(dx, &dg, 1, 1, 12);
    for (size_t i = 0; i < 12; i++) ck_assert(dx[i] == 0.5f);
}
END_TEST

/* _i = 0: avgpool 2x2 on 2x3x5x4 (odd rows floored); _i = 1: global average of 2x3x3x4 */
START_TEST(test_avgpool_gradcheck) {
    avg_ctx c = {NULL, 2, 3, _i ? 3 : 5, 4, 2, _i};
    size_t nx = c.N * c.C * c.H * c.W, ny = _i ? c.N * c.C : c.N * c.C * (c.H / 2) * (c.W / 2);
    fm_rng rng;
    fm_rng_seed(&rng, 950 + (uint64_t)_i);
    c.x = falloc(nx);
    float *y = falloc(ny), *r = falloc(ny), *dx = falloc(nx);
    fill(c.x, nx, &rng, -1, 1);
    fill(r, ny, &rng, -1, 1);
    probe pr = {avg_fwd, y, ny, r, &c};
    for (size_t i = 0; i < nx; i++) dx[i] = 7.0f; /* overwritten */
    if (_i)
        fm_gap_backward(dx, r, c.N, c.C, c.H * c.W);
    else
        fm_avgpool_backward(dx, r, c.N, c.C, c.H, c.W, 2);
    ck_assert(check_grad(&pr, _i ? "gap dx" : "avgpool dx", c.x, dx, nx, H_PL, TOL_PL, TOL_REL) > 0.01);
    free(c.x), free(y), free(r), free(dx);
}
END_TEST

START_TEST(test_add_accumulate) {
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {10, 20, 30, 40, -5}, y[5];
    fm_add_forward(y, a, b, 5);
    for (size_t i = 0; i < 5; i++) ck_assert(y[i] == a[i] + b[i]);
    fm_add_forward(a, a, b, 5); /* in place */
    ck_assert_mem_eq(a, y, sizeof y);
    fm_accumulate(y, b, 5);
    for (size_t i = 0; i < 5; i++) ck_assert(y[i] == a[i] + b[i]);
}
END_TEST

/* ---- the suite ----------------------------------------------------------------------- */

static Suite *layers_suite(void) {
    Suite *s = suite_create("layers");
    TCase *tc = tcase_create("gemm");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_gemm_small_sizes);
    tcase_add_test(tc, test_gemm_large_sizes);
    tcase_add_test(tc, test_gemm_degenerate);
    tcase_add_test(tc, test_gemm_row_independent);
    tcase_add_test(tc, test_gemm_packed_identical);
    suite_add_tcase(s, tc);

    tc = tcase_create("linear");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_linear_golden);
    tcase_add_loop_test(tc, test_linear_gradcheck, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("conv2d");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_conv_golden);
    tcase_add_loop_test(tc, test_conv_gradcheck, 0, (int)N_CONV_CASES);
    tcase_add_test(tc, test_conv_chunk_invariance);
    suite_add_tcase(s, tc);

    tc = tcase_create("pointwise");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_maxpool_golden);
    tcase_add_loop_test(tc, test_maxpool_gradcheck, 0, 2);
    tcase_add_test(tc, test_relu_golden);
    tcase_add_test(tc, test_relu_gradcheck);
    tcase_add_test(tc, test_dropout_mask_and_grad);
    tcase_add_test(tc, test_dropout_statistics);
    suite_add_tcase(s, tc);

    tc = tcase_create("softmax");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_softmax_golden);
    tcase_add_test(tc, test_xent_golden);
    tcase_add_test(tc, test_xent_gradcheck);
    tcase_add_test(tc, test_xent_smooth);
    suite_add_tcase(s, tc);

    tc = tcase_create("normalisation");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_batchnorm_gradcheck, 0, 4);
    tcase_add_test(tc, test_batchnorm_stats_update);
    tcase_add_test(tc, test_avgpool_golden);
    tcase_add_loop_test(tc, test_avgpool_gradcheck, 0, 2);
    tcase_add_test(tc, test_add_accumulate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(layers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
