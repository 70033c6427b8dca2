/* test_explain.c - attributions (fm_explain.h): the input gradient of every
 * named architecture against finite differences in eval mode, integrated
 * gradients' completeness and their agreement with plain PyTorch on the
 * shipped cnn3 (tests/data/torch_reference.json), occlusion on a network
 * small enough to compute by hand, and faithfulness: on 100 test images,
 * blanking the pixels an explanation ranks highest lowers the predicted
 * class's probability more than blanking random ones or the lowest ranked
 * (skipped, exit 77, when the data set is absent). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_explain.h"
#include "fm_file.h"
#include "fm_idx.h"
#include "fm_layers.h"
#include "fm_rng.h"
#include "fm_st.h"

static void *xcalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

static const char *source_root(void) {
    const char *r = getenv("FMNIST_SOURCE_ROOT");
    return r ? r : ".";
}

/* A model of a named architecture with random parameters and batch-norm
 * statistics that are not the identity. */
static void random_model(fm_model *m, const char *name, uint64_t seed) {
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_msg(fm_arch_named(&a, name, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fm_model_init(m, &a, &err), 0);
    fm_rng rng;
    fm_rng_seed(&rng, seed);
    fm_arch_init_params(&a, m->params, &rng);
    fm_tensor t[FM_MAX_TENSORS];
    for (int li = 0; li < a.n_layers; li++) {
        int nt = fm_layer_tensors(&a, li, t);
        for (int k = 0; k < nt; k++) {
            const char *s = strrchr(t[k].name, '.') + 1;
            for (size_t e = 0; e < t[k].count; e++) {
                float *v = m->params + t[k].off + e;
                if (strcmp(s, "running_var") == 0) *v = 0.5f + fm_rng_uniform(&rng);
                else if (strcmp(s, "running_mean") == 0 || strcmp(s, "bias") == 0) *v = 0.2f * fm_rng_uniform(&rng) - 0.1f;
            }
        }
    }
}

/* The explained output (logit or probability of c) of one image, eval mode. */
static double out_of(const fm_model *m, fm_ws *ws, const float *x, int c, int prob) {
    const float *z = fm_forward(&m->arch, m->params, ws, x, 1, 0, NULL);
    if (!prob) return z[c];
    double s = 0.0; /* in double: a float probability near 1 keeps too few digits for a difference */
    for (int k = 0; k < 10; k++) s += exp((double)z[k] - z[c]);
    return 1.0 / s;
}

/* For every named architecture: the gradient method's x * g, divided by x
 * (> 0 everywhere here), is the input gradient of the logit; along random
 * directions v its dot product with v must match the central difference
 * of the logit (a direction whose one-sided slopes disagree crossed a relu
 * kink and is replaced by another).  The probability's gradient is then
 * checked against the chain rule over those logit gradients, sum_k p_c
 * (onehot_c - p)_k grad z_k: a finite difference of a probability keeps too
 * few digits in float to test it directly. */
START_TEST(test_input_gradient) {
    const char *name = fm_arch_names[_i];
    fm_model m = {0};
    random_model(&m, name, 300 + (uint64_t)_i);
    fm_explain_opts o = fm_explain_defaults();
    o.method = FM_EXPLAIN_GRADIENT;
    fm_error err = {{0}};
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &m.arch, fm_explain_batch(&o), 1, &err), 0);
    size_t in = 784;
    float *x = xcalloc(in * sizeof *x), *attr = xcalloc(in * sizeof *attr), *v = xcalloc(in * sizeof *v);
    float *xp = xcalloc(in * sizeof *xp), *scratch = xcalloc(fm_explain_batch(&o) * (2 * in + 10) * sizeof(float));
    float *g = xcalloc(10 * in * sizeof *g);
    fm_rng rng;
    fm_rng_seed(&rng, 400 + (uint64_t)_i);
    for (size_t i = 0; i < in; i++) x[i] = 0.1f + 0.9f * fm_rng_uniform(&rng);
    fm_explain_info info;
    int c = 3;
    ck_assert_msg(fm_explain(&m, &ws, scratch, x, c, &o, attr, &info, &err) == 0, "%s", err.msg);
    ck_assert_double_eq_tol(info.out, out_of(&m, &ws, x, c, 0), 1e-6);
    int checked = 0;
    for (int t = 0; t < 40 && checked < 4; t++) {
        double dot = 0.0, vn = 0.0;
        for (size_t i = 0; i < in; i++) {
            v[i] = fm_rng_uniform(&rng) - 0.5f;
            vn += (double)v[i] * v[i];
        }
        for (size_t i = 0; i < in; i++) v[i] /= (float)sqrt(vn), dot += (double)v[i] * attr[i] / x[i];
        const double h = 1e-2;
        double L[3];
        for (int s = -1; s <= 1; s++) {
            for (size_t i = 0; i < in; i++) xp[i] = x[i] + (float)(s * h) * v[i];
            L[s + 1] = out_of(&m, &ws, xp, c, 0);
        }
        double sp = (L[2] - L[1]) / h, sm = (L[1] - L[0]) / h, num = (L[2] - L[0]) / (2 * h);
        double scale = fabs(num) + 1e-2;
        if (fabs(sp - sm) > 0.02 * scale) continue; /* a kink within h */
        ck_assert_msg(fabs(num - dot) <= 0.02 * scale, "%s: directional derivative %.7g, gradient %.7g", name, num, dot);
        checked++;
    }
    ck_assert_msg(checked >= 2, "%s: only %d smooth directions", name, checked);
    /* the probability: the chain rule over the ten logit gradients */
    for (int k = 0; k < 10; k++) ck_assert_int_eq(fm_explain(&m, &ws, scratch, x, k, &o, g + k * in, &info, &err), 0);
    float p[10];
    fm_softmax(p, fm_forward(&m.arch, m.params, &ws, x, 1, 0, NULL), 1, 10);
    o.target_prob = 1;
    ck_assert_int_eq(fm_explain(&m, &ws, scratch, x, c, &o, attr, &info, &err), 0);
    ck_assert_double_eq_tol(info.out, p[c], 1e-6);
    double worst = 0.0, big = 0.0;
    for (size_t i = 0; i < in; i++) {
        double want = 0.0;
        for (int k = 0; k < 10; k++) want += (double)p[c] * ((k == c) - p[k]) * g[k * in + i];
        worst = fmax(worst, fabs(want - attr[i]));
        big = fmax(big, fabs(want));
    }
    ck_assert_msg(worst <= 1e-5 * big + 1e-9, "%s: probability gradient off the chain rule by %.3g (largest %.3g)", name,
                  worst, big);
    fm_ws_destroy(&ws);
    fm_model_free(&m);
    free(x), free(attr), free(v), free(xp), free(scratch), free(g);
}
END_TEST

/* Integrated gradients sum to out(x) - out(black) up to the midpoint rule's
 * error, which shrinks with more steps (to within 2 % of the difference at
 * 128 steps on these networks); occlusion's reference outputs are the same. */
START_TEST(test_ig_completeness) {
    const char *name = fm_arch_names[_i];
    fm_model m = {0};
    random_model(&m, name, 500 + (uint64_t)_i);
    fm_error err = {{0}};
    size_t in = 784;
    float *x = xcalloc(in * sizeof *x), *attr = xcalloc(in * sizeof *attr);
    fm_rng rng;
    fm_rng_seed(&rng, 600);
    for (size_t i = 0; i < in; i++) x[i] = i % 5 ? fm_rng_uniform(&rng) : 0.0f;
    double errs[2];
    for (int t = 0; t < 2; t++) {
        fm_explain_opts o = fm_explain_defaults();
        o.steps = t ? 128 : 8;
        fm_ws ws;
        ck_assert_int_eq(fm_ws_create(&ws, &m.arch, fm_explain_batch(&o), 1, &err), 0);
        float *scratch = xcalloc(fm_explain_batch(&o) * (2 * in + 10) * sizeof(float));
        fm_explain_info info;
        ck_assert_msg(fm_explain(&m, &ws, scratch, x, 5, &o, attr, &info, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(info.evaluations, o.steps + 2);
        errs[t] = info.completeness_error / (fabs(info.out - info.baseline) + 1e-6);
        if (t) ck_assert_msg(errs[t] <= 0.02, "%s: completeness error %.3g of out - baseline at 128 steps", name, errs[t]);
        fm_ws_destroy(&ws);
        free(scratch);
    }
    ck_assert_msg(errs[1] <= errs[0] + 1e-3, "%s: more steps, larger error (%.3g -> %.3g)", name, errs[0], errs[1]);
    fm_model_free(&m);
    free(x), free(attr);
}
END_TEST

/* The shipped cnn3, 32 steps, three test images: plain PyTorch in float64
 * (tools/make-torch-reference.py) and the engine in float32 agree within 1e-4. */
START_TEST(test_ig_matches_torch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/torch_reference.json", source_root());
    char *buf;
    size_t len;
    fm_error err = {{0}};
    ck_assert_msg(fm_read_file(path, (size_t)16 << 20, &buf, &len, &err) == 0, "%s", err.msg);
    cJSON *doc = cJSON_ParseWithLength(buf, len);
    free(buf);
    ck_assert_ptr_nonnull(doc);
    fm_model m = {0};
    snprintf(path, sizeof path, "%s/weights/cnn3.safetensors", source_root());
    ck_assert_msg(fm_st_load(&m, path, NULL, &err) == 0, "%s", err.msg);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(doc, "integrated_gradients"), *c;
    int n = 0;
    cJSON_ArrayForEach(c, cases) {
        fm_explain_opts o = fm_explain_defaults();
        o.steps = cJSON_GetObjectItemCaseSensitive(c, "steps")->valueint;
        int cls = cJSON_GetObjectItemCaseSensitive(c, "class")->valueint;
        const cJSON *xj = cJSON_GetObjectItemCaseSensitive(c, "x"), *aj = cJSON_GetObjectItemCaseSensitive(c, "attributions");
        float x[784], attr[784];
        for (int i = 0; i < 784; i++) x[i] = (float)cJSON_GetArrayItem(xj, i)->valuedouble;
        fm_ws ws;
        ck_assert_int_eq(fm_ws_create(&ws, &m.arch, fm_explain_batch(&o), 1, &err), 0);
        float *scratch = xcalloc(fm_explain_batch(&o) * (2 * 784 + 10) * sizeof(float));
        fm_explain_info info;
        ck_assert_int_eq(fm_explain(&m, &ws, scratch, x, cls, &o, attr, &info, &err), 0);
        for (int i = 0; i < 784; i++) {
            double want = cJSON_GetArrayItem(aj, i)->valuedouble;
            ck_assert_msg(fabs(attr[i] - want) <= 1e-4 + 1e-4 * fabs(want), "image %d pixel %d: engine %.7g, PyTorch %.7g", n,
                          i, (double)attr[i], want);
        }
        fm_ws_destroy(&ws);
        free(scratch);
        n++;
    }
    ck_assert_int_eq(n, 3);
    fm_model_free(&m);
    cJSON_Delete(doc);
}
END_TEST

/* Occlusion on a linear model (flatten, linear): the drop a patch causes is
 * the sum of w[c, i] x[i] over its pixels, so each pixel's attribution is
 * the mean of those sums over the patches that cover it - computed here
 * directly.  Also: the options are checked. */
START_TEST(test_occlusion_linear) {
    fm_arch a;
    fm_error err = {{0}};
    ck_assert_int_eq(
        fm_arch_from_json(&a, "{\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":10}]}", &err), 0);
    fm_model m = {0};
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    fm_rng rng;
    fm_rng_seed(&rng, 700);
    for (size_t i = 0; i < a.n_params; i++) m.params[i] = fm_rng_uniform(&rng) - 0.5f;
    float x[784], attr[784];
    for (int i = 0; i < 784; i++) x[i] = fm_rng_uniform(&rng);
    fm_explain_opts o = fm_explain_defaults();
    o.method = FM_EXPLAIN_OCCLUSION, o.patch = 5, o.stride = 3; /* 24 / 3 + 1 = 9 positions, the last at 23 */
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &a, fm_explain_batch(&o), 1, &err), 0);
    float *scratch = xcalloc(fm_explain_batch(&o) * (2 * 784 + 10) * sizeof(float));
    fm_explain_info info;
    int cls = 7;
    ck_assert_int_eq(fm_explain(&m, &ws, scratch, x, cls, &o, attr, &info, &err), 0);
    ck_assert_int_eq(info.evaluations, 2 + 9 * 9);
    const float *w = m.params + a.layers[1].w_off + (size_t)cls * 784;
    double sum[784] = {0}, cnt[784] = {0};
    static const int pos[9] = {0, 3, 6, 9, 12, 15, 18, 21, 23};
    for (int py = 0; py < 9; py++)
        for (int px = 0; px < 9; px++) {
            double drop = 0.0;
            for (int r = pos[py]; r < pos[py] + 5; r++)
                for (int q = pos[px]; q < pos[px] + 5; q++) drop += (double)w[r * 28 + q] * x[r * 28 + q];
            for (int r = pos[py]; r < pos[py] + 5; r++)
                for (int q = pos[px]; q < pos[px] + 5; q++) sum[r * 28 + q] += drop, cnt[r * 28 + q] += 1;
        }
    for (int i = 0; i < 784; i++) {
        ck_assert_msg(cnt[i] > 0, "pixel %d never occluded", i);
        ck_assert_msg(fabs(attr[i] - sum[i] / cnt[i]) < 1e-4, "pixel %d: %.7g, by hand %.7g", i, (double)attr[i],
                      sum[i] / cnt[i]);
    }
    /* option checks */
    o.stride = 6;
    ck_assert_int_ne(fm_explain(&m, &ws, scratch, x, cls, &o, attr, &info, &err), 0);
    o = fm_explain_defaults();
    o.steps = FM_EXPLAIN_MAX_STEPS + 1;
    ck_assert_int_ne(fm_explain_check(&o, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "steps"));
    o.steps = 8;
    ck_assert_int_ne(fm_explain(&m, &ws, scratch, x, 10, &o, attr, &info, &err), 0); /* no class 10 */
    o.steps = 200; /* the workspace holds fewer */
    ck_assert_int_ne(fm_explain(&m, &ws, scratch, x, 1, &o, attr, &info, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "workspace"));
    ck_assert_int_eq(fm_explain_parse("ig"), FM_EXPLAIN_IG);
    ck_assert_int_eq(fm_explain_parse("shap"), -1);
    fm_ws_destroy(&ws);
    fm_model_free(&m);
    free(scratch);
}
END_TEST

static fm_dataset test_set;
static int have_data;

/* Faithfulness (the shipped cnn3, 100 test images, each method): the mean
 * drop of the predicted class's probability when the 10 % of pixels with
 * the highest attribution are set to 0 exceeds the drop for 10 % chosen
 * at random and for the lowest 10 %.  The figures go to stdout (and
 * docs/BENCHMARKS.md). */
typedef struct ranked {
    float v;
    int i;
} ranked;
static int by_value_desc(const void *a, const void *b) {
    float x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return x < y ? 1 : x > y ? -1 : ((const ranked *)a)->i - ((const ranked *)b)->i;
}

START_TEST(test_faithfulness) {
    if (!have_data) return;
    fm_model m = {0};
    fm_error err = {{0}};
    char path[4096];
    snprintf(path, sizeof path, "%s/weights/cnn3.safetensors", source_root());
    ck_assert_msg(fm_st_load(&m, path, NULL, &err) == 0, "%s", err.msg);
    fm_explain_opts o = fm_explain_defaults();
    o.method = (fm_explain_method)_i;
    fm_ws ws;
    ck_assert_int_eq(fm_ws_create(&ws, &m.arch, fm_explain_batch(&o), 1, &err), 0);
    float *scratch = xcalloc(fm_explain_batch(&o) * (2 * 784 + 10) * sizeof(float));
    fm_rng rng;
    fm_rng_seed(&rng, 800);
    double drop_top = 0, drop_rand = 0, drop_low = 0;
    enum { IMAGES = 100, K = 78 }; /* 10 % of 784 pixels */
    for (int e = 0; e < IMAGES; e++) {
        float x[784], attr[784], xb[784], p[10];
        fm_dataset_to_float(&test_set, (size_t)e, 1, x);
        const float *z = fm_forward(&m.arch, m.params, &ws, x, 1, 0, NULL);
        int c = 0;
        for (int k = 1; k < 10; k++)
            if (z[k] > z[c]) c = k;
        fm_softmax(p, z, 1, 10);
        double p0 = p[c];
        fm_explain_info info;
        ck_assert_int_eq(fm_explain(&m, &ws, scratch, x, c, &o, attr, &info, &err), 0);
        ranked rk[784];
        for (int i = 0; i < 784; i++) rk[i] = (ranked){attr[i], i};
        qsort(rk, 784, sizeof rk[0], by_value_desc);
        uint32_t perm[784];
        for (uint32_t i = 0; i < 784; i++) perm[i] = i;
        fm_rng_shuffle(&rng, perm, 784);
        for (int which = 0; which < 3; which++) {
            memcpy(xb, x, sizeof xb);
            for (int k = 0; k < K; k++) xb[which == 0 ? rk[k].i : which == 1 ? (int)perm[k] : rk[783 - k].i] = 0.0f;
            fm_softmax(p, fm_forward(&m.arch, m.params, &ws, xb, 1, 0, NULL), 1, 10);
            double d = p0 - p[c];
            if (which == 0) drop_top += d;
            else if (which == 1) drop_rand += d;
            else drop_low += d;
        }
    }
    printf("faithfulness (%s, cnn3, %d test images, blanking 10%% of pixels): mean drop of the predicted "
           "class's probability: highest-ranked %.4f, random %.4f, lowest-ranked %.4f\n",
           fm_explain_name(o.method), IMAGES, drop_top / IMAGES, drop_rand / IMAGES, drop_low / IMAGES);
    ck_assert_msg(drop_top > drop_rand && drop_top > drop_low, "%s: top %.4f, random %.4f, lowest %.4f",
                  fm_explain_name(o.method), drop_top / IMAGES, drop_rand / IMAGES, drop_low / IMAGES);
    fm_ws_destroy(&ws);
    fm_model_free(&m);
    free(scratch);
}
END_TEST

int main(void) {
    fm_error err = {{0}};
    have_data = fm_dataset_load_split(&test_set, fm_data_dir(NULL), FM_SPLIT_TEST, &err) == 0;
    Suite *s = suite_create("explain");
    TCase *tc = tcase_create("maths");
    tcase_set_timeout(tc, 120);
    int n_named = 0;
    while (fm_arch_names[n_named]) n_named++;
    tcase_add_loop_test(tc, test_input_gradient, 0, n_named);
    tcase_add_loop_test(tc, test_ig_completeness, 0, n_named);
    tcase_add_test(tc, test_ig_matches_torch);
    tcase_add_test(tc, test_occlusion_linear);
    suite_add_tcase(s, tc);
    tc = tcase_create("faithfulness");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_faithfulness, 0, 3);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (have_data) fm_dataset_free(&test_set);
    if (!failed && !have_data) {
        printf("note: %s: faithfulness not checked (apt-get install dataset-fashion-mnist)\n", err.msg);
        return 77;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
