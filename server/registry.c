/* registry.c - the loaded models: immutable, reference-counted snapshots
 * swapped atomically on reload, and per-thread inference workspaces.
 *
 * Reload protocol: build a complete new snapshot off to the side (a bad
 * file is skipped and logged; no valid model at all keeps the old set),
 * then publish it with one atomic exchange.  A request holds a reference to
 * the snapshot it started with, so it finishes on that set even if a reload
 * happens meanwhile; the last reference frees the old snapshot.
 *
 * Reading the pointer and taking a reference must be one step (else a
 * reload could free the snapshot in between), so acquire and publish share
 * a mutex - but a thread takes it only once per reload: each thread keeps
 * a reference to the snapshot it last acquired, and while the registry
 * still points at that one (a pointer compare: the address cannot be
 * reused while the thread holds it), acquire just adds a reference to it.
 * So the request path takes no lock; inference runs without any.
 * srv_thread_ws_free drops the thread's reference (worker exit, tests). */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "fm_st.h"
#include "srv.h"

static pthread_mutex_t acquire_lock = PTHREAD_MUTEX_INITIALIZER;

static int by_name(const void *a, const void *b) {
    return strcmp(((const srv_model *)a)->name, ((const srv_model *)b)->name);
}

static double meta_test_accuracy(const fm_model *m) {
    const char *s = fm_model_meta(m, "metrics");
    if (!s) return NAN;
    cJSON *j = cJSON_Parse(s);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "test_accuracy");
    double v = cJSON_IsNumber(a) ? a->valuedouble : NAN;
    cJSON_Delete(j);
    return v;
}

static void snap_free(srv_snap *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_models; i++) fm_model_free(&s->models[i].m);
    free(s->models);
    free(s);
}

/* A deep copy of src into dst (zeroed on failure). */
static int model_clone(fm_model *dst, const fm_model *src) {
    fm_error e;
    memset(dst, 0, sizeof *dst);
    if (fm_model_init(dst, &src->arch, &e) != 0) return -1;
    memcpy(dst->params, src->params, src->arch.n_params * sizeof *dst->params);
    for (size_t i = 0; i < src->n_meta; i++)
        if (fm_model_set_meta(dst, src->meta[i].key, src->meta[i].value, &e) != 0) {
            fm_model_free(dst);
            return -1;
        }
    memcpy(dst->sha256, src->sha256, sizeof dst->sha256);
    if (src->plan && fm_model_pack(dst, &e) != 0) {
        fm_model_free(dst);
        return -1;
    }
    return 0;
}

/* When the file of a model that prev serves cannot be loaded any more
 * (corrupt, truncated, unreadable, replaced by a directory), keep serving
 * prev's copy: copy it into m (whose name and path are set) and log why. */
static int keep_previous(srv_model *m, const srv_snap *prev, const char *why, void (*log)(const char *line)) {
    char line[1400];
    const srv_model *old = prev ? srv_snap_find(prev, m->name) : NULL;
    if (!old || !m->name[0]) return -1;
    srv_model keep = *old; /* name, path, sizes, accuracy */
    if (model_clone(&keep.m, &old->m) != 0) return -1;
    *m = keep;
    snprintf(line, sizeof line, "keeping the loaded %s (sha256 %.12s): %s", m->name, m->m.sha256, why);
    if (log) log(line);
    return 0;
}

int srv_snap_load(srv_snap **out, const char *dir, const char *default_name, uint64_t generation,
                  void (*log)(const char *line), fm_error *err) {
    return srv_snap_reload(out, dir, default_name, generation, NULL, log, err);
}

int srv_snap_reload(srv_snap **out, const char *dir, const char *default_name, uint64_t generation,
                    const srv_snap *prev, void (*log)(const char *line), fm_error *err) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return fm_seterr(err, "weights directory %s: cannot open it (--weights / FMNIST_WEIGHTS)", dir);
    srv_snap *s = calloc(1, sizeof *s);
    srv_model *models = calloc(SRV_MAX_MODELS, sizeof *models);
    if (!s || !models) {
        closedir(d);
        free(s);
        free(models);
        return fm_seterr(err, "out of memory loading models");
    }
    s->models = models;
    char line[1200];
    struct dirent *e;
    size_t n_files = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        const char *ext = ".safetensors";
        size_t el = strlen(ext);
        if (len <= el || strcmp(e->d_name + len - el, ext) != 0 || e->d_name[0] == '.') continue;
        n_files++;
        if (s->n_models == SRV_MAX_MODELS) {
            snprintf(line, sizeof line, "skipping %s/%s: more than %d models", dir, e->d_name, SRV_MAX_MODELS);
            if (log) log(line);
            continue;
        }
        srv_model *m = &models[s->n_models];
        memset(m, 0, sizeof *m);
        if (len - el >= sizeof m->name || strlen(dir) + len + 2 > sizeof m->path) {
            snprintf(line, sizeof line, "skipping %s/%.200s: name too long", dir, e->d_name);
            if (log) log(line);
            continue;
        }
        memcpy(m->name, e->d_name, len - el);
        m->name[len - el] = '\0';
        snprintf(m->path, sizeof m->path, "%s/%s", dir, e->d_name);
        fm_error le;
        struct stat st;
        if (stat(m->path, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(line, sizeof line, "skipping %s: not a regular file", m->path);
            if (keep_previous(m, prev, line, log) == 0) {
                s->n_models++;
                continue;
            }
            if (log) log(line);
            continue;
        }
        if (fm_st_load(&m->m, m->path, NULL, &le) != 0 || fm_model_pack(&m->m, &le) != 0) {
            fm_model_free(&m->m);
            snprintf(line, sizeof line, "skipping bad weight file: %s", le.msg);
            if (keep_previous(m, prev, line, log) == 0) {
                s->n_models++;
                continue;
            }
            if (log) log(line);
            continue;
        }
        m->file_bytes = (size_t)st.st_size;
        m->test_accuracy = meta_test_accuracy(&m->m);
        s->n_models++;
    }
    closedir(d);
    if (s->n_models == 0) {
        snap_free(s);
        return fm_seterr(err, "no valid model in %s (%zu .safetensors file%s found); train one with "
                         "fmnist-train or point --weights at the shipped weights/ directory",
                         dir, n_files, n_files == 1 ? "" : "s");
    }
    qsort(models, s->n_models, sizeof *models, by_name);
    s->default_index = 0;
    int found = 0;
    for (size_t i = 0; default_name && i < s->n_models; i++)
        if (strcmp(models[i].name, default_name) == 0) s->default_index = (int)i, found = 1;
    if (default_name && !found && log) {
        snprintf(line, sizeof line, "default model '%s' not loaded; using '%s'", default_name, models[0].name);
        log(line);
    }
    atomic_init(&s->refs, 1);
    s->generation = generation;
    *out = s;
    return 0;
}

/* The snapshot this thread last acquired, with a reference of its own. */
static _Thread_local srv_snap *tl_snap;
static _Thread_local const srv_registry *tl_reg;

void srv_registry_publish(srv_registry *r, srv_snap *snap) {
    pthread_mutex_lock(&acquire_lock);
    srv_snap *old = atomic_exchange(&r->current, snap);
    pthread_mutex_unlock(&acquire_lock);
    srv_snap_release(old);
}

srv_snap *srv_registry_acquire(srv_registry *r) {
    srv_snap *cur = atomic_load(&r->current);
    if (cur && cur == tl_snap && tl_reg == r) { /* the usual case: no lock */
        atomic_fetch_add(&cur->refs, 1);
        return cur;
    }
    pthread_mutex_lock(&acquire_lock);
    srv_snap *s = atomic_load(&r->current);
    if (s) atomic_fetch_add(&s->refs, 2); /* the caller's and this thread's */
    pthread_mutex_unlock(&acquire_lock);
    srv_snap *old = tl_snap;
    tl_snap = s;
    tl_reg = r;
    srv_snap_release(old);
    return s;
}

void srv_snap_release(srv_snap *s) {
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) snap_free(s);
}

void srv_registry_shutdown(srv_registry *r) {
    srv_registry_publish(r, NULL);
}

const srv_model *srv_snap_find(const srv_snap *s, const char *name) {
    if (!s || s->n_models == 0) return NULL;
    if (!name || !*name) return &s->models[s->default_index];
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
    return NULL;
}

/* Per-thread workspaces, one per model of the snapshot generation they were
 * made for; a new generation frees them and starts over. */
static _Thread_local struct {
    uint64_t generation;
    int valid;
    fm_ws ws[SRV_MAX_MODELS];
    unsigned char made[SRV_MAX_MODELS];
} tls;

static void ws_free_all(void) {
    for (int i = 0; i < SRV_MAX_MODELS; i++)
        if (tls.made[i]) fm_ws_destroy(&tls.ws[i]);
    memset(&tls, 0, sizeof tls);
}

void srv_thread_ws_free(void) {
    ws_free_all();
    srv_snap *s = tl_snap;
    tl_snap = NULL;
    tl_reg = NULL;
    srv_snap_release(s);
}

fm_ws *srv_thread_ws(const srv_snap *s, const srv_model *model) {
    size_t i = (size_t)(model - s->models);
    if (i >= s->n_models) return NULL;
    if (!tls.valid || tls.generation != s->generation) {
        ws_free_all();
        tls.valid = 1;
        tls.generation = s->generation;
    }
    if (!tls.made[i]) {
        if (fm_ws_create(&tls.ws[i], &model->m.arch, SRV_INFER_CHUNK, 0, NULL) != 0) return NULL;
        tls.made[i] = 1;
    }
    return &tls.ws[i];
}
