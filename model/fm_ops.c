/* fm_ops.c - the layer descriptor table (fm_ops.h): one row per layer
 * type, each with the small functions it points at right above it.  The
 * maths is in the kernels (fm_layers.c reference, fm_fast.c inference);
 * what is here is glue: which fields a type takes, its shapes and tensors,
 * and how its forward, backward and inference step call the kernels. */
#include "fm_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_fast.h"
#include "fm_gemm.h"
#include "fm_layers.h"

/* ---- shared helpers ------------------------------------------------------------- */

/* An integer field in [lo, hi]; absent -> def (an error when def < lo: required). */
static int get_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out, char *why, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (def < lo) return snprintf(why, n, "missing \"%s\"", key), -1;
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi)
        return snprintf(why, n, "\"%s\" must be an integer in [%d, %d]", key, lo, hi), -1;
    *out = (int)v->valuedouble;
    return 0;
}

/* A boolean field; absent -> def. */
static int get_bool(const cJSON *o, const char *key, int def, int *out, char *why, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) return snprintf(why, n, "\"%s\" must be true or false", key), -1;
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A number field in [lo, hi] (open at lo when lo_open); absent -> def. */
static int get_float(const cJSON *o, const char *key, float def, double lo, double hi, int lo_open, float *out,
                     char *why, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || (lo_open && d == lo))
        return snprintf(why, n, "\"%s\" must be a number in %c%g, %g]", key, lo_open ? '(' : '[', lo, hi), -1;
    *out = (float)d;
    return 0;
}

/* A float as its shortest decimal ("0.2", not "0.200000003"), as a raw number. */
static int add_float(cJSON *o, const char *key, float v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)v);
    cJSON *r = cJSON_CreateRaw(buf);
    if (!r) return -1;
    if (!cJSON_AddItemToObject(o, key, r)) { /* its key copy can fail */
        cJSON_Delete(r);
        return -1;
    }
    return 0;
}

static int add_int(cJSON *o, const char *key, int v) { return cJSON_AddNumberToObject(o, key, v) ? 0 : -1; }

static void tensor(fm_tensor *t, const char *name, unsigned flags, size_t off, int rank, int d0, int d1, int d2,
                   int d3) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rank = rank;
    t->dims[0] = d0, t->dims[1] = d1, t->dims[2] = d2, t->dims[3] = d3;
    size_t count = 1;
    for (int k = 0; k < rank; k++) count *= (size_t)t->dims[k];
    t->off = off, t->count = count, t->flags = flags;
}

/* Glorot uniform as Keras: limit sqrt(6 / (fan_in + fan_out)); zero bias. */
static void glorot(float *w, size_t n, double fan_in, double fan_out, fm_rng *rng) {
    float limit = (float)sqrt(6.0 / (fan_in + fan_out));
    for (size_t k = 0; k < n; k++) w[k] = (2.0f * fm_rng_uniform(rng) - 1.0f) * limit;
}

/* The weight and bias of a layer in a tensor block (params or grads) at p;
 * NULL for a gradient block of NULL (backward without parameter gradients:
 * an explanation wants the input's alone). */
static float *weight_of(const fm_layer *L, const float *p) { return p ? (float *)p + (L->w_off - L->p_off) : NULL; }
static float *bias_of(const fm_layer *L, const float *p) {
    return L->n_b && p ? (float *)p + (L->b_off - L->p_off) : NULL;
}

/* A batch norm's tensors at p: weight, bias, running mean, running var, tracked. */
typedef struct bn_view {
    float *gamma, *beta, *mean, *var, *tracked;
} bn_view;
static bn_view bn_at(const float *p, size_t C) {
    float *q = (float *)p;
    if (!q) return (bn_view){NULL, NULL, NULL, NULL, NULL};
    return (bn_view){q, q + C, q + 2 * C, q + 3 * C, q + 4 * C};
}
static int bn_tensors(fm_tensor *t, const char *prefix, size_t off, int C) {
    char name[48];
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    static const unsigned flags[] = {FM_T_TRAIN, FM_T_TRAIN, 0, 0};
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s%s", prefix, names[k]);
        tensor(&t[k], name, flags[k], off + (size_t)k * (size_t)C, 1, C, 0, 0, 0);
    }
    snprintf(name, sizeof name, "%snum_batches_tracked", prefix);
    tensor(&t[4], name, FM_T_I64, off + 4 * (size_t)C, 0, 0, 0, 0, 0);
    return 5;
}
static void bn_init(float *p, size_t C) {
    bn_view b = bn_at(p, C);
    for (size_t c = 0; c < C; c++) b.gamma[c] = 1.0f, b.beta[c] = 0.0f, b.mean[c] = 0.0f, b.var[c] = 1.0f;
    *b.tracked = 0.0f;
}

/* Next layer after i that alone reads i's output (skipping eval identities
 * such as dropout, which must alone read theirs too), or -1: what a fused
 * step may swallow. */
static int sole_next(const fm_arch *a, int i) {
    for (;;) {
        if (a->layers[i].n_consumers != 1 || i + 1 >= a->n_layers) return -1;
        const fm_layer *N = &a->layers[i + 1];
        if (N->n_in != 1 || N->in[0] != i) return -1;
        if (!N->alias_eval) return i + 1;
        i++;
    }
}

/* Folds an eval-mode batch norm (tensors at bn) into the weights w [O, K]
 * and bias b [O] (NULL: zero) before it: w' = w s, b' = (b - mean) s + beta,
 * s = gamma / sqrt(var + eps), in double.  Not bit-identical to the
 * reference (which normalises after the convolution's sum): tested within
 * a tolerance. */
static void fold_bn(float *wf, float *bf, const float *w, const float *b, const float *bn, size_t O, size_t K,
                    float eps) {
    bn_view v = bn_at(bn, O);
    for (size_t o = 0; o < O; o++) {
        double s = (double)v.gamma[o] / sqrt((double)v.var[o] + (double)eps);
        for (size_t k = 0; k < K; k++) wf[o * K + k] = (float)((double)w[o * K + k] * s);
        bf[o] = (float)(((b ? (double)b[o] : 0.0) - (double)v.mean[o]) * s + (double)v.beta[o]);
    }
}

static float *slot_of(const fm_run *r, int s) { return s >= 0 ? r->slot[s] : (float *)r->x; }

/* ---- the default inference step: the reference forward in eval mode -------------- */

static void run_reference(const fm_step *s, const fm_run *r) {
    fm_lctx c = {.L = &s->L, .n = r->n, .train = 0, .y = slot_of(r, s->out), .p = s->p, .conv = r->conv,
                 .conv_chunk = r->conv_chunk, .gemm = r->gemm};
    for (int k = 0; k < s->n_in; k++) c.x[k] = slot_of(r, s->in[k]);
    fm_op_of(s->L.type)->forward(&c);
}

int fm_op_plan_reference(const fm_planner *pl, int i) {
    if (pl->a->layers[i].alias_eval) return i; /* nothing to run: the output is the input */
    return fm_plan_emit(pl->plan, pl->a, pl->slot, run_reference, i, i, pl->params) ? i : -1;
}

/* ---- linear ------------------------------------------------------------------- */

static const char *const linear_keys[] = {"out", "bias", NULL};

static int linear_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    if (get_int(o, "out", -1, 1, 65536, &L->units, why, n)) return -1;
    return get_bool(o, "bias", 1, &L->bias, why, n);
}

static int linear_json(const fm_layer *L, cJSON *o) {
    if (add_int(o, "out", L->units)) return -1;
    return L->bias ? 0 : cJSON_AddFalseToObject(o, "bias") ? 0 : -1;
}

static int linear_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2;
    if (!flat_in) return snprintf(why, n, "linear needs a flat input; add a flatten layer before it"), -1;
    L->out_c = L->units, L->out_h = L->out_w = 1;
    *flat_out = 1;
    return 0;
}

static int linear_tensors(const fm_layer *L, fm_tensor *t) {
    size_t nw = (size_t)L->units * (size_t)L->in_c;
    tensor(&t[0], "weight", FM_T_TRAIN | FM_T_DECAY, 0, 2, L->units, L->in_c, 0, 0);
    if (!L->bias) return 1;
    tensor(&t[1], "bias", FM_T_TRAIN, nw, 1, L->units, 0, 0, 0);
    return 2;
}

static size_t linear_macs(const fm_layer *L) { return (size_t)L->units * (size_t)L->in_c; }

static void linear_init(const fm_layer *L, float *p, fm_rng *rng) {
    glorot(weight_of(L, p), L->n_w, L->in_c, L->units, rng);
    if (L->n_b) memset(bias_of(L, p), 0, L->n_b * sizeof(float));
}

static void linear_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_linear_forward(c->y, c->x[0], weight_of(L, c->p), bias_of(L, c->p), c->n, (size_t)L->in_c, (size_t)L->units,
                      c->gemm);
}

static void linear_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_linear_backward(c->dx[0], weight_of(L, c->dp), bias_of(L, c->dp), c->dy, c->x[0], weight_of(L, c->p), c->n,
                       (size_t)L->in_c, (size_t)L->units, c->gemm);
}

static void run_linear(const fm_step *s, const fm_run *r) {
    const fm_layer *L = &s->L;
    fm_linear_forward_packed(slot_of(r, s->out), slot_of(r, s->in[0]), s->w, s->b, r->n, (size_t)L->in_c,
                             (size_t)L->units, r->gemm);
}

/* Weights packed once as GEMM operand B: bit-identical (fm_fast.h). */
static int linear_plan(const fm_planner *pl, int i) {
    const fm_layer *L = &pl->a->layers[i];
    fm_step *s = fm_plan_emit(pl->plan, pl->a, pl->slot, run_linear, i, i, pl->params);
    float *pw = s ? fm_plan_alloc(pl->plan, fm_linear_packed_size((size_t)L->units, (size_t)L->in_c)) : NULL;
    if (!pw) return -1;
    fm_linear_pack(pw, weight_of(L, s->p), (size_t)L->units, (size_t)L->in_c);
    s->w = pw;
    s->b = bias_of(L, s->p);
    return i;
}

/* ---- conv2d ------------------------------------------------------------------- */

static const char *const conv_keys[] = {"out", "kernel", "stride", "padding", "bias", NULL};

static int conv_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    if (get_int(o, "out", -1, 1, 65536, &L->units, why, n) || get_int(o, "kernel", 3, 1, 31, &L->kernel, why, n) ||
        get_int(o, "stride", 1, 1, 4, &L->stride, why, n) || get_bool(o, "bias", 1, &L->bias, why, n))
        return -1;
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(o, "padding");
    if (pad && !(cJSON_IsString(pad) && (strcmp(pad->valuestring, "valid") == 0 || strcmp(pad->valuestring, "same") == 0)))
        return snprintf(why, n, "\"padding\" must be \"valid\" or \"same\""), -1;
    L->same = pad && strcmp(pad->valuestring, "same") == 0;
    if (L->same && L->kernel % 2 == 0) return snprintf(why, n, "\"same\" padding needs an odd kernel"), -1;
    return 0;
}

static int conv_json(const fm_layer *L, cJSON *o) {
    if (add_int(o, "out", L->units) || add_int(o, "kernel", L->kernel)) return -1;
    if (L->stride != 1 && add_int(o, "stride", L->stride)) return -1;
    if (!cJSON_AddStringToObject(o, "padding", L->same ? "same" : "valid")) return -1;
    return L->bias ? 0 : cJSON_AddFalseToObject(o, "bias") ? 0 : -1;
}

static size_t conv_pad(const fm_layer *L) { return L->same ? (size_t)L->kernel / 2 : 0; }

static int conv_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2;
    if (flat_in) return snprintf(why, n, "conv2d needs an image input, not a flat vector"), -1;
    int p = (int)conv_pad(L);
    if (L->in_h + 2 * p < L->kernel || L->in_w + 2 * p < L->kernel)
        return snprintf(why, n, "%dx%d kernel does not fit a %dx%d input", L->kernel, L->kernel, L->in_h, L->in_w), -1;
    L->out_c = L->units;
    L->out_h = (int)fm_conv_out((size_t)L->in_h, (size_t)L->kernel, (size_t)L->stride, (size_t)p);
    L->out_w = (int)fm_conv_out((size_t)L->in_w, (size_t)L->kernel, (size_t)L->stride, (size_t)p);
    *flat_out = 0;
    return 0;
}

static int conv_tensors(const fm_layer *L, fm_tensor *t) {
    size_t nw = (size_t)L->units * (size_t)L->in_c * (size_t)L->kernel * (size_t)L->kernel;
    tensor(&t[0], "weight", FM_T_TRAIN | FM_T_DECAY, 0, 4, L->units, L->in_c, L->kernel, L->kernel);
    if (!L->bias) return 1;
    tensor(&t[1], "bias", FM_T_TRAIN, nw, 1, L->units, 0, 0, 0);
    return 2;
}

static size_t conv_macs(const fm_layer *L) { return L->n_w * (size_t)L->out_h * (size_t)L->out_w; }

static void conv_init(const fm_layer *L, float *p, fm_rng *rng) {
    double rf = (double)L->kernel * L->kernel;
    glorot(weight_of(L, p), L->n_w, (double)L->in_c * rf, (double)L->units * rf, rng);
    if (L->n_b) memset(bias_of(L, p), 0, L->n_b * sizeof(float));
}

/* Scratch for the reference kernels and the gathered (fast) ones alike. */
static size_t conv_scratch_of(size_t C, size_t O, size_t K, size_t H, size_t W, size_t S, size_t P, size_t chunk) {
    size_t ref = fm_conv2d_scratch(C, O, K, fm_conv_out(H, K, S, P), fm_conv_out(W, K, S, P), chunk);
    size_t fast = fm_conv2d_fast_scratch(C, O, K, H, W, S, P, chunk);
    return ref > fast ? ref : fast;
}

static size_t conv_scratch(const fm_layer *L, size_t chunk) {
    return conv_scratch_of((size_t)L->in_c, (size_t)L->units, (size_t)L->kernel, (size_t)L->in_h, (size_t)L->in_w,
                           (size_t)L->stride, conv_pad(L), chunk);
}

/* Training runs the gathered convolution (fm_fast.h): bit for bit the
 * reference kernels' results (tests/test_fast.c), without their im2col copies. */
static void conv_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_conv2d_forward_fast(c->y, c->x[0], weight_of(L, c->p), bias_of(L, c->p), c->n, (size_t)L->in_c,
                           (size_t)L->in_h, (size_t)L->in_w, (size_t)L->units, (size_t)L->kernel, (size_t)L->stride,
                           conv_pad(L), c->conv, c->conv_chunk, c->gemm);
}

static void conv_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_conv2d_backward_fast(c->dx[0], weight_of(L, c->dp), bias_of(L, c->dp), c->dy, c->x[0], weight_of(L, c->p),
                            c->n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w, (size_t)L->units,
                            (size_t)L->kernel, (size_t)L->stride, conv_pad(L), c->conv, c->conv_chunk, c->gemm);
}

/* The packed convolution, then its fused tail: without relu the bias goes
 * in with the convolution; with relu the convolution runs without it into
 * the mid slot and bias + relu (+ 2x2 max-pool) follow in one pass. */
static void run_conv(const fm_step *s, const fm_run *r) {
    const fm_layer *L = &s->L;
    size_t n = r->n, C = (size_t)L->in_c, H = (size_t)L->in_h, W = (size_t)L->in_w, O = (size_t)L->units;
    const float *x = slot_of(r, s->in[0]);
    float *out = slot_of(r, s->out);
    if (!s->relu) {
        fm_conv2d_forward_packed(out, x, s->w, s->b, n, C, H, W, O, (size_t)L->kernel, (size_t)L->stride, conv_pad(L),
                                 r->conv, r->conv_chunk, r->gemm);
        return;
    }
    float *t = slot_of(r, s->mid);
    fm_conv2d_forward_packed(t, x, s->w, NULL, n, C, H, W, O, (size_t)L->kernel, (size_t)L->stride, conv_pad(L),
                             r->conv, r->conv_chunk, r->gemm);
    if (s->pool)
        fm_maxpool2_bias_relu(out, t, s->b, n, O, (size_t)L->out_h, (size_t)L->out_w);
    else
        fm_bias_relu(out, t, s->b, n, O, (size_t)L->out_h * (size_t)L->out_w);
}

/* conv [+ batchnorm2d, folded] [+ relu [+ 2x2 maxpool]]: one step, the
 * weights packed once (folded with the batch norm first when there is one). */
static int conv_plan(const fm_planner *pl, int i) {
    const fm_arch *a = pl->a;
    const fm_layer *L = &a->layers[i];
    int last = i, bn = -1, relu = -1, pool = -1, j = sole_next(a, i);
    if (j >= 0 && a->layers[j].type == FM_BATCHNORM2D) bn = last = j, j = sole_next(a, j);
    if (j >= 0 && a->layers[j].type == FM_RELU) {
        relu = last = j;
        j = sole_next(a, j);
        if (j >= 0 && a->layers[j].type == FM_MAXPOOL2D && a->layers[j].kernel == 2) pool = last = j;
    }
    fm_step *s = fm_plan_emit(pl->plan, a, pl->slot, run_conv, i, last, pl->params);
    if (!s) return -1;
    size_t O = (size_t)L->units, K = (size_t)L->in_c * (size_t)L->kernel * (size_t)L->kernel;
    const float *w = weight_of(L, s->p), *b = bias_of(L, s->p);
    if (bn >= 0) {
        float *wf = fm_plan_alloc(pl->plan, O * K), *bf = fm_plan_alloc(pl->plan, O);
        if (!wf || !bf) return -1;
        fold_bn(wf, bf, w, b, pl->params + a->layers[bn].p_off, O, K, a->layers[bn].eps);
        w = wf, b = bf;
    }
    float *pw = fm_plan_alloc(pl->plan, fm_conv2d_packed_size(O, K, (size_t)L->out_h, (size_t)L->out_w));
    if (!pw) return -1;
    fm_conv2d_pack(pw, w, O, K, (size_t)L->out_h, (size_t)L->out_w);
    s->w = pw;
    s->b = b;
    s->relu = relu >= 0;
    s->pool = pool >= 0;
    s->mid = pl->slot[relu >= 0 ? relu : i]; /* the pre-pool result: in place of the relu's output */
    return last;
}

/* ---- maxpool2d / avgpool2d / global_avgpool -------------------------------------- */

static const char *const pool_keys[] = {"kernel", NULL};

static int pool_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    return get_int(o, "kernel", 2, 1, 15, &L->kernel, why, n); /* arg-max is a uint8_t */
}

static int pool_json(const fm_layer *L, cJSON *o) { return add_int(o, "kernel", L->kernel); }

static int pool_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2;
    const char *what = L->type == FM_MAXPOOL2D ? "maxpool2d" : "avgpool2d";
    if (flat_in) return snprintf(why, n, "%s needs an image input", what), -1;
    if (L->in_h / L->kernel < 1 || L->in_w / L->kernel < 1)
        return snprintf(why, n, "%dx%d pooling does not fit a %dx%d input", L->kernel, L->kernel, L->in_h, L->in_w), -1;
    L->out_c = L->in_c, L->out_h = L->in_h / L->kernel, L->out_w = L->in_w / L->kernel;
    *flat_out = 0;
    return 0;
}

static size_t out_bytes(const fm_layer *L) { return L->out_size; }

static void maxpool_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_maxpool_forward(c->y, c->mask, c->x[0], c->n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w,
                       (size_t)L->kernel);
}

static void maxpool_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    if (c->dx[0])
        fm_maxpool_backward(c->dx[0], c->dy, c->mask, c->n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w,
                            (size_t)L->kernel);
}

static void avgpool_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_avgpool_forward(c->y, c->x[0], c->n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w, (size_t)L->kernel);
}

static void avgpool_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    if (c->dx[0])
        fm_avgpool_backward(c->dx[0], c->dy, c->n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w,
                            (size_t)L->kernel);
}

static int gap_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2;
    if (flat_in) return snprintf(why, n, "global_avgpool needs an image input"), -1;
    L->out_c = L->in_c, L->out_h = L->out_w = 1;
    *flat_out = 1; /* PyTorch: AdaptiveAvgPool2d(1) then Flatten */
    return 0;
}

static void gap_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    fm_gap_forward(c->y, c->x[0], c->n, (size_t)L->in_c, (size_t)L->in_h * (size_t)L->in_w);
}

static void gap_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    if (c->dx[0]) fm_gap_backward(c->dx[0], c->dy, c->n, (size_t)L->in_c, (size_t)L->in_h * (size_t)L->in_w);
}

/* ---- relu, dropout, flatten --------------------------------------------------------- */

static int same_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2, (void)why, (void)n;
    L->out_c = L->in_c, L->out_h = L->in_h, L->out_w = L->in_w;
    *flat_out = flat_in;
    return 0;
}

static void relu_forward(const fm_lctx *c) { fm_relu_forward(c->y, c->x[0], c->n * c->L->out_size); }

static void relu_backward(const fm_lctx *c) {
    if (c->dx[0]) fm_relu_backward(c->dx[0], c->dy, c->y, c->n * c->L->out_size);
}

static const char *const dropout_keys[] = {"p", NULL};

static int dropout_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "p");
    if (!cJSON_IsNumber(p) || !(p->valuedouble >= 0.0 && p->valuedouble < 1.0))
        return snprintf(why, n, "dropout needs \"p\" in [0, 1)"), -1;
    L->rate = (float)p->valuedouble;
    return 0;
}

static int dropout_json(const fm_layer *L, cJSON *o) { return add_float(o, "p", L->rate); }

static void copy_forward(const fm_lctx *c) {
    if (c->y != c->x[0]) memcpy(c->y, c->x[0], c->n * c->L->out_size * sizeof(float));
}

static void copy_backward(const fm_lctx *c) {
    if (c->dx[0] && c->dx[0] != c->dy) memcpy(c->dx[0], c->dy, c->n * c->L->in_size * sizeof(float));
}

static void dropout_forward(const fm_lctx *c) {
    if (c->train && c->L->rate > 0.0f)
        fm_dropout_forward(c->y, c->mask, c->x[0], c->n * c->L->out_size, c->L->rate, c->rng);
    else
        copy_forward(c); /* identity in eval mode */
}

static void dropout_backward(const fm_lctx *c) {
    if (c->train && c->L->rate > 0.0f) {
        if (c->dx[0]) fm_dropout_backward(c->dx[0], c->dy, c->mask, c->n * c->L->out_size, c->L->rate);
    } else {
        copy_backward(c);
    }
}

static int flatten_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    (void)in2, (void)flat_in, (void)why, (void)n;
    L->out_c = L->in_c * L->in_h * L->in_w, L->out_h = L->out_w = 1;
    *flat_out = 1;
    return 0;
}

/* ---- batchnorm2d / batchnorm1d ----------------------------------------------------- */

static const char *const bn_keys[] = {"momentum", "eps", NULL};

static int bn_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    if (get_float(o, "momentum", 0.1f, 0.0, 1.0, 0, &L->momentum, why, n)) return -1;
    return get_float(o, "eps", 1e-5f, 0.0, 1.0, 1, &L->eps, why, n);
}

static int bn_json(const fm_layer *L, cJSON *o) {
    if (L->momentum != 0.1f && add_float(o, "momentum", L->momentum)) return -1;
    return L->eps != 1e-5f ? add_float(o, "eps", L->eps) : 0;
}

static int bn_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    if (L->type == FM_BATCHNORM2D && flat_in)
        return snprintf(why, n, "batchnorm2d needs an image input (use batchnorm1d on a flat vector)"), -1;
    if (L->type == FM_BATCHNORM1D && !flat_in)
        return snprintf(why, n, "batchnorm1d needs a flat vector (use batchnorm2d on an image)"), -1;
    return same_shape(L, in2, flat_in, flat_out, why, n);
}

static int bn_layer_tensors(const fm_layer *L, fm_tensor *t) { return bn_tensors(t, "", 0, L->in_c); }
static void bn_layer_init(const fm_layer *L, float *p, fm_rng *rng) {
    (void)rng;
    bn_init(p, (size_t)L->in_c);
}
static size_t bn_stats(const fm_layer *L) { return 3 * (size_t)L->out_c; }
static size_t plane(const fm_layer *L) { return (size_t)L->in_h * (size_t)L->in_w; }

static void bn_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    size_t C = (size_t)L->in_c;
    bn_view v = bn_at(c->p, C);
    if (c->train)
        fm_batchnorm_forward_train(c->y, c->stats, c->x[0], v.gamma, v.beta, c->n, C, plane(L), L->eps);
    else
        fm_batchnorm_forward_eval(c->y, c->x[0], v.gamma, v.beta, v.mean, v.var, c->n, C, plane(L), L->eps);
}

static void bn_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    size_t C = (size_t)L->in_c;
    bn_view v = bn_at(c->p, C), d = bn_at(c->dp, C);
    if (c->train)
        fm_batchnorm_backward_train(c->dx[0], d.gamma, d.beta, c->dy, c->x[0], c->stats, v.gamma, c->n, C, plane(L));
    else
        fm_batchnorm_backward_eval(c->dx[0], d.gamma, d.beta, c->dy, c->x[0], v.gamma, v.mean, v.var, c->n, C,
                                   plane(L), L->eps);
}

static void bn_update(const fm_layer *L, float *p, const float *const *stats, size_t n_sets) {
    bn_view v = bn_at(p, (size_t)L->in_c);
    fm_batchnorm_update(v.mean, v.var, v.tracked, stats, n_sets, (size_t)L->in_c, L->momentum);
}

/* ---- add (with a 1x1 strided projection of the second input) ------------------------ */

static const char *const add_keys[] = {"projection", NULL};

static int add_parse(fm_layer *L, const cJSON *o, char *why, size_t n) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "projection");
    L->proj = FM_PROJ_CONV_BN; /* used only when the shapes differ */
    L->momentum = 0.1f, L->eps = 1e-5f; /* its batch norm's: PyTorch's defaults */
    if (!p) return 0;
    if (cJSON_IsString(p) && strcmp(p->valuestring, "conv_bn") == 0) return 0;
    if (cJSON_IsString(p) && strcmp(p->valuestring, "conv") == 0) return L->proj = FM_PROJ_CONV, 0;
    return snprintf(why, n, "\"projection\" must be \"conv_bn\" (1x1 conv + batch norm) or \"conv\" (1x1 conv with bias)"),
           -1;
}

static int add_json(const fm_layer *L, cJSON *o) {
    return L->proj == FM_PROJ_CONV ? cJSON_AddStringToObject(o, "projection", "conv") ? 0 : -1 : 0;
}

static int add_shape(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t n) {
    L->out_c = L->in_c, L->out_h = L->in_h, L->out_w = L->in_w;
    *flat_out = flat_in;
    if (in2[0] == L->in_c && in2[1] == L->in_h && in2[2] == L->in_w) {
        if (L->proj == FM_PROJ_CONV) /* kept only while it means something */
            return snprintf(why, n, "\"projection\" given, but both inputs are %dx%dx%d", L->in_c, L->in_h, L->in_w), -1;
        L->proj = FM_PROJ_NONE;
        L->stride = 1;
        return 0;
    }
    /* a 1x1 convolution with stride s maps in2's H to (H - 1) / s + 1 */
    for (int s = 1; s <= 4 && !flat_in; s++)
        if ((in2[1] - 1) / s + 1 == L->in_h && (in2[2] - 1) / s + 1 == L->in_w) {
            L->stride = s;
            return 0;
        }
    return snprintf(why, n, "inputs of %dx%dx%d and %dx%dx%d: no 1x1 projection with stride 1-4 maps the second to the first",
                    L->in_c, L->in_h, L->in_w, in2[0], in2[1], in2[2]),
           -1;
}

/* Tensors: proj.0.weight (the 1x1 conv) then proj.1.* (its batch norm), as
 * nn.Sequential(Conv2d(bias=False), BatchNorm2d); or proj.weight/proj.bias. */
static int add_tensors(const fm_layer *L, fm_tensor *t) {
    int C = L->out_c, C2 = L->in2_c;
    size_t nw = (size_t)C * (size_t)C2;
    switch (L->proj) {
    case FM_PROJ_NONE: return 0;
    case FM_PROJ_CONV:
        tensor(&t[0], "proj.weight", FM_T_TRAIN | FM_T_DECAY, 0, 4, C, C2, 1, 1);
        tensor(&t[1], "proj.bias", FM_T_TRAIN, nw, 1, C, 0, 0, 0);
        return 2;
    case FM_PROJ_CONV_BN:
        tensor(&t[0], "proj.0.weight", FM_T_TRAIN | FM_T_DECAY, 0, 4, C, C2, 1, 1);
        return 1 + bn_tensors(t + 1, "proj.1.", nw, C);
    }
    return 0;
}

static size_t add_proj_w(const fm_layer *L) { return (size_t)L->out_c * (size_t)L->in2_c; }

static size_t add_macs(const fm_layer *L) {
    return L->proj == FM_PROJ_NONE ? 0 : add_proj_w(L) * (size_t)L->out_h * (size_t)L->out_w;
}

static void add_init(const fm_layer *L, float *p, fm_rng *rng) {
    if (L->proj == FM_PROJ_NONE) return;
    size_t nw = add_proj_w(L);
    glorot(p, nw, (double)L->in2_c, (double)L->out_c, rng);
    if (L->proj == FM_PROJ_CONV)
        memset(p + nw, 0, (size_t)L->out_c * sizeof(float));
    else
        bn_init(p + nw, (size_t)L->out_c);
}

static size_t add_save(const fm_layer *L) { return L->proj == FM_PROJ_CONV_BN ? 2 * L->out_size : 0; }
static size_t add_stats(const fm_layer *L) { return L->proj == FM_PROJ_CONV_BN ? 3 * (size_t)L->out_c : 0; }
static size_t add_scratch(const fm_layer *L, size_t chunk) {
    return L->proj == FM_PROJ_NONE ? 0
                                   : conv_scratch_of((size_t)L->in2_c, (size_t)L->out_c, 1, (size_t)L->in2_h,
                                                     (size_t)L->in2_w, (size_t)L->stride, 0, chunk);
}

/* The projection's convolution: y[n, C, out plane] = w[C, C2] x1 (strided), + bias when given. */
static void add_proj_conv(const fm_lctx *c, float *y, const float *w, const float *b) {
    const fm_layer *L = c->L;
    fm_conv2d_forward_fast(y, c->x[1], w, b, c->n, (size_t)L->in2_c, (size_t)L->in2_h, (size_t)L->in2_w,
                           (size_t)L->out_c, 1, (size_t)L->stride, 0, c->conv, c->conv_chunk, c->gemm);
}

static void add_forward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    size_t n = c->n, C = (size_t)L->out_c, total = n * L->out_size, HW = (size_t)L->out_h * (size_t)L->out_w;
    if (L->proj == FM_PROJ_NONE) {
        fm_add_forward(c->y, c->x[0], c->x[1], total);
        return;
    }
    const float *w = c->p, *rest = c->p + add_proj_w(L);
    if (L->proj == FM_PROJ_CONV) {
        add_proj_conv(c, c->y, w, rest);
    } else {
        /* save[0, total): the projection's convolution, its batch norm's input */
        float *t = c->save ? c->save : c->y;
        add_proj_conv(c, t, w, NULL);
        bn_view v = bn_at(rest, C);
        if (c->train)
            fm_batchnorm_forward_train(c->y, c->stats, t, v.gamma, v.beta, n, C, HW, L->eps);
        else
            fm_batchnorm_forward_eval(c->y, t, v.gamma, v.beta, v.mean, v.var, n, C, HW, L->eps);
    }
    fm_accumulate(c->y, c->x[0], total); /* y = proj(x1) + x0: addition commutes, so x0 + proj(x1) */
}

static void add_backward(const fm_lctx *c) {
    const fm_layer *L = c->L;
    size_t n = c->n, C = (size_t)L->out_c, total = n * L->out_size, HW = (size_t)L->out_h * (size_t)L->out_w;
    if (c->dx[0] && c->dx[0] != c->dy) memcpy(c->dx[0], c->dy, total * sizeof(float));
    if (L->proj == FM_PROJ_NONE) {
        if (c->dx[1] && c->dx[1] != c->dy) memcpy(c->dx[1], c->dy, total * sizeof(float));
        return;
    }
    float *drest = c->dp ? c->dp + add_proj_w(L) : NULL;
    const float *dconv = c->dy;
    if (L->proj == FM_PROJ_CONV_BN) {
        bn_view v = bn_at(c->p + add_proj_w(L), C), d = bn_at(drest, C);
        float *t = c->save, *dt = c->save + total;
        if (c->train)
            fm_batchnorm_backward_train(dt, d.gamma, d.beta, c->dy, t, c->stats, v.gamma, n, C, HW);
        else
            fm_batchnorm_backward_eval(dt, d.gamma, d.beta, c->dy, t, v.gamma, v.mean, v.var, n, C, HW, L->eps);
        dconv = dt;
        drest = NULL; /* the convolution has no bias */
    }
    fm_conv2d_backward_fast(c->dx[1], c->dp, drest, dconv, c->x[1], c->p, n, (size_t)L->in2_c, (size_t)L->in2_h,
                            (size_t)L->in2_w, C, 1, (size_t)L->stride, 0, c->conv, c->conv_chunk, c->gemm);
}

static void add_update(const fm_layer *L, float *p, const float *const *stats, size_t n_sets) {
    if (L->proj != FM_PROJ_CONV_BN) return;
    bn_view v = bn_at(p + add_proj_w(L), (size_t)L->out_c);
    fm_batchnorm_update(v.mean, v.var, v.tracked, stats, n_sets, (size_t)L->out_c, L->momentum);
}

/* x0 + x1 (+ relu), or x0 + proj(x1) with the projection's batch norm folded
 * into its packed 1x1 convolution (+ relu): one step. */
static void run_add(const fm_step *s, const fm_run *r) {
    const fm_layer *L = &s->L;
    size_t total = r->n * L->out_size;
    float *y = slot_of(r, s->out);
    const float *x0 = slot_of(r, s->in[0]), *x1 = slot_of(r, s->in[1]);
    if (L->proj == FM_PROJ_NONE) {
        fm_add_forward(y, x0, x1, total);
    } else {
        fm_conv2d_forward_packed(y, x1, s->w, s->b, r->n, (size_t)L->in2_c, (size_t)L->in2_h, (size_t)L->in2_w,
                                 (size_t)L->out_c, 1, (size_t)L->stride, 0, r->conv, r->conv_chunk, r->gemm);
        fm_accumulate(y, x0, total);
    }
    if (s->relu) fm_relu_forward(y, y, total);
}

static int add_plan(const fm_planner *pl, int i) {
    const fm_arch *a = pl->a;
    const fm_layer *L = &a->layers[i];
    int last = i, j = sole_next(a, i);
    if (j >= 0 && a->layers[j].type == FM_RELU) last = j;
    fm_step *s = fm_plan_emit(pl->plan, a, pl->slot, run_add, i, last, pl->params);
    if (!s) return -1;
    s->relu = last != i;
    if (L->proj == FM_PROJ_NONE) return last;
    size_t O = (size_t)L->out_c, K = (size_t)L->in2_c;
    const float *w = s->p, *b = s->p + O * K;
    if (L->proj == FM_PROJ_CONV_BN) {
        float *wf = fm_plan_alloc(pl->plan, O * K), *bf = fm_plan_alloc(pl->plan, O);
        if (!wf || !bf) return -1;
        fold_bn(wf, bf, w, NULL, b, O, K, L->eps);
        w = wf, b = bf;
    }
    float *pw = fm_plan_alloc(pl->plan, fm_conv2d_packed_size(O, K, (size_t)L->out_h, (size_t)L->out_w));
    if (!pw) return -1;
    fm_conv2d_pack(pw, w, O, K, (size_t)L->out_h, (size_t)L->out_w);
    s->w = pw;
    s->b = b;
    return last;
}

/* ---- the table ---------------------------------------------------------------------- */

static const fm_op ops[FM_N_LTYPES] = {
    [FM_LINEAR] = {.name = "linear", .torch = "Linear", .n_in = 1, .keys = linear_keys, .parse = linear_parse,
                   .to_json = linear_json, .shape = linear_shape, .tensors = linear_tensors, .macs = linear_macs,
                   .init = linear_init, .forward = linear_forward, .backward = linear_backward, .plan = linear_plan},
    [FM_CONV2D] = {.name = "conv2d", .torch = "Conv2d", .n_in = 1, .keys = conv_keys, .parse = conv_parse,
                   .to_json = conv_json, .shape = conv_shape, .tensors = conv_tensors, .macs = conv_macs,
                   .init = conv_init, .conv_scratch = conv_scratch, .forward = conv_forward,
                   .backward = conv_backward, .plan = conv_plan},
    [FM_MAXPOOL2D] = {.name = "maxpool2d", .torch = "MaxPool2d", .n_in = 1, .keys = pool_keys, .parse = pool_parse,
                      .to_json = pool_json, .shape = pool_shape, .save_bytes = out_bytes, .forward = maxpool_forward,
                      .backward = maxpool_backward},
    [FM_RELU] = {.name = "relu", .torch = "ReLU", .n_in = 1, .shape = same_shape, .forward = relu_forward,
                 .backward = relu_backward, .in_place = 1},
    [FM_DROPOUT] = {.name = "dropout", .torch = "Dropout", .n_in = 1, .keys = dropout_keys, .parse = dropout_parse,
                    .to_json = dropout_json, .shape = same_shape, .save_bytes = out_bytes,
                    .forward = dropout_forward, .backward = dropout_backward, .alias_eval = 1},
    [FM_FLATTEN] = {.name = "flatten", .torch = "Flatten", .n_in = 1, .shape = flatten_shape, .forward = copy_forward,
                    .backward = copy_backward, .alias_eval = 1},
    [FM_BATCHNORM2D] = {.name = "batchnorm2d", .torch = "BatchNorm2d", .n_in = 1, .keys = bn_keys, .parse = bn_parse,
                        .to_json = bn_json, .shape = bn_shape, .tensors = bn_layer_tensors, .init = bn_layer_init,
                        .stat_floats = bn_stats, .forward = bn_forward, .backward = bn_backward, .update = bn_update,
                        .in_place = 1},
    [FM_BATCHNORM1D] = {.name = "batchnorm1d", .torch = "BatchNorm1d", .n_in = 1, .keys = bn_keys, .parse = bn_parse,
                        .to_json = bn_json, .shape = bn_shape, .tensors = bn_layer_tensors, .init = bn_layer_init,
                        .stat_floats = bn_stats, .forward = bn_forward, .backward = bn_backward, .update = bn_update,
                        .in_place = 1},
    [FM_AVGPOOL2D] = {.name = "avgpool2d", .torch = "AvgPool2d", .n_in = 1, .keys = pool_keys, .parse = pool_parse,
                      .to_json = pool_json, .shape = pool_shape, .forward = avgpool_forward,
                      .backward = avgpool_backward},
    [FM_GLOBAL_AVGPOOL] = {.name = "global_avgpool", .torch = "AdaptiveAvgPool2d", .n_in = 1, .shape = gap_shape,
                           .forward = gap_forward, .backward = gap_backward},
    [FM_ADD] = {.name = "add", .torch = "Add", .n_in = 2, .keys = add_keys, .parse = add_parse, .to_json = add_json,
                .shape = add_shape, .tensors = add_tensors, .macs = add_macs, .init = add_init,
                .save_floats = add_save, .stat_floats = add_stats, .conv_scratch = add_scratch,
                .forward = add_forward, .backward = add_backward, .update = add_update, .plan = add_plan},
};

const fm_op *fm_op_of(fm_ltype t) { return &ops[t]; }

int fm_op_find(const char *name) {
    for (int t = 0; t < FM_N_LTYPES; t++)
        if (strcmp(ops[t].name, name) == 0) return t;
    return -1;
}

void fm_op_names(char *buf, size_t n) {
    size_t o = 0;
    buf[0] = '\0';
    for (int t = 0; t < FM_N_LTYPES && o < n; t++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", t ? ", " : "", ops[t].name);
}
