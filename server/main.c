/* main.c - fmnist-serve: the command line around the server.
 *
 * Reads the configuration (flag beats environment variable beats default;
 * numbers parsed strictly), loads every weight file of the weights
 * directory and the test set, starts the HTTP edge (http.c) and then waits
 * for signals on a signalfd, so no work ever happens in a signal handler:
 *   SIGHUP           reload the weights directory into a new snapshot
 *                    (in-flight requests finish on the old one; a model
 *                    whose file went bad keeps its loaded copy, and the
 *                    log says why; when no valid model remains the old
 *                    set keeps serving)
 *   SIGTERM, SIGINT  drain: /readyz answers 503, no new connections are
 *                    accepted, in-flight requests finish (at most
 *                    --drain-timeout seconds), then stop and exit 0; a
 *                    second signal stops at once
 * Between signals the loop runs the request-deadline watchdog
 * (http_tick) every 250 ms.
 *
 * Exit status: 0 after a drain or --help, 2 for a bad command line, 1 when
 * the server cannot start (no valid model, cannot listen). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "fm_idx.h"
#include "http.h"
#include "parse.h"
#include "srv.h"

#define TICK_MS 250

/* ------------------------------------------------------------ options */

typedef enum opt_kind {
    OPT_STR,  /* const char *; "" means unset (NULL) where allowed */
    OPT_INT,  /* int in [min, max] */
    OPT_UINT, /* unsigned in [min, max] */
    OPT_SIZE, /* size_t in [min, max] */
} opt_kind;

typedef struct opt_def {
    const char *flag; /* long flag without "--" */
    const char *env;
    opt_kind kind;
    size_t offset;    /* into srv_config */
    size_t min, max;  /* numbers */
    int required;     /* strings: must not be empty */
    const char *arg;  /* placeholder in --help */
    const char *help;
    const char *def;  /* default shown by --help when the value alone says too little */
} opt_def;

#define CFG(f) offsetof(srv_config, f)

static const opt_def opts[] = {
    {"host", "FMNIST_HOST", OPT_STR, CFG(host), 0, 0, 1, "ADDR", "address to listen on", NULL},
    {"port", "FMNIST_PORT", OPT_INT, CFG(port), 0, 65535, 0, "N", "TCP port (0: any free port, printed at start)",
     NULL},
    {"weights", "FMNIST_WEIGHTS", OPT_STR, CFG(weights_dir), 0, 0, 1, "DIR",
     "directory whose *.safetensors are served (SIGHUP reloads it)", NULL},
    {"default-model", "FMNIST_DEFAULT_MODEL", OPT_STR, CFG(default_model), 0, 0, 0, "NAME",
     "model used when a request names none (absent: the first by name)", NULL},
    {"static", "FMNIST_STATIC", OPT_STR, CFG(static_dir), 0, 0, 0, "DIR", "static files (the demo page); \"\": none",
     NULL},
    {"data", "FMNIST_DATA", OPT_STR, CFG(data_dir), 0, 0, 0, "DIR", "Fashion-MNIST test set for /v1/samples",
     FM_DEFAULT_DATA_DIR},
    {"cors-origin", "FMNIST_CORS_ORIGIN", OPT_STR, CFG(cors_origin), 0, 0, 0, "ORIGIN",
     "Access-Control-Allow-Origin for browsers (e.g. * or https://example.org)", "off"},
    {"threads", "FMNIST_THREADS", OPT_UINT, CFG(threads), 0, 1024, 0, "N", "worker threads (0: one per core)", NULL},
    {"max-body-bytes", "FMNIST_MAX_BODY_BYTES", OPT_SIZE, CFG(max_body_bytes), 1, (size_t)1 << 30, 0, "N",
     "largest request body (413 beyond)", NULL},
    {"max-batch", "FMNIST_MAX_BATCH", OPT_SIZE, CFG(max_batch), 1, 65536, 0, "N",
     "most images/instances in one request (413 beyond)", NULL},
    {"max-pixels", "FMNIST_MAX_PIXELS", OPT_SIZE, CFG(max_pixels), 1, (size_t)1 << 30, 0, "N",
     "largest decoded image, width x height (413 beyond)", NULL},
    {"connection-limit", "FMNIST_CONNECTION_LIMIT", OPT_UINT, CFG(connection_limit), 1, 1000000, 0, "N",
     "most open client connections", NULL},
    {"idle-timeout", "FMNIST_IDLE_TIMEOUT", OPT_UINT, CFG(idle_timeout_s), 1, 86400, 0, "S",
     "close a connection silent for S seconds", NULL},
    {"request-timeout", "FMNIST_REQUEST_TIMEOUT", OPT_UINT, CFG(request_timeout_s), 1, 86400, 0, "S",
     "close a connection whose request takes longer than S seconds in all (slow clients)", NULL},
    {"drain-timeout", "FMNIST_DRAIN_TIMEOUT", OPT_UINT, CFG(drain_timeout_s), 0, 3600, 0, "S",
     "on SIGTERM, wait at most S seconds for in-flight requests", NULL},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static void config_defaults(srv_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "0.0.0.0";
    c->port = 8080;
    c->weights_dir = "weights";
    c->default_model = "cnn3";
    c->static_dir = "static";
    c->data_dir = NULL;
    c->cors_origin = NULL;
    c->threads = 0;
    c->max_body_bytes = (size_t)4 << 20;
    c->max_batch = 256;
    c->max_pixels = (size_t)16 << 20;
    c->connection_limit = 1024;
    c->idle_timeout_s = 30;
    c->request_timeout_s = 60;
    c->drain_timeout_s = 25;
}

static void usage(FILE *f) {
    srv_config d;
    config_defaults(&d);
    fprintf(f, "usage: fmnist-serve [flags]\n\n"
               "Serves the Fashion-MNIST models of a weights directory over HTTP (native, KServe v2,\n"
               "TF Serving and TorchServe APIs, Prometheus /metrics, the demo page).\n"
               "Every flag can also be set by the environment variable shown; a flag wins.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *o = &opts[i];
        const char *p = (const char *)&d + o->offset;
        char flag[48], def[96];
        snprintf(flag, sizeof flag, "--%s %s", o->flag, o->arg);
        if (o->def) snprintf(def, sizeof def, "%s", o->def);
        else if (o->kind == OPT_STR) snprintf(def, sizeof def, "%s", *(const char *const *)p ? *(const char *const *)p : "none");
        else if (o->kind == OPT_INT) snprintf(def, sizeof def, "%d", *(const int *)p);
        else if (o->kind == OPT_UINT) snprintf(def, sizeof def, "%u", *(const unsigned *)p);
        else snprintf(def, sizeof def, "%zu", *(const size_t *)p);
        fprintf(f, "  %-24s %s\n  %-24s (default: %s; env %s)\n", flag, o->help, "", def, o->env);
    }
    fprintf(f, "  %-24s this help\n\n"
               "Signals: SIGHUP reloads the weights directory; SIGTERM/SIGINT drain and exit.\n",
            "--help");
}

/* Sets option o from text v (from the flag or the environment variable
 * named by source).  Prints the problem and returns -1 when v is bad. */
static int opt_set(srv_config *c, const opt_def *o, const char *v, const char *source) {
    char *p = (char *)c + o->offset;
    int rc = PX_OK;
    switch (o->kind) {
    case OPT_STR:
        if (!*v && o->required) {
            fprintf(stderr, "fmnist-serve: %s: must not be empty (see --help)\n", source);
            return -1;
        }
        *(const char **)p = *v ? v : NULL;
        return 0;
    case OPT_INT: {
        int x;
        rc = px_parse_int(v, (int)o->min, (int)o->max, &x);
        if (rc == PX_OK) *(int *)p = x;
        break;
    }
    case OPT_UINT: {
        size_t x;
        rc = px_parse_size(v, o->min, o->max, &x);
        if (rc == PX_OK) *(unsigned *)p = (unsigned)x;
        break;
    }
    case OPT_SIZE:
        rc = px_parse_size(v, o->min, o->max, (size_t *)p);
        break;
    }
    if (rc != PX_OK) {
        fprintf(stderr, "fmnist-serve: %s: expected a whole number from %zu to %zu, got '%s' (see --help)\n", source,
                o->min, o->max, v);
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, 2 for a bad command line (reported). */
static int config_parse(srv_config *c, int argc, char **argv) {
    config_defaults(c);
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].env);
        char source[96];
        snprintf(source, sizeof source, "environment variable %s", opts[i].env);
        if (v && *v && opt_set(c, &opts[i], v, source)) return 2;
    }
    struct option lopts[N_OPTS + 2];
    for (size_t i = 0; i < N_OPTS; i++) lopts[i] = (struct option){opts[i].flag, required_argument, NULL, 1000 + (int)i};
    lopts[N_OPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[N_OPTS + 1] = (struct option){NULL, 0, NULL, 0};
    int ch;
    opterr = 1;
    while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 1;
        }
        if (ch < 1000 || ch >= 1000 + (int)N_OPTS) {
            fprintf(stderr, "fmnist-serve: see fmnist-serve --help\n");
            return 2;
        }
        const opt_def *o = &opts[ch - 1000];
        char source[64];
        snprintf(source, sizeof source, "--%s", o->flag);
        if (opt_set(c, o, optarg, source)) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "fmnist-serve: unexpected argument '%s' (see fmnist-serve --help)\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------ models */

static void log_line(const char *line) {
    fprintf(stderr, "fmnist-serve: %s\n", line);
}

/* "cnn3 (test acc 0.9187, default), mlp2 (0.8950)" */
static void describe_models(const srv_snap *s, char *out, size_t outsz) {
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->n_models && o + 1 < outsz; i++) {
        const srv_model *m = &s->models[i];
        char acc[32];
        if (isnan(m->test_accuracy)) snprintf(acc, sizeof acc, "n/a");
        else snprintf(acc, sizeof acc, "%.4f", m->test_accuracy);
        int n = snprintf(out + o, outsz - o, "%s%s (%s%s%s)", i ? ", " : "", m->name, i ? "" : "test acc ", acc,
                         (int)i == s->default_index ? ", default" : "");
        if (n < 0) break;
        o += (size_t)n;
    }
    if (o >= outsz && outsz > 4) memcpy(out + outsz - 4, "...", 4);
}

static void reload(srv_ctx *ctx) {
    const srv_config *cfg = ctx->cfg;
    srv_snap *snap;
    fm_error err;
    uint64_t gen = atomic_fetch_add(&ctx->registry->next_generation, 1);
    srv_snap *prev = srv_registry_acquire(ctx->registry);
    int rc = srv_snap_reload(&snap, cfg->weights_dir, cfg->default_model, gen, prev, log_line, &err);
    srv_snap_release(prev);
    if (rc != 0) {
        srv_snap *old = srv_registry_acquire(ctx->registry);
        fprintf(stderr, "fmnist-serve: SIGHUP: reload failed, still serving the previous %zu model%s: %s\n",
                old ? old->n_models : 0, old && old->n_models == 1 ? "" : "s", err.msg);
        srv_snap_release(old);
        srv_thread_ws_free(); /* keep no snapshot of our own between reloads */
        return;
    }
    char desc[2048];
    describe_models(snap, desc, sizeof desc);
    size_t n = snap->n_models;
    srv_registry_publish(ctx->registry, snap);
    /* Drop this thread's reference to the previous set (acquire above kept
     * one): it goes as soon as the workers' requests are done with it,
     * instead of living on until the next reload. */
    srv_thread_ws_free();
    srv_metrics_models_loaded(ctx->metrics, n);
    printf("fmnist-serve: SIGHUP: reloaded %s (generation %" PRIu64 "): models: %s\n", cfg->weights_dir, gen, desc);
}

/* --------------------------------------------------------------- main */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits up to ms for a signal; returns its number, 0 when none came. */
static int wait_signal(int sfd, int ms) {
    struct pollfd p = {sfd, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return 0;
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si) return 0;
    return (int)si.ssi_signo;
}

int main(int argc, char **argv) {
    srv_config cfg;
    int rc = config_parse(&cfg, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    setvbuf(stdout, NULL, _IOLBF, 0); /* one request log line at a time, even into a pipe */
#ifdef M_MMAP_THRESHOLD
    /* Blocks of 128 KiB and more (decoded images, request bodies) are
     * mapped and unmapped, always: glibc would otherwise raise the threshold
     * after the first large free (a 16-megapixel decode raises it to 32 MiB)
     * and carve later ones out of whichever thread's heap asked, where they
     * fragment and VmRSS steps up as the work moves between threads.
     * (libmicrohttpd maps its connection pools, over 32 KiB, itself.) */
    if (mallopt(M_MMAP_THRESHOLD, 128 * 1024) != 1)
        fprintf(stderr, "fmnist-serve: mallopt(M_MMAP_THRESHOLD) refused; memory use may creep\n");
#endif

    /* Blocked before any thread starts, so every worker inherits the mask
     * and the signals arrive only through the signalfd. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "fmnist-serve: signalfd: %s\n", strerror(errno));
        return 1;
    }

    srv_registry reg;
    atomic_init(&reg.current, NULL);
    atomic_init(&reg.next_generation, 1);
    srv_snap *snap;
    fm_error err;
    if (srv_snap_load(&snap, cfg.weights_dir, cfg.default_model, atomic_fetch_add(&reg.next_generation, 1), log_line,
                      &err) != 0) {
        fprintf(stderr, "fmnist-serve: %s\n", err.msg);
        close(sfd);
        return 1;
    }
    char desc[2048];
    describe_models(snap, desc, sizeof desc);
    size_t n_models = snap->n_models;
    srv_registry_publish(&reg, snap);

    srv_metrics *metrics = srv_metrics_create();
    if (!metrics) {
        fprintf(stderr, "fmnist-serve: out of memory\n");
        srv_registry_shutdown(&reg);
        close(sfd);
        return 1;
    }
    srv_metrics_models_loaded(metrics, n_models);

    static srv_ctx ctx; /* static: big (static_root) and lives as long as the process */
    ctx.cfg = &cfg;
    ctx.registry = &reg;
    ctx.metrics = metrics;
    atomic_init(&ctx.draining, 0);
    ctx.static_root[0] = '\0';
    if (cfg.static_dir && !realpath(cfg.static_dir, ctx.static_root)) {
        fprintf(stderr, "fmnist-serve: warning: static files disabled: %s: %s (--static / FMNIST_STATIC)\n",
                cfg.static_dir, strerror(errno));
        ctx.static_root[0] = '\0';
    }
    fm_dataset samples = {0};
    if (fm_dataset_load_split(&samples, fm_data_dir(cfg.data_dir), FM_SPLIT_TEST, &err) == 0) {
        ctx.samples = &samples;
    } else {
        fprintf(stderr, "fmnist-serve: warning: /v1/samples disabled: %s\n", err.msg);
        ctx.samples = NULL;
    }

    char herr[512];
    http_server *srv = http_start(&ctx, herr, sizeof herr);
    if (!srv) {
        fprintf(stderr, "fmnist-serve: %s\n", herr);
        fm_dataset_free(&samples);
        srv_metrics_destroy(metrics);
        srv_registry_shutdown(&reg);
        close(sfd);
        return 1;
    }
    int v6 = strchr(cfg.host, ':') != NULL;
    printf("fmnist-serve: listening on http://%s%s%s:%u/ \xe2\x80\x94 models: %s \xe2\x80\x94 %u threads\n",
           v6 ? "[" : "", cfg.host, v6 ? "]" : "", (unsigned)http_port(srv), desc, http_threads(srv));

    int sig;
    for (;;) {
        sig = wait_signal(sfd, TICK_MS);
        http_tick(srv);
        if (sig == SIGHUP) reload(&ctx);
        else if (sig == SIGTERM || sig == SIGINT) break;
    }

    atomic_store(&ctx.draining, 1);
    http_quiesce(srv);
    http_tick(srv); /* closes the idle kept-alive connections now */
    uint64_t deadline = now_ms() + (uint64_t)cfg.drain_timeout_s * 1000u;
    printf("fmnist-serve: %s: draining (not accepting connections; waiting up to %u s for %u open)\n",
           sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.drain_timeout_s, http_connections(srv));
    unsigned open;
    while ((open = http_connections(srv)) > 0) {
        if (now_ms() >= deadline) {
            printf("fmnist-serve: drain timeout: closing %u connection%s\n", open, open == 1 ? "" : "s");
            break;
        }
        int s2 = wait_signal(sfd, 100);
        if (s2 == SIGTERM || s2 == SIGINT) {
            printf("fmnist-serve: second signal: closing %u connection%s now\n", open, open == 1 ? "" : "s");
            break;
        }
        http_tick(srv);
    }
    http_stop(srv);
    srv_registry_shutdown(&reg);
    srv_thread_ws_free(); /* the main thread's reference (reloads acquire) */
    srv_metrics_destroy(metrics);
    fm_dataset_free(&samples);
    close(sfd);
    printf("fmnist-serve: stopped\n");
    return 0;
}
