/* fm_plan.h - the inference plan: a model's forward pass prepared once at
 * load, so that serving is a loop over ready steps.
 *
 * Decisions are made once, when the plan is built (fm_model_pack in
 * fm_net.h walks the layers and asks each layer type's row for its
 * inference variant): which layers fuse into one step (a convolution with
 * the batch norm, relu and 2x2 max-pool after it; an add with its relu),
 * the weights packed for the GEMM or folded with a batch norm (owned by the
 * plan), and which activation buffer ("slot") each value lives in.  Running
 * the plan allocates nothing and matches no patterns.
 *
 * Slots are assigned per layer from the architecture alone
 * (fm_plan_slots), so a workspace sized from the architecture fits every
 * plan of it: a value keeps its slot while a later layer still reads it,
 * eval-mode identities (flatten, dropout) share their input's, and an
 * in-place layer (relu) may reuse its input's when it is the last reader.
 * Not here: the layer kinds themselves (fm_ops.c), training. */
#ifndef FM_PLAN_H
#define FM_PLAN_H

#include "fm_arch.h"

#define FM_SLOT_INPUT (-1) /* the network's input, read only */

/* Buffers a step runs with (one thread's). */
typedef struct fm_run {
    size_t n;            /* examples */
    const float *x;      /* the network's input [n, in_size] */
    float *const *slot;  /* [n_slots] activation buffers, each [max_batch, max_size] */
    float *conv;         /* convolution scratch (fm_conv2d_scratch of the largest) */
    size_t conv_chunk;   /* images per convolution chunk */
    float *gemm;         /* [FM_GEMM_SCRATCH] */
} fm_run;

typedef struct fm_step fm_step;
typedef void (*fm_step_fn)(const fm_step *s, const fm_run *r);

struct fm_step {
    fm_step_fn run;
    fm_layer L;          /* a copy of the first layer it covers (shapes, hyper-parameters):
                          * the plan must not point into the model's fm_arch, which may move */
    int first, last;     /* layers covered */
    int n_in;
    int in[FM_MAX_INPUTS]; /* slots of its inputs (FM_SLOT_INPUT: the network's) */
    int out;             /* slot of the last layer's output */
    int mid;             /* slot of an intermediate result (a convolution's, before pooling); -1 none */
    const float *p;      /* the first layer's tensors in the model's parameters */
    const float *w, *b;  /* prepared weights (packed, folded; fm_plan_alloc), or NULL */
    const float *w2, *b2; /* a second set (add's projection) */
    int relu;            /* fused relu after the layer */
    int pool;            /* fused 2x2 max-pool after the relu */
};

typedef struct fm_plan {
    int n_steps;
    fm_step *steps;  /* [n_steps], owned */
    int n_blocks;
    float **blocks;  /* [n_blocks] prepared weights, owned */
    int out_slot;    /* where the logits end up */
} fm_plan;

/* Per-layer slot assignment of inference activations; returns the number
 * of slots (>= 1).  slot[i] is FM_SLOT_INPUT for an identity of the input. */
int fm_plan_slots(const fm_arch *a, int *slot);

/* While building: a step for layers [first, last] (inputs of first, output
 * of last), or NULL on OOM. */
fm_step *fm_plan_emit(fm_plan *p, const fm_arch *a, const int *slot, fm_step_fn run, int first, int last,
                      const float *params);
/* n floats for prepared weights, owned by the plan (valid until
 * fm_plan_free), or NULL on OOM. */
float *fm_plan_alloc(fm_plan *p, size_t n);
void fm_plan_free(fm_plan *p); /* safe on a zeroed struct */

/* Runs every step; returns the logits [r->n, 10] (in a slot or the input). */
const float *fm_plan_run(const fm_plan *p, const fm_run *r);

#endif
