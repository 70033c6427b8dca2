/* jsonw.h - a JSON writer that appends straight into one growing buffer.
 *
 * The classify answer is ~60 members; building it as a cJSON tree cost one
 * allocation per member plus a print pass, about a tenth of an mlp2
 * request.  This writes the text as it goes: no tree, one buffer (usually
 * one allocation per answer).  Commas are placed automatically: a key or a
 * value written after a value at the same level gets one.  After an
 * allocation failure the writer drops everything and jw_take returns NULL
 * (the caller answers 503), so call sites need no error checks.
 *
 *     jw w; jw_init(&w, 4096);
 *     jw_obj(&w); jw_key(&w, "model"); jw_str(&w, "cnn3"); jw_obj_end(&w);
 *     size_t n; char *s = jw_take(&w, &n);        // {"model":"cnn3"}
 *
 * jw_fmt_float prints a float exactly as printf("%.9g", (double)v) does
 * (nine significant digits: every float reads back as itself), ~20 times
 * faster than printf; tests/test_handlers.c compares the two on millions
 * of values. */
#ifndef FMNIST_JSONW_H
#define FMNIST_JSONW_H

#include <stddef.h>

typedef struct jw {
    char *s;      /* NUL-terminated text so far (owned) */
    size_t len, cap;
    int comma;    /* the last thing written was a value: the next needs ',' */
    int failed;   /* an allocation failed: writes are ignored */
} jw;

void jw_init(jw *w, size_t cap);  /* cap: first allocation (0: on first write) */
void jw_free(jw *w);
char *jw_take(jw *w, size_t *len); /* the text (caller frees), NULL after a failure; resets w */

void jw_obj(jw *w);
void jw_obj_end(jw *w);
void jw_arr(jw *w);
void jw_arr_end(jw *w);
void jw_key(jw *w, const char *key);       /* escaped like a string */
void jw_str(jw *w, const char *s);         /* JSON string, escaped */
void jw_raw(jw *w, const char *text, size_t n); /* a value written as is (valid JSON) */
void jw_int(jw *w, long long v);
void jw_float(jw *w, float v);             /* %.9g; NaN and infinities as null */
void jw_bool(jw *w, int b);
/* Reserves room for n more bytes of a value (a comma first when needed) and
 * returns where to write them; the caller then calls jw_commit with the
 * count written.  NULL after a failure. */
char *jw_reserve(jw *w, size_t n);
void jw_commit(jw *w, size_t n);

/* printf("%.9g", (double)v) for finite v, into buf; returns the length. */
size_t jw_fmt_float(float v, char buf[32]);
/* printf("%lld", v) into buf (no NUL); returns the length. */
size_t jw_fmt_int(long long v, char buf[24]);

#endif
