/* fm_eda.h - exploratory data analysis of Fashion-MNIST (the study's
 * section 1 and its Figure 1): per-split counts, shapes, pixel statistics
 * and class balance, a JSON overview, and a PNG grid of sample images
 * captioned with their class names.
 *
 * The pieces are plain library functions (no printing, no exit; 0 on
 * success, -1 with a message in err on failure) so that the HTTP server can
 * reuse them; fm_eda_main is the `fmnist-train eda` command built on them.
 *
 * Left out: anything that needs a model (that is `fmnist-train eval`),
 * colour images, PNG reading. */
#ifndef FM_EDA_H
#define FM_EDA_H

#include <stddef.h>
#include <stdint.h>

#include "fm_common.h"
#include "fm_idx.h"

/* Default path of the sample-grid PNG written by `fmnist-train eda`. */
#define FM_EDA_DEFAULT_PNG "weights/eda-samples.png"
/* Default and largest number of sample images per class in the grid. */
#define FM_EDA_DEFAULT_PER_CLASS 10
#define FM_EDA_MAX_PER_CLASS 100
/* A split is "balanced" when every class holds within this fraction of the
 * mean count per class (n / FM_N_CLASSES). */
#define FM_EDA_BALANCE_TOL 0.01

/* The `fmnist-train eda` command; argv[0] is "eda".  Returns a process exit
 * status (0 success, 1 failure) and prints its errors to stderr as
 * "fmnist-train: ...".  See its --help for the flags. */
int fm_eda_main(int argc, char **argv);

/* What the overview says about one split. */
typedef struct fm_eda_stats {
    size_t n;                           /* number of images */
    size_t rows, cols;                  /* H, W */
    unsigned min, max;                  /* raw pixel range 0..255 (0, 0 when empty) */
    double mean, std;                   /* raw 0..255; std is the population std (ddof 0) */
    size_t class_count[FM_N_CLASSES];   /* images per class id */
    double max_min_ratio;               /* largest / smallest class count; 0 when a class is empty */
    int balanced;                       /* 1 when every class is within FM_EDA_BALANCE_TOL of n/10 */
} fm_eda_stats;

/* Computes st over all pixels and labels of ds (exact: a 256-bin histogram,
 * then mean and std from it in double). */
void fm_eda_stats_of(const fm_dataset *ds, fm_eda_stats *st);

/* The JSON overview:
 *   {"train": SPLIT, "test": SPLIT, "balanced": bool,
 *    "classes": [names in label order], "png": png_path or null}
 * with SPLIT = {"count", "shape": [H, W], "pixel": {"min", "max", "mean",
 * "std"} (raw 0..255), "pixel_scaled": the same divided by 255, "classes":
 * {name: count, ...} in label order, "max_min_ratio" (null when a class is
 * empty), "balanced"}.  Returns a malloc'd NUL-terminated string the caller
 * frees, or NULL when out of memory. */
char *fm_eda_json(const fm_eda_stats *train, const fm_eda_stats *test,
                  const char *png_path);

/* Largest PNG side we write (libpng's own limit is 1,000,000). */
#define FM_PNG_MAX_DIM ((size_t)1 << 16)

/* Encodes px [h, w] (8-bit grey, row-major) as a PNG in memory with libpng.
 * On success *out is a malloc'd buffer of *len bytes the caller frees; on
 * failure *out = NULL, *len = 0.  w and h must be 1..FM_PNG_MAX_DIM. */
int fm_png_encode_gray(const uint8_t *px, size_t w, size_t h, uint8_t **out,
                       size_t *len, fm_error *err);

/* Encodes px as fm_png_encode_gray does and writes it to path atomically
 * (fm_write_atomic: readers see the old file or the whole new one).  The
 * directory must exist. */
int fm_png_write_gray(const char *path, const uint8_t *px, size_t w, size_t h,
                      fm_error *err);

/* Where fm_eda_sample_grid puts things, for an image size rows x cols and
 * per_class samples per class.  Row c of the grid (c = class id) shows the
 * first per_class images of class c in file order; sample k of class c is
 * the tile whose top-left pixel is (x0 + k * step_x, y0 + c * step_y),
 * tile_w x tile_h pixels: the image upscaled by `scale` (nearest).  The class
 * id and name are written to the left of each row; a title runs above. */
typedef struct fm_eda_grid_layout {
    size_t w, h;            /* whole figure, pixels */
    size_t scale;           /* upscaling of each sample: 3, 2 or 1 */
    size_t tile_w, tile_h;  /* cols * scale, rows * scale */
    size_t x0, y0;          /* top-left of class 0's first tile */
    size_t step_x, step_y;  /* tile to next tile in a row; row to next row */
} fm_eda_grid_layout;

/* Fills lay; returns -1 (with a message) when per_class is outside
 * 1..FM_EDA_MAX_PER_CLASS, rows or cols is 0, or the figure would exceed
 * FM_PNG_MAX_DIM on a side. */
int fm_eda_grid_layout_of(size_t rows, size_t cols, size_t per_class,
                          fm_eda_grid_layout *lay, fm_error *err);

/* Renders the sample grid of ds (see fm_eda_grid_layout): light grey
 * background, black text, samples as stored (white garment on black).  A
 * class with fewer than per_class images leaves its remaining tiles empty.
 * On success *out is a malloc'd [*h, *w] 8-bit grey image the caller frees;
 * on failure *out = NULL. */
int fm_eda_sample_grid(const fm_dataset *ds, size_t per_class, uint8_t **out,
                       size_t *w, size_t *h, fm_error *err);

#endif
