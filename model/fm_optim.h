/* fm_optim.h - optimisers over the flat parameter buffer: one loop each.
 *
 * SGD in Keras' form, v = mu v - lr g; p += v (optionally Nesterov:
 * p += mu v - lr g), which with a constant rate equals PyTorch's
 * torch.optim.SGD (momentum buffer b = -v / lr); weight decay there is L2 in
 * the gradient, g += wd p (PyTorch's weight_decay).  Adam with Keras'
 * defaults (beta1 0.9, beta2 0.999, epsilon 1e-7, applied as Keras does:
 * p -= lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)).
 * AdamW: that Adam with decoupled weight decay, p -= lr wd p before the
 * step (Loshchilov & Hutter; torch.optim.AdamW's order).
 *
 * Weight decay applies where flags say FM_T_DECAY (the weights of linear and
 * convolution layers; not biases, not batch-norm parameters), and nothing
 * moves where the flags lack FM_T_TRAIN (running statistics).  The learning
 * rate may change between steps (schedules set o->lr).  The state (m, v,
 * t) is one block the trainer checkpoints as it is. */
#ifndef FM_OPTIM_H
#define FM_OPTIM_H

#include <stdint.h>

#include "fm_common.h"

typedef enum fm_opt_kind { FM_OPT_SGD, FM_OPT_ADAM, FM_OPT_ADAMW } fm_opt_kind;

typedef struct fm_optim {
    fm_opt_kind kind;
    float lr;
    float momentum;            /* SGD only; 0 = plain SGD */
    int nesterov;              /* SGD with momentum: Nesterov's form */
    float weight_decay;        /* SGD: L2 in the gradient; AdamW: decoupled; Adam: L2 in the gradient */
    const uint8_t *flags;      /* [n] FM_T_* per parameter (fm_arch_param_flags), or NULL: all trained and decayed */
    float beta1, beta2, eps;   /* Adam */
    size_t n;                  /* parameters */
    uint64_t t;                /* steps taken */
    float *m;                  /* [n] Adam first moment / SGD velocity (NULL for plain SGD) */
    float *v;                  /* [n] Adam second moment (NULL for SGD) */
} fm_optim;

int fm_optim_create(fm_optim *o, fm_opt_kind kind, size_t n, float lr, float momentum, fm_error *err);
void fm_optim_destroy(fm_optim *o); /* safe on a zeroed struct */
/* params -= update(grads) */
void fm_optim_step(fm_optim *o, float *params, const float *grads);
/* "adam" / "adamw" / "sgd" <-> kind; -1 when unknown */
int fm_optim_parse(const char *name);
const char *fm_optim_name(fm_opt_kind kind);

#endif
