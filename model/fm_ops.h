/* fm_ops.h - the layer descriptor table: one row per layer type.
 *
 * A row says everything the engine needs to know about a layer type: its
 * JSON name and fields, the PyTorch class it stands for, its parameter
 * tensors (names, shapes, which are trained and decayed), its shape rule,
 * its reference forward and backward (fm_layers.h), and its inference
 * variant (what it becomes in the plan: fused, folded, packed).  The
 * parser, the shape derivation, the weight files, the summary, the
 * training passes and the plan builder all go through the row, so adding a
 * layer type is: an fm_ltype value, one row in fm_ops.c, its kernels, its
 * tests (and its class in tools/torch_arch.py for the PyTorch side).
 * Internal to the engine; tests use it too. */
#ifndef FM_OPS_H
#define FM_OPS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_arch.h"
#include "fm_plan.h"
#include "fm_rng.h"

/* What a layer's forward and backward see (one thread, n examples). */
typedef struct fm_lctx {
    const fm_layer *L;
    size_t n;
    int train;                     /* 1: batch statistics and dropout; 0: eval mode */
    const float *x[FM_MAX_INPUTS]; /* inputs [n, size of each] */
    float *y;                      /* output [n, L->out_size] */
    const float *p;                /* the layer's tensors: params + L->p_off */
    float *save;                   /* [n * save_floats] kept from forward for backward */
    uint8_t *mask;                 /* [n * save_bytes] */
    float *stats;                  /* [stat_floats] batch statistics (train) */
    fm_rng *rng;                   /* dropout (train) */
    float *conv;                   /* convolution scratch */
    size_t conv_chunk;
    float *gemm; /* [FM_GEMM_SCRATCH] */
    /* backward only */
    const float *dy;               /* [n, out_size] */
    float *dx[FM_MAX_INPUTS];      /* input gradients, overwritten; NULL: not wanted */
    float *dp;                     /* the layer's gradients (grads + L->p_off), accumulated (+=) */
} fm_lctx;

/* What a plan hook sees: the layers, their slots and the parameters. */
typedef struct fm_planner {
    fm_plan *plan;
    const fm_arch *a;
    const int *slot;
    const float *params;
} fm_planner;

typedef struct fm_op {
    const char *name;  /* JSON "type" */
    const char *torch; /* PyTorch class, for summaries */
    int n_in;          /* inputs it reads */
    const char *const *keys; /* JSON fields it takes besides type/name/inputs (NULL-terminated) */
    /* fields from JSON, with their defaults; -1 with a reason in why */
    int (*parse)(fm_layer *L, const cJSON *o, char *why, size_t nwhy);
    /* fields that differ from the defaults into o (0, or -1 on OOM) */
    int (*to_json)(const fm_layer *L, cJSON *o);
    /* out_c/h/w from in_c/h/w (in2: the second input's C, H, W); flat_in:
     * whether the input is a flat vector; *flat_out likewise; -1 + why */
    int (*shape)(fm_layer *L, const int in2[3], int flat_in, int *flat_out, char *why, size_t nwhy);
    /* its tensors: names without the "i." prefix, dims, flags, offsets
     * from the layer's p_off; returns how many */
    int (*tensors)(const fm_layer *L, fm_tensor *t);
    size_t (*macs)(const fm_layer *L);
    void (*init)(const fm_layer *L, float *p, fm_rng *rng);
    size_t (*save_floats)(const fm_layer *L); /* per example */
    size_t (*save_bytes)(const fm_layer *L);  /* per example */
    size_t (*stat_floats)(const fm_layer *L);
    size_t (*conv_scratch)(const fm_layer *L, size_t chunk);
    void (*forward)(const fm_lctx *c);
    void (*backward)(const fm_lctx *c);
    /* running statistics from n_sets batches' stats (after a step) */
    void (*update)(const fm_layer *L, float *p, const float *const *stats, size_t n_sets);
    int alias_eval; /* eval output is the input itself (no copy) */
    int in_place;   /* inference may write the output over the input */
    /* inference variant: emits the step(s) for layer i and any layers it
     * fuses; returns the last layer covered, or -1 on OOM.  NULL: the
     * reference forward in eval mode (fm_op_plan_reference). */
    int (*plan)(const fm_planner *pl, int i);
} fm_op;

/* The row of a layer type. */
const fm_op *fm_op_of(fm_ltype t);
/* The type named name, or -1. */
int fm_op_find(const char *name);
/* "linear, conv2d, ..." (every JSON name, for error messages) into buf. */
void fm_op_names(char *buf, size_t n);

/* The default inference variant: one step running the row's forward in eval mode. */
int fm_op_plan_reference(const fm_planner *pl, int i);

#endif
