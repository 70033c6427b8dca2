/* metrics.c - fmnist-serve's Prometheus metrics: lock-free counters and
 * histograms, rendered in the text exposition format 0.0.4.
 *
 * The request path only does relaxed atomic increments (C11 atomics, no
 * lock): each number is exact, but a scrape is not a consistent snapshot of
 * all of them, which Prometheus does not need.  A histogram stores one
 * count per bucket (not cumulative) plus its sum in integer nanoseconds or
 * units, so an observation is two fetch_adds; rendering accumulates the
 * buckets and takes _count from them, so each rendered histogram is
 * self-consistent.
 *
 * Every label value comes from a bounded set, so the number of series is
 * bounded whatever clients send: routes (at most MX_MAX_ROUTES - 1 distinct
 * labels, then "other"), methods (a known list, then "other"), status codes
 * 100..599, models (at most SRV_MAX_MODELS distinct names, then "other"),
 * classes (the ten Fashion-MNIST names).  A label name is interned on its
 * first use by claiming a free slot with compare-and-swap; later uses only
 * read.
 *
 * Left out: exemplars, summaries, OpenMetrics, per-label expiry (a model
 * removed by a reload keeps its series; there are at most SRV_MAX_MODELS). */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "srv.h"

#ifndef FMNIST_VERSION
#define FMNIST_VERSION "unknown"
#endif

#define MX_MAX_ROUTES 32                   /* route labels, slot 0 = "other" */
#define MX_MAX_MODELS (SRV_MAX_MODELS + 1) /* model labels, slot 0 = "other" */
#define MX_NAME 64                         /* longest label value + 1; longer -> "other" */
#define MX_CODE_MIN 100
#define MX_N_CODES 500 /* status codes 100..599 */

static const char *const mx_methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"};
#define MX_N_METHODS (sizeof mx_methods / sizeof mx_methods[0])

/* Seconds: sub-millisecond buckets for a 28x28 forward pass. */
static const double mx_time_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
#define MX_N_TIME (sizeof mx_time_le / sizeof mx_time_le[0]) /* + the +Inf bucket */
static const double mx_batch_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define MX_N_BATCH (sizeof mx_batch_le / sizeof mx_batch_le[0])

typedef atomic_uint_fast64_t mx_counter;

/* Interned label values: state 0 free, 1 being written, 2 ready. */
typedef struct mx_names {
    size_t n;
    atomic_int *state; /* [n] */
    char (*name)[MX_NAME]; /* [n] */
} mx_names;

typedef struct mx_hist {
    mx_counter bucket[MX_N_TIME + 1]; /* per bucket, not cumulative; last = +Inf */
    mx_counter sum;                   /* nanoseconds or units */
} mx_hist;

typedef struct mx_batch_hist {
    mx_counter bucket[MX_N_BATCH + 1];
    mx_counter sum;
} mx_batch_hist;

typedef struct mx_model {
    mx_hist latency;             /* fmnist_inference_duration_seconds */
    mx_batch_hist batch;         /* fmnist_inference_batch_size */
    mx_counter predictions[FM_N_CLASSES];
} mx_model;

struct srv_metrics {
    mx_names routes;
    mx_names models;
    mx_counter *requests;        /* [MX_MAX_ROUTES, MX_N_METHODS, MX_N_CODES] */
    mx_hist route_latency[MX_MAX_ROUTES];
    mx_model model[MX_MAX_MODELS];
    atomic_long inflight;
    atomic_uint_fast64_t models_loaded;
    double start_time;           /* unix seconds when created (~ process start) */
};

/* ------------------------------------------------------------- labels */

static int names_init(mx_names *t, size_t n) {
    t->n = n;
    t->state = calloc(n, sizeof *t->state);
    t->name = calloc(n, sizeof *t->name);
    if (!t->state || !t->name) return -1;
    for (size_t i = 0; i < n; i++) atomic_init(&t->state[i], 0);
    strcpy(t->name[0], "other");
    atomic_store(&t->state[0], 2);
    return 0;
}

static void names_free(mx_names *t) {
    free(t->state);
    free(t->name);
}

/* Index of label value s, interning it when new; 0 ("other") when s is
 * NULL, empty, too long or the table is full. */
static size_t names_index(mx_names *t, const char *s) {
    if (!s || !*s) return 0;
    size_t len = strlen(s);
    if (len >= MX_NAME) return 0;
    for (size_t i = 0; i < t->n; i++) {
        int st = atomic_load_explicit(&t->state[i], memory_order_acquire);
        if (st == 0) {
            int expect = 0;
            if (atomic_compare_exchange_strong(&t->state[i], &expect, 1)) {
                memcpy(t->name[i], s, len + 1);
                atomic_store_explicit(&t->state[i], 2, memory_order_release);
                return i;
            }
            st = expect;
        }
        /* Another thread is writing this slot: a memcpy away from ready. */
        while (st == 1) {
            sched_yield();
            st = atomic_load_explicit(&t->state[i], memory_order_acquire);
        }
        if (strcmp(t->name[i], s) == 0) return i;
    }
    return 0;
}

static size_t method_index(const char *m) {
    for (size_t i = 0; m && i + 1 < MX_N_METHODS; i++)
        if (strcmp(mx_methods[i], m) == 0) return i;
    return MX_N_METHODS - 1;
}

/* --------------------------------------------------------- lifecycle */

srv_metrics *srv_metrics_create(void) {
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    /* A zeroed atomic integer is a valid 0 on every platform we build for;
     * calloc stands in for atomic_init of the large tables. */
    m->requests = calloc((size_t)MX_MAX_ROUTES * MX_N_METHODS * MX_N_CODES, sizeof *m->requests);
    if (!m->requests || names_init(&m->routes, MX_MAX_ROUTES) || names_init(&m->models, MX_MAX_MODELS)) {
        srv_metrics_destroy(m);
        return NULL;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    return m;
}

void srv_metrics_destroy(srv_metrics *m) {
    if (!m) return;
    names_free(&m->routes);
    names_free(&m->models);
    free(m->requests);
    free(m);
}

/* ------------------------------------------------------ observations */

static void hist_time(mx_hist *h, double seconds) {
    if (!(seconds >= 0)) seconds = 0; /* NaN or a clock step backwards */
    size_t b = 0;
    while (b < MX_N_TIME && seconds > mx_time_le[b]) b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    double ns = seconds * 1e9;
    atomic_fetch_add_explicit(&h->sum, ns < 1.8e19 ? (uint_fast64_t)ns : 0, memory_order_relaxed);
}

void srv_metrics_request(srv_metrics *m, const char *route, const char *method, int status, double seconds) {
    if (!m) return;
    size_t r = names_index(&m->routes, route);
    size_t meth = method_index(method);
    /* Statuses come from our own code; anything outside 100..599 is a bug
     * and is counted as 500 rather than dropped. */
    size_t code = (status >= MX_CODE_MIN && status < MX_CODE_MIN + MX_N_CODES) ? (size_t)(status - MX_CODE_MIN)
                                                                            : (size_t)(500 - MX_CODE_MIN);
    atomic_fetch_add_explicit(&m->requests[(r * MX_N_METHODS + meth) * MX_N_CODES + code], 1, memory_order_relaxed);
    hist_time(&m->route_latency[r], seconds);
}

void srv_metrics_inference(srv_metrics *m, const char *model, size_t batch, double seconds, const int *classes) {
    if (!m) return;
    mx_model *x = &m->model[names_index(&m->models, model)];
    hist_time(&x->latency, seconds);
    size_t b = 0;
    while (b < MX_N_BATCH && (double)batch > mx_batch_le[b]) b++;
    atomic_fetch_add_explicit(&x->batch.bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&x->batch.sum, batch, memory_order_relaxed);
    for (size_t i = 0; classes && i < batch; i++)
        if (classes[i] >= 0 && classes[i] < FM_N_CLASSES)
            atomic_fetch_add_explicit(&x->predictions[classes[i]], 1, memory_order_relaxed);
}

void srv_metrics_inflight(srv_metrics *m, int delta) {
    if (m) atomic_fetch_add_explicit(&m->inflight, delta, memory_order_relaxed);
}

void srv_metrics_models_loaded(srv_metrics *m, size_t n) {
    if (m) atomic_store_explicit(&m->models_loaded, n, memory_order_relaxed);
}

/* --------------------------------------------------------- rendering */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t more) {
    if (b->oom || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_printf(sbuf *b, const char *fmt, ...) FM_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    sb_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value, escaped as the text format requires: \ " and newline. */
static void sb_label(sbuf *b, const char *v) {
    sb_reserve(b, 2 * strlen(v));
    if (b->oom) return;
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') b->p[b->len++] = '\\', b->p[b->len++] = *v;
        else if (*v == '\n') b->p[b->len++] = '\\', b->p[b->len++] = 'n';
        else b->p[b->len++] = *v;
    }
    b->p[b->len] = '\0';
}

static void sb_head(sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram series set: name_bucket{label="value",le=...}, _sum, _count.
 * le[] has n finite bounds; counts has n + 1 slots; sum is scaled by scale. */
static void sb_hist(sbuf *b, const char *name, const char *label, const char *value, const double *le, size_t n,
                    const mx_counter *counts, const mx_counter *sum, double scale) {
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += atomic_load_explicit(&counts[i], memory_order_relaxed);
        sb_printf(b, "%s_bucket{%s=\"", name, label);
        sb_label(b, value);
        if (i < n) sb_printf(b, "\",le=\"%g\"} %" PRIu64 "\n", le[i], cum);
        else sb_printf(b, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
    }
    sb_printf(b, "%s_sum{%s=\"", name, label);
    sb_label(b, value);
    sb_printf(b, "\"} %.9g\n", (double)atomic_load_explicit(sum, memory_order_relaxed) * scale);
    sb_printf(b, "%s_count{%s=\"", name, label);
    sb_label(b, value);
    sb_printf(b, "\"} %" PRIu64 "\n", cum);
}

static int name_ready(const mx_names *t, size_t i) {
    return atomic_load_explicit(&t->state[i], memory_order_acquire) == 2;
}

static uint64_t hist_total(const mx_counter *counts, size_t n) {
    uint64_t t = 0;
    for (size_t i = 0; i <= n; i++) t += atomic_load_explicit(&counts[i], memory_order_relaxed);
    return t;
}

static void render_process(sbuf *b, const srv_metrics *m) {
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long vsz = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &vsz, &rss) == 2 && page > 0) {
            sb_head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
            sb_printf(b, "process_virtual_memory_bytes %lu\n", vsz * (unsigned long)page);
            sb_head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            sb_printf(b, "process_resident_memory_bytes %lu\n", rss * (unsigned long)page);
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') n++;
        closedir(d);
        sb_head(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        sb_printf(b, "process_open_fds %ld\n", n - 1); /* minus the one opendir holds */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        sb_head(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        sb_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                     (double)ru.ru_stime.tv_usec / 1e6;
        sb_head(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        sb_printf(b, "process_cpu_seconds_total %.6f\n", cpu);
    }
    sb_head(b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    sb_printf(b, "process_start_time_seconds %.3f\n", m->start_time);
}

char *srv_metrics_render(srv_metrics *m, size_t *len) {
    sbuf b = {0};
    *len = 0;
    if (!m) return NULL;

    sb_head(&b, "fmnist_build_info", "gauge", "Build information; the value is always 1.");
    sb_printf(&b, "fmnist_build_info{version=\"");
    sb_label(&b, FMNIST_VERSION);
    sb_printf(&b, "\"} 1\n");

    sb_head(&b, "fmnist_models_loaded", "gauge", "Models in the current snapshot.");
    sb_printf(&b, "fmnist_models_loaded %" PRIu64 "\n",
              (uint64_t)atomic_load_explicit(&m->models_loaded, memory_order_relaxed));

    sb_head(&b, "fmnist_http_requests_in_flight", "gauge", "Requests being received, handled or answered.");
    long inflight = atomic_load_explicit(&m->inflight, memory_order_relaxed);
    sb_printf(&b, "fmnist_http_requests_in_flight %ld\n", inflight > 0 ? inflight : 0);

    sb_head(&b, "fmnist_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    for (size_t r = 0; r < MX_MAX_ROUTES; r++) {
        if (!name_ready(&m->routes, r)) continue;
        for (size_t meth = 0; meth < MX_N_METHODS; meth++)
            for (size_t c = 0; c < MX_N_CODES; c++) {
                uint64_t v = atomic_load_explicit(&m->requests[(r * MX_N_METHODS + meth) * MX_N_CODES + c],
                                                  memory_order_relaxed);
                if (!v) continue;
                sb_printf(&b, "fmnist_http_requests_total{route=\"");
                sb_label(&b, m->routes.name[r]);
                sb_printf(&b, "\",method=\"%s\",code=\"%zu\"} %" PRIu64 "\n", mx_methods[meth], c + MX_CODE_MIN, v);
            }
    }

    sb_head(&b, "fmnist_http_request_duration_seconds", "histogram",
            "Time from the request line to the end of the response, by route.");
    for (size_t r = 0; r < MX_MAX_ROUTES; r++) {
        if (!name_ready(&m->routes, r) || !hist_total(m->route_latency[r].bucket, MX_N_TIME)) continue;
        sb_hist(&b, "fmnist_http_request_duration_seconds", "route", m->routes.name[r], mx_time_le, MX_N_TIME,
                m->route_latency[r].bucket, &m->route_latency[r].sum, 1e-9);
    }

    sb_head(&b, "fmnist_inference_duration_seconds", "histogram", "Time of one inference call, by model.");
    for (size_t i = 0; i < MX_MAX_MODELS; i++) {
        if (!name_ready(&m->models, i) || !hist_total(m->model[i].latency.bucket, MX_N_TIME)) continue;
        sb_hist(&b, "fmnist_inference_duration_seconds", "model", m->models.name[i], mx_time_le, MX_N_TIME,
                m->model[i].latency.bucket, &m->model[i].latency.sum, 1e-9);
    }

    sb_head(&b, "fmnist_inference_batch_size", "histogram", "Images per inference call, by model.");
    for (size_t i = 0; i < MX_MAX_MODELS; i++) {
        if (!name_ready(&m->models, i) || !hist_total(m->model[i].batch.bucket, MX_N_BATCH)) continue;
        sb_hist(&b, "fmnist_inference_batch_size", "model", m->models.name[i], mx_batch_le, MX_N_BATCH,
                m->model[i].batch.bucket, &m->model[i].batch.sum, 1.0);
    }

    sb_head(&b, "fmnist_predictions_total", "counter", "Predicted classes, by model and class.");
    for (size_t i = 0; i < MX_MAX_MODELS; i++) {
        if (!name_ready(&m->models, i)) continue;
        for (int k = 0; k < FM_N_CLASSES; k++) {
            uint64_t v = atomic_load_explicit(&m->model[i].predictions[k], memory_order_relaxed);
            if (!v) continue;
            sb_printf(&b, "fmnist_predictions_total{model=\"");
            sb_label(&b, m->models.name[i]);
            sb_printf(&b, "\",class=\"");
            sb_label(&b, fm_class_names[k]);
            sb_printf(&b, "\"} %" PRIu64 "\n", v);
        }
    }

    render_process(&b, m);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
