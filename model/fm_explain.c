/* fm_explain.c - the attribution methods of fm_explain.h over the
 * reference forward / backward (fm_net.h) in eval mode. */
#include "fm_explain.h"

#include <math.h>
#include <string.h>

#include "fm_layers.h"

fm_explain_opts fm_explain_defaults(void) {
    return (fm_explain_opts){.method = FM_EXPLAIN_IG, .target_prob = 0, .steps = 32, .patch = 4, .stride = 2};
}

int fm_explain_parse(const char *name) {
    if (strcmp(name, "gradient") == 0) return FM_EXPLAIN_GRADIENT;
    if (strcmp(name, "ig") == 0) return FM_EXPLAIN_IG;
    if (strcmp(name, "occlusion") == 0) return FM_EXPLAIN_OCCLUSION;
    return -1;
}

const char *fm_explain_name(fm_explain_method m) {
    return m == FM_EXPLAIN_GRADIENT ? "gradient" : m == FM_EXPLAIN_IG ? "ig" : "occlusion";
}

int fm_explain_check(const fm_explain_opts *o, fm_error *err) {
    if (o->method < FM_EXPLAIN_GRADIENT || o->method > FM_EXPLAIN_OCCLUSION) return fm_seterr(err, "unknown method");
    if (o->method == FM_EXPLAIN_IG && (o->steps < 1 || o->steps > FM_EXPLAIN_MAX_STEPS))
        return fm_seterr(err, "steps must be in [1, %d]", FM_EXPLAIN_MAX_STEPS);
    if (o->method == FM_EXPLAIN_OCCLUSION &&
        (o->patch < 1 || o->patch > FM_IMG_W || o->stride < 1 || o->stride > o->patch))
        return fm_seterr(err, "occlusion needs a patch in [1, %d] and a stride in [1, patch]", FM_IMG_W);
    return 0;
}

/* Patch positions along a side of n: 0, s, 2s, ... and the last at n - k. */
static int n_positions(int n, int k, int s) { return (n - k + s - 1) / s + 1; }
static int position(int i, int n, int k, int s) { return i * s < n - k ? i * s : n - k; }

enum { OCCLUSION_CHUNK = 64 };

size_t fm_explain_batch(const fm_explain_opts *o) {
    switch (o->method) {
    case FM_EXPLAIN_GRADIENT: return 2; /* the image and the black image */
    case FM_EXPLAIN_IG: return (size_t)o->steps + 2;
    case FM_EXPLAIN_OCCLUSION: break;
    }
    size_t p = (size_t)n_positions(FM_IMG_H, o->patch, o->stride) * (size_t)n_positions(FM_IMG_W, o->patch, o->stride);
    return p + 2 < OCCLUSION_CHUNK ? p + 2 : OCCLUSION_CHUNK;
}

/* The explained output of row z [10] for class c, and (when d is not NULL)
 * its gradient with respect to the logits: onehot(c), or for p_c,
 * p_c (onehot(c) - p). */
static float output_of(const float *z, int c, int prob, float *d) {
    float p[FM_N_CLASSES];
    fm_softmax(p, z, 1, FM_N_CLASSES);
    if (d)
        for (int k = 0; k < FM_N_CLASSES; k++) d[k] = prob ? p[c] * ((k == c) - p[k]) : (float)(k == c);
    return prob ? p[c] : z[c];
}

int fm_explain(const fm_model *m, fm_ws *ws, float *scratch, const float *x, int c, const fm_explain_opts *o,
               float *attr, fm_explain_info *info, fm_error *err) {
    const fm_arch *a = &m->arch;
    size_t in = (size_t)a->in_c * a->in_h * a->in_w, B = fm_explain_batch(o);
    if (fm_explain_check(o, err)) return -1;
    if (c < 0 || c >= FM_N_CLASSES) return fm_seterr(err, "class must be in [0, %d]", FM_N_CLASSES - 1);
    if (!ws->train || ws->max_batch < B)
        return fm_seterr(err, "explaining needs a training workspace of %zu examples", B);
    float *xs = scratch, *dx = scratch + B * in, *dl = scratch + 2 * B * in; /* [B, in] inputs, their gradients, [B, 10] */
    memset(info, 0, sizeof *info);
    memset(dl, 0, B * FM_N_CLASSES * sizeof *dl);
    if (o->method != FM_EXPLAIN_OCCLUSION) {
        /* rows: the points along the path, x, black (ig); x, black (gradient) */
        int ig = o->method == FM_EXPLAIN_IG;
        size_t steps = ig ? (size_t)o->steps : 1, xrow = ig ? steps : 0, n = xrow + 2;
        for (size_t k = 0; ig && k < steps; k++) {
            float alpha = ((float)k + 0.5f) / (float)steps;
            for (size_t i = 0; i < in; i++) xs[k * in + i] = alpha * x[i];
        }
        memcpy(xs + xrow * in, x, in * sizeof *x);
        memset(xs + (xrow + 1) * in, 0, in * sizeof *x);
        const float *z = fm_forward(a, m->params, ws, xs, n, 0, NULL);
        for (size_t k = 0; k < steps; k++) output_of(z + k * FM_N_CLASSES, c, o->target_prob, dl + k * FM_N_CLASSES);
        info->out = output_of(z + xrow * FM_N_CLASSES, c, o->target_prob, NULL);
        info->baseline = output_of(z + (xrow + 1) * FM_N_CLASSES, c, o->target_prob, NULL);
        fm_backward_input(a, m->params, ws, xs, dl, n, NULL, dx);
        for (size_t i = 0; i < in; i++) {
            double g = 0.0;
            for (size_t k = 0; k < steps; k++) g += dx[k * in + i];
            attr[i] = (float)((double)x[i] * g / (double)steps);
        }
        info->evaluations = (int)n;
    } else {
        int k = o->patch, s = o->stride, ph = n_positions(a->in_h, k, s), pw = n_positions(a->in_w, k, s);
        int total = ph * pw, done = 0;
        static const int LIMIT = 4096;
        float sum_drop[4096], count[4096];
        if ((size_t)in > (size_t)LIMIT) return fm_seterr(err, "occlusion: input larger than %d pixels", LIMIT);
        memset(sum_drop, 0, in * sizeof *sum_drop);
        memset(count, 0, in * sizeof *count);
        /* the image and the black image first */
        memcpy(xs, x, in * sizeof *x);
        memset(xs + in, 0, in * sizeof *x);
        const float *z = fm_forward(a, m->params, ws, xs, 2, 0, NULL);
        info->out = output_of(z, c, o->target_prob, NULL);
        info->baseline = output_of(z + FM_N_CLASSES, c, o->target_prob, NULL);
        info->evaluations = 2;
        while (done < total) {
            int nb = total - done < (int)ws->max_batch ? total - done : (int)ws->max_batch;
            for (int j = 0; j < nb; j++) {
                int p = done + j, y0 = position(p / pw, a->in_h, k, s), x0 = position(p % pw, a->in_w, k, s);
                float *img = xs + (size_t)j * in;
                memcpy(img, x, in * sizeof *x);
                for (int ch = 0; ch < a->in_c; ch++)
                    for (int r = y0; r < y0 + k; r++)
                        memset(img + ((size_t)ch * a->in_h + r) * a->in_w + x0, 0, (size_t)k * sizeof *img);
            }
            z = fm_forward(a, m->params, ws, xs, (size_t)nb, 0, NULL);
            for (int j = 0; j < nb; j++) {
                int p = done + j, y0 = position(p / pw, a->in_h, k, s), x0 = position(p % pw, a->in_w, k, s);
                float drop = info->out - output_of(z + (size_t)j * FM_N_CLASSES, c, o->target_prob, NULL);
                for (int ch = 0; ch < a->in_c; ch++)
                    for (int r = y0; r < y0 + k; r++)
                        for (int q = x0; q < x0 + k; q++) {
                            size_t i = ((size_t)ch * a->in_h + r) * a->in_w + q;
                            sum_drop[i] += drop, count[i] += 1.0f;
                        }
            }
            done += nb;
            info->evaluations += nb;
        }
        for (size_t i = 0; i < in; i++) attr[i] = count[i] > 0 ? sum_drop[i] / count[i] : 0.0f;
    }
    double sum = 0.0;
    for (size_t i = 0; i < in; i++) sum += attr[i];
    info->sum = (float)sum;
    if (o->method == FM_EXPLAIN_IG) info->completeness_error = (float)fabs(sum - ((double)info->out - info->baseline));
    return 0;
}
