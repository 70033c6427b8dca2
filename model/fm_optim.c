/* fm_optim.c - SGD and Adam, each a single loop over the flat buffers. */
#include "fm_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fm_optim_create(fm_optim *o, fm_opt_kind kind, size_t n, float lr, float momentum, fm_error *err) {
    memset(o, 0, sizeof *o);
    if (!(lr > 0.0f) || !isfinite(lr)) return fm_seterr(err, "learning rate must be a positive number");
    if (!(momentum >= 0.0f && momentum < 1.0f)) return fm_seterr(err, "momentum must be in [0, 1)");
    o->kind = kind, o->lr = lr, o->momentum = momentum, o->n = n;
    o->beta1 = 0.9f, o->beta2 = 0.999f, o->eps = 1e-7f;
    size_t nbuf = kind == FM_OPT_ADAM ? 2 : momentum > 0.0f ? 1 : 0;
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

void fm_optim_step(fm_optim *o, float *params, const float *grads) {
    o->t++;
    size_t n = o->n;
    if (o->kind == FM_OPT_ADAM) {
        double b1t = pow(o->beta1, (double)o->t), b2t = pow(o->beta2, (double)o->t);
        float lr_t = (float)(o->lr * sqrt(1.0 - b2t) / (1.0 - b1t));
        float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
        float *m = o->m, *v = o->v;
        for (size_t i = 0; i < n; i++) {
            float g = grads[i];
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            params[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
        }
    } else if (o->m) {
        float mu = o->momentum, lr = o->lr, *vel = o->m;
        for (size_t i = 0; i < n; i++) {
            vel[i] = mu * vel[i] - lr * grads[i];
            params[i] += vel[i];
        }
    } else {
        float lr = o->lr;
        for (size_t i = 0; i < n; i++) params[i] -= lr * grads[i];
    }
}

int fm_optim_parse(const char *name) {
    if (strcmp(name, "adam") == 0) return FM_OPT_ADAM;
    if (strcmp(name, "sgd") == 0) return FM_OPT_SGD;
    return -1;
}

const char *fm_optim_name(fm_opt_kind kind) { return kind == FM_OPT_ADAM ? "adam" : "sgd"; }
