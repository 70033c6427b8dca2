/* srv_fixture.c - see srv_fixture.h. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* nftw */
#endif
#include "srv_fixture.h"

#include <check.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fm_arch.h"
#include "fm_net.h"
#include "fm_rng.h"
#include "fm_st.h"

void fx_write_file(const char *dir, const char *name, const char *text) {
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

void fx_save_model(const char *weights_dir, const char *arch_name, uint64_t seed) {
    fm_arch a;
    fm_model m;
    fm_error err;
    fm_rng rng;
    char path[PATH_MAX * 2];
    ck_assert_int_eq(fm_arch_named(&a, arch_name, &err), 0);
    ck_assert_int_eq(fm_model_init(&m, &a, &err), 0);
    fm_rng_seed(&rng, seed);
    fm_arch_init_params(&m.arch, m.params, &rng);
    ck_assert_int_eq(fm_model_set_meta(&m, "metrics", "{\"test_accuracy\":0.5}", &err), 0);
    snprintf(path, sizeof path, "%s/%s.safetensors", weights_dir, arch_name);
    ck_assert_msg(fm_st_save(&m, path, &err) == 0, "%s", err.msg);
    fm_model_free(&m);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void fx_remove_tree(const char *dir) {
    if (dir && dir[0]) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
