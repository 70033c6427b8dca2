/* test_parse.c - table tests of server/parse.c, meant to run under
 * AddressSanitizer and UBSan.
 *
 * Job: every parser against good, partial and malformed input; every
 * truncation prefix of valid multipart bodies; a seeded mutation loop; large
 * adversarial bodies that a quadratic search would choke on; static-file
 * resolution against a real temporary directory with inside and outside
 * symlinks.  Inputs with lengths are copied into exactly-sized heap blocks,
 * so that a read one byte past the end is an ASan report, not luck.
 *
 * Leaves out: HTTP (no sockets here) and timing assertions (linearity is
 * checked by size: the big cases would time out if it were quadratic).
 *
 * Runs in Check's fork mode and with CK_FORK=no; exits non-zero on any
 * failure. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* POSIX 2008 + XSI: mkdtemp, symlink, realpath (glibc hides realpath
                             without it or _DEFAULT_SOURCE) */
#endif

#include "parse.h"

#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
/* A string literal and its length (it may contain NUL bytes). */
#define B(s) s, (sizeof(s) - 1)

/* Heap copy of exactly n bytes (ASan catches any read at p[n]). */
static uint8_t *dup_exact(const void *p, size_t n) {
    uint8_t *q = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(q);
    if (n) memcpy(q, p, n);
    return q;
}

static int span_eq(const void *p, size_t n, const char *s, size_t slen) {
    return n == slen && (n == 0 || memcmp(p, s, n) == 0);
}

/* Every non-NULL span of every part lies inside [body, body + len). */
static int parts_in_bounds(const px_part *parts, size_t n, const uint8_t *body, size_t len) {
    size_t i;
    for (i = 0; i < n; i++) {
        const px_part *p = &parts[i];
        const uint8_t *spans[4] = {(const uint8_t *)p->name, (const uint8_t *)p->filename,
                                   (const uint8_t *)p->content_type, p->data};
        size_t lens[4] = {p->name_len, p->filename_len, p->content_type_len, p->data_len};
        size_t k;
        if (!p->name || !p->data) return 0;
        for (k = 0; k < 4; k++) {
            if (!spans[k]) continue;
            if (spans[k] < body || spans[k] > body + len) return 0;
            if (lens[k] > (size_t)(body + len - spans[k])) return 0;
        }
    }
    return 1;
}

/* ======================================================================
 * status helpers, Content-Type, MIME types
 * ====================================================================== */

START_TEST(test_status) {
    ck_assert_int_eq(px_http_status(PX_OK), 200);
    ck_assert_int_eq(px_http_status(PX_ENOTFOUND), 404);
    ck_assert_int_eq(px_http_status(PX_EFORBIDDEN), 403);
    ck_assert_int_eq(px_http_status(PX_ETOOMANY), 413);
    ck_assert_int_eq(px_http_status(PX_ESYS), 500);
    ck_assert_int_eq(px_http_status(PX_EINVAL), 400);
    ck_assert_int_eq(px_http_status(PX_ETRUNCATED), 400);
    ck_assert_str_eq(px_strerror(PX_ETOOMANY), "too many multipart parts");
    ck_assert_str_eq(px_strerror(12345), "unknown status");
}
END_TEST

static const struct {
    const char *hv, *mime;
    int want;
} ct_cases[] = {
    {"application/json", "application/json", 1},
    {"Application/JSON; charset=utf-8", "application/json", 1},
    {"  application/json ;charset=x", "application/json", 1},
    {"application/json\t", "application/json", 1},
    {"multipart/form-data; boundary=x", "multipart/form-data", 1},
    {"application/jsonp", "application/json", 0},
    {"application/js", "application/json", 0},
    {"text/plain", "application/json", 0},
    {"", "application/json", 0},
    {";application/json", "application/json", 0},
    {NULL, "application/json", 0},
    {"application/json", "", 0},
};

START_TEST(test_content_type_is) {
    ck_assert_msg(px_content_type_is(ct_cases[_i].hv, ct_cases[_i].mime) == ct_cases[_i].want,
                  "case %d: '%s' vs '%s'", _i, ct_cases[_i].hv ? ct_cases[_i].hv : "(null)",
                  ct_cases[_i].mime);
}
END_TEST

static const struct {
    const char *path, *want;
} mime_cases[] = {
    {"index.html", "text/html; charset=utf-8"},
    {"/static/app.JS", "text/javascript; charset=utf-8"},
    {"a.mjs", "text/javascript; charset=utf-8"},
    {"style.css", "text/css; charset=utf-8"},
    {"model.json", "application/json"},
    {"app.js.map", "application/json"},
    {"/x/y/shoe.PNG", "image/png"},
    {"logo.svg", "image/svg+xml"},
    {"favicon.ico", "image/x-icon"},
    {"font.woff2", "font/woff2"},
    {"robots.txt", "text/plain; charset=utf-8"},
    {"noext", "application/octet-stream"},
    {".hidden", "application/octet-stream"},
    {"/dir.d/file", "application/octet-stream"},
    {"trailing.", "application/octet-stream"},
    {"a.exe", "application/octet-stream"},
    {"a.html5", "application/octet-stream"},
    {NULL, "application/octet-stream"},
};

START_TEST(test_mime_type) {
    ck_assert_str_eq(px_mime_type(mime_cases[_i].path), mime_cases[_i].want);
}
END_TEST

/* ======================================================================
 * multipart boundary
 * ====================================================================== */

#define B70 "0123456789012345678901234567890123456789012345678901234567890123456789"

static const struct {
    const char *ct;
    int rc;
    const char *want;
} boundary_cases[] = {
    {"multipart/form-data; boundary=abc", PX_OK, "abc"},
    {"multipart/form-data;boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", PX_OK,
     "----WebKitFormBoundary7MA4YWxkTrZu0gW"},
    {"multipart/form-data; BOUNDARY=\"a b:c\"", PX_OK, "a b:c"},
    {"multipart/form-data; Boundary=\"q\\\"\"", PX_EINVAL, ""}, /* '"' is not a bchar */
    {"multipart/form-data; boundary=\"a\\bc\"", PX_OK, "abc"},
    {"multipart/form-data; charset=utf-8; boundary=xyz ; foo=bar", PX_OK, "xyz"},
    {"multipart/form-data; foo=\"boundary=evil\"; boundary=good", PX_OK, "good"},
    {"multipart/form-data; boundary=" B70, PX_OK, B70},
    {"multipart/form-data; boundary=\"" B70 "\"", PX_OK, B70},
    {"multipart/form-data; boundary=" B70 "x", PX_ETOOLONG, ""},
    {"multipart/form-data", PX_ENOBOUNDARY, ""},
    {"multipart/form-data;", PX_ENOBOUNDARY, ""},
    {"multipart/form-data; boundary=", PX_ENOBOUNDARY, ""},
    {"multipart/form-data; boundary=\"\"", PX_ENOBOUNDARY, ""},
    {"multipart/form-data; myboundary=x", PX_ENOBOUNDARY, ""},
    {"multipart/form-data; boundary=\"abc", PX_EINVAL, ""},
    {"multipart/form-data; boundary=a; boundary=b", PX_EINVAL, ""},
    {"multipart/form-data; boundary=ab@c", PX_EINVAL, ""},
    {"multipart/form-data; boundary=\"ab \"", PX_EINVAL, ""},
    {"multipart/form-data; boundary=a b", PX_EINVAL, ""},
    {"multipart/form-data; =x", PX_EINVAL, ""},
};

START_TEST(test_boundary) {
    char out[PX_BOUNDARY_MAX + 1];
    int rc;
    memset(out, 'Z', sizeof out);
    rc = px_multipart_boundary(boundary_cases[_i].ct, out, sizeof out);
    ck_assert_msg(rc == boundary_cases[_i].rc, "case %d '%s': rc %d, want %d", _i,
                  boundary_cases[_i].ct, rc, boundary_cases[_i].rc);
    ck_assert_str_eq(out, boundary_cases[_i].want);
}
END_TEST

START_TEST(test_boundary_small_buffer) {
    char out[4];
    ck_assert_int_eq(px_multipart_boundary("multipart/form-data; boundary=abc", out, 4), PX_OK);
    ck_assert_str_eq(out, "abc");
    ck_assert_int_eq(px_multipart_boundary("multipart/form-data; boundary=abcd", out, 4),
                     PX_ETOOLONG);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(px_multipart_boundary(NULL, out, 4), PX_EINVAL);
    ck_assert_int_eq(px_multipart_boundary("multipart/form-data; boundary=a", NULL, 0), PX_EINVAL);
}
END_TEST

/* ======================================================================
 * multipart parse: table
 * ====================================================================== */

static const char ONE_FILE[] =
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"image\"; filename=\"shoe.png\"\r\n"
    "Content-Type: image/png\r\n"
    "\r\n"
    /* binary data with NULs, bare CR/LF and three delimiter look-alikes */
    "\x89PNG\r\n\x1a\n\0\0--XyZ\r\n--XyZa\r\n--XyZ-x"
    "\r\n--XyZ--\r\n";
static const char ONE_FILE_DATA[] = "\x89PNG\r\n\x1a\n\0\0--XyZ\r\n--XyZa\r\n--XyZ-x";

static const char THREE_FILES[] =
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
    "Content-Type: image/png\r\n"
    "\r\n"
    "AAA\r\n"
    "--XyZ\r\n"
    "content-disposition: FORM-DATA; filename=\"b.jpg\"; NAME=\"image\"\r\n"
    "\r\n"
    "BB\r\n"
    "--XyZ\r\n"
    "Content-Type:application/octet-stream  \r\n"
    "Content-Disposition: form-data; name=image; filename=\"c \\\"q\\\".bin\"\r\n"
    "X-Ignored: yes\r\n"
    "\r\n"
    "\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"top\"\r\n"
    "\r\n"
    "3\r\n"
    "--XyZ--";

typedef struct exp_part {
    const char *name, *filename, *ctype; /* NULL: expect absent */
    const char *data;
    size_t data_len;
} exp_part;

typedef struct mp_case {
    const char *label;
    const char *body;
    size_t len;
    const char *boundary;
    size_t max_parts;
    int rc;
    size_t n_parts;
    exp_part parts[4];
} mp_case;

#define BIG_FILLER                                                                           \
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234" \
    "567890123456789"

static const mp_case mp_cases[] = {
    {"one file", B(ONE_FILE), "XyZ", 4, PX_OK, 1,
     {{"image", "shoe.png", "image/png", B(ONE_FILE_DATA)}}},
    {"three files and a field", B(THREE_FILES), "XyZ", 4, PX_OK, 4,
     {{"image", "a.png", "image/png", B("AAA")},
      {"image", "b.jpg", NULL, B("BB")},
      {"image", "c \\\"q\\\".bin", "application/octet-stream", B("")},
      {"top", NULL, NULL, B("3")}}},
    {"no filename", B("--b\r\nContent-Disposition: form-data; name=\"top\"\r\n\r\n5\r\n--b--"), "b",
     4, PX_OK, 1, {{"top", NULL, NULL, B("5")}}},
    {"empty filename",
     B("--b\r\nContent-Disposition: form-data; name=f; filename=\"\"\r\n\r\n\r\n--b--"), "b",
     4, PX_OK, 1, {{"f", "", NULL, B("")}}},
    {"filename* ignored",
     B("--b\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''%e2%82%ac.png\r\n"
       "\r\nx\r\n--b--"),
     "b", 4, PX_OK, 1, {{"f", NULL, NULL, B("x")}}},
    {"boundary with bchars",
     B("--'()+_,-./:=? b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--'()+_,-./:=? b--"),
     "'()+_,-./:=? b", 4, PX_OK, 1, {{"a", NULL, NULL, B("v")}}},
    {"preamble and epilogue",
     B("This is the preamble.\r\n--b\r\nContent-Disposition: form-data; name=a\r\n\r\n"
       "v\r\n--b--\r\nepilogue, ignored\r\n--b\r\ngarbage"),
     "b", 4, PX_OK, 1, {{"a", NULL, NULL, B("v")}}},
    {"preamble with look-alike",
     B("--bX\r\n--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b--"), "b", 4, PX_OK, 1,
     {{"a", NULL, NULL, B("v")}}},
    {"transport padding",
     B("--b \t\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b  \r\n"
       "Content-Disposition: form-data; name=c\r\n\r\nw\r\n--b--"),
     "b", 4, PX_OK, 2, {{"a", NULL, NULL, B("v")}, {"c", NULL, NULL, B("w")}}},
    {"folded header",
     B("--b\r\nContent-Disposition: form-data;\r\n\tname=\"a\";\r\n filename=\"f.png\"\r\n"
       "\r\nv\r\n--b--"),
     "b", 4, PX_OK, 1, {{"a", "f.png", NULL, B("v")}}},
    {"headers then delimiter, no data",
     B("--b\r\nContent-Disposition: form-data; name=a\r\n\r\n--b--"), "b", 4, PX_OK, 1,
     {{"a", NULL, NULL, B("")}}},
    {"zero parts", B("--b--\r\n"), "b", 4, PX_OK, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"zero parts, max 0", B("--b--"), "b", 0, PX_OK, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"unknown parameters",
     B("--b\r\nContent-Disposition: form-data; x=1; name=a; y=\"2\";\r\n\r\nv\r\n--b--"), "b",
     4, PX_OK, 1, {{"a", NULL, NULL, B("v")}}},

    /* errors */
    {"LF-only line endings (rejected)",
     B("--b\nContent-Disposition: form-data; name=a\n\nv\n--b--\n"), "b", 4, PX_EMALFORMED, 0,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"LF-only headers after CRLF delimiter",
     B("--b\r\nContent-Disposition: form-data; name=a\n\nv\r\n--b--"), "b", 4, PX_EMALFORMED, 0,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"bare LF after later delimiter",
     B("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b\nX"), "b", 4, PX_EMALFORMED,
     0, {{NULL, NULL, NULL, NULL, 0}}},
    {"missing closing delimiter",
     B("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n"), "b", 4, PX_ETRUNCATED, 0,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"ends after delimiter line",
     B("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--b\r\n"), "b", 4, PX_ETRUNCATED,
     1, {{NULL, NULL, NULL, NULL, 0}}},
    {"boundary not in body",
     B("--other\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--other--"), "b",
     4, PX_ENOBOUNDARY, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"empty body", B(""), "b", 4, PX_ENOBOUNDARY, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"empty boundary", B("----\r\n"), "", 4, PX_ENOBOUNDARY, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"boundary too long", B("--x"), B70 "x", 4, PX_ETOOLONG, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"more parts than max", B(THREE_FILES), "XyZ", 2, PX_ETOOMANY, 2,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"any part with max 0", B(ONE_FILE), "XyZ", 0, PX_ETOOMANY, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"no Content-Disposition", B("--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--"), "b", 4,
     PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"no headers at all", B("--b\r\n\r\nv\r\n--b--"), "b", 4, PX_EMALFORMED, 0,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"no name", B("--b\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"empty unquoted name", B("--b\r\nContent-Disposition: form-data; name=\r\n\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"not form-data", B("--b\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--b--"), "b", 4,
     PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"unterminated quote",
     B("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--b--"), "b", 4, PX_EMALFORMED,
     0, {{NULL, NULL, NULL, NULL, 0}}},
    {"escape at end of quote",
     B("--b\r\nContent-Disposition: form-data; name=\"a\\\"\r\n\r\nv\r\n--b--"), "b", 4,
     PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"repeated name", B("--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"repeated Content-Disposition",
     B("--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n"
       "\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"repeated Content-Type",
     B("--b\r\nContent-Disposition: form-data; name=a\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n"
       "\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"header without colon", B("--b\r\nContent-Disposition form-data; name=a\r\n\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"space before colon", B("--b\r\nContent-Disposition : form-data; name=a\r\n\r\nv\r\n--b--"),
     "b", 4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"continuation first", B("--b\r\n name=a\r\n\r\nv\r\n--b--"), "b", 4, PX_EMALFORMED, 0,
     {{NULL, NULL, NULL, NULL, 0}}},
    {"CR without LF in headers",
     B("--b\r\nContent-Disposition: form-data; name=a\rX\r\n\r\nv\r\n--b--"), "b", 4,
     PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"NUL in headers", B("--b\r\nContent-Disposition: form-data; name=a\0\r\n\r\nv\r\n--b--"), "b",
     4, PX_EMALFORMED, 0, {{NULL, NULL, NULL, NULL, 0}}},
    {"garbage after parameters",
     B("--b\r\nContent-Disposition: form-data; name=a b\r\n\r\nv\r\n--b--"), "b", 4, PX_EMALFORMED,
     0, {{NULL, NULL, NULL, NULL, 0}}},
    {"boundary is a prefix only",
     B("--bb\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--bb--"), "b",
     4, PX_ENOBOUNDARY, 0, {{NULL, NULL, NULL, NULL, 0}}},
};

START_TEST(test_multipart_table) {
    const mp_case *tc = &mp_cases[_i];
    uint8_t *body = dup_exact(tc->body, tc->len);
    px_part parts[4];
    size_t n = 99, k;
    char err[160];
    int rc;

    memset(parts, 0xAB, sizeof parts);
    rc = px_multipart_parse(body, tc->len, tc->boundary, parts, tc->max_parts, &n, err, sizeof err);
    ck_assert_msg(rc == tc->rc, "%s: rc %d (%s), want %d", tc->label, rc, err, tc->rc);
    ck_assert_msg(n == tc->n_parts, "%s: n_parts %zu, want %zu", tc->label, n, tc->n_parts);
    if (rc != PX_OK) {
        ck_assert_msg(err[0] != '\0', "%s: no error message", tc->label);
        free(body);
        return;
    }
    ck_assert_str_eq(err, "");
    ck_assert(parts_in_bounds(parts, n, body, tc->len));
    for (k = 0; k < n; k++) {
        const exp_part *e = &tc->parts[k];
        const px_part *p = &parts[k];
        ck_assert_msg(span_eq(p->name, p->name_len, e->name, strlen(e->name)),
                      "%s: part %zu name '%.*s'", tc->label, k, (int)p->name_len, p->name);
        if (e->filename)
            ck_assert_msg(p->filename && span_eq(p->filename, p->filename_len, e->filename,
                                                 strlen(e->filename)),
                          "%s: part %zu filename", tc->label, k);
        else
            ck_assert_msg(p->filename == NULL && p->filename_len == 0,
                          "%s: part %zu unexpected filename", tc->label, k);
        if (e->ctype)
            ck_assert_msg(p->content_type && span_eq(p->content_type, p->content_type_len,
                                                     e->ctype, strlen(e->ctype)),
                          "%s: part %zu content type '%.*s'", tc->label, k,
                          (int)p->content_type_len, p->content_type ? p->content_type : "");
        else
            ck_assert_msg(p->content_type == NULL, "%s: part %zu unexpected content type",
                          tc->label, k);
        ck_assert_msg(span_eq(p->data, p->data_len, e->data, e->data_len),
                      "%s: part %zu data (%zu bytes, want %zu)", tc->label, k, p->data_len,
                      e->data_len);
    }
    free(body);
}
END_TEST

START_TEST(test_multipart_bad_args) {
    px_part parts[1];
    size_t n;
    const uint8_t body[] = "--b--";
    ck_assert_int_eq(px_multipart_parse(NULL, 5, "b", parts, 1, &n, NULL, 0), PX_EINVAL);
    ck_assert_int_eq(px_multipart_parse(body, 5, "b", NULL, 1, &n, NULL, 0), PX_EINVAL);
    ck_assert_int_eq(px_multipart_parse(body, 5, "b", parts, 1, NULL, NULL, 0), PX_EINVAL);
    ck_assert_int_eq(px_multipart_parse(body, 5, NULL, parts, 1, &n, NULL, 0), PX_ENOBOUNDARY);
    ck_assert_int_eq(px_multipart_parse(NULL, 0, "b", NULL, 0, &n, NULL, 0), PX_ENOBOUNDARY);
    /* a tiny error buffer is filled, truncated, terminated */
    {
        char err[4] = "zzz";
        ck_assert_int_eq(px_multipart_parse(body, 3, "b", parts, 1, &n, err, sizeof err),
                         PX_ETRUNCATED);
        ck_assert_uint_eq(strlen(err), 3);
    }
}
END_TEST

START_TEST(test_unquote) {
    char out[16];
    size_t n = 99;
    ck_assert_int_eq(px_unquote(B("c \\\"q\\\".bin"), out, sizeof out, &n), PX_OK);
    ck_assert_str_eq(out, "c \"q\".bin");
    ck_assert_uint_eq(n, 9);
    ck_assert_int_eq(px_unquote(B("a\\\\b\\"), out, sizeof out, &n), PX_OK);
    ck_assert_str_eq(out, "a\\b\\");
    ck_assert_int_eq(px_unquote(B(""), out, sizeof out, &n), PX_OK);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(px_unquote(B("0123456789abcdef"), out, sizeof out, &n), PX_ETOOLONG);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(px_unquote(B("0123456789abcde"), out, sizeof out, NULL), PX_OK);
    ck_assert_int_eq(px_unquote(B("x"), out, 0, &n), PX_ETOOLONG);
    ck_assert_int_eq(px_unquote(B(""), out, 0, &n), PX_ETOOLONG);
}
END_TEST

/* ======================================================================
 * multipart parse: every truncation prefix, mutations, big inputs
 * ====================================================================== */

/* Index just past the last "--XyZ--" in s. */
static size_t close_end(const char *s, size_t len) {
    static const char close[] = "--XyZ--";
    size_t i, end = 0;
    for (i = 0; i + 7 <= len; i++) {
        if (memcmp(s + i, close, 7) == 0) end = i + 7;
    }
    return end;
}

static void check_prefixes(const char *full, size_t len, size_t want_n) {
    size_t L, cend = close_end(full, len), open_len = strlen("--XyZ");
    px_part parts[8];
    ck_assert_uint_gt(cend, 0);
    for (L = 0; L <= len; L++) {
        uint8_t *body = dup_exact(full, L);
        size_t n = 99;
        char err[128];
        int rc = px_multipart_parse(body, L, "XyZ", parts, 8, &n, err, sizeof err);
        if (L < open_len)
            ck_assert_msg(rc == PX_ENOBOUNDARY, "prefix %zu: rc %d", L, rc);
        else if (L < cend)
            ck_assert_msg(rc == PX_ETRUNCATED, "prefix %zu: rc %d (%s)", L, rc, err);
        else {
            ck_assert_msg(rc == PX_OK, "prefix %zu: rc %d (%s)", L, rc, err);
            ck_assert_uint_eq(n, want_n);
            ck_assert(parts_in_bounds(parts, n, body, L));
        }
        free(body);
    }
}

START_TEST(test_multipart_prefixes_one) { check_prefixes(B(ONE_FILE), 1); }
END_TEST

START_TEST(test_multipart_prefixes_three) { check_prefixes(B(THREE_FILES), 4); }
END_TEST

static uint64_t rng_next(uint64_t *s) { /* xorshift64 */
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Random edits of a valid body: whatever comes back must be a known code,
 * and an accepted body's spans must stay inside it. */
START_TEST(test_multipart_mutations) {
    static const char alphabet[] = "\r\n-\";=: \\Xa";
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    uint8_t work[sizeof THREE_FILES + 64];
    px_part parts[8];
    int iter, n_ok = 0;
    for (iter = 0; iter < 20000; iter++) {
        size_t len = sizeof THREE_FILES - 1, n;
        int ops = 1 + (int)(rng_next(&seed) % 4), k, rc;
        uint8_t *body;
        memcpy(work, THREE_FILES, len);
        for (k = 0; k < ops; k++) {
            size_t at = (size_t)(rng_next(&seed) % (len + 1));
            uint64_t r = rng_next(&seed);
            uint8_t ch = (r & 1) ? (uint8_t)(r >> 8)
                                 : (uint8_t)alphabet[(r >> 8) % (sizeof alphabet - 1)];
            switch ((r >> 4) % 4) {
            case 0: /* overwrite */
                if (at < len) work[at] = ch;
                break;
            case 1: /* insert */
                if (len < sizeof work) {
                    memmove(work + at + 1, work + at, len - at);
                    work[at] = ch;
                    len++;
                }
                break;
            case 2: /* delete */
                if (at < len) {
                    memmove(work + at, work + at + 1, len - at - 1);
                    len--;
                }
                break;
            default: /* truncate */
                len = at;
                break;
            }
        }
        body = dup_exact(work, len);
        rc = px_multipart_parse(body, len, "XyZ", parts, 8, &n, NULL, 0);
        ck_assert_msg(rc == PX_OK || rc == PX_ETRUNCATED || rc == PX_EMALFORMED ||
                          rc == PX_ENOBOUNDARY,
                      "iteration %d: rc %d", iter, rc);
        if (rc == PX_OK) {
            n_ok++;
            ck_assert(n <= 8);
            ck_assert(parts_in_bounds(parts, n, body, len));
        }
        free(body);
    }
    ck_assert_int_gt(n_ok, 100); /* the loop explores both outcomes */
}
END_TEST

/* 50 000 parts: a parser that rescans from the start per part is quadratic. */
START_TEST(test_multipart_many_parts) {
    static const char part[] = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n";
    const size_t n_want = 50000, plen = sizeof part - 1;
    size_t len = n_want * plen + 5, i, n;
    char *buf = malloc(len);
    uint8_t *body;
    px_part *parts = malloc(n_want * sizeof *parts);
    ck_assert_ptr_nonnull(buf);
    ck_assert_ptr_nonnull(parts);
    for (i = 0; i < n_want; i++) memcpy(buf + i * plen, part, plen);
    memcpy(buf + n_want * plen, "--b--", 5);
    body = dup_exact(buf, len);
    ck_assert_int_eq(px_multipart_parse(body, len, "b", parts, n_want, &n, NULL, 0), PX_OK);
    ck_assert_uint_eq(n, n_want);
    ck_assert(span_eq(parts[n_want - 1].data, parts[n_want - 1].data_len, "v", 1));
    ck_assert_int_eq(px_multipart_parse(body, len, "b", parts, n_want - 1, &n, NULL, 0),
                     PX_ETOOMANY);
    ck_assert_uint_eq(n, n_want - 1);
    free(body);
    free(buf);
    free(parts);
}
END_TEST

/* 4 MiB of near-misses and look-alikes of a 70-byte boundary inside one part:
 * a naive search is O(len * 70) here, a restarting search worse. */
START_TEST(test_multipart_adversarial_data) {
    char bnd[PX_BOUNDARY_MAX + 1];
    static const char head[] = "Content-Disposition: form-data; name=\"f\"\r\n\r\n";
    size_t cap = 4u << 20, len = 0, n;
    char *buf = malloc(cap + 256);
    uint8_t *body;
    px_part part;
    int flip = 0;
    ck_assert_ptr_nonnull(buf);
    memset(bnd, 'a', PX_BOUNDARY_MAX);
    bnd[PX_BOUNDARY_MAX] = '\0';
    len += (size_t)sprintf(buf + len, "--%s\r\n%s", bnd, head);
    while (len < cap) {
        /* alternately: 69 a's then 'b' (near miss), full boundary then 'x' (look-alike) */
        memcpy(buf + len, "\r\n--", 4);
        len += 4;
        memset(buf + len, 'a', PX_BOUNDARY_MAX);
        len += PX_BOUNDARY_MAX;
        buf[len - (flip ? 0 : 1)] = flip ? 'x' : 'b';
        len += flip ? 1 : 0;
        flip = !flip;
    }
    len += (size_t)sprintf(buf + len, "\r\n--%s--", bnd);
    body = dup_exact(buf, len);
    ck_assert_int_eq(px_multipart_parse(body, len, bnd, &part, 1, &n, NULL, 0), PX_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_gt(part.data_len, cap - 1000);
    free(body);
    free(buf);
}
END_TEST

START_TEST(test_multipart_header_limit) {
    /* 8 KiB of header: refused as malformed, not scanned forever */
    size_t fill = PX_MULTIPART_MAX_HEADER + 100, len, n;
    char *buf = malloc(fill + 200);
    uint8_t *body;
    px_part part;
    ck_assert_ptr_nonnull(buf);
    len = (size_t)sprintf(buf, "--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    memset(buf + len, 'p', fill);
    len += fill;
    len += (size_t)sprintf(buf + len, "\r\n\r\nv\r\n--b--");
    body = dup_exact(buf, len);
    ck_assert_int_eq(px_multipart_parse(body, len, "b", &part, 1, &n, NULL, 0), PX_EMALFORMED);
    free(body);
    /* just under the limit is fine */
    len = (size_t)sprintf(buf, "--b\r\nContent-Disposition: form-data; name=a\r\nX-Pad: ");
    memset(buf + len, 'p', 8000);
    len += 8000;
    len += (size_t)sprintf(buf + len, "\r\n\r\nv\r\n--b--");
    body = dup_exact(buf, len);
    ck_assert_int_eq(px_multipart_parse(body, len, "b", &part, 1, &n, NULL, 0), PX_OK);
    free(body);
    free(buf);
}
END_TEST

/* ======================================================================
 * base64 and data URLs
 * ====================================================================== */

static const struct {
    const char *in;
    size_t len;
    int rc;
    const char *out;
    size_t out_len;
} b64_cases[] = {
    /* RFC 4648 section 10 */
    {B(""), PX_OK, B("")},
    {B("Zg=="), PX_OK, B("f")},
    {B("Zm8="), PX_OK, B("fo")},
    {B("Zm9v"), PX_OK, B("foo")},
    {B("Zm9vYg=="), PX_OK, B("foob")},
    {B("Zm9vYmE="), PX_OK, B("fooba")},
    {B("Zm9vYmFy"), PX_OK, B("foobar")},
    /* padding optional */
    {B("Zg"), PX_OK, B("f")},
    {B("Zm8"), PX_OK, B("fo")},
    {B("Zm9vYg"), PX_OK, B("foob")},
    /* both alphabets */
    {B("+/+/"), PX_OK, B("\xfb\xff\xbf")},
    {B("-_-_"), PX_OK, B("\xfb\xff\xbf")},
    {B("-/+_"), PX_OK, B("\xfb\xff\xbf")},
    {B("AAEC"), PX_OK, B("\x00\x01\x02")},
    /* whitespace anywhere */
    {B("Zm9v\r\nYmFy\n"), PX_OK, B("foobar")},
    {B(" Z m 9 v\tY g = = \n"), PX_OK, B("foob")},
    {B("\n"), PX_OK, B("")},
    /* rejected */
    {B("Zm9v!"), PX_EINVAL, B("")},
    {B("Zm9v\0"), PX_EINVAL, B("")},
    {B("Zm9v\xff"), PX_EINVAL, B("")},
    {B("Z"), PX_EINVAL, B("")},
    {B("Zm9vY"), PX_EINVAL, B("")},
    {B("Zg="), PX_EINVAL, B("")},
    {B("Zg==="), PX_EINVAL, B("")},
    {B("Zm8=="), PX_EINVAL, B("")},
    {B("="), PX_EINVAL, B("")},
    {B("===="), PX_EINVAL, B("")},
    {B("Z==="), PX_EINVAL, B("")},
    {B("Zg=a"), PX_EINVAL, B("")},
    {B("Zg==Zg=="), PX_EINVAL, B("")},
    {B("Zh=="), PX_EINVAL, B("")}, /* unused bits set */
    {B("Zm9="), PX_EINVAL, B("")},
    {B("Zm9vYg==\n"), PX_OK, B("foob")},
};

START_TEST(test_b64) {
    char *in = (char *)dup_exact(b64_cases[_i].in, b64_cases[_i].len);
    uint8_t out[16];
    size_t n = 99;
    int rc = px_b64_decode(in, b64_cases[_i].len, out, sizeof out, &n);
    ck_assert_msg(rc == b64_cases[_i].rc, "case %d: rc %d want %d", _i, rc, b64_cases[_i].rc);
    if (rc == PX_OK) {
        ck_assert(span_eq(out, n, b64_cases[_i].out, b64_cases[_i].out_len));
        ck_assert_uint_ge(px_b64_decoded_max(b64_cases[_i].len), n);
    } else {
        ck_assert_uint_eq(n, 0);
    }
    free(in);
}
END_TEST

START_TEST(test_b64_sizes) {
    uint8_t out[6];
    char buf[16];
    size_t n;
    ck_assert_uint_eq(px_b64_decoded_max(0), 0);
    ck_assert_uint_eq(px_b64_decoded_max(1), 0);
    ck_assert_uint_eq(px_b64_decoded_max(2), 1);
    ck_assert_uint_eq(px_b64_decoded_max(3), 2);
    ck_assert_uint_eq(px_b64_decoded_max(4), 3);
    ck_assert_uint_eq(px_b64_decoded_max(8), 6);
    ck_assert_uint_eq(px_b64_decoded_max(SIZE_MAX), SIZE_MAX / 4 * 3 + 2);
    /* exact fit, one short (full quantum and partial quantum) */
    ck_assert_int_eq(px_b64_decode("Zm9vYmFy", 8, out, 6, &n), PX_OK);
    ck_assert_int_eq(px_b64_decode("Zm9vYmFy", 8, out, 5, &n), PX_ETOOLONG);
    ck_assert_int_eq(px_b64_decode("Zm9vYg", 6, out, 4, &n), PX_OK);
    ck_assert_int_eq(px_b64_decode("Zm9vYg", 6, out, 3, &n), PX_ETOOLONG);
    ck_assert_int_eq(px_b64_decode("Zm9vYmE", 7, out, 4, &n), PX_ETOOLONG);
    ck_assert_int_eq(px_b64_decode("", 0, NULL, 0, &n), PX_OK);
    ck_assert_int_eq(px_b64_decode("Zg", 2, NULL, 0, &n), PX_ETOOLONG);
    ck_assert_int_eq(px_b64_decode("Zg", 2, out, 6, NULL), PX_EINVAL);
    ck_assert_int_eq(px_b64_decode(NULL, 2, out, 6, &n), PX_EINVAL);
    /* in place */
    strcpy(buf, "Zm9v YmFy\nYQ==");
    ck_assert_int_eq(px_b64_decode(buf, strlen(buf), (uint8_t *)buf, sizeof buf, &n), PX_OK);
    ck_assert(span_eq(buf, n, "foobara", 7));
}
END_TEST

static const struct {
    const char *in;
    size_t len;
    int rc;
    const char *payload; /* NULL: the input itself */
    const char *mime;    /* NULL: none reported */
} durl_cases[] = {
    {B("data:image/png;base64,iVBORw0K"), PX_OK, "iVBORw0K", "image/png"},
    {B("DATA:Image/PNG;BASE64,AAAA"), PX_OK, "AAAA", "Image/PNG"},
    {B("data:;base64,QQ=="), PX_OK, "QQ==", ""},
    {B("data:image/png;name=a.png;base64,"), PX_OK, "", "image/png"},
    {B("iVBORw0KGgo"), PX_OK, NULL, NULL},
    {B("dat"), PX_OK, NULL, NULL},
    {B(""), PX_OK, NULL, NULL},
    {B("data:image/png,iVBOR"), PX_EINVAL, NULL, NULL},
    {B("data:image/png;base64"), PX_EINVAL, NULL, NULL},
    {B("data:"), PX_EINVAL, NULL, NULL},
    {B("data:base64,AAAA"), PX_EINVAL, NULL, NULL},
};

START_TEST(test_data_url) {
    char *in = (char *)dup_exact(durl_cases[_i].in, durl_cases[_i].len);
    const char *payload = NULL, *mime = (const char *)1;
    size_t plen = 99, mlen = 99;
    int rc = px_strip_data_url(in, durl_cases[_i].len, &payload, &plen, &mime, &mlen);
    ck_assert_msg(rc == durl_cases[_i].rc, "case %d: rc %d", _i, rc);
    if (rc != PX_OK) {
        free(in);
        return;
    }
    if (durl_cases[_i].payload) {
        ck_assert(span_eq(payload, plen, durl_cases[_i].payload, strlen(durl_cases[_i].payload)));
    } else {
        ck_assert_ptr_eq(payload, in);
        ck_assert_uint_eq(plen, durl_cases[_i].len);
    }
    if (durl_cases[_i].mime)
        ck_assert(mime && span_eq(mime, mlen, durl_cases[_i].mime, strlen(durl_cases[_i].mime)));
    else
        ck_assert(mime == NULL && mlen == 0);
    free(in);
}
END_TEST

START_TEST(test_data_url_then_decode) {
    static const char url[] = "data:image/png;base64,iVBORw0KGgo=";
    const char *p;
    size_t plen, n;
    uint8_t out[16];
    ck_assert_int_eq(px_strip_data_url(url, sizeof url - 1, &p, &plen, NULL, NULL), PX_OK);
    ck_assert_int_eq(px_b64_decode(p, plen, out, sizeof out, &n), PX_OK);
    ck_assert(span_eq(out, n, "\x89PNG\r\n\x1a\n", 8));
    ck_assert_int_eq(px_strip_data_url(NULL, 3, &p, &plen, NULL, NULL), PX_EINVAL);
    ck_assert_int_eq(px_strip_data_url(url, 3, NULL, &plen, NULL, NULL), PX_EINVAL);
}
END_TEST

/* ======================================================================
 * query strings, paths, numbers
 * ====================================================================== */

static const struct {
    const char *query, *key;
    size_t outsz;
    int rc;
    const char *want;
} query_cases[] = {
    {"a=1&b=2", "b", 16, PX_OK, "2"},
    {"?top=5", "top", 16, PX_OK, "5"},
    {"q=hello+world%21", "q", 16, PX_OK, "hello world!"},
    {"q=%E2%82%ac", "q", 16, PX_OK, "\xe2\x82\xac"},
    {"a%20b=c&x=y", "a b", 16, PX_OK, "c"},
    {"a+b=c", "a b", 16, PX_OK, "c"},
    {"%61=lower", "a", 16, PX_OK, "lower"},
    {"debug&x=1", "debug", 16, PX_OK, ""},
    {"x=1&debug", "debug", 16, PX_OK, ""},
    {"debug=", "debug", 16, PX_OK, ""},
    {"a=1&a=2", "a", 16, PX_OK, "1"},
    {"ab=1&a=2", "a", 16, PX_OK, "2"},
    {"a=1&&b=2", "b", 16, PX_OK, "2"},
    {"%zz=1&a=2", "a", 16, PX_OK, "2"},
    {"a=x=y", "a", 16, PX_OK, "x=y"},
    {"A=1", "a", 16, PX_ENOTFOUND, ""},
    {"a=1", "b", 16, PX_ENOTFOUND, ""},
    {"", "a", 16, PX_ENOTFOUND, ""},
    {"?", "a", 16, PX_ENOTFOUND, ""},
    {"a=%zz", "a", 16, PX_EINVAL, ""},
    {"a=%4", "a", 16, PX_EINVAL, ""},
    {"a=%", "a", 16, PX_EINVAL, ""},
    {"a=%00", "a", 16, PX_EINVAL, ""},
    {"a=0123456789", "a", 11, PX_OK, "0123456789"},
    {"a=0123456789", "a", 10, PX_ETOOLONG, ""},
    {"a=1", "", 16, PX_EINVAL, ""},
    {"a=1", "a", 0, PX_EINVAL, ""},
};

START_TEST(test_query) {
    char out[16];
    int rc;
    memset(out, 'Z', sizeof out);
    rc = px_query_get(query_cases[_i].query, query_cases[_i].key, out, query_cases[_i].outsz);
    ck_assert_msg(rc == query_cases[_i].rc, "case %d '%s' key '%s': rc %d, want %d", _i,
                  query_cases[_i].query, query_cases[_i].key, rc, query_cases[_i].rc);
    if (query_cases[_i].outsz) ck_assert_str_eq(out, query_cases[_i].want);
}
END_TEST

static const struct {
    const char *in;
    size_t outsz;
    int rc;
    const char *want;
} path_cases[] = {
    {"/a%20b", 16, PX_OK, "/a b"},
    {"/a+b", 16, PX_OK, "/a+b"},
    {"/%2e%2E/%2f", 16, PX_OK, "/../\x2f"},
    {"/%C3%A9", 16, PX_OK, "/\xc3\xa9"},
    {"", 16, PX_OK, ""},
    {"/%00", 16, PX_EINVAL, ""},
    {"/a%00b", 16, PX_EINVAL, ""},
    {"/%zz", 16, PX_EINVAL, ""},
    {"/%4", 16, PX_EINVAL, ""},
    {"/%", 16, PX_EINVAL, ""},
    {"/0123456789abcd", 16, PX_OK, "/0123456789abcd"},
    {"/0123456789abcde", 16, PX_ETOOLONG, ""},
    {"/", 0, PX_ETOOLONG, ""},
};

START_TEST(test_path_decode) {
    char out[16];
    int rc = px_path_decode(path_cases[_i].in, out, path_cases[_i].outsz);
    ck_assert_msg(rc == path_cases[_i].rc, "case %d '%s': rc %d", _i, path_cases[_i].in, rc);
    if (path_cases[_i].outsz) ck_assert_str_eq(out, path_cases[_i].want);
}
END_TEST

static const struct {
    const char *s;
    int min, max;
    int rc, want;
} int_cases[] = {
    {"0", 0, 10, PX_OK, 0},
    {"42", 0, 100, PX_OK, 42},
    {"007", 0, 10, PX_OK, 7},
    {"-1", -5, 5, PX_OK, -1},
    {"-0", 0, 0, PX_OK, 0},
    {"+7", 0, 10, PX_OK, 7},
    {"2147483647", INT_MIN, INT_MAX, PX_OK, INT_MAX},
    {"-2147483648", INT_MIN, INT_MAX, PX_OK, INT_MIN},
    {"2147483648", INT_MIN, INT_MAX, PX_ERANGE, 0},
    {"-2147483649", INT_MIN, INT_MAX, PX_ERANGE, 0},
    {"99999999999999999999999999", INT_MIN, INT_MAX, PX_ERANGE, 0},
    {"-1", 0, 10, PX_ERANGE, 0},
    {"11", 1, 10, PX_ERANGE, 0},
    {"0", 1, 10, PX_ERANGE, 0},
    {"", 0, 10, PX_EINVAL, 0},
    {"-", 0, 10, PX_EINVAL, 0},
    {"+", 0, 10, PX_EINVAL, 0},
    {"12abc", 0, 100, PX_EINVAL, 0},
    {"999999999999999999999x", 0, 100, PX_EINVAL, 0},
    {" 12", 0, 100, PX_EINVAL, 0},
    {"12 ", 0, 100, PX_EINVAL, 0},
    {"0x10", 0, 100, PX_EINVAL, 0},
    {"1e3", 0, 10000, PX_EINVAL, 0},
    {"--1", -10, 10, PX_EINVAL, 0},
    {"1.5", 0, 10, PX_EINVAL, 0},
    {"5", 10, 1, PX_EINVAL, 0},
};

START_TEST(test_parse_int) {
    int out = 12345;
    int rc = px_parse_int(int_cases[_i].s, int_cases[_i].min, int_cases[_i].max, &out);
    ck_assert_msg(rc == int_cases[_i].rc, "case %d '%s': rc %d", _i, int_cases[_i].s, rc);
    ck_assert_int_eq(out, rc == PX_OK ? int_cases[_i].want : 12345);
}
END_TEST

START_TEST(test_parse_size) {
    size_t v = 7;
    char buf[64];
    ck_assert_int_eq(px_parse_size("0", 0, 10, &v), PX_OK);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(px_parse_size("1048576", 1, SIZE_MAX, &v), PX_OK);
    ck_assert_uint_eq(v, 1048576);
    snprintf(buf, sizeof buf, "%zu", (size_t)SIZE_MAX);
    ck_assert_int_eq(px_parse_size(buf, 0, SIZE_MAX, &v), PX_OK);
    ck_assert_uint_eq(v, SIZE_MAX);
    v = 7;
    ck_assert_int_eq(px_parse_size("18446744073709551616", 0, SIZE_MAX, &v), PX_ERANGE);
    ck_assert_int_eq(px_parse_size("99999999999999999999999", 0, SIZE_MAX, &v), PX_ERANGE);
    ck_assert_int_eq(px_parse_size("11", 0, 10, &v), PX_ERANGE);
    ck_assert_int_eq(px_parse_size("0", 1, 10, &v), PX_ERANGE);
    ck_assert_int_eq(px_parse_size("-1", 0, 10, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size("+1", 0, 10, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size("", 0, 10, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size("12abc", 0, 100, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size("3", 5, 1, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size(NULL, 0, 1, &v), PX_EINVAL);
    ck_assert_int_eq(px_parse_size("1", 0, 1, NULL), PX_EINVAL);
    ck_assert_uint_eq(v, 7);
}
END_TEST

/* ======================================================================
 * static files
 * ====================================================================== */

static char g_tmp[64];          /* the temporary directory */
static char g_root[512];        /* realpath of g_tmp/root (short, so joins fit) */
static int g_fixture_ok;

static const char *const g_dirs[] = {"root", "root/sub", "root/.git", "root/sub/deeper"};
static const char *const g_files[] = {"outside.txt",      "root/index.html", "root/a.txt",
                                      "root/sub/b.css",   "root/sub/index.html",
                                      "root/.hidden",     "root/.git/config",
                                      "root/sub/.secret", "root/a b.txt"};
static const struct {
    const char *path, *target;
} g_links[] = {
    {"root/link_in", "a.txt"},
    {"root/sub/link_up_in", "../a.txt"},
    {"root/link_out", "../outside.txt"},
    {"root/link_passwd", "/etc/passwd"},
    {"root/dir_in", "sub"},
    {"root/dir_out", ".."},
    {"root/loop", "loop"},
    {"root/dangling", "nowhere.txt"},
};

static int mkpath(char *buf, size_t sz, const char *rel) {
    int n = snprintf(buf, sz, "%s/%s", g_tmp, rel);
    return n > 0 && (size_t)n < sz;
}

static void static_setup(void) {
    char p[PATH_MAX], real[PATH_MAX];
    size_t i;
    g_fixture_ok = 0;
    strcpy(g_tmp, "/tmp/px_static_XXXXXX");
    if (!mkdtemp(g_tmp)) return;
    for (i = 0; i < NELEM(g_dirs); i++) {
        if (!mkpath(p, sizeof p, g_dirs[i]) || mkdir(p, 0700) != 0) return;
    }
    for (i = 0; i < NELEM(g_files); i++) {
        FILE *f;
        if (!mkpath(p, sizeof p, g_files[i]) || !(f = fopen(p, "w"))) return;
        fputs(g_files[i], f);
        fclose(f);
    }
    for (i = 0; i < NELEM(g_links); i++) {
        if (!mkpath(p, sizeof p, g_links[i].path) || symlink(g_links[i].target, p) != 0) return;
    }
    if (!mkpath(p, sizeof p, "root") || !realpath(p, real) || strlen(real) >= sizeof g_root)
        return;
    strcpy(g_root, real);
    g_fixture_ok = 1;
}

static void static_teardown(void) {
    char p[PATH_MAX];
    size_t i;
    if (!g_tmp[0]) return;
    for (i = 0; i < NELEM(g_links); i++)
        if (mkpath(p, sizeof p, g_links[i].path)) unlink(p);
    for (i = 0; i < NELEM(g_files); i++)
        if (mkpath(p, sizeof p, g_files[i])) unlink(p);
    for (i = NELEM(g_dirs); i-- > 0;)
        if (mkpath(p, sizeof p, g_dirs[i])) rmdir(p);
    rmdir(g_tmp);
}

#define LINK_PASSWD_RC (-100) /* resolved at run time: /etc/passwd may be absent */

static const struct {
    const char *url;
    int rc;
    const char *want; /* relative to the root, for PX_OK */
} static_cases[] = {
    {"/", PX_OK, "index.html"},
    {"/index.html", PX_OK, "index.html"},
    {"/a.txt", PX_OK, "a.txt"},
    {"/a%2etxt", PX_OK, "a.txt"},
    {"/a%20b.txt", PX_OK, "a b.txt"},
    {"/sub/b.css", PX_OK, "sub/b.css"},
    {"/sub/", PX_OK, "sub/index.html"},
    {"/link_in", PX_OK, "a.txt"},
    {"/sub/link_up_in", PX_OK, "a.txt"},
    {"/dir_in/b.css", PX_OK, "sub/b.css"},
    /* not found */
    {"/missing.html", PX_ENOTFOUND, NULL},
    {"/sub/missing/x", PX_ENOTFOUND, NULL},
    {"/a.txt/x", PX_ENOTFOUND, NULL},
    {"/dangling", PX_ENOTFOUND, NULL},
    {"/sub/deeper/", PX_ENOTFOUND, NULL},
    /* forbidden: directories, symlinks out, loops */
    {"/sub", PX_EFORBIDDEN, NULL},
    {"/dir_in", PX_EFORBIDDEN, NULL},
    {"/link_out", PX_EFORBIDDEN, NULL},
    {"/link_passwd", LINK_PASSWD_RC, NULL},
    {"/dir_out/outside.txt", PX_EFORBIDDEN, NULL},
    {"/dir_out/root/a.txt", PX_OK, "a.txt"}, /* leaves and re-enters: the target is inside */
    {"/loop", PX_EFORBIDDEN, NULL},
    /* forbidden: traversal in every spelling */
    {"/..", PX_EFORBIDDEN, NULL},
    {"/../outside.txt", PX_EFORBIDDEN, NULL},
    {"/sub/../a.txt", PX_EFORBIDDEN, NULL},
    {"/%2e%2e/outside.txt", PX_EFORBIDDEN, NULL},
    {"/%2E%2e/", PX_EFORBIDDEN, NULL},
    {"/..%2foutside.txt", PX_EFORBIDDEN, NULL},
    {"/..%2Foutside.txt", PX_EFORBIDDEN, NULL},
    {"/sub/..%2f..%2foutside.txt", PX_EFORBIDDEN, NULL},
    {"/%2e%2e%2foutside.txt", PX_EFORBIDDEN, NULL},
    {"/.%2e/outside.txt", PX_EFORBIDDEN, NULL},
    {"/./a.txt", PX_EFORBIDDEN, NULL},
    {"/sub/.", PX_EFORBIDDEN, NULL},
    {"//etc/passwd", PX_EFORBIDDEN, NULL},
    {"/%2fetc/passwd", PX_EFORBIDDEN, NULL},
    {"/sub//b.css", PX_EFORBIDDEN, NULL},
    {"/a\\b", PX_EFORBIDDEN, NULL},
    {"/%5c..%5coutside.txt", PX_EFORBIDDEN, NULL},
    {"/..\\outside.txt", PX_EFORBIDDEN, NULL},
    {"/a%0a.txt", PX_EFORBIDDEN, NULL},
    /* forbidden: hidden segments, even when they exist */
    {"/.hidden", PX_EFORBIDDEN, NULL},
    {"/.git/config", PX_EFORBIDDEN, NULL},
    {"/%2egit/config", PX_EFORBIDDEN, NULL},
    {"/sub/.secret", PX_EFORBIDDEN, NULL},
    /* malformed */
    {"/%00", PX_EINVAL, NULL},
    {"/a.txt%00.png", PX_EINVAL, NULL},
    {"/%zz", PX_EINVAL, NULL},
    {"/a%2", PX_EINVAL, NULL},
    {"a.txt", PX_EINVAL, NULL},
    {"", PX_EINVAL, NULL},
    {"%2fa.txt", PX_OK, "a.txt"}, /* decodes to "/a.txt" */
};

START_TEST(test_static_resolve) {
    char out[PATH_MAX], want[PATH_MAX];
    int rc, want_rc = static_cases[_i].rc;
    ck_assert_msg(g_fixture_ok, "temporary directory setup failed");
    if (want_rc == LINK_PASSWD_RC)
        want_rc = access("/etc/passwd", F_OK) == 0 ? PX_EFORBIDDEN : PX_ENOTFOUND;
    memset(out, 'Z', sizeof out);
    rc = px_static_resolve(g_root, static_cases[_i].url, out, sizeof out);
    ck_assert_msg(rc == want_rc, "'%s': rc %d (%s), want %d", static_cases[_i].url, rc,
                  px_strerror(rc), want_rc);
    if (rc == PX_OK) {
        snprintf(want, sizeof want, "%s/%s", g_root, static_cases[_i].want);
        ck_assert_str_eq(out, want);
    } else {
        ck_assert_str_eq(out, "");
    }
}
END_TEST

START_TEST(test_static_limits) {
    char out[PATH_MAX], root_slash[sizeof g_root + 1], small[8];
    char *long_url = malloc(PX_STATIC_MAX_PATH + 16);
    ck_assert_msg(g_fixture_ok, "temporary directory setup failed");
    ck_assert_ptr_nonnull(long_url);
    /* a root given with a trailing slash works the same */
    snprintf(root_slash, sizeof root_slash, "%s/", g_root);
    ck_assert_int_eq(px_static_resolve(root_slash, "/a.txt", out, sizeof out), PX_OK);
    ck_assert_int_eq(px_static_resolve(root_slash, "/link_out", out, sizeof out), PX_EFORBIDDEN);
    /* overly long paths */
    long_url[0] = '/';
    memset(long_url + 1, 'a', PX_STATIC_MAX_PATH + 1);
    long_url[PX_STATIC_MAX_PATH + 2] = '\0';
    ck_assert_int_eq(px_static_resolve(g_root, long_url, out, sizeof out), PX_ETOOLONG);
    long_url[PX_STATIC_MAX_PATH] = '\0'; /* fits the limit, then the name is too long for the OS */
    ck_assert_int_eq(px_static_resolve(g_root, long_url, out, sizeof out), PX_ETOOLONG);
    /* output buffer too small */
    ck_assert_int_eq(px_static_resolve(g_root, "/a.txt", small, sizeof small), PX_ETOOLONG);
    ck_assert_str_eq(small, "");
    /* bad arguments */
    ck_assert_int_eq(px_static_resolve("relative", "/a.txt", out, sizeof out), PX_EINVAL);
    ck_assert_int_eq(px_static_resolve(NULL, "/a.txt", out, sizeof out), PX_EINVAL);
    ck_assert_int_eq(px_static_resolve(g_root, NULL, out, sizeof out), PX_EINVAL);
    /* a root that is a prefix of a sibling: /tmp/x/root vs /tmp/x/rootfoo */
    {
        char sibling[sizeof g_root + 8], file[sizeof g_root + 16], link[sizeof g_root + 8];
        FILE *f;
        snprintf(sibling, sizeof sibling, "%sfoo", g_root);
        snprintf(file, sizeof file, "%s/f.txt", sibling);
        snprintf(link, sizeof link, "%s/sib", g_root);
        ck_assert_int_eq(mkdir(sibling, 0700), 0);
        f = fopen(file, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
        ck_assert_int_eq(symlink("../rootfoo/f.txt", link), 0);
        ck_assert_int_eq(px_static_resolve(g_root, "/sib", out, sizeof out), PX_EFORBIDDEN);
        unlink(link);
        unlink(file);
        rmdir(sibling);
    }
    free(long_url);
}
END_TEST

/* ====================================================================== */

static Suite *parse_suite(void) {
    Suite *s = suite_create("parse");
    TCase *tc;

    tc = tcase_create("misc");
    tcase_add_test(tc, test_status);
    tcase_add_loop_test(tc, test_content_type_is, 0, (int)NELEM(ct_cases));
    tcase_add_loop_test(tc, test_mime_type, 0, (int)NELEM(mime_cases));
    suite_add_tcase(s, tc);

    tc = tcase_create("multipart");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_boundary, 0, (int)NELEM(boundary_cases));
    tcase_add_test(tc, test_boundary_small_buffer);
    tcase_add_loop_test(tc, test_multipart_table, 0, (int)NELEM(mp_cases));
    tcase_add_test(tc, test_multipart_bad_args);
    tcase_add_test(tc, test_unquote);
    tcase_add_test(tc, test_multipart_prefixes_one);
    tcase_add_test(tc, test_multipart_prefixes_three);
    tcase_add_test(tc, test_multipart_mutations);
    tcase_add_test(tc, test_multipart_many_parts);
    tcase_add_test(tc, test_multipart_adversarial_data);
    tcase_add_test(tc, test_multipart_header_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("base64");
    tcase_add_loop_test(tc, test_b64, 0, (int)NELEM(b64_cases));
    tcase_add_test(tc, test_b64_sizes);
    tcase_add_loop_test(tc, test_data_url, 0, (int)NELEM(durl_cases));
    tcase_add_test(tc, test_data_url_then_decode);
    suite_add_tcase(s, tc);

    tc = tcase_create("query");
    tcase_add_loop_test(tc, test_query, 0, (int)NELEM(query_cases));
    tcase_add_loop_test(tc, test_path_decode, 0, (int)NELEM(path_cases));
    tcase_add_loop_test(tc, test_parse_int, 0, (int)NELEM(int_cases));
    tcase_add_test(tc, test_parse_size);
    suite_add_tcase(s, tc);

    tc = tcase_create("static");
    tcase_add_unchecked_fixture(tc, static_setup, static_teardown);
    tcase_add_loop_test(tc, test_static_resolve, 0, (int)NELEM(static_cases));
    tcase_add_test(tc, test_static_limits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(parse_suite());
    int n_failed;
    srunner_run_all(sr, CK_NORMAL);
    n_failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return n_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
