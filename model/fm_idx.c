/* fm_idx.c - IDX reader and the Fashion-MNIST data set (see fm_idx.h).
 *
 * Reading goes header first: the magic and dimensions are checked and the
 * payload size computed (refusing absurd sizes) before any allocation.  The
 * payload is then read into a buffer that grows geometrically with the data
 * actually delivered, capped at the promised size; after it one more byte is
 * asked for, which must hit a clean end of file: that catches trailing bytes
 * and makes zlib finish the gzip stream and verify its CRC and length.
 *
 * zlib's gzread has two ways to report trouble: -1 for errors, and for a
 * gzip stream cut short a 0 with gzerror() saying Z_BUF_ERROR "unexpected
 * end of file".  So every short read asks gzerror whether it was a clean end
 * of file or a broken stream.
 *
 * Left out: bytes after the end of the gzip stream itself (not of the IDX
 * data inside it) are skipped by zlib without a word, as gunzip does with a
 * warning; the data they follow has passed the gzip CRC, so we accept it. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* stat */
#endif

#include "fm_idx.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_TYPE_UBYTE 0x08
#define IDX_MAX_DIMS 3
#define IDX_FIRST_CHUNK ((size_t)1 << 16) /* first buffer size; doubles from here */
#define IDX_MAX_READ ((size_t)1 << 30)    /* gzread takes an unsigned, returns an int */
#define IDX_PATH_MAX 4096

#define INSTALL_HINT                                                            \
    "install the Debian package dataset-fashion-mnist (apt-get install "      \
    "dataset-fashion-mnist) or set " FM_DATA_ENV " / --data to a directory " \
    "holding the Fashion-MNIST IDX files"

/* An open IDX file and the facts its header states. */
typedef struct idx_file {
    gzFile gz;
    const char *path;           /* for messages; the caller's string */
    unsigned ndims;             /* 3 for images, 1 for labels */
    size_t dims[IDX_MAX_DIMS];  /* [N, H, W] or [N] */
    size_t bytes;               /* payload size: the product of dims */
} idx_file;

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static uint32_t be32(const uint8_t b[4]) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           (uint32_t)b[3];
}

/* Turns the error zlib holds for f into a message; returns -1.  Called only
 * after zlib signalled one. */
static int idx_zfail(const idx_file *f, const char *what, fm_error *err) {
    int saved_errno = errno, errnum = Z_OK;
    const char *msg = gzerror(f->gz, &errnum);
    if (errnum == Z_ERRNO)
        return fm_seterr(err, "%s: read error in the %s: %s", f->path, what,
                         strerror(saved_errno));
    if (errnum == Z_MEM_ERROR)
        return fm_seterr(err, "%s: out of memory while decompressing", f->path);
    if (!msg) msg = "unknown zlib error";
    /* zlib prefixes its message with the path: drop that, we give it first */
    size_t plen = strlen(f->path);
    if (strncmp(msg, f->path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
        msg += plen + 2;
    return fm_seterr(err, "%s: corrupt or truncated gzip data in the %s: %s",
                     f->path, what, msg);
}

/* Reads up to len bytes into dst, stopping early only at end of file;
 * *got says how many came.  Returns -1 when zlib reports an error, a gzip
 * stream cut short included. */
static int idx_read(const idx_file *f, uint8_t *dst, size_t len, size_t *got,
                    const char *what, fm_error *err) {
    *got = 0;
    while (*got < len) {
        unsigned want = (unsigned)min_size(len - *got, IDX_MAX_READ);
        int n = gzread(f->gz, dst + *got, want);
        if (n < 0) return idx_zfail(f, what, err);
        if (n == 0) {
            int errnum = Z_OK;
            gzerror(f->gz, &errnum);
            if (errnum != Z_OK) return idx_zfail(f, what, err);
            return 0; /* clean end of file */
        }
        *got += (size_t)n;
    }
    return 0;
}

/* Opens path and reads and checks its header: magic 0x000008<ndims>, then
 * ndims non-zero sizes whose product must not exceed FM_IDX_MAX_BYTES.
 * On success f is open (close with gzclose(f->gz)); on failure it is not. */
static int idx_open(idx_file *f, const char *path, const char *kind,
                    unsigned ndims, fm_error *err) {
    uint8_t head[4 * (1 + IDX_MAX_DIMS)];
    size_t hlen = 4 * (1 + (size_t)ndims), got;
    uint32_t want_magic = (uint32_t)IDX_TYPE_UBYTE << 8 | ndims;

    assert(ndims >= 1 && ndims <= IDX_MAX_DIMS);
    memset(f, 0, sizeof *f);
    f->path = path;
    f->ndims = ndims;
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz) {
        if (errno == 0) return fm_seterr(err, "%s: out of memory opening it", path);
        return fm_seterr(err, "cannot open %s: %s", path, strerror(errno));
    }
    gzbuffer(f->gz, 128 * 1024); /* fewer, larger reads than the 8 KiB default */

    if (idx_read(f, head, hlen, &got, "header", err)) goto fail;
    if (got == 0) {
        fm_seterr(err, "%s: empty file, expected an IDX %s file", path, kind);
        goto fail;
    }
    if (got >= 4) {
        uint32_t magic = be32(head);
        if (head[0] != 0 || head[1] != 0) {
            fm_seterr(err, "%s: not an IDX file (magic 0x%08lx, expected 0x%08lx for %s)",
                      path, (unsigned long)magic, (unsigned long)want_magic, kind);
            goto fail;
        }
        if (head[2] != IDX_TYPE_UBYTE) {
            fm_seterr(err, "%s: IDX element type 0x%02x, expected 0x%02x (unsigned byte)",
                      path, (unsigned)head[2], (unsigned)IDX_TYPE_UBYTE);
            goto fail;
        }
        if (head[3] != ndims) {
            const char *guess = head[3] == 1 ? " (a label file?)"
                                : head[3] == 3 ? " (an image file?)"
                                               : "";
            fm_seterr(err, "%s: IDX magic 0x%08lx gives %u dimension%s%s, expected %u "
                      "for %s (magic 0x%08lx)",
                      path, (unsigned long)magic, (unsigned)head[3],
                      head[3] == 1 ? "" : "s", guess, ndims, kind,
                      (unsigned long)want_magic);
            goto fail;
        }
    }
    if (got < hlen) {
        fm_seterr(err, "%s: truncated IDX header (%zu of %zu bytes)", path, got, hlen);
        goto fail;
    }

    for (unsigned i = 0; i < ndims; i++) {
        f->dims[i] = be32(head + 4 * (1 + (size_t)i));
        if (f->dims[i] == 0) {
            fm_seterr(err, "%s: IDX header gives dimension %u a size of 0", path, i);
            goto fail;
        }
    }
    /* The product is built so that it never exceeds FM_IDX_MAX_BYTES, hence
     * never overflows size_t, whatever the header claims. */
    f->bytes = 1;
    for (unsigned i = 0; i < ndims; i++) {
        if (f->dims[i] > FM_IDX_MAX_BYTES / f->bytes) {
            if (ndims == 3)
                fm_seterr(err, "%s: header claims %zu images of %zux%zu pixels, more "
                          "than %zu bytes; refusing (corrupt header?)",
                          path, f->dims[0], f->dims[1], f->dims[2], FM_IDX_MAX_BYTES);
            else
                fm_seterr(err, "%s: header claims %zu labels, more than %zu bytes; "
                          "refusing (corrupt header?)",
                          path, f->dims[0], FM_IDX_MAX_BYTES);
            goto fail;
        }
        f->bytes *= f->dims[i];
    }
    return 0;
fail:
    gzclose(f->gz);
    f->gz = NULL;
    return -1;
}

/* Reads f's payload into *buf at offset off, growing *buf (capacity *cap)
 * by doubling as data arrives, never beyond max_cap; then demands a clean
 * end of file.  A truncated file thus costs about twice what it holds. */
static int idx_read_payload(const idx_file *f, uint8_t **buf, size_t *cap,
                            size_t off, size_t max_cap, fm_error *err) {
    const char *what = f->ndims == 3 ? "pixel data" : "label data";
    size_t done = 0, got;
    uint8_t extra;

    assert(off <= max_cap && f->bytes <= max_cap - off);
    while (done < f->bytes) {
        if (off + done == *cap) {
            size_t ncap = *cap ? *cap * 2 : IDX_FIRST_CHUNK;
            if (ncap > max_cap) ncap = max_cap;
            uint8_t *nbuf = realloc(*buf, ncap);
            if (!nbuf)
                return fm_seterr(err, "%s: out of memory (%zu bytes) for the %s",
                                 f->path, ncap, what);
            *buf = nbuf;
            *cap = ncap;
        }
        size_t want = min_size(f->bytes - done, *cap - (off + done));
        if (idx_read(f, *buf + off + done, want, &got, what, err)) return -1;
        done += got;
        if (got < want)
            return fm_seterr(err, "%s: truncated: the header promises %zu bytes of %s "
                             "but the file ends after %zu",
                             f->path, f->bytes, what, done);
    }
    if (idx_read(f, &extra, 1, &got, what, err)) return -1;
    if (got != 0)
        return fm_seterr(err, "%s: trailing data after the %zu bytes of %s the header "
                         "promises (corrupt file?)",
                         f->path, f->bytes, what);
    return 0;
}

static int idx_check_labels(const char *path, const uint8_t *labels, size_t n,
                            fm_error *err) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] >= FM_N_CLASSES)
            return fm_seterr(err, "%s: label %u at index %zu is outside 0..%d", path,
                             (unsigned)labels[i], i, FM_N_CLASSES - 1);
    return 0;
}

const char *fm_data_dir(const char *flag_value) {
    if (flag_value && flag_value[0]) return flag_value;
    const char *env = getenv(FM_DATA_ENV);
    if (env && env[0]) return env;
    return FM_DEFAULT_DATA_DIR;
}

int fm_idx_read_images(const char *path, uint8_t **out, size_t *n, size_t *rows,
                       size_t *cols, fm_error *err) {
    idx_file f;
    uint8_t *buf = NULL;
    size_t cap = 0;

    *out = NULL;
    if (idx_open(&f, path, "images", 3, err)) return -1;
    if (idx_read_payload(&f, &buf, &cap, 0, f.bytes, err)) {
        free(buf);
        gzclose(f.gz);
        return -1;
    }
    gzclose(f.gz);
    *out = buf;
    *n = f.dims[0];
    *rows = f.dims[1];
    *cols = f.dims[2];
    return 0;
}

int fm_idx_read_labels(const char *path, uint8_t **out, size_t *n, fm_error *err) {
    idx_file f;
    uint8_t *buf = NULL;
    size_t cap = 0;

    *out = NULL;
    if (idx_open(&f, path, "labels", 1, err)) return -1;
    if (idx_read_payload(&f, &buf, &cap, 0, f.bytes, err) ||
        idx_check_labels(path, buf, f.bytes, err)) {
        free(buf);
        gzclose(f.gz);
        return -1;
    }
    gzclose(f.gz);
    *out = buf;
    *n = f.dims[0];
    return 0;
}

int fm_dataset_load(fm_dataset *ds, const char *images_path,
                    const char *labels_path, fm_error *err) {
    idx_file im, lb;
    uint8_t *buf = NULL;
    size_t cap = 0, total;

    memset(ds, 0, sizeof *ds);
    if (idx_open(&im, images_path, "images", 3, err)) return -1;
    if (idx_open(&lb, labels_path, "labels", 1, err)) {
        gzclose(im.gz);
        return -1;
    }
    /* Compare the headers before reading either payload. */
    if (im.dims[0] != lb.dims[0]) {
        fm_seterr(err, "%s holds %zu images but %s holds %zu labels", images_path,
                  im.dims[0], labels_path, lb.dims[0]);
        goto fail;
    }
    total = im.bytes + lb.bytes; /* each <= 1 GiB: no overflow */
    if (idx_read_payload(&im, &buf, &cap, 0, total, err) ||
        idx_read_payload(&lb, &buf, &cap, im.bytes, total, err) ||
        idx_check_labels(labels_path, buf + im.bytes, lb.bytes, err))
        goto fail;
    gzclose(im.gz);
    gzclose(lb.gz);
    ds->n = im.dims[0];
    ds->rows = im.dims[1];
    ds->cols = im.dims[2];
    ds->owned = buf;
    ds->pixels = buf;
    ds->labels = buf + im.bytes;
    return 0;
fail:
    free(buf);
    gzclose(im.gz);
    gzclose(lb.gz);
    return -1;
}

/* Finds dir/name.gz or else dir/name; writes it to path[IDX_PATH_MAX]. */
static int find_data_file(char *path, const char *dir, const char *name,
                          fm_error *err) {
    struct stat st;
    int len = snprintf(path, IDX_PATH_MAX, "%s/%s.gz", dir, name);
    if (len < 0 || (size_t)len >= IDX_PATH_MAX)
        return fm_seterr(err, "data directory path too long: %s", dir);
    if (stat(path, &st) == 0) return 0;
    path[len - 3] = '\0'; /* drop ".gz" */
    if (stat(path, &st) == 0) return 0;
    return fm_seterr(err, "%s/%s.gz not found (nor %s without .gz); " INSTALL_HINT,
                     dir, name, name);
}

int fm_dataset_load_split(fm_dataset *ds, const char *dir, fm_split split,
                          fm_error *err) {
    static const char *const names[2][2] = {
        {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
        {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
    };
    char images[IDX_PATH_MAX], labels[IDX_PATH_MAX];
    struct stat st;

    assert(split == FM_SPLIT_TRAIN || split == FM_SPLIT_TEST);
    memset(ds, 0, sizeof *ds);
    if (!dir) dir = fm_data_dir(NULL);
    if (stat(dir, &st) != 0)
        return fm_seterr(err, "Fashion-MNIST data directory %s: %s; " INSTALL_HINT, dir,
                         strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fm_seterr(err, "Fashion-MNIST data directory %s is not a directory; "
                         INSTALL_HINT, dir);
    if (find_data_file(images, dir, names[split][0], err) ||
        find_data_file(labels, dir, names[split][1], err) ||
        fm_dataset_load(ds, images, labels, err))
        return -1;
    if (ds->rows != FM_IMG_H || ds->cols != FM_IMG_W) {
        fm_seterr(err, "%s: images are %zux%zu, expected %dx%d (Fashion-MNIST)", images,
                  ds->rows, ds->cols, FM_IMG_H, FM_IMG_W);
        fm_dataset_free(ds);
        return -1;
    }
    return 0;
}

void fm_dataset_free(fm_dataset *ds) {
    if (!ds) return;
    free(ds->owned);
    memset(ds, 0, sizeof *ds);
}

fm_dataset fm_dataset_view(const fm_dataset *ds, size_t start, size_t count) {
    fm_dataset v;
    assert(start <= ds->n && count <= ds->n - start);
    v.n = count;
    v.rows = ds->rows;
    v.cols = ds->cols;
    v.pixels = ds->pixels + start * ds->rows * ds->cols;
    v.labels = ds->labels + start;
    v.owned = NULL;
    return v;
}

int fm_dataset_split(const fm_dataset *all, size_t n_val, fm_dataset *train,
                     fm_dataset *val, fm_error *err) {
    if (n_val >= all->n)
        return fm_seterr(err, "a validation split of %zu examples leaves no training "
                         "data (the set has %zu)",
                         n_val, all->n);
    *train = fm_dataset_view(all, 0, all->n - n_val);
    *val = fm_dataset_view(all, all->n - n_val, n_val);
    return 0;
}

void fm_dataset_to_float(const fm_dataset *ds, size_t start, size_t count,
                         float *out) {
    assert(start <= ds->n && count <= ds->n - start);
    size_t len = count * ds->rows * ds->cols;
    const uint8_t *px = ds->pixels + start * ds->rows * ds->cols;
    for (size_t i = 0; i < len; i++) out[i] = (float)px[i] / 255.0f;
}
