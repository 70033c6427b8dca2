/* fm_train.h - data-parallel training and evaluation on the machine's cores,
 * and across the processes of an MPI job.
 *
 * A batch is split into W contiguous slices, the shards: one per thread of
 * one process, or with R processes of T threads each W = R*T shards, shard
 * s = r*T + t on thread t of process r (the same slicing rule for any
 * layout with the same W).  Each shard runs forward and backward on its
 * slice with its own workspace and gradient buffer, and the gradients are
 * then summed in shard order 0..W-1 on every process (gathered first, never
 * all-reduced), so the float additions are the same whatever the layout.
 * Dropout masks come from a stream derived from (seed, epoch, batch,
 * shard), and each example's augmentation from one derived from (seed,
 * epoch, batch, its position in the batch), so a run is bit-identical for
 * the same seed and shard count, and can resume from any batch boundary
 * without saving RNG state.  Batch norm normalises each shard's slice by
 * its own statistics (as data-parallel PyTorch without SyncBatchNorm does
 * per process).  Not here: the epoch loop, early stopping, checkpoints and
 * reports (the trainer program's job), and MPI itself (the trainer's
 * fm_mpi.c gives the pool an fm_comm; the engine never links MPI). */
#ifndef FM_TRAIN_H
#define FM_TRAIN_H

#include "fm_augment.h"
#include "fm_idx.h"
#include "fm_net.h"

typedef struct fm_eval fm_eval;

/* How the processes of a job exchange their shards' results: the job's
 * size, this process's rank, and an all-gather that puts every process's n
 * bytes at send into recv [n_ranks * n] in rank order.  It returns only on
 * success (a failed exchange, a dead peer, ends the job; with MPI, MPI's
 * fatal error handler).  The pool counts what it exchanges. */
typedef struct fm_comm {
    size_t rank, n_ranks;
    void (*allgather)(struct fm_comm *c, const void *send, void *recv, size_t n);
    void *impl;
    uint64_t n_exchanges;  /* all-gathers made by pools */
    uint64_t bytes_sent;   /* by this process, summed over them */
    uint64_t bytes_recv;   /* from the other processes, likewise */
    double seconds;        /* spent in them (waiting for the slowest process included) */
} fm_comm;

typedef struct fm_pool {
    const fm_arch *arch;
    size_t n_threads;
    size_t max_batch;   /* whole batch; each shard takes at most ceil(max_batch / n_shards) */
    size_t n_shards;    /* W: n_threads, or n_ranks * n_threads in a job */
    size_t shard0;      /* this process's first shard: rank * n_threads */
    fm_comm *comm;      /* NULL: this process is the whole job */
    fm_ws *ws;          /* [n_threads] training workspaces */
    float **grads;      /* [n_threads][n_params]; grads[0] receives the sum */
    float **x;          /* [n_threads][slice, in_size] batch pixels as float */
    uint8_t **y;        /* [n_threads][slice] labels */
    fm_ws *eval_ws;     /* [n_threads] inference workspaces for evaluation */
    size_t n_active;    /* threads that had examples in the last fm_pool_gradient */
    fm_augment aug;     /* training augmentation (fm_augment_defaults(): off) */
    float smoothing;    /* label smoothing of the training loss (0: off) */
    float **aug_tmp;    /* [n_threads][in_size] */
    int stop_signal;    /* job: set before fm_pool_gradient to this process's pending stop signal (0: none);
                         * after it, the first shard's nonzero one: every process stops at the same batch */
    /* job only: */
    size_t n_stat_floats; /* batch statistics of one shard, all layers */
    size_t block;         /* bytes of one shard's record: header, gradient, statistics */
    unsigned char *send;  /* [n_threads][block] this process's shards */
    unsigned char *recv;  /* [n_shards][block] every shard, in order */
    fm_ws *views;         /* [n_shards] only stats set, into recv: what fm_update_stats reads */
    fm_eval *eval_part;   /* [n_shards] partial evaluations, this process's at [shard0..) */
} fm_pool;

int fm_pool_create(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_error *err);
/* The same for one process of a job (comm may be NULL: fm_pool_create).
 * Collective: every process calls it, with the same n_threads (checked:
 * a difference is an error on every process) and max_batch; W = n_ranks *
 * n_threads must not exceed max_batch. */
int fm_pool_create_job(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_comm *comm,
                       fm_error *err);
void fm_pool_destroy(fm_pool *p); /* safe on a zeroed struct */

/* Mean-loss gradient of the batch ds[idx[0..n)] into p->grads[0]
 * (overwritten).  Returns the summed loss; adds correct predictions to
 * *n_correct.  seed/epoch/batch pick the dropout streams.  In a job: every
 * process calls it with the same batch and gets the whole batch's sums. */
double fm_pool_gradient(fm_pool *p, const float *params, const fm_dataset *ds, const uint32_t *idx,
                        size_t n, uint64_t seed, uint64_t epoch, uint64_t batch, size_t *n_correct);

/* After the optimiser step that used the last fm_pool_gradient: the running
 * statistics in params (batch norm) from that batch's statistics, each
 * shard's averaged in shard order (so with one shard exactly PyTorch's
 * update; deterministic for a shard count). */
void fm_pool_update_stats(fm_pool *p, float *params);

struct fm_eval {
    double loss;     /* mean cross-entropy */
    double accuracy; /* fraction correct */
    size_t n, n_correct;
    uint32_t confusion[FM_N_CLASSES][FM_N_CLASSES]; /* [true][predicted] */
};

/* Evaluates params on all of ds in eval mode.  pred (optional, [ds->n])
 * receives each arg-max class; probs (optional, [ds->n, 10]) the softmax.
 * ds is split into n_shards parts summed in order (in a job: collective,
 * every process gets the whole result; pred and probs are filled for this
 * process's parts only). */
void fm_pool_evaluate(fm_pool *p, const float *params, const fm_dataset *ds, fm_eval *out,
                      uint8_t *pred, float *probs);

/* The same for a model as it is served (fm_model_logits: its plan when
 * packed, the mirror when m->tta; loss and probs at m->temperature): what
 * `fmnist-train eval`, the weight file's metrics and the server agree on. */
void fm_pool_evaluate_model(fm_pool *p, const fm_model *m, const fm_dataset *ds, fm_eval *out, uint8_t *pred,
                            float *probs);

/* Number of online CPUs (>= 1). */
size_t fm_cpu_count(void);

#endif
