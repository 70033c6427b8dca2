/* fm_net.c - workspaces and the forward / backward passes of a sequential
 * network over the layer kernels.  The training workspace keeps each
 * layer's output (the input of the next layer's backward); gradients flow
 * back through two ping-pong buffers. */
#include "fm_net.h"

#include <stdlib.h>
#include <string.h>

#include "fm_gemm.h"
#include "fm_layers.h"

enum { TRAIN_CHUNK = 16, INFER_CHUNK = 4 };

static size_t align16(size_t nfloats) { return (nfloats + 15) & ~(size_t)15; }

int fm_ws_create(fm_ws *ws, const fm_arch *a, size_t max_batch, int train, fm_error *err) {
    memset(ws, 0, sizeof *ws);
    if (max_batch == 0 || max_batch > 65536) return fm_seterr(err, "batch size must be in [1, 65536]");
    size_t chunk = max_batch < (train ? TRAIN_CHUNK : INFER_CHUNK) ? max_batch : (train ? TRAIN_CHUNK : INFER_CHUNK);
    size_t conv = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type != FM_CONV2D) continue;
        size_t s = fm_conv2d_scratch((size_t)L->in_c, (size_t)L->units, (size_t)L->kernel,
                                     (size_t)L->out_h, (size_t)L->out_w, chunk);
        if (s > conv) conv = s;
    }
    /* one block: floats first (16-float aligned pieces), then the byte masks */
    size_t act = align16(max_batch * a->max_size);
    size_t nf = 2 * act + align16(conv) + align16(FM_GEMM_SCRATCH) + align16(max_batch * FM_N_CLASSES);
    /* eval mode keeps no masks: max-pooling there computes values only */
    size_t nbytes_masks = 0;
    if (train) {
        for (int i = 0; i < a->n_layers; i++) {
            nf += align16(max_batch * a->layers[i].out_size);
            fm_ltype t = a->layers[i].type;
            if (t == FM_DROPOUT || t == FM_MAXPOOL2D) nbytes_masks += align16(max_batch * a->layers[i].out_size);
        }
    }
    char *block = malloc(nf * sizeof(float) + (nbytes_masks ? nbytes_masks : 1));
    if (!block) return fm_seterr(err, "out of memory allocating a workspace for batch %zu", max_batch);
    float *f = (float *)block;
    uint8_t *m = (uint8_t *)(f + nf);
    ws->block = block;
    ws->max_batch = max_batch;
    ws->train = train;
    ws->conv_chunk = chunk;
    ws->ping = f, f += act;
    ws->pong = f, f += act;
    ws->conv = f, f += align16(conv);
    ws->gemm = f, f += align16(FM_GEMM_SCRATCH);
    ws->probs = f, f += align16(max_batch * FM_N_CLASSES);
    if (train) {
        for (int i = 0; i < a->n_layers; i++) {
            size_t sz = align16(max_batch * a->layers[i].out_size);
            ws->act[i] = f, f += sz;
            fm_ltype t = a->layers[i].type;
            if (t == FM_DROPOUT || t == FM_MAXPOOL2D) ws->mask[i] = m, m += sz;
        }
    }
    return 0;
}

void fm_ws_destroy(fm_ws *ws) {
    free(ws->block);
    memset(ws, 0, sizeof *ws);
}

/* Runs layer L on in[n, in_size] into out[n, out_size]. */
static void layer_forward(const fm_layer *L, const float *params, const float *pw, fm_ws *ws, float *out,
                          uint8_t *mask, const float *in, size_t n, int train, fm_rng *rng) {
    switch (L->type) {
    case FM_LINEAR:
        fm_linear_forward(out, in, params + L->w_off, pw, params + L->b_off, n, (size_t)L->in_c,
                          (size_t)L->units, ws->gemm);
        break;
    case FM_CONV2D:
        fm_conv2d_forward(out, in, params + L->w_off, pw, params + L->b_off, n, (size_t)L->in_c,
                          (size_t)L->in_h, (size_t)L->in_w, (size_t)L->units, (size_t)L->kernel,
                          L->same ? (size_t)L->kernel / 2 : 0, ws->conv, ws->conv_chunk, ws->gemm);
        break;
    case FM_MAXPOOL2D:
        fm_maxpool_forward(out, mask, in, n, (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w,
                           (size_t)L->kernel);
        break;
    case FM_RELU:
        fm_relu_forward(out, in, n * L->out_size);
        break;
    case FM_DROPOUT:
        if (train && L->rate > 0.0f)
            fm_dropout_forward(out, mask, in, n * L->out_size, L->rate, rng);
        else if (out != in)
            memcpy(out, in, n * L->out_size * sizeof(float)); /* identity in eval mode */
        break;
    case FM_FLATTEN:
        if (out != in) memcpy(out, in, n * L->out_size * sizeof(float));
        break;
    }
}

/* GEMM shape of a weight layer: N outputs, K inputs per output. */
static void weight_shape(const fm_layer *L, size_t *N, size_t *K) {
    *N = (size_t)L->units;
    *K = L->type == FM_LINEAR ? (size_t)L->in_c : (size_t)L->in_c * (size_t)L->kernel * (size_t)L->kernel;
}

/* Floats of a weight layer's packed weights: a dense layer's are GEMM
 * operand B (x w^T), a convolution's operand A (w times the patches) or,
 * for a small output, B (patches times w^T; fm_conv2d_packs_b). */
static int packs_as_a(const fm_layer *L) {
    return L->type == FM_CONV2D && !fm_conv2d_packs_b((size_t)L->out_h, (size_t)L->out_w);
}

static size_t packed_floats(const fm_layer *L) {
    size_t N, K;
    weight_shape(L, &N, &K);
    return packs_as_a(L) ? fm_gemm_packed_a_size(N, K) : fm_gemm_packed_size(N, K);
}

int fm_model_pack(fm_model *m, fm_error *err) {
    const fm_arch *a = &m->arch;
    size_t total = 0, N, K;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type == FM_LINEAR || L->type == FM_CONV2D) total += packed_floats(L);
    }
    float *p = malloc((total ? total : 1) * sizeof *p);
    if (!p) return fm_seterr(err, "out of memory packing the weights of %s (%zu floats)", a->name, total);
    float *q = p;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type != FM_LINEAR && L->type != FM_CONV2D) continue;
        weight_shape(L, &N, &K);
        if (packs_as_a(L))
            fm_gemm_pack_a(N, K, m->params + L->w_off, K, q);
        else
            fm_gemm_pack_b(1, N, K, m->params + L->w_off, K, q);
        q += packed_floats(L);
    }
    free(m->packed);
    m->packed = p;
    return 0;
}

static const float *forward(const fm_arch *a, const float *params, const float *packed, fm_ws *ws, const float *x,
                            size_t n, int train, fm_rng *rng);

const float *fm_forward(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n,
                        int train, fm_rng *rng) {
    return forward(a, params, NULL, ws, x, n, train, rng);
}

/* Index of the first layer after i that is not a dropout (a no-op in
 * inference); -1 when none. */
static int next_layer(const fm_arch *a, int i) {
    for (i++; i < a->n_layers; i++)
        if (a->layers[i].type != FM_DROPOUT) return i;
    return -1;
}

static const float *forward(const fm_arch *a, const float *params, const float *packed, fm_ws *ws, const float *x,
                            size_t n, int train, fm_rng *rng) {
    const float *in = x;
    if (train) {
        for (int i = 0; i < a->n_layers; i++) {
            layer_forward(&a->layers[i], params, NULL, ws, ws->act[i], ws->mask[i], in, n, 1, rng);
            in = ws->act[i];
        }
        return in;
    }
    /* inference: ping-pong; flatten and dropout are no-ops, relu works in place */
    const float *pw = packed;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type == FM_FLATTEN || L->type == FM_DROPOUT) continue;
        const float *lpw = NULL;
        if (pw && (L->type == FM_LINEAR || L->type == FM_CONV2D)) {
            lpw = pw;
            pw += packed_floats(L);
        }
        int relu = -1, pool = -1; /* a convolution's relu and 2x2 max-pool, fused with its bias */
        if (L->type == FM_CONV2D) {
            relu = next_layer(a, i);
            if (relu >= 0 && a->layers[relu].type == FM_RELU) {
                pool = next_layer(a, relu);
                if (pool >= 0 && !(a->layers[pool].type == FM_MAXPOOL2D && a->layers[pool].kernel == 2)) pool = -1;
            } else {
                relu = -1;
            }
        }
        if (relu >= 0) {
            /* t: the convolution without its bias, in the buffer in is not;
             * pooling needs the other buffer (in's, free once t is made),
             * bias + relu work in place */
            float *t = in == ws->ping ? ws->pong : ws->ping;
            float *out = pool < 0 ? t : t == ws->ping ? ws->pong : ws->ping;
            fm_conv2d_forward(t, in, params + L->w_off, lpw, NULL, n, (size_t)L->in_c, (size_t)L->in_h,
                              (size_t)L->in_w, (size_t)L->units, (size_t)L->kernel,
                              L->same ? (size_t)L->kernel / 2 : 0, ws->conv, ws->conv_chunk, ws->gemm);
            size_t OH = (size_t)L->out_h, OW = (size_t)L->out_w;
            if (pool >= 0)
                fm_maxpool2_bias_relu(out, t, params + L->b_off, n, (size_t)L->units, OH, OW);
            else
                fm_bias_relu(out, t, params + L->b_off, n, (size_t)L->units, OH * OW);
            in = out;
            i = pool >= 0 ? pool : relu;
            continue;
        }
        float *out;
        if (L->type == FM_RELU && in != x)
            out = (float *)(in == ws->ping ? ws->ping : ws->pong);
        else
            out = in == ws->ping ? ws->pong : ws->ping;
        layer_forward(L, params, lpw, ws, out, NULL, in, n, 0, NULL);
        in = out;
    }
    return in;
}

void fm_backward(const fm_arch *a, const float *params, fm_ws *ws, const float *x,
                 const float *dlogits, size_t n, float *grads) {
    const float *dy = dlogits;
    for (int i = a->n_layers - 1; i >= 0; i--) {
        const fm_layer *L = &a->layers[i];
        const float *in = i == 0 ? x : ws->act[i - 1];
        float *dx = i == 0 ? NULL : (dy == ws->ping ? ws->pong : ws->ping);
        size_t nin = n * L->in_size;
        switch (L->type) {
        case FM_LINEAR:
            fm_linear_backward(dx, grads + L->w_off, grads + L->b_off, dy, in, params + L->w_off, n,
                               (size_t)L->in_c, (size_t)L->units, ws->gemm);
            break;
        case FM_CONV2D:
            fm_conv2d_backward(dx, grads + L->w_off, grads + L->b_off, dy, in, params + L->w_off, n,
                               (size_t)L->in_c, (size_t)L->in_h, (size_t)L->in_w, (size_t)L->units,
                               (size_t)L->kernel, L->same ? (size_t)L->kernel / 2 : 0, ws->conv,
                               ws->conv_chunk, ws->gemm);
            break;
        case FM_MAXPOOL2D:
            if (dx)
                fm_maxpool_backward(dx, dy, ws->mask[i], n, (size_t)L->in_c, (size_t)L->in_h,
                                    (size_t)L->in_w, (size_t)L->kernel);
            break;
        case FM_RELU:
            if (dx) fm_relu_backward(dx, dy, ws->act[i], nin);
            break;
        case FM_DROPOUT:
            if (dx) {
                if (L->rate > 0.0f)
                    fm_dropout_backward(dx, dy, ws->mask[i], nin, L->rate);
                else
                    memcpy(dx, dy, nin * sizeof(float));
            }
            break;
        case FM_FLATTEN:
            if (dx) memcpy(dx, dy, nin * sizeof(float));
            break;
        }
        if (!dx) break;
        dy = dx;
    }
}

static void predict(const fm_arch *a, const float *params, const float *packed, fm_ws *ws, const float *x,
                    size_t n, float *probs) {
    size_t in_size = (size_t)a->in_c * a->in_h * a->in_w;
    for (size_t i = 0; i < n; i += ws->max_batch) {
        size_t nb = n - i < ws->max_batch ? n - i : ws->max_batch;
        const float *logits = forward(a, params, packed, ws, x + i * in_size, nb, 0, NULL);
        fm_softmax(probs + i * FM_N_CLASSES, logits, nb, FM_N_CLASSES);
    }
}

void fm_predict(const fm_arch *a, const float *params, fm_ws *ws, const float *x, size_t n, float *probs) {
    predict(a, params, NULL, ws, x, n, probs);
}

void fm_model_predict(const fm_model *m, fm_ws *ws, const float *x, size_t n, float *probs) {
    predict(&m->arch, m->params, m->packed, ws, x, n, probs);
}
