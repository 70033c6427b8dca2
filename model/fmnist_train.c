/* fmnist_train.c - fmnist-train, the offline trainer: a thin shell around
 * the engine library.
 *
 *   fmnist-train train   --model mlp2 ...   train one network, write weights + reports
 *   fmnist-train grid    --model mlp2 ...   the study's hyper-parameter search
 *   fmnist-train eval    FILE.safetensors   test-set loss, accuracy, confusion, P/R/F1
 *   fmnist-train summary NAME|FILE          Keras-like layer table
 *   fmnist-train eda                        data overview and sample grid PNG
 *
 * Training is deterministic for a seed and thread count; Ctrl-C / SIGTERM
 * write a checkpoint at the next batch boundary and --resume continues from
 * it with bit-identical results.  All output files are written atomically.
 * Under mpirun, train is data-parallel (fm_mpi.h): the same for a seed and
 * shard count (processes x threads), rank 0 alone writes files. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fm_eda.h"
#include "fm_file.h"
#include "fm_gemm.h"
#include "fm_idx.h"
#include "fm_mpi.h"
#include "fm_optim.h"
#include "fm_sched.h"
#include "fm_sha256.h"
#include "fm_st.h"
#include "fm_train.h"

#define FM_VERSION "0.1.0"

/* ---------------------------------------------------------------- config */

typedef struct cfg {
    const char *model;       /* named architecture or .json path */
    int opt;                 /* -1: model default */
    double lr;               /* 0: model default */
    double momentum;         /* -1: model default */
    size_t batch;            /* 0: model default */
    int epochs;
    int patience;
    size_t val;
    uint64_t seed;
    size_t threads;
    const char *out;         /* NULL: weights/<model>.safetensors */
    const char *data;
    const char *checkpoint;  /* NULL: <out>.ckpt */
    int resume;              /* 1: --resume; 2: --resume-if-any (afresh when there is no checkpoint) */
    size_t limit;            /* use only the first N training examples (0: all) */
    int plateau_patience;    /* ReduceLROnPlateau, 0 = off */
    double plateau_factor;
    double min_lr;
    int quiet;
    int no_test;             /* skip the final test-set evaluation */
    int monitor_acc;         /* early stopping / best epoch on val_accuracy instead of val_loss */
    int sched;               /* fm_sched_kind */
    double warmup;           /* cosine: warm-up epochs */
    double weight_decay;     /* SGD/Adam: L2 in the gradient; AdamW: decoupled (weights only) */
    int nesterov;            /* SGD: Nesterov momentum */
    double smoothing;        /* label smoothing */
    double ema;              /* exponential moving average of the weights: decay per step (0: off) */
    fm_augment aug;          /* on-the-fly augmentation (all off by default) */
} cfg;

static const struct {
    const char *name;
    int opt;
    double lr, momentum;
    size_t batch;
} model_defaults[] = {
    {"mlp2", FM_OPT_ADAM, 1e-3, 0.0, 512},
    {"mlp3", FM_OPT_ADAM, 1e-4, 0.0, 128},
    {"cnn1", FM_OPT_SGD, 1e-2, 0.9, 64},
    {"cnn2", FM_OPT_SGD, 1e-2, 0.9, 64},
    {"cnn3", FM_OPT_ADAM, 1e-3, 0.0, 64},
};

static void apply_defaults(cfg *c, const char *arch_name) {
    int opt = FM_OPT_ADAM;
    double lr = 1e-3, mom = 0.0;
    size_t batch = 128;
    for (size_t i = 0; i < sizeof model_defaults / sizeof model_defaults[0]; i++)
        if (strcmp(arch_name, model_defaults[i].name) == 0) {
            opt = model_defaults[i].opt, lr = model_defaults[i].lr;
            mom = model_defaults[i].momentum, batch = model_defaults[i].batch;
        }
    if (c->opt < 0) c->opt = opt;
    if (c->lr <= 0) c->lr = c->opt == opt ? lr : (c->opt != FM_OPT_SGD ? 1e-3 : 1e-2);
    if (c->momentum < 0) c->momentum = c->opt == FM_OPT_SGD && opt == FM_OPT_SGD ? mom : 0.0;
    if (c->batch == 0) c->batch = batch;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): the work a run took,
 * whatever else the machine was doing meanwhile. */
static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile sig_atomic_t g_stop = 0;

/* The MPI job this process belongs to (a job of one outside mpirun), and
 * whether the failure being returned was found by every process alike (then
 * they all end normally; any other failure in a job ends it: fm_mpi_abort). */
static fm_mpi g_mpi = {.comm = {.n_ranks = 1}};
static int g_agreed;
static int in_job(void) { return g_mpi.comm.n_ranks > 1; }
static void on_signal(int sig) { g_stop = sig; }

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int fail(const char *fmt, ...) FM_PRINTF(1, 2);
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (in_job())
        fprintf(stderr, "fmnist-train (rank %zu): ", g_mpi.comm.rank);
    else
        fputs("fmnist-train: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* strict number parsing for flags */
static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* "weights/cnn3.safetensors" -> "weights/cnn3" + suffix */
static char *sibling(const char *out, const char *suffix) {
    size_t n = strlen(out);
    const char *ext = ".safetensors";
    size_t el = strlen(ext);
    if (n >= el && strcmp(out + n - el, ext) == 0) n -= el;
    char *s = malloc(n + strlen(suffix) + 1);
    if (!s) return NULL;
    memcpy(s, out, n);
    strcpy(s + n, suffix);
    return s;
}

static int write_json(const char *path, cJSON *j, fm_error *err) {
    char *s = cJSON_Print(j);
    if (!s) return fm_seterr(err, "out of memory printing JSON");
    size_t n = strlen(s);
    fm_chunk ch[2] = {{s, n}, {"\n", 1}};
    int rc = fm_write_atomic(path, ch, 2, err);
    free(s);
    return rc;
}

/* ------------------------------------------------------------ checkpoint */

/* Everything a resumed run needs, beyond the float buffers. */
typedef struct run_state {
    int epoch;             /* current epoch (0-based) */
    size_t batch;          /* next batch within the epoch */
    double run_loss;       /* summed training loss so far in this epoch */
    size_t run_correct, run_seen;
    int best_epoch;        /* -1 none yet */
    double best_val_loss;
    int since_best;
    int plateau_wait;
    double lr;             /* current learning rate */
    double elapsed;        /* seconds of training so far, all sittings */
    double cpu_elapsed;    /* CPU seconds of training so far, all sittings */
    double epoch_cpu;      /* CPU seconds spent in the current epoch before the interruption */
    double epoch_elapsed;  /* seconds spent in the current epoch before the interruption */
    cJSON *history;        /* array of per-epoch objects (owned) */
} run_state;

static const char ckpt_magic[8] = {'F', 'M', 'C', 'K', 'P', 'T', '0', '1'};

static cJSON *config_json(const cfg *c, const fm_arch *a, size_t threads, size_t n_train, size_t n_val) {
    cJSON *j = cJSON_CreateObject();
    char *aj = fm_arch_to_json(a);
    /* A parsed object, not cJSON_Raw: the checkpoint's copy comes back parsed,
     * and cJSON_Compare never matches a raw item against an object. */
    cJSON *ao = aj ? cJSON_Parse(aj) : NULL;
    cJSON_AddStringToObject(j, "model", a->name);
    if (ao) cJSON_AddItemToObject(j, "architecture", ao);
    free(aj);
    cJSON_AddStringToObject(j, "optimizer", fm_optim_name((fm_opt_kind)c->opt));
    cJSON_AddNumberToObject(j, "learning_rate", c->lr);
    cJSON_AddNumberToObject(j, "momentum", c->momentum);
    cJSON_AddNumberToObject(j, "batch_size", (double)c->batch);
    cJSON_AddNumberToObject(j, "max_epochs", c->epochs);
    cJSON_AddNumberToObject(j, "patience", c->patience);
    cJSON_AddStringToObject(j, "monitor", c->monitor_acc ? "val_accuracy" : "val_loss");
    cJSON_AddNumberToObject(j, "plateau_patience", c->plateau_patience);
    cJSON_AddNumberToObject(j, "plateau_factor", c->plateau_factor);
    cJSON_AddNumberToObject(j, "min_lr", c->min_lr);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddNumberToObject(j, "threads", (double)threads);
    if (in_job()) { /* the layout; a resume needs the same shard count (ckpt_load) */
        cJSON_AddNumberToObject(j, "ranks", (double)g_mpi.comm.n_ranks);
        cJSON_AddNumberToObject(j, "shards", (double)(g_mpi.comm.n_ranks * threads));
    }
    cJSON_AddNumberToObject(j, "train_examples", (double)n_train);
    cJSON_AddNumberToObject(j, "val_examples", (double)n_val);
    cJSON_AddNumberToObject(j, "limit", (double)c->limit);
    /* the recipe beyond the study's: recorded only when used, so the study's
     * runs keep their metadata */
    if (c->sched != FM_SCHED_CONSTANT) {
        cJSON_AddStringToObject(j, "schedule", fm_sched_name((fm_sched_kind)c->sched));
        cJSON_AddNumberToObject(j, "warmup_epochs", c->warmup);
    }
    if (c->weight_decay > 0) cJSON_AddNumberToObject(j, "weight_decay", c->weight_decay);
    if (c->nesterov) cJSON_AddTrueToObject(j, "nesterov");
    if (c->smoothing > 0) cJSON_AddNumberToObject(j, "label_smoothing", c->smoothing);
    if (c->ema > 0) cJSON_AddNumberToObject(j, "ema", c->ema);
    if (fm_augment_enabled(&c->aug)) {
        const fm_augment *g = &c->aug;
        cJSON *a = cJSON_AddObjectToObject(j, "augmentation");
        if (g->crop) cJSON_AddNumberToObject(a, "crop", g->crop);
        if (g->flip > 0) cJSON_AddNumberToObject(a, "flip", g->flip);
        if (g->scale > 0) cJSON_AddNumberToObject(a, "scale", g->scale);
        if (g->erase > 0) {
            cJSON_AddNumberToObject(a, "erase", g->erase);
            cJSON_AddNumberToObject(a, "erase_area_min", g->erase_min);
            cJSON_AddNumberToObject(a, "erase_area_max", g->erase_max);
            cJSON_AddNumberToObject(a, "erase_ratio", g->erase_ratio);
        }
        if (g->gain > 0) cJSON_AddNumberToObject(a, "gain", g->gain);
        if (g->gamma > 0) cJSON_AddNumberToObject(a, "gamma", g->gamma);
        if (g->blur > 0) cJSON_AddNumberToObject(a, "blur", g->blur);
        if (g->sharpen > 0) cJSON_AddNumberToObject(a, "sharpen", g->sharpen);
    }
    return j;
}

static int ckpt_save(const char *path, const cJSON *config, const run_state *s, const fm_optim *o,
                     const float *params, const float *best, const float *ema, size_t n, fm_error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "config", cJSON_Duplicate(config, 1));
    cJSON_AddNumberToObject(j, "epoch", s->epoch);
    cJSON_AddNumberToObject(j, "batch", (double)s->batch);
    cJSON_AddNumberToObject(j, "run_loss", s->run_loss);
    cJSON_AddNumberToObject(j, "run_correct", (double)s->run_correct);
    cJSON_AddNumberToObject(j, "run_seen", (double)s->run_seen);
    cJSON_AddNumberToObject(j, "best_epoch", s->best_epoch);
    cJSON_AddNumberToObject(j, "best_val_loss", s->best_val_loss);
    cJSON_AddNumberToObject(j, "since_best", s->since_best);
    cJSON_AddNumberToObject(j, "plateau_wait", s->plateau_wait);
    cJSON_AddNumberToObject(j, "lr", s->lr);
    cJSON_AddNumberToObject(j, "elapsed", s->elapsed);
    cJSON_AddNumberToObject(j, "epoch_elapsed", s->epoch_elapsed);
    cJSON_AddNumberToObject(j, "cpu_elapsed", s->cpu_elapsed);
    cJSON_AddNumberToObject(j, "epoch_cpu", s->epoch_cpu);
    cJSON_AddNumberToObject(j, "opt_t", (double)o->t);
    cJSON_AddNumberToObject(j, "n_params", (double)n);
    cJSON_AddItemToObject(j, "history", cJSON_Duplicate(s->history, 1));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return fm_seterr(err, "out of memory writing a checkpoint");
    uint64_t len = strlen(text);
    size_t n_state = o->m ? (o->v ? 2 : 1) : 0;
    fm_chunk ch[7] = {{ckpt_magic, 8}, {&len, 8}, {text, len}, {params, n * sizeof(float)},
                      {best, n * sizeof(float)}, {o->m, n_state * n * sizeof(float)},
                      {ema, ema ? n * sizeof(float) : 0}};
    int rc = fm_write_atomic(path, ch, 7, err);
    free(text);
    return rc;
}

static double jnum(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* A config with its layout (threads, ranks) replaced by the shard count
 * alone, or without it (keep_shards 0): results depend on the shards only. */
static cJSON *layout_free(const cJSON *config, int keep_shards) {
    cJSON *j = cJSON_Duplicate(config, 1);
    if (!j) return NULL;
    double w = jnum(j, "shards");
    if (!isfinite(w)) w = jnum(j, "threads");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "threads");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "ranks");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "shards");
    if (keep_shards) cJSON_AddNumberToObject(j, "shards", isfinite(w) ? w : 0);
    return j;
}

/* 1 when a checkpoint's config cc is resumable under config: equal but for
 * the layout, which may change when the shard count stays (why says it). */
static int same_run(const cJSON *cc, const cJSON *config, char *why, size_t n_why) {
    cJSON *a = layout_free(cc, 1), *b = layout_free(config, 1);
    int same = a && b && cJSON_Compare(a, b, 1);
    why[0] = '\0';
    if (!same && a && b) {
        cJSON *a0 = layout_free(cc, 0), *b0 = layout_free(config, 0);
        double ranks_was = jnum(cc, "ranks"), ranks_now = jnum(config, "ranks");
        if (a0 && b0 && cJSON_Compare(a0, b0, 1))
            snprintf(why, n_why, "%g shards (%g processes x %g threads) wrote it, this run has %g (%g x %g); resume "
                     "with processes x threads = %g", jnum(a, "shards"), isfinite(ranks_was) ? ranks_was : 1,
                     jnum(cc, "threads"), jnum(b, "shards"), isfinite(ranks_now) ? ranks_now : 1,
                     jnum(config, "threads"), jnum(a, "shards"));
        cJSON_Delete(a0);
        cJSON_Delete(b0);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return same;
}

/* Loads a checkpoint; the config it was written with must match cfg's. */
static int ckpt_load(const char *path, const cJSON *config, run_state *s, fm_optim *o, float *params,
                     float *best, float *ema, size_t n, fm_error *err) {
    char *buf;
    size_t len;
    if (fm_read_file(path, (size_t)1 << 31, &buf, &len, err)) return -1;
    int rc = -1;
    cJSON *j = NULL;
    uint64_t jl;
    size_t n_state = o->m ? (o->v ? 2 : 1) : 0;
    if (len < 16 || memcmp(buf, ckpt_magic, 8) != 0) {
        fm_seterr(err, "%s: not an fmnist checkpoint", path);
        goto done;
    }
    memcpy(&jl, buf + 8, 8);
    if (jl > len - 16 || len - 16 - jl != (2 + n_state + (ema ? 1 : 0)) * n * sizeof(float)) {
        fm_seterr(err, "%s: checkpoint is truncated or for another model/optimiser", path);
        goto done;
    }
    j = cJSON_ParseWithLength(buf + 16, (size_t)jl);
    if (!j) {
        fm_seterr(err, "%s: checkpoint header is not JSON", path);
        goto done;
    }
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(j, "config");
    char layout[300];
    if (cc && !same_run(cc, config, layout, sizeof layout) && layout[0]) {
        fm_seterr(err, "%s: checkpoint was written with a different layout: %s", path, layout);
        goto done;
    }
    if (!cc || !same_run(cc, config, layout, sizeof layout)) {
        char *want = cJSON_PrintUnformatted(config), *have = cc ? cJSON_PrintUnformatted(cc) : NULL;
        fm_seterr(err, "%s: checkpoint was written with a different configuration; resume with the same flags "
                  "(checkpoint: %.200s; now: %.200s)", path, have ? have : "?", want ? want : "?");
        free(want);
        free(have);
        goto done;
    }
    s->epoch = (int)jnum(j, "epoch");
    s->batch = (size_t)jnum(j, "batch");
    s->run_loss = jnum(j, "run_loss");
    s->run_correct = (size_t)jnum(j, "run_correct");
    s->run_seen = (size_t)jnum(j, "run_seen");
    s->best_epoch = (int)jnum(j, "best_epoch");
    s->best_val_loss = jnum(j, "best_val_loss");
    if (!isfinite(s->best_val_loss)) s->best_val_loss = INFINITY; /* JSON has no infinity: none yet */
    s->since_best = (int)jnum(j, "since_best");
    s->plateau_wait = (int)jnum(j, "plateau_wait");
    s->lr = jnum(j, "lr");
    s->elapsed = jnum(j, "elapsed");
    s->epoch_elapsed = jnum(j, "epoch_elapsed");
    s->cpu_elapsed = jnum(j, "cpu_elapsed");
    s->epoch_cpu = jnum(j, "epoch_cpu");
    if (!isfinite(s->cpu_elapsed)) s->cpu_elapsed = 0.0; /* a checkpoint of an older build */
    if (!isfinite(s->epoch_cpu)) s->epoch_cpu = 0.0;
    o->t = (uint64_t)jnum(j, "opt_t");
    cJSON *h = cJSON_DetachItemFromObjectCaseSensitive(j, "history");
    if (!cJSON_IsArray(h) || !isfinite(s->lr) || s->epoch < 0) {
        cJSON_Delete(h);
        fm_seterr(err, "%s: checkpoint state is incomplete", path);
        goto done;
    }
    cJSON_Delete(s->history);
    s->history = h;
    const char *p = buf + 16 + jl;
    memcpy(params, p, n * sizeof(float));
    memcpy(best, p + n * sizeof(float), n * sizeof(float));
    if (n_state) memcpy(o->m, p + 2 * n * sizeof(float), n_state * n * sizeof(float));
    if (ema) memcpy(ema, p + (2 + n_state) * n * sizeof(float), n * sizeof(float));
    rc = 0;
done:
    cJSON_Delete(j);
    free(buf);
    return rc;
}

/* -------------------------------------------------------------- progress */

static void progress(int tty, int epoch, int epochs, size_t done, size_t total, size_t seen, double t0,
                     double loss, size_t correct) {
    if (!tty) return;
    double dt = now_s() - t0;
    double rate = dt > 0 ? (double)seen / dt : 0.0;
    double eta = done > 0 ? dt * (double)(total - done) / (double)done : 0.0;
    int width = 24, fill = total ? (int)((double)width * (double)done / (double)total) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %zu/%zu  %.0f ex/s  ETA %.0fs  loss %.4f  acc %.4f", epoch,
            epochs, bar, done, total, rate, eta, seen ? loss / (double)seen : 0.0,
            seen ? (double)correct / (double)seen : 0.0);
    fflush(stderr);
}

/* ----------------------------------------------------------------- train */

typedef struct data {
    fm_dataset all, test;   /* owning */
    fm_dataset train, val;  /* views */
} data;

static int load_data(data *d, const char *dir, size_t n_val, size_t limit, int need_test, fm_error *err) {
    memset(d, 0, sizeof *d);
    if (fm_dataset_load_split(&d->all, dir, FM_SPLIT_TRAIN, err)) return -1;
    if (need_test && fm_dataset_load_split(&d->test, dir, FM_SPLIT_TEST, err)) {
        fm_dataset_free(&d->all);
        return -1;
    }
    if (fm_dataset_split(&d->all, n_val, &d->train, &d->val, err)) {
        fm_dataset_free(&d->all);
        fm_dataset_free(&d->test);
        return -1;
    }
    if (limit && limit < d->train.n) d->train = fm_dataset_view(&d->train, 0, limit);
    return 0;
}

static void free_data(data *d) {
    fm_dataset_free(&d->all);
    fm_dataset_free(&d->test);
}

typedef struct result {
    fm_eval train, val, test;
    int epochs_run, best_epoch;
    double seconds;
    int has_test;
} result;

static cJSON *eval_json(const fm_eval *e, int per_class);

/* ------------------------------------------------------------------- job */

/* The first 8 bytes of a digest as hex, for messages. */
static void hex8(const uint8_t *d, char out[17]) {
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Every process's record, gathered (a local failure here ends the job). */
static void *job_gather(const void *mine, size_t n) {
    void *all = malloc(g_mpi.comm.n_ranks * n);
    if (!all) {
        fail("out of memory");
        fm_mpi_abort(&g_mpi, 1);
        return NULL;
    }
    g_mpi.comm.allgather(&g_mpi.comm, mine, all, n);
    return all;
}

/* Waits until every process got here: a refusal that every process prints
 * passes through this before any of them exits, since mpirun stops the
 * others as soon as one exits non-zero, often before their message was out. */
static void job_barrier(void) {
    char one = 1;
    free(job_gather(&one, 1));
}

/* What each process of a job read: the SHA-256 of the data set's contents
 * (train and test files as decoded) and where from.  ok 0: it could not. */
typedef struct job_data {
    uint8_t sha[32];
    int32_t ok;
    char dir[220];
} job_data;

/* 0 when every process of the job read the same data set; else every
 * process says which differ and returns 1 (so does a failed load). */
static int job_same_data(const data *d, int loaded, const char *dir) {
    job_data mine = {.ok = loaded}, *all;
    snprintf(mine.dir, sizeof mine.dir, "%s", dir);
    if (loaded) {
        const fm_dataset *sets[2] = {&d->all, &d->test};
        fm_sha256_ctx h;
        fm_sha256_init(&h);
        for (int k = 0; k < 2; k++) {
            uint64_t shape[3] = {sets[k]->n, sets[k]->rows, sets[k]->cols};
            fm_sha256_update(&h, shape, sizeof shape);
            if (sets[k]->n) {
                fm_sha256_update(&h, sets[k]->pixels, sets[k]->n * sets[k]->rows * sets[k]->cols);
                fm_sha256_update(&h, sets[k]->labels, sets[k]->n);
            }
        }
        fm_sha256_final(&h, mine.sha);
    }
    if (!(all = job_gather(&mine, sizeof mine))) return 1;
    int rc = 0;
    for (size_t r = 0; r < g_mpi.comm.n_ranks && !rc; r++) {
        char a[17], b[17];
        if (!all[r].ok) {
            rc = fail("rank %zu could not read its data set from %s (its message says why)", r, all[r].dir);
        } else if (memcmp(all[r].sha, all[0].sha, 32) != 0) {
            hex8(all[0].sha, a), hex8(all[r].sha, b);
            rc = fail("the processes read different data sets: rank 0 read sha256 %s... from %s, rank %zu read "
                      "%s... from %s; every process must read the same files (each from its own --data)", a,
                      all[0].dir, r, b, all[r].dir);
        }
    }
    free(all);
    if (rc) job_barrier();
    return rc;
}

/* What each process of a job starts from: the run's configuration and,
 * on --resume, its checkpoint file. */
typedef struct job_start {
    uint8_t config[32]; /* SHA-256 of the configuration JSON (flags, layout, example counts) */
    uint8_t ckpt[32];   /* SHA-256 of the checkpoint file */
    int32_t has_ckpt;   /* 1 there is one, 0 none, -1 unreadable */
    char path[220];
} job_start;

/* 0 when every process of the job runs the same configuration and, when
 * ckpt_path (a resume), has the same checkpoint or none; *resume becomes 0
 * for --resume-if-any when none has one.  Else every process says what
 * differs and returns 1. */
static int job_agree(const cJSON *config, const char *ckpt_path, int *resume) {
    job_start mine = {.has_ckpt = 0}, *all;
    char *text = cJSON_PrintUnformatted(config), *buf = NULL;
    size_t len;
    fm_error err;
    if (!text) { /* a local failure: the others are already waiting in the exchange */
        fail("out of memory");
        fm_mpi_abort(&g_mpi, 1);
        return 1;
    }
    fm_sha256(text, strlen(text), mine.config);
    free(text);
    if (ckpt_path) {
        snprintf(mine.path, sizeof mine.path, "%s", ckpt_path);
        if (access(ckpt_path, F_OK) == 0) {
            mine.has_ckpt = fm_read_file(ckpt_path, (size_t)1 << 31, &buf, &len, &err) ? -1 : 1;
            if (buf) fm_sha256(buf, len, mine.ckpt);
            free(buf);
        }
    }
    if (!(all = job_gather(&mine, sizeof mine))) return 1;
    size_t R = g_mpi.comm.n_ranks, have = 0;
    int rc = 0;
    for (size_t r = 0; r < R && !rc; r++) {
        char a[17], b[17];
        have += all[r].has_ckpt == 1;
        if (memcmp(all[r].config, all[0].config, 32) != 0)
            rc = fail("rank %zu was started with other training flags than rank 0: every process needs the same "
                      "flags (only --data, --out and --checkpoint may differ)", r);
        else if (all[r].has_ckpt < 0)
            rc = fail("rank %zu cannot read its checkpoint %s", r, all[r].path);
        else if (all[r].has_ckpt && all[0].has_ckpt && memcmp(all[r].ckpt, all[0].ckpt, 32) != 0) {
            hex8(all[0].ckpt, a), hex8(all[r].ckpt, b);
            rc = fail("the processes' checkpoints differ: rank 0's %s (sha256 %s...), rank %zu's %s (%s...); every "
                      "process must read the one rank 0 wrote", all[0].path, a, r, all[r].path, b);
        }
    }
    if (!rc && ckpt_path && have > 0 && have < R) {
        size_t with = 0, without = 0;
        for (size_t r = 0; r < R; r++) {
            if (all[r].has_ckpt) with = r;
            else without = r;
        }
        rc = fail("rank %zu has a checkpoint (%s), rank %zu has none at %s: every process must read the one rank "
                  "0 wrote (share its directory)", with, all[with].path, without, all[without].path);
    }
    if (!rc && ckpt_path && have == 0) {
        if (*resume == 1)
            rc = fail("--resume: no checkpoint at %s on any process (train without --resume to start afresh)",
                      all[0].path);
        else if (g_mpi.comm.rank == 0)
            fprintf(stderr, "--resume-if-any: no checkpoint at %s: starting afresh\n", all[0].path);
        *resume = 0;
    }
    free(all);
    if (rc) job_barrier();
    return rc;
}

/* Trains per c; on success writes weights, history and eval reports and fills r. */
static int run_train(const cfg *c0, const data *d, result *r, int verbose) {
    cfg c = *c0;
    fm_error err = {{0}};
    fm_arch arch;
    int rc = 1;
    if (strchr(c.model, '/') || strstr(c.model, ".json")) {
        if (fm_arch_from_file(&arch, c.model, &err)) return fail("%s", err.msg);
    } else if (fm_arch_named(&arch, c.model, &err)) {
        return fail("%s", err.msg);
    }
    apply_defaults(&c, arch.name);
    char default_out[300];
    snprintf(default_out, sizeof default_out, "weights/%s.safetensors", arch.name);
    const char *out = c.out ? c.out : default_out;
    char *hist_path = sibling(out, ".history.json"), *eval_path = sibling(out, ".eval.json");
    char *ckpt_path = c.checkpoint ? strdup(c.checkpoint) : sibling(out, ".ckpt");
    fm_model model = {0};
    fm_pool pool = {0};
    fm_optim opt = {0};
    float *best = NULL, *ema = NULL;
    uint8_t *flags = NULL;
    uint32_t *idx = NULL;
    cJSON *config = NULL;
    run_state s = {0};
    s.history = cJSON_CreateArray();
    if (!hist_path || !eval_path || !ckpt_path || !s.history) {
        fail("out of memory");
        goto done;
    }
    int writer = g_mpi.comm.rank == 0; /* in a job rank 0 alone writes files */
    if (writer && fm_check_writable(out, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    if (c.batch > d->train.n) c.batch = d->train.n;
    size_t threads = c.threads ? c.threads : fm_cpu_count();
    if (fm_model_init(&model, &arch, &err) ||
        fm_pool_create_job(&pool, &arch, threads, c.batch, in_job() ? &g_mpi.comm : NULL, &err) ||
        fm_optim_create(&opt, (fm_opt_kind)c.opt, arch.n_params, (float)c.lr, (float)c.momentum, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    threads = pool.n_threads;
    pool.aug = c.aug;
    pool.smoothing = (float)c.smoothing;
    best = malloc(arch.n_params * sizeof(float));
    flags = malloc(arch.n_params ? arch.n_params : 1);
    if (c.ema > 0) ema = malloc(arch.n_params * sizeof(float));
    idx = malloc(d->train.n * sizeof *idx);
    config = config_json(&c, &arch, threads, d->train.n, d->val.n);
    if (!best || !flags || (c.ema > 0 && !ema) || !idx || !config) {
        fail("out of memory");
        goto done;
    }
    fm_arch_param_flags(&arch, flags);
    opt.flags = flags;
    opt.weight_decay = (float)c.weight_decay;
    opt.nesterov = c.nesterov;
    fm_rng init;
    fm_rng_seed(&init, c.seed);
    fm_arch_init_params(&arch, model.params, &init);
    memcpy(best, model.params, arch.n_params * sizeof(float));
    if (ema) memcpy(ema, model.params, arch.n_params * sizeof(float));
    s.best_epoch = -1;
    s.best_val_loss = INFINITY;
    s.lr = c.lr;
    if (in_job() && job_agree(config, c.resume ? ckpt_path : NULL, &c.resume)) {
        g_agreed = 1;
        goto done;
    }
    if (c.resume == 2 && access(ckpt_path, F_OK) != 0) {
        if (verbose) fprintf(stderr, "--resume-if-any: no checkpoint at %s: starting afresh\n", ckpt_path);
        c.resume = 0;
    }
    if (c.resume) {
        if (access(ckpt_path, F_OK) != 0) {
            fail("--resume: no checkpoint at %s (train without --resume to start afresh)", ckpt_path);
            goto done;
        }
        if (ckpt_load(ckpt_path, config, &s, &opt, model.params, best, ema, arch.n_params, &err)) {
            fail("%s", err.msg);
            g_agreed = 1; /* in a job: the same bytes (job_agree) and flags, so the same refusal everywhere */
            goto done;
        }
        if (verbose)
            fprintf(stderr, "resuming %s from %s: epoch %d, batch %zu\n", arch.name, ckpt_path, s.epoch + 1, s.batch);
    }
    if (verbose)
        fprintf(stderr, "training %s (%zu params) on %zu examples, validating on %zu: %s lr %g%s batch %zu, "
                "%zu threads, gemm %s, seed %llu\n", arch.name, arch.n_params, d->train.n, d->val.n,
                fm_optim_name((fm_opt_kind)c.opt), c.lr, c.momentum > 0 ? " momentum" : "", c.batch,
                threads, fm_gemm_kernel_name(), (unsigned long long)c.seed);
    if (verbose && in_job())
        fprintf(stderr, "data-parallel under MPI: %zu processes x %zu threads = %zu shards; %zu bytes per shard "
                "and step exchanged\n", g_mpi.comm.n_ranks, threads, pool.n_shards, pool.block);
    int tty = verbose && isatty(STDERR_FILENO);
    size_t nb_epoch = (d->train.n + c.batch - 1) / c.batch;
    fm_sched sched = {.kind = (fm_sched_kind)c.sched, .lr = c.lr, .min_lr = c.min_lr,
                      .warmup = (uint64_t)(c.warmup * (double)nb_epoch), .warmup_div = 25.0, .pct = 0.3,
                      .div = 25.0, .final_div = 1e4, .total = (uint64_t)c.epochs * nb_epoch};
    float *eval_params = ema ? ema : model.params; /* what validation, the best epoch and the file hold */
    install_signals();
    int stopped_early = 0;
    for (; s.epoch < c.epochs; s.epoch++) {
        opt.lr = (float)s.lr;
        double lr_first = c.sched == FM_SCHED_CONSTANT ? s.lr : fm_sched_lr(&sched, (uint64_t)s.epoch * nb_epoch);
        for (size_t i = 0; i < d->train.n; i++) idx[i] = (uint32_t)i;
        fm_rng shuf;
        fm_rng_derive(&shuf, c.seed, (uint64_t)s.epoch, UINT64_MAX, 0x5348);
        fm_rng_shuffle(&shuf, idx, d->train.n);
        double t0 = now_s() - s.epoch_elapsed, c0 = cpu_s() - s.epoch_cpu;
        for (; s.batch < nb_epoch; s.batch++) {
            size_t start = s.batch * c.batch, n = d->train.n - start < c.batch ? d->train.n - start : c.batch;
            pool.stop_signal = (int)g_stop; /* in a job: the first rank's, so every rank stops at this batch */
            double l = fm_pool_gradient(&pool, model.params, &d->train, idx + start, n, c.seed,
                                        (uint64_t)s.epoch, s.batch, &s.run_correct);
            if (!isfinite(l)) {
                if (tty) fputc('\n', stderr);
                fail("loss became %s at epoch %d (batch %zu): training diverged; try a lower learning rate "
                     "(now --lr %g)", isnan(l) ? "NaN" : "infinite", s.epoch + 1, s.batch + 1, s.lr);
                goto done;
            }
            s.run_loss += l;
            s.run_seen += n;
            if (c.sched != FM_SCHED_CONSTANT) opt.lr = (float)fm_sched_lr(&sched, (uint64_t)s.epoch * nb_epoch + s.batch);
            fm_optim_step(&opt, model.params, pool.grads[0]);
            fm_pool_update_stats(&pool, model.params);
            if (ema) { /* every float but the I64 counts, which are copied */
                float dd = (float)c.ema;
                for (size_t i = 0; i < arch.n_params; i++)
                    ema[i] = flags[i] & FM_T_I64 ? model.params[i] : dd * ema[i] + (1.0f - dd) * model.params[i];
            }
            if (tty && (s.batch % 8 == 0 || s.batch + 1 == nb_epoch))
                progress(tty, s.epoch + 1, c.epochs, s.batch + 1, nb_epoch, s.run_seen, t0, s.run_loss, s.run_correct);
            int stop_sig = pool.comm ? pool.stop_signal : (int)g_stop;
            if (stop_sig) {
                s.batch++;
                s.epoch_elapsed = now_s() - t0;
                s.epoch_cpu = cpu_s() - c0;
                s.elapsed += 0;
                if (tty) fputc('\n', stderr);
                if (!writer) {
                } else if (ckpt_save(ckpt_path, config, &s, &opt, model.params, best, ema, arch.n_params, &err)) {
                    fail("interrupted, and the checkpoint could not be written: %s", err.msg);
                } else {
                    fprintf(stderr, "fmnist-train: interrupted by %s at epoch %d, batch %zu/%zu; checkpoint "
                            "written to %s; continue with the same command plus --resume\n",
                            stop_sig == SIGINT ? "SIGINT" : "SIGTERM", s.epoch + 1, s.batch, nb_epoch, ckpt_path);
                }
                rc = stop_sig == SIGINT ? 130 : 143;
                g_agreed = 1;
                goto done;
            }
        }
        double train_s = now_s() - t0;
        fm_eval ve;
        fm_pool_evaluate(&pool, eval_params, &d->val, &ve, NULL, NULL);
        double epoch_s = now_s() - t0, epoch_cpu = cpu_s() - c0;
        s.elapsed += epoch_s;
        s.cpu_elapsed += epoch_cpu;
        double tl = s.run_loss / (double)s.run_seen, ta = (double)s.run_correct / (double)s.run_seen;
        cJSON *h = cJSON_CreateObject();
        cJSON_AddNumberToObject(h, "epoch", s.epoch + 1);
        cJSON_AddNumberToObject(h, "loss", tl);
        cJSON_AddNumberToObject(h, "accuracy", ta);
        cJSON_AddNumberToObject(h, "val_loss", ve.loss);
        cJSON_AddNumberToObject(h, "val_accuracy", ve.accuracy);
        cJSON_AddNumberToObject(h, "lr", lr_first);
        if (c.sched != FM_SCHED_CONSTANT) cJSON_AddNumberToObject(h, "lr_end", opt.lr);
        cJSON_AddNumberToObject(h, "seconds", epoch_s);
        cJSON_AddNumberToObject(h, "cpu_seconds", epoch_cpu);
        cJSON_AddNumberToObject(h, "train_seconds", train_s);
        cJSON_AddItemToArray(s.history, h);
        /* the monitored value, lower is better: val_loss or -val_accuracy */
        double score = c.monitor_acc ? -ve.accuracy : ve.loss;
        int improved = score < s.best_val_loss;
        if (improved) {
            s.best_val_loss = score;
            s.best_epoch = s.epoch;
            s.since_best = 0;
            s.plateau_wait = 0;
            memcpy(best, eval_params, arch.n_params * sizeof(float));
        } else {
            s.since_best++;
            s.plateau_wait++;
        }
        if (tty) fprintf(stderr, "\r\033[K");
        if (verbose) {
            printf("epoch %3d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.1fs%s\n",
                   s.epoch + 1, c.epochs, tl, ta, ve.loss, ve.accuracy, lr_first, epoch_s, improved ? "  *" : "");
            fflush(stdout);
        }
        if (!isfinite(ve.loss)) {
            fail("validation loss became NaN at epoch %d: training diverged; try a lower learning rate (now --lr %g)",
                 s.epoch + 1, s.lr);
            goto done;
        }
        if (c.plateau_patience > 0 && s.plateau_wait >= c.plateau_patience && s.lr > c.min_lr) {
            double nl = s.lr * c.plateau_factor;
            s.lr = nl < c.min_lr ? c.min_lr : nl;
            s.plateau_wait = 0;
            if (verbose) printf("  %s has not improved for %d epochs: learning rate -> %.3g\n", c.monitor_acc ? "val_accuracy" : "val_loss", c.plateau_patience, s.lr);
        }
        s.batch = 0;
        s.run_loss = 0.0;
        s.run_correct = s.run_seen = 0;
        s.epoch_elapsed = 0.0;
        s.epoch_cpu = 0.0;
        int stop = c.patience > 0 && s.since_best >= c.patience;
        /* checkpoint every epoch: a kill -9 loses at most the epoch in progress */
        run_state next = s;
        next.epoch = s.epoch + 1;
        if (writer && ckpt_save(ckpt_path, config, &next, &opt, model.params, best, ema, arch.n_params, &err))
            fprintf(stderr, "fmnist-train: warning: %s\n", err.msg);
        if (writer) {
            cJSON *hd = cJSON_CreateObject();
            cJSON_AddItemToObject(hd, "config", cJSON_Duplicate(config, 1));
            cJSON_AddItemToObject(hd, "history", cJSON_Duplicate(s.history, 1));
            cJSON_AddNumberToObject(hd, "best_epoch", s.best_epoch + 1);
            if (write_json(hist_path, hd, &err)) fprintf(stderr, "fmnist-train: warning: %s\n", err.msg);
            cJSON_Delete(hd);
        }
        if (stop) {
            s.epoch++;
            stopped_early = 1;
            if (verbose)
                printf("early stopping: %s has not improved for %d epochs; restoring epoch %d's weights\n",
                       c.monitor_acc ? "val_accuracy" : "val_loss", c.patience, s.best_epoch + 1);
            break;
        }
    }
    if (s.best_epoch < 0) {
        fail("no epoch completed (--epochs %d)", c.epochs);
        goto done;
    }
    if (!stopped_early && verbose)
        printf("reached --epochs %d; restoring the best epoch (%d) by %s\n", c.epochs, s.best_epoch + 1,
               c.monitor_acc ? "val_accuracy" : "val_loss");
    memcpy(model.params, best, arch.n_params * sizeof(float));
    r->epochs_run = s.epoch;
    r->best_epoch = s.best_epoch + 1;
    r->seconds = s.elapsed;
    /* the final figures as the file will be served (the plan: batch norm
     * folded), so that the metadata, `fmnist-train eval` and the server agree */
    if (fm_model_pack(&model, &err)) {
        fail("%s", err.msg);
        goto done;
    }
    fm_pool_evaluate_model(&pool, &model, &d->train, &r->train, NULL, NULL);
    fm_pool_evaluate_model(&pool, &model, &d->val, &r->val, NULL, NULL);
    r->has_test = d->test.n > 0;
    if (r->has_test) fm_pool_evaluate_model(&pool, &model, &d->test, &r->test, NULL, NULL);

    /* metadata: how it was made and how good it is */
    cJSON *training = cJSON_Duplicate(config, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(training, "architecture");
    cJSON_AddNumberToObject(training, "epochs_run", r->epochs_run);
    cJSON_AddNumberToObject(training, "best_epoch", r->best_epoch);
    cJSON_AddNumberToObject(training, "seconds", r->seconds);
    cJSON_AddNumberToObject(training, "cpu_seconds", s.cpu_elapsed);
    cJSON_AddStringToObject(training, "trainer", "fmnist-train " FM_VERSION);
    cJSON *metrics = cJSON_CreateObject();
    cJSON_AddNumberToObject(metrics, "train_loss", r->train.loss);
    cJSON_AddNumberToObject(metrics, "train_accuracy", r->train.accuracy);
    cJSON_AddNumberToObject(metrics, "val_loss", r->val.loss);
    cJSON_AddNumberToObject(metrics, "val_accuracy", r->val.accuracy);
    if (r->has_test) {
        cJSON_AddNumberToObject(metrics, "test_loss", r->test.loss);
        cJSON_AddNumberToObject(metrics, "test_accuracy", r->test.accuracy);
        cJSON_AddNumberToObject(metrics, "test_correct", (double)r->test.n_correct);
        cJSON_AddNumberToObject(metrics, "test_examples", (double)r->test.n);
    }
    cJSON *dataset = cJSON_CreateObject();
    cJSON_AddStringToObject(dataset, "name", "Fashion-MNIST");
    cJSON_AddStringToObject(dataset, "package", "dataset-fashion-mnist");
    cJSON_AddNumberToObject(dataset, "train", (double)d->train.n);
    cJSON_AddStringToObject(dataset, "train_range", "first examples of train-images-idx3-ubyte");
    cJSON_AddNumberToObject(dataset, "val", (double)d->val.n);
    cJSON_AddStringToObject(dataset, "val_range", "last examples of train-images-idx3-ubyte");
    cJSON_AddNumberToObject(dataset, "test", (double)d->test.n);
    char *ts = cJSON_PrintUnformatted(training), *ms = cJSON_PrintUnformatted(metrics),
         *ds = cJSON_PrintUnformatted(dataset);
    cJSON_Delete(training);
    cJSON_Delete(metrics);
    cJSON_Delete(dataset);
    int meta_fail = !ts || !ms || !ds || fm_model_set_meta(&model, "training", ts, &err) ||
                    fm_model_set_meta(&model, "metrics", ms, &err) || fm_model_set_meta(&model, "dataset", ds, &err);
    free(ts);
    free(ms);
    free(ds);
    if (meta_fail || (writer && fm_st_save(&model, out, &err))) {
        fail("%s", err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    if (r->has_test && writer) {
        cJSON *ej = eval_json(&r->test, 1);
        cJSON_AddStringToObject(ej, "weights", out);
        cJSON_AddStringToObject(ej, "split", "test");
        if (write_json(eval_path, ej, &err)) fprintf(stderr, "fmnist-train: warning: %s\n", err.msg);
        cJSON_Delete(ej);
    }
    if (writer) unlink(ckpt_path); /* finished: the checkpoint has served its purpose */
    if (verbose && in_job()) {
        const fm_comm *cm = &g_mpi.comm;
        printf("mpi: %llu exchanges in %.2f s; rank 0 sent %llu bytes and received %llu; per training step each "
               "process sends %zu bytes and receives %zu\n", (unsigned long long)cm->n_exchanges, cm->seconds,
               (unsigned long long)cm->bytes_sent, (unsigned long long)cm->bytes_recv, pool.n_threads * pool.block,
               (cm->n_ranks - 1) * pool.n_threads * pool.block);
    }
    if (verbose) {
        printf("best epoch %d of %d, %.1fs; train acc %.4f  val acc %.4f (loss %.4f)", r->best_epoch,
               r->epochs_run, r->seconds, r->train.accuracy, r->val.accuracy, r->val.loss);
        if (r->has_test) printf("  test acc %.4f (loss %.4f)", r->test.accuracy, r->test.loss);
        printf("\nwrote %s, %s%s%s\n", out, hist_path, r->has_test ? ", " : "", r->has_test ? eval_path : "");
    }
    rc = 0;
done:
    cJSON_Delete(s.history);
    cJSON_Delete(config);
    free(best);
    free(ema);
    free(flags);
    free(idx);
    fm_optim_destroy(&opt);
    fm_pool_destroy(&pool);
    fm_model_free(&model);
    free(hist_path);
    free(eval_path);
    free(ckpt_path);
    return rc;
}

/* ------------------------------------------------------------------ eval */

static cJSON *eval_json(const fm_eval *e, int per_class) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "examples", (double)e->n);
    cJSON_AddNumberToObject(j, "correct", (double)e->n_correct);
    cJSON_AddNumberToObject(j, "loss", e->loss);
    cJSON_AddNumberToObject(j, "accuracy", e->accuracy);
    cJSON *names = cJSON_CreateStringArray(fm_class_names, FM_N_CLASSES);
    cJSON_AddItemToObject(j, "classes", names);
    cJSON *cm = cJSON_AddArrayToObject(j, "confusion");
    for (int i = 0; i < FM_N_CLASSES; i++) {
        int row[FM_N_CLASSES];
        for (int k = 0; k < FM_N_CLASSES; k++) row[k] = (int)e->confusion[i][k];
        cJSON_AddItemToArray(cm, cJSON_CreateIntArray(row, FM_N_CLASSES));
    }
    if (per_class) {
        cJSON *pc = cJSON_AddArrayToObject(j, "per_class");
        double f1sum = 0;
        for (int k = 0; k < FM_N_CLASSES; k++) {
            double tp = e->confusion[k][k], col = 0, row = 0;
            for (int i = 0; i < FM_N_CLASSES; i++) col += e->confusion[i][k], row += e->confusion[k][i];
            double p = col > 0 ? tp / col : 0, rcl = row > 0 ? tp / row : 0;
            double f1 = p + rcl > 0 ? 2 * p * rcl / (p + rcl) : 0;
            f1sum += f1;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "class", fm_class_names[k]);
            cJSON_AddNumberToObject(o, "precision", p);
            cJSON_AddNumberToObject(o, "recall", rcl);
            cJSON_AddNumberToObject(o, "f1", f1);
            cJSON_AddNumberToObject(o, "support", row);
            cJSON_AddItemToArray(pc, o);
        }
        cJSON_AddNumberToObject(j, "macro_f1", f1sum / FM_N_CLASSES);
    }
    return j;
}

static void print_eval(const char *name, const fm_eval *e) {
    printf("%s on %zu test images: loss %.4f  accuracy %.4f (%zu correct)\n\n", name, e->n, e->loss,
           e->accuracy, e->n_correct);
    printf("confusion matrix (rows: true class, columns: predicted)\n%-12s", "");
    for (int k = 0; k < FM_N_CLASSES; k++) printf("%6d", k);
    printf("\n");
    for (int i = 0; i < FM_N_CLASSES; i++) {
        printf("%d %-10.10s", i, fm_class_names[i]);
        for (int k = 0; k < FM_N_CLASSES; k++) printf("%6u", e->confusion[i][k]);
        printf("\n");
    }
    printf("\n%-14s %9s %9s %9s %8s\n", "class", "precision", "recall", "f1", "support");
    double f1sum = 0;
    for (int k = 0; k < FM_N_CLASSES; k++) {
        double tp = e->confusion[k][k], col = 0, row = 0;
        for (int i = 0; i < FM_N_CLASSES; i++) col += e->confusion[i][k], row += e->confusion[k][i];
        double p = col > 0 ? tp / col : 0, r = row > 0 ? tp / row : 0, f1 = p + r > 0 ? 2 * p * r / (p + r) : 0;
        f1sum += f1;
        printf("%-14s %9.4f %9.4f %9.4f %8.0f\n", fm_class_names[k], p, r, f1, row);
    }
    printf("%-14s %9s %9s %9.4f %8zu\n", "macro avg", "", "", f1sum / FM_N_CLASSES, e->n);
}

static int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},       {"data", required_argument, 0, 'd'},
                                         {"threads", required_argument, 0, 't'}, {"out", required_argument, 0, 'o'},
                                         {"predictions", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
                                         {"probabilities", required_argument, 0, 'P'}, {0, 0, 0, 0}};
    int json = 0;
    const char *data_dir = NULL, *out = NULL, *pred_path = NULL, *prob_path = NULL;
    uint64_t threads = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': json = 1; break;
        case 'd': data_dir = optarg; break;
        case 'o': out = optarg; break;
        case 'p': pred_path = optarg; break;
        case 'P': prob_path = optarg; break;
        case 't':
            if (parse_u64(optarg, &threads) || threads < 1 || threads > 256) return fail("--threads: expected 1..256, got '%s'", optarg);
            break;
        case 'h':
            printf("usage: fmnist-train eval FILE.safetensors [--json] [--out FILE.json] [--predictions FILE.csv]\n"
                   "                        [--probabilities FILE.csv] [--data DIR] [--threads N]\n\n"
                   "Evaluates a weight file on the 10,000 Fashion-MNIST test images: loss, accuracy,\n"
                   "confusion matrix, per-class precision/recall/F1.\n"
                   "  --json             print JSON instead of text\n"
                   "  --out FILE         also write the JSON report to FILE (atomically)\n"
                   "  --predictions FILE write index,true,predicted,confidence per test image (CSV)\n"
                   "  --probabilities FILE  write index and the ten served probabilities per test image\n"
                   "                     (CSV, 9 significant digits; tools/check-torch.py compares them)\n"
                   "  --data DIR         data directory (default: $FMNIST_DATA or %s)\n"
                   "  --threads N        threads (default: all %zu cores)\n", FM_DEFAULT_DATA_DIR, fm_cpu_count());
            return 0;
        default: return fail("eval: unknown option (see fmnist-train eval --help)");
        }
    }
    if (optind != argc - 1) return fail("eval: expected exactly one weight file (see fmnist-train eval --help)");
    const char *path = argv[optind];
    fm_error err;
    fm_model m = {0};
    if (fm_st_load(&m, path, NULL, &err)) return fail("%s", err.msg);
    fm_dataset test;
    if (fm_dataset_load_split(&test, fm_data_dir(data_dir), FM_SPLIT_TEST, &err)) {
        fm_model_free(&m);
        return fail("%s", err.msg);
    }
    fm_pool pool;
    int rc = 1;
    uint8_t *pred = malloc(test.n);
    float *probs = malloc(test.n * FM_N_CLASSES * sizeof(float));
    if (!pred || !probs) {
        fail("out of memory");
        goto done0;
    }
    if (fm_pool_create(&pool, &m.arch, threads ? threads : fm_cpu_count(), 256, &err)) {
        fail("%s", err.msg);
        goto done0;
    }
    fm_eval e;
    if (fm_model_pack(&m, &err)) {
        fail("%s", err.msg);
        fm_pool_destroy(&pool);
        goto done0;
    }
    fm_pool_evaluate_model(&pool, &m, &test, &e, pred, probs);
    cJSON *j = eval_json(&e, 1);
    cJSON_AddStringToObject(j, "weights", path);
    cJSON_AddStringToObject(j, "model", m.arch.name);
    cJSON_AddStringToObject(j, "sha256", m.sha256);
    cJSON_AddStringToObject(j, "split", "test");
    if (json) {
        char *s = cJSON_Print(j);
        if (s) puts(s);
        free(s);
    } else {
        print_eval(path, &e);
    }
    rc = 0;
    if (out && write_json(out, j, &err)) rc = fail("%s", err.msg);
    cJSON_Delete(j);
    if (pred_path) {
        size_t cap = test.n * 48 + 64, len = 0;
        char *csv = malloc(cap);
        if (!csv) {
            rc = fail("out of memory");
        } else {
            len += (size_t)snprintf(csv, cap, "index,true,predicted,confidence\n");
            for (size_t i = 0; i < test.n; i++)
                len += (size_t)snprintf(csv + len, cap - len, "%zu,%u,%u,%.6f\n", i, test.labels[i], pred[i],
                                        (double)probs[i * FM_N_CLASSES + pred[i]]);
            fm_chunk c1 = {csv, len};
            if (fm_write_atomic(pred_path, &c1, 1, &err)) rc = fail("%s", err.msg);
            free(csv);
        }
    }
    if (prob_path) {
        size_t cap = test.n * (8 + FM_N_CLASSES * 17) + 128, len = 0;
        char *csv = malloc(cap);
        if (!csv) {
            rc = fail("out of memory");
        } else {
            len += (size_t)snprintf(csv, cap, "index");
            for (int k = 0; k < FM_N_CLASSES; k++) len += (size_t)snprintf(csv + len, cap - len, ",p%d", k);
            len += (size_t)snprintf(csv + len, cap - len, "\n");
            for (size_t i = 0; i < test.n; i++) {
                len += (size_t)snprintf(csv + len, cap - len, "%zu", i);
                for (int k = 0; k < FM_N_CLASSES; k++)
                    len += (size_t)snprintf(csv + len, cap - len, ",%.9g", (double)probs[i * FM_N_CLASSES + k]);
                len += (size_t)snprintf(csv + len, cap - len, "\n");
            }
            fm_chunk c1 = {csv, len};
            if (fm_write_atomic(prob_path, &c1, 1, &err)) rc = fail("%s", err.msg);
            free(csv);
        }
    }
    fm_pool_destroy(&pool);
done0:
    free(pred);
    free(probs);
    fm_dataset_free(&test);
    fm_model_free(&m);
    return rc;
}

/* --------------------------------------------------------------- summary */

static int cmd_summary(int argc, char **argv) {
    int json = argc == 3 && strcmp(argv[2], "--json") == 0;
    if (!(argc == 2 || json) || strcmp(argv[1], "--help") == 0) {
        printf("usage: fmnist-train summary NAME|FILE.safetensors|ARCH.json [--json]\n\n"
               "Prints the Keras-like layer table (layer, output shape, params, totals; for a graph, what\n"
               "each layer reads). \"Trainable params\" is PyTorch's sum(p.numel() for p in\n"
               "model.parameters()); non-trainable are batch norm's running mean and variance.\n"
               "--json prints the architecture's canonical JSON instead.\n"
               "NAME is one of");
        for (int i = 0; fm_arch_names[i]; i++) printf("%s %s", i ? "," : "", fm_arch_names[i]);
        printf(".\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 1;
    }
    const char *what = argv[1];
    fm_error err;
    fm_arch a;
    size_t n = strlen(what);
    if (n > 12 && strcmp(what + n - 12, ".safetensors") == 0) {
        fm_model m = {0};
        if (fm_st_load(&m, what, NULL, &err)) return fail("%s", err.msg);
        if (json) {
            puts(fm_model_meta(&m, "architecture"));
            fm_model_free(&m);
            return 0;
        }
        fm_arch_summary(&m.arch, stdout);
        const char *metrics = fm_model_meta(&m, "metrics");
        if (metrics) printf("metrics: %s\n", metrics);
        const char *training = fm_model_meta(&m, "training");
        if (training) printf("training: %s\n", training);
        printf("sha256: %s\n", m.sha256);
        fm_model_free(&m);
        return 0;
    }
    if (strchr(what, '/') || strstr(what, ".json")) {
        if (fm_arch_from_file(&a, what, &err)) return fail("%s", err.msg);
    } else if (fm_arch_named(&a, what, &err)) {
        return fail("%s", err.msg);
    }
    if (json) {
        char *j = fm_arch_to_json(&a);
        if (!j) return fail("out of memory");
        puts(j);
        free(j);
        return 0;
    }
    fm_arch_summary(&a, stdout);
    return 0;
}

/* ------------------------------------------------------------ train/grid */

static void usage_train(FILE *f) {
    fprintf(f,
            "usage: fmnist-train train [flags]\n\n"
            "  --model NAME|FILE    mlp2, mlp3, cnn1, cnn2, cnn3, or an architecture .json (default: mlp2)\n"
            "  --optimizer NAME     adam, adamw (decoupled weight decay) or sgd; default per model:\n"
            "                       mlp2/mlp3/cnn3 adam, cnn1/cnn2 sgd, others adam\n"
            "  --lr X               learning rate (default per model: mlp2 1e-3, mlp3 1e-4, cnn1/cnn2 1e-2, cnn3 1e-3)\n"
            "  --momentum X         SGD momentum (default: 0.9 for cnn1/cnn2, else 0)\n"
            "  --batch N            batch size (default per model: mlp2 512, mlp3 128, cnns 64)\n"
            "  --epochs N           maximum epochs (default: 100)\n"
            "  --patience N         early stopping on val_loss, restoring the best epoch (default: 10; 0 = off)\n"
            "  --monitor M          val_loss or val_accuracy: what early stopping, --plateau and the restored\n"
            "                       best epoch follow (default: val_loss, as the study)\n"
            "  --plateau N          halve the learning rate after N epochs without val_loss improvement (default: 0 = off)\n"
            "  --plateau-factor X   factor for --plateau (default: 0.5)\n"
            "  --min-lr X           lower bound for --plateau (default: 1e-6); the final rate of --schedule cosine\n"
            "                       (default there: 0)\n"
            "  --schedule S         constant (default), cosine (linear warm-up, cosine decay to --min-lr) or\n"
            "                       onecycle (rise from lr/25 over 30%% of the steps to --lr, anneal to lr/25e4);\n"
            "                       stepped per batch, each epoch's first rate in the history\n"
            "  --warmup E           cosine: warm-up epochs (fractions allowed; default 0)\n"
            "  --weight-decay X     on weights only, not biases or batch norm (default 0); L2 in the gradient\n"
            "                       for sgd/adam, decoupled for adamw\n"
            "  --nesterov           sgd: Nesterov momentum\n"
            "  --label-smoothing S  train against (1-S) onehot + S/10 (default 0)\n"
            "  --ema D              keep an exponential moving average of the weights (decay D per step);\n"
            "                       validation, the best epoch and the saved file use it (default off)\n"
            "augmentation, on the fly and seeded (all off by default):\n"
            "  --crop N             random crop with N pixels of zero padding (translate by -N..N)\n"
            "  --flip P             horizontal flip with probability P\n"
            "  --scale-jitter X     zoom by a factor in [1-X, 1+X] about the centre\n"
            "  --erase P            random erasing (Zhong et al.) with probability P; --erase-area MIN,MAX\n"
            "                       (default 0.02,0.4 of the image) and --erase-ratio R (aspect in [R, 1/R], 0.3)\n"
            "  --gain X             intensity gain in [1-X, 1+X], clamped to [0, 1]\n"
            "  --gamma X            gamma in [1/(1+X), 1+X], log-uniform\n"
            "  --blur P, --sharpen P  a 3x3 Gaussian blur or unsharp mask with probability P\n"
            "  --val N              validation examples, the last N of the training file (default: 6000)\n"
            "  --limit N            train on the first N training examples only (default: all)\n"
            "  --seed N             random seed for initialisation, shuffling, dropout (default: 42)\n"
            "  --threads N          worker threads (default: all %zu cores)\n"
            "  --out FILE           weights (default: weights/MODEL.safetensors); the history JSON and the\n"
            "                       test-set eval JSON are written beside it (MODEL.history.json, MODEL.eval.json)\n"
            "  --checkpoint FILE    checkpoint (default: beside --out, MODEL.ckpt), written every epoch and on\n"
            "                       Ctrl-C / SIGTERM; removed when training finishes\n"
            "  --resume             continue from the checkpoint (same flags required; the layout may change\n"
            "                       if processes x threads stays: see README, Training across machines)\n"
            "  --resume-if-any      --resume when the checkpoint exists, else start afresh (for jobs that are\n"
            "                       restarted with one command line, such as deploy/k8s/train-mpijob.yaml)\n"
            "  --data DIR           data directory (default: $FMNIST_DATA or %s)\n"
            "  --quiet              no progress output\n"
            "  --no-test            do not evaluate on the test set at the end (for runs that choose a recipe:\n"
            "                       choices are made on validation; the metadata then holds no test figures)\n",
            fm_cpu_count(), FM_DEFAULT_DATA_DIR);
}

enum { O_MODEL = 256, O_OPT, O_LR, O_MOM, O_BATCH, O_EPOCHS, O_PATIENCE, O_VAL, O_SEED, O_THREADS, O_OUT,
       O_DATA, O_CKPT, O_RESUME, O_LIMIT, O_PLATEAU, O_PFACTOR, O_MINLR, O_QUIET, O_HELP, O_GRIDOUT, O_MONITOR,
       O_SCHED, O_WARMUP, O_WD, O_NESTEROV, O_SMOOTH, O_EMA, O_CROP, O_FLIP, O_SCALE, O_ERASE, O_ERASE_AREA,
       O_ERASE_RATIO, O_GAIN, O_GAMMA, O_BLUR, O_SHARPEN, O_NOTEST, O_RESUME_ANY };

/* A fraction flag: a number in [lo, hi]. */
static int frac_flag(const char *name, const char *arg, double lo, double hi, double *out) {
    double x;
    if (parse_double(arg, &x) || !(x >= lo && x <= hi))
        return fail("--%s: expected a number in [%g, %g], got '%s'", name, lo, hi, arg);
    *out = x;
    return 0;
}

static int parse_train_flags(int argc, char **argv, cfg *c, const char **grid_out) {
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},   {"optimizer", required_argument, 0, O_OPT},
        {"lr", required_argument, 0, O_LR},         {"momentum", required_argument, 0, O_MOM},
        {"batch", required_argument, 0, O_BATCH},   {"epochs", required_argument, 0, O_EPOCHS},
        {"patience", required_argument, 0, O_PATIENCE}, {"val", required_argument, 0, O_VAL},
        {"seed", required_argument, 0, O_SEED},     {"threads", required_argument, 0, O_THREADS},
        {"out", required_argument, 0, O_OUT},       {"data", required_argument, 0, O_DATA},
        {"checkpoint", required_argument, 0, O_CKPT}, {"resume", no_argument, 0, O_RESUME},
        {"limit", required_argument, 0, O_LIMIT},   {"plateau", required_argument, 0, O_PLATEAU},
        {"plateau-factor", required_argument, 0, O_PFACTOR}, {"min-lr", required_argument, 0, O_MINLR},
        {"quiet", no_argument, 0, O_QUIET},         {"help", no_argument, 0, O_HELP},
        {"grid-out", required_argument, 0, O_GRIDOUT}, {"monitor", required_argument, 0, O_MONITOR},
        {"schedule", required_argument, 0, O_SCHED}, {"warmup", required_argument, 0, O_WARMUP},
        {"weight-decay", required_argument, 0, O_WD}, {"nesterov", no_argument, 0, O_NESTEROV},
        {"label-smoothing", required_argument, 0, O_SMOOTH}, {"ema", required_argument, 0, O_EMA},
        {"crop", required_argument, 0, O_CROP}, {"flip", required_argument, 0, O_FLIP},
        {"scale-jitter", required_argument, 0, O_SCALE}, {"erase", required_argument, 0, O_ERASE},
        {"erase-area", required_argument, 0, O_ERASE_AREA}, {"erase-ratio", required_argument, 0, O_ERASE_RATIO},
        {"gain", required_argument, 0, O_GAIN}, {"gamma", required_argument, 0, O_GAMMA},
        {"blur", required_argument, 0, O_BLUR}, {"sharpen", required_argument, 0, O_SHARPEN},
        {"no-test", no_argument, 0, O_NOTEST},      {"resume-if-any", no_argument, 0, O_RESUME_ANY},
        {0, 0, 0, 0}};
    *c = (cfg){.model = "mlp2", .opt = -1, .lr = 0, .momentum = -1, .epochs = 100, .patience = 10,
               .val = FM_DEFAULT_N_VAL, .seed = 42, .plateau_factor = 0.5, .min_lr = 1e-6,
               .sched = FM_SCHED_CONSTANT, .aug = fm_augment_defaults()};
    int min_lr_given = 0;
    int ch;
    uint64_t u;
    double x;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_MODEL: c->model = optarg; break;
        case O_OPT:
            c->opt = fm_optim_parse(optarg);
            if (c->opt < 0) return fail("--optimizer: expected adam, adamw or sgd, got '%s'", optarg);
            break;
        case O_LR:
            if (parse_double(optarg, &x) || !(x > 0 && x <= 1e6)) return fail("--lr: expected a number in (0, 1e6], got '%s'", optarg);
            c->lr = x;
            break;
        case O_MOM:
            if (parse_double(optarg, &x) || !(x >= 0 && x < 1)) return fail("--momentum: expected a number in [0, 1), got '%s'", optarg);
            c->momentum = x;
            break;
        case O_BATCH:
            if (parse_u64(optarg, &u) || u < 1 || u > 65536) return fail("--batch: expected 1..65536, got '%s'", optarg);
            c->batch = (size_t)u;
            break;
        case O_EPOCHS:
            if (parse_u64(optarg, &u) || u < 1 || u > 100000) return fail("--epochs: expected 1..100000, got '%s'", optarg);
            c->epochs = (int)u;
            break;
        case O_PATIENCE:
            if (parse_u64(optarg, &u) || u > 100000) return fail("--patience: expected 0..100000, got '%s'", optarg);
            c->patience = (int)u;
            break;
        case O_VAL:
            if (parse_u64(optarg, &u) || u > 59999) return fail("--val: expected 0..59999, got '%s'", optarg);
            c->val = (size_t)u;
            break;
        case O_LIMIT:
            if (parse_u64(optarg, &u) || u < 1) return fail("--limit: expected a positive count, got '%s'", optarg);
            c->limit = (size_t)u;
            break;
        case O_SEED:
            if (parse_u64(optarg, &u)) return fail("--seed: expected a non-negative integer, got '%s'", optarg);
            if (u > (1ull << 53)) return fail("--seed: at most 2^53 (it is recorded in JSON)");
            c->seed = u;
            break;
        case O_THREADS:
            if (parse_u64(optarg, &u) || u < 1 || u > 256) return fail("--threads: expected 1..256, got '%s'", optarg);
            c->threads = (size_t)u;
            break;
        case O_PLATEAU:
            if (parse_u64(optarg, &u) || u > 1000) return fail("--plateau: expected 0..1000, got '%s'", optarg);
            c->plateau_patience = (int)u;
            break;
        case O_PFACTOR:
            if (parse_double(optarg, &x) || !(x > 0 && x < 1)) return fail("--plateau-factor: expected a number in (0, 1), got '%s'", optarg);
            c->plateau_factor = x;
            break;
        case O_MINLR:
            if (parse_double(optarg, &x) || !(x >= 0)) return fail("--min-lr: expected a non-negative number, got '%s'", optarg);
            c->min_lr = x;
            min_lr_given = 1;
            break;
        case O_SCHED:
            c->sched = fm_sched_parse(optarg);
            if (c->sched < 0) return fail("--schedule: expected constant, cosine or onecycle, got '%s'", optarg);
            break;
        case O_WARMUP:
            if (frac_flag("warmup", optarg, 0, 1000, &c->warmup)) return 1;
            break;
        case O_WD:
            if (frac_flag("weight-decay", optarg, 0, 1, &c->weight_decay)) return 1;
            break;
        case O_NESTEROV: c->nesterov = 1; break;
        case O_NOTEST: c->no_test = 1; break;
        case O_SMOOTH:
            if (frac_flag("label-smoothing", optarg, 0, 0.5, &c->smoothing)) return 1;
            break;
        case O_EMA:
            if (frac_flag("ema", optarg, 0, 0.99999, &c->ema)) return 1;
            break;
        case O_CROP:
            if (parse_u64(optarg, &u) || u > 8) return fail("--crop: expected 0..8 pixels of padding, got '%s'", optarg);
            c->aug.crop = (int)u;
            break;
        case O_FLIP:
            if (frac_flag("flip", optarg, 0, 1, &x)) return 1;
            c->aug.flip = (float)x;
            break;
        case O_SCALE:
            if (frac_flag("scale-jitter", optarg, 0, 0.5, &x)) return 1;
            c->aug.scale = (float)x;
            break;
        case O_ERASE:
            if (frac_flag("erase", optarg, 0, 1, &x)) return 1;
            c->aug.erase = (float)x;
            break;
        case O_ERASE_AREA: {
            double lo, hi;
            char *comma = strchr(optarg, ',');
            if (!comma) return fail("--erase-area: expected MIN,MAX (fractions of the image), got '%s'", optarg);
            *comma = '\0';
            int bad = parse_double(optarg, &lo) || parse_double(comma + 1, &hi);
            *comma = ',';
            if (bad || !(lo > 0 && lo <= hi && hi < 1)) return fail("--erase-area: expected 0 < MIN <= MAX < 1, got '%s'", optarg);
            c->aug.erase_min = (float)lo, c->aug.erase_max = (float)hi;
            break;
        }
        case O_ERASE_RATIO:
            if (frac_flag("erase-ratio", optarg, 0.05, 1, &x)) return 1;
            c->aug.erase_ratio = (float)x;
            break;
        case O_GAIN:
            if (frac_flag("gain", optarg, 0, 0.9, &x)) return 1;
            c->aug.gain = (float)x;
            break;
        case O_GAMMA:
            if (frac_flag("gamma", optarg, 0, 4, &x)) return 1;
            c->aug.gamma = (float)x;
            break;
        case O_BLUR:
            if (frac_flag("blur", optarg, 0, 1, &x)) return 1;
            c->aug.blur = (float)x;
            break;
        case O_SHARPEN:
            if (frac_flag("sharpen", optarg, 0, 1, &x)) return 1;
            c->aug.sharpen = (float)x;
            break;
        case O_OUT: c->out = optarg; break;
        case O_DATA: c->data = optarg; break;
        case O_CKPT: c->checkpoint = optarg; break;
        case O_RESUME: c->resume = 1; break;
        case O_RESUME_ANY: c->resume = 2; break;
        case O_QUIET: c->quiet = 1; break;
        case O_MONITOR:
            if (strcmp(optarg, "val_loss") == 0) c->monitor_acc = 0;
            else if (strcmp(optarg, "val_accuracy") == 0) c->monitor_acc = 1;
            else return fail("--monitor: expected val_loss or val_accuracy, got '%s'", optarg);
            break;
        case O_GRIDOUT:
            if (!grid_out) return fail("unknown flag --grid-out (see --help)");
            *grid_out = optarg;
            break;
        case O_HELP: return -1;
        case '?':
        default:
            if (optopt) return fail("flag --%s needs a value (see --help)", opts[0].name ? argv[optind - 1] + 2 : "");
            return fail("unknown flag '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) return fail("unexpected argument '%s' (see --help)", argv[optind]);
    if (c->sched != FM_SCHED_CONSTANT && c->plateau_patience > 0)
        return fail("--plateau lowers a constant rate; it cannot be combined with --schedule %s",
                    fm_sched_name((fm_sched_kind)c->sched));
    if (c->sched == FM_SCHED_COSINE && !min_lr_given) c->min_lr = 0.0; /* cosine decays to 0 unless told */
    if (c->warmup > 0 && c->sched != FM_SCHED_COSINE)
        return fail("--warmup applies to --schedule cosine (onecycle has its own warm-up)");
    if (c->warmup >= c->epochs) return fail("--warmup %g must be shorter than --epochs %d", c->warmup, c->epochs);
    if (c->aug.blur + c->aug.sharpen > 1) return fail("--blur and --sharpen are exclusive: their sum must be at most 1");
    if (c->nesterov && c->opt != FM_OPT_SGD)
        return fail("--nesterov needs --optimizer sgd (and --momentum above 0)");
    return 0;
}

static int train_main(int argc, char **argv) {
    cfg c;
    int pr = parse_train_flags(argc, argv, &c, NULL);
    if (pr < 0) {
        if (g_mpi.comm.rank == 0) usage_train(stdout);
        return 0;
    }
    if (pr) return pr;
    fm_error err;
    data d;
    int loaded = load_data(&d, fm_data_dir(c.data), c.val, c.limit, !c.no_test, &err) == 0;
    if (!loaded) fail("%s", err.msg);
    if (in_job() && job_same_data(&d, loaded, fm_data_dir(c.data))) {
        g_agreed = 1;
        if (loaded) free_data(&d);
        return 1;
    }
    if (!loaded) return 1;
    result r;
    int rc = run_train(&c, &d, &r, !c.quiet && g_mpi.comm.rank == 0);
    free_data(&d);
    return rc;
}

/* train, as one process or as one of a job's (fm_mpi.h). */
static int cmd_train(int argc, char **argv) {
    fm_error err;
    if (fm_mpi_start(&g_mpi, &argc, &argv, &err)) {
        fail("%s", err.msg);
        fm_mpi_abort(&g_mpi, 1);
        return 1;
    }
    /* from the start, not from the first batch: a SIGTERM while the data
     * set loads (seconds on a busy machine) still ends in a checkpoint at
     * the first batch boundary and exit 143, never the default death */
    install_signals();
    int rc = train_main(argc, argv);
    if (rc && in_job() && !g_agreed) fm_mpi_abort(&g_mpi, rc); /* the others may wait in an exchange */
    fm_mpi_finish(&g_mpi);
    return rc;
}

/* ------------------------------------------------------------------ grid */

/* The study's grid: optimiser {Adam lr 1e-3, 1e-4; SGD lr 0.1, 0.01} x batch
 * {128, 256, 512}.  Configuration k (0..11) is optimiser k / 3 with batch
 * k % 3: the order of an unsharded run, of a shard's share (k % N == I) and
 * of ties in the sorted table. */
enum { GRID_N = 12 };
static const struct { int opt; double lr; } grid_opts[] = {
    {FM_OPT_ADAM, 1e-3}, {FM_OPT_ADAM, 1e-4}, {FM_OPT_SGD, 1e-1}, {FM_OPT_SGD, 1e-2}};
static const size_t grid_batches[] = {128, 256, 512};
#define GRID_FORMAT "fmnist-grid-shard/1"

typedef struct grid_row {
    int config;   /* k, 0..GRID_N-1 */
    int opt;
    double lr;
    size_t batch;
    result r;     /* train/val/test loss and accuracy are what the tables show */
} grid_row;

static void grid_config(int k, grid_row *row) {
    memset(row, 0, sizeof *row);
    row->config = k;
    row->opt = grid_opts[k / 3].opt;
    row->lr = grid_opts[k / 3].lr;
    row->batch = grid_batches[k % 3];
}

/* What every run of a grid shares: the shards of one grid must agree on all
 * of it (thread count included: it changes the bits of the result), and the
 * Markdown header is written from it.  NULL when out of memory. */
static cJSON *grid_settings(const cfg *c, const data *d) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", c->model);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddNumberToObject(j, "max_epochs", c->epochs);
    cJSON_AddNumberToObject(j, "patience", c->patience);
    cJSON_AddStringToObject(j, "monitor", c->monitor_acc ? "val_accuracy" : "val_loss");
    cJSON_AddNumberToObject(j, "plateau_patience", c->plateau_patience);
    cJSON_AddNumberToObject(j, "plateau_factor", c->plateau_factor);
    cJSON_AddNumberToObject(j, "min_lr", c->min_lr);
    cJSON_AddNumberToObject(j, "limit", (double)c->limit);
    cJSON_AddNumberToObject(j, "threads", (double)(c->threads ? c->threads : fm_cpu_count()));
    cJSON_AddNumberToObject(j, "train_examples", (double)d->train.n);
    cJSON_AddNumberToObject(j, "val_examples", (double)d->val.n);
    cJSON_AddNumberToObject(j, "test_examples", (double)d->test.n);
    if (cJSON_GetArraySize(j) != 13) { /* an addition failed */
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static const char *const grid_row_keys[] = {"train_loss", "val_loss", "test_loss",
                                            "train_accuracy", "val_accuracy", "test_accuracy"};

static double *grid_row_value(grid_row *w, size_t i) {
    double *v[] = {&w->r.train.loss, &w->r.val.loss, &w->r.test.loss,
                   &w->r.train.accuracy, &w->r.val.accuracy, &w->r.test.accuracy};
    return v[i];
}

/* A row as a shard file holds it (cJSON prints doubles so that they read back
 * bit-exact).  NULL when out of memory. */
static cJSON *grid_row_json(grid_row *w) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "config", w->config);
    cJSON_AddStringToObject(j, "optimizer", fm_optim_name((fm_opt_kind)w->opt));
    cJSON_AddNumberToObject(j, "learning_rate", w->lr);
    cJSON_AddNumberToObject(j, "batch_size", (double)w->batch);
    for (size_t i = 0; i < 6; i++) cJSON_AddNumberToObject(j, grid_row_keys[i], *grid_row_value(w, i));
    if (cJSON_GetArraySize(j) != 10) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* Reads a row back; the configuration must be the grid's k.  Returns 0, or
 * -1 with the reason in why. */
static int grid_row_parse(const cJSON *j, grid_row *w, char *why, size_t why_len) {
    double k = jnum(j, "config");
    if (!(k >= 0 && k < GRID_N && k == (int)k)) {
        snprintf(why, why_len, "a row's \"config\" is not an integer in 0..%d", GRID_N - 1);
        return -1;
    }
    grid_config((int)k, w);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    if (!cJSON_IsString(o) || fm_optim_parse(o->valuestring) != w->opt || jnum(j, "learning_rate") != w->lr ||
        jnum(j, "batch_size") != (double)w->batch) {
        snprintf(why, why_len, "row %d is not the grid's configuration %d (%s lr %g batch %zu)", (int)k, (int)k,
                 fm_optim_name((fm_opt_kind)w->opt), w->lr, w->batch);
        return -1;
    }
    for (size_t i = 0; i < 6; i++) {
        double v = jnum(j, grid_row_keys[i]);
        if (!isfinite(v)) {
            snprintf(why, why_len, "row %d has no number \"%s\"", (int)k, grid_row_keys[i]);
            return -1;
        }
        *grid_row_value(w, i) = v;
    }
    w->r.has_test = 1;
    return 0;
}

/* "I/N" with 0 <= I < N <= GRID_N. */
static int parse_shard(const char *s, int *index, int *count) {
    uint64_t i, n;
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash || slash == s || slash - s > 20 || *s < '0' || *s > '9' || slash[1] < '0' || slash[1] > '9') return -1;
    char head[24];
    memcpy(head, s, (size_t)(slash - s));
    head[slash - s] = '\0';
    if (parse_u64(head, &i) || parse_u64(slash + 1, &n) || n < 1 || n > GRID_N || i >= n) return -1;
    *index = (int)i;
    *count = (int)n;
    return 0;
}

/* Takes --shard and --collect (with their values) out of argv, in place, so
 * the rest goes through parse_train_flags; returns the new argc or -1 after
 * reporting a missing value. */
static int take_grid_flags(int argc, char **argv, const char **shard, const char **collect) {
    int n = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], **dst = NULL, *name = NULL;
        if (strncmp(a, "--shard", 7) == 0 && (a[7] == '\0' || a[7] == '=')) dst = shard, name = "--shard";
        if (strncmp(a, "--collect", 9) == 0 && (a[9] == '\0' || a[9] == '=')) dst = collect, name = "--collect";
        if (!dst) {
            argv[n++] = argv[i];
            continue;
        }
        const char *eq = strchr(a, '=');
        if (eq) {
            *dst = eq + 1;
        } else if (i + 1 < argc) {
            *dst = argv[++i];
        } else {
            fail("flag %s needs a value (see fmnist-train grid --help)", name);
            return -1;
        }
    }
    argv[n] = NULL;
    return n;
}

/* Sorts rows (in configuration order) by validation accuracy, descending,
 * stable, and writes PREFIX.md and PREFIX.csv; time_note ends the header. */
static int grid_write_tables(const char *prefix, const cJSON *set, grid_row *rows, int n_rows, const char *time_note) {
    for (int i = 1; i < n_rows; i++)
        for (int k = i; k > 0 && rows[k].r.val.accuracy > rows[k - 1].r.val.accuracy; k--) {
            grid_row t = rows[k];
            rows[k] = rows[k - 1];
            rows[k - 1] = t;
        }
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(set, "model"));
    unsigned long long seed = (unsigned long long)jnum(set, "seed");
    size_t cap = 16384, ml = 0, cl = 0;
    char *mdt = malloc(cap), *csvt = malloc(cap), *md = sibling(prefix, ".md"), *csv = sibling(prefix, ".csv");
    int rc = 0;
    if (!mdt || !csvt || !md || !csv || !model) {
        rc = fail("out of memory");
        goto done;
    }
    ml += (size_t)snprintf(mdt + ml, cap - ml,
                           "# Grid search: %s\n\nEach run: early stopping on val_loss (patience %d, best weights restored), "
                           "seed %llu, %zu training / %zu validation examples. Sorted by **validation accuracy**; "
                           "the winner is chosen by validation accuracy, never by test accuracy (the study picked by "
                           "test accuracy). Command: `fmnist-train grid --model %s --seed %llu`. %s\n\n"
                           "| Optimizer | Learning_Rate | Batch_Size | Train_Loss | Val_Loss | Test_Loss | Train_Accuracy | "
                           "Val_Accuracy | Test_Accuracy |\n|---|---|---|---|---|---|---|---|---|\n",
                           model, (int)jnum(set, "patience"), seed, (size_t)jnum(set, "train_examples"),
                           (size_t)jnum(set, "val_examples"), model, seed, time_note);
    cl += (size_t)snprintf(csvt + cl, cap - cl,
                           "Optimizer,Learning_Rate,Batch_Size,Train_Loss,Val_Loss,Test_Loss,Train_Accuracy,Val_Accuracy,Test_Accuracy\n");
    for (int i = 0; i < n_rows; i++) {
        const grid_row *w = &rows[i];
        const char *on = w->opt == FM_OPT_ADAM ? "Adam" : "SGD";
        ml += (size_t)snprintf(mdt + ml, cap - ml, "| %s%s | %.4f | %zu | %.6f | %.6f | %.6f | %.6f | %.6f | %.4f |\n",
                               on, i == 0 ? " (selected)" : "", w->lr, w->batch, w->r.train.loss, w->r.val.loss,
                               w->r.test.loss, w->r.train.accuracy, w->r.val.accuracy, w->r.test.accuracy);
        cl += (size_t)snprintf(csvt + cl, cap - cl, "%s,%.4f,%zu,%.6f,%.6f,%.6f,%.6f,%.6f,%.4f\n", on, w->lr, w->batch,
                               w->r.train.loss, w->r.val.loss, w->r.test.loss, w->r.train.accuracy,
                               w->r.val.accuracy, w->r.test.accuracy);
    }
    if (n_rows)
        ml += (size_t)snprintf(mdt + ml, cap - ml,
                               "\nSelected by validation accuracy: %s lr %g batch %zu (val accuracy %.4f, test accuracy %.4f).\n",
                               rows[0].opt == FM_OPT_ADAM ? "Adam" : "SGD", rows[0].lr, rows[0].batch,
                               rows[0].r.val.accuracy, rows[0].r.test.accuracy);
    fm_error err;
    fm_chunk a = {mdt, ml}, b = {csvt, cl};
    if (fm_write_atomic(md, &a, 1, &err) || fm_write_atomic(csv, &b, 1, &err)) rc = fail("%s", err.msg);
    else printf("\n%s\nwrote %s and %s\n", mdt, md, csv);
done:
    free(mdt);
    free(csvt);
    free(md);
    free(csv);
    return rc;
}

/* Creates the directories above PREFIX (mkdir -p of its dirname; a
 * directory made at the same time by another shard is no error).  0, or -1
 * with errno set. */
static int make_parents(const char *prefix) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", prefix);
    char *end = strrchr(dir, '/');
    if (!end || end == dir) return 0;
    *end = '\0';
    for (char *p = dir + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(dir, 0755) && errno != EEXIST) return -1;
            if (!(*p = c)) return 0;
        }
    }
}

/* A shard file read back: its path (owned), its JSON (owned) and the values
 * collect checks. */
typedef struct grid_shard {
    char *path;
    cJSON *json;
    int index, count;
} grid_shard;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Lists DIR's *.json files (not dot files), sorted; *out malloc'd (caller
 * frees each and the array).  Returns the count or -1 after reporting. */
static int list_json(const char *dir, char ***out) {
    DIR *dp = opendir(dir);
    if (!dp) {
        fail("--collect %s: cannot read the directory: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        if (n == cap) {
            char **nn = cap < 1024 ? realloc(names, (size_t)(cap = cap ? cap * 2 : 16) * sizeof *names) : NULL;
            if (!nn) break;
            names = nn;
        }
        size_t pl = strlen(dir) + len + 2;
        if (!(names[n] = malloc(pl))) break;
        snprintf(names[n++], pl, "%s/%s", dir, e->d_name);
    }
    int broke = e != NULL;
    closedir(dp);
    if (broke) {
        while (n) free(names[--n]);
        free(names);
        fail("--collect %s: out of memory (or over 1024 .json files)", dir);
        return -1;
    }
    if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    return n;
}

/* Names the first key whose value differs between two settings objects. */
static const char *first_difference(const cJSON *a, const cJSON *b) {
    const cJSON *x;
    cJSON_ArrayForEach(x, a) {
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, x->string);
        if (!y || !cJSON_Compare(x, y, 1)) return x->string;
    }
    cJSON_ArrayForEach(x, b) if (!cJSON_GetObjectItemCaseSensitive(a, x->string)) return x->string;
    return "?";
}

/* Reads and checks one shard file into *s; 0 or 1 after reporting. */
static int read_shard(grid_shard *s) {
    fm_error err;
    char *text;
    size_t len;
    const char *path = s->path;
    if (fm_read_file(path, 1 << 20, &text, &len, &err)) return fail("%s", err.msg);
    s->json = cJSON_Parse(text);
    free(text);
    const cJSON *j = s->json;
    if (!j) return fail("%s: not valid JSON (damaged or cut short: run its shard again)", path);
    const char *format = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "format"));
    if (!format || strcmp(format, GRID_FORMAT) != 0)
        return fail("%s: not a grid shard file (no \"format\": \"" GRID_FORMAT "\"); --collect reads the "
                    "directory that fmnist-train grid --shard I/N writes", path);
    double i = jnum(j, "shard"), n = jnum(j, "shards");
    const cJSON *set = cJSON_GetObjectItemCaseSensitive(j, "settings");
    int set_ok = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(set, "model")) != NULL;
    static const char *const counts[] = {"seed", "patience", "train_examples", "val_examples"};
    for (size_t k = 0; k < 4; k++) { /* the numbers the tables print, as integers */
        double v = jnum(set, counts[k]);
        set_ok = set_ok && v >= 0 && v <= 9007199254740992.0 && v == floor(v);
    }
    if (!(n >= 1 && n <= GRID_N && n == (int)n && i >= 0 && i < n && i == (int)i) || !set_ok ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "rows")))
        return fail("%s: damaged shard file (shard, shards, settings or rows missing or out of range)", path);
    s->index = (int)i, s->count = (int)n;
    return 0;
}

/* fmnist-train grid --collect DIR: merges the shard files of DIR into the
 * tables; model_flag is --model when given (it must match the shards). */
static int grid_collect(const char *dir, const char *grid_out, const char *model_flag) {
    char **paths = NULL;
    int n_files = list_json(dir, &paths), rc = 0, k;
    if (n_files < 0) return 1;
    grid_shard *sh = calloc((size_t)(n_files ? n_files : 1), sizeof *sh);
    grid_row rows[GRID_N];
    const char *seen_by[GRID_N] = {0};
    const grid_shard *by_index[GRID_N] = {0};
    double seconds = 0;
    if (!sh) {
        rc = fail("out of memory");
        for (k = 0; k < n_files; k++) free(paths[k]);
        goto done;
    }
    for (k = 0; k < n_files; k++) sh[k].path = paths[k]; /* the shards own the paths from here */
    if (n_files == 0) {
        rc = fail("--collect %s: no shard files (*.json) there; run fmnist-train grid --shard I/N first", dir);
        goto done;
    }
    const cJSON *set0 = NULL;
    for (k = 0; k < n_files && rc == 0; k++) {
        grid_shard *s = &sh[k];
        if ((rc = read_shard(s))) break;
        const cJSON *set = cJSON_GetObjectItemCaseSensitive(s->json, "settings");
        if (k == 0) {
            set0 = set;
        } else if (s->count != sh[0].count) {
            rc = fail("--collect %s: %s is shard %d/%d but %s is shard %d/%d: the shards of one grid share N "
                      "(remove the files of the other run)", dir, s->path, s->index, s->count, sh[0].path,
                      sh[0].index, sh[0].count);
        } else if (!cJSON_Compare(set, set0, 1)) {
            rc = fail("--collect %s: %s and %s were made with different settings (\"%s\" differs): every shard of a "
                      "grid needs the same flags", dir, sh[0].path, s->path, first_difference(set0, set));
        } else if (by_index[s->index]) {
            rc = fail("--collect %s: shard %d/%d twice: %s and %s", dir, s->index, s->count,
                      by_index[s->index]->path, s->path);
        }
        if (rc == 0) by_index[s->index] = s;
        seconds += isfinite(jnum(s->json, "seconds")) ? jnum(s->json, "seconds") : 0;
    }
    if (rc) goto done;
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(set0, "model"));
    if (model_flag && strcmp(model_flag, model) != 0) {
        rc = fail("--collect %s: the shards are of model %s, not --model %s", dir, model, model_flag);
        goto done;
    }
    int count = sh[0].count;
    for (int i = 0; i < count; i++)
        if (!by_index[i]) {
            rc = fail("--collect %s: shard %d/%d is missing (expected shard-%d-of-%d.json); run "
                      "fmnist-train grid --shard %d/%d with the same flags", dir, i, count, i, count, i, count);
            goto done;
        }
    for (k = 0; k < n_files; k++) {
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(sh[k].json, "rows")) {
            grid_row w;
            char why[200];
            if (grid_row_parse(r, &w, why, sizeof why)) {
                rc = fail("%s: %s", sh[k].path, why);
                goto done;
            }
            if (w.config % count != sh[k].index || seen_by[w.config]) {
                rc = fail("%s: configuration %d does not belong to shard %d/%d%s%s", sh[k].path, w.config,
                          sh[k].index, count, seen_by[w.config] ? " or is also in " : "",
                          seen_by[w.config] ? seen_by[w.config] : "");
                goto done;
            }
            seen_by[w.config] = sh[k].path;
            rows[w.config] = w;
        }
    }
    for (k = 0; k < GRID_N; k++)
        if (!seen_by[k]) {
            rc = fail("--collect %s: %s lacks configuration %d: shard %d/%d did not finish (run it again with "
                      "--resume)", dir, by_index[k % count]->path, k, k % count, count);
            goto done;
        }
    char prefix[512], note[160];
    if (grid_out) snprintf(prefix, sizeof prefix, "%s", grid_out);
    else snprintf(prefix, sizeof prefix, "weights/grid-%s", model);
    snprintf(note, sizeof note, "Total time %.0f s over %d shard%s (summed).", seconds, count, count > 1 ? "s" : "");
    rc = grid_write_tables(prefix, set0, rows, GRID_N, note);
done:
    for (k = 0; k < n_files && sh; k++) {
        free(sh[k].path);
        cJSON_Delete(sh[k].json);
    }
    free(sh);
    free(paths);
    return rc;
}

static void usage_grid(void) {
    printf("usage: fmnist-train grid --model mlp2|mlp3 [--grid-out PREFIX] [--shard I/N] [train flags]\n"
           "       fmnist-train grid --collect DIR [--grid-out PREFIX]\n\n"
           "The study's hyper-parameter search: optimiser {Adam lr 1e-3, 1e-4; SGD lr 0.1, 0.01} x\n"
           "batch {128, 256, 512}, each run with early stopping (--patience, default 10). Writes\n"
           "PREFIX.md and PREFIX.csv (default PREFIX: weights/grid-MODEL) with the study's columns,\n"
           "sorted by validation accuracy; the winner is chosen by validation accuracy, never by test\n"
           "accuracy. Each run's weights go to PREFIX-runs/. Other train flags (--seed, --threads,\n"
           "--epochs, --limit, --val, --data) apply to every run; --resume skips finished runs and\n"
           "continues an interrupted one from its checkpoint.\n\n"
           "  --shard I/N    run only configurations k (0..11 in grid order: optimiser k/3, batch k%%3)\n"
           "                 with k %% N == I (0 <= I < N <= 12) and write their rows to\n"
           "                 PREFIX-shards/shard-I-of-N.json instead of the tables; shards can run on\n"
           "                 different machines over a shared PREFIX (a Kubernetes Indexed Job:\n"
           "                 deploy/k8s/grid-job.yaml). Give every shard the same flags, --threads too.\n"
           "  --collect DIR  no training: merge DIR's shard files (every I of one N exactly once, same\n"
           "                 settings) into PREFIX.md and PREFIX.csv, the same tables as an unsharded run;\n"
           "                 PREFIX defaults to weights/grid-MODEL with the shards' model.\n");
}

/* ------------------------------------------------------------- calibrate */

/* Mean negative log-likelihood of labels under softmax(z / t), n rows. */
static double nll_at(const float *z, const uint8_t *y, size_t n, double t) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *r = z + i * FM_N_CLASSES;
        double mx = r[0] / t, sum = 0.0;
        for (int k = 1; k < FM_N_CLASSES; k++) mx = r[k] / t > mx ? r[k] / t : mx;
        for (int k = 0; k < FM_N_CLASSES; k++) sum += exp(r[k] / t - mx);
        s += log(sum) + mx - r[y[i]] / t;
    }
    return s / (double)n;
}

/* The temperature minimising the NLL (convex in 1/t): golden-section search on log t. */
static double fit_temperature(const float *z, const uint8_t *y, size_t n) {
    const double g = 0.6180339887498949;
    double a = log(0.05), b = log(20.0), c = b - g * (b - a), d = a + g * (b - a);
    double fc = nll_at(z, y, n, exp(c)), fd = nll_at(z, y, n, exp(d));
    for (int it = 0; it < 80; it++) {
        if (fc < fd) {
            b = d, d = c, fd = fc, c = b - g * (b - a), fc = nll_at(z, y, n, exp(c));
        } else {
            a = c, c = d, fc = fd, d = a + g * (b - a), fd = nll_at(z, y, n, exp(d));
        }
    }
    return exp((a + b) / 2);
}

/* Expected calibration error: 15 equal-width bins of the top probability,
 * sum over bins of |accuracy - confidence| weighted by the bin's share. */
static double ece_of(const float *z, const uint8_t *y, size_t n, double t) {
    enum { BINS = 15 };
    double conf[BINS] = {0}, acc[BINS] = {0}, cnt[BINS] = {0};
    for (size_t i = 0; i < n; i++) {
        const float *r = z + i * FM_N_CLASSES;
        int am = 0;
        for (int k = 1; k < FM_N_CLASSES; k++)
            if (r[k] > r[am]) am = k;
        double sum = 0.0;
        for (int k = 0; k < FM_N_CLASSES; k++) sum += exp((r[k] - r[am]) / t);
        double p = 1.0 / sum;
        int bin = (int)(p * BINS);
        if (bin >= BINS) bin = BINS - 1;
        conf[bin] += p, acc[bin] += am == y[i], cnt[bin] += 1;
    }
    double e = 0.0;
    for (int b = 0; b < BINS; b++)
        if (cnt[b] > 0) e += fabs(acc[b] - conf[b]) / (double)n;
    return e;
}

/* Cholesky factor L (lower, L L^T = A) of the symmetric positive definite
 * n x n matrix A, in place; -1 when A is not positive definite. */
static int cholesky(double *A, size_t n) {
    for (size_t j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (size_t k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0)) return -1;
        A[j * n + j] = sqrt(d);
        for (size_t i = j + 1; i < n; i++) {
            double v = A[i * n + j];
            for (size_t k = 0; k < j; k++) v -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = v / A[j * n + j];
        }
        for (size_t k = j + 1; k < n; k++) A[j * n + k] = 0.0;
    }
    return 0;
}

/* The feature-space detector fitted on ds (a training subset): class means
 * of the L2-normalised features of the last layer's input, one shared
 * covariance (plus a ridge of 1e-6 of its mean variance), and the Cholesky
 * factor of its inverse.  Fills o (owning means and chol). */
static int fit_ood(const fm_model *m, const fm_dataset *ds, fm_ood *o, fm_error *err) {
    const fm_arch *a = &m->arch;
    int src = a->layers[a->n_layers - 1].in[0];
    if (src < 0) return fm_seterr(err, "the network has no features before its last layer");
    size_t F = a->layers[src].out_size, in = (size_t)a->in_c * a->in_h * a->in_w, CH = 64;
    if (F > 1024) return fm_seterr(err, "features of %zu values: too many for the detector (at most 1024)", F);
    double *mu = calloc(FM_N_CLASSES * F, sizeof *mu), *cov = calloc(F * F, sizeof *cov), *inv = calloc(F * F, sizeof *inv);
    float *f = malloc(CH * F * sizeof *f), *x = malloc(CH * in * sizeof *x), *all = malloc(ds->n * F * sizeof *all);
    size_t cnt[FM_N_CLASSES] = {0};
    fm_ws ws = {0};
    int rc = -1;
    if (!mu || !cov || !inv || !f || !x || !all || fm_ws_create(&ws, a, CH, 0, err)) {
        if (!err->msg[0]) fm_seterr(err, "out of memory");
        goto done;
    }
    for (size_t s0 = 0; s0 < ds->n; s0 += CH) {
        size_t nb = ds->n - s0 < CH ? ds->n - s0 : CH;
        fm_dataset_to_float(ds, s0, nb, x);
        fm_model_features(m, &ws, x, nb, f);
        for (size_t e = 0; e < nb; e++) {
            float *fe = all + (s0 + e) * F;
            double nn = 0.0;
            for (size_t i = 0; i < F; i++) nn += (double)f[e * F + i] * f[e * F + i];
            nn = nn > 0 ? 1.0 / sqrt(nn) : 0.0;
            int y = ds->labels[s0 + e];
            for (size_t i = 0; i < F; i++) fe[i] = (float)(f[e * F + i] * nn), mu[y * F + i] += fe[i];
            cnt[y]++;
        }
    }
    for (int c = 0; c < FM_N_CLASSES; c++)
        for (size_t i = 0; i < F; i++) mu[c * F + i] /= cnt[c] ? (double)cnt[c] : 1.0;
    for (size_t e = 0; e < ds->n; e++) {
        const float *fe = all + e * F;
        const double *mc = mu + ds->labels[e] * F;
        for (size_t i = 0; i < F; i++)
            for (size_t j = 0; j <= i; j++) cov[i * F + j] += (fe[i] - mc[i]) * (fe[j] - mc[j]);
    }
    double tr = 0.0;
    for (size_t i = 0; i < F; i++) tr += cov[i * F + i];
    for (size_t i = 0; i < F; i++) {
        for (size_t j = 0; j <= i; j++) cov[i * F + j] = cov[j * F + i] = cov[i * F + j] / (double)ds->n;
        cov[i * F + i] += 1e-6 * tr / (double)ds->n / (double)F;
    }
    /* inv = cov^-1 through its Cholesky factor, then the factor of inv */
    if (cholesky(cov, F)) {
        fm_seterr(err, "the features' covariance is not positive definite");
        goto done;
    }
    for (size_t c = 0; c < F; c++) { /* solve C C^T inv[:, c] = e_c */
        double *col = inv + c * F; /* column c, stored as a row (inv is symmetric) */
        for (size_t i = 0; i < F; i++) {
            double v = i == c;
            for (size_t k = 0; k < i; k++) v -= cov[i * F + k] * col[k];
            col[i] = v / cov[i * F + i];
        }
        for (size_t i = F; i-- > 0;) {
            double v = col[i];
            for (size_t k = i + 1; k < F; k++) v -= cov[k * F + i] * col[k];
            col[i] = v / cov[i * F + i];
        }
    }
    for (size_t i = 0; i < F; i++) /* symmetrise what rounding left */
        for (size_t j = 0; j < i; j++) inv[i * F + j] = inv[j * F + i] = 0.5 * (inv[i * F + j] + inv[j * F + i]);
    if (cholesky(inv, F)) {
        fm_seterr(err, "the features' precision matrix is not positive definite");
        goto done;
    }
    o->layer = src, o->dim = F;
    o->means = malloc(FM_N_CLASSES * F * sizeof *o->means);
    o->chol = malloc(F * F * sizeof *o->chol);
    if (!o->means || !o->chol) {
        free(o->means), free(o->chol);
        fm_seterr(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < FM_N_CLASSES * F; i++) o->means[i] = (float)mu[i];
    for (size_t i = 0; i < F * F; i++) o->chol[i] = (float)inv[i];
    rc = 0;
done:
    fm_ws_destroy(&ws);
    free(mu), free(cov), free(inv), free(f), free(x), free(all);
    return rc;
}

/* The detector as the "ood" member of the serving metadata. */
static cJSON *ood_json(const fm_ood *o) {
    cJSON *j = cJSON_CreateObject(), *means = cJSON_AddArrayToObject(j, "means");
    cJSON_AddNumberToObject(j, "layer", o->layer);
    cJSON_AddNumberToObject(j, "max_distance", o->max_distance);
    for (int c = 0; c < FM_N_CLASSES; c++) cJSON_AddItemToArray(means, cJSON_CreateFloatArray(o->means + c * o->dim, (int)o->dim));
    cJSON_AddItemToObject(j, "chol", cJSON_CreateFloatArray(o->chol, (int)(o->dim * o->dim)));
    cJSON_AddStringToObject(j, "kind", "min over classes of the squared Mahalanobis distance of the L2-normalised features "
                                       "(the last layer's input) to the class means, one shared covariance, fitted on training images");
    return j;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Served logits of every example of ds (one thread; a one-off), and the
 * detector's scores when scores is not NULL. */
static int logits_scores_of(const fm_model *m, const fm_dataset *ds, float **out, float **scores, fm_error *err);
static int logits_of(const fm_model *m, const fm_dataset *ds, float **out, fm_error *err) {
    return logits_scores_of(m, ds, out, NULL, err);
}

static int logits_scores_of(const fm_model *m, const fm_dataset *ds, float **out, float **scores, fm_error *err) {
    enum { CH = 64 };
    size_t in = (size_t)m->arch.in_c * m->arch.in_h * m->arch.in_w;
    fm_ws ws;
    float *z = malloc(ds->n * FM_N_CLASSES * sizeof *z), *x = malloc(CH * in * sizeof *x);
    float *sc = scores ? malloc((ds->n ? ds->n : 1) * sizeof *sc) : NULL;
    if (!z || !x || (scores && !sc) || fm_ws_create(&ws, &m->arch, CH, 0, err)) {
        free(z), free(x), free(sc);
        return err->msg[0] ? -1 : fm_seterr(err, "out of memory");
    }
    for (size_t s = 0; s < ds->n; s += CH) {
        size_t nb = ds->n - s < CH ? ds->n - s : CH;
        fm_dataset_to_float(ds, s, nb, x);
        fm_model_logits_scores(m, &ws, x, nb, z + s * FM_N_CLASSES, sc ? sc + s : NULL);
    }
    fm_ws_destroy(&ws);
    free(x);
    *out = z;
    if (scores) *scores = sc;
    return 0;
}

static double accuracy_of(const float *z, const uint8_t *y, size_t n) {
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        const float *r = z + i * FM_N_CLASSES;
        int am = 0;
        for (int k = 1; k < FM_N_CLASSES; k++)
            if (r[k] > r[am]) am = k;
        ok += am == y[i];
    }
    return n ? (double)ok / (double)n : 0.0;
}

/* Fraction of rows whose top probability at temperature t is below thr,
 * or (scores not NULL) whose detector score is above max_d. */
static double flagged_share(const float *z, const float *scores, double max_d, size_t n, double t, double thr) {
    size_t f = 0;
    for (size_t i = 0; i < n; i++) {
        if (scores && scores[i] > max_d) {
            f++;
            continue;
        }
        const float *r = z + i * FM_N_CLASSES;
        float mx = r[0];
        for (int k = 1; k < FM_N_CLASSES; k++) mx = r[k] > mx ? r[k] : mx;
        double sum = 0.0;
        for (int k = 0; k < FM_N_CLASSES; k++) sum += exp((r[k] - mx) / t);
        f += 1.0 / sum < thr;
    }
    return n ? (double)f / (double)n : 0.0;
}

static int cmd_calibrate(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},       {"tta", required_argument, 0, 'a'},
        {"flag-rate", required_argument, 0, 'f'}, {"val", required_argument, 0, 'v'},
        {"data", required_argument, 0, 'd'},      {"help", no_argument, 0, 'h'},
        {"ood-share", required_argument, 0, 's'}, {"no-ood", no_argument, 0, 'n'},
        {0, 0, 0, 0}};
    const char *out = NULL, *tta = "auto", *data_dir = NULL;
    double flag_rate = 0.04, ood_share = 0.75;
    int use_ood = 1;
    uint64_t n_val = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case 'a':
            if (strcmp(optarg, "auto") && strcmp(optarg, "none") && strcmp(optarg, "hflip"))
                return fail("--tta: expected auto, none or hflip, got '%s'", optarg);
            tta = optarg;
            break;
        case 'f':
            if (frac_flag("flag-rate", optarg, 0, 0.5, &flag_rate)) return 1;
            break;
        case 'v':
            if (parse_u64(optarg, &n_val) || n_val < 100 || n_val > 59999)
                return fail("--val: expected 100..59999, got '%s'", optarg);
            break;
        case 'd': data_dir = optarg; break;
        case 's':
            if (frac_flag("ood-share", optarg, 0, 1, &ood_share)) return 1;
            break;
        case 'n': use_ood = 0; break;
        case 'h':
            printf("usage: fmnist-train calibrate FILE.safetensors [--out FILE] [--tta auto|none|hflip]\n"
                   "                             [--flag-rate R] [--val N] [--data DIR]\n\n"
                   "Chooses a model's serving options on the validation split (the last N examples of the\n"
                   "training file, N from the file's training metadata unless --val says), never on the test set:\n"
                   "  --tta auto       average the logits of each image and its mirror if that is more accurate on\n"
                   "                   validation (default auto; none / hflip force it)\n"
                   "  temperature      fitted to minimise the validation NLL (temperature scaling, Guo et al. 2017)\n"
                   "  --flag-rate R    the share of validation images to mark \"uncertain\" (default 0.04), split\n"
                   "                   between two tests: the feature-space detector (Mahalanobis distance of the\n"
                   "                   last layer's normalised input to the class means, fitted on 10,000 training\n"
                   "                   images) takes --ood-share S of it (default 0.75), a calibrated top probability\n"
                   "                   below its quantile the rest; --no-ood: the top probability alone\n"
                   "Writes them as the \"serving\" metadata (applied by fmnist-serve and fmnist-train eval), the\n"
                   "figures as \"calibration\" (expected calibration error before/after, validation and test) and\n"
                   "the served test accuracy into \"metrics\"; FILE is rewritten atomically unless --out.\n");
            return 0;
        default: return fail("calibrate: unknown option (see fmnist-train calibrate --help)");
        }
    }
    if (optind != argc - 1) return fail("calibrate: expected exactly one weight file (see --help)");
    const char *path = argv[optind];
    if (!out) out = path;
    fm_error err = {{0}};
    fm_model m = {0};
    if (fm_st_load(&m, path, NULL, &err)) return fail("%s", err.msg);
    if (!n_val) {
        cJSON *tj = cJSON_Parse(fm_model_meta(&m, "training") ? fm_model_meta(&m, "training") : "{}");
        double v = jnum(tj, "val_examples");
        cJSON_Delete(tj);
        if (!(v >= 100 && v <= 59999)) {
            fm_model_free(&m);
            return fail("%s: no validation size in its training metadata; give --val N", path);
        }
        n_val = (uint64_t)v;
    }
    data d;
    int rc = 1;
    float *zv = NULL, *zt = NULL, *top = NULL, *sv = NULL, *st = NULL;
    fm_ood *det = NULL;
    cJSON *cal = NULL, *serving = NULL, *metrics = NULL;
    if (load_data(&d, fm_data_dir(data_dir), (size_t)n_val, 0, 1, &err)) {
        fm_model_free(&m);
        return fail("%s", err.msg);
    }
    /* mirror averaging: on, off, or whichever validation prefers */
    fm_model_set_meta(&m, "serving", "{}", &err);
    if (fm_model_pack(&m, &err)) goto fail_err;
    double acc_plain = 0, acc_flip = 0;
    if (logits_of(&m, &d.val, &zv, &err)) goto fail_err;
    acc_plain = accuracy_of(zv, d.val.labels, d.val.n);
    m.tta = 1;
    free(zv), zv = NULL;
    if (logits_of(&m, &d.val, &zv, &err)) goto fail_err;
    acc_flip = accuracy_of(zv, d.val.labels, d.val.n);
    int use_flip = strcmp(tta, "hflip") == 0 || (strcmp(tta, "auto") == 0 && acc_flip > acc_plain);
    if (!use_flip) {
        m.tta = 0;
        free(zv), zv = NULL;
        if (logits_of(&m, &d.val, &zv, &err)) goto fail_err;
    }
    double t = fit_temperature(zv, d.val.labels, d.val.n);
    /* the threshold: the flag-rate quantile of the calibrated top probability on validation */
    top = malloc(d.val.n * sizeof *top);
    if (!top) goto oom;
    for (size_t i = 0; i < d.val.n; i++) {
        const float *r = zv + i * FM_N_CLASSES;
        float mx = r[0];
        for (int k = 1; k < FM_N_CLASSES; k++) mx = r[k] > mx ? r[k] : mx;
        double sum = 0.0;
        for (int k = 0; k < FM_N_CLASSES; k++) sum += exp((r[k] - mx) / t);
        top[i] = (float)(1.0 / sum);
    }
    qsort(top, d.val.n, sizeof *top, cmp_float);
    double prob_rate = use_ood ? flag_rate * (1.0 - ood_share) : flag_rate;
    size_t q = (size_t)(prob_rate * (double)d.val.n);
    double thr = prob_rate > 0 ? (double)top[q < d.val.n ? q : d.val.n - 1] : 0.0;
    m.temperature = (float)t;
    if (use_ood) { /* the detector, fitted on training images, its threshold a validation quantile */
        det = calloc(1, sizeof *det);
        fm_dataset fit = fm_dataset_view(&d.train, 0, d.train.n < 10000 ? d.train.n : 10000);
        if (!det || fit_ood(&m, &fit, det, &err)) goto fail_err;
        det->max_distance = INFINITY;
        m.ood = det;
        free(zv), zv = NULL;
        if (logits_scores_of(&m, &d.val, &zv, &sv, &err)) goto fail_err;
        float *ss = malloc(d.val.n * sizeof *ss);
        if (!ss) goto oom;
        memcpy(ss, sv, d.val.n * sizeof *ss);
        qsort(ss, d.val.n, sizeof *ss, cmp_float);
        size_t k = (size_t)((1.0 - flag_rate * ood_share) * (double)d.val.n);
        det->max_distance = ss[k < d.val.n ? k : d.val.n - 1];
        free(ss);
    }
    if (logits_scores_of(&m, &d.test, &zt, use_ood ? &st : NULL, &err)) goto fail_err;

    serving = cJSON_CreateObject();
    cJSON_AddStringToObject(serving, "tta", use_flip ? "hflip" : "none");
    cJSON_AddNumberToObject(serving, "temperature", (float)t);
    cJSON_AddNumberToObject(serving, "uncertain_below", (float)thr);
    if (det) cJSON_AddItemToObject(serving, "ood", ood_json(det));
    cal = cJSON_CreateObject();
    cJSON_AddStringToObject(cal, "chosen_on", "validation split: the last examples of train-images-idx3-ubyte");
    cJSON_AddNumberToObject(cal, "val_examples", (double)d.val.n);
    cJSON_AddNumberToObject(cal, "val_accuracy_plain", acc_plain);
    cJSON_AddNumberToObject(cal, "val_accuracy_hflip", acc_flip);
    cJSON_AddNumberToObject(cal, "temperature", (float)t);
    cJSON_AddNumberToObject(cal, "val_nll_before", nll_at(zv, d.val.labels, d.val.n, 1.0));
    cJSON_AddNumberToObject(cal, "val_nll_after", nll_at(zv, d.val.labels, d.val.n, t));
    cJSON_AddNumberToObject(cal, "val_ece_before", ece_of(zv, d.val.labels, d.val.n, 1.0));
    cJSON_AddNumberToObject(cal, "val_ece_after", ece_of(zv, d.val.labels, d.val.n, t));
    cJSON_AddNumberToObject(cal, "test_ece_before", ece_of(zt, d.test.labels, d.test.n, 1.0));
    cJSON_AddNumberToObject(cal, "test_ece_after", ece_of(zt, d.test.labels, d.test.n, t));
    cJSON_AddNumberToObject(cal, "flag_rate_target", flag_rate);
    cJSON_AddNumberToObject(cal, "uncertain_below", (float)thr);
    double dmax = det ? det->max_distance : 0.0;
    if (det) {
        cJSON_AddNumberToObject(cal, "ood_share", ood_share);
        cJSON_AddNumberToObject(cal, "ood_max_distance", dmax);
        cJSON_AddNumberToObject(cal, "ood_fit_examples", d.train.n < 10000 ? (double)d.train.n : 10000.0);
    }
    cJSON_AddNumberToObject(cal, "val_flagged", flagged_share(zv, sv, dmax, d.val.n, t, thr));
    cJSON_AddNumberToObject(cal, "test_flagged", flagged_share(zt, st, dmax, d.test.n, t, thr));
    cJSON_AddStringToObject(cal, "ece", "15 equal-width bins of the top probability");
    char *ss = cJSON_PrintUnformatted(serving), *cs = cJSON_PrintUnformatted(cal);
    int bad = !ss || !cs || fm_model_set_meta(&m, "serving", ss, &err) || fm_model_set_meta(&m, "calibration", cs, &err);
    free(ss), free(cs);
    if (bad) goto fail_err;
    /* the served test figures, as eval and the server will find them */
    m.ood = NULL; /* the pack below reads the detector from the metadata just written */
    if (fm_model_pack(&m, &err)) goto fail_err;
    fm_pool pool;
    if (fm_pool_create(&pool, &m.arch, fm_cpu_count(), 256, &err)) goto fail_err;
    fm_eval te;
    fm_pool_evaluate_model(&pool, &m, &d.test, &te, NULL, NULL);
    fm_pool_destroy(&pool);
    metrics = cJSON_Parse(fm_model_meta(&m, "metrics") ? fm_model_meta(&m, "metrics") : "{}");
    if (!metrics) metrics = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(metrics, "test_loss");
    cJSON_DeleteItemFromObjectCaseSensitive(metrics, "test_accuracy");
    cJSON_DeleteItemFromObjectCaseSensitive(metrics, "test_correct");
    cJSON_DeleteItemFromObjectCaseSensitive(metrics, "test_examples");
    cJSON_AddNumberToObject(metrics, "test_loss", te.loss);
    cJSON_AddNumberToObject(metrics, "test_accuracy", te.accuracy);
    cJSON_AddNumberToObject(metrics, "test_correct", (double)te.n_correct);
    cJSON_AddNumberToObject(metrics, "test_examples", (double)te.n);
    char *ms = cJSON_PrintUnformatted(metrics);
    bad = !ms || fm_model_set_meta(&m, "metrics", ms, &err);
    free(ms);
    if (bad || fm_st_save(&m, out, &err)) goto fail_err;
    printf("%s: mirror averaging %s (validation accuracy %.4f plain, %.4f mirrored); temperature %.4f;\n"
           "  validation ECE %.4f -> %.4f, NLL %.4f -> %.4f; test ECE %.4f -> %.4f;\n"
           "  uncertain below %.4f%s%.1f: %.1f%% of validation, %.1f%% of test images flagged; test accuracy %.4f\n"
           "wrote %s\n",
           path, use_flip ? "on" : "off", acc_plain, acc_flip, t, ece_of(zv, d.val.labels, d.val.n, 1.0),
           ece_of(zv, d.val.labels, d.val.n, t), nll_at(zv, d.val.labels, d.val.n, 1.0),
           nll_at(zv, d.val.labels, d.val.n, t), ece_of(zt, d.test.labels, d.test.n, 1.0),
           ece_of(zt, d.test.labels, d.test.n, t), thr, det ? " or feature distance above " : "", dmax,
           100 * flagged_share(zv, sv, dmax, d.val.n, t, thr), 100 * flagged_share(zt, st, dmax, d.test.n, t, thr),
           te.accuracy, out);
    rc = 0;
    goto done;
oom:
    fail("out of memory");
    goto done;
fail_err:
    fail("%s", err.msg[0] ? err.msg : "out of memory");
done:
    cJSON_Delete(cal);
    cJSON_Delete(serving);
    cJSON_Delete(metrics);
    free(zv), free(zt), free(top), free(sv), free(st);
    if (m.ood == det) m.ood = NULL;
    fm_ood_free(det);
    free_data(&d);
    fm_model_free(&m);
    return rc;
}

static int cmd_grid(int argc, char **argv) {
    cfg c;
    const char *grid_out = NULL, *shard_arg = NULL, *collect_dir = NULL;
    argc = take_grid_flags(argc, argv, &shard_arg, &collect_dir);
    if (argc < 0) return 1;
    int pr = parse_train_flags(argc, argv, &c, &grid_out);
    if (pr < 0) {
        usage_grid();
        return 0;
    }
    if (pr) return pr;
    int shard = 0, n_shards = 0;
    if (shard_arg && collect_dir) return fail("grid: --shard runs a share, --collect merges the shards: give one");
    if (shard_arg && parse_shard(shard_arg, &shard, &n_shards))
        return fail("--shard: expected I/N with 0 <= I < N <= %d (N shards numbered from 0, as a Job's "
                    "JOB_COMPLETION_INDEX), got '%s'", GRID_N, shard_arg);
    if (collect_dir) {
        const char *model_flag = NULL;
        for (int i = 1; i < argc; i++) {
            const char *a = argv[i];
            if (strncmp(a, "--model", 7) == 0) model_flag = c.model;
            if (strncmp(a, "--grid-out", 10) == 0 || strncmp(a, "--model", 7) == 0) {
                if (!strchr(a, '=')) i++;
            } else if (strcmp(a, "--quiet") != 0) {
                return fail("grid --collect: %s does not apply (the settings come from the shard files; "
                            "only --grid-out and --model go with --collect)", a);
            }
        }
        return grid_collect(collect_dir, grid_out, model_flag);
    }
    fm_error err;
    data d;
    if (load_data(&d, fm_data_dir(c.data), c.val, c.limit, 1, &err)) return fail("%s", err.msg);
    char prefix[512], runs_dir[600], shards_dir[600], shard_path[700];
    snprintf(prefix, sizeof prefix, "%s", grid_out ? grid_out : "");
    if (!grid_out) snprintf(prefix, sizeof prefix, "weights/grid-%s", c.model);
    snprintf(runs_dir, sizeof runs_dir, "%s-runs", prefix);
    snprintf(shards_dir, sizeof shards_dir, "%s-shards", prefix);
    snprintf(shard_path, sizeof shard_path, "%s/shard-%d-of-%d.json", shards_dir, shard, n_shards);
    cJSON *set = grid_settings(&c, &d);
    const char *mk_fail = NULL;
    if (make_parents(prefix)) mk_fail = prefix;
    else if (mkdir(runs_dir, 0755) && errno != EEXIST) mk_fail = runs_dir;
    else if (n_shards && mkdir(shards_dir, 0755) && errno != EEXIST) mk_fail = shards_dir;
    if (mk_fail || !set) {
        free_data(&d);
        cJSON_Delete(set);
        return mk_fail ? fail("%s: cannot create: %s", mk_fail, strerror(errno)) : fail("out of memory");
    }
    if (n_shards && fm_check_writable(shard_path, &err)) {
        free_data(&d);
        cJSON_Delete(set);
        return fail("%s", err.msg);
    }
    grid_row rows[GRID_N];
    int n_rows = 0, n_mine = 0, rc = 0;
    for (int k = 0; k < GRID_N; k++) n_mine += !n_shards || k % n_shards == shard;
    double t0 = now_s();
    for (int k = 0; k < GRID_N && rc == 0; k++) {
        if (n_shards && k % n_shards != shard) continue;
        grid_row *row = &rows[n_rows];
        grid_config(k, row);
        cfg rc_cfg = c;
        rc_cfg.opt = row->opt;
        rc_cfg.lr = row->lr;
        rc_cfg.momentum = 0.0;
        rc_cfg.batch = row->batch;
        char out[700];
        snprintf(out, sizeof out, "%s/%s-%s-%g-%zu.safetensors", runs_dir, c.model,
                 fm_optim_name((fm_opt_kind)row->opt), row->lr, row->batch);
        rc_cfg.out = out;
        rc_cfg.checkpoint = NULL;
        /* a finished run is not repeated: its weights carry its metrics */
        fm_model prev = {0};
        if (c.resume && fm_st_load(&prev, out, NULL, &err) == 0) {
            fm_model_free(&prev);
            rc_cfg.resume = 0;
        } else {
            char *ck = sibling(out, ".ckpt");
            rc_cfg.resume = c.resume && ck && access(ck, F_OK) == 0;
            free(ck);
        }
        printf("\n== grid run %d/%d: %s lr %g batch %zu ==\n", n_rows + 1, n_mine,
               fm_optim_name((fm_opt_kind)row->opt), row->lr, row->batch);
        fflush(stdout);
        fm_model done_model = {0};
        if (c.resume && !rc_cfg.resume && fm_st_load(&done_model, out, NULL, &err) == 0) {
            /* recover the finished run's numbers from its metadata */
            cJSON *mj = cJSON_Parse(fm_model_meta(&done_model, "metrics") ? fm_model_meta(&done_model, "metrics") : "{}");
            row->r.train.loss = jnum(mj, "train_loss"), row->r.train.accuracy = jnum(mj, "train_accuracy");
            row->r.val.loss = jnum(mj, "val_loss"), row->r.val.accuracy = jnum(mj, "val_accuracy");
            row->r.test.loss = jnum(mj, "test_loss"), row->r.test.accuracy = jnum(mj, "test_accuracy");
            row->r.has_test = 1;
            cJSON_Delete(mj);
            fm_model_free(&done_model);
            printf("already finished: %s\n", out);
        } else {
            rc = run_train(&rc_cfg, &d, &row->r, !c.quiet);
        }
        if (rc == 0) n_rows++;
    }
    free_data(&d);
    if (rc == 0 && n_shards) {
        /* one shard's rows, in configuration order, for grid --collect */
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(j, "format", GRID_FORMAT);
        cJSON_AddNumberToObject(j, "shard", shard);
        cJSON_AddNumberToObject(j, "shards", n_shards);
        cJSON_AddItemToObject(j, "settings", set);
        set = NULL;
        cJSON_AddNumberToObject(j, "seconds", now_s() - t0);
        int ok = cJSON_AddItemToObject(j, "rows", arr) && cJSON_GetArraySize(j) == 6;
        for (int i = 0; i < n_rows && ok; i++) ok = cJSON_AddItemToArray(arr, grid_row_json(&rows[i]));
        if (!ok) rc = fail("out of memory");
        else if (write_json(shard_path, j, &err)) rc = fail("%s", err.msg);
        else printf("\nshard %d/%d: %d runs; wrote %s (merge with fmnist-train grid --collect %s)\n", shard,
                    n_shards, n_rows, shard_path, shards_dir);
        cJSON_Delete(j);
    } else if (rc == 0) {
        char note[64];
        snprintf(note, sizeof note, "Total time %.0f s.", now_s() - t0);
        rc = grid_write_tables(prefix, set, rows, n_rows, note);
    }
    cJSON_Delete(set);
    return rc;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f, "usage: fmnist-train COMMAND [flags]   (fmnist-train COMMAND --help for its flags)\n\n"
               "commands:\n"
               "  train    train one network (mlp2, mlp3, cnn1, cnn2, cnn3 or an architecture file)\n"
               "  grid     the study's hyper-parameter grid for mlp2 / mlp3, Markdown + CSV tables\n"
               "  eval     evaluate a weight file on the test set (text or --json)\n"
               "  summary  Keras-like layer table of a named architecture or weight file\n"
               "  eda      data overview: counts, shapes, pixel range, class balance, sample grid PNG\n"
               "  calibrate  choose a weight file's serving options on validation: mirror averaging,\n"
               "           temperature, the \"uncertain\" threshold\n"
               "  version  print the version\n\n"
               "Data: $FMNIST_DATA or --data DIR, default %s (Debian package dataset-fashion-mnist).\n",
               FM_DEFAULT_DATA_DIR);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        char mpi[200];
        fm_mpi_describe(mpi, sizeof mpi);
        printf("fmnist-train %s (gemm kernel: %s)\n%s\n", FM_VERSION, fm_gemm_kernel_name(), mpi);
        return 0;
    }
    if (fm_mpi_launched() > 1 && strcmp(cmd, "train") != 0) {
        fprintf(stderr, "fmnist-train: %s runs as one process, not under mpirun with %zu; only train is "
                "data-parallel (mpirun -np N fmnist-train train ...)\n", cmd, fm_mpi_launched());
        return 2;
    }
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "grid") == 0) return cmd_grid(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "summary") == 0) return cmd_summary(argc - 1, argv + 1);
    if (strcmp(cmd, "eda") == 0) return fm_eda_main(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0) return cmd_calibrate(argc - 1, argv + 1);
    fprintf(stderr, "fmnist-train: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
