/* bench_handler.c - what one classify request costs inside fmnist-serve,
 * without the network: the stages of POST /v1/classify, one thread.
 *
 *   meson test -C build --benchmark bench_handler -v
 *   build/tests/bench_handler [WEIGHTS_DIR] [MODEL...]     (default: weights mlp2 cnn3)
 *
 * The request is test image 0 of Fashion-MNIST as a deflated 8-bit gray PNG
 * (what a client sends; made with libpng here).  For each model it prints
 * the microseconds of: PNG decoding and the input pipeline (img_to_input),
 * the forward pass with the weights packed at load (fm_model_predict, the
 * server's path), and the whole request through srv_handle (routing, query,
 * decoding, inference, metrics, the JSON answer with its input PNG) - what a
 * worker thread spends per request besides libmicrohttpd and the kernel.
 * Best of 7 repetitions of 400 calls (the least disturbed by a shared
 * machine).  Not a test: it checks only that the answers are 200. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_idx.h"
#include "image.h"
#include "srv.h"

enum { REPS = 7, CALLS = 400 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct bench_case {
    srv_ctx *ctx;
    const srv_model *model;
    fm_ws *ws;
    const uint8_t *png;
    size_t png_len;
    float x[IMG_N]; /* the decoded input */
    const float *xs; /* CALLS different test images as inputs */
    size_t next;     /* the next of them */
    srv_request req;
    int failed;
} bench_case;

static void run_decode(bench_case *b) {
    float x[IMG_N];
    if (img_to_input(b->png, b->png_len, 0, IMG_INVERT_AUTO, x, NULL, NULL, 0) != IMG_OK) b->failed = 1;
}

static void run_forward(bench_case *b) {
    float p[FM_N_CLASSES];
    fm_model_predict(&b->model->m, b->ws, b->x, 1, p);
}

/* The same on a different test image each call: the zero pattern of the
 * input (which the single-row GEMM skips) changes as it does in service. */
static void run_forward_varied(bench_case *b) {
    float p[FM_N_CLASSES];
    fm_model_predict(&b->model->m, b->ws, b->xs + b->next * IMG_N, 1, p);
    b->next = (b->next + 1) % CALLS;
}

static void run_request(bench_case *b) {
    srv_response r;
    srv_handle(b->ctx, &b->req, &r);
    if (r.status != 200) b->failed = 1;
    srv_response_free(&r);
}

/* Best microseconds per call of f over REPS repetitions of CALLS calls. */
static double best_us(void (*f)(bench_case *), bench_case *b) {
    for (int i = 0; i < CALLS / 4; i++) f(b); /* warm-up */
    double best = INFINITY;
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        for (int i = 0; i < CALLS; i++) f(b);
        double us = (now() - t0) / CALLS * 1e6;
        if (us < best) best = us;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *weights = argc > 1 ? argv[1] : "weights";
    static const char *const defaults[] = {"mlp2", "cnn3"};
    const char *const *models = argc > 2 ? (const char *const *)argv + 2 : defaults;
    int n_models = argc > 2 ? argc - 2 : 2;

    fm_error err = {{0}};
    fm_dataset test = {0};
    if (fm_dataset_load_split(&test, NULL, FM_SPLIT_TEST, &err)) {
        fprintf(stderr, "bench_handler: %s\n", err.msg);
        return 1;
    }
    uint8_t *png = NULL;
    size_t png_len = 0;
    char msg[256];
    if (img_png_encode_gray8(test.pixels, 28, 28, &png, &png_len, msg, sizeof msg) != IMG_OK) {
        fprintf(stderr, "bench_handler: %s\n", msg);
        fm_dataset_free(&test);
        return 1;
    }
    srv_snap *snap = NULL;
    if (srv_snap_load(&snap, weights, NULL, 1, NULL, &err)) {
        fprintf(stderr, "bench_handler: %s\n", err.msg);
        free(png);
        fm_dataset_free(&test);
        return 1;
    }
    static srv_registry registry; /* zeroed: no snapshot yet */
    srv_registry_publish(&registry, snap);
    srv_config cfg = {.host = "127.0.0.1", .weights_dir = weights, .static_dir = "", .max_body_bytes = 4 << 20,
                      .max_batch = 256, .max_pixels = IMG_DEFAULT_MAX_PIXELS};
    static srv_ctx ctx; /* large (static_root) */
    ctx.cfg = &cfg;
    ctx.registry = &registry;
    ctx.metrics = srv_metrics_create();
    float *xs = malloc((size_t)CALLS * IMG_N * sizeof *xs);
    int rc = ctx.metrics && xs ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < (size_t)CALLS * IMG_N; i++) xs[i] = (float)test.pixels[i] / 255.0f;

    printf("one request, test image 0 as a %zu-byte PNG, one thread, best of %d x %d calls:\n", png_len, REPS, CALLS);
    printf("| model | decode + pipeline us | forward us | forward, %d different images us | whole request (srv_handle) us |\n"
           "| --- | --- | --- | --- | --- |\n", CALLS);
    for (int i = 0; i < n_models && rc == 0; i++) {
        const srv_model *m = srv_snap_find(snap, models[i]);
        fm_ws *ws = m ? srv_thread_ws(snap, m) : NULL;
        if (!ws) {
            fprintf(stderr, "bench_handler: no model '%s' in %s (or out of memory)\n", models[i], weights);
            rc = 1;
            break;
        }
        char query[96];
        snprintf(query, sizeof query, "model=%s", models[i]);
        bench_case b = {.ctx = &ctx, .model = m, .ws = ws, .png = png, .png_len = png_len, .xs = xs};
        b.req = (srv_request){.method = "POST", .path = "/v1/classify", .query = query,
                              .content_type = "image/png", .body = png, .body_len = png_len};
        if (img_to_input(png, png_len, 0, IMG_INVERT_AUTO, b.x, NULL, NULL, 0) != IMG_OK) {
            fprintf(stderr, "bench_handler: the PNG does not decode\n");
            rc = 1;
            break;
        }
        double dec = best_us(run_decode, &b), fwd = best_us(run_forward, &b);
        double var = best_us(run_forward_varied, &b), all = best_us(run_request, &b);
        if (b.failed) {
            fprintf(stderr, "bench_handler: a %s request failed\n", models[i]);
            rc = 1;
            break;
        }
        printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", models[i], dec, fwd, var, all);
    }
    srv_thread_ws_free();
    srv_registry_shutdown(&registry);
    srv_metrics_destroy(ctx.metrics);
    free(xs);
    free(png);
    fm_dataset_free(&test);
    return rc;
}
