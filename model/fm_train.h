/* fm_train.h - data-parallel training and evaluation on the machine's cores.
 *
 * A batch is split into one contiguous slice per thread; each thread runs
 * forward and backward on its slice with its own workspace and gradient
 * buffer, and the gradients are then summed in thread order.  Dropout masks
 * come from a stream derived from (seed, epoch, batch, thread), and each
 * example's augmentation from one derived from (seed, epoch, batch, its
 * position in the batch), so a run is bit-identical for the same seed and
 * thread count, and can resume from any batch boundary without saving RNG
 * state.  Batch norm normalises each thread's slice by its own statistics
 * (as data-parallel PyTorch without SyncBatchNorm does per process).  Not here: the epoch loop, early
 * stopping, checkpoints and reports (the trainer program's job). */
#ifndef FM_TRAIN_H
#define FM_TRAIN_H

#include "fm_augment.h"
#include "fm_idx.h"
#include "fm_net.h"

typedef struct fm_pool {
    const fm_arch *arch;
    size_t n_threads;
    size_t max_batch;   /* whole batch; each thread takes at most ceil(max_batch / n_threads) */
    fm_ws *ws;          /* [n_threads] training workspaces */
    float **grads;      /* [n_threads][n_params]; grads[0] receives the sum */
    float **x;          /* [n_threads][slice, in_size] batch pixels as float */
    uint8_t **y;        /* [n_threads][slice] labels */
    fm_ws *eval_ws;     /* [n_threads] inference workspaces for evaluation */
    size_t n_active;    /* threads that had examples in the last fm_pool_gradient */
    fm_augment aug;     /* training augmentation (fm_augment_defaults(): off) */
    float smoothing;    /* label smoothing of the training loss (0: off) */
    float **aug_tmp;    /* [n_threads][in_size] */
} fm_pool;

int fm_pool_create(fm_pool *p, const fm_arch *a, size_t n_threads, size_t max_batch, fm_error *err);
void fm_pool_destroy(fm_pool *p); /* safe on a zeroed struct */

/* Mean-loss gradient of the batch ds[idx[0..n)] into p->grads[0]
 * (overwritten).  Returns the summed loss; adds correct predictions to
 * *n_correct.  seed/epoch/batch pick the dropout streams. */
double fm_pool_gradient(fm_pool *p, const float *params, const fm_dataset *ds, const uint32_t *idx,
                        size_t n, uint64_t seed, uint64_t epoch, uint64_t batch, size_t *n_correct);

/* After the optimiser step that used the last fm_pool_gradient: the running
 * statistics in params (batch norm) from that batch's statistics, each
 * thread's share averaged in thread order (so with one thread exactly
 * PyTorch's update; deterministic for a thread count). */
void fm_pool_update_stats(fm_pool *p, float *params);

typedef struct fm_eval {
    double loss;     /* mean cross-entropy */
    double accuracy; /* fraction correct */
    size_t n, n_correct;
    uint32_t confusion[FM_N_CLASSES][FM_N_CLASSES]; /* [true][predicted] */
} fm_eval;

/* Evaluates params on all of ds in eval mode.  pred (optional, [ds->n])
 * receives each arg-max class; probs (optional, [ds->n, 10]) the softmax. */
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
