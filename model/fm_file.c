/* fm_file.c - atomic file replacement (temp + fsync + rename + directory
 * fsync) and bounded whole-file reads. */
#include "fm_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* dir of path into buf ("." when there is no slash) */
static void dir_of(const char *path, char *buf, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, n, ".");
    } else if (slash == path) {
        snprintf(buf, n, "/");
    } else {
        size_t len = (size_t)(slash - path);
        if (len >= n) len = n - 1;
        memcpy(buf, path, len);
        buf[len] = '\0';
    }
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) { /* not expected for a regular file; never spin */
            errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int fm_write_atomic(const char *path, const fm_chunk *chunks, size_t n_chunks, fm_error *err) {
    size_t plen = strlen(path);
    if (plen == 0 || plen > 4000) return fm_seterr(err, "invalid output path");
    char *tmp = malloc(plen + 16);
    if (!tmp) return fm_seterr(err, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return fm_seterr(err, "%s: cannot create a file in its directory: %s", path, strerror(e));
    }
    const char *what = "write";
    for (size_t i = 0; i < n_chunks; i++)
        if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len)) goto fail;
    what = "fsync";
    if (fsync(fd)) goto fail;
    /* mkstemp makes 0600; weight files and reports are meant to be read by a server user */
    what = "chmod";
    if (fchmod(fd, 0644)) goto fail;
    what = "close";
    if (close(fd)) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    what = "rename";
    if (rename(tmp, path)) goto fail;
    free(tmp);
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* best effort: some file systems refuse fsync on directories */
        close(dfd);
    }
    return 0;
fail: {
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return fm_seterr(err, "%s: %s failed: %s (nothing was written)", path, what, strerror(e));
}
}

int fm_read_file(const char *path, size_t max_len, char **out, size_t *len, fm_error *err) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return fm_seterr(err, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fm_seterr(err, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_len) {
        fclose(f);
        return fm_seterr(err, "%s: %lld bytes, more than the %zu allowed", path, (long long)st.st_size, max_len);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return fm_seterr(err, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f) || got != n;
    fclose(f);
    if (bad) {
        free(buf);
        return fm_seterr(err, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int fm_check_writable(const char *path, fm_error *err) {
    fm_chunk c = {"", 0};
    size_t plen = strlen(path);
    char *probe = malloc(plen + 8);
    if (!probe) return fm_seterr(err, "out of memory");
    memcpy(probe, path, plen);
    memcpy(probe + plen, ".probe", 7);
    int rc = fm_write_atomic(probe, &c, 1, err);
    if (rc == 0) unlink(probe);
    free(probe);
    if (rc) return fm_seterr(err, "%s: output path is not writable (cannot create files in its directory)", path);
    return 0;
}
