/* fm_common.c - class names and error formatting. */
#include "fm_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const fm_class_names[FM_N_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

int fm_seterr(fm_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void fm_err_prefix(fm_error *err, const char *prefix) {
    if (!err) return;
    char tmp[sizeof err->msg];
    size_t n = strlen(prefix), cap = sizeof tmp - 1;
    if (n > cap) n = cap;
    memcpy(tmp, prefix, n);
    if (n + 2 <= cap) {
        memcpy(tmp + n, ": ", 2);
        n += 2;
    }
    size_t m = strnlen(err->msg, sizeof err->msg);
    if (m > cap - n) m = cap - n;
    memcpy(tmp + n, err->msg, m);
    tmp[n + m] = '\0';
    memcpy(err->msg, tmp, sizeof tmp);
}
