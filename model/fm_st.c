/* fm_st.c - safetensors weight files: a checked loader, a deterministic
 * writer, an atomic save; plus the small fm_model helpers of fm_net.h
 * (init, free, metadata), which only weight files need.
 *
 * The loader reads the whole file into memory, checks the header completely
 * (lengths, UTF-8, JSON, metadata, then every tensor against the
 * architecture, then that the data offsets tile the data section) and only
 * then copies data into a fresh parameter buffer, rejecting NaN and Inf.
 * It builds the model in a local struct and hands it over at the very end,
 * so a failure never leaves a half-loaded model.  Not supported: dtypes other
 * than F32 (PyTorch exports of our models are F32), big-endian hosts,
 * memory-mapping (our files are a few MB). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkstemp, fchmod, fsync, O_DIRECTORY, O_CLOEXEC */
#endif
#include "fm_st.h"

#include "fm_file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_sha256.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fm_st.c copies F32 data as is: it needs a little-endian host"
#endif
_Static_assert(sizeof(float) == 4, "safetensors F32 is a 4-byte IEEE float");

#define MAX_TENSORS (FM_MAX_TENSORS * FM_MAX_LAYERS)
#define MAX_RANK 4

/* ---- fm_model (declared in fm_net.h) ------------------------------------ */

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int fm_model_init(fm_model *m, const fm_arch *arch, fm_error *err) {
    memset(m, 0, sizeof *m);
    /* calloc checks n * size for overflow; a network without parameters
     * still gets a non-NULL buffer */
    float *p = calloc(arch->n_params ? arch->n_params : 1, sizeof(float));
    if (!p) return fm_seterr(err, "out of memory for %zu parameters", arch->n_params);
    m->arch = *arch;
    m->params = p;
    return 0;
}

void fm_model_free(fm_model *m) {
    for (size_t i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    free(m->params);
    if (m->plan) fm_plan_free(m->plan);
    free(m->plan);
    fm_ood_free(m->ood);
    memset(m, 0, sizeof *m);
}

const char *fm_model_meta(const fm_model *m, const char *key) {
    for (size_t i = 0; i < m->n_meta; i++)
        if (strcmp(m->meta[i].key, key) == 0) return m->meta[i].value;
    return NULL;
}

int fm_model_set_meta(fm_model *m, const char *key, const char *value, fm_error *err) {
    char *v = dupstr(value);
    if (!v) return fm_seterr(err, "out of memory");
    for (size_t i = 0; i < m->n_meta; i++) {
        if (strcmp(m->meta[i].key, key) == 0) {
            free(m->meta[i].value);
            m->meta[i].value = v;
            return 0;
        }
    }
    char *k = dupstr(key);
    fm_kv *meta = realloc(m->meta, (m->n_meta + 1) * sizeof *meta);
    if (!k || !meta) {
        free(k);
        free(v);
        if (meta) m->meta = meta; /* the larger array is still valid */
        return fm_seterr(err, "out of memory");
    }
    meta[m->n_meta].key = k;
    meta[m->n_meta].value = v;
    m->meta = meta;
    m->n_meta++;
    return 0;
}

/* ---- small helpers --------------------------------------------------------- */

static uint64_t rd_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* Index of the first byte of s[0..n) that is not part of valid UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF are invalid, as
 * for the Rust reference reader); n when all of it is valid. */
static size_t utf8_bad(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0)
            k = 1, cp = c & 0x1Fu, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            k = 2, cp = c & 0x0Fu, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            k = 3, cp = c & 0x07u, min = 0x10000;
        else
            return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return n;
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double). */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* "[2, 1, 3, 3]" */
static void dims_str(char *buf, size_t n, const uint64_t *d, int rank) {
    size_t o = 0;
    o += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", i ? ", " : "", (unsigned long long)d[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* ---- what the architecture expects ----------------------------------------- */

/* One tensor of the architecture, and what the file says about it. */
typedef struct want {
    char name[48]; /* "63.weight", "7.proj.1.running_var" */
    int rank;
    uint64_t dims[MAX_RANK];
    size_t off, count; /* where it lives in the flat parameter buffer, in floats */
    int i64;           /* stored as I64 in files (num_batches_tracked), a float in memory */
    int seen;
    uint64_t begin, end; /* byte offsets in the data section, from the file */
} want;

/* Lists the tensors of a (layer order, PyTorch's state_dict order); returns how many. */
static int arch_tensors(const fm_arch *a, want *w) {
    fm_tensor t[FM_MAX_TENSORS];
    int n = 0;
    for (int i = 0; i < a->n_layers; i++) {
        int nt = fm_layer_tensors(a, i, t);
        for (int k = 0; k < nt; k++, n++) {
            memset(&w[n], 0, sizeof w[n]);
            memcpy(w[n].name, t[k].name, sizeof w[n].name);
            w[n].rank = t[k].rank;
            for (int d = 0; d < t[k].rank; d++) w[n].dims[d] = (uint64_t)t[k].dims[d];
            w[n].off = t[k].off, w[n].count = t[k].count;
            w[n].i64 = (t[k].flags & FM_T_I64) != 0;
        }
    }
    return n;
}

static size_t elem_bytes(const want *t) { return t->i64 ? 8 : 4; }

/* "classes" metadata must be the JSON array of fm_class_names. */
static int classes_ok(const char *json) {
    cJSON *c = cJSON_Parse(json);
    int ok = cJSON_IsArray(c) && cJSON_GetArraySize(c) == FM_N_CLASSES;
    for (int i = 0; ok && i < FM_N_CLASSES; i++) {
        const cJSON *s = cJSON_GetArrayItem(c, i);
        ok = cJSON_IsString(s) && strcmp(s->valuestring, fm_class_names[i]) == 0;
    }
    cJSON_Delete(c);
    return ok;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_begin(const void *a, const void *b) {
    const want *x = *(const want *const *)a, *y = *(const want *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Checks one tensor entry of the header against t and records its offsets. */
static int check_tensor(const cJSON *e, want *t, size_t data_len, fm_error *err) {
    if (!cJSON_IsObject(e)) return fm_seterr(err, "tensor \"%s\": entry is not an object", t->name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype)) return fm_seterr(err, "tensor \"%s\": no \"dtype\" string", t->name);
    const char *want_dt = t->i64 ? "I64" : "F32";
    if (strcmp(dtype->valuestring, want_dt) != 0)
        return fm_seterr(err, "tensor \"%s\": dtype \"%.16s\" is not supported (it must be %s%s)", t->name,
                         dtype->valuestring, want_dt, t->i64 ? ", as PyTorch saves it" : "; convert with tensor.float()");

    char want_s[96], got_s[96];
    dims_str(want_s, sizeof want_s, t->dims, t->rank);
    if (!cJSON_IsArray(shape)) return fm_seterr(err, "tensor \"%s\": no \"shape\" array", t->name);
    int rank = cJSON_GetArraySize(shape);
    if (rank != t->rank)
        return fm_seterr(err, "tensor \"%s\": shape has rank %d, the architecture needs %s (rank %d)", t->name, rank,
                         want_s, t->rank);
    uint64_t dims[MAX_RANK], bytes = elem_bytes(t);
    for (int i = 0; i < rank; i++) {
        if (!json_uint(cJSON_GetArrayItem(shape, i), &dims[i]))
            return fm_seterr(err, "tensor \"%s\": shape must hold non-negative integers", t->name);
        if (!mul_ok(bytes, dims[i], &bytes)) return fm_seterr(err, "tensor \"%s\": shape is absurdly large", t->name);
    }
    dims_str(got_s, sizeof got_s, dims, rank);
    if (memcmp(dims, t->dims, (size_t)rank * sizeof dims[0]) != 0)
        return fm_seterr(err, "tensor \"%s\": shape %s does not match the architecture's %s", t->name, got_s, want_s);

    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &en))
        return fm_seterr(err, "tensor \"%s\": \"data_offsets\" must be two non-negative integers [begin, end]", t->name);
    if (b > en)
        return fm_seterr(err, "tensor \"%s\": data_offsets [%llu, %llu] end before they begin", t->name,
                         (unsigned long long)b, (unsigned long long)en);
    if (en > (uint64_t)data_len)
        return fm_seterr(err, "tensor \"%s\": data_offsets [%llu, %llu] reach past the end of the data (%zu bytes); "
                              "is the file truncated?",
                         t->name, (unsigned long long)b, (unsigned long long)en, data_len);
    if (en - b != bytes)
        return fm_seterr(err, "tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, but %s %s needs %llu",
                         t->name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)(en - b), want_dt,
                         got_s, (unsigned long long)bytes);
    t->begin = b, t->end = en;
    return 0;
}

/* ---- loader -------------------------------------------------------------- */

int fm_st_load_buffer(fm_model *m, const uint8_t *buf, size_t len, const fm_arch *expect, fm_error *err) {
    memset(m, 0, sizeof *m);
    if (len < 8)
        return fm_seterr(err, "only %zu bytes: too short for a safetensors file (8-byte header length, header, data)", len);
    uint64_t n_hdr = rd_le64(buf);
    if (n_hdr == 0) return fm_seterr(err, "header length is 0: not a safetensors file");
    if (n_hdr > FM_ST_MAX_HEADER)
        return fm_seterr(err, "header length %llu exceeds the limit of %llu bytes: not a safetensors file, or corrupt",
                         (unsigned long long)n_hdr, (unsigned long long)FM_ST_MAX_HEADER);
    if (n_hdr > len - 8)
        return fm_seterr(err, "header length %llu is larger than the rest of the file (%zu bytes): truncated?",
                         (unsigned long long)n_hdr, len - 8);
    size_t hlen = (size_t)n_hdr, data_len = len - 8 - hlen;
    const uint8_t *hdr = buf + 8, *data = buf + 8 + hlen;
    if (hdr[0] != '{') return fm_seterr(err, "header does not start with '{': not a safetensors file");
    if (memchr(hdr, '\0', hlen)) return fm_seterr(err, "header contains a NUL byte");
    size_t bad = utf8_bad(hdr, hlen);
    if (bad < hlen) return fm_seterr(err, "header is not valid UTF-8 (at byte %zu)", bad);

    int rc = -1;
    fm_model tmp;
    memset(&tmp, 0, sizeof tmp);
    want *wants = NULL;
    const char **keys = NULL;
    cJSON *root = NULL;
    /* cJSON wants a NUL-terminated string; parsing a copy also means it can
     * never read past the header */
    char *text = malloc(hlen + 1);
    if (!text) {
        fm_seterr(err, "out of memory for a %zu-byte header", hlen);
        goto done;
    }
    memcpy(text, hdr, hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root) {
        fm_seterr(err, "header is not valid JSON (error near byte %zu)", end ? (size_t)(end - text) : (size_t)0);
        goto done;
    }
    for (; *end; end++) { /* only padding may follow the object */
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            fm_seterr(err, "header is not valid JSON (unexpected text after the object, at byte %zu)",
                      (size_t)(end - text));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        fm_seterr(err, "header is not a JSON object");
        goto done;
    }

    /* metadata: an object of strings, no duplicate keys */
    const cJSON *meta = NULL, *it;
    cJSON_ArrayForEach(it, root) {
        if (strcmp(it->string, "__metadata__") != 0) continue;
        if (meta) {
            fm_seterr(err, "duplicate key \"__metadata__\" in the header");
            goto done;
        }
        meta = it;
    }
    size_t n_meta = 0;
    if (meta) {
        if (!cJSON_IsObject(meta)) {
            fm_seterr(err, "\"__metadata__\" is not an object of strings");
            goto done;
        }
        cJSON_ArrayForEach(it, meta) {
            if (!cJSON_IsString(it)) {
                fm_seterr(err, "metadata \"%.64s\" is not a string (safetensors metadata values are strings)", it->string);
                goto done;
            }
            if (++n_meta > FM_ST_MAX_META) {
                fm_seterr(err, "more than %d metadata entries", FM_ST_MAX_META);
                goto done;
            }
        }
        keys = malloc((n_meta ? n_meta : 1) * sizeof *keys);
        if (!keys) {
            fm_seterr(err, "out of memory");
            goto done;
        }
        size_t k = 0;
        cJSON_ArrayForEach(it, meta) keys[k++] = it->string;
        qsort(keys, n_meta, sizeof *keys, cmp_str); /* n log n: a hostile header may hold thousands */
        for (k = 1; k < n_meta; k++) {
            if (strcmp(keys[k - 1], keys[k]) == 0) {
                fm_seterr(err, "duplicate metadata key \"%.64s\"", keys[k]);
                goto done;
            }
        }
    }

    /* the architecture: from the file, else from the caller */
    const cJSON *arch_s = meta ? cJSON_GetObjectItemCaseSensitive(meta, "architecture") : NULL;
    fm_arch arch;
    if (arch_s) {
        if (fm_arch_from_json(&arch, arch_s->valuestring, err)) {
            fm_err_prefix(err, "\"architecture\" metadata");
            goto done;
        }
        char why[160];
        if (expect && fm_arch_differs(&arch, expect, why, sizeof why)) {
            fm_seterr(err, "the file's architecture \"%s\" does not match the expected \"%s\": %s", arch.name,
                      expect->name, why);
            goto done;
        }
    } else if (expect) {
        arch = *expect;
    } else {
        fm_seterr(err, "no \"architecture\" metadata (a file exported from PyTorch?): name the architecture it was "
                       "trained with (e.g. --model cnn2)");
        goto done;
    }
    const cJSON *classes = meta ? cJSON_GetObjectItemCaseSensitive(meta, "classes") : NULL;
    if (classes && !classes_ok(classes->valuestring)) {
        fm_seterr(err, "\"classes\" metadata is not the 10 Fashion-MNIST classes in order (T-shirt/top, Trouser, ..., "
                       "Ankle boot): this model predicts other labels");
        goto done;
    }

    /* every tensor: expected, once, well-formed */
    wants = malloc(MAX_TENSORS * sizeof *wants);
    if (!wants) {
        fm_seterr(err, "out of memory");
        goto done;
    }
    int n_want = arch_tensors(&arch, wants);
    cJSON_ArrayForEach(it, root) {
        if (it == meta) continue;
        want *t = NULL;
        for (int i = 0; i < n_want && !t; i++)
            if (strcmp(wants[i].name, it->string) == 0) t = &wants[i];
        if (!t) {
            fm_seterr(err, "unexpected tensor \"%.64s\": architecture \"%s\" has no such parameter", it->string, arch.name);
            goto done;
        }
        if (t->seen) {
            fm_seterr(err, "duplicate tensor \"%s\" in the header", t->name);
            goto done;
        }
        t->seen = 1;
        if (check_tensor(it, t, data_len, err)) goto done;
    }
    for (int i = 0; i < n_want; i++) {
        if (!wants[i].seen) {
            fm_seterr(err, "missing tensor \"%s\" (architecture \"%s\" needs it)", wants[i].name, arch.name);
            goto done;
        }
    }

    /* the tensors must tile the data section: sorted by begin, each starts
     * where the previous ends, the first at 0, the last at the file's end */
    want *order[MAX_TENSORS];
    for (int i = 0; i < n_want; i++) order[i] = &wants[i];
    qsort(order, (size_t)n_want, sizeof order[0], cmp_begin);
    uint64_t pos = 0;
    for (int i = 0; i < n_want; i++) {
        if (order[i]->begin < pos) {
            fm_seterr(err, "tensors \"%s\" and \"%s\" overlap in the data section", order[i - 1]->name, order[i]->name);
            goto done;
        }
        if (order[i]->begin > pos) {
            fm_seterr(err, "gap of %llu unused bytes before tensor \"%s\" in the data section",
                      (unsigned long long)(order[i]->begin - pos), order[i]->name);
            goto done;
        }
        pos = order[i]->end;
    }
    if (pos != (uint64_t)data_len) {
        fm_seterr(err, "%llu unused bytes after the last tensor: the data section must end with it",
                  (unsigned long long)((uint64_t)data_len - pos));
        goto done;
    }

    /* only now: copy the data, refusing NaN and Inf */
    if (fm_model_init(&tmp, &arch, err)) goto done;
    for (int i = 0; i < n_want; i++) {
        const want *t = &wants[i];
        float *dst = tmp.params + t->off;
        if (t->i64) {
            for (size_t k = 0; k < t->count; k++) {
                int64_t v;
                memcpy(&v, data + t->begin + 8 * k, 8);
                if (v < 0 || v > ((int64_t)1 << 62)) {
                    fm_seterr(err, "tensor \"%s\" holds %lld at element %zu: a count must be in [0, 2^62]", t->name,
                              (long long)v, k);
                    goto done;
                }
                dst[k] = (float)v;
            }
        } else {
            memcpy(dst, data + t->begin, t->count * sizeof(float));
        }
        for (size_t k = 0; k < t->count; k++) {
            if (!isfinite(dst[k])) {
                fm_seterr(err, "tensor \"%s\" holds %s at element %zu: a model with non-finite weights would answer NaN",
                          t->name, isnan(dst[k]) ? "NaN" : "Inf", k);
                goto done;
            }
        }
    }
    if (n_meta) {
        tmp.meta = calloc(n_meta, sizeof *tmp.meta);
        if (!tmp.meta) {
            fm_seterr(err, "out of memory");
            goto done;
        }
        tmp.n_meta = n_meta; /* entries filled below; fm_model_free copes with NULLs */
        size_t k = 0;
        cJSON_ArrayForEach(it, meta) {
            tmp.meta[k].key = dupstr(it->string);
            tmp.meta[k].value = dupstr(it->valuestring);
            if (!tmp.meta[k].key || !tmp.meta[k].value) {
                fm_seterr(err, "out of memory");
                goto done;
            }
            k++;
        }
    }
    fm_sha256_hex(buf, len, tmp.sha256);
    *m = tmp;
    memset(&tmp, 0, sizeof tmp);
    rc = 0;
done:
    fm_model_free(&tmp);
    cJSON_Delete(root);
    free(text);
    free(keys);
    free(wants);
    return rc;
}

int fm_st_load(fm_model *m, const char *path, const fm_arch *expect, fm_error *err) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fm_seterr(err, "cannot open weight file: %s", strerror(errno));
        fm_err_prefix(err, path);
        return -1;
    }
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;
    int rc = -1;
    if (fstat(fd, &st) != 0) {
        fm_seterr(err, "cannot stat: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        fm_seterr(err, "not a regular file");
        goto done;
    }
    if ((uintmax_t)st.st_size > (uintmax_t)(SIZE_MAX / 2)) {
        fm_seterr(err, "file too large");
        goto done;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size ? size : 1);
    if (!buf) {
        fm_seterr(err, "out of memory reading %zu bytes", size);
        goto done;
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            fm_seterr(err, "read failed: %s", strerror(errno));
            goto done;
        }
        if (r == 0) break; /* shrank under us: judge the bytes we have */
        got += (size_t)r;
    }
    rc = fm_st_load_buffer(m, buf, got, expect, err);
done:
    close(fd);
    free(buf);
    if (rc) fm_err_prefix(err, path);
    return rc;
}

/* ---- writer ------------------------------------------------------------- */

static int is_std_key(const char *k) {
    return strcmp(k, "format") == 0 || strcmp(k, "architecture") == 0 || strcmp(k, "classes") == 0 ||
           strcmp(k, "input") == 0;
}

int fm_st_save_buffer(const fm_model *m, uint8_t **out, size_t *len, fm_error *err) {
    *out = NULL;
    *len = 0;
    const fm_arch *a = &m->arch;
    want *ts = malloc(MAX_TENSORS * sizeof *ts);
    if (!ts) return fm_seterr(err, "out of memory");
    int n_t = arch_tensors(a, ts);
    for (int i = 0; i < n_t; i++) {
        for (size_t k = 0; k < ts[i].count; k++) {
            float v = m->params[ts[i].off + k];
            if (!isfinite(v)) {
                fm_seterr(err, "refusing to save: tensor \"%s\" holds %s at element %zu (did training diverge?)",
                          ts[i].name, isnan(v) ? "NaN" : "Inf", k);
                free(ts);
                return -1;
            }
            if (ts[i].i64 && !(v >= 0.0f && v == floorf(v) && v <= 0x1p62f)) {
                fm_seterr(err, "refusing to save: tensor \"%s\" (an I64 count) holds %g at element %zu, not a whole "
                               "number in [0, 2^62]", ts[i].name, (double)v, k);
                free(ts);
                return -1;
            }
        }
    }
    if (m->n_meta + 4 > FM_ST_MAX_META) {
        free(ts);
        return fm_seterr(err, "too many metadata entries (%zu; at most %d)", m->n_meta, FM_ST_MAX_META - 4);
    }

    int rc = -1, ok = 1;
    char *arch_json = fm_arch_to_json(a), *classes_json = NULL, *h = NULL;
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON *classes = cJSON_CreateStringArray(fm_class_names, FM_N_CLASSES);
    if (classes) classes_json = cJSON_PrintUnformatted(classes);
    cJSON_Delete(classes);
    if (!arch_json || !root || !meta || !classes_json) goto oom;

    char input[256];
    snprintf(input, sizeof input,
             "{\"shape\":[%d,%d,%d],\"dtype\":\"float32\",\"layout\":\"NCHW\",\"scale\":\"pixel/255\","
             "\"range\":[0,1],\"background\":\"black\"}",
             a->in_c, a->in_h, a->in_w);
    const char *fmt = fm_model_meta(m, "format"), *inp = fm_model_meta(m, "input");
    ok &= cJSON_AddStringToObject(meta, "format", fmt ? fmt : "pt") != NULL;
    ok &= cJSON_AddStringToObject(meta, "architecture", arch_json) != NULL;
    ok &= cJSON_AddStringToObject(meta, "classes", classes_json) != NULL;
    ok &= cJSON_AddStringToObject(meta, "input", inp ? inp : input) != NULL;
    for (size_t i = 0; i < m->n_meta && ok; i++) {
        const fm_kv *kv = &m->meta[i];
        if (is_std_key(kv->key)) continue;
        if (cJSON_GetObjectItemCaseSensitive(meta, kv->key)) {
            fm_seterr(err, "duplicate metadata key \"%.64s\"", kv->key);
            goto done;
        }
        ok &= cJSON_AddStringToObject(meta, kv->key, kv->value) != NULL;
    }
    /* tensors in layer order, their data one after another (F32 as the
     * flat buffer holds them, I64 converted) */
    size_t n_data = 0;
    for (int i = 0; i < n_t && ok; i++) {
        double dims[MAX_RANK];
        for (int d = 0; d < ts[i].rank; d++) dims[d] = (double)ts[i].dims[d];
        size_t bytes = ts[i].count * elem_bytes(&ts[i]);
        ts[i].begin = n_data;
        double offs[2] = {(double)n_data, (double)(n_data + bytes)};
        n_data += bytes;
        cJSON *t = cJSON_AddObjectToObject(root, ts[i].name);
        cJSON *shape = cJSON_CreateDoubleArray(dims, ts[i].rank), *o = cJSON_CreateDoubleArray(offs, 2);
        ok &= t && shape && o && cJSON_AddStringToObject(t, "dtype", ts[i].i64 ? "I64" : "F32") != NULL;
        if (!ok) {
            cJSON_Delete(shape);
            cJSON_Delete(o);
            break;
        }
        cJSON_AddItemToObject(t, "shape", shape);
        cJSON_AddItemToObject(t, "data_offsets", o);
    }
    if (!ok || !(h = cJSON_PrintUnformatted(root))) goto oom;

    /* header padded with spaces to a multiple of 8, as the reference writer
     * does, so the data section is 8-byte aligned in the file */
    size_t hl = strlen(h), padded = (hl + 7) / 8 * 8;
    if (padded > FM_ST_MAX_HEADER) {
        fm_seterr(err, "metadata too large: the header would be %zu bytes (limit %llu)", padded,
                  (unsigned long long)FM_ST_MAX_HEADER);
        goto done;
    }
    size_t total = 8 + padded + n_data; /* n_params <= 2^28 (fm_arch_finalize) */
    uint8_t *b = malloc(total);
    if (!b) goto oom;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, h, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    for (int i = 0; i < n_t; i++) {
        uint8_t *d = b + 8 + padded + ts[i].begin;
        const float *src = m->params + ts[i].off;
        if (!ts[i].i64) {
            memcpy(d, src, ts[i].count * sizeof(float));
            continue;
        }
        for (size_t k = 0; k < ts[i].count; k++) {
            int64_t v = (int64_t)src[k];
            memcpy(d + 8 * k, &v, 8);
        }
    }
    *out = b;
    *len = total;
    rc = 0;
    goto done;
oom:
    fm_seterr(err, "out of memory while writing the header");
done:
    free(ts);
    free(arch_json);
    free(classes_json);
    free(h);
    cJSON_Delete(root);
    return rc;
}

int fm_st_save(const fm_model *m, const char *path, fm_error *err) {
    uint8_t *buf;
    size_t len;
    if (fm_st_save_buffer(m, &buf, &len, err)) {
        fm_err_prefix(err, path);
        return -1;
    }
    fm_chunk c = {buf, len};
    int rc = fm_write_atomic(path, &c, 1, err); /* its messages already name the path */
    free(buf);
    return rc;
}
