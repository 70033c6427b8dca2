/* test_torch_ref.c - the engine against fixed reference vectors from PyTorch.
 *
 * tests/data/torch_reference.json was written once by
 * tools/make-torch-reference.py (PyTorch 1.13, autograd in float64): small
 * networks described in our own architecture JSON (conv2d valid, same and
 * strided, 3x3 and 5x5, with and without bias, relu, maxpool2d, avgpool2d,
 * global_avgpool, batchnorm2d/1d, add with both projections, flatten,
 * linear), their parameters and buffers under our safetensors names
 * ("0.weight", "1.running_var", ...), a batch, labels, and PyTorch's
 * training-mode logits, mean cross-entropy, every parameter's gradient,
 * the running statistics after that forward and the eval-mode logits with
 * them; SGD (momentum; Nesterov + weight decay), Adam and AdamW steps from
 * fixed gradients; each named architecture's parameter count.
 * The engine must reproduce all of it to float32 accuracy: an independent
 * implementation agreeing with ours, layout included (a transposed weight
 * or a flatten in the wrong order fails here). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_arch.h"
#include "fm_file.h"
#include "fm_layers.h"
#include "fm_net.h"
#include "fm_optim.h"

static cJSON *doc;

static void load_doc(void) {
    const char *root = getenv("FMNIST_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/torch_reference.json", root ? root : ".");
    char *buf = NULL;
    size_t len = 0;
    fm_error err = {0};
    if (fm_read_file(path, (size_t)16 << 20, &buf, &len, &err)) {
        fprintf(stderr, "test_torch_ref: %s\n", err.msg);
        return;
    }
    doc = cJSON_ParseWithLength(buf, len);
    free(buf);
}

static void free_doc(void) {
    cJSON_Delete(doc);
    doc = NULL;
}

/* Copies a JSON number array of exactly n values into a new float array. */
static float *floats(const cJSON *arr, size_t n) {
    ck_assert_msg(cJSON_IsArray(arr), "reference array missing");
    ck_assert_int_eq((size_t)cJSON_GetArraySize(arr), n);
    float *v = malloc(n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) v[i++] = (float)e->valuedouble;
    return v;
}

static void close_to(const char *what, size_t i, double got, double want, double rtol, double atol) {
    ck_assert_msg(fabs(got - want) <= atol + rtol * fabs(want), "%s[%zu]: engine %.9g, PyTorch %.9g", what, i, got,
                  want);
}

/* Places every tensor named in `named` ("IDX.weight", "IDX.running_mean",
 * ...) at its offset in the flat buffer; with trainable_only, only the
 * parameters (gradients exist for those alone); absent ones stay as they are. */
static void scatter(const fm_arch *a, const cJSON *named, float *flat, int trainable_only) {
    fm_tensor t[FM_MAX_TENSORS];
    for (int li = 0; li < a->n_layers; li++) {
        int nt = fm_layer_tensors(a, li, t);
        for (int k = 0; k < nt; k++) {
            if (trainable_only && !(t[k].flags & FM_T_TRAIN)) continue;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(named, t[k].name);
            ck_assert_msg(v != NULL, "reference has no tensor %s", t[k].name);
            if (cJSON_IsNumber(v)) { /* a 0-d tensor (num_batches_tracked) */
                flat[t[k].off] = (float)v->valuedouble;
                continue;
            }
            float *w = floats(v, t[k].count);
            memcpy(flat + t[k].off, w, t[k].count * sizeof *w);
            free(w);
        }
    }
}

START_TEST(test_network) {
    ck_assert_msg(doc != NULL, "tests/data/torch_reference.json missing or unreadable");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "networks"), _i);
    ck_assert_ptr_nonnull(c);
    const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
    char *aj = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "architecture"));
    fm_arch a;
    fm_error err = {0};
    ck_assert_msg(fm_arch_from_json(&a, aj, &err) == 0, "%s: %s", name, err.msg);
    free(aj);
    size_t n = (size_t)cJSON_GetObjectItemCaseSensitive(c, "batch")->valuedouble;
    float *params = calloc(a.n_params, sizeof *params), *grads = calloc(a.n_params, sizeof *grads);
    float *want_g = calloc(a.n_params, sizeof *want_g), *dlogits = malloc(n * 10 * sizeof *dlogits);
    ck_assert(params && grads && want_g && dlogits);
    scatter(&a, cJSON_GetObjectItemCaseSensitive(c, "params"), params, 0);
    scatter(&a, cJSON_GetObjectItemCaseSensitive(c, "grads"), want_g, 1);
    size_t in = (size_t)a.in_c * (size_t)a.in_h * (size_t)a.in_w;
    float *x = floats(cJSON_GetObjectItemCaseSensitive(c, "x"), n * in);
    float *want_logits = floats(cJSON_GetObjectItemCaseSensitive(c, "logits"), n * 10);
    float *want_eval = floats(cJSON_GetObjectItemCaseSensitive(c, "eval_logits"), n * 10);
    uint8_t labels[64];
    ck_assert_int_le(n, sizeof labels);
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(c, "labels");
    for (size_t i = 0; i < n; i++) labels[i] = (uint8_t)cJSON_GetArrayItem(lab, (int)i)->valueint;

    /* training mode: batch statistics; logits, loss, every parameter's gradient */
    fm_ws ws = {0};
    ck_assert_msg(fm_ws_create(&ws, &a, n, 1, &err) == 0, "%s", err.msg);
    const float *logits = fm_forward(&a, params, &ws, x, n, 1, NULL);
    for (size_t i = 0; i < n * 10; i++) close_to("logits", i, logits[i], want_logits[i], 1e-5, 1e-5);
    double loss = fm_xent_forward_backward(dlogits, NULL, logits, labels, n, 10, 1.0f / (float)n) / (double)n;
    close_to("loss", 0, loss, cJSON_GetObjectItemCaseSensitive(c, "loss")->valuedouble, 1e-5, 1e-6);
    fm_backward(&a, params, &ws, x, dlogits, n, grads);
    fm_tensor t[FM_MAX_TENSORS];
    for (int li = 0; li < a.n_layers; li++) {
        int nt = fm_layer_tensors(&a, li, t);
        for (int k = 0; k < nt; k++)
            for (size_t e = 0; e < t[k].count; e++) {
                size_t i = t[k].off + e;
                if (t[k].flags & FM_T_TRAIN)
                    close_to(t[k].name, e, grads[i], want_g[i], 1e-4, 2e-6);
                else
                    ck_assert_msg(grads[i] == 0.0f, "%s: a buffer got a gradient", t[k].name);
            }
    }

    /* the running statistics that training forward moves, as PyTorch moves them */
    fm_ws *wsp = &ws;
    fm_update_stats(&a, params, &wsp, 1);
    const cJSON *after = cJSON_GetObjectItemCaseSensitive(c, "buffers_after");
    cJSON *bufs;
    cJSON_ArrayForEach(bufs, after) {
        for (int li = 0; li < a.n_layers; li++) {
            int nt = fm_layer_tensors(&a, li, t);
            for (int k = 0; k < nt; k++) {
                if (strcmp(t[k].name, bufs->string) != 0) continue;
                if (cJSON_IsNumber(bufs)) {
                    ck_assert_msg(params[t[k].off] == (float)bufs->valuedouble, "%s: %g, PyTorch %g", t[k].name,
                                  (double)params[t[k].off], bufs->valuedouble);
                    continue;
                }
                float *w = floats(bufs, t[k].count);
                for (size_t e = 0; e < t[k].count; e++) close_to(t[k].name, e, params[t[k].off + e], w[e], 1e-5, 1e-6);
                free(w);
            }
        }
    }

    /* eval mode with those statistics: the reference path, then the plan
     * (batch norm folded: a tolerance, not bit-identity) */
    fm_ws iw = {0};
    float *probs = malloc(n * 10 * sizeof *probs), *want_p = malloc(n * 10 * sizeof *want_p);
    ck_assert(probs && want_p);
    const float *el = fm_forward(&a, params, &ws, x, n, 0, NULL);
    for (size_t i = 0; i < n * 10; i++) close_to("eval logits", i, el[i], want_eval[i], 1e-5, 1e-5);
    ck_assert_msg(fm_ws_create(&iw, &a, 2, 0, &err) == 0, "%s", err.msg);
    fm_predict(&a, params, &iw, x, n, probs);
    fm_softmax(want_p, want_eval, n, 10);
    for (size_t i = 0; i < n * 10; i++) close_to("probabilities", i, probs[i], want_p[i], 1e-5, 1e-6);
    fm_model m = {0};
    ck_assert_msg(fm_model_init(&m, &a, &err) == 0, "%s", err.msg);
    memcpy(m.params, params, a.n_params * sizeof *params);
    ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s", err.msg);
    fm_model_predict(&m, &iw, x, n, probs);
    for (size_t i = 0; i < n * 10; i++) close_to("planned probabilities", i, probs[i], want_p[i], 1e-5, 1e-6);
    fm_model_free(&m);

    fm_ws_destroy(&ws);
    fm_ws_destroy(&iw);
    free(params), free(grads), free(want_g), free(dlogits), free(x), free(want_logits), free(want_eval);
    free(probs), free(want_p);
}
END_TEST

/* Every named architecture has exactly the trainable parameters PyTorch
 * counts for the module tools/torch_arch.py builds from it. */
START_TEST(test_parameter_counts) {
    ck_assert_msg(doc != NULL, "tests/data/torch_reference.json missing or unreadable");
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(doc, "parameter_counts"), *e;
    int seen = 0;
    cJSON_ArrayForEach(e, counts) {
        fm_arch a;
        fm_error err = {0};
        ck_assert_msg(fm_arch_named(&a, e->string, &err) == 0, "%s", err.msg);
        ck_assert_msg(a.n_trainable == (size_t)e->valuedouble, "%s: %zu trainable parameters, PyTorch %.0f", e->string,
                      a.n_trainable, e->valuedouble);
        seen++;
    }
    int named = 0;
    while (fm_arch_names[named]) named++;
    ck_assert_int_eq(seen, named); /* regenerate the reference when a named architecture is added */
}
END_TEST

START_TEST(test_optimizer) {
    ck_assert_msg(doc != NULL, "tests/data/torch_reference.json missing or unreadable");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "optimizers"), _i);
    ck_assert_ptr_nonnull(c);
    const char *kind = cJSON_GetObjectItemCaseSensitive(c, "optimizer")->valuestring;
    const cJSON *p0 = cJSON_GetObjectItemCaseSensitive(c, "params");
    size_t n = (size_t)cJSON_GetArraySize(p0);
    float *p = floats(p0, n), *want = floats(cJSON_GetObjectItemCaseSensitive(c, "expected"), n);
    fm_optim o = {0};
    fm_error err = {0};
    int k = fm_optim_parse(kind);
    ck_assert_int_ge(k, 0);
    ck_assert_msg(fm_optim_create(&o, (fm_opt_kind)k, n, (float)cJSON_GetObjectItemCaseSensitive(c, "lr")->valuedouble,
                                  (float)cJSON_GetObjectItemCaseSensitive(c, "momentum")->valuedouble, &err) == 0,
                  "%s", err.msg);
    o.nesterov = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "nesterov"));
    o.weight_decay = (float)cJSON_GetObjectItemCaseSensitive(c, "weight_decay")->valuedouble;
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(c, "grads")) {
        float *gv = floats(g, n);
        fm_optim_step(&o, p, gv);
        free(gv);
    }
    for (size_t i = 0; i < n; i++) close_to(kind, i, p[i], want[i], 2e-6, 2e-6);
    /* Adam is Keras' form (epsilon added before the bias correction); torch.optim.Adam
     * adds it after, which moves the first steps by up to ~eps/sqrt(v): close, not equal */
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(c, "expected_torch_optim");
    if (to) {
        float *tv = floats(to, n);
        for (size_t i = 0; i < n; i++) close_to("torch.optim.Adam", i, p[i], tv[i], 0, 2e-5);
        free(tv);
    }
    fm_optim_destroy(&o);
    free(p), free(want);
}
END_TEST

int main(void) {
    load_doc();
    Suite *s = suite_create("torch_ref");
    TCase *tc = tcase_create("pytorch");
    int nn = doc ? cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "networks")) : 1;
    int no = doc ? cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "optimizers")) : 1;
    tcase_add_loop_test(tc, test_network, 0, nn);
    tcase_add_loop_test(tc, test_optimizer, 0, no);
    tcase_add_test(tc, test_parameter_counts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    free_doc();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
