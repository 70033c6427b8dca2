/* fm_idx.h - the Fashion-MNIST data set: IDX file reader, data directory
 * lookup, train/validation split and conversion to float.
 *
 * IDX (LeCun's MNIST format) is a big-endian header - a magic number
 * 0x000008DD (0x08 = unsigned byte elements, DD = number of dimensions),
 * then one uint32 per dimension - followed by the elements in row-major
 * order.  Images are 0x00000803 [N, H, W], labels 0x00000801 [N].  Files may
 * be gzip-compressed or plain: zlib's gzread reads both.
 *
 * The reader trusts nothing it reads: magic, dimension count, sizes, exact
 * length (no short data, no trailing bytes), the gzip stream's own checks,
 * label range and image/label agreement are all checked.  A header whose
 * sizes are absurd (more than FM_IDX_MAX_BYTES, or overflowing size_t) is
 * refused before anything is allocated, and memory grows with the data
 * actually read, so a header that lies costs about what the file holds,
 * never what it claims.
 *
 * Preprocessing follows the study: pixels become float32 x/255 in [0,1],
 * labels stay class ids.  The validation set is the last n_val training
 * examples, as views (no copy), so the split is deterministic.
 *
 * Left out: writing IDX files, element types other than unsigned byte,
 * shuffling and augmentation (the trainer's job, with its seeded RNG). */
#ifndef FM_IDX_H
#define FM_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "fm_common.h"

/* Where the Debian package dataset-fashion-mnist installs the files. */
#define FM_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
/* Environment variable that overrides FM_DEFAULT_DATA_DIR. */
#define FM_DATA_ENV "FMNIST_DATA"
/* Default validation split: the last 6,000 of the 60,000 training images. */
#define FM_DEFAULT_N_VAL 6000
/* Largest payload one IDX file may claim (1 GiB; Fashion-MNIST's largest is
 * 47,040,000 bytes).  Anything bigger is taken as a corrupt header. */
#define FM_IDX_MAX_BYTES ((size_t)1 << 30)

typedef enum fm_split {
    FM_SPLIT_TRAIN, /* train-{images-idx3,labels-idx1}-ubyte[.gz], 60,000 */
    FM_SPLIT_TEST,  /* t10k-{images-idx3,labels-idx1}-ubyte[.gz], 10,000 */
} fm_split;

/* A labelled image set.  Either it owns its memory (owned != NULL, one
 * allocation holding pixels then labels, released by fm_dataset_free) or it
 * is a view into another set (owned == NULL), valid while that set lives. */
typedef struct fm_dataset {
    size_t n;              /* number of examples (N) */
    size_t rows, cols;     /* H, W: 28, 28 for Fashion-MNIST */
    const uint8_t *pixels; /* [N, H*W] raw 0..255, row-major */
    const uint8_t *labels; /* [N] class ids 0..FM_N_CLASSES-1 */
    uint8_t *owned;        /* NULL for a view; else the block behind pixels+labels */
} fm_dataset;

/* The data directory: flag_value when non-NULL and non-empty, else
 * $FMNIST_DATA when set and non-empty, else FM_DEFAULT_DATA_DIR.  The result
 * is flag_value, getenv's string (valid until the environment changes) or a
 * literal; never NULL, never to be freed. */
const char *fm_data_dir(const char *flag_value);

/* Reads an IDX image file (magic 0x00000803, [n, rows, cols]).  On success
 * *out is a malloc'd [n, rows*cols] block the caller frees with free().  On
 * failure returns -1, sets *out = NULL and leaves a message in err. */
int fm_idx_read_images(const char *path, uint8_t **out, size_t *n, size_t *rows,
                       size_t *cols, fm_error *err);

/* Reads an IDX label file (magic 0x00000801, [n]) and checks that every
 * label is below FM_N_CLASSES.  Ownership as fm_idx_read_images. */
int fm_idx_read_labels(const char *path, uint8_t **out, size_t *n, fm_error *err);

/* Loads an image file and its label file into one owning data set; the two
 * must hold the same number of examples.  Any image size is accepted.  On
 * failure returns -1 and leaves *ds zeroed (fm_dataset_free is then a
 * no-op). */
int fm_dataset_load(fm_dataset *ds, const char *images_path,
                    const char *labels_path, fm_error *err);

/* Loads the Fashion-MNIST training or test split from dir (NULL means
 * fm_data_dir(NULL)), taking NAME.gz when present, else NAME, and checks
 * that the images are 28x28.  When the directory or a file is missing the
 * message says how to get the data.  Failure as fm_dataset_load. */
int fm_dataset_load_split(fm_dataset *ds, const char *dir, fm_split split,
                          fm_error *err);

/* Releases an owning set and zeroes *ds.  Safe on views (frees nothing), on
 * zeroed structs and on NULL. */
void fm_dataset_free(fm_dataset *ds);

/* The view of examples [start, start+count) of ds; no copy, owned = NULL.
 * The range must lie inside ds (asserted: a programmer's mistake). */
fm_dataset fm_dataset_view(const fm_dataset *ds, size_t start, size_t count);

/* Splits all into train = the first all->n - n_val examples and val = the
 * last n_val, both views of all.  n_val may be 0 (an empty val); it is an
 * error when it leaves no training examples (n_val >= all->n). */
int fm_dataset_split(const fm_dataset *all, size_t n_val, fm_dataset *train,
                     fm_dataset *val, fm_error *err);

/* Writes examples [start, start+count) of ds as float32 x/255 into
 * out [count, rows*cols].  The range must lie inside ds (asserted). */
void fm_dataset_to_float(const fm_dataset *ds, size_t start, size_t count,
                         float *out);

#endif
