/* test_augment.c - the training augmentations (fm_augment.h) and the
 * learning-rate schedules (fm_sched.h): each transform on images small
 * enough to check by hand, the order and reproducibility of
 * fm_augment_apply, and the schedules' shape at the points that define them. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_augment.h"
#include "fm_sched.h"

START_TEST(test_translate_flip) {
    /* 1x3x3:   1 2 3      shifted down 1, right 1:  0 0 0     mirrored: 3 2 1
     *          4 5 6                                0 1 2               6 5 4
     *          7 8 9                                0 4 5               9 8 7 */
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float y[9];
    fm_aug_translate(y, x, 1, 3, 3, 1, 1);
    const float t[9] = {0, 0, 0, 0, 1, 2, 0, 4, 5};
    ck_assert_mem_eq(y, t, sizeof t);
    fm_aug_translate(y, x, 1, 3, 3, -2, 0);
    const float up[9] = {7, 8, 9, 0, 0, 0, 0, 0, 0};
    ck_assert_mem_eq(y, up, sizeof up);
    fm_aug_translate(y, x, 1, 3, 3, 0, 0);
    ck_assert_mem_eq(y, x, sizeof x);
    fm_aug_hflip(y, x, 1, 3, 3);
    const float f[9] = {3, 2, 1, 6, 5, 4, 9, 8, 7};
    ck_assert_mem_eq(y, f, sizeof f);
}
END_TEST

START_TEST(test_scale) {
    /* zoom 1 is the identity; zoom 2 about the centre of a 4x4 maps the
     * centre of output pixel (1, 1), 1.5, to input (1.5 - 2) / 2 + 1.5 = 1.25:
     * bilinear between pixels 5, 6, 9, 10; a 2x zoom-out of an all-ones
     * image leaves its middle at 1 and a rim of zeros */
    float x[16], y[16];
    for (int i = 0; i < 16; i++) x[i] = (float)i;
    fm_aug_scale(y, x, 1, 4, 4, 1.0f);
    for (int i = 0; i < 16; i++) ck_assert_float_eq_tol(y[i], x[i], 1e-6);
    fm_aug_scale(y, x, 1, 4, 4, 2.0f);
    double want = 0.75 * 0.75 * 5 + 0.75 * 0.25 * 6 + 0.25 * 0.75 * 9 + 0.25 * 0.25 * 10;
    ck_assert_float_eq_tol(y[5], want, 1e-5);
    for (int i = 0; i < 16; i++) x[i] = 1.0f;
    fm_aug_scale(y, x, 1, 4, 4, 0.5f);
    ck_assert_float_eq_tol(y[5], 1.0f, 1e-6);  /* the middle still samples inside */
    ck_assert(y[0] == 0.0f && y[4] == 0.0f); /* the rim samples (-1.5, .): outside, where the zoomed-out image is black */
}
END_TEST

START_TEST(test_blur_sharpen_intensity) {
    /* a single bright pixel in the middle of 3x3: the blur spreads it as
     * [1 2 1]^T [1 2 1] / 16; sharpening (2x - blur) keeps the centre at
     * 2 - 1/4 clamped to 1 and the others at 0 (negative, clamped) */
    float x[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0}, y[9];
    fm_aug_blur(y, x, 1, 3, 3, 0);
    const float b[9] = {1 / 16.f, 2 / 16.f, 1 / 16.f, 2 / 16.f, 4 / 16.f, 2 / 16.f, 1 / 16.f, 2 / 16.f, 1 / 16.f};
    for (int i = 0; i < 9; i++) ck_assert_float_eq_tol(y[i], b[i], 1e-7);
    fm_aug_blur(y, x, 1, 3, 3, 1);
    for (int i = 0; i < 9; i++) ck_assert_float_eq_tol(y[i], i == 4 ? 1.0f : 0.0f, 1e-7);
    /* intensity: gain 1.5 and gamma 2 on [0, 0.5, 0.8]: 0 stays 0 (the
     * background), 0.375, and 0.96 */
    float v[3] = {0, 0.5f, 0.8f};
    fm_aug_intensity(v, 3, 1.5f, 2.0f);
    ck_assert(v[0] == 0.0f);
    ck_assert_float_eq_tol(v[1], 0.375f, 1e-6);
    ck_assert_float_eq_tol(v[2], 0.96f, 1e-6);
    float w[1] = {0.9f};
    fm_aug_intensity(w, 1, 1.5f, 1.0f);
    ck_assert(w[0] == 1.0f); /* clamped */
}
END_TEST

START_TEST(test_erase) {
    float x[25];
    for (int i = 0; i < 25; i++) x[i] = -1.0f;
    fm_rng rng;
    fm_rng_seed(&rng, 5);
    fm_aug_erase(x, 1, 5, 5, 1, 2, 2, 3, &rng);
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++) {
            int in = r >= 1 && r < 3 && c >= 2 && c < 5;
            float v = x[r * 5 + c];
            ck_assert_msg(in ? (v >= 0.0f && v < 1.0f) : v == -1.0f, "(%d,%d) = %g", r, c, (double)v);
        }
}
END_TEST

/* fm_augment_apply: off changes nothing and draws nothing; on, the same
 * stream gives the same image and another stream another one; flip 1 is a
 * mirror; erasing always covers between 2 % and 40 % of the image. */
START_TEST(test_apply) {
    enum { N = 28 * 28 };
    float img[N], ref[N], tmp[N];
    for (int i = 0; i < N; i++) ref[i] = (float)((i * 37) % 101) / 100.0f;
    fm_augment a = fm_augment_defaults();
    ck_assert(!fm_augment_enabled(&a));
    fm_rng r1, r2;
    fm_rng_seed(&r1, 1);
    r2 = r1;
    memcpy(img, ref, sizeof img);
    fm_augment_apply(&a, &r1, img, tmp, 1, 28, 28);
    ck_assert_mem_eq(img, ref, sizeof img);
    ck_assert_mem_eq(&r1, &r2, sizeof r1);

    a.flip = 1.0f;
    fm_augment_apply(&a, &r1, img, tmp, 1, 28, 28);
    fm_aug_hflip(tmp, ref, 1, 28, 28);
    ck_assert_mem_eq(img, tmp, sizeof img);

    a = fm_augment_defaults();
    a.crop = 3, a.flip = 0.5f, a.scale = 0.1f, a.gain = 0.2f, a.gamma = 0.3f, a.blur = 0.2f, a.sharpen = 0.2f;
    float b[N];
    fm_rng_seed(&r1, 99);
    fm_rng_seed(&r2, 99);
    memcpy(img, ref, sizeof img);
    memcpy(b, ref, sizeof b);
    fm_augment_apply(&a, &r1, img, tmp, 1, 28, 28);
    fm_augment_apply(&a, &r2, b, tmp, 1, 28, 28);
    ck_assert_mem_eq(img, b, sizeof img);
    fm_rng_seed(&r2, 100);
    memcpy(b, ref, sizeof b);
    fm_augment_apply(&a, &r2, b, tmp, 1, 28, 28);
    ck_assert(memcmp(img, b, sizeof img) != 0);
    for (int i = 0; i < N; i++) ck_assert(img[i] >= 0.0f && img[i] <= 1.0f);

    a = fm_augment_defaults();
    a.erase = 1.0f;
    for (int t = 0; t < 50; t++) {
        for (int i = 0; i < N; i++) img[i] = -1.0f; /* erased pixels become [0, 1) */
        fm_augment_apply(&a, &r1, img, tmp, 1, 28, 28);
        int erased = 0;
        for (int i = 0; i < N; i++) erased += img[i] >= 0.0f;
        ck_assert_msg(erased >= (int)(0.02 * N) - 28 && erased <= (int)(0.4 * N) + 28, "%d pixels erased", erased);
        ck_assert(erased > 0);
    }
}
END_TEST

/* Schedules: constant; cosine from lr after warm-up to min_lr at the last
 * step, lr / warmup_div at step 0 rising linearly; one-cycle from lr/div to
 * lr at the peak step (pct * total - 1), then to lr / (div * final_div). */
START_TEST(test_schedules) {
    fm_sched s = {.kind = FM_SCHED_CONSTANT, .lr = 0.1, .total = 100};
    ck_assert(fm_sched_lr(&s, 0) == 0.1 && fm_sched_lr(&s, 99) == 0.1);
    s = (fm_sched){.kind = FM_SCHED_COSINE, .lr = 0.1, .min_lr = 0.001, .warmup = 10, .warmup_div = 10, .total = 110};
    ck_assert_double_eq_tol(fm_sched_lr(&s, 0), 0.01, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 5), 0.055, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 10), 0.1, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 109), 0.001, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 10 + 99 / 2.0), 0.0505, 1e-3);
    for (uint64_t t = 11; t < 110; t++) ck_assert(fm_sched_lr(&s, t) <= fm_sched_lr(&s, t - 1)); /* decays */
    s = (fm_sched){.kind = FM_SCHED_ONECYCLE, .lr = 1.0, .pct = 0.3, .div = 25, .final_div = 1e4, .total = 100};
    ck_assert_double_eq_tol(fm_sched_lr(&s, 0), 0.04, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 29), 1.0, 1e-12);
    ck_assert_double_eq_tol(fm_sched_lr(&s, 99), 0.04 / 1e4, 1e-12);
    for (uint64_t t = 1; t <= 29; t++) ck_assert(fm_sched_lr(&s, t) > fm_sched_lr(&s, t - 1));
    for (uint64_t t = 30; t < 100; t++) ck_assert(fm_sched_lr(&s, t) < fm_sched_lr(&s, t - 1));
    ck_assert_int_eq(fm_sched_parse("cosine"), FM_SCHED_COSINE);
    ck_assert_int_eq(fm_sched_parse("onecycle"), FM_SCHED_ONECYCLE);
    ck_assert_int_eq(fm_sched_parse("step"), -1);
    ck_assert_str_eq(fm_sched_name(FM_SCHED_ONECYCLE), "onecycle");
}
END_TEST

int main(void) {
    Suite *s = suite_create("augment");
    TCase *tc = tcase_create("augment");
    tcase_add_test(tc, test_translate_flip);
    tcase_add_test(tc, test_scale);
    tcase_add_test(tc, test_blur_sharpen_intensity);
    tcase_add_test(tc, test_erase);
    tcase_add_test(tc, test_apply);
    tcase_add_test(tc, test_schedules);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
