/* fm_net.h - a network: parameters, per-thread workspace, forward,
 * backward, predict, and the inference plan of a loaded model.
 *
 * A model (architecture + one contiguous float buffer of parameters + the
 * weight file's metadata + its inference plan) is immutable once loaded and
 * may be shared by any number of threads.  Everything that changes during a
 * forward or backward pass lives in an fm_ws, which each thread owns and
 * allocates once for its largest batch: forward, backward and predict never
 * allocate.
 *
 * Two forward paths, kept apart: the reference (the layer kernels of
 * fm_layers.h, layer by layer: what training, evaluation and the gradient
 * checks use) and the plan (fm_plan.h: fused, packed, batch norm folded:
 * what fm_model_predict serves with), proven equal to the reference
 * (tests/test_fast.c: bit for bit for the study's networks, within a stated
 * tolerance where batch norm is folded). */
#ifndef FM_NET_H
#define FM_NET_H

#include "fm_arch.h"
#include "fm_plan.h"
#include "fm_rng.h"

/* One string metadata entry of a weight file (safetensors __metadata__). */
typedef struct fm_kv {
    char *key;
    char *value;
} fm_kv;

typedef struct fm_model {
    fm_arch arch;
    float *params;   /* [arch.n_params], owned */
    size_t n_meta;
    fm_kv *meta;     /* [n_meta], owned (keys and values too) */
    char sha256[65]; /* hex digest of the weight file it was loaded from ("" otherwise) */
    fm_plan *plan;   /* inference plan (fm_model_pack), owned; NULL: the reference path */
    /* serving options from the "serving" metadata, read by fm_model_pack */
    int tta;               /* 1: logits averaged over the image and its mirror ("tta": "hflip") */
    float temperature;     /* probabilities are softmax(logits / temperature) (calibration; 1 = none) */
    float uncertain_below; /* a top probability below this marks an answer "uncertain" (0 = never) */
    struct fm_ood *ood;    /* the feature-space detector ("ood" in the serving metadata), owned; or NULL */
} fm_model;

/* A feature-space out-of-distribution detector (Lee et al. 2018, on L2-
 * normalised features): the input of the last layer (the network's
 * features), normalised to unit length, is compared with a Gaussian per
 * class with one shared covariance fitted on training images; the score is
 * the smallest squared Mahalanobis distance to a class mean.  An answer is
 * "uncertain" when the score is above max_distance (or its top probability
 * below uncertain_below). */
typedef struct fm_ood {
    int layer;          /* the layer whose output is the feature vector (the last layer's input) */
    size_t dim;         /* F: its size */
    float *means;       /* [10, F] class means of the normalised features */
    float *chol;        /* [F, F] lower-triangular L with L L^T = the inverse covariance */
    float max_distance; /* threshold on the score */
} fm_ood;

/* Allocates zeroed parameters for arch (copied in).  Pair with fm_model_free. */
int fm_model_init(fm_model *m, const fm_arch *arch, fm_error *err);
void fm_model_free(fm_model *m); /* safe on a zeroed struct; leaves it zeroed */
/* Metadata lookup; NULL when absent. */
const char *fm_model_meta(const fm_model *m, const char *key);
/* Sets (adds or replaces) a metadata entry; copies both strings. */
int fm_model_set_meta(fm_model *m, const char *key, const char *value, fm_error *err);

/* Prepares a model for serving: builds the inference plan once (fusions,
 * batch norm folded into the convolution before it, weights packed for
 * the GEMM; extra memory: about one copy of the weights) and reads the
 * "serving" metadata, a JSON object
 *   {"tta": "none" | "hflip", "temperature": T > 0, "uncertain_below": P in [0, 1],
 *    "ood": {"layer": L, "means": [[F numbers] x 10], "chol": [F*F numbers, row-major],
 *            "max_distance": D}}
 * (every member optional; a malformed one is an error; "ood" needs L to be
 * the last layer's input and F its size).  Call again after changing params
 * or that metadata. */
int fm_model_pack(fm_model *m, fm_error *err);

/* Workspace for batches of up to max_batch examples.  A training workspace
 * keeps every layer's output, its gradient, dropout masks, pooling
 * arg-maxes and batch statistics for the backward pass; an inference
 * workspace only the activation slots the architecture needs (fm_plan_slots). */
typedef struct fm_ws {
    size_t max_batch;
    int train;                     /* a training workspace */
    int mode;                      /* the last forward's: 1 training mode, 0 eval (backward follows it) */
    float *act[FM_MAX_LAYERS];     /* train: layer i's output [max_batch, out_size] (flatten: its input's) */
    float *grad[FM_MAX_LAYERS];    /* train: its gradient [max_batch, out_size] */
    float *save[FM_MAX_LAYERS];    /* train: floats a layer keeps for backward */
    uint8_t *mask[FM_MAX_LAYERS];  /* train: dropout keep mask / maxpool argmax [max_batch, out_size] */
    float *stats[FM_MAX_LAYERS];   /* train: batch statistics (batch norm) of the last training forward */
    float *gtmp;                   /* train: [2, max_batch, max_size] gradients to add into a value read twice */
    float *dinput;                 /* train: [max_batch, in_size] gradient of the network's input */
    int n_slots;
    int slot_of[FM_MAX_LAYERS];    /* inference: layer -> slot (FM_SLOT_INPUT: the input itself) */
    float *slots[FM_MAX_LAYERS];   /* inference: [n_slots][max_batch, max_size] */
    float *conv;                   /* convolution im2col scratch (sized for the largest) */
    size_t conv_chunk;             /* images per im2col chunk */
    float *gemm;                   /* [FM_GEMM_SCRATCH] */
    float *probs;                  /* [max_batch, 10] softmax output (training: dlogits) */
    float *aux;                    /* inference: [max_batch, in_size] a mirrored input, then [max_batch, 10] logits */
    void *block;                   /* the single allocation behind everything above */
} fm_ws;

int fm_ws_create(fm_ws *ws, const fm_arch *a, size_t max_batch, int train, fm_error *err);
void fm_ws_destroy(fm_ws *ws); /* safe on a zeroed struct */

/* Reference forward pass over x [n, in_size] (n <= max_batch).  train != 0
 * is training mode: dropout with masks drawn from rng (required then), batch
 * norm on batch statistics (kept in ws->stats for fm_update_stats); it
 * needs a training workspace.  train = 0 is eval mode (in a training
 * workspace the activations are kept, so fm_backward may follow: input
 * gradients of the served function).  Returns the logits [n, 10], valid
 * until the next call with this workspace. */
const float *fm_forward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, int train,
                        fm_rng *rng);

/* Backward pass after fm_forward on the same x with a training workspace,
 * in the forward's mode: given dlogits [n, 10], accumulates parameter
 * gradients into grads [n_params] (+=; buffers such as running statistics
 * get none; grads = NULL skips them).  dinput [n, in_size], when not NULL,
 * receives the gradient of the input (overwritten). */
void fm_backward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, const float *dlogits, size_t n,
                 float *grads);
void fm_backward_input(const fm_arch *a, const float *params, fm_ws *ws, const float *x, const float *dlogits,
                       size_t n, float *grads, float *dinput);

/* After a training step: the running statistics in params (batch norm)
 * from the batch statistics of the n_ws workspaces' last training forwards
 * (one per thread's share of the batch, averaged in order; workspaces that
 * saw no example are left out by passing n_ws without them). */
void fm_update_stats(const fm_arch *a, float *params, fm_ws *const *ws, size_t n_ws);

/* Inference (reference): probabilities [n, 10] for any n (processed in
 * chunks of ws->max_batch; eval mode). */
void fm_predict(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, float *probs);

/* Inference for a loaded model: its plan when it has one (fm_model_pack),
 * else the reference.  fm_model_forward: the network's logits of one chunk
 * (n <= ws->max_batch), valid until the next call, as fm_forward returns
 * them.  fm_model_logits: what the model serves before the softmax, for
 * any n (the mirror averaged in when m->tta).  fm_model_predict: the served
 * probabilities, softmax(logits / temperature), [n, 10]. */
const float *fm_model_forward(const fm_model *m, fm_ws *ws, const float *x, size_t n);
void fm_model_logits(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *logits);
/* fm_model_logits, and when scores is not NULL each image's detector score
 * [n] (its own features, not the mirror's; 0 without a detector). */
void fm_model_logits_scores(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *logits, float *scores);
/* The features (the last layer's input) of n <= ws->max_batch images, [n, F], into out. */
void fm_model_features(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *out);
/* The detector's score of one feature vector [F]. */
float fm_ood_score(const fm_ood *o, const float *features);
void fm_ood_free(fm_ood *o); /* NULL is fine */
void fm_model_predict(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *probs);
/* softmax(logits / m->temperature) of n rows */
void fm_model_softmax(const fm_model *m, const float *logits, size_t n, float *probs);
/* 1 when an answer with these probabilities [10] and detector score is to be marked uncertain */
int fm_model_uncertain(const fm_model *m, const float *probs, float score);

#endif
