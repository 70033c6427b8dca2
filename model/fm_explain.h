/* fm_explain.h - attributions: which input pixels a prediction rests on.
 *
 * All methods explain the network's own output for one class c (the logit
 * z_c, or its softmax probability p_c), in eval mode (batch norm on its
 * running statistics, no dropout), through the reference forward and
 * backward that training uses; mirror averaging and temperature, which are
 * serving options, are not part of what is explained.
 *
 *   gradient    x * d out_c / d x                       (gradient x input)
 *   ig          integrated gradients (Sundararajan et al. 2017) from the
 *               black image: (x - 0) * mean over k of d out_c / d x at
 *               alpha_k x, alpha_k = (k + 1/2) / steps (the midpoint rule),
 *               the steps batched through one forward and one backward;
 *               completeness: the attributions sum to out_c(x) - out_c(0)
 *               up to the rule's error, reported in fm_explain_info
 *   occlusion   a k x k black patch slid with stride s (Zeiler & Fergus):
 *               a pixel's attribution is the mean drop out_c(x) -
 *               out_c(x occluded) over the patches that cover it; forward
 *               passes only, batched
 *
 * Cost: gradient one forward + backward of one image; ig of `steps`
 * images; occlusion a forward of (ceil((28 - k) / s) + 1)^2 images.  The
 * caller's training workspace must hold the batch (fm_explain_batch). */
#ifndef FM_EXPLAIN_H
#define FM_EXPLAIN_H

#include "fm_net.h"

typedef enum fm_explain_method { FM_EXPLAIN_GRADIENT, FM_EXPLAIN_IG, FM_EXPLAIN_OCCLUSION } fm_explain_method;

typedef struct fm_explain_opts {
    fm_explain_method method;
    int target_prob; /* 1: explain the probability p_c; 0: the logit z_c */
    int steps;       /* ig: Riemann steps (1..FM_EXPLAIN_MAX_STEPS) */
    int patch;       /* occlusion: side of the square patch (1..28) */
    int stride;      /* occlusion: step between patches (1..patch) */
} fm_explain_opts;

#define FM_EXPLAIN_MAX_STEPS 256

typedef struct fm_explain_info {
    float out;        /* out_c(x): the explained logit or probability */
    float baseline;   /* out_c(0): the same for the black image (ig, occlusion's reference) */
    float sum;        /* the sum of the attributions */
    float completeness_error; /* ig: |sum - (out - baseline)| */
    int evaluations;  /* images run through the network */
} fm_explain_info;

/* The defaults: ig, 32 steps, the logit; occlusion 4 x 4 by 2. */
fm_explain_opts fm_explain_defaults(void);
/* Method names "gradient", "ig", "occlusion"; -1 when unknown. */
int fm_explain_parse(const char *name);
const char *fm_explain_name(fm_explain_method m);
/* Checks opts (ranges above); -1 with a message. */
int fm_explain_check(const fm_explain_opts *o, fm_error *err);
/* Images one explanation runs at once: what the training workspace must
 * hold (fm_ws_create(ws, &m->arch, fm_explain_batch(o), 1, ...)). */
size_t fm_explain_batch(const fm_explain_opts *o);

/* Attributions attr [in_size] of class c for the image x [in_size]; ws is
 * a training workspace of at least fm_explain_batch(o) examples, scratch
 * holds fm_explain_batch(o) * (2 * in_size + 10) floats.  0, or -1 (bad
 * options, workspace too small) with a message. */
int fm_explain(const fm_model *m, fm_ws *ws, float *scratch, const float *x, int c, const fm_explain_opts *o,
               float *attr, fm_explain_info *info, fm_error *err);

#endif
