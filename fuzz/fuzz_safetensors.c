/* fuzz_safetensors.c - libFuzzer target for the weight-file loader
 * fm_st_load_buffer() (the in-memory twin of fm_st_load, which reads the
 * file whole and calls the same parser): header length, JSON header,
 * __metadata__, the architecture JSON in it (fm_arch parsing and shape
 * inference), dtypes, shapes, data offsets tiling, NaN/Inf weights.
 *
 * Each input is loaded twice: without an expected architecture (the file
 * must carry one) and with one (the tiny MLP or CNN of fuzz_st_arch.h, by input length).  A file
 * that loads must save again (fm_st_save_buffer) and load back to the same
 * parameters. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_arch.h"
#include "fm_st.h"
#include "fuzz_st_arch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const fm_model *m) {
    uint8_t *buf = NULL;
    size_t len = 0;
    fm_error err;
    if (fm_st_save_buffer(m, &buf, &len, &err) != 0) {
        fprintf(stderr, "a loaded model does not save: %s\n", err.msg);
        abort();
    }
    fm_model again;
    if (fm_st_load_buffer(&again, buf, len, NULL, &err) != 0) {
        fprintf(stderr, "a saved model does not load: %s\n", err.msg);
        abort();
    }
    if (again.arch.n_params != m->arch.n_params ||
        memcmp(again.params, m->params, m->arch.n_params * sizeof(float)) != 0) {
        fprintf(stderr, "round trip changed the parameters\n");
        abort();
    }
    fm_model_free(&again);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fm_arch expect[2];
    static int ready;
    fm_error err;
    if (!ready) {
        if (fm_arch_from_json(&expect[0], FUZZ_ST_ARCH_MLP, &err) || fm_arch_from_json(&expect[1], FUZZ_ST_ARCH_CNN, &err))
            abort();
        ready = 1;
    }
    /* A private copy of exact length, so ASan sees any over-read. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) abort();
    if (size) memcpy(buf, data, size);
    fm_model m;
    if (fm_st_load_buffer(&m, buf, size, NULL, &err) == 0) {
        round_trip(&m);
        fm_model_free(&m);
    }
    if (fm_st_load_buffer(&m, buf, size, &expect[size & 1], &err) == 0) {
        round_trip(&m);
        fm_model_free(&m);
    }
    free(buf);
    return 0;
}
