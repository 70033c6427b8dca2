/* bench_engine.c - where the engine's time goes, single-threaded.
 *
 *   meson test -C build --benchmark bench_engine -v     (or run build/tests/bench_engine)
 *
 * Prints, for one core: the SGEMM rate on the shapes the study's networks
 * use; for mlp2 and cnn3, the training step (forward + backward, the
 * optimiser excluded) per batch of the study's size and the rate it
 * reaches in GFLOP/s (3 x forward multiply-adds x 2 flops per example:
 * forward, input gradient, weight gradient), and inference latency for one
 * image and throughput in batches of 256, and one image with the weights
 * packed once at load as the server runs it.  Each figure is the best of
 * several repetitions (the least disturbed by a shared machine).  Not a
 * test: it checks nothing and is never run by `meson test`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_arch.h"
#include "fm_gemm.h"
#include "fm_net.h"
#include "fm_rng.h"

/* Wall time, or with FM_BENCH_CPU=1 this thread's CPU time: on a machine
 * shared with other work, the time others hold the core is not ours (cache
 * and memory contention still are). */
static double now(void) {
    struct timespec t;
    static int cpu = -1;
    if (cpu < 0) cpu = getenv("FM_BENCH_CPU") && atoi(getenv("FM_BENCH_CPU")) > 0;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *randn(size_t n, fm_rng *r) {
    float *p = malloc(n * sizeof *p);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) p[i] = fm_rng_uniform(r);
    return p;
}

static int bench_gemm(fm_rng *r) {
    static const size_t shapes[][3] = {
        {512, 256, 784},  /* mlp2 layer 1 forward, batch 512 */
        {256, 784, 512},  /* its weight gradient */
        {676, 32, 9},     /* cnn3 conv1 per image (im2col) */
        {121, 64, 288},   /* cnn3 conv2 per image */
        {64, 128, 1152},  /* cnn3 dense, batch 64 */
        {256, 256, 256},
    };
    float *scratch = malloc(FM_GEMM_SCRATCH * sizeof *scratch);
    if (!scratch) return -1;
    printf("SGEMM (%s kernel), one core:\n", fm_gemm_kernel_name());
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = randn(M * K, r), *B = randn(K * N, r), *C = calloc(M * N, sizeof *C);
        if (!A || !B || !C) {
            free(A), free(B), free(C), free(scratch);
            return -1;
        }
        double flops = 2.0 * (double)M * (double)N * (double)K, best = 1e9;
        size_t reps = (size_t)(2e8 / flops) + 1;
        for (int t = 0; t < 5; t++) {
            double t0 = now();
            for (size_t i = 0; i < reps; i++) fm_sgemm(0, 0, M, N, K, A, K, B, N, 0, C, N, scratch);
            double dt = (now() - t0) / (double)reps;
            if (dt < best) best = dt;
        }
        printf("  M=%-4zu N=%-4zu K=%-5zu %8.1f us  %6.1f GFLOP/s\n", M, N, K, best * 1e6, flops / best * 1e-9);
        free(A), free(B), free(C);
    }
    free(scratch);
    return 0;
}

static int bench_model(const char *name, size_t batch, fm_rng *r) {
    fm_arch a;
    fm_error err = {0};
    if (fm_arch_named(&a, name, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return -1;
    }
    fm_ws tw = {0}, iw = {0}, one = {0};
    float *params = randn(a.n_params, r), *grads = calloc(a.n_params, sizeof(float));
    float *x = randn(batch * 784 > 256 * 784 ? batch * 784 : 256 * 784, r);
    float *dl = randn(batch * 10, r), *probs = malloc(256 * 10 * sizeof(float));
    int rc = -1;
    if (!params || !grads || !x || !dl || !probs || fm_ws_create(&tw, &a, batch, 1, &err) ||
        fm_ws_create(&iw, &a, 256, 0, &err) || fm_ws_create(&one, &a, 1, 0, &err)) {
        fprintf(stderr, "bench_engine: %s: %s\n", name, err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    for (size_t i = 0; i < a.n_params; i++) params[i] = (params[i] - 0.5f) * 0.1f;
    fm_model pm = {0};
    if (fm_model_init(&pm, &a, &err) == 0) {
        memcpy(pm.params, params, a.n_params * sizeof *params);
        if (fm_model_pack(&pm, &err)) fm_model_free(&pm);
    }
    if (!pm.plan) {
        fprintf(stderr, "bench_engine: %s: %s\n", name, err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    double macs = (double)fm_arch_macs(&a), fwd = 1e9, step = 1e9, lat = 1e9, thr = 1e9, plat = 1e9;
    for (int t = 0; t < 5; t++) {
        double t0 = now();
        fm_forward(&a, params, &tw, x, batch, 1, r);
        double t1 = now();
        fm_backward(&a, params, &tw, x, dl, batch, grads);
        double t2 = now();
        if (t1 - t0 < fwd) fwd = t1 - t0;
        if (t2 - t0 < step) step = t2 - t0;
        t0 = now();
        for (int i = 0; i < 200; i++) fm_predict(&a, params, &one, x, 1, probs);
        t1 = now();
        fm_predict(&a, params, &iw, x, 256, probs);
        t2 = now();
        if ((t1 - t0) / 200 < lat) lat = (t1 - t0) / 200;
        if (t2 - t1 < thr) thr = t2 - t1;
        t0 = now();
        for (int i = 0; i < 200; i++) fm_model_predict(&pm, &one, x, 1, probs);
        t1 = now();
        if ((t1 - t0) / 200 < plat) plat = (t1 - t0) / 200;
    }
    printf("%s (%.2f M multiply-adds per image), one core:\n", name, macs * 1e-6);
    printf("  training step, batch %zu: forward %.2f ms + backward %.2f ms = %.2f ms  (%.1f GFLOP/s, %.0f examples/s)\n",
           batch, fwd * 1e3, (step - fwd) * 1e3, step * 1e3, 6.0 * macs * (double)batch / step * 1e-9,
           (double)batch / step);
    printf("  inference: one image %.1f us; batch of 256 %.2f ms (%.0f images/s, %.1f GFLOP/s)\n", lat * 1e6,
           thr * 1e3, 256.0 / thr, 2.0 * macs * 256.0 / thr * 1e-9);
    printf("  inference, weights packed at load (the server's path): one image %.1f us\n", plat * 1e6);
    printf("  one epoch of 54,000 examples at this rate: %.2f s on one core\n", 54000.0 / batch * step);
    rc = 0;
done:
    fm_model_free(&pm);
    fm_ws_destroy(&tw), fm_ws_destroy(&iw), fm_ws_destroy(&one);
    free(params), free(grads), free(x), free(dl), free(probs);
    return rc;
}

/* bench_engine [gemm] [mlp2] [cnn3] ...: the named parts only (any
 * architecture fm_arch_named knows; batch 512 for MLPs, 64 for CNNs); all
 * three by default. */
int main(int argc, char **argv) {
    fm_rng r;
    fm_rng_seed(&r, 1);
    if (argc < 2) {
        if (bench_gemm(&r)) return 1;
        if (bench_model("mlp2", 512, &r)) return 1;
        if (bench_model("cnn3", 64, &r)) return 1;
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        int rc = strcmp(argv[i], "gemm") == 0 ? bench_gemm(&r)
                                              : bench_model(argv[i], strncmp(argv[i], "mlp", 3) == 0 ? 512 : 64, &r);
        if (rc) return 1;
    }
    return 0;
}
