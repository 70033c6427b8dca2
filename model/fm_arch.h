/* fm_arch.h - architectures as data: a graph of layers written in JSON.
 *
 * A network is a list of layers in execution order.  By default a layer
 * reads the layer before it (the first reads the network's input), which is
 * all a sequential network needs; a layer may instead name its inputs, so
 * residual blocks can be written:
 *
 *   {"name":"mlp2","input":[1,28,28],"layers":[{"type":"flatten"},
 *    {"type":"linear","out":256},{"type":"relu"},{"type":"dropout","p":0.2},...]}
 *
 *   ... {"type":"relu","name":"b1"},
 *       {"type":"conv2d","out":32,"kernel":3,"stride":2,"padding":"same","bias":false},
 *       {"type":"batchnorm2d"},{"type":"relu"},
 *       {"type":"conv2d","out":32,"kernel":3,"padding":"same","bias":false},
 *       {"type":"batchnorm2d"},
 *       {"type":"add","inputs":[-1,"b1"]}, ...
 *
 * "inputs" lists references: a layer index (0-based, earlier layers only), a
 * negative number counted back from this layer (-1 = the layer before), a
 * layer's "name", or "input" (the network's input).  Each layer type is one
 * row of the descriptor table in fm_ops.c (its JSON fields, PyTorch class,
 * parameter tensors, shape rule, kernels); fm_ops.h is its interface.
 *
 * Softmax is not a layer: the network outputs logits and the loss fuses
 * softmax with cross-entropy.  Layer i's tensors are named "i.weight",
 * "i.bias", "i.running_mean", ... in weight files, with the layouts of the
 * equivalent PyTorch module (tools/torch_arch.py builds it), NCHW
 * activations and channel-major flatten, so PyTorch loads our files.
 * fm_arch_finalize() derives every shape and parameter offset. */
#ifndef FM_ARCH_H
#define FM_ARCH_H

#include <stdio.h>

#include "fm_common.h"

#define FM_MAX_LAYERS 256
#define FM_MAX_INPUTS 2   /* inputs of one layer (add: two) */
#define FM_MAX_TENSORS 8  /* named tensors of one layer */
#define FM_INPUT (-1)     /* "the network's input" in fm_layer.in[] */

/* Row indices of the descriptor table (fm_ops.c), one per layer type. */
typedef enum fm_ltype {
    FM_LINEAR,
    FM_CONV2D,
    FM_MAXPOOL2D,
    FM_RELU,
    FM_DROPOUT,
    FM_FLATTEN,
    FM_BATCHNORM2D,
    FM_BATCHNORM1D,
    FM_AVGPOOL2D,
    FM_GLOBAL_AVGPOOL,
    FM_ADD,
    FM_N_LTYPES
} fm_ltype;

/* add's shortcut projection when its inputs' shapes differ */
typedef enum fm_proj { FM_PROJ_NONE, FM_PROJ_CONV_BN, FM_PROJ_CONV } fm_proj;

typedef struct fm_layer {
    fm_ltype type;
    char name[32]; /* optional, "" when unnamed; referred to by "inputs" */
    int n_in;                /* number of inputs */
    int in[FM_MAX_INPUTS];   /* producing layer of each input, or FM_INPUT */
    /* hyper-parameters; which ones a type uses is its row's business */
    int units;      /* linear: out features; conv2d: out channels */
    int kernel;     /* conv2d: k of a k x k kernel; pools: window (= stride) */
    int stride;     /* conv2d: 1 or 2 */
    int same;       /* conv2d: 1 = zero padding kernel/2 (PyTorch padding=k//2), 0 = 'valid' */
    int bias;       /* linear, conv2d: 1 = has a bias (default) */
    float rate;     /* dropout: probability of dropping, in [0, 1) */
    float momentum; /* batchnorm (and add's projection): running-statistics momentum (PyTorch's 0.1) */
    float eps;      /* batchnorm (and add's projection): added to the variance (1e-5) */
    fm_proj proj;   /* add: projection of the second input (derived: none when the shapes agree) */
    /* derived by fm_arch_finalize(): shapes per example (C, H, W; a flat
     * vector of F features is F x 1 x 1), of the first input and the output */
    int in_c, in_h, in_w;
    int in2_c, in2_h, in2_w;  /* the second input's, for layers with two (add) */
    int out_c, out_h, out_w;
    size_t in_size, out_size; /* C*H*W */
    size_t p_off, n_p;        /* all of its tensors in the flat buffer */
    size_t w_off, n_w;        /* its "weight" tensor (n_w = 0 when none) */
    size_t b_off, n_b;        /* its "bias" tensor (n_b = 0 when none) */
    size_t n_consumers;       /* layers that read its output (derived) */
    int alias_eval;           /* its row's: in eval mode the output is the input (flatten, dropout) */
    int in_place;             /* its row's: inference may write the output over the input (relu) */
} fm_layer;

typedef struct fm_arch {
    char name[32];
    int in_c, in_h, in_w; /* input shape per example: 1 x 28 x 28 */
    int flat;             /* 1 when the output came through a flatten (derived) */
    int graph;            /* 1 when some layer does not simply read the one before (derived) */
    int n_layers;
    fm_layer layers[FM_MAX_LAYERS];
    size_t n_params;    /* floats in the flat parameter buffer: every tensor, buffers included (derived) */
    size_t n_trainable; /* of which trainable (PyTorch's sum of p.numel() for p in parameters()) */
    size_t max_size;    /* largest activation per example, input included (derived) */
} fm_arch;

/* One named tensor of a layer, as weight files store it. */
enum {
    FM_T_TRAIN = 1, /* a parameter with a gradient (else a buffer: running statistics) */
    FM_T_DECAY = 2, /* weight decay applies (weights of linear and conv layers) */
    FM_T_I64 = 4,   /* stored as int64 in files (num_batches_tracked); a float in memory */
};
typedef struct fm_tensor {
    char name[48]; /* "3.weight", "7.proj.1.running_var" */
    int rank;
    int dims[4];
    size_t off, count; /* in the flat buffer, in floats */
    unsigned flags;
} fm_tensor;

/* Named architectures: the study's five (mlp2, mlp3, cnn1, cnn2, cnn3) and
 * the modern ones beside them (see fm_arch_names). */
int fm_arch_named(fm_arch *a, const char *name, fm_error *err);
/* Names accepted by fm_arch_named, NULL-terminated; the first
 * FM_N_STUDY_ARCHS are the study's (mlp2, mlp3, cnn1, cnn2, cnn3). */
extern const char *const fm_arch_names[];
#define FM_N_STUDY_ARCHS 5

/* Parses and finalizes a JSON description.  Errors name the offending layer. */
int fm_arch_from_json(fm_arch *a, const char *json, fm_error *err);
/* Reads a JSON description from a file. */
int fm_arch_from_file(fm_arch *a, const char *path, fm_error *err);
/* Canonical JSON of an architecture (compact; fields at their defaults
 * left out, so the study's descriptions come back as they were written);
 * caller frees with free().  NULL on OOM. */
char *fm_arch_to_json(const fm_arch *a);
/* Checks the layer graph and derives shapes, offsets and sizes. */
int fm_arch_finalize(fm_arch *a, fm_error *err);
/* 1 (and a reason in why) when two architectures do not compute the same
 * function with the same tensors (names and dropout rates may differ). */
int fm_arch_differs(const fm_arch *f, const fm_arch *e, char *why, size_t n);

const char *fm_ltype_name(fm_ltype t);    /* "linear", "conv2d", ... (JSON names) */
const char *fm_ltype_display(fm_ltype t); /* "Linear", "Conv2d", ... (PyTorch class names) */

/* The named tensors of layer i (layer order, PyTorch's state_dict order);
 * returns how many (<= FM_MAX_TENSORS). */
int fm_layer_tensors(const fm_arch *a, int i, fm_tensor *t);
/* Every tensor of the network; t needs room for fm_arch_n_tensors(a). */
int fm_arch_n_tensors(const fm_arch *a);
int fm_arch_tensors(const fm_arch *a, fm_tensor *t);
/* Per-float flags of the flat buffer (FM_T_* of the tensor each float belongs to). */
void fm_arch_param_flags(const fm_arch *a, uint8_t *flags);

/* Keras-like table: layer, output shape, params, inputs; totals. */
void fm_arch_summary(const fm_arch *a, FILE *f);
/* Multiply-adds of one forward pass for one example. */
size_t fm_arch_macs(const fm_arch *a);

/* Initial parameters: Glorot-uniform weights and zero biases (Keras'
 * defaults) for linear and conv layers, batch norm at identity (weight 1,
 * bias 0, running mean 0, running variance 1). */
struct fm_rng;
void fm_arch_init_params(const fm_arch *a, float *params, struct fm_rng *rng);

#endif
