/* fm_augment.h - training-time augmentation of 28x28 inputs, on the fly.
 *
 * Each transform is a pure function of an image (C x H x W floats in
 * [0, 1], black background, as the network sees it) and of numbers drawn
 * from an explicit RNG; fm_augment_apply runs the enabled ones in a fixed
 * order.  The trainer derives one RNG stream per example from (seed, epoch,
 * batch, position in the batch), so augmentation is reproducible and does
 * not depend on how a batch is split across threads or machines.
 *
 * Order: scale, translate (random crop with zero padding), flip, blur or
 * sharpen, intensity (gain, gamma), random erasing.  Everything is off by
 * default: the study's models train on the images as they are.  Not here:
 * anything that looks at labels (mixup, cutmix). */
#ifndef FM_AUGMENT_H
#define FM_AUGMENT_H

#include <stddef.h>

#include "fm_rng.h"

typedef struct fm_augment {
    int crop;           /* random crop with zero padding: shift by up to +-crop pixels (0 = off) */
    float flip;         /* probability of a horizontal flip */
    float scale;        /* zoom by a factor in [1 - scale, 1 + scale] about the centre (0 = off) */
    float erase;        /* random-erasing probability (Zhong et al. 2017) */
    float erase_min, erase_max; /* erased area as a fraction of the image (0.02, 0.4) */
    float erase_ratio;  /* aspect ratio in [ratio, 1/ratio] (0.3) */
    float gain;         /* intensity gain in [1 - gain, 1 + gain], clamped to [0, 1] (0 = off) */
    float gamma;        /* gamma in [1/(1 + gamma), 1 + gamma] (0 = off) */
    float blur;         /* probability of a 3x3 Gaussian blur */
    float sharpen;      /* probability of a 3x3 unsharp mask (amount 1); exclusive with blur */
} fm_augment;

/* The paper's erasing ranges, every transform off. */
fm_augment fm_augment_defaults(void);
/* 1 when some transform is on. */
int fm_augment_enabled(const fm_augment *a);
/* Applies the enabled transforms to img [C, H, W] in place; tmp needs
 * C*H*W floats. */
void fm_augment_apply(const fm_augment *a, fm_rng *rng, float *img, float *tmp, size_t C, size_t H, size_t W);

/* The transforms, for tests and for the pipeline's own use. */
/* y = x shifted by (dy, dx) pixels, zeros where nothing comes in */
void fm_aug_translate(float *y, const float *x, size_t C, size_t H, size_t W, int dy, int dx);
/* y = x mirrored left-right */
void fm_aug_hflip(float *y, const float *x, size_t C, size_t H, size_t W);
/* y = x zoomed by s about the centre (bilinear, zeros outside) */
void fm_aug_scale(float *y, const float *x, size_t C, size_t H, size_t W, float s);
/* y = 3x3 Gaussian blur of x ([1 2 1] x [1 2 1] / 16, zero outside), or
 * with sharpen = 1 the unsharp mask 2x - blur(x), clamped to [0, 1] */
void fm_aug_blur(float *y, const float *x, size_t C, size_t H, size_t W, int sharpen);
/* x = clamp(gain * x^gamma, 0, 1), in place */
void fm_aug_intensity(float *x, size_t n, float gain, float gamma);
/* x[:, y0:y0+h, x0:x0+w] = uniform random values in [0, 1), in place */
void fm_aug_erase(float *x, size_t C, size_t H, size_t W, size_t y0, size_t x0, size_t h, size_t w, fm_rng *rng);

#endif
