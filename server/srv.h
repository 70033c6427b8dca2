/* srv.h - the seams of fmnist-serve.
 *
 * libmicrohttpd stays at the edge (http.c): it gathers a request's body
 * under a cap and hands an srv_request to srv_handle(), a plain function
 * (route -> decode -> preprocess -> forward -> JSON) that unit tests call
 * directly, without a socket.  The answer comes back as an srv_response
 * that http.c turns into bytes.
 *
 * Models live in an immutable, reference-counted snapshot (srv_snap): a
 * request acquires the current snapshot, uses it, releases it; SIGHUP
 * builds a new snapshot and swaps it in atomically, so in-flight requests
 * finish on the old set while new ones see the new set.  Inference scratch
 * is per thread (srv_thread_ws), allocated on a thread's first request for a
 * snapshot, never per request. */
#ifndef SRV_H
#define SRV_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_net.h"

#define SRV_MAX_MODELS 64
#define SRV_INFER_CHUNK 8 /* examples per forward call in a per-thread workspace */

/* ------------------------------------------------------------- config */

typedef struct srv_config {
    const char *host;          /* "0.0.0.0" */
    int port;                  /* 8080 */
    const char *weights_dir;   /* "weights" */
    const char *default_model; /* "cnn3" (falls back to the first loaded model when absent) */
    const char *static_dir;    /* "static" */
    const char *data_dir;      /* data set directory for /v1/samples (NULL: fm_data_dir default) */
    const char *cors_origin;   /* Access-Control-Allow-Origin value; NULL = CORS off */
    unsigned threads;          /* worker threads (0: one per core) */
    size_t max_body_bytes;     /* 4 MiB */
    size_t max_batch;          /* 256 images/instances per request */
    size_t max_pixels;         /* 16 Mi pixels per image */
    unsigned connection_limit; /* 1024 */
    unsigned idle_timeout_s;   /* 30 */
    unsigned request_timeout_s; /* whole-request deadline: 60 */
    unsigned drain_timeout_s;  /* SIGTERM: wait at most this long for in-flight requests: 25 */
} srv_config;

/* --------------------------------------------------------- the models */

typedef struct srv_model {
    char name[64];          /* file stem: weights/cnn3.safetensors -> "cnn3" */
    char path[1024];
    fm_model m;             /* arch + params + metadata + sha256 */
    double test_accuracy;   /* from metadata "metrics".test_accuracy; NaN when absent */
    size_t file_bytes;
} srv_model;

typedef struct srv_snap {
    atomic_int refs;
    uint64_t generation;    /* increases with every successful (re)load */
    size_t n_models;
    srv_model *models;      /* [n_models], sorted by name */
    int default_index;      /* into models */
} srv_snap;

typedef struct srv_registry {
    _Atomic(srv_snap *) current;
    atomic_uint_fast64_t next_generation;
} srv_registry;

/* Loads every *.safetensors of dir into a new snapshot.  Bad files are
 * skipped and each is reported through log(line) (may be NULL).  Fails when
 * no valid model is found.  default_name picks the default model (falls back
 * to the first by name, and logs that). */
int srv_snap_load(srv_snap **out, const char *dir, const char *default_name, uint64_t generation,
                  void (*log)(const char *line), fm_error *err);
/* srv_snap_load for a reload: a file that fails to load (corrupt,
 * truncated, unreadable, not a regular file) while prev serves a model of
 * that name keeps prev's model (copied), and the log says why.  A file that
 * is gone removes its model.  prev may be NULL. */
int srv_snap_reload(srv_snap **out, const char *dir, const char *default_name, uint64_t generation,
                    const srv_snap *prev, void (*log)(const char *line), fm_error *err);
/* Publishes snap as current (taking ownership) and releases the old one. */
void srv_registry_publish(srv_registry *r, srv_snap *snap);
/* Current snapshot with a reference held; NULL when none. Pair with srv_snap_release. */
srv_snap *srv_registry_acquire(srv_registry *r);
void srv_snap_release(srv_snap *s); /* frees the snapshot when the last reference goes */
void srv_registry_shutdown(srv_registry *r); /* releases the current snapshot */
/* Model by name (NULL: the default); NULL when unknown. */
const srv_model *srv_snap_find(const srv_snap *s, const char *name);

/* This thread's inference workspace for model (allocated on first use for
 * this snapshot generation and model; NULL on allocation failure). */
fm_ws *srv_thread_ws(const srv_snap *s, const srv_model *model);
/* Frees this thread's workspaces and drops its reference to the snapshot it
 * last acquired (call when a thread that acquired ends; tests). */
void srv_thread_ws_free(void);

/* ------------------------------------------------------------ metrics */

typedef struct srv_metrics srv_metrics; /* opaque; metrics.c */

srv_metrics *srv_metrics_create(void);
void srv_metrics_destroy(srv_metrics *m);
/* One finished request: route label (bounded set), method, status, seconds. */
void srv_metrics_request(srv_metrics *m, const char *route, const char *method, int status, double seconds);
/* One inference call: model name, batch size, seconds, predicted classes [n]. */
void srv_metrics_inference(srv_metrics *m, const char *model, size_t batch, double seconds, const int *classes);
void srv_metrics_inflight(srv_metrics *m, int delta);
void srv_metrics_models_loaded(srv_metrics *m, size_t n);
/* Prometheus text format 0.0.4; caller frees. */
char *srv_metrics_render(srv_metrics *m, size_t *len);

/* ----------------------------------------------------------- requests */

typedef struct srv_ctx {
    const srv_config *cfg;
    srv_registry *registry;
    srv_metrics *metrics;        /* may be NULL in tests */
    char static_root[4096];      /* realpath of cfg->static_dir ("" when unavailable) */
    atomic_int draining;         /* set on SIGTERM: /readyz answers 503 */
    const struct fm_dataset *samples; /* test set for /v1/samples (NULL: endpoint answers 503) */
} srv_ctx;

typedef struct srv_request {
    const char *method;          /* "GET", "POST", "PUT", "OPTIONS", ... */
    const char *path;            /* URL path as received (still percent-encoded), no query */
    const char *query;           /* raw query string without '?', "" when none */
    const char *content_type;    /* Content-Type header or NULL */
    const char *origin;          /* Origin header or NULL */
    const char *if_none_match;   /* If-None-Match header or NULL (static files, reports) */
    const uint8_t *body;         /* request body (NULL when empty) */
    size_t body_len;
} srv_request;

typedef struct srv_response {
    int status;
    const char *content_type;    /* static string */
    char *body;                  /* malloc'd, owned (NULL for none / a file) */
    size_t body_len;
    int fd;                      /* >= 0: a static file to send (owned), length file_size */
    uint64_t file_size;
    char allow[64];              /* "Allow" header for 405 / OPTIONS ("" none) */
    char cache_control[64];      /* "" none */
    char etag[48];               /* ETag of a file response ("" none) */
    char cors_origin[256];       /* Access-Control-Allow-Origin ("" none) */
    const char *route;           /* metrics label, from a fixed set ("other" for unknown paths) */
    char model[64];              /* model used ("" none) */
} srv_response;

/* Routes the request and fills resp (always: every error is a JSON body
 * {"error": "..."} with its status).  Never blocks on I/O other than
 * opening a static file. */
void srv_handle(srv_ctx *ctx, const srv_request *req, srv_response *resp);
void srv_response_free(srv_response *r);
/* Sets resp to a JSON error (status + {"error": msg}). */
void srv_error(srv_response *resp, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
