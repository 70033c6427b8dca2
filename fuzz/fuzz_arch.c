/* fuzz_arch.c - libFuzzer target for architecture descriptions:
 * fm_arch_from_json (layer objects, every row's fields, input references
 * by index, offset and name, shape rules, projections), then for what
 * parses: the canonical JSON must parse back to the same architecture and
 * print the same; and a small enough network must run - a training
 * forward and backward of two examples, the reference eval forward and the
 * plan (fm_model_pack) - without a sanitizer report, its outputs finite. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_arch.h"
#include "fm_net.h"
#include "fm_rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run(const fm_arch *a) {
    size_t acts = 0;
    for (int i = 0; i < a->n_layers; i++) acts += a->layers[i].out_size;
    if (a->n_params > 200000 || acts > 200000 || fm_arch_macs(a) > 2000000) return; /* keep executions fast */
    size_t in = (size_t)a->in_c * a->in_h * a->in_w, n = 2;
    fm_model m = {0};
    fm_ws tw = {0}, iw = {0};
    fm_error err;
    float *x = calloc(n * in, sizeof *x), *g = calloc(a->n_params ? a->n_params : 1, sizeof *g);
    float *dl = calloc(n * FM_N_CLASSES, sizeof *dl), probs[2 * FM_N_CLASSES];
    if (!x || !g || !dl || fm_model_init(&m, a, &err) || fm_ws_create(&tw, a, n, 1, &err) ||
        fm_ws_create(&iw, a, n, 0, &err))
        goto done;
    fm_rng rng;
    fm_rng_seed(&rng, 1);
    fm_arch_init_params(a, m.params, &rng);
    for (size_t i = 0; i < n * in; i++) x[i] = fm_rng_uniform(&rng);
    for (size_t i = 0; i < n * FM_N_CLASSES; i++) dl[i] = fm_rng_uniform(&rng) - 0.5f;
    fm_forward(a, m.params, &tw, x, n, 1, &rng);
    fm_backward(a, m.params, &tw, x, dl, n, g);
    fm_predict(a, m.params, &iw, x, n, probs);
    if (fm_model_pack(&m, &err) == 0) fm_model_predict(&m, &iw, x, n, probs);
    for (size_t i = 0; i < n * FM_N_CLASSES; i++)
        if (!(probs[i] >= 0.0f && probs[i] <= 1.0f) && !isnan(probs[i])) abort(); /* NaN may come from huge weights */
done:
    fm_ws_destroy(&tw);
    fm_ws_destroy(&iw);
    fm_model_free(&m);
    free(x), free(g), free(dl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    static fm_arch a, b; /* ~50 KB each: not on the stack */
    fm_error err;
    if (fm_arch_from_json(&a, s, &err) == 0) {
        char *j = fm_arch_to_json(&a), why[160];
        if (!j) abort();
        if (fm_arch_from_json(&b, j, &err) != 0) {
            fprintf(stderr, "canonical JSON does not parse: %s\n%s\n", err.msg, j);
            abort();
        }
        char *j2 = fm_arch_to_json(&b);
        if (!j2 || strcmp(j, j2) != 0 || fm_arch_differs(&a, &b, why, sizeof why) ||
            a.n_params != b.n_params || a.n_trainable != b.n_trainable) {
            fprintf(stderr, "canonical JSON does not round-trip\n%s\n%s\n", j, j2 ? j2 : "(null)");
            abort();
        }
        free(j), free(j2);
        run(&a);
    } else if (!err.msg[0]) {
        abort(); /* a refusal always says why */
    }
    free(s);
    return 0;
}
