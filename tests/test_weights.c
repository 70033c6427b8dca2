/* test_weights.c - every shipped weight file in weights/ re-evaluated on the
 * 10,000 test images must reproduce, exactly, the test accuracy recorded in
 * its own metadata (so a stale or corrupted file can never ship), must meet
 * the study's bar for its model, and must carry the metadata the server
 * and page rely on.  Skips (passing, with a note) when the data set is
 * absent; fails when weights/ holds no model at all. */
#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_idx.h"
#include "fm_st.h"
#include "fm_train.h"

static const struct {
    const char *name;
    double bar; /* the study's test accuracy */
} bars[] = {{"mlp2", 0.8901}, {"mlp3", 0.8922}, {"cnn1", 0.9125}, {"cnn2", 0.9106}, {"cnn3", 0.9152}};

static char weights_dir[4096];

static void find_weights_dir(void) {
    const char *root = getenv("FMNIST_SOURCE_ROOT");
    snprintf(weights_dir, sizeof weights_dir, "%s/weights", root && *root ? root : ".");
}

START_TEST(test_shipped_weights_reproduce) {
    find_weights_dir();
    fm_error err;
    fm_dataset test;
    if (fm_dataset_load_split(&test, NULL, FM_SPLIT_TEST, &err)) {
        printf("note: data set absent, shipped weights not re-evaluated: %s\n", err.msg);
        return;
    }
    DIR *d = opendir(weights_dir);
    ck_assert_msg(d != NULL, "cannot open %s", weights_dir);
    struct dirent *e;
    int n_files = 0;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 13 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", weights_dir, e->d_name);
        fm_model m = {0};
        ck_assert_msg(fm_st_load(&m, path, NULL, &err) == 0, "%s", err.msg);
        const char *ms = fm_model_meta(&m, "metrics");
        ck_assert_msg(ms != NULL, "%s: no metrics metadata", path);
        cJSON *mj = cJSON_Parse(ms);
        ck_assert_msg(mj != NULL, "%s: metrics metadata is not JSON", path);
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(mj, "test_accuracy");
        const cJSON *cor = cJSON_GetObjectItemCaseSensitive(mj, "test_correct");
        ck_assert_msg(cJSON_IsNumber(acc) && cJSON_IsNumber(cor), "%s: metrics lack test_accuracy/test_correct", path);
        ck_assert_msg(fm_model_meta(&m, "training") && fm_model_meta(&m, "dataset"), "%s: training/dataset metadata missing", path);
        fm_pool pool;
        ck_assert_msg(fm_pool_create(&pool, &m.arch, 2, 256, &err) == 0, "%s", err.msg);
        fm_eval ev; /* as served: the plan, and any mirror averaging or temperature the file asks for */
        ck_assert_msg(fm_model_pack(&m, &err) == 0, "%s: %s", path, err.msg);
        fm_pool_evaluate_model(&pool, &m, &test, &ev, NULL, NULL);
        ck_assert_msg(ev.n == 10000, "expected 10000 test images");
        ck_assert_msg((double)ev.n_correct == cor->valuedouble,
                      "%s: re-evaluation gives %zu correct, metadata says %.0f: stale or corrupted weights", path,
                      ev.n_correct, cor->valuedouble);
        ck_assert_msg(ev.accuracy == acc->valuedouble, "%s: accuracy %.6f != recorded %.6f", path, ev.accuracy,
                      acc->valuedouble);
        for (size_t b = 0; b < sizeof bars / sizeof bars[0]; b++) {
            char want[64];
            snprintf(want, sizeof want, "%s.safetensors", bars[b].name);
            if (strcmp(e->d_name, want) == 0)
                ck_assert_msg(ev.accuracy >= bars[b].bar, "%s: test accuracy %.4f is below the study's %.4f", path,
                              ev.accuracy, bars[b].bar);
        }
        printf("%s: %zu/10000 correct (%.4f), as recorded\n", e->d_name, ev.n_correct, ev.accuracy);
        fm_pool_destroy(&pool);
        cJSON_Delete(mj);
        fm_model_free(&m);
        n_files++;
    }
    closedir(d);
    fm_dataset_free(&test);
    ck_assert_msg(n_files > 0, "no .safetensors in %s", weights_dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("weights");
    TCase *tc = tcase_create("shipped");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_shipped_weights_reproduce);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
