/* fm_train.c - the thread fan-out behind fm_pool_gradient and
 * fm_pool_evaluate, and in a job the exchange of the shards' results.
 * Threads are started per call (a few tens of microseconds, small beside a
 * batch) and joined before returning, so the pool holds no threads between
 * calls and needs no locks.  In a job each process packs its shards'
 * records (header, gradient, batch statistics) side by side, one all-gather
 * gives every process every record, and each process sums them in shard
 * order exactly as one process sums its threads'.  Left out: overlapping
 * the exchange with the backward pass, and a cheaper reduction than the
 * all-gather (the fixed order of additions is the point). */
#include "fm_train.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm_layers.h"
#include "fm_ops.h"

enum { EVAL_CHUNK = 256 };

size_t fm_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

static size_t slice_cap(const fm_pool *p) { return (p->max_batch + p->n_shards - 1) / p->n_shards; }

/* One shard's record in a job starts with this (then the gradient
 * [n_params] and the batch statistics [n_stat_floats]). */
typedef struct shard_head {
    double loss;
    uint64_t correct, n;
    int64_t stop;
} shard_head;

enum { HEAD_BYTES = 32 };
_Static_assert(sizeof(shard_head) <= HEAD_BYTES, "shard header");

static int join(fm_pool *p, fm_comm *comm, fm_error *err);

int fm_pool_create(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_error *err) {
    return fm_pool_create_job(p, a, n_threads, max_batch, NULL, err);
}

int fm_pool_create_job(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_comm *comm,
                       fm_error *err) {
    memset(p, 0, sizeof *p);
    if (n_threads < 1 || n_threads > 256) return fm_seterr(err, "thread count must be in [1, 256]");
    if (max_batch < 1) return fm_seterr(err, "batch size must be at least 1");
    if (n_threads > max_batch) n_threads = max_batch;
    p->arch = a;
    p->n_threads = n_threads;
    p->max_batch = max_batch;
    p->n_shards = n_threads;
    if (comm && comm->n_ranks > 1 && join(p, comm, err)) return -1;
    /* workspaces sized by the shard, not the thread: their chunking (and so
     * the order of a convolution's weight-gradient sums) depends on it */
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
    if (p->comm) {
        p->send = malloc(n_threads * p->block);
        p->recv = malloc(p->n_shards * p->block);
        p->views = calloc(p->n_shards, sizeof *p->views);
        p->eval_part = calloc(p->n_shards, sizeof *p->eval_part);
        if (!p->send || !p->recv || !p->views || !p->eval_part) goto oom;
        memset(p->send, 0, n_threads * p->block); /* the padding is sent too */
        for (size_t s = 0; s < p->n_shards; s++) {
            float *st = (float *)(p->recv + s * p->block + HEAD_BYTES) + a->n_params;
            for (int i = 0; i < a->n_layers; i++) {
                const fm_op *op = fm_op_of(a->layers[i].type);
                if (!op->stat_floats) continue;
                p->views[s].stats[i] = st;
                st += op->stat_floats(&a->layers[i]);
            }
        }
    }
    return 0;
oom:
    fm_pool_destroy(p);
    return fm_seterr(err, "out of memory creating %zu training threads for batch %zu", n_threads, max_batch);
}

/* A job's layout: every process must run the same thread count (a
 * default of "all cores" differs between machines). */
static int join(fm_pool *p, fm_comm *comm, fm_error *err) {
    size_t R = comm->n_ranks, T = p->n_threads;
    uint64_t mine = T, *all = malloc(R * sizeof *all);
    if (!all) return fm_seterr(err, "out of memory joining a job of %zu processes", R);
    comm->allgather(comm, &mine, all, sizeof mine);
    size_t odd = 0;
    for (size_t r = 1; r < R; r++)
        if (all[r] != all[0] && !odd) odd = r;
    uint64_t t0 = all[0], to = all[odd];
    free(all);
    if (odd)
        return fm_seterr(err, "the processes run different thread counts (rank 0: %llu, rank %zu: %llu; the default "
                         "is every core of its machine): give them all the same --threads",
                         (unsigned long long)t0, odd, (unsigned long long)to);
    if (R * T > 256)
        return fm_seterr(err, "%zu processes x %zu threads = %zu shards, more than 256", R, T, R * T);
    if (R * T > p->max_batch)
        return fm_seterr(err, "%zu processes x %zu threads = %zu shards, more than the %zu examples of a batch: use "
                         "fewer threads or processes", R, T, R * T, p->max_batch);
    const fm_arch *a = p->arch;
    p->comm = comm;
    p->n_shards = R * T;
    p->shard0 = comm->rank * T;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_op *op = fm_op_of(a->layers[i].type);
        if (op->stat_floats) p->n_stat_floats += op->stat_floats(&a->layers[i]);
    }
    p->block = (HEAD_BYTES + (a->n_params + p->n_stat_floats) * sizeof(float) + 15) & ~(size_t)15;
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void exchange(fm_pool *p, const void *send, void *recv, size_t n) {
    fm_comm *c = p->comm;
    double t0 = now_s();
    c->allgather(c, send, recv, n);
    c->seconds += now_s() - t0;
    c->n_exchanges++;
    c->bytes_sent += n;
    c->bytes_recv += n * (c->n_ranks - 1);
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
    free(p->send);
    free(p->recv);
    free(p->views);
    free(p->eval_part);
    memset(p, 0, sizeof *p);
}

typedef struct job {
    fm_pool *p;
    size_t t;             /* thread (its buffers) */
    size_t s;             /* shard (its slice and dropout stream) */
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
    fm_rng_derive(&rng, j->seed, j->epoch, j->batch, j->s);
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

/* g += x, the one way shard gradients are summed */
static void add_into(float *g, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] += x[i];
}

/* A job's fm_pool_gradient after this process's threads: every shard's
 * record to every process, then the sums in shard order (as below). */
static double gather_gradient(fm_pool *p, const job *jobs, size_t *n_correct) {
    const fm_arch *a = p->arch;
    size_t T = p->n_threads, W = p->n_shards, np = a->n_params;
    for (size_t t = 0; t < T; t++) {
        unsigned char *b = p->send + t * p->block;
        shard_head h = {.loss = jobs[t].loss, .correct = jobs[t].correct, .n = jobs[t].n, .stop = p->stop_signal};
        memcpy(b, &h, sizeof h);
        memcpy(b + HEAD_BYTES, p->grads[t], np * sizeof(float));
        float *st = (float *)(b + HEAD_BYTES) + np;
        for (int i = 0; i < a->n_layers; i++) {
            const fm_op *op = fm_op_of(a->layers[i].type);
            if (!op->stat_floats) continue;
            size_t k = op->stat_floats(&a->layers[i]);
            if (jobs[t].n) memcpy(st, p->ws[t].stats[i], k * sizeof(float));
            st += k;
        }
    }
    exchange(p, p->send, p->recv, T * p->block);
    double loss = 0.0;
    size_t correct = 0;
    float *g0 = p->grads[0];
    p->n_active = 0;
    p->stop_signal = 0;
    for (size_t s = 0; s < W; s++) {
        const unsigned char *b = p->recv + s * p->block;
        shard_head h;
        memcpy(&h, b, sizeof h);
        loss += h.loss;
        correct += (size_t)h.correct;
        p->n_active += h.n > 0;
        if (!p->stop_signal) p->stop_signal = (int)h.stop;
        const float *gs = (const float *)(b + HEAD_BYTES);
        if (s == 0)
            memcpy(g0, gs, np * sizeof(float));
        else
            add_into(g0, gs, np);
    }
    if (n_correct) *n_correct += correct;
    return loss;
}

double fm_pool_gradient(fm_pool *p, const float *params, const fm_dataset *ds, const uint32_t *idx,
                        size_t n, uint64_t seed, uint64_t epoch, uint64_t batch, size_t *n_correct) {
    job jobs[256];
    size_t T = p->n_threads, cap = slice_cap(p);
    for (size_t t = 0; t < T; t++) {
        size_t s = p->shard0 + t, start = s * cap < n ? s * cap : n;
        size_t end = start + cap < n ? start + cap : n;
        jobs[t] = (job){.p = p, .t = t, .s = s, .params = params, .ds = ds, .idx = idx, .start = start,
                        .n = end - start, .batch_n = n, .seed = seed, .epoch = epoch, .batch = batch};
    }
    fan_out(grad_job, jobs, T);
    if (p->comm) return gather_gradient(p, jobs, n_correct);
    p->n_active = 0;
    for (size_t t = 0; t < T; t++) p->n_active += jobs[t].n > 0;
    double loss = 0.0;
    size_t correct = 0;
    float *g0 = p->grads[0];
    size_t np = p->arch->n_params;
    for (size_t t = 0; t < T; t++) {
        loss += jobs[t].loss;
        correct += jobs[t].correct;
        if (t > 0) add_into(g0, p->grads[t], np);
    }
    if (n_correct) *n_correct += correct;
    return loss;
}

void fm_pool_update_stats(fm_pool *p, float *params) {
    fm_ws *ws[256];
    for (size_t t = 0; t < p->n_active; t++) ws[t] = p->comm ? &p->views[t] : &p->ws[t];
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
    fm_eval part[256], *all = part;
    size_t T = p->n_threads, W = p->n_shards, per = (ds->n + W - 1) / W;
    for (size_t t = 0; t < T; t++) {
        size_t s = p->shard0 + t, start = s * per < ds->n ? s * per : ds->n;
        size_t end = start + per < ds->n ? start + per : ds->n;
        jobs[t] = (job){.p = p, .t = t, .s = s, .params = params, .ds = ds, .start = start, .n = end - start,
                        .eval = &part[t], .pred = pred, .probs = probs, .model = m};
    }
    fan_out(eval_job, jobs, T);
    if (p->comm) {
        exchange(p, part, p->eval_part, T * sizeof *part);
        all = p->eval_part;
    }
    memset(out, 0, sizeof *out);
    for (size_t s = 0; s < W; s++) {
        out->loss += all[s].loss;
        out->n += all[s].n;
        out->n_correct += all[s].n_correct;
        for (int i = 0; i < FM_N_CLASSES; i++)
            for (int k = 0; k < FM_N_CLASSES; k++) out->confusion[i][k] += all[s].confusion[i][k];
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
