/* parse.c - HTTP-independent parsing helpers of fmnist-serve (see parse.h
 * for every contract and the one return convention).
 *
 * Job: the byte-level work between libmicrohttpd and the model: multipart
 * framing, base64, percent-decoding, number parsing and the static-file path
 * check.  Everything here reads only within the lengths it is given and
 * writes only into caller buffers; the multipart parser is one linear pass.
 *
 * Leaves out: HTTP itself, JSON, images, allocation, logging.  Character
 * classes are ASCII and locale-independent on purpose (no <ctype.h>): these
 * bytes come from the network, not from a user's locale. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* POSIX 2008 + XSI: realpath, stat (glibc hides realpath
                             without it or _DEFAULT_SOURCE) */
#endif

#include "parse.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#if defined(__GNUC__)
#define PX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PX_PRINTF(a, b)
#endif

/* ---- status codes ---------------------------------------------------- */

const char *px_strerror(int rc) {
    switch (rc) {
    case PX_OK: return "ok";
    case PX_EINVAL: return "malformed input";
    case PX_ETOOLONG: return "too long";
    case PX_ERANGE: return "number out of range";
    case PX_ENOTFOUND: return "not found";
    case PX_EFORBIDDEN: return "forbidden";
    case PX_ENOBOUNDARY: return "missing multipart boundary";
    case PX_ETRUNCATED: return "multipart body truncated";
    case PX_ETOOMANY: return "too many multipart parts";
    case PX_EMALFORMED: return "malformed multipart body";
    case PX_ESYS: return "system error";
    default: return "unknown status";
    }
}

int px_http_status(int rc) {
    switch (rc) {
    case PX_OK: return 200;
    case PX_ENOTFOUND: return 404;
    case PX_EFORBIDDEN: return 403;
    case PX_ETOOMANY: return 413;
    case PX_ESYS: return 500;
    default: return 400;
    }
}

/* ---- character classes ----------------------------------------------- */

static int is_blank(int c) { return c == ' ' || c == '\t'; }

/* Blanks plus the CR LF of folded header lines (only ever seen followed by a
 * blank, because an unfolded CRLF ends the header value). */
static int is_fws(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

/* RFC 7230 tchar: the characters of header names and parameter names. */
static int is_tchar(int c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Characters of an unquoted parameter value: lenient (anything visible but
 * the separators), except '\\', so that px_unquote is the identity on it. */
static int is_value_char(int c) {
    return (c > 0x20 && c != 0x7f && c != ';' && c != '"' && c != '\\');
}

/* RFC 2046 bchars (space allowed, but not as the last character). */
static int is_bchar(int c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return 1;
    return c != '\0' && strchr("'()+_,-./:=? ", c) != NULL;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* 1 when the n bytes at s equal the C string lit, ASCII case-insensitively. */
static int span_ieq(const char *s, size_t n, const char *lit) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (lit[i] == '\0' || lower((unsigned char)s[i]) != lower((unsigned char)lit[i]))
            return 0;
    }
    return lit[n] == '\0';
}

static void clear_str(char *out, size_t outsz) {
    if (out && outsz) out[0] = '\0';
}

/* ---- header parameters (shared by Content-Type and Content-Disposition) */

typedef struct param {
    const char *name;
    size_t name_len;
    const char *val; /* between the quotes when quoted, escapes unresolved */
    size_t val_len;
    int quoted;
} param;

/* Reads one `*FWS ";" *FWS name *FWS "=" *FWS value` from [*pp, end).
 * Returns 1 with *out filled and *pp advanced, 0 at the end of input (only
 * blanks left, or a lone trailing ';'), -1 when malformed.  An unquoted value
 * may be empty; callers decide whether that is allowed. */
static int next_param(const char **pp, const char *end, param *out) {
    const char *p = *pp;
    while (p < end && is_fws((unsigned char)*p)) p++;
    if (p == end) {
        *pp = p;
        return 0;
    }
    if (*p != ';') return -1;
    p++;
    while (p < end && is_fws((unsigned char)*p)) p++;
    if (p == end) {
        *pp = p;
        return 0;
    }
    out->name = p;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    out->name_len = (size_t)(p - out->name);
    if (out->name_len == 0) return -1;
    while (p < end && is_fws((unsigned char)*p)) p++;
    if (p == end || *p != '=') return -1;
    p++;
    while (p < end && is_fws((unsigned char)*p)) p++;
    if (p < end && *p == '"') {
        p++;
        out->val = p;
        for (;;) {
            int c;
            if (p == end) return -1; /* unterminated */
            c = (unsigned char)*p;
            if (c == '"') break;
            if (c == '\r' || c == '\n' || c == '\0') return -1;
            if (c == '\\') {
                p++;
                if (p == end) return -1;
                c = (unsigned char)*p;
                if (c == '\r' || c == '\n' || c == '\0') return -1;
            }
            p++;
        }
        out->val_len = (size_t)(p - out->val);
        out->quoted = 1;
        p++; /* closing quote */
    } else {
        out->val = p;
        while (p < end && is_value_char((unsigned char)*p)) p++;
        out->val_len = (size_t)(p - out->val);
        out->quoted = 0;
    }
    *pp = p;
    return 1;
}

int px_unquote(const char *in, size_t len, char *out, size_t outsz, size_t *out_len) {
    size_t i, o = 0;
    clear_str(out, outsz);
    if (out_len) *out_len = 0;
    if ((!in && len) || !out) return PX_EINVAL;
    for (i = 0; i < len; i++) {
        char c = in[i];
        if (c == '\\' && i + 1 < len) c = in[++i];
        if (o + 1 >= outsz) {
            clear_str(out, outsz);
            return PX_ETOOLONG;
        }
        out[o++] = c;
    }
    if (outsz == 0) return PX_ETOOLONG;
    out[o] = '\0';
    if (out_len) *out_len = o;
    return PX_OK;
}

/* ---- Content-Type ---------------------------------------------------- */

int px_content_type_is(const char *header_value, const char *mime) {
    const char *s, *e;
    if (!header_value || !mime || !*mime) return 0;
    s = header_value;
    while (is_blank((unsigned char)*s)) s++;
    e = s;
    while (*e && *e != ';') e++;
    while (e > s && is_blank((unsigned char)e[-1])) e--;
    return span_ieq(s, (size_t)(e - s), mime);
}

int px_multipart_boundary(const char *content_type, char *out, size_t outsz) {
    const char *p, *end;
    param pm, b;
    int r, found = 0;
    char tmp[PX_BOUNDARY_MAX + 1];
    size_t n, i;

    clear_str(out, outsz);
    if (!content_type || !out) return PX_EINVAL;
    end = content_type + strlen(content_type);
    p = memchr(content_type, ';', (size_t)(end - content_type));
    if (!p) return PX_ENOBOUNDARY;
    memset(&b, 0, sizeof b);
    while ((r = next_param(&p, end, &pm)) == 1) {
        if (span_ieq(pm.name, pm.name_len, "boundary")) {
            if (found) return PX_EINVAL; /* ambiguous */
            found = 1;
            b = pm;
        }
    }
    if (r < 0) return PX_EINVAL;
    if (!found || b.val_len == 0) return PX_ENOBOUNDARY;
    r = px_unquote(b.val, b.val_len, tmp, sizeof tmp, &n);
    if (r != PX_OK) return r; /* PX_ETOOLONG: over 70 bytes */
    if (n == 0) return PX_ENOBOUNDARY;
    for (i = 0; i < n; i++) {
        if (!is_bchar((unsigned char)tmp[i])) return PX_EINVAL;
    }
    if (tmp[n - 1] == ' ') return PX_EINVAL;
    if (n + 1 > outsz) return PX_ETOOLONG;
    memcpy(out, tmp, n + 1);
    return PX_OK;
}

/* ---- multipart/form-data --------------------------------------------- */

/* What follows a match of "--boundary". */
enum { D_NOTFOUND, D_PART, D_CLOSE, D_NONE, D_TRUNC, D_BARELF };

typedef struct mp {
    const uint8_t *b;
    size_t len;
    uint8_t pat[PX_BOUNDARY_MAX + 4]; /* "\r\n--" boundary */
    size_t m;                        /* pattern length, 5 .. 74 */
    size_t fail[PX_BOUNDARY_MAX + 4]; /* KMP: longest proper border of pat[0..i] */
    char *err;
    size_t errsz;
} mp;

static int mp_err(const mp *c, int rc, const char *fmt, ...) PX_PRINTF(3, 4);
static int mp_err(const mp *c, int rc, const char *fmt, ...) {
    if (c->err && c->errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errsz, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static void kmp_init(mp *c) {
    size_t i, k = 0;
    c->fail[0] = 0;
    for (i = 1; i < c->m; i++) {
        while (k > 0 && c->pat[i] != c->pat[k]) k = c->fail[k - 1];
        if (c->pat[i] == c->pat[k]) k++;
        c->fail[i] = k;
    }
}

/* Classifies the bytes after "--boundary" (at index after).  On D_PART,
 * *next is the index of the first header line of the following part. */
static int delim_kind(const mp *c, size_t after, size_t *next) {
    const uint8_t *b = c->b;
    size_t j;
    if (after >= c->len) return D_TRUNC;
    if (b[after] == '-') {
        if (after + 1 >= c->len) return D_TRUNC;
        return b[after + 1] == '-' ? D_CLOSE : D_NONE;
    }
    j = after;
    while (j < c->len && is_blank(b[j])) j++; /* transport padding */
    if (j >= c->len) return D_TRUNC;
    if (b[j] == '\n') return D_BARELF;
    if (b[j] != '\r') return D_NONE;
    if (j + 1 >= c->len) return D_TRUNC;
    if (b[j + 1] != '\n') return D_NONE;
    *next = j + 2;
    return D_PART;
}

/* Finds the first real delimiter "\r\n--boundary" starting at or after from.
 * Look-alikes (D_NONE) are skipped without rescanning: KMP continues from
 * the border of the full match, so the whole search is linear.  (With an
 * RFC boundary, which has no CR, every border is empty and this is the plain
 * "restart at the next CR" scan; KMP keeps it linear for any boundary.)  Returns the
 * delim_kind (never D_NONE) with *q = index of its CR, or D_NOTFOUND. */
static int find_delim(const mp *c, size_t from, size_t *q, size_t *next) {
    size_t i, k = 0;
    for (i = from; i < c->len; i++) {
        while (k > 0 && c->b[i] != c->pat[k]) k = c->fail[k - 1];
        if (c->b[i] == c->pat[k]) k++;
        if (k == c->m) {
            int d = delim_kind(c, i + 1, next);
            if (d != D_NONE) {
                *q = i + 1 - c->m;
                return d;
            }
            k = c->fail[c->m - 1];
        }
    }
    return D_NOTFOUND;
}

typedef struct hdr_state {
    int seen_cd, seen_ct;
} hdr_state;

static int parse_disposition(const mp *c, const char *p, const char *end, px_part *pt,
                             size_t idx, size_t off) {
    const char *t;
    param pm;
    int r, have_name = 0, have_file = 0;
    while (p < end && is_fws((unsigned char)*p)) p++;
    t = p;
    while (p < end && is_tchar((unsigned char)*p)) p++;
    if (!span_ieq(t, (size_t)(p - t), "form-data"))
        return mp_err(c, PX_EMALFORMED,
                      "part %zu: Content-Disposition is not form-data (offset %zu)", idx, off);
    while ((r = next_param(&p, end, &pm)) == 1) {
        int is_name = span_ieq(pm.name, pm.name_len, "name");
        int is_file = span_ieq(pm.name, pm.name_len, "filename");
        if (!is_name && !is_file) continue; /* filename*=, unknown parameters */
        if (!pm.quoted && pm.val_len == 0) {
            r = -1;
            break;
        }
        if ((is_name && have_name) || (is_file && have_file))
            return mp_err(c, PX_EMALFORMED,
                          "part %zu: repeated Content-Disposition parameter (offset %zu)", idx,
                          off);
        if (is_name) {
            have_name = 1;
            pt->name = pm.val;
            pt->name_len = pm.val_len;
        } else {
            have_file = 1;
            pt->filename = pm.val;
            pt->filename_len = pm.val_len;
        }
    }
    if (r < 0)
        return mp_err(c, PX_EMALFORMED,
                      "part %zu: malformed Content-Disposition parameters (offset %zu)", idx,
                      off);
    if (!have_name)
        return mp_err(c, PX_EMALFORMED, "part %zu: Content-Disposition has no name= (offset %zu)",
                      idx, off);
    return PX_OK;
}

/* Acts on one complete header: name [n, n + n_len), value [v, ve). */
static int finish_header(const mp *c, hdr_state *st, px_part *pt, size_t n, size_t n_len,
                         size_t v, size_t ve, size_t idx) {
    const char *name = (const char *)c->b + n;
    const char *val = (const char *)c->b + v;
    const char *vend = (const char *)c->b + ve;
    if (span_ieq(name, n_len, "content-disposition")) {
        if (st->seen_cd++)
            return mp_err(c, PX_EMALFORMED, "part %zu: repeated Content-Disposition (offset %zu)",
                          idx, n);
        return parse_disposition(c, val, vend, pt, idx, n);
    }
    if (span_ieq(name, n_len, "content-type")) {
        if (st->seen_ct++)
            return mp_err(c, PX_EMALFORMED, "part %zu: repeated Content-Type (offset %zu)", idx,
                          n);
        while (val < vend && is_fws((unsigned char)*val)) val++;
        while (vend > val && is_fws((unsigned char)vend[-1])) vend--;
        if (vend > val) {
            pt->content_type = val;
            pt->content_type_len = (size_t)(vend - val);
        }
    }
    return PX_OK; /* other headers are ignored */
}

/* Reads the header lines of part idx (1-based, for messages) starting at pos,
 * up to and including the empty line; *data_start gets the index after it. */
static int parse_headers(const mp *c, size_t pos, px_part *pt, size_t *data_start, size_t idx) {
    const uint8_t *b = c->b;
    size_t len = c->len;
    size_t limit = (len - pos > PX_MULTIPART_MAX_HEADER) ? pos + PX_MULTIPART_MAX_HEADER : len;
    size_t i = pos, hn = 0, hn_len = 0, hv = 0, hv_end = 0;
    int have = 0, rc;
    hdr_state st = {0, 0};

    for (;;) {
        size_t e = i;
        while (e < limit && b[e] != '\r') {
            int ch = b[e];
            if (ch == '\n')
                return mp_err(c, PX_EMALFORMED,
                              "part %zu: bare LF in headers (offset %zu); CRLF is required", idx,
                              e);
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return mp_err(c, PX_EMALFORMED,
                              "part %zu: control character in headers (offset %zu)", idx, e);
            e++;
        }
        if (e >= limit) {
            if (limit == len)
                return mp_err(c, PX_ETRUNCATED, "part %zu: body ends inside headers", idx);
            return mp_err(c, PX_EMALFORMED, "part %zu: headers exceed %d bytes (offset %zu)", idx,
                          PX_MULTIPART_MAX_HEADER, pos);
        }
        if (e + 1 >= len)
            return mp_err(c, PX_ETRUNCATED, "part %zu: body ends inside headers", idx);
        if (b[e + 1] != '\n')
            return mp_err(c, PX_EMALFORMED, "part %zu: CR without LF in headers (offset %zu)", idx,
                          e);
        if (e == i) { /* empty line: end of headers */
            if (have && (rc = finish_header(c, &st, pt, hn, hn_len, hv, hv_end, idx)) != PX_OK)
                return rc;
            if (!st.seen_cd)
                return mp_err(c, PX_EMALFORMED,
                              "part %zu: no Content-Disposition header (offset %zu)", idx, pos);
            *data_start = e + 2;
            return PX_OK;
        }
        if (is_blank(b[i])) { /* obsolete folding: continues the previous header */
            if (!have)
                return mp_err(c, PX_EMALFORMED,
                              "part %zu: continuation line without a header (offset %zu)", idx, i);
            hv_end = e;
        } else {
            size_t k = i;
            if (have && (rc = finish_header(c, &st, pt, hn, hn_len, hv, hv_end, idx)) != PX_OK)
                return rc;
            while (k < e && is_tchar(b[k])) k++;
            if (k == i || k == e || b[k] != ':')
                return mp_err(c, PX_EMALFORMED, "part %zu: malformed header line (offset %zu)", idx,
                              i);
            hn = i;
            hn_len = k - i;
            hv = k + 1;
            hv_end = e;
            have = 1;
        }
        i = e + 2;
    }
}

int px_multipart_parse(const uint8_t *body, size_t len, const char *boundary, px_part *parts,
                       size_t max_parts, size_t *n_parts, char *err, size_t errsz) {
    mp c;
    size_t blen, q = 0, next = 0, pos, n = 0;
    int d;

    clear_str(err, errsz);
    if (n_parts) *n_parts = 0;
    c.err = err;
    c.errsz = errsz;
    if (!n_parts || (!body && len) || (!parts && max_parts))
        return mp_err(&c, PX_EINVAL, "invalid arguments");
    if (!boundary || !*boundary) return mp_err(&c, PX_ENOBOUNDARY, "empty boundary");
    blen = strlen(boundary);
    if (blen > PX_BOUNDARY_MAX)
        return mp_err(&c, PX_ETOOLONG, "boundary longer than %d bytes", PX_BOUNDARY_MAX);
    c.b = body;
    c.len = len;
    memcpy(c.pat, "\r\n--", 4);
    memcpy(c.pat + 4, boundary, blen);
    c.m = blen + 4;
    kmp_init(&c);

    /* The opening delimiter may start the body, without the CRLF. */
    d = D_NONE;
    if (len >= 2 + blen && body[0] == '-' && body[1] == '-' &&
        memcmp(body + 2, boundary, blen) == 0)
        d = delim_kind(&c, 2 + blen, &next);
    if (d == D_NONE) d = find_delim(&c, 0, &q, &next);
    switch (d) {
    case D_NOTFOUND: return mp_err(&c, PX_ENOBOUNDARY, "body does not contain the boundary");
    case D_TRUNC: return mp_err(&c, PX_ETRUNCATED, "body ends inside the first delimiter");
    case D_BARELF:
        return mp_err(&c, PX_EMALFORMED, "bare LF after the first delimiter; CRLF is required");
    case D_CLOSE: return PX_OK; /* zero parts */
    default: break;
    }
    pos = next;
    for (;;) {
        px_part *pt;
        size_t data_start = 0, ds;
        int rc;
        if (n == max_parts)
            return mp_err(&c, PX_ETOOMANY, "more than %zu parts (offset %zu)", max_parts, pos);
        pt = &parts[n];
        memset(pt, 0, sizeof *pt);
        rc = parse_headers(&c, pos, pt, &data_start, n + 1);
        if (rc != PX_OK) return rc;
        /* From the CRLF of the empty line: a part may have no data at all,
         * its empty line then doubling as the delimiter's CRLF. */
        d = find_delim(&c, data_start - 2, &q, &next);
        if (d == D_NOTFOUND || d == D_TRUNC)
            return mp_err(&c, PX_ETRUNCATED, "part %zu: no closing delimiter", n + 1);
        if (d == D_BARELF)
            return mp_err(&c, PX_EMALFORMED,
                          "part %zu: bare LF after delimiter (offset %zu); CRLF is required",
                          n + 1, q);
        ds = q < data_start ? q : data_start;
        pt->data = body + ds;
        pt->data_len = q - ds;
        *n_parts = ++n;
        if (d == D_CLOSE) return PX_OK; /* the epilogue is ignored */
        pos = next;
    }
}

/* ---- base64 ---------------------------------------------------------- */

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

static int is_b64_space(int c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

size_t px_b64_decoded_max(size_t len) { return (len / 4) * 3 + (len % 4) * 3 / 4; }

int px_b64_decode(const char *in, size_t len, uint8_t *out, size_t outsz, size_t *out_len) {
    uint32_t acc = 0;
    int nq = 0, npad = 0;
    size_t i, o = 0;

    if (out_len) *out_len = 0;
    if (!out_len || (!in && len) || (!out && outsz)) return PX_EINVAL;
    for (i = 0; i < len; i++) {
        int ch = (unsigned char)in[i], v;
        if (is_b64_space(ch)) continue;
        if (ch == '=') {
            if (nq < 2 || nq + npad >= 4) return PX_EINVAL;
            npad++;
            continue;
        }
        if (npad) return PX_EINVAL; /* data after padding */
        v = b64_val(ch);
        if (v < 0) return PX_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        if (++nq == 4) {
            if (outsz - o < 3) return PX_ETOOLONG;
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            nq = 0;
        }
    }
    if (npad && nq + npad != 4) return PX_EINVAL;
    if (nq == 1) return PX_EINVAL;
    if (nq == 2) {
        if (acc & 0xF) return PX_EINVAL; /* non-canonical unused bits */
        if (outsz - o < 1) return PX_ETOOLONG;
        out[o++] = (uint8_t)(acc >> 4);
    } else if (nq == 3) {
        if (acc & 0x3) return PX_EINVAL;
        if (outsz - o < 2) return PX_ETOOLONG;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    *out_len = o;
    return PX_OK;
}

int px_strip_data_url(const char *in, size_t len, const char **payload, size_t *payload_len,
                      const char **mime, size_t *mime_len) {
    const char *comma, *semi;
    size_t meta_len;
    if (mime) *mime = NULL;
    if (mime_len) *mime_len = 0;
    if (!payload || !payload_len || (!in && len)) return PX_EINVAL;
    *payload = in;
    *payload_len = len;
    if (len < 5 || !span_ieq(in, 5, "data:")) return PX_OK;
    comma = memchr(in + 5, ',', len - 5);
    if (!comma) return PX_EINVAL;
    meta_len = (size_t)(comma - (in + 5));
    if (meta_len < 7 || !span_ieq(comma - 7, 7, ";base64")) return PX_EINVAL;
    semi = memchr(in + 5, ';', meta_len); /* found: ";base64" is there */
    if (mime) *mime = in + 5;
    if (mime_len) *mime_len = (size_t)(semi - (in + 5));
    *payload = comma + 1;
    *payload_len = len - (size_t)(comma + 1 - in);
    return PX_OK;
}

/* ---- percent-decoding, query strings, paths ---------------------------- */

/* Decodes the byte at s[*i] (s has len bytes) and advances *i.  Returns the
 * byte, or -1 for an escape that is not %XX. */
static int pct_next(const char *s, size_t len, size_t *i, int plus_is_space) {
    int c = (unsigned char)s[*i];
    if (c == '%') {
        int h, l;
        if (len - *i < 3) return -1;
        h = hexval((unsigned char)s[*i + 1]);
        l = hexval((unsigned char)s[*i + 2]);
        if (h < 0 || l < 0) return -1;
        *i += 3;
        return h * 16 + l;
    }
    *i += 1;
    return (c == '+' && plus_is_space) ? ' ' : c;
}

/* Decodes [s, s + len) into out, NUL-terminated; rejects %00. */
static int pct_decode(const char *s, size_t len, int plus_is_space, char *out, size_t outsz,
                      size_t *out_len) {
    size_t i = 0, o = 0;
    if (outsz == 0) return PX_ETOOLONG;
    while (i < len) {
        int v = pct_next(s, len, &i, plus_is_space);
        if (v <= 0) { /* bad escape, or NUL that a C string cannot carry */
            out[0] = '\0';
            return PX_EINVAL;
        }
        if (o + 1 >= outsz) {
            out[0] = '\0';
            return PX_ETOOLONG;
        }
        out[o++] = (char)v;
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return PX_OK;
}

/* 1 when the encoded key [s, s + len) decodes to key (klen bytes). */
static int key_matches(const char *s, size_t len, const char *key, size_t klen) {
    size_t i = 0, j = 0;
    while (i < len) {
        int v = pct_next(s, len, &i, 1);
        if (v < 0 || j >= klen || v != (unsigned char)key[j]) return 0;
        j++;
    }
    return j == klen;
}

int px_query_get(const char *query, const char *key, char *out, size_t outsz) {
    const char *p;
    size_t klen;
    clear_str(out, outsz);
    if (!query || !key || !out || outsz == 0 || !*key) return PX_EINVAL;
    klen = strlen(key);
    p = (*query == '?') ? query + 1 : query;
    for (;;) {
        const char *pe = strchr(p, '&');
        const char *eq;
        if (!pe) pe = p + strlen(p);
        eq = memchr(p, '=', (size_t)(pe - p));
        if (key_matches(p, (size_t)((eq ? eq : pe) - p), key, klen)) {
            if (!eq) return PX_OK; /* "flag" alone: empty value */
            return pct_decode(eq + 1, (size_t)(pe - eq - 1), 1, out, outsz, NULL);
        }
        if (*pe == '\0') return PX_ENOTFOUND;
        p = pe + 1;
    }
}

int px_path_decode(const char *in, char *out, size_t outsz) {
    clear_str(out, outsz);
    if (!in || !out) return PX_EINVAL;
    return pct_decode(in, strlen(in), 0, out, outsz, NULL);
}

/* ---- numbers --------------------------------------------------------- */

/* Reads s, which must be one or more digits and nothing else, into *mag.
 * *over is set when the value exceeds limit (then *mag is meaningless).
 * Returns PX_OK or PX_EINVAL. */
static int parse_digits(const char *s, unsigned long long limit, unsigned long long *mag,
                        int *over) {
    unsigned long long v = 0;
    *over = 0;
    if (!is_digit((unsigned char)*s)) return PX_EINVAL;
    for (; *s; s++) {
        unsigned d;
        if (!is_digit((unsigned char)*s)) return PX_EINVAL;
        d = (unsigned)(*s - '0');
        if (*over || v > (limit - d) / 10)
            *over = 1; /* keep scanning: syntax errors win over range errors */
        else
            v = v * 10 + d;
    }
    *mag = v;
    return PX_OK;
}

int px_parse_int(const char *s, int min, int max, int *out) {
    unsigned long long mag;
    long long v;
    int neg = 0, over;
    if (!s || !out || min > max) return PX_EINVAL;
    if (*s == '-' || *s == '+') neg = (*s++ == '-');
    /* INT_MAX + 1 so that INT_MIN is reachable; the range check trims it. */
    if (parse_digits(s, (unsigned long long)INT_MAX + 1, &mag, &over) != PX_OK) return PX_EINVAL;
    if (over) return PX_ERANGE;
    v = neg ? -(long long)mag : (long long)mag;
    if (v < min || v > max) return PX_ERANGE;
    *out = (int)v;
    return PX_OK;
}

int px_parse_size(const char *s, size_t min, size_t max, size_t *out) {
    unsigned long long mag;
    int over;
    if (!s || !out || min > max) return PX_EINVAL;
    if (parse_digits(s, (unsigned long long)SIZE_MAX, &mag, &over) != PX_OK) return PX_EINVAL;
    if (over || mag < min || mag > max) return PX_ERANGE;
    *out = (size_t)mag;
    return PX_OK;
}

/* ---- static files ---------------------------------------------------- */

static int errno_status(int e) {
    switch (e) {
    case ENOENT:
    case ENOTDIR: return PX_ENOTFOUND;
    case EACCES:
    case ELOOP: return PX_EFORBIDDEN;
    case ENAMETOOLONG: return PX_ETOOLONG;
    default: return PX_ESYS;
    }
}

int px_static_resolve(const char *root_realpath, const char *url_path, char *out, size_t outsz) {
    char dec[PX_STATIC_MAX_PATH + 1];
    char joined[PATH_MAX];
    char real[PATH_MAX];
    const char *s, *index = "";
    size_t rl, n;
    int rc, w;
    struct stat st;

    clear_str(out, outsz);
    if (!root_realpath || root_realpath[0] != '/' || !url_path || !out) return PX_EINVAL;
    rc = pct_decode(url_path, strlen(url_path), 0, dec, sizeof dec, NULL);
    if (rc != PX_OK) return rc;
    if (dec[0] != '/') return PX_EINVAL;
    for (s = dec; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\\' || ch < 0x20 || ch == 0x7f) return PX_EFORBIDDEN;
    }
    /* Segments after the leading '/'. */
    for (s = dec + 1;;) {
        const char *e = strchr(s, '/');
        if ((e ? e : s + strlen(s)) == s) { /* empty segment */
            if (e) return PX_EFORBIDDEN;     /* "//x", "/a//b" */
            index = "index.html";            /* "/" or "/dir/" */
            break;
        }
        if (*s == '.') return PX_EFORBIDDEN; /* ".", "..", hidden */
        if (!e) break;
        s = e + 1;
    }
    rl = strlen(root_realpath);
    while (rl > 1 && root_realpath[rl - 1] == '/') rl--;
    w = snprintf(joined, sizeof joined, "%.*s/%s%s", (int)(rl > 1 ? rl : 0), root_realpath,
                 dec + 1, index);
    if (w < 0 || (size_t)w >= sizeof joined) return PX_ETOOLONG;
    if (!realpath(joined, real)) return errno_status(errno);
    /* Inside the root: the root itself followed by '/' (every path is inside "/"). */
    if (rl > 1 && (strncmp(real, root_realpath, rl) != 0 || real[rl] != '/'))
        return PX_EFORBIDDEN;
    if (stat(real, &st) != 0) return errno_status(errno);
    if (!S_ISREG(st.st_mode)) return PX_EFORBIDDEN;
    n = strlen(real);
    if (n + 1 > outsz) return PX_ETOOLONG;
    memcpy(out, real, n + 1);
    return PX_OK;
}

static const struct {
    const char *ext;
    const char *type;
} mime_table[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"svg", "image/svg+xml"},
    {"ico", "image/x-icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"wasm", "application/wasm"},
    {"txt", "text/plain; charset=utf-8"},
};

const char *px_mime_type(const char *path) {
    const char *base, *dot;
    size_t i;
    if (!path) return "application/octet-stream";
    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    dot = strrchr(base, '.');
    if (dot && dot != base) {
        for (i = 0; i < sizeof mime_table / sizeof mime_table[0]; i++) {
            if (span_ieq(dot + 1, strlen(dot + 1), mime_table[i].ext)) return mime_table[i].type;
        }
    }
    return "application/octet-stream";
}
