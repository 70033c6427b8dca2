/* fm_net.h - a sequential network: parameters, per-thread workspace,
 * forward, backward, predict.
 *
 * A model (architecture + one contiguous float buffer of parameters + the
 * weight file's metadata) is immutable once loaded and may be shared by any
 * number of threads.  Everything that changes during a forward or backward
 * pass lives in an fm_ws, which each thread owns and allocates once for its
 * largest batch: forward, backward and predict never allocate. */
#ifndef FM_NET_H
#define FM_NET_H

#include "fm_arch.h"
#include "fm_rng.h"

/* One string metadata entry of a weight file (safetensors __metadata__). */
typedef struct fm_kv {
    char *key;
    char *value;
} fm_kv;

typedef struct fm_model {
    fm_arch arch;
    float *params; /* [arch.n_params], owned */
    size_t n_meta;
    fm_kv *meta; /* [n_meta], owned (keys and values too) */
    char sha256[65]; /* hex digest of the weight file it was loaded from ("" otherwise) */
    float *packed;   /* weights of every linear/conv layer packed for inference (fm_model_pack), owned; or NULL */
} fm_model;

/* Allocates zeroed parameters for arch (copied in).  Pair with fm_model_free. */
int fm_model_init(fm_model *m, const fm_arch *arch, fm_error *err);
void fm_model_free(fm_model *m); /* safe on a zeroed struct; leaves it zeroed */
/* Metadata lookup; NULL when absent. */
const char *fm_model_meta(const fm_model *m, const char *key);
/* Sets (adds or replaces) a metadata entry; copies both strings. */
int fm_model_set_meta(fm_model *m, const char *key, const char *value, fm_error *err);

/* Packs the weights of every linear and conv layer once, in the GEMM's
 * panel layout, for fm_model_predict (extra memory: one copy of those
 * weights).  Call again after changing params. */
int fm_model_pack(fm_model *m, fm_error *err);

/* Workspace for batches of up to max_batch examples.  A training workspace
 * keeps every layer's output, dropout masks and pooling arg-maxes for the
 * backward pass; an inference workspace only two ping-pong buffers. */
typedef struct fm_ws {
    size_t max_batch;
    int train;
    float *act[FM_MAX_LAYERS];      /* train: layer i's output [max_batch, out_size] (aliases for flatten) */
    uint8_t *mask[FM_MAX_LAYERS];   /* train: dropout keep mask / maxpool argmax [max_batch, out_size] */
    float *ping, *pong;             /* [max_batch, max_size]: inference activations; train: gradients */
    float *conv;                    /* conv im2col scratch (sized for the largest conv layer) */
    size_t conv_chunk;              /* images per im2col chunk */
    float *gemm;                    /* [FM_GEMM_SCRATCH] */
    float *probs;                   /* [max_batch, 10] softmax output */
    void *block;                    /* the single allocation behind everything above */
} fm_ws;

int fm_ws_create(fm_ws *ws, const fm_arch *a, size_t max_batch, int train, fm_error *err);
void fm_ws_destroy(fm_ws *ws); /* safe on a zeroed struct */

/* Forward pass over x [n, in_size] (n <= max_batch).  train != 0 applies
 * dropout with masks drawn from rng (required then; ignored otherwise) and
 * needs a training workspace.  Returns the logits [n, 10], valid until the
 * next call with this workspace. */
const float *fm_forward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n,
                        int train, fm_rng *rng);

/* Backward pass after fm_forward(train=1) on the same x: given dlogits
 * [n, 10], accumulates parameter gradients into grads [n_params] (+=). */
void fm_backward(const fm_arch *a, const float *params, fm_ws *ws, const float *x,
                 const float *dlogits, size_t n, float *grads);

/* Inference: probabilities [n, 10] for any n (processed in chunks of
 * ws->max_batch; eval mode, so dropout is never applied). */
void fm_predict(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, float *probs);

/* fm_predict for a loaded model: uses its packed weights when it has them
 * (bit-identical results, no per-call packing of the weights). */
void fm_model_predict(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *probs);

#endif
