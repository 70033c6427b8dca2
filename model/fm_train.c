/* fm_train.c - the thread fan-out behind fm_pool_gradient and
 * fm_pool_evaluate.  Threads are started per call (a few tens of
 * microseconds, small beside a batch) and joined before returning, so the
 * pool holds no threads between calls and needs no locks. */
#include "fm_train.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_layers.h"

enum { EVAL_CHUNK = 256 };

size_t fm_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

static size_t slice_cap(const fm_pool *p) { return (p->max_batch + p->n_threads - 1) / p->n_threads; }

int fm_pool_create(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_error *err) {
    memset(p, 0, sizeof *p);
    if (n_threads < 1 || n_threads > 256) return fm_seterr(err, "thread count must be in [1, 256]");
    if (max_batch < 1) return fm_seterr(err, "batch size must be at least 1");
    if (n_threads > max_batch) n_threads = max_batch;
    p->arch = a;
    p->n_threads = n_threads;
    p->max_batch = max_batch;
    size_t cap = slice_cap(p), in_size = (size_t)a->in_c * a->in_h * a->in_w;
    p->ws = calloc(n_threads, sizeof *p->ws);
    p->eval_ws = calloc(n_threads, sizeof *p->eval_ws);
    p->grads = calloc(n_threads, sizeof *p->grads);
    p->x = calloc(n_threads, sizeof *p->x);
    p->y = calloc(n_threads, sizeof *p->y);
    p->aug_tmp = calloc(n_threads, sizeof *p->aug_tmp);
    p->aug = fm_augment_defaults();
    if (!p->ws || !p->eval_ws || !p->grads || !p->x || !p->y || !p->aug_tmp) goto oom;
    for (size_t t = 0; t < n_threads; t++) {
        size_t xcap = cap > EVAL_CHUNK ? cap : EVAL_CHUNK;
        if (fm_ws_create(&p->ws[t], a, cap, 1, err) || fm_ws_create(&p->eval_ws[t], a, EVAL_CHUNK, 0, err)) {
            fm_pool_destroy(p);
            return -1;
        }
        p->grads[t] = malloc(a->n_params * sizeof(float));
        p->x[t] = malloc(xcap * in_size * sizeof(float));
        p->y[t] = malloc(xcap);
        p->aug_tmp[t] = malloc(in_size * sizeof(float));
        if (!p->grads[t] || !p->x[t] || !p->y[t] || !p->aug_tmp[t]) goto oom;
    }
    return 0;
oom:
    fm_pool_destroy(p);
    return fm_seterr(err, "out of memory creating %zu training threads for batch %zu", n_threads, max_batch);
}

void fm_pool_destroy(fm_pool *p) {
    for (size_t t = 0; t < p->n_threads; t++) {
        if (p->ws) fm_ws_destroy(&p->ws[t]);
        if (p->eval_ws) fm_ws_destroy(&p->eval_ws[t]);
        if (p->grads) free(p->grads[t]);
        if (p->x) free(p->x[t]);
        if (p->y) free(p->y[t]);
        if (p->aug_tmp) free(p->aug_tmp[t]);
    }
    free(p->ws);
    free(p->eval_ws);
    free(p->grads);
    free(p->x);
    free(p->y);
    free(p->aug_tmp);
    memset(p, 0, sizeof *p);
}

typedef struct job {
    fm_pool *p;
    size_t t;
    const float *params;
    const fm_dataset *ds;
    const uint32_t *idx;  /* gradient: examples of this slice */
    size_t start, n;      /* gradient: slice within the batch; eval: range of ds */
    size_t batch_n;       /* whole batch size (mean-loss scale) */
    uint64_t seed, epoch, batch;
    double loss;
    size_t correct;
    fm_eval *eval;        /* eval: per-thread partial result */
    uint8_t *pred;
    float *probs;
    const fm_model *model; /* eval: the served path (plan, mirror, temperature) instead of params */
} job;

static void *grad_job(void *arg) {
    job *j = arg;
    fm_pool *p = j->p;
    const fm_arch *a = p->arch;
    size_t in_size = (size_t)a->in_c * a->in_h * a->in_w;
    float *g = p->grads[j->t];
    memset(g, 0, a->n_params * sizeof(float));
    if (j->n == 0) return NULL;
    int augment = fm_augment_enabled(&p->aug);
    for (size_t i = 0; i < j->n; i++) {
        size_t e = j->idx[j->start + i];
        float *xi = p->x[j->t] + i * in_size;
        fm_dataset_to_float(j->ds, e, 1, xi);
        p->y[j->t][i] = j->ds->labels[e];
        if (augment) { /* the example's own stream: the same whatever the thread split */
            fm_rng ar;
            fm_rng_derive(&ar, j->seed ^ 0x4155474d454e54ull, j->epoch, j->batch, j->start + i);
            fm_augment_apply(&p->aug, &ar, xi, p->aug_tmp[j->t], (size_t)a->in_c, (size_t)a->in_h, (size_t)a->in_w);
        }
    }
    fm_rng rng;
    fm_rng_derive(&rng, j->seed, j->epoch, j->batch, j->t);
    fm_ws *ws = &p->ws[j->t];
    const float *logits = fm_forward(a, j->params, ws, p->x[j->t], j->n, 1, &rng);
    float *dlogits = ws->probs; /* [n, 10], free during backward */
    j->loss = fm_xent_smooth_forward_backward(dlogits, &j->correct, logits, p->y[j->t], j->n, FM_N_CLASSES,
                                              1.0f / (float)j->batch_n, p->smoothing);
    fm_backward(a, j->params, ws, p->x[j->t], dlogits, j->n, g);
    return NULL;
}

/* Runs fn on jobs[0..n): jobs 1.. on new threads, job 0 on this one.  If a
 * thread cannot be started its job runs here instead, so results never
 * depend on thread creation succeeding. */
static void fan_out(void *(*fn)(void *), job *jobs, size_t n) {
    pthread_t tid[256];
    int started[256] = {0};
    for (size_t t = 1; t < n; t++) started[t] = pthread_create(&tid[t], NULL, fn, &jobs[t]) == 0;
    fn(&jobs[0]);
    for (size_t t = 1; t < n; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(&jobs[t]);
    }
}

double fm_pool_gradient(fm_pool *p, const float *params, const fm_dataset *ds, const uint32_t *idx,
                        size_t n, uint64_t seed, uint64_t epoch, uint64_t batch, size_t *n_correct) {
    job jobs[256];
    size_t T = p->n_threads, cap = slice_cap(p);
    for (size_t t = 0; t < T; t++) {
        size_t start = t * cap < n ? t * cap : n;
        size_t end = start + cap < n ? start + cap : n;
        jobs[t] = (job){.p = p, .t = t, .params = params, .ds = ds, .idx = idx, .start = start,
                        .n = end - start, .batch_n = n, .seed = seed, .epoch = epoch, .batch = batch};
    }
    fan_out(grad_job, jobs, T);
    p->n_active = 0;
    for (size_t t = 0; t < T; t++) p->n_active += jobs[t].n > 0;
    double loss = 0.0;
    size_t correct = 0;
    float *g0 = p->grads[0];
    size_t np = p->arch->n_params;
    for (size_t t = 0; t < T; t++) {
        loss += jobs[t].loss;
        correct += jobs[t].correct;
        if (t > 0) {
            const float *gt = p->grads[t];
            for (size_t i = 0; i < np; i++) g0[i] += gt[i];
        }
    }
    if (n_correct) *n_correct += correct;
    return loss;
}

void fm_pool_update_stats(fm_pool *p, float *params) {
    fm_ws *ws[256];
    for (size_t t = 0; t < p->n_active; t++) ws[t] = &p->ws[t];
    if (p->n_active) fm_update_stats(p->arch, params, ws, p->n_active);
}

static void *eval_job(void *arg) {
    job *j = arg;
    fm_pool *p = j->p;
    const fm_arch *a = p->arch;
    fm_ws *ws = &p->eval_ws[j->t];
    fm_eval *ev = j->eval;
    memset(ev, 0, sizeof *ev);
    for (size_t s = j->start; s < j->start + j->n; s += EVAL_CHUNK) {
        size_t nb = j->start + j->n - s < EVAL_CHUNK ? j->start + j->n - s : EVAL_CHUNK;
        fm_dataset_to_float(j->ds, s, nb, p->x[j->t]);
        const float *logits;
        float zt[EVAL_CHUNK * FM_N_CLASSES]; /* the served logits divided by the temperature */
        if (j->model) {
            fm_model_logits(j->model, ws, p->x[j->t], nb, zt);
            float t = j->model->temperature > 0.0f ? j->model->temperature : 1.0f;
            if (t != 1.0f)
                for (size_t k = 0; k < nb * FM_N_CLASSES; k++) zt[k] /= t;
            logits = zt;
        } else {
            logits = fm_forward(a, j->params, ws, p->x[j->t], nb, 0, NULL);
        }
        ev->loss += fm_xent_forward_backward(NULL, NULL, logits, j->ds->labels + s, nb, FM_N_CLASSES, 0.0f);
        for (size_t i = 0; i < nb; i++) {
            const float *z = logits + i * FM_N_CLASSES;
            size_t am = 0;
            for (size_t k = 1; k < FM_N_CLASSES; k++)
                if (z[k] > z[am]) am = k;
            uint8_t y = j->ds->labels[s + i];
            ev->confusion[y][am]++;
            ev->n_correct += am == y;
            if (j->pred) j->pred[s + i] = (uint8_t)am;
        }
        if (j->probs) fm_softmax(j->probs + s * FM_N_CLASSES, logits, nb, FM_N_CLASSES);
    }
    ev->n = j->n;
    return NULL;
}

static void evaluate(fm_pool *p, const float *params, const fm_model *m, const fm_dataset *ds, fm_eval *out,
                     uint8_t *pred, float *probs) {
    job jobs[256];
    fm_eval part[256];
    size_t T = p->n_threads, per = (ds->n + T - 1) / T;
    for (size_t t = 0; t < T; t++) {
        size_t start = t * per < ds->n ? t * per : ds->n;
        size_t end = start + per < ds->n ? start + per : ds->n;
        jobs[t] = (job){.p = p, .t = t, .params = params, .ds = ds, .start = start, .n = end - start,
                        .eval = &part[t], .pred = pred, .probs = probs, .model = m};
    }
    fan_out(eval_job, jobs, T);
    memset(out, 0, sizeof *out);
    for (size_t t = 0; t < T; t++) {
        out->loss += part[t].loss;
        out->n += part[t].n;
        out->n_correct += part[t].n_correct;
        for (int i = 0; i < FM_N_CLASSES; i++)
            for (int k = 0; k < FM_N_CLASSES; k++) out->confusion[i][k] += part[t].confusion[i][k];
    }
    if (out->n) {
        out->loss /= (double)out->n;
        out->accuracy = (double)out->n_correct / (double)out->n;
    }
}

void fm_pool_evaluate(fm_pool *p, const float *params, const fm_dataset *ds, fm_eval *out, uint8_t *pred,
                      float *probs) {
    evaluate(p, params, NULL, ds, out, pred, probs);
}

void fm_pool_evaluate_model(fm_pool *p, const fm_model *m, const fm_dataset *ds, fm_eval *out, uint8_t *pred,
                            float *probs) {
    evaluate(p, NULL, m, ds, out, pred, probs);
}
