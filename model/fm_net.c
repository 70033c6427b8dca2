/* fm_net.c - workspaces, the reference forward and backward passes over
 * the layer graph, and the plan builder.  Every layer is run through its
 * row of the descriptor table (fm_ops.h): nothing here knows a layer type.
 *
 * Training keeps each layer's output (the input of a later backward) and
 * a gradient buffer per layer; a value read by several layers (a residual
 * block's input) gets the first gradient written in place and the others
 * added to it, in a fixed order, so results stay bit-reproducible. */
#include "fm_net.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_augment.h"
#include "fm_gemm.h"
#include "fm_layers.h"
#include "fm_ops.h"

enum { TRAIN_CHUNK = 16, INFER_CHUNK = 4 };

static size_t align16(size_t nfloats) { return (nfloats + 15) & ~(size_t)15; }
static size_t in_size_of(const fm_arch *a) { return (size_t)a->in_c * a->in_h * a->in_w; }

int fm_ws_create(fm_ws *ws, const fm_arch *a, size_t max_batch, int train, fm_error *err) {
    memset(ws, 0, sizeof *ws);
    if (max_batch == 0 || max_batch > 65536) return fm_seterr(err, "batch size must be in [1, 65536]");
    size_t chunk_cap = train ? TRAIN_CHUNK : INFER_CHUNK;
    size_t chunk = max_batch < chunk_cap ? max_batch : chunk_cap;
    size_t conv = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_op *op = fm_op_of(a->layers[i].type);
        size_t s = op->conv_scratch ? op->conv_scratch(&a->layers[i], chunk) : 0;
        if (s > conv) conv = s;
    }
    size_t B = max_batch, act = align16(B * a->max_size);
    /* one block: floats first (16-float aligned pieces), then the byte masks */
    size_t nf = align16(conv) + align16(FM_GEMM_SCRATCH) + align16(B * FM_N_CLASSES), nbytes = 0;
    if (train) {
        nf += 2 * act + align16(B * in_size_of(a));
        for (int i = 0; i < a->n_layers; i++) {
            const fm_layer *L = &a->layers[i];
            const fm_op *op = fm_op_of(L->type);
            if (L->type != FM_FLATTEN) nf += align16(B * L->out_size);
            nf += align16(B * L->out_size);
            if (op->save_floats) nf += align16(B * op->save_floats(L));
            if (op->stat_floats) nf += align16(op->stat_floats(L));
            if (op->save_bytes) nbytes += align16(B * op->save_bytes(L));
        }
    } else {
        ws->n_slots = fm_plan_slots(a, ws->slot_of);
        nf += (size_t)ws->n_slots * act + align16(B * in_size_of(a)) + align16(B * FM_N_CLASSES);
    }
    char *block = malloc(nf * sizeof(float) + (nbytes ? nbytes : 1));
    if (!block) return fm_seterr(err, "out of memory allocating a workspace for batch %zu", max_batch);
    float *f = (float *)block;
    uint8_t *m = (uint8_t *)(f + nf);
    ws->block = block;
    ws->max_batch = max_batch;
    ws->train = train;
    ws->conv_chunk = chunk;
    ws->conv = f, f += align16(conv);
    ws->gemm = f, f += align16(FM_GEMM_SCRATCH);
    ws->probs = f, f += align16(B * FM_N_CLASSES);
    if (!train) {
        for (int s = 0; s < ws->n_slots; s++) ws->slots[s] = f, f += act;
        ws->aux = f; /* a mirrored input, then its logits */
        return 0;
    }
    ws->gtmp = f, f += 2 * act;
    ws->dinput = f, f += align16(B * in_size_of(a));
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        const fm_op *op = fm_op_of(L->type);
        if (L->type == FM_FLATTEN) /* the same numbers: its input's buffer */
            ws->act[i] = L->in[0] >= 0 ? ws->act[L->in[0]] : NULL;
        else
            ws->act[i] = f, f += align16(B * L->out_size);
        ws->grad[i] = f, f += align16(B * L->out_size);
        if (op->save_floats) ws->save[i] = f, f += align16(B * op->save_floats(L));
        if (op->stat_floats) ws->stats[i] = f, f += align16(op->stat_floats(L));
        if (op->save_bytes) ws->mask[i] = m, m += align16(B * op->save_bytes(L));
    }
    return 0;
}

void fm_ws_destroy(fm_ws *ws) {
    free(ws->block);
    memset(ws, 0, sizeof *ws);
}

/* The context of layer i's forward in a training workspace. */
static fm_lctx train_ctx(const fm_arch *a, const float *params, fm_ws *ws, const float *x, int i, size_t n) {
    const fm_layer *L = &a->layers[i];
    fm_lctx c = {.L = L, .n = n, .train = ws->mode, .p = params + L->p_off, .save = ws->save[i], .mask = ws->mask[i],
                 .stats = ws->stats[i], .conv = ws->conv, .conv_chunk = ws->conv_chunk, .gemm = ws->gemm};
    c.y = ws->act[i] ? ws->act[i] : (float *)x; /* a flatten of the input is the input */
    for (int k = 0; k < L->n_in; k++) c.x[k] = L->in[k] >= 0 && ws->act[L->in[k]] ? ws->act[L->in[k]] : x;
    return c;
}

/* Reference eval forward in an inference workspace: layer by layer, in slots. */
static const float *forward_slots(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n) {
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->alias_eval) continue; /* its slot is its input's */
        fm_lctx c = {.L = L, .n = n, .train = 0, .p = params + L->p_off, .conv = ws->conv,
                     .conv_chunk = ws->conv_chunk, .gemm = ws->gemm};
        c.y = ws->slots[ws->slot_of[i]];
        for (int k = 0; k < L->n_in; k++) {
            int src = L->in[k], s = src >= 0 ? ws->slot_of[src] : FM_SLOT_INPUT;
            c.x[k] = s >= 0 ? ws->slots[s] : x;
        }
        fm_op_of(L->type)->forward(&c);
    }
    int s = ws->slot_of[a->n_layers - 1];
    return s >= 0 ? ws->slots[s] : x;
}

const float *fm_forward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, int train,
                        fm_rng *rng) {
    if (!ws->train) return forward_slots(a, params, ws, x, n);
    ws->mode = train != 0;
    for (int i = 0; i < a->n_layers; i++) {
        fm_lctx c = train_ctx(a, params, ws, x, i, n);
        c.rng = rng;
        fm_op_of(a->layers[i].type)->forward(&c);
    }
    const float *y = ws->act[a->n_layers - 1];
    return y ? y : x;
}

void fm_backward_input(const fm_arch *a, const float *params, fm_ws *ws, const float *x, const float *dlogits,
                       size_t n, float *grads, float *dinput) {
    int written[FM_MAX_LAYERS] = {0}, input_written = 0;
    int last = a->n_layers - 1;
    for (int i = last; i >= 0; i--) {
        const fm_layer *L = &a->layers[i];
        if (i != last && !written[i]) continue; /* no gradient reached it */
        fm_lctx c = train_ctx(a, params, ws, x, i, n);
        c.dy = i == last ? dlogits : ws->grad[i];
        c.dp = grads ? grads + L->p_off : NULL; /* NULL: the input's gradient alone */
        /* each input's gradient: written in place by its first reader
         * (in backward order), into a temporary and added by the others */
        float *add_to[FM_MAX_INPUTS] = {NULL};
        for (int k = 0; k < L->n_in; k++) {
            int src = L->in[k];
            float *dst = src >= 0 ? ws->grad[src] : dinput;
            int *w = src >= 0 ? &written[src] : &input_written;
            if (!dst) {
                c.dx[k] = NULL;
            } else if (!*w) {
                c.dx[k] = dst;
                *w = 1;
            } else {
                c.dx[k] = ws->gtmp + (size_t)k * align16(ws->max_batch * a->max_size);
                add_to[k] = dst;
            }
        }
        fm_op_of(L->type)->backward(&c);
        for (int k = 0; k < L->n_in; k++) {
            if (!add_to[k]) continue;
            size_t sz = L->in[k] >= 0 ? a->layers[L->in[k]].out_size : in_size_of(a);
            fm_accumulate(add_to[k], c.dx[k], n * sz);
        }
    }
    if (dinput && !input_written) memset(dinput, 0, n * in_size_of(a) * sizeof(float));
}

void fm_backward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, const float *dlogits, size_t n,
                 float *grads) {
    fm_backward_input(a, params, ws, x, dlogits, n, grads, NULL);
}

void fm_update_stats(const fm_arch *a, float *params, fm_ws *const *ws, size_t n_ws) {
    const float *sets[256];
    if (n_ws > 256) n_ws = 256;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        const fm_op *op = fm_op_of(L->type);
        if (!op->update || !ws[0]->stats[i]) continue;
        for (size_t t = 0; t < n_ws; t++) sets[t] = ws[t]->stats[i];
        op->update(L, params + L->p_off, sets, n_ws);
    }
}

void fm_predict(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, float *probs) {
    size_t in = in_size_of(a);
    for (size_t i = 0; i < n; i += ws->max_batch) {
        size_t nb = n - i < ws->max_batch ? n - i : ws->max_batch;
        const float *logits = fm_forward(a, params, ws, x + i * in, nb, 0, NULL);
        fm_softmax(probs + i * FM_N_CLASSES, logits, nb, FM_N_CLASSES);
    }
}

/* ---- the plan ---------------------------------------------------------------------- */

static int read_serving(fm_model *m, fm_error *err);

int fm_model_pack(fm_model *m, fm_error *err) {
    const fm_arch *a = &m->arch;
    if (read_serving(m, err)) return -1;
    fm_plan *p = calloc(1, sizeof *p);
    int slot[FM_MAX_LAYERS];
    if (!p) return fm_seterr(err, "out of memory planning %s", a->name);
    fm_plan_slots(a, slot);
    fm_planner pl = {.plan = p, .a = a, .slot = slot, .params = m->params};
    for (int i = 0; i < a->n_layers;) {
        const fm_op *op = fm_op_of(a->layers[i].type);
        int last = op->plan ? op->plan(&pl, i) : fm_op_plan_reference(&pl, i);
        if (last < i) {
            fm_plan_free(p);
            free(p);
            return fm_seterr(err, "out of memory preparing the weights of %s", a->name);
        }
        i = last + 1;
    }
    p->out_slot = slot[a->n_layers - 1];
    if (m->plan) {
        fm_plan_free(m->plan);
        free(m->plan);
    }
    m->plan = p;
    return 0;
}

const float *fm_model_forward(const fm_model *m, fm_ws *ws, const float *x, size_t n) {
    if (!m->plan || ws->train) return fm_forward(&m->arch, m->params, ws, x, n, 0, NULL);
    fm_run r = {.n = n, .x = x, .slot = ws->slots, .conv = ws->conv, .conv_chunk = ws->conv_chunk, .gemm = ws->gemm};
    return fm_plan_run(m->plan, &r);
}

/* Where the features (the last layer's input) of the last forward are, in
 * an inference workspace that ran the plan or the reference. */
static const float *features_of(const fm_model *m, const fm_ws *ws, const float *x) {
    int src = m->arch.layers[m->arch.n_layers - 1].in[0];
    int s = src >= 0 ? ws->slot_of[src] : FM_SLOT_INPUT;
    return s >= 0 ? ws->slots[s] : x;
}

float fm_ood_score(const fm_ood *o, const float *f) {
    double norm = 0.0, best = INFINITY;
    for (size_t i = 0; i < o->dim; i++) norm += (double)f[i] * f[i];
    norm = norm > 0 ? 1.0 / sqrt(norm) : 0.0;
    for (int c = 0; c < FM_N_CLASSES; c++) {
        /* |L^T (f/|f| - mu_c)|^2 = (f - mu)^T P (f - mu) */
        const float *mu = o->means + (size_t)c * o->dim;
        double d2 = 0.0;
        for (size_t j = 0; j < o->dim; j++) {
            double t = 0.0;
            for (size_t i = j; i < o->dim; i++) t += (double)o->chol[i * o->dim + j] * (f[i] * norm - mu[i]);
            d2 += t * t;
        }
        if (d2 < best) best = d2;
    }
    return (float)best;
}

void fm_model_features(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *out) {
    int src = m->arch.layers[m->arch.n_layers - 1].in[0];
    size_t F = src >= 0 ? m->arch.layers[src].out_size : in_size_of(&m->arch);
    fm_model_forward(m, ws, x, n);
    memcpy(out, features_of(m, ws, x), n * F * sizeof *out);
}

void fm_model_logits(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *logits) {
    fm_model_logits_scores(m, ws, x, n, logits, NULL);
}

void fm_model_logits_scores(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *logits, float *scores) {
    const fm_arch *a = &m->arch;
    size_t in = in_size_of(a);
    for (size_t i = 0; i < n; i += ws->max_batch) {
        size_t nb = n - i < ws->max_batch ? n - i : ws->max_batch;
        float *z = logits + i * FM_N_CLASSES;
        memcpy(z, fm_model_forward(m, ws, x + i * in, nb), nb * FM_N_CLASSES * sizeof *z);
        if (scores) {
            const float *f = features_of(m, ws, x + i * in);
            for (size_t e = 0; e < nb; e++) scores[i + e] = m->ood ? fm_ood_score(m->ood, f + e * m->ood->dim) : 0.0f;
        }
        if (!m->tta || !ws->aux) continue;
        float *flip = ws->aux;
        for (size_t e = 0; e < nb; e++)
            fm_aug_hflip(flip + e * in, x + (i + e) * in, (size_t)a->in_c, (size_t)a->in_h, (size_t)a->in_w);
        const float *z2 = fm_model_forward(m, ws, flip, nb);
        for (size_t k = 0; k < nb * FM_N_CLASSES; k++) z[k] = 0.5f * (z[k] + z2[k]);
    }
}

void fm_model_softmax(const fm_model *m, const float *logits, size_t n, float *probs) {
    float t = m->temperature > 0.0f ? m->temperature : 1.0f;
    if (t == 1.0f) {
        fm_softmax(probs, logits, n, FM_N_CLASSES);
        return;
    }
    for (size_t i = 0; i < n * FM_N_CLASSES; i++) probs[i] = logits[i] / t;
    fm_softmax(probs, probs, n, FM_N_CLASSES);
}

void fm_model_predict(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *probs) {
    fm_model_logits(m, ws, x, n, probs);
    fm_model_softmax(m, probs, n, probs);
}

int fm_model_uncertain(const fm_model *m, const float *probs, float score) {
    float top = probs[0];
    for (int k = 1; k < FM_N_CLASSES; k++) top = probs[k] > top ? probs[k] : top;
    return top < m->uncertain_below || (m->ood && score > m->ood->max_distance);
}

void fm_ood_free(fm_ood *o) {
    if (!o) return;
    free(o->means);
    free(o->chol);
    free(o);
}

/* A JSON array of exactly n numbers into out (floats). */
static int json_floats(const cJSON *a, size_t n, float *out) {
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) != n) return -1;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) return -1;
        out[i++] = (float)e->valuedouble;
    }
    return 0;
}

/* "ood" of the serving metadata into a new detector, or -1 with a message. */
static int read_ood(const fm_model *m, const cJSON *o, fm_ood **out, fm_error *err) {
    const fm_arch *a = &m->arch;
    int src = a->layers[a->n_layers - 1].in[0];
    const cJSON *layer = cJSON_GetObjectItemCaseSensitive(o, "layer");
    const cJSON *means = cJSON_GetObjectItemCaseSensitive(o, "means");
    const cJSON *chol = cJSON_GetObjectItemCaseSensitive(o, "chol");
    const cJSON *maxd = cJSON_GetObjectItemCaseSensitive(o, "max_distance");
    if (!cJSON_IsNumber(layer) || layer->valuedouble != src || src < 0)
        return fm_seterr(err, "\"serving\" metadata: \"ood\".\"layer\" must be %d, the last layer's input", src);
    size_t F = a->layers[src].out_size;
    if (F > 4096) return fm_seterr(err, "\"serving\" metadata: \"ood\" features of %zu values (at most 4096)", F);
    if (!cJSON_IsNumber(maxd) || !(maxd->valuedouble >= 0))
        return fm_seterr(err, "\"serving\" metadata: \"ood\".\"max_distance\" must be a number >= 0");
    fm_ood *d = calloc(1, sizeof *d);
    if (d) d->means = malloc(FM_N_CLASSES * F * sizeof(float)), d->chol = malloc(F * F * sizeof(float));
    if (!d || !d->means || !d->chol) {
        fm_ood_free(d);
        return fm_seterr(err, "out of memory for the detector");
    }
    d->layer = src, d->dim = F, d->max_distance = (float)maxd->valuedouble;
    int bad = !cJSON_IsArray(means) || cJSON_GetArraySize(means) != FM_N_CLASSES;
    for (int c = 0; !bad && c < FM_N_CLASSES; c++) bad = json_floats(cJSON_GetArrayItem(means, c), F, d->means + c * F);
    if (bad || json_floats(chol, F * F, d->chol)) {
        fm_ood_free(d);
        return fm_seterr(err, "\"serving\" metadata: \"ood\" needs \"means\" (10 arrays of %zu numbers) and \"chol\" "
                              "(%zu numbers)", F, F * F);
    }
    *out = d;
    return 0;
}

/* The "serving" metadata (fm_net.h) into m's fields. */
static int read_serving(fm_model *m, fm_error *err) {
    m->tta = 0, m->temperature = 1.0f, m->uncertain_below = 0.0f;
    fm_ood_free(m->ood);
    m->ood = NULL;
    const char *text = fm_model_meta(m, "serving");
    if (!text) return 0;
    cJSON *j = cJSON_Parse(text);
    int rc = -1;
    if (!cJSON_IsObject(j)) {
        fm_seterr(err, "\"serving\" metadata is not a JSON object");
        goto done;
    }
    const cJSON *tta = cJSON_GetObjectItemCaseSensitive(j, "tta");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "temperature");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "uncertain_below");
    if (tta && !(cJSON_IsString(tta) && (strcmp(tta->valuestring, "none") == 0 || strcmp(tta->valuestring, "hflip") == 0))) {
        fm_seterr(err, "\"serving\" metadata: \"tta\" must be \"none\" or \"hflip\"");
        goto done;
    }
    if (t && !(cJSON_IsNumber(t) && t->valuedouble > 0.01 && t->valuedouble < 100)) {
        fm_seterr(err, "\"serving\" metadata: \"temperature\" must be a number in (0.01, 100)");
        goto done;
    }
    if (u && !(cJSON_IsNumber(u) && u->valuedouble >= 0 && u->valuedouble <= 1)) {
        fm_seterr(err, "\"serving\" metadata: \"uncertain_below\" must be a probability in [0, 1]");
        goto done;
    }
    const cJSON *ood = cJSON_GetObjectItemCaseSensitive(j, "ood");
    if (ood && read_ood(m, ood, &m->ood, err)) goto done;
    m->tta = tta && strcmp(tta->valuestring, "hflip") == 0;
    if (t) m->temperature = (float)t->valuedouble;
    if (u) m->uncertain_below = (float)u->valuedouble;
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}
