/* fm_arch.c - parse, check, describe and initialise architectures.  What
 * is particular to a layer type (its fields, shapes, tensors) is asked of
 * its row in fm_ops.c; this file does what is common: the JSON object of a
 * layer and its input references, the graph's checks, offsets, the summary.
 * The study's five networks and the modern ones beside them are themselves
 * JSON descriptions, so no model is hard-coded in C. */
#include "fm_arch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_ops.h"
#include "fm_rng.h"

/* ---- named architectures ----------------------------------------------------------- */

#define MLP_HIDDEN "{\"type\":\"linear\",\"out\":256},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.2}"
#define CONV(o) "{\"type\":\"conv2d\",\"out\":" #o ",\"kernel\":3,\"padding\":\"valid\"},{\"type\":\"relu\"}"
#define POOL "{\"type\":\"maxpool2d\",\"kernel\":2}"
#define DROP "{\"type\":\"dropout\",\"p\":0.2}"
#define CNN_DROP                                                                           \
    "[" CONV(32) "," POOL "," DROP "," CONV(64) "," POOL "," DROP "," CONV(128) "," DROP \
    ",{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":128},{\"type\":\"relu\"}," DROP \
    ",{\"type\":\"linear\",\"out\":10}]"
/* conv 3x3 'same' without bias, batch norm, relu: the unit of the modern networks */
#define CBR(o) "{\"type\":\"conv2d\",\"out\":" #o ",\"kernel\":3,\"padding\":\"same\",\"bias\":false},{\"type\":\"batchnorm2d\"},{\"type\":\"relu\"}"

static const struct {
    const char *name, *json;
} study[] = {
    {"mlp2", "{\"name\":\"mlp2\",\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"}," MLP_HIDDEN
             "," MLP_HIDDEN ",{\"type\":\"linear\",\"out\":10}]}"},
    {"mlp3", "{\"name\":\"mlp3\",\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"}," MLP_HIDDEN
             "," MLP_HIDDEN "," MLP_HIDDEN ",{\"type\":\"linear\",\"out\":10}]}"},
    {"cnn1", "{\"name\":\"cnn1\",\"input\":[1,28,28],\"layers\":[" CONV(32) "," POOL "," CONV(
                 64) "," POOL "," CONV(128) ",{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":128},"
                     "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":10}]}"},
    {"cnn2", "{\"name\":\"cnn2\",\"input\":[1,28,28],\"layers\":" CNN_DROP "}"},
    {"cnn3", "{\"name\":\"cnn3\",\"input\":[1,28,28],\"layers\":" CNN_DROP "}"},
    /* VGG-style with batch norm: two conv-bn-relu per stage, 2x2 max-pool, global average pool */
    {"vgg-bn", "{\"name\":\"vgg-bn\",\"input\":[1,28,28],\"layers\":[" CBR(32) "," CBR(32) "," POOL "," CBR(64) "," CBR(
                   64) "," POOL "," CBR(128) "," CBR(128) ",{\"type\":\"global_avgpool\"},{\"type\":\"linear\",\"out\":10}]}"},
};

/* ResNets for 28x28 (He et al. 2016's CIFAR family): a 3x3 stem, three
 * stages of `blocks` basic blocks at widths w, 2w, 4w (stride 2 into the
 * second and third, a 1x1 conv + batch norm projection where the shape
 * changes), global average pooling, linear.  resnet8: 1 block a stage,
 * resnet20: 3. */
static const struct {
    const char *name;
    int width, blocks;
} resnets[] = {{"resnet8", 16, 1}, {"resnet20", 16, 3}, {"resnet20-w32", 32, 3}};

const char *const fm_arch_names[] = {"mlp2",    "mlp3",     "cnn1",         "cnn2", "cnn3",
                                     "vgg-bn",  "resnet8",  "resnet20",     "resnet20-w32", NULL};

/* Writes a ResNet's JSON into buf; returns its length (>= n: too small). */
static size_t resnet_json(char *buf, size_t n, const char *name, int width, int blocks) {
    size_t o = 0;
#define PUT(...) o += (size_t)snprintf(buf + (o < n ? o : n), o < n ? n - o : 0, __VA_ARGS__)
    PUT("{\"name\":\"%s\",\"input\":[1,28,28],\"layers\":[", name);
    PUT("{\"type\":\"conv2d\",\"out\":%d,\"kernel\":3,\"padding\":\"same\",\"bias\":false},"
        "{\"type\":\"batchnorm2d\"},{\"type\":\"relu\",\"name\":\"b0\"}", width);
    int b = 0;
    for (int stage = 0; stage < 3; stage++)
        for (int k = 0; k < blocks; k++, b++) {
            int w = width << stage, stride = stage > 0 && k == 0 ? 2 : 1;
            PUT(",{\"type\":\"conv2d\",\"out\":%d,\"kernel\":3,\"stride\":%d,\"padding\":\"same\",\"bias\":false},"
                "{\"type\":\"batchnorm2d\"},{\"type\":\"relu\"},"
                "{\"type\":\"conv2d\",\"out\":%d,\"kernel\":3,\"padding\":\"same\",\"bias\":false},"
                "{\"type\":\"batchnorm2d\"},{\"type\":\"add\",\"inputs\":[-1,\"b%d\"]},"
                "{\"type\":\"relu\",\"name\":\"b%d\"}", w, stride, w, b, b + 1);
        }
    PUT(",{\"type\":\"global_avgpool\"},{\"type\":\"linear\",\"out\":10}]}");
#undef PUT
    return o;
}

int fm_arch_named(fm_arch *a, const char *name, fm_error *err) {
    for (size_t i = 0; i < sizeof study / sizeof study[0]; i++)
        if (strcmp(name, study[i].name) == 0) return fm_arch_from_json(a, study[i].json, err);
    for (size_t i = 0; i < sizeof resnets / sizeof resnets[0]; i++)
        if (strcmp(name, resnets[i].name) == 0) {
            char buf[16384];
            if (resnet_json(buf, sizeof buf, name, resnets[i].width, resnets[i].blocks) >= sizeof buf)
                return fm_seterr(err, "%s: description too long", name);
            return fm_arch_from_json(a, buf, err);
        }
    char known[256];
    size_t o = 0;
    for (int i = 0; fm_arch_names[i] && o < sizeof known; i++)
        o += (size_t)snprintf(known + o, sizeof known - o, "%s%s", i ? ", " : "", fm_arch_names[i]);
    return fm_seterr(err, "unknown model '%s' (known: %s, or a path to an architecture .json file)", name, known);
}

const char *fm_ltype_name(fm_ltype t) { return fm_op_of(t)->name; }
const char *fm_ltype_display(fm_ltype t) { return fm_op_of(t)->torch; }

/* ---- parsing ----------------------------------------------------------------------- */

/* Layer li's input reference r: an index (earlier layers), a negative
 * offset back from li, a layer name, or "input". */
static int resolve_ref(const fm_arch *a, int li, const cJSON *r, int *out, fm_error *err) {
    if (cJSON_IsNumber(r)) {
        double d = r->valuedouble;
        if (d != floor(d) || fabs(d) > FM_MAX_LAYERS)
            return fm_seterr(err, "layer %d: input reference %g is not a layer index", li, d);
        if (d >= li)
            return fm_seterr(err, "layer %d: input %d refers forward (a layer may only read earlier layers)", li, (int)d);
        int idx = d >= 0 ? (int)d : li + (int)d; /* -1: the layer before; before layer 0, the input */
        if (idx < FM_INPUT)
            return fm_seterr(err, "layer %d: input %d refers to nothing (there are %d layers before it)", li, (int)d, li);
        *out = idx;
        return 0;
    }
    if (cJSON_IsString(r)) {
        if (strcmp(r->valuestring, "input") == 0) {
            *out = FM_INPUT;
            return 0;
        }
        for (int k = 0; k < li; k++)
            if (strcmp(a->layers[k].name, r->valuestring) == 0) {
                *out = k;
                return 0;
            }
        for (int k = li; k < a->n_layers; k++)
            if (strcmp(a->layers[k].name, r->valuestring) == 0)
                return fm_seterr(err, "layer %d: input \"%.32s\" refers forward (layer %d; a layer may only read earlier layers)",
                                 li, r->valuestring, k);
        return fm_seterr(err, "layer %d: input \"%.32s\" names no earlier layer", li, r->valuestring);
    }
    return fm_seterr(err, "layer %d: an input reference must be a layer index, a layer name or \"input\"", li);
}

/* Field names every layer takes, besides its row's keys. */
static int common_key(const char *k) {
    return strcmp(k, "type") == 0 || strcmp(k, "name") == 0 || strcmp(k, "inputs") == 0;
}

static int parse_layer(fm_arch *a, int li, const cJSON *l, fm_error *err) {
    fm_layer *L = &a->layers[li];
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(l, "type");
    if (!cJSON_IsObject(l) || !cJSON_IsString(type))
        return fm_seterr(err, "layer %d: must be an object with a \"type\" string", li);
    int t = fm_op_find(type->valuestring);
    if (t < 0) {
        char names[256];
        fm_op_names(names, sizeof names);
        return fm_seterr(err, "layer %d: unknown type \"%.40s\" (%s)", li, type->valuestring, names);
    }
    const fm_op *op = fm_op_of((fm_ltype)t);
    L->type = (fm_ltype)t;
    L->bias = 1, L->stride = 1, L->momentum = 0.1f, L->eps = 1e-5f;
    const cJSON *m;
    cJSON_ArrayForEach(m, l) {
        int known = common_key(m->string);
        for (const char *const *k = op->keys; k && *k && !known; k++) known = strcmp(m->string, *k) == 0;
        if (!known) return fm_seterr(err, "layer %d (%s): unknown field \"%.32s\"", li, op->name, m->string);
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(l, "name");
    L->name[0] = '\0';
    if (name) {
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) >= sizeof L->name ||
            strcmp(name->valuestring, "input") == 0)
            return fm_seterr(err, "layer %d: \"name\" must be a non-empty string of at most %zu bytes, not \"input\"", li,
                             sizeof L->name - 1);
        for (int k = 0; k < li; k++)
            if (strcmp(a->layers[k].name, name->valuestring) == 0)
                return fm_seterr(err, "layer %d: name \"%s\" is already layer %d's", li, name->valuestring, k);
        strcpy(L->name, name->valuestring);
    }
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(l, "inputs");
    if (inputs) {
        if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) != op->n_in)
            return fm_seterr(err, "layer %d (%s): \"inputs\" must be an array of %d reference%s", li, op->name, op->n_in,
                             op->n_in == 1 ? "" : "s");
        int k = 0;
        const cJSON *r;
        cJSON_ArrayForEach(r, inputs) if (resolve_ref(a, li, r, &L->in[k++], err)) return -1;
    } else if (op->n_in != 1) {
        return fm_seterr(err, "layer %d (%s): needs \"inputs\": an array of %d references", li, op->name, op->n_in);
    } else {
        L->in[0] = li - 1; /* the layer before (FM_INPUT for the first) */
    }
    L->n_in = op->n_in;
    char why[200] = "";
    if (op->parse && op->parse(L, l, why, sizeof why))
        return fm_seterr(err, "layer %d (%s): %s", li, op->name, why);
    return 0;
}

int fm_arch_from_json(fm_arch *a, const char *json, fm_error *err) {
    memset(a, 0, sizeof *a);
    cJSON *root = cJSON_Parse(json);
    if (!root) return fm_seterr(err, "architecture is not valid JSON");
    int rc = -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    if (!cJSON_IsObject(root)) {
        fm_seterr(err, "architecture must be a JSON object");
        goto done;
    }
    if (name) {
        if (!cJSON_IsString(name) || strlen(name->valuestring) >= sizeof a->name) {
            fm_seterr(err, "architecture \"name\" must be a string of at most %zu bytes", sizeof a->name - 1);
            goto done;
        }
        strcpy(a->name, name->valuestring);
    } else {
        strcpy(a->name, "custom");
    }
    a->in_c = 1, a->in_h = FM_IMG_H, a->in_w = FM_IMG_W;
    if (input) {
        if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) != 3) {
            fm_seterr(err, "architecture \"input\" must be [channels, height, width]");
            goto done;
        }
        int dims[3];
        for (int i = 0; i < 3; i++) {
            const cJSON *d = cJSON_GetArrayItem(input, i);
            if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble > 4096 ||
                d->valuedouble != floor(d->valuedouble)) {
                fm_seterr(err, "architecture \"input\" dimensions must be integers in [1, 4096]");
                goto done;
            }
            dims[i] = (int)d->valuedouble;
        }
        a->in_c = dims[0], a->in_h = dims[1], a->in_w = dims[2];
    }
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1) {
        fm_seterr(err, "architecture needs a non-empty \"layers\" array");
        goto done;
    }
    if (cJSON_GetArraySize(layers) > FM_MAX_LAYERS) {
        fm_seterr(err, "architecture has %d layers, at most %d are supported", cJSON_GetArraySize(layers), FM_MAX_LAYERS);
        goto done;
    }
    a->n_layers = cJSON_GetArraySize(layers);
    { /* names first, so that a reference forward can say where it points */
        int li = 0;
        const cJSON *l;
        cJSON_ArrayForEach(l, layers) {
            const cJSON *nm = cJSON_IsObject(l) ? cJSON_GetObjectItemCaseSensitive(l, "name") : NULL;
            if (cJSON_IsString(nm) && strlen(nm->valuestring) < sizeof a->layers[li].name)
                strcpy(a->layers[li].name, nm->valuestring);
            li++;
        }
        li = 0;
        cJSON_ArrayForEach(l, layers) {
            if (parse_layer(a, li, l, err)) goto done;
            li++;
        }
    }
    rc = fm_arch_finalize(a, err);
done:
    cJSON_Delete(root);
    return rc;
}

int fm_arch_from_file(fm_arch *a, const char *path, fm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return fm_seterr(err, "%s: cannot open architecture file: %s", path, strerror(errno));
    char *buf = malloc(1 << 16);
    if (!buf) {
        fclose(f);
        return fm_seterr(err, "out of memory");
    }
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    int bad = ferror(f) || !feof(f);
    fclose(f);
    buf[n] = '\0';
    int rc;
    if (bad) {
        rc = fm_seterr(err, "%s: unreadable or larger than 64 KiB", path);
    } else {
        rc = fm_arch_from_json(a, buf, err);
        if (rc) fm_err_prefix(err, path);
    }
    free(buf);
    return rc;
}

/* ---- the graph: shapes, tensors, offsets ----------------------------------------- */

int fm_arch_finalize(fm_arch *a, fm_error *err) {
    if (a->n_layers < 1 || a->n_layers > FM_MAX_LAYERS) return fm_seterr(err, "architecture has no layers");
    int flat[FM_MAX_LAYERS];
    int in_flat = a->in_h == 1 && a->in_w == 1;
    size_t off = 0, trainable = 0, max_size = (size_t)a->in_c * a->in_h * a->in_w;
    a->graph = 0;
    for (int i = 0; i < a->n_layers; i++) a->layers[i].n_consumers = 0;
    for (int i = 0; i < a->n_layers; i++) {
        fm_layer *L = &a->layers[i];
        if ((unsigned)L->type >= FM_N_LTYPES) return fm_seterr(err, "layer %d: unknown type", i);
        const fm_op *op = fm_op_of(L->type);
        if (L->n_in != op->n_in) return fm_seterr(err, "layer %d (%s): takes %d inputs, has %d", i, op->name, op->n_in, L->n_in);
        int shapes[FM_MAX_INPUTS][3], fl = 0;
        for (int k = 0; k < L->n_in; k++) {
            int src = L->in[k];
            if (src < FM_INPUT || src >= i)
                return fm_seterr(err, "layer %d (%s): input %d refers %s", i, op->name, src,
                                 src >= i ? "forward or to itself (the graph must be acyclic, in order)" : "to nothing");
            if (src == FM_INPUT) {
                shapes[k][0] = a->in_c, shapes[k][1] = a->in_h, shapes[k][2] = a->in_w;
                if (k == 0) fl = in_flat;
            } else {
                const fm_layer *S = &a->layers[src];
                shapes[k][0] = S->out_c, shapes[k][1] = S->out_h, shapes[k][2] = S->out_w;
                if (k == 0) fl = flat[src];
                a->layers[src].n_consumers++;
            }
        }
        if (L->n_in != 1 || L->in[0] != i - 1) a->graph = 1;
        L->in_c = shapes[0][0], L->in_h = shapes[0][1], L->in_w = shapes[0][2];
        if (L->n_in > 1)
            L->in2_c = shapes[1][0], L->in2_h = shapes[1][1], L->in2_w = shapes[1][2];
        else
            L->in2_c = L->in2_h = L->in2_w = 0;
        char why[200] = "";
        if (op->shape(L, shapes[L->n_in > 1 ? 1 : 0], fl, &flat[i], why, sizeof why))
            return fm_seterr(err, "layer %d (%s): %s", i, op->name, why);
        L->in_size = (size_t)L->in_c * L->in_h * L->in_w;
        L->out_size = (size_t)L->out_c * L->out_h * L->out_w;
        if (L->out_size > ((size_t)1 << 24)) return fm_seterr(err, "layer %d (%s): activation too large", i, op->name);
        if (L->out_size > max_size) max_size = L->out_size;
        L->alias_eval = op->alias_eval;
        L->in_place = op->in_place;
        /* tensors: contiguous per layer, in the row's order */
        fm_tensor t[FM_MAX_TENSORS];
        int nt = op->tensors ? op->tensors(L, t) : 0;
        L->p_off = off;
        L->n_p = 0;
        L->w_off = L->b_off = off;
        L->n_w = L->n_b = 0;
        for (int k = 0; k < nt; k++) {
            if (strcmp(t[k].name, "weight") == 0) L->w_off = off + t[k].off, L->n_w = t[k].count;
            if (strcmp(t[k].name, "bias") == 0) L->b_off = off + t[k].off, L->n_b = t[k].count;
            if (t[k].flags & FM_T_TRAIN) trainable += t[k].count;
            L->n_p += t[k].count;
        }
        if (L->n_b == 0) L->b_off = off + L->n_w;
        off += L->n_p;
        if (off > ((size_t)1 << 28)) return fm_seterr(err, "layer %d: more than 2^28 parameters", i);
    }
    for (int i = 0; i + 1 < a->n_layers; i++)
        if (a->layers[i].n_consumers == 0)
            return fm_seterr(err, "layer %d (%s): its output is never used (every layer but the last must feed a later one)",
                             i, fm_ltype_name(a->layers[i].type));
    const fm_layer *last = &a->layers[a->n_layers - 1];
    if (!(flat[a->n_layers - 1] && last->out_c == FM_N_CLASSES))
        return fm_seterr(err, "the last layer must output %d class scores (a flat vector), not %dx%dx%d", FM_N_CLASSES,
                         last->out_c, last->out_h, last->out_w);
    a->flat = 1;
    a->n_params = off;
    a->n_trainable = trainable;
    a->max_size = max_size;
    return 0;
}

int fm_layer_tensors(const fm_arch *a, int i, fm_tensor *t) {
    const fm_layer *L = &a->layers[i];
    const fm_op *op = fm_op_of(L->type);
    int nt = op->tensors ? op->tensors(L, t) : 0;
    for (int k = 0; k < nt; k++) {
        char full[sizeof t[k].name];
        snprintf(full, sizeof full, "%d.%s", i, t[k].name);
        memcpy(t[k].name, full, sizeof full);
        t[k].off += L->p_off;
    }
    return nt;
}

int fm_arch_n_tensors(const fm_arch *a) {
    int n = 0;
    fm_tensor t[FM_MAX_TENSORS];
    for (int i = 0; i < a->n_layers; i++) n += fm_layer_tensors(a, i, t);
    return n;
}

int fm_arch_tensors(const fm_arch *a, fm_tensor *t) {
    int n = 0;
    for (int i = 0; i < a->n_layers; i++) n += fm_layer_tensors(a, i, t + n);
    return n;
}

void fm_arch_param_flags(const fm_arch *a, uint8_t *flags) {
    fm_tensor t[FM_MAX_TENSORS];
    for (int i = 0; i < a->n_layers; i++) {
        int nt = fm_layer_tensors(a, i, t);
        for (int k = 0; k < nt; k++) memset(flags + t[k].off, (int)t[k].flags, t[k].count);
    }
}

int fm_arch_differs(const fm_arch *f, const fm_arch *e, char *why, size_t n) {
    if (f->in_c != e->in_c || f->in_h != e->in_h || f->in_w != e->in_w) {
        snprintf(why, n, "input %dx%dx%d in the file, %dx%dx%d expected", f->in_c, f->in_h, f->in_w, e->in_c, e->in_h,
                 e->in_w);
        return 1;
    }
    if (f->n_layers != e->n_layers) {
        snprintf(why, n, "%d layers in the file, %d expected", f->n_layers, e->n_layers);
        return 1;
    }
    for (int i = 0; i < f->n_layers; i++) {
        const fm_layer *a = &f->layers[i], *b = &e->layers[i];
        if (a->type != b->type) {
            snprintf(why, n, "layer %d is %s in the file, %s expected", i, fm_ltype_name(a->type), fm_ltype_name(b->type));
            return 1;
        }
        int same = a->n_in == b->n_in && a->out_c == b->out_c && a->out_h == b->out_h && a->out_w == b->out_w &&
                   a->n_p == b->n_p && a->kernel == b->kernel && a->stride == b->stride && a->same == b->same &&
                   a->bias == b->bias && a->proj == b->proj && a->eps == b->eps;
        for (int k = 0; same && k < a->n_in; k++) same = a->in[k] == b->in[k];
        if (!same) {
            snprintf(why, n, "layer %d (%s) has different inputs, outputs, kernel, stride, padding or bias", i,
                     fm_ltype_name(a->type));
            return 1;
        }
    }
    return 0;
}

/* ---- JSON out ---------------------------------------------------------------------- */

/* A reference for to_json: the layer's name if it has one, "input", or its index. */
static cJSON *ref_json(const fm_arch *a, int src) {
    if (src == FM_INPUT) return cJSON_CreateString("input");
    if (a->layers[src].name[0]) return cJSON_CreateString(a->layers[src].name);
    return cJSON_CreateNumber(src);
}

char *fm_arch_to_json(const fm_arch *a) {
    cJSON *root = cJSON_CreateObject();
    cJSON *layers = cJSON_CreateArray();
    if (!root || !layers) goto oom;
    int dims[3] = {a->in_c, a->in_h, a->in_w};
    cJSON *input = cJSON_CreateIntArray(dims, 3);
    if (!cJSON_AddStringToObject(root, "name", a->name) || !input) goto oom_input;
    if (!cJSON_AddItemToObject(root, "input", input)) goto oom_input; /* its key copy can fail */
    if (!cJSON_AddItemToObject(root, "layers", layers)) goto oom;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        const fm_op *op = fm_op_of(L->type);
        cJSON *o = cJSON_CreateObject();
        if (!o) goto oom_root;
        cJSON_AddItemToArray(layers, o);
        if (!cJSON_AddStringToObject(o, "type", op->name)) goto oom_root;
        if (L->name[0] && !cJSON_AddStringToObject(o, "name", L->name)) goto oom_root;
        if (L->n_in != 1 || L->in[0] != i - 1) { /* not the default: the layer before */
            cJSON *refs = cJSON_AddArrayToObject(o, "inputs");
            if (!refs) goto oom_root;
            for (int k = 0; k < L->n_in; k++) {
                cJSON *r = ref_json(a, L->in[k]);
                if (!r || !cJSON_AddItemToArray(refs, r)) {
                    cJSON_Delete(r);
                    goto oom_root;
                }
            }
        }
        if (op->to_json && op->to_json(L, o)) goto oom_root;
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
oom_input:
    cJSON_Delete(input);
oom:
    cJSON_Delete(layers);
    cJSON_Delete(root);
    return NULL;
oom_root:
    cJSON_Delete(root);
    return NULL;
}

/* ---- summary, MACs, initial values ------------------------------------------------ */

static void shape_str(char *buf, size_t n, int c, int h, int w) {
    if (h == 1 && w == 1)
        snprintf(buf, n, "(None, %d)", c);
    else
        snprintf(buf, n, "(None, %d, %d, %d)", c, h, w);
}

/* 1234567 -> "1,234,567" */
static void commas(char *buf, size_t n, size_t v) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%zu", v);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
}

/* Trainable and non-trainable (running statistics; Keras counts them, PyTorch
 * keeps them as buffers; num_batches_tracked is neither) floats of layer i. */
static void layer_counts(const fm_arch *a, int i, size_t *train, size_t *fixed) {
    fm_tensor t[FM_MAX_TENSORS];
    int nt = fm_layer_tensors(a, i, t);
    *train = *fixed = 0;
    for (int k = 0; k < nt; k++) {
        if (t[k].flags & FM_T_TRAIN)
            *train += t[k].count;
        else if (!(t[k].flags & FM_T_I64))
            *fixed += t[k].count;
    }
}

void fm_arch_summary(const fm_arch *a, FILE *f) {
    char shape[48], label[64], params[32];
    const char *rule = a->graph ? "________________________________________________________________________________\n"
                                : "_________________________________________________________________\n";
    const char *bold = a->graph ? "================================================================================\n"
                                : "=================================================================\n";
    fprintf(f, "Model: \"%s\"\n%s", a->name, rule);
    fprintf(f, "%-30s%-24s%11s%s\n%s", " Layer (type)", "Output Shape", "Param #", a->graph ? "  Connected to" : "",
            bold);
    shape_str(shape, sizeof shape, a->in_c, a->in_h, a->in_w);
    fprintf(f, " %-29s%-24s%11s\n", "input (Input)", shape, "0");
    size_t total_train = 0, total_fixed = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        size_t tr, fx;
        layer_counts(a, i, &tr, &fx);
        total_train += tr, total_fixed += fx;
        if (L->name[0])
            snprintf(label, sizeof label, "%d %s (%s)", i, L->name, fm_ltype_display(L->type));
        else
            snprintf(label, sizeof label, "%d (%s)", i, fm_ltype_display(L->type));
        shape_str(shape, sizeof shape, L->out_c, L->out_h, L->out_w);
        commas(params, sizeof params, tr + fx);
        fprintf(f, " %-29s%-24s%11s", label, shape, params);
        if (a->graph) {
            fputs("  ", f);
            for (int k = 0; k < L->n_in; k++) {
                if (L->in[k] == FM_INPUT)
                    fprintf(f, "%sinput", k ? ", " : "");
                else
                    fprintf(f, "%s%d", k ? ", " : "", L->in[k]);
            }
        }
        fputc('\n', f);
    }
    char tr_s[32], fx_s[32];
    commas(params, sizeof params, total_train + total_fixed);
    commas(tr_s, sizeof tr_s, total_train);
    commas(fx_s, sizeof fx_s, total_fixed);
    fprintf(f, "%sTotal params: %s\nTrainable params: %s\nNon-trainable params: %s\n%s", bold, params, tr_s, fx_s,
            rule);
}

size_t fm_arch_macs(const fm_arch *a) {
    size_t macs = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_op *op = fm_op_of(a->layers[i].type);
        if (op->macs) macs += op->macs(&a->layers[i]);
    }
    return macs;
}

void fm_arch_init_params(const fm_arch *a, float *params, fm_rng *rng) {
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        const fm_op *op = fm_op_of(L->type);
        if (op->init) op->init(L, params + L->p_off, rng);
    }
}
