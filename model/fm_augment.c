/* fm_augment.c - the transforms of fm_augment.h and the order they run in. */
#include "fm_augment.h"

#include <math.h>
#include <string.h>

fm_augment fm_augment_defaults(void) {
    return (fm_augment){.erase_min = 0.02f, .erase_max = 0.4f, .erase_ratio = 0.3f};
}

int fm_augment_enabled(const fm_augment *a) {
    return a->crop > 0 || a->flip > 0 || a->scale > 0 || a->erase > 0 || a->gain > 0 || a->gamma > 0 ||
           a->blur > 0 || a->sharpen > 0;
}

void fm_aug_translate(float *y, const float *x, size_t C, size_t H, size_t W, int dy, int dx) {
    for (size_t c = 0; c < C; c++)
        for (size_t r = 0; r < H; r++) {
            float *yr = y + (c * H + r) * W;
            long sr = (long)r - dy;
            if (sr < 0 || sr >= (long)H) {
                memset(yr, 0, W * sizeof(float));
                continue;
            }
            const float *xr = x + (c * H + (size_t)sr) * W;
            for (size_t q = 0; q < W; q++) {
                long sq = (long)q - dx;
                yr[q] = sq >= 0 && sq < (long)W ? xr[sq] : 0.0f;
            }
        }
}

void fm_aug_hflip(float *y, const float *x, size_t C, size_t H, size_t W) {
    for (size_t r = 0; r < C * H; r++)
        for (size_t q = 0; q < W; q++) y[r * W + q] = x[r * W + (W - 1 - q)];
}

void fm_aug_scale(float *y, const float *x, size_t C, size_t H, size_t W, float s) {
    /* output pixel centre (r + 0.5) maps to input (r + 0.5 - H/2) / s + H/2 */
    double cy = (double)H / 2.0, cx = (double)W / 2.0;
    for (size_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (size_t r = 0; r < H; r++)
            for (size_t q = 0; q < W; q++) {
                double fy = ((double)r + 0.5 - cy) / s + cy - 0.5, fx = ((double)q + 0.5 - cx) / s + cx - 0.5;
                double y0 = floor(fy), x0 = floor(fx), ty = fy - y0, tx = fx - x0, v = 0.0;
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) {
                        long sy = (long)y0 + i, sx = (long)x0 + j;
                        if (sy < 0 || sx < 0 || sy >= (long)H || sx >= (long)W) continue;
                        v += (i ? ty : 1.0 - ty) * (j ? tx : 1.0 - tx) * xc[(size_t)sy * W + (size_t)sx];
                    }
                y[(c * H + r) * W + q] = (float)v;
            }
    }
}

void fm_aug_blur(float *y, const float *x, size_t C, size_t H, size_t W, int sharpen) {
    static const float k[3] = {0.25f, 0.5f, 0.25f};
    for (size_t c = 0; c < C; c++) {
        const float *xc = x + c * H * W;
        for (size_t r = 0; r < H; r++)
            for (size_t q = 0; q < W; q++) {
                float v = 0.0f;
                for (int i = -1; i <= 1; i++)
                    for (int j = -1; j <= 1; j++) {
                        long sy = (long)r + i, sx = (long)q + j;
                        if (sy < 0 || sx < 0 || sy >= (long)H || sx >= (long)W) continue;
                        v += k[i + 1] * k[j + 1] * xc[(size_t)sy * W + (size_t)sx];
                    }
                if (sharpen) {
                    v = 2.0f * xc[r * W + q] - v;
                    v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                }
                y[(c * H + r) * W + q] = v;
            }
    }
}

void fm_aug_intensity(float *x, size_t n, float gain, float gamma) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i] > 0.0f ? gain * powf(x[i], gamma) : 0.0f;
        x[i] = v > 1.0f ? 1.0f : v;
    }
}

void fm_aug_erase(float *x, size_t C, size_t H, size_t W, size_t y0, size_t x0, size_t h, size_t w, fm_rng *rng) {
    for (size_t c = 0; c < C; c++)
        for (size_t r = y0; r < y0 + h && r < H; r++)
            for (size_t q = x0; q < x0 + w && q < W; q++) x[(c * H + r) * W + q] = fm_rng_uniform(rng);
}

/* Uniform in [lo, hi). */
static float uniform(fm_rng *rng, float lo, float hi) { return lo + (hi - lo) * fm_rng_uniform(rng); }

void fm_augment_apply(const fm_augment *a, fm_rng *rng, float *img, float *tmp, size_t C, size_t H, size_t W) {
    size_t n = C * H * W;
    if (a->scale > 0) {
        fm_aug_scale(tmp, img, C, H, W, uniform(rng, 1.0f - a->scale, 1.0f + a->scale));
        memcpy(img, tmp, n * sizeof *img);
    }
    if (a->crop > 0) {
        int span = 2 * a->crop + 1;
        int dy = (int)fm_rng_below(rng, (uint64_t)span) - a->crop, dx = (int)fm_rng_below(rng, (uint64_t)span) - a->crop;
        fm_aug_translate(tmp, img, C, H, W, dy, dx);
        memcpy(img, tmp, n * sizeof *img);
    }
    if (a->flip > 0 && fm_rng_uniform(rng) < a->flip) {
        fm_aug_hflip(tmp, img, C, H, W);
        memcpy(img, tmp, n * sizeof *img);
    }
    if (a->blur > 0 || a->sharpen > 0) {
        float u = fm_rng_uniform(rng);
        if (u < a->blur || (u >= a->blur && u < a->blur + a->sharpen)) {
            fm_aug_blur(tmp, img, C, H, W, u >= a->blur);
            memcpy(img, tmp, n * sizeof *img);
        }
    }
    if (a->gain > 0 || a->gamma > 0) {
        float g = a->gain > 0 ? uniform(rng, 1.0f - a->gain, 1.0f + a->gain) : 1.0f;
        float e = 1.0f;
        if (a->gamma > 0) { /* log-uniform in [1/(1+gamma), 1+gamma] */
            float l = logf(1.0f + a->gamma);
            e = expf(uniform(rng, -l, l));
        }
        fm_aug_intensity(img, n, g, e);
    }
    if (a->erase > 0 && fm_rng_uniform(rng) < a->erase) {
        /* Zhong et al.: area S_e in [sl, sh] of the image, aspect r_e in [r1, 1/r1],
         * H_e = sqrt(S_e r_e), W_e = sqrt(S_e / r_e); retried until it fits */
        for (int attempt = 0; attempt < 10; attempt++) {
            double area = (double)H * (double)W * uniform(rng, a->erase_min, a->erase_max);
            double lr = log(a->erase_ratio), ratio = exp(uniform(rng, (float)lr, (float)-lr));
            size_t h = (size_t)lround(sqrt(area * ratio)), w = (size_t)lround(sqrt(area / ratio));
            if (h == 0 || w == 0 || h >= H || w >= W) continue;
            size_t y0 = (size_t)fm_rng_below(rng, H - h + 1), x0 = (size_t)fm_rng_below(rng, W - w + 1);
            fm_aug_erase(img, C, H, W, y0, x0, h, w, rng);
            break;
        }
    }
}
