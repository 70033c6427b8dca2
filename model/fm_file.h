/* fm_file.h - whole-file helpers: atomic writes and bounded reads.
 *
 * fm_write_atomic writes a file so that readers (and crashes, kill -9, a
 * full disk) only ever see the old content or the complete new one: a temp
 * file in the same directory, fsync, rename over the target, fsync of the
 * directory.  On failure the temp file is removed and the target untouched. */
#ifndef FM_FILE_H
#define FM_FILE_H

#include <stddef.h>

#include "fm_common.h"

typedef struct fm_chunk {
    const void *data;
    size_t len;
} fm_chunk;

int fm_write_atomic(const char *path, const fm_chunk *chunks, size_t n_chunks, fm_error *err);
/* Reads a whole file of at most max_len bytes; *out is malloc'd with a NUL
 * after the data (so text can be parsed in place); caller frees. */
int fm_read_file(const char *path, size_t max_len, char **out, size_t *len, fm_error *err);
/* Checks that a file can be created in path's directory (so a long run does
 * not find out at the end that it cannot save). */
int fm_check_writable(const char *path, fm_error *err);

#endif
