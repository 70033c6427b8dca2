/* fm_arch.h - architecture descriptions: a sequential network as data.
 *
 * A network is a list of layers, exactly as an equivalent PyTorch
 * torch.nn.Sequential would list them (softmax is not a layer: the network
 * outputs logits and the loss fuses softmax with cross-entropy).  Layer i's
 * parameters are named "i.weight" / "i.bias" in weight files, with PyTorch
 * layouts (linear [out,in], conv [out,in,k,k]); activations are NCHW and
 * flatten is channel-major, so a PyTorch user can load our files.
 *
 * The description is JSON, e.g.
 *   {"name":"mlp2","input":[1,28,28],"layers":[{"type":"flatten"},
 *    {"type":"linear","out":256},{"type":"relu"},{"type":"dropout","p":0.2},...]}
 * Layer types: linear {out}, conv2d {out, kernel, padding: "valid"|"same"},
 * maxpool2d {kernel (= stride)}, relu, dropout {p}, flatten.
 * fm_arch_finalize() derives every shape and parameter offset. */
#ifndef FM_ARCH_H
#define FM_ARCH_H

#include <stdio.h>

#include "fm_common.h"

#define FM_MAX_LAYERS 64

typedef enum fm_ltype {
    FM_LINEAR,
    FM_CONV2D,
    FM_MAXPOOL2D,
    FM_RELU,
    FM_DROPOUT,
    FM_FLATTEN,
} fm_ltype;

typedef struct fm_layer {
    fm_ltype type;
    int units;  /* linear: out features; conv2d: out channels */
    int kernel; /* conv2d: k of a k x k kernel; maxpool2d: window = stride */
    int same;   /* conv2d: 1 = 'same' zero padding (odd k), 0 = 'valid' */
    float rate; /* dropout: probability of dropping, in [0, 1) */
    /* derived by fm_arch_finalize(): shapes per example (C, H, W; a flat
     * vector of F features is F x 1 x 1) and where the parameters live */
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    size_t in_size, out_size; /* C*H*W */
    size_t w_off, n_w;        /* weight: offset and count in the flat buffer */
    size_t b_off, n_b;        /* bias */
} fm_layer;

typedef struct fm_arch {
    char name[32];
    int in_c, in_h, in_w; /* input shape per example: 1 x 28 x 28 */
    int flat;             /* 1 while the activation is a flat vector (derived) */
    int n_layers;
    fm_layer layers[FM_MAX_LAYERS];
    size_t n_params; /* total floats in the flat parameter buffer (derived) */
    size_t max_size; /* largest activation per example, input included (derived) */
} fm_arch;

/* Named architectures of the study: mlp2, mlp3, cnn1, cnn2, cnn3. */
int fm_arch_named(fm_arch *a, const char *name, fm_error *err);
/* Names accepted by fm_arch_named, NULL-terminated. */
extern const char *const fm_arch_names[];

/* Parses and finalizes a JSON description.  Errors name the offending layer. */
int fm_arch_from_json(fm_arch *a, const char *json, fm_error *err);
/* Reads a JSON description from a file. */
int fm_arch_from_file(fm_arch *a, const char *path, fm_error *err);
/* Canonical JSON of an architecture (compact); caller frees with free(). NULL on OOM. */
char *fm_arch_to_json(const fm_arch *a);
/* Checks the layer list and derives shapes, offsets and sizes. */
int fm_arch_finalize(fm_arch *a, fm_error *err);

const char *fm_ltype_name(fm_ltype t);    /* "linear", "conv2d", ... (JSON names) */
const char *fm_ltype_display(fm_ltype t); /* "Linear", "Conv2d", ... (PyTorch class names) */

/* Keras-like table: layer, output shape, params, totals. */
void fm_arch_summary(const fm_arch *a, FILE *f);
/* Multiply-adds of one forward pass for one example. */
size_t fm_arch_macs(const fm_arch *a);

/* Glorot-uniform weights, zero biases (Keras' defaults). */
struct fm_rng;
void fm_arch_init_params(const fm_arch *a, float *params, struct fm_rng *rng);

#endif
