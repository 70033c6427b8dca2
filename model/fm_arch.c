/* fm_arch.c - parse, check, describe and initialise sequential
 * architectures.  The study's five networks are themselves written as JSON
 * descriptions below, so no model is hard-coded in C. */
#include "fm_arch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_rng.h"

#define MLP_HIDDEN "{\"type\":\"linear\",\"out\":256},{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.2}"
#define CONV(o) "{\"type\":\"conv2d\",\"out\":" #o ",\"kernel\":3,\"padding\":\"valid\"},{\"type\":\"relu\"}"
#define POOL "{\"type\":\"maxpool2d\",\"kernel\":2}"
#define DROP "{\"type\":\"dropout\",\"p\":0.2}"
#define CNN_DROP                                                                           \
    "[" CONV(32) "," POOL "," DROP "," CONV(64) "," POOL "," DROP "," CONV(128) "," DROP \
    ",{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":128},{\"type\":\"relu\"}," DROP \
    ",{\"type\":\"linear\",\"out\":10}]"

static const struct {
    const char *name, *json;
} named[] = {
    {"mlp2", "{\"name\":\"mlp2\",\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"}," MLP_HIDDEN
             "," MLP_HIDDEN ",{\"type\":\"linear\",\"out\":10}]}"},
    {"mlp3", "{\"name\":\"mlp3\",\"input\":[1,28,28],\"layers\":[{\"type\":\"flatten\"}," MLP_HIDDEN
             "," MLP_HIDDEN "," MLP_HIDDEN ",{\"type\":\"linear\",\"out\":10}]}"},
    {"cnn1", "{\"name\":\"cnn1\",\"input\":[1,28,28],\"layers\":[" CONV(32) "," POOL "," CONV(
                 64) "," POOL "," CONV(128) ",{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":128},"
                     "{\"type\":\"relu\"},{\"type\":\"linear\",\"out\":10}]}"},
    {"cnn2", "{\"name\":\"cnn2\",\"input\":[1,28,28],\"layers\":" CNN_DROP "}"},
    {"cnn3", "{\"name\":\"cnn3\",\"input\":[1,28,28],\"layers\":" CNN_DROP "}"},
};

const char *const fm_arch_names[] = {"mlp2", "mlp3", "cnn1", "cnn2", "cnn3", NULL};

static const char *const type_names[] = {"linear", "conv2d", "maxpool2d", "relu", "dropout", "flatten"};
static const char *const type_display[] = {"Linear", "Conv2d", "MaxPool2d", "ReLU", "Dropout", "Flatten"};

const char *fm_ltype_name(fm_ltype t) { return type_names[t]; }
const char *fm_ltype_display(fm_ltype t) { return type_display[t]; }

int fm_arch_named(fm_arch *a, const char *name, fm_error *err) {
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (strcmp(name, named[i].name) == 0) return fm_arch_from_json(a, named[i].json, err);
    return fm_seterr(err, "unknown model '%s' (known: mlp2, mlp3, cnn1, cnn2, cnn3, or a path to an architecture .json file)", name);
}

/* Reads an integer member in [lo, hi]; absent -> def (or error when def < lo). */
static int get_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out, int li, fm_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (def < lo) return fm_seterr(err, "layer %d: missing \"%s\"", li, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return fm_seterr(err, "layer %d: \"%s\" must be an integer in [%d, %d]", li, key, lo, hi);
    *out = (int)v->valuedouble;
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
    int li = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, layers) {
        fm_layer *L = &a->layers[li];
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(l, "type");
        if (!cJSON_IsObject(l) || !cJSON_IsString(type)) {
            fm_seterr(err, "layer %d: must be an object with a \"type\" string", li);
            goto done;
        }
        int t = -1;
        for (int k = 0; k < 6; k++)
            if (strcmp(type->valuestring, type_names[k]) == 0) t = k;
        if (t < 0) {
            fm_seterr(err, "layer %d: unknown type \"%.40s\" (linear, conv2d, maxpool2d, relu, dropout, flatten)", li, type->valuestring);
            goto done;
        }
        L->type = (fm_ltype)t;
        if (L->type == FM_LINEAR || L->type == FM_CONV2D) {
            if (get_int(l, "out", -1, 1, 65536, &L->units, li, err)) goto done;
        }
        if (L->type == FM_CONV2D) {
            if (get_int(l, "kernel", 3, 1, 31, &L->kernel, li, err)) goto done;
            const cJSON *pad = cJSON_GetObjectItemCaseSensitive(l, "padding");
            if (pad && !(cJSON_IsString(pad) && (strcmp(pad->valuestring, "valid") == 0 ||
                                                  strcmp(pad->valuestring, "same") == 0))) {
                fm_seterr(err, "layer %d: \"padding\" must be \"valid\" or \"same\"", li);
                goto done;
            }
            L->same = pad && strcmp(pad->valuestring, "same") == 0;
            if (L->same && L->kernel % 2 == 0) {
                fm_seterr(err, "layer %d: \"same\" padding needs an odd kernel", li);
                goto done;
            }
        }
        if (L->type == FM_MAXPOOL2D) {
            if (get_int(l, "kernel", 2, 1, 15, &L->kernel, li, err)) goto done; /* arg-max is a uint8_t */
        }
        if (L->type == FM_DROPOUT) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(l, "p");
            if (!cJSON_IsNumber(p) || !(p->valuedouble >= 0.0 && p->valuedouble < 1.0)) {
                fm_seterr(err, "layer %d: dropout needs \"p\" in [0, 1)", li);
                goto done;
            }
            L->rate = (float)p->valuedouble;
        }
        li++;
    }
    a->n_layers = li;
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

int fm_arch_finalize(fm_arch *a, fm_error *err) {
    int c = a->in_c, h = a->in_h, w = a->in_w, flat = 0;
    size_t off = 0, max_size = (size_t)c * h * w;
    if (a->n_layers < 1 || a->n_layers > FM_MAX_LAYERS) return fm_seterr(err, "architecture has no layers");
    for (int i = 0; i < a->n_layers; i++) {
        fm_layer *L = &a->layers[i];
        L->in_c = c, L->in_h = h, L->in_w = w;
        L->n_w = L->n_b = 0;
        L->w_off = L->b_off = off;
        switch (L->type) {
        case FM_LINEAR:
            if (h != 1 || w != 1)
                return fm_seterr(err, "layer %d: linear needs a flat input; add a flatten layer before it", i);
            L->n_w = (size_t)L->units * (size_t)c;
            L->n_b = (size_t)L->units;
            c = L->units;
            break;
        case FM_CONV2D: {
            if (flat) return fm_seterr(err, "layer %d: conv2d needs an image input, not a flat vector", i);
            int p = L->same ? L->kernel / 2 : 0;
            int oh = h + 2 * p - L->kernel + 1, ow = w + 2 * p - L->kernel + 1;
            if (oh < 1 || ow < 1)
                return fm_seterr(err, "layer %d: %dx%d kernel does not fit a %dx%d input", i, L->kernel, L->kernel, h, w);
            L->n_w = (size_t)L->units * (size_t)c * (size_t)L->kernel * (size_t)L->kernel;
            L->n_b = (size_t)L->units;
            c = L->units, h = oh, w = ow;
            break;
        }
        case FM_MAXPOOL2D:
            if (flat) return fm_seterr(err, "layer %d: maxpool2d needs an image input", i);
            if (h / L->kernel < 1 || w / L->kernel < 1)
                return fm_seterr(err, "layer %d: %dx%d pooling does not fit a %dx%d input", i, L->kernel, L->kernel, h, w);
            h /= L->kernel, w /= L->kernel;
            break;
        case FM_FLATTEN:
            c = c * h * w, h = w = 1, flat = 1;
            break;
        case FM_RELU:
        case FM_DROPOUT:
            break;
        }
        L->b_off = off + L->n_w;
        off += L->n_w + L->n_b;
        L->out_c = c, L->out_h = h, L->out_w = w;
        L->in_size = (size_t)L->in_c * L->in_h * L->in_w;
        L->out_size = (size_t)c * h * w;
        if (L->out_size > max_size) max_size = L->out_size;
        if (off > ((size_t)1 << 28)) return fm_seterr(err, "layer %d: more than 2^28 parameters", i);
        if (L->out_size > ((size_t)1 << 24)) return fm_seterr(err, "layer %d: activation too large", i);
    }
    if (!(h == 1 && w == 1 && c == FM_N_CLASSES))
        return fm_seterr(err, "the last layer must output %d class scores (a flat vector), not %dx%dx%d",
                         FM_N_CLASSES, c, h, w);
    a->flat = flat;
    a->n_params = off;
    a->max_size = max_size;
    return 0;
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
        cJSON *o = cJSON_CreateObject();
        if (!o) goto oom_root;
        cJSON_AddItemToArray(layers, o);
        if (!cJSON_AddStringToObject(o, "type", type_names[L->type])) goto oom_root;
        if ((L->type == FM_LINEAR || L->type == FM_CONV2D) && !cJSON_AddNumberToObject(o, "out", L->units))
            goto oom_root;
        if ((L->type == FM_CONV2D || L->type == FM_MAXPOOL2D) && !cJSON_AddNumberToObject(o, "kernel", L->kernel))
            goto oom_root;
        if (L->type == FM_CONV2D && !cJSON_AddStringToObject(o, "padding", L->same ? "same" : "valid"))
            goto oom_root;
        if (L->type == FM_DROPOUT) {
            /* print the float's shortest decimal so 0.2f appears as 0.2 */
            char buf[32];
            snprintf(buf, sizeof buf, "%.7g", (double)L->rate);
            cJSON *p = cJSON_CreateRaw(buf);
            if (!p) goto oom_root;
            if (!cJSON_AddItemToObject(o, "p", p)) { /* its key copy can fail */
                cJSON_Delete(p);
                goto oom_root;
            }
        }
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

void fm_arch_summary(const fm_arch *a, FILE *f) {
    char shape[48], label[48], params[32];
    const char *rule = "_________________________________________________________________\n";
    const char *bold = "=================================================================\n";
    fprintf(f, "Model: \"%s\"\n%s", a->name, rule);
    fprintf(f, "%-30s%-24s%11s\n%s", " Layer (type)", "Output Shape", "Param #", bold);
    shape_str(shape, sizeof shape, a->in_c, a->in_h, a->in_w);
    if (a->in_h == 1 && a->in_w == 1) snprintf(shape, sizeof shape, "(None, %d)", a->in_c);
    fprintf(f, " %-29s%-24s%11s\n", "input (Input)", shape, "0");
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        snprintf(label, sizeof label, "%d (%s)", i, type_display[L->type]);
        shape_str(shape, sizeof shape, L->out_c, L->out_h, L->out_w);
        commas(params, sizeof params, L->n_w + L->n_b);
        fprintf(f, " %-29s%-24s%11s\n", label, shape, params);
    }
    commas(params, sizeof params, a->n_params);
    fprintf(f, "%sTotal params: %s\nTrainable params: %s\nNon-trainable params: 0\n%s", bold, params,
            params, rule);
}

size_t fm_arch_macs(const fm_arch *a) {
    size_t macs = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type == FM_LINEAR || L->type == FM_CONV2D) macs += L->n_w * (L->out_size / (size_t)L->units);
    }
    return macs;
}

void fm_arch_init_params(const fm_arch *a, float *params, fm_rng *rng) {
    for (int i = 0; i < a->n_layers; i++) {
        const fm_layer *L = &a->layers[i];
        if (L->type != FM_LINEAR && L->type != FM_CONV2D) continue;
        /* Glorot uniform as Keras: fan_in = in * receptive field, fan_out = out * receptive field */
        double rf = L->type == FM_CONV2D ? (double)L->kernel * L->kernel : 1.0;
        double fan_in = (double)L->in_c * rf, fan_out = (double)L->units * rf;
        float limit = (float)sqrt(6.0 / (fan_in + fan_out));
        float *w = params + L->w_off;
        for (size_t k = 0; k < L->n_w; k++) w[k] = (2.0f * fm_rng_uniform(rng) - 1.0f) * limit;
        memset(params + L->b_off, 0, L->n_b * sizeof(float));
    }
}
