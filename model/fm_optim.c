/* fm_optim.c - SGD, Adam and AdamW, each a single loop over the flat buffers.
 * The loops without weight decay and Nesterov are the study's, unchanged
 * (bit-identical runs); the general ones read the per-parameter flags. */
#include "fm_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_arch.h" /* FM_T_* */

int fm_optim_create(fm_optim *o, fm_opt_kind kind, size_t n, float lr, float momentum, fm_error *err) {
    memset(o, 0, sizeof *o);
    if (!(lr > 0.0f) || !isfinite(lr)) return fm_seterr(err, "learning rate must be a positive number");
    if (!(momentum >= 0.0f && momentum < 1.0f)) return fm_seterr(err, "momentum must be in [0, 1)");
    o->kind = kind, o->lr = lr, o->momentum = momentum, o->n = n;
    o->beta1 = 0.9f, o->beta2 = 0.999f, o->eps = 1e-7f;
    size_t nbuf = kind != FM_OPT_SGD ? 2 : momentum > 0.0f ? 1 : 0;
    if (nbuf) {
        o->m = calloc(nbuf * n, sizeof(float));
        if (!o->m) return fm_seterr(err, "out of memory for optimiser state");
        if (nbuf == 2) o->v = o->m + n;
    }
    return 0;
}

void fm_optim_destroy(fm_optim *o) {
    free(o->m);
    memset(o, 0, sizeof *o);
}

/* Per-parameter: trained at all, and the decay it gets. */
static inline int trained(const fm_optim *o, size_t i) { return !o->flags || (o->flags[i] & FM_T_TRAIN); }
static inline float decay_of(const fm_optim *o, size_t i) {
    return !o->flags || (o->flags[i] & FM_T_DECAY) ? o->weight_decay : 0.0f;
}

void fm_optim_step(fm_optim *o, float *params, const float *grads) {
    o->t++;
    size_t n = o->n;
    int plain = o->weight_decay == 0.0f && !o->nesterov; /* the study's loops */
    if (o->kind != FM_OPT_SGD) {
        double b1t = pow(o->beta1, (double)o->t), b2t = pow(o->beta2, (double)o->t);
        float lr_t = (float)(o->lr * sqrt(1.0 - b2t) / (1.0 - b1t));
        float b1 = o->beta1, b2 = o->beta2, eps = o->eps, lr = o->lr;
        float *m = o->m, *v = o->v;
        if (plain) {
            for (size_t i = 0; i < n; i++) {
                float g = grads[i];
                m[i] = b1 * m[i] + (1.0f - b1) * g;
                v[i] = b2 * v[i] + (1.0f - b2) * g * g;
                params[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
            }
            return;
        }
        int decoupled = o->kind == FM_OPT_ADAMW;
        for (size_t i = 0; i < n; i++) {
            if (!trained(o, i)) continue;
            float wd = decay_of(o, i), g = grads[i];
            if (decoupled)
                params[i] -= lr * wd * params[i];
            else
                g += wd * params[i];
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            params[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
        }
    } else if (o->m) {
        float mu = o->momentum, lr = o->lr, *vel = o->m;
        if (plain) {
            for (size_t i = 0; i < n; i++) {
                vel[i] = mu * vel[i] - lr * grads[i];
                params[i] += vel[i];
            }
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (!trained(o, i)) continue;
            float g = grads[i] + decay_of(o, i) * params[i];
            vel[i] = mu * vel[i] - lr * g;
            params[i] += o->nesterov ? mu * vel[i] - lr * g : vel[i];
        }
    } else {
        float lr = o->lr;
        for (size_t i = 0; i < n; i++)
            if (trained(o, i)) params[i] -= lr * (grads[i] + decay_of(o, i) * params[i]);
    }
}

int fm_optim_parse(const char *name) {
    if (strcmp(name, "adam") == 0) return FM_OPT_ADAM;
    if (strcmp(name, "adamw") == 0) return FM_OPT_ADAMW;
    if (strcmp(name, "sgd") == 0) return FM_OPT_SGD;
    return -1;
}

const char *fm_optim_name(fm_opt_kind kind) {
    return kind == FM_OPT_ADAM ? "adam" : kind == FM_OPT_ADAMW ? "adamw" : "sgd";
}
