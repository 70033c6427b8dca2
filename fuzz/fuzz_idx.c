/* fuzz_idx.c - libFuzzer target for the IDX reader (fm_idx.c): gzip or
 * plain (zlib's gzread takes both), magic, dimension count, sizes, exact
 * length, label range.  The reader takes a path, so each input is written
 * to one private temporary file (created once, rewritten in place) and read
 * as an image file and as a label file.  What succeeds must be consistent:
 * a block of n*rows*cols bytes, labels below 10. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkstemp */
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[4096];
static int fd = -1;

static void cleanup(void) {
    if (fd >= 0) close(fd);
    if (path[0]) unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fd < 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/fmnist-fuzz-idx.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        fd = mkstemp(path);
        if (fd < 0) abort();
        atexit(cleanup);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    fm_error err;
    uint8_t *px = NULL, *lb = NULL;
    size_t n = 0, rows = 0, cols = 0, nl = 0;
    if (fm_idx_read_images(path, &px, &n, &rows, &cols, &err) == 0) {
        volatile uint8_t sum = 0; /* touch every byte: ASan checks the block's size */
        for (size_t i = 0; i < n * rows * cols; i++) sum = (uint8_t)(sum + px[i]);
        (void)sum;
        free(px);
    } else if (px) {
        abort();
    }
    if (fm_idx_read_labels(path, &lb, &nl, &err) == 0) {
        for (size_t i = 0; i < nl; i++)
            if (lb[i] >= FM_N_CLASSES) abort();
        free(lb);
    } else if (lb) {
        abort();
    }
    return 0;
}
