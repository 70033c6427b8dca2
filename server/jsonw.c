/* jsonw.c - JSON text written straight into one buffer (see jsonw.h). */
#include "jsonw.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jw_init(jw *w, size_t cap) {
    memset(w, 0, sizeof *w);
    if (cap) {
        w->s = malloc(cap);
        if (!w->s) {
            w->failed = 1;
            return;
        }
        w->cap = cap;
        w->s[0] = '\0';
    }
}

void jw_free(jw *w) {
    free(w->s);
    memset(w, 0, sizeof *w);
}

char *jw_take(jw *w, size_t *len) {
    /* a failure has already freed the text; nothing written gives "" */
    char *s = w->failed ? NULL : w->s ? w->s : calloc(1, 1);
    if (len) *len = s ? w->len : 0;
    memset(w, 0, sizeof *w);
    return s;
}

/* Room for n more bytes and the terminating NUL; 0 on failure. */
static int grow(jw *w, size_t n) {
    if (w->failed) return 0;
    if (n < w->cap - w->len) return 1; /* cap > len always once allocated */
    size_t need = w->len + n + 1;
    if (need < w->len) goto fail; /* overflow */
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) goto fail;
        cap *= 2;
    }
    char *s = realloc(w->s, cap);
    if (!s) goto fail;
    w->s = s;
    w->cap = cap;
    return 1;
fail:
    free(w->s);
    w->s = NULL;
    w->len = w->cap = 0;
    w->failed = 1;
    return 0;
}

static void put(jw *w, const char *p, size_t n) {
    if (!grow(w, n)) return;
    memcpy(w->s + w->len, p, n);
    w->len += n;
    w->s[w->len] = '\0';
}

static void put_c(jw *w, char c) { put(w, &c, 1); }

static void pre_value(jw *w) {
    if (w->comma) put_c(w, ',');
}

static void open_c(jw *w, char c) {
    pre_value(w);
    put_c(w, c);
    w->comma = 0;
}

static void close_c(jw *w, char c) {
    put_c(w, c);
    w->comma = 1;
}

void jw_obj(jw *w) { open_c(w, '{'); }
void jw_obj_end(jw *w) { close_c(w, '}'); }
void jw_arr(jw *w) { open_c(w, '['); }
void jw_arr_end(jw *w) { close_c(w, ']'); }

static void put_string(jw *w, const char *s) {
    static const char hex[] = "0123456789abcdef";
    put_c(w, '"');
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        const unsigned char *run = p; /* a run that needs no escaping */
        while (*p >= 0x20 && *p != '"' && *p != '\\') p++;
        if (p > run) put(w, (const char *)run, (size_t)(p - run));
        if (!*p) break;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t n = 2;
        switch (*p) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[*p >> 4];
            e[5] = hex[*p & 15];
            n = 6;
        }
        put(w, e, n);
        p++;
    }
    put_c(w, '"');
}

void jw_key(jw *w, const char *key) {
    pre_value(w);
    put_string(w, key);
    put_c(w, ':');
    w->comma = 0;
}

void jw_str(jw *w, const char *s) {
    pre_value(w);
    put_string(w, s);
    w->comma = 1;
}

void jw_raw(jw *w, const char *text, size_t n) {
    pre_value(w);
    put(w, text, n);
    w->comma = 1;
}

size_t jw_fmt_int(long long v, char buf[24]) {
    char tmp[24], *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *--p = '-';
    size_t n = (size_t)(tmp + sizeof tmp - p);
    memcpy(buf, p, n);
    return n;
}

void jw_int(jw *w, long long v) {
    char buf[24];
    jw_raw(w, buf, jw_fmt_int(v, buf));
}

void jw_float(jw *w, float v) {
    char buf[32];
    if (isfinite(v))
        jw_raw(w, buf, jw_fmt_float(v, buf));
    else
        jw_raw(w, "null", 4);
}

void jw_bool(jw *w, int b) {
    if (b)
        jw_raw(w, "true", 4);
    else
        jw_raw(w, "false", 5);
}

char *jw_reserve(jw *w, size_t n) {
    pre_value(w);
    if (!grow(w, n)) return NULL;
    return w->s + w->len;
}

void jw_commit(jw *w, size_t n) {
    if (w->failed) return;
    w->len += n;
    w->s[w->len] = '\0';
    w->comma = 1;
}

/* ------------------------------------------------------- %.9g of a float
 *
 * |v| = m * 2^e exactly (m < 2^24).  Nine significant digits are
 * D = round(|v| * 10^k) with D in [10^8, 10^9): computed exactly in 128-bit
 * integers as m * 5^k * 2^(k+e), rounded half to even as glibc does in the
 * default rounding mode.  Covers 1e-36 < |v| < 1e9 (k from 0 to 44, so
 * m * 5^k < 2^128); anything else goes through snprintf. */

__extension__ typedef unsigned __int128 u128;

static const uint64_t pow5[28] = {
    1u, 5u, 25u, 125u,
    625u, 3125u, 15625u, 78125u,
    390625u, 1953125u, 9765625u, 48828125u,
    244140625u, 1220703125u, 6103515625ull, 30517578125ull,
    152587890625ull, 762939453125ull, 3814697265625ull, 19073486328125ull,
    95367431640625ull, 476837158203125ull, 2384185791015625ull, 11920928955078125ull,
    59604644775390625ull, 298023223876953125ull, 1490116119384765625ull, 7450580596923828125ull,
};

static size_t fmt_slow(float v, char buf[32]) { return (size_t)snprintf(buf, 32, "%.9g", (double)v); }

size_t jw_fmt_float(float v, char buf[32]) {
    static const uint64_t p10_8 = 100000000u, p10_9 = 1000000000u;
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint32_t ex = bits >> 23 & 0xff, fr = bits & 0x7fffff;
    if (ex == 0xff) return fmt_slow(v, buf);
    size_t n = 0;
    if (bits >> 31) buf[n++] = '-';
    if (ex == 0 && fr == 0) {
        buf[n++] = '0';
        buf[n] = '\0';
        return n;
    }
    uint32_t m = ex ? fr | 0x800000u : fr;
    int e = ex ? (int)ex - 150 : -149;
    /* floor(log2 |v|), then an estimate of floor(log10 |v|) (maybe one low) */
    int b = e + 31 - __builtin_clz(m);
    int p = b >= 0 ? b * 1233 >> 12 : -((-b * 1233 + 4095) >> 12);
    uint64_t D = 0;
    for (int tries = 0;; tries++) {
        int k = 8 - p;
        if (k < 0 || k > 44 || tries > 2) return fmt_slow(v, buf);
        /* m * 5^k < 2^24 * 5^44 < 2^127 */
        u128 N = (u128)m * pow5[k < 27 ? k : 27];
        if (k > 27) N *= pow5[k - 27];
        int sh = k + e;
        u128 q, rem = 0, half = 0;
        if (sh >= 0) {
            if (sh > 40) return fmt_slow(v, buf);
            q = N << sh;
        } else {
            int s = -sh;
            if (s >= 127) return fmt_slow(v, buf);
            q = N >> s;
            rem = N & (((u128)1 << s) - 1);
            half = (u128)1 << (s - 1);
        }
        if (q >= p10_9) {
            p++;
            continue;
        }
        if (q < p10_8) {
            p--;
            continue;
        }
        D = (uint64_t)q;
        if (sh < 0 && (rem > half || (rem == half && (D & 1)))) D++;
        if (D == p10_9) {
            D = p10_8;
            p++;
        }
        break;
    }
    char d[9];
    for (int i = 8; i >= 0; i--) {
        d[i] = (char)('0' + D % 10);
        D /= 10;
    }
    int nd = 9; /* significant digits left after dropping trailing zeros */
    while (nd > 1 && d[nd - 1] == '0') nd--;
    if (p < -4 || p >= 9) {
        buf[n++] = d[0];
        if (nd > 1) {
            buf[n++] = '.';
            memcpy(buf + n, d + 1, (size_t)nd - 1);
            n += (size_t)nd - 1;
        }
        buf[n++] = 'e';
        buf[n++] = p < 0 ? '-' : '+';
        int a = p < 0 ? -p : p;
        if (a >= 100) buf[n++] = (char)('0' + a / 100);
        buf[n++] = (char)('0' + a / 10 % 10);
        buf[n++] = (char)('0' + a % 10);
    } else if (p >= 0) {
        memcpy(buf + n, d, (size_t)p + 1);
        n += (size_t)p + 1;
        if (nd > p + 1) {
            buf[n++] = '.';
            memcpy(buf + n, d + p + 1, (size_t)(nd - p - 1));
            n += (size_t)(nd - p - 1);
        }
    } else {
        buf[n++] = '0';
        buf[n++] = '.';
        for (int i = 0; i < -p - 1; i++) buf[n++] = '0';
        memcpy(buf + n, d, (size_t)nd);
        n += (size_t)nd;
    }
    buf[n] = '\0';
    return n;
}
