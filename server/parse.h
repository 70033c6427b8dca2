/* parse.h - HTTP-independent parsing helpers for fmnist-serve: untrusted
 * request bytes in, validated meaning out.
 *
 * Job: multipart/form-data bodies, base64 and data: URLs, query strings,
 * URL paths, static-file path resolution, MIME types by extension and
 * Content-Type comparison, strict decimal numbers for flags and query
 * parameters.
 *
 * Leaves out: anything that knows about libmicrohttpd, sockets, JSON or
 * images; routing; building responses (px_http_status only suggests a
 * status code); multipart Content-Transfer-Encoding (RFC 7578 deprecates it)
 * and RFC 5987 filename*= values (ignored); nested multipart.
 *
 * Conventions (one for the whole module):
 *  - Every function that returns int returns PX_OK (0) on success or one
 *    negative px_status code.  The named exceptions: px_content_type_is is a
 *    predicate (1 or 0), px_b64_decoded_max returns a size, px_mime_type,
 *    px_strerror return static strings, px_http_status returns a status code.
 *  - The caller owns every buffer.  Nothing allocates, keeps state, prints or
 *    exits; every function is pure except px_static_resolve, which asks the
 *    file system (realpath, stat).  All functions are thread-safe.
 *  - Output strings are NUL-terminated.  On any error an output string buffer
 *    with room for one byte is set to "", so it is never left half-written.
 *  - Inputs are C strings unless a length is passed; with a length, the bytes
 *    need not be NUL-terminated and may contain NUL, and no byte at or past
 *    the length is ever read.
 *  - Multipart parts are zero-copy: their pointers point into the caller's
 *    body and are valid as long as it is. */
#ifndef FMNIST_PARSE_H
#define FMNIST_PARSE_H

#include <stddef.h>
#include <stdint.h>

typedef enum px_status {
    PX_OK = 0,
    PX_EINVAL = -1,      /* malformed input (syntax, bad escape or character,
                            %00) or a NULL where a pointer is required */
    PX_ETOOLONG = -2,    /* result does not fit the caller's buffer, or input
                            exceeds a documented limit */
    PX_ERANGE = -3,      /* a well-formed number outside [min, max] */
    PX_ENOTFOUND = -4,   /* query key absent; static file does not exist */
    PX_EFORBIDDEN = -5,  /* static path refused: traversal, hidden segment,
                            outside the root, or not a regular file */
    PX_ENOBOUNDARY = -6, /* multipart: no (or empty) boundary parameter, or the
                            body never contains its opening delimiter */
    PX_ETRUNCATED = -7,  /* multipart: body ends before the close delimiter */
    PX_ETOOMANY = -8,    /* multipart: more parts than max_parts */
    PX_EMALFORMED = -9,  /* multipart: malformed part headers or delimiter
                            line (including bare-LF line endings) */
    PX_ESYS = -10        /* unexpected operating-system error; errno is kept */
} px_status;

/* Short English description of a px_status ("unknown status" otherwise). */
const char *px_strerror(int rc);

/* Suggested HTTP status for a px_status: PX_OK 200, PX_ENOTFOUND 404,
 * PX_EFORBIDDEN 403, PX_ETOOMANY 413, PX_ESYS 500, every other code 400. */
int px_http_status(int rc);

/* ---- Content-Type --------------------------------------------------- */

/* 1 when the media type of header_value (the part before any ';', surrounding
 * blanks ignored) equals mime case-insensitively, else 0 (also for NULL or
 * empty arguments).  px_content_type_is("Application/JSON; charset=utf-8",
 * "application/json") == 1. */
int px_content_type_is(const char *header_value, const char *mime);

/* ---- multipart/form-data (RFC 7578 over RFC 2046) -------------------- */

#define PX_BOUNDARY_MAX 70            /* RFC 2046 limit on boundary length */
#define PX_MULTIPART_MAX_HEADER 8192  /* bytes of header lines per part */

/* Copies the boundary parameter of a Content-Type value such as
 * `multipart/form-data; boundary="a b"` into out (outsz >= PX_BOUNDARY_MAX + 1
 * always suffices).  The parameter name is matched case-insensitively; the
 * value may be a token or a quoted string (backslash escapes resolved), must
 * consist of RFC 2046 bchars and not end in a space.  Does not check the media
 * type: use px_content_type_is for that.
 * Returns PX_OK; PX_ENOBOUNDARY when there is no boundary parameter or it is
 * empty; PX_ETOOLONG when it is longer than PX_BOUNDARY_MAX or does not fit
 * out; PX_EINVAL for malformed parameters, a repeated boundary parameter, or a
 * character outside bchars. */
int px_multipart_boundary(const char *content_type, char *out, size_t outsz);

/* One part of a multipart/form-data body.  Every pointer points into the body
 * given to px_multipart_parse.  name and filename are the raw parameter values
 * of Content-Disposition: for a quoted value the bytes between the quotes,
 * with backslash escapes still in place (px_unquote resolves them; it is the
 * identity on values without a backslash). */
typedef struct px_part {
    const char *name;          /* never NULL for a parsed part; may be empty */
    size_t name_len;
    const char *filename;      /* NULL when the part has no filename=; a
                                  browser sends filename="" for an empty
                                  file input (non-NULL, length 0) */
    size_t filename_len;
    const char *content_type;  /* value of the part's Content-Type header,
                                  blanks trimmed; NULL when absent or empty */
    size_t content_type_len;
    const uint8_t *data;       /* the part's content, without the CRLF that
                                  belongs to the next delimiter */
    size_t data_len;
} px_part;

/* Parses a complete multipart/form-data body of len bytes.
 *
 * Accepts a preamble before the first delimiter and any epilogue after the
 * close delimiter `--boundary--` (both ignored), transport padding (spaces and
 * tabs) after a delimiter, header names in any case, obsolete header folding
 * (a line starting with a blank continues the previous header), and a part
 * whose headers are directly followed by the next delimiter (empty data).
 * Every part must carry exactly one `Content-Disposition: form-data` with a
 * name= parameter; filename= is optional, filename*= and unknown parameters
 * and headers are ignored.  A body with zero parts (`--b--`) is valid.
 *
 * Line endings: CRLF only.  A bare LF is rejected with PX_EMALFORMED: every
 * client that produces multipart bodies (browsers, curl, Python requests)
 * sends CRLF, and guessing at line ends inside binary data would make the
 * delimiter ambiguous.  A delimiter look-alike inside data (the boundary
 * followed by anything other than `--`, blanks+CRLF) is data.
 *
 * The boundary is a C string of 1..PX_BOUNDARY_MAX bytes, usually from
 * px_multipart_boundary.  Fills parts[0 .. *n_parts).  Runs in time linear in
 * len (a single KMP scan for delimiters; header lines are read once) and never
 * reads outside body[0 .. len).  err, when not NULL, receives a one-line
 * message naming the part and byte offset.
 *
 * Returns PX_OK; PX_ENOBOUNDARY (empty/NULL boundary, or no opening delimiter
 * in the body); PX_ETOOLONG (boundary longer than PX_BOUNDARY_MAX);
 * PX_ETRUNCATED (the body ends before the close delimiter); PX_ETOOMANY (a
 * part beyond max_parts begins: answer 413); PX_EMALFORMED (bad part headers,
 * headers over PX_MULTIPART_MAX_HEADER bytes, missing Content-Disposition or
 * name, bare LF); PX_EINVAL (NULL arguments).  On error *n_parts counts the
 * parts completed before it; the contents of parts[] are unspecified. */
int px_multipart_parse(const uint8_t *body, size_t len, const char *boundary,
                       px_part *parts, size_t max_parts, size_t *n_parts,
                       char *err, size_t errsz);

/* Resolves backslash escapes of a quoted-string body (`a\"b` -> `a"b`) into
 * out, NUL-terminated; *out_len (may be NULL) gets the length.  A lone
 * trailing backslash is kept.  Returns PX_OK, PX_ETOOLONG, PX_EINVAL (NULL). */
int px_unquote(const char *in, size_t len, char *out, size_t outsz,
               size_t *out_len);

/* ---- base64 (RFC 4648) ---------------------------------------------- */

/* Upper bound of the bytes px_b64_decode writes for len input characters. */
size_t px_b64_decoded_max(size_t len);

/* Decodes base64 in the standard (`+/`) or URL-safe (`-_`) alphabet, the two
 * may be mixed.  Padding is optional, but when present it must complete the
 * last quantum (`Zg==`, not `Zg=`) and only whitespace may follow it.
 * Whitespace (space, tab, CR, LF, FF, VT) is skipped anywhere; every other
 * character outside the alphabets is rejected, as are a dangling single
 * character and non-zero unused bits in the last quantum (`Zh==`), so every
 * byte string has exactly one accepted spelling per alphabet and layout.
 * out may be the same memory as in (in-place decoding): writes never overtake
 * reads.  *out_len gets the decoded length on success, 0 on error.
 * Returns PX_OK, PX_EINVAL (bad input), PX_ETOOLONG (outsz too small; size it
 * with px_b64_decoded_max). */
int px_b64_decode(const char *in, size_t len, uint8_t *out, size_t outsz,
                  size_t *out_len);

/* Splits an optional RFC 2397 prefix off a base64 payload.  When in starts
 * with `data:` (any case), it must be `data:[<mediatype>][;params];base64,`:
 * *payload points after the comma, and *mime / *mime_len (both may be NULL)
 * get the media type before the first ';' (possibly empty).  Without the
 * prefix, *payload = in, *payload_len = len and *mime = NULL, so callers can
 * always call it before px_b64_decode.
 * Returns PX_OK, or PX_EINVAL for a data: URL without a comma or that is not
 * ;base64 encoded (or NULL arguments). */
int px_strip_data_url(const char *in, size_t len, const char **payload,
                      size_t *payload_len, const char **mime, size_t *mime_len);

/* ---- query strings, URL paths, numbers ------------------------------ */

/* Finds key in an application/x-www-form-urlencoded query ("a=1&b=x+y", an
 * optional leading '?' is skipped) and copies its percent-decoded value, with
 * '+' as space, into out.  Keys are compared after decoding; the first match
 * wins; a key without '=' has the empty value; pairs whose key is malformed
 * never match.  Returns PX_OK (found), PX_ENOTFOUND, PX_ETOOLONG (value does
 * not fit out), PX_EINVAL (bad or %00 escape in the value, empty key, NULL,
 * outsz == 0). */
int px_query_get(const char *query, const char *key, char *out, size_t outsz);

/* Percent-decodes a URL path into out ('+' stays '+').  Returns PX_OK,
 * PX_EINVAL (an escape that is not %XX, or %00), PX_ETOOLONG. */
int px_path_decode(const char *in, char *out, size_t outsz);

/* Strict decimal integers: an optional sign ('+' or '-'; px_parse_size takes
 * none), then one or more ASCII digits, nothing else (no blanks, no 0x, no
 * trailing garbage).  *out is written only on success.  Returns PX_OK,
 * PX_EINVAL (syntax, NULL, min > max), PX_ERANGE (outside [min, max],
 * including values too large for the type). */
int px_parse_int(const char *s, int min, int max, int *out);
int px_parse_size(const char *s, size_t min, size_t max, size_t *out);

/* ---- static files --------------------------------------------------- */

#define PX_STATIC_MAX_PATH 1024 /* decoded URL path bytes */

/* Maps a URL path (leading '/', no query string) onto a regular file under
 * root_realpath and writes the file's canonical path into out.
 *
 * root_realpath must be absolute and canonical (the output of realpath());
 * a non-canonical root only makes more paths refused.  The URL path is
 * percent-decoded here, once; because every check runs after decoding,
 * `%2e%2e`, `..%2f` and `%5c` are caught like their plain spellings.  (If the
 * HTTP layer already decoded the path, this second pass only makes names with
 * '%' unreachable, which static assets do not use.)  "/" and a trailing '/'
 * map to index.html.
 *
 * Refused before touching the file system: an escape that is not %XX or is
 * %00 (PX_EINVAL); no leading '/' (PX_EINVAL); a decoded path over
 * PX_STATIC_MAX_PATH bytes (PX_ETOOLONG); backslashes and control characters,
 * empty segments ("//etc/passwd", "/a//b"), and any segment starting with '.'
 * (".", "..", ".git", ".env") (PX_EFORBIDDEN).  Then the joined path is put
 * through realpath(): a result outside root_realpath (a symlink pointing out)
 * or that is not a regular file (a directory) is PX_EFORBIDDEN; symlinks that
 * stay inside are followed.  ENOENT/ENOTDIR give PX_ENOTFOUND, ELOOP/EACCES
 * PX_EFORBIDDEN, ENAMETOOLONG PX_ETOOLONG, anything else PX_ESYS.
 *
 * The check and the later open() are not atomic: the server should open the
 * returned path with O_NOFOLLOW and fstat() it again.  The static directory
 * itself is trusted (only its administrator can place symlinks in it). */
int px_static_resolve(const char *root_realpath, const char *url_path,
                      char *out, size_t outsz);

/* Content type for a file name by its extension (case-insensitive): html/htm
 * "text/html; charset=utf-8", js/mjs "text/javascript; charset=utf-8", css,
 * json, map, png, jpg/jpeg, gif, webp, svg, ico, woff, woff2, wasm, txt;
 * anything else (or no extension, or a dot-file name) is
 * "application/octet-stream".  Never NULL. */
const char *px_mime_type(const char *path);

#endif
