/* http.c - the libmicrohttpd edge of fmnist-serve: bytes in, srv_request
 * out, srv_response back to bytes.  Everything that means something (routes,
 * decoding, inference, JSON) is srv_handle's; this file only knows HTTP.
 *
 * One request, in libmicrohttpd's order of callbacks:
 *   on_uri       the request line is parsed: allocate the request (it keeps
 *                the raw target, query included), mark the connection busy,
 *                count it in flight
 *   on_request   1st call (headers read): reject a too-long target (414),
 *                too-large headers (431) or a Content-Length over the cap
 *                (413) before any body is read (so no 100 Continue is sent);
 *                later calls: append the body, 413 as soon as it passes
 *                the cap; last call: srv_handle on this worker thread and
 *                queue its answer
 *   on_completed the response is sent (or the connection failed): log the
 *                line, count the metrics, restart the connection's deadline
 *                clock, free the request
 *
 * The whole-request deadline.  libmicrohttpd's connection timeout is an idle
 * timeout: any byte resets it, so a client trickling a byte a second holds a
 * connection forever, and while it is still sending headers no callback of
 * ours runs at all.  So every connection is registered at accept
 * (on_connection) in a list with two clocks, and http_tick - run by the
 * main thread every 250 ms - shuts down (shutdown(2), both directions) any
 * connection that has taken longer than cfg->request_timeout_s either to
 * send a request line (counted from the accept, or from the end of the
 * previous request on a kept-alive connection) or to complete the request
 * that line began (counted from on_uri, so a request after an idle pause on
 * a kept-alive connection still gets the whole time; a client is cut after
 * at most twice the timeout).  The worker that owns the socket then sees end of
 * file or a failed send and closes it in its own time; we never close a
 * socket libmicrohttpd owns.  The list lock is also taken by on_connection's
 * CLOSED notification, which libmicrohttpd sends before it closes the
 * socket, so a descriptor we shut down is never one already reused.
 *
 * Oversized headers.  libmicrohttpd answers a request head that does not
 * fit its per-connection memory pool itself, with an HTML page.  The pool is
 * HTTP_CONN_MEMORY (64 KiB, four times HTTP_MAX_HEADER_BYTES), so heads
 * between the 16 KiB cap and ~33 KiB of short header lines (~63 KiB in one
 * header) reach on_request and get our JSON 431; only larger heads get the
 * library's 431 page.
 *
 * Left out: TLS (terminate it in front), HTTP/2, per-client rate limits,
 * compression. */
#define _GNU_SOURCE /* accept4, pipe2 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "http.h"
#include "jsonw.h"

/* A client connection, registered from accept to close.  The clocks and
 * flags are written by the connection's worker and read by http_tick. */
typedef struct http_conn {
    struct http_conn *prev, *next; /* the server's list (under lock) */
    int fd;
    atomic_llong since_ms; /* accept, then the end of each request: bounds the wait for a request line */
    atomic_llong start_ms; /* the current request's request line: bounds the request */
    atomic_int busy;       /* a request line was parsed and its response is not finished */
    atomic_int late;       /* http_tick shut it down for its deadline (for the log line) */
    int shut;              /* http_tick shut it down (under lock) */
} http_conn;

struct http_server {
    srv_ctx *ctx;
    struct MHD_Daemon *d;
    pthread_mutex_t lock; /* the connection list and each shut flag */
    http_conn *conns;
    pthread_key_t ws_key; /* set on a worker's first request; its destructor frees the workspaces */
    int ws_key_ok;
    int listen_fd;        /* ours: the acceptor hands connections to libmicrohttpd */
    int wake[2];          /* pipe: a byte tells the acceptor to stop */
    pthread_t acceptor;
    int acceptor_running; /* joined by http_quiesce / http_stop */
    atomic_uint added;    /* connections handed to the library (acceptor) */
    atomic_uint closed;   /* connections the library closed (on_connection) */
    uint16_t port;
    unsigned threads;
};

/* One request, from its request line to its completion. */
typedef struct http_req {
    http_server *srv;
    http_conn *conn;    /* NULL when the connection could not be registered */
    char *uri;          /* the request target as received (query included until split) */
    char method[16];    /* "" until on_request runs */
    uint64_t t0_ns;     /* request line parsed */
    int started;        /* on_request has seen the headers */
    int answered;       /* a response is queued: the rest of any upload is discarded */
    uint64_t early_ns;  /* when early_reply answered mid-upload (0: it did not) */
    uint8_t *body;      /* [cap], len used; grows as the body arrives */
    size_t len, cap;
    size_t expect;      /* Content-Length (0: none or chunked) */
    int status;         /* of the queued response; 0 when none */
    uint64_t bytes;     /* body bytes of the queued response */
    const char *route;  /* metrics label of the queued response (static) */
} http_req;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long long now_ms(void) {
    return (long long)(now_ns() / 1000000u);
}

static void ws_key_free(void *p) {
    (void)p;
    srv_thread_ws_free();
}

void http_log_sanitize(const char *path, size_t len, char *out, size_t outsz) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (outsz < 8) {
        if (outsz) out[0] = '\0';
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)path[i];
        int esc = ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\';
        size_t need = esc ? 3 : 1;
        if (o + need > outsz - 4) { /* keep room for "..." and the NUL */
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (esc) {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

/* ---------------------------------------------------- connection list */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) atomic_fetch_add(&s->closed, 1);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        http_conn *hc = ci ? calloc(1, sizeof *hc) : NULL;
        *socket_context = hc;
        if (!hc) {
            fprintf(stderr, "fmnist-serve: out of memory: a connection runs without a request deadline\n");
            return;
        }
        hc->fd = ci->connect_fd;
        atomic_init(&hc->since_ms, now_ms());
        atomic_init(&hc->start_ms, 0);
        atomic_init(&hc->busy, 0);
        atomic_init(&hc->late, 0);
        pthread_mutex_lock(&s->lock);
        hc->next = s->conns;
        if (s->conns) s->conns->prev = hc;
        s->conns = hc;
        pthread_mutex_unlock(&s->lock);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_conn *hc = *socket_context;
        if (!hc) return;
        pthread_mutex_lock(&s->lock);
        if (hc->prev) hc->prev->next = hc->next;
        else s->conns = hc->next;
        if (hc->next) hc->next->prev = hc->prev;
        pthread_mutex_unlock(&s->lock);
        free(hc);
        *socket_context = NULL;
    }
}

void http_tick(http_server *s) {
    long long now = now_ms();
    long long limit = (long long)s->ctx->cfg->request_timeout_s * 1000;
    int draining = atomic_load(&s->ctx->draining);
    unsigned cut = 0;
    pthread_mutex_lock(&s->lock);
    for (http_conn *hc = s->conns; hc; hc = hc->next) {
        if (hc->shut) continue;
        int busy = atomic_load(&hc->busy);
        int late = now - atomic_load(busy ? &hc->start_ms : &hc->since_ms) > limit;
        if (late || (draining && !busy)) {
            shutdown(hc->fd, SHUT_RDWR);
            hc->shut = 1;
            atomic_store(&hc->late, late);
            cut += (unsigned)late;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (cut)
        fprintf(stderr, "fmnist-serve: request deadline (%u s) passed: closed %u connection%s\n",
                s->ctx->cfg->request_timeout_s, cut, cut == 1 ? "" : "s");
}

/* ------------------------------------------------------------ request */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    http_server *s = cls;
    http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->uri = strdup(uri ? uri : "");
    if (!r->uri) {
        free(r);
        return NULL;
    }
    r->srv = s;
    r->t0_ns = now_ns();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->conn = ci ? ci->socket_context : NULL;
    if (r->conn) {
        atomic_store(&r->conn->start_ms, (long long)(r->t0_ns / 1000000u));
        atomic_store(&r->conn->busy, 1);
    }
    srv_metrics_inflight(s->ctx->metrics, 1);
    return r;
}

static const char *termination(enum MHD_RequestTerminationCode toe) {
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return " (connection error)";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return " (idle timeout)";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return " (shutdown)";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return " (read error)";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return " (client closed)";
    }
    return " (closed)";
}

/* Appends the string s to dst[0..n); returns the new length. */
static size_t cat(char *dst, size_t n, const char *s) {
    size_t len = strlen(s);
    memcpy(dst + n, s, len);
    return n + len;
}

/* Writes the request log line to stdout.  A failed write (stdout closed,
 * a full disk) is not reported: the log is where it would be reported. */
static void log_line(const char *line, size_t len) {
    while (len > 0) {
        ssize_t w = write(STDOUT_FILENO, line, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        line += w;
        len -= (size_t)w;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe) {
    http_server *s = cls;
    http_req *r = *req_cls;
    (void)c;
    if (!r) return;
    *req_cls = NULL;
    uint64_t t1 = now_ns();
    double secs = (double)(t1 - r->t0_ns) / 1e9;
    char path[512];
    http_log_sanitize(r->uri, strcspn(r->uri, "?"), path, sizeof path);
    const char *why = r->conn && atomic_load(&r->conn->late) ? " (request deadline passed)"
                      : r->early_ns                              ? " (answered before the end of the upload)"
                                                                 : termination(toe);
    /* "METHOD PATH STATUS BYTES MICROSECONDSus[ (why)]\n", written with one
     * write(2), formatted outside any lock: the workers do not queue on
     * stdio's FILE lock, which a line-buffered fprintf holds across its
     * write (that showed up as futex waits under load).  A line is at most
     * 15 + 511 + 3 * 20 + 42 + 8 bytes, under PIPE_BUF, so lines never
     * interleave; no snprintf (its format parsing was ~1 % of a request). */
    char line[768];
    size_t n = 0;
    n = cat(line, n, r->method[0] ? r->method : "-");
    line[n++] = ' ';
    n = cat(line, n, path);
    line[n++] = ' ';
    if (r->status)
        n += jw_fmt_int(r->status, line + n);
    else
        line[n++] = '-';
    line[n++] = ' ';
    n += jw_fmt_int((long long)(r->bytes & INT64_MAX), line + n);
    line[n++] = ' ';
    n += jw_fmt_int((long long)((t1 - r->t0_ns) / 1000u), line + n);
    n = cat(line, n, "us");
    n = cat(line, n, why);
    line[n++] = '\n';
    log_line(line, n);
    if (r->status) srv_metrics_request(s->ctx->metrics, r->route ? r->route : "other", r->method, r->status, secs);
    srv_metrics_inflight(s->ctx->metrics, -1);
    if (r->conn) {
        atomic_store(&r->conn->since_ms, (long long)(t1 / 1000000u));
        atomic_store(&r->conn->busy, 0);
    }
    free(r->body);
    free(r->uri);
    free(r);
}

static void response_init(srv_response *resp) {
    memset(resp, 0, sizeof *resp);
    resp->fd = -1;
}

static void add_header(struct MHD_Response *mr, const char *name, const char *value) {
    /* libmicrohttpd refuses values with CR or LF: nothing can be injected. */
    if (value && *value) MHD_add_response_header(mr, name, value);
}

/* Queues resp (consuming it) and records what was queued in r. */
static enum MHD_Result queue(http_server *s, struct MHD_Connection *c, http_req *r, srv_response *resp) {
    struct MHD_Response *mr;
    uint64_t bytes;
    if (resp->fd >= 0) {
        mr = MHD_create_response_from_fd64(resp->file_size, resp->fd);
        if (mr) resp->fd = -1; /* libmicrohttpd closes it */
        bytes = resp->file_size;
    } else {
        static const char oom[] = "{\"error\":\"out of memory; retry later\"}";
        if (!resp->body && resp->status >= 400) { /* srv_error could not allocate even its short message */
            resp->content_type = "application/json";
            mr = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        } else {
            mr = MHD_create_response_from_buffer(resp->body_len, resp->body ? (void *)resp->body : (void *)"",
                                                 resp->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        }
        if (mr) resp->body = NULL; /* libmicrohttpd frees it */
        bytes = resp->body_len ? resp->body_len : (resp->status >= 400 ? sizeof oom - 1 : 0);
    }
    if (!mr) {
        srv_response_free(resp);
        return MHD_NO;
    }
    add_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    add_header(mr, "X-Content-Type-Options", "nosniff");
    add_header(mr, MHD_HTTP_HEADER_ALLOW, resp->allow);
    add_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, resp->cache_control);
    add_header(mr, MHD_HTTP_HEADER_ETAG, resp->etag);
    if (resp->cors_origin[0]) {
        add_header(mr, "Access-Control-Allow-Origin", resp->cors_origin);
        if (strcmp(resp->cors_origin, "*") != 0) add_header(mr, MHD_HTTP_HEADER_VARY, "Origin");
        if (strcmp(r->method, "OPTIONS") == 0) {
            add_header(mr, "Access-Control-Allow-Methods", resp->allow[0] ? resp->allow : "GET, HEAD, POST, PUT, OPTIONS");
            add_header(mr, "Access-Control-Allow-Headers", "Content-Type");
            add_header(mr, "Access-Control-Max-Age", "600");
        }
    }
    if (atomic_load(&s->ctx->draining)) add_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)resp->status, mr);
    MHD_destroy_response(mr);
    if (ok == MHD_YES) {
        r->status = resp->status;
        r->bytes = strcmp(r->method, "HEAD") == 0 ? 0 : bytes;
        r->route = resp->route;
        r->answered = 1;
    }
    srv_response_free(resp);
    return ok;
}

/* Errors raised here, before srv_handle: a JSON body like srv_handle's. */
static enum MHD_Result queue_error(http_server *s, struct MHD_Connection *c, http_req *r, int status,
                                   const char *msg) {
    srv_response resp;
    response_init(&resp);
    srv_error(&resp, status, "%s", msg);
    if (!resp.route) resp.route = "other";
    const char *allowed = s->ctx->cfg->cors_origin;
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    /* The same policy as srv_handle's: "*", or the one origin when the
     * request has no Origin header or names it. */
    if (allowed && *allowed && (strcmp(allowed, "*") == 0 || !origin || strcasecmp(origin, allowed) == 0))
        snprintf(resp.cors_origin, sizeof resp.cors_origin, "%s", allowed);
    return queue(s, c, r, &resp);
}

static enum MHD_Result add_header_len(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    size_t *total = cls;
    (void)kind;
    *total += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

/* Content-Length as a number; SIZE_MAX when absent, malformed or huge
 * (libmicrohttpd has already refused a malformed one). */
static size_t content_length(struct MHD_Connection *c, int *present) {
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    *present = v != NULL;
    if (!v || !*v) return SIZE_MAX;
    size_t n = 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9' || n > (SIZE_MAX - 9) / 10) return SIZE_MAX;
        n = n * 10 + (size_t)(*v - '0');
    }
    return n;
}

/* First call: the headers are in, no body byte has been read. */
static enum MHD_Result on_headers(http_server *s, struct MHD_Connection *c, http_req *r) {
    const srv_config *cfg = s->ctx->cfg;
    size_t uri_len = strlen(r->uri);
    if (uri_len > HTTP_MAX_URI_BYTES) {
        char msg[96];
        snprintf(msg, sizeof msg, "request target longer than %zu bytes: shorten the path and query",
                 HTTP_MAX_URI_BYTES);
        return queue_error(s, c, r, 414, msg);
    }
    size_t head = uri_len;
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_len, &head);
    if (head > HTTP_MAX_HEADER_BYTES) {
        char msg[96];
        snprintf(msg, sizeof msg, "request headers larger than %zu bytes in all: send fewer or shorter headers",
                 HTTP_MAX_HEADER_BYTES);
        return queue_error(s, c, r, 431, msg);
    }
    int present;
    size_t cl = content_length(c, &present);
    if (present && cl > cfg->max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes (--max-body-bytes)", cfg->max_body_bytes);
        return queue_error(s, c, r, 413, msg);
    }
    r->expect = present ? cl : 0; /* memory follows the bytes that arrive, not the claim */
    return MHD_YES;
}

/* An answer in the middle of an upload.  libmicrohttpd 0.9.75 accepts a
 * response only before the body or after all of it (MHD_queue_response
 * refuses one in between), so to answer an oversized chunked upload as soon
 * as it passes the cap we write the answer to the socket ourselves - safe
 * here: the library is only reading the body at this point and writes
 * nothing - and half-close our side.  Then we keep reading and discarding
 * what the client still sends for at most HTTP_LINGER_MS, so that its
 * kernel does not answer our close with a reset that could destroy the
 * answer before the client reads it; a client that reads it stops sending
 * and closes.  The final call returns MHD_NO so the library closes the
 * connection without a second answer. */
#define HTTP_LINGER_MS 2000

static int send_all(int fd, const char *p, size_t n) {
    for (int tries = 0; n > 0 && tries < 50; tries++) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            struct pollfd pf = {fd, POLLOUT, 0};
            poll(&pf, 1, 20);
        } else {
            return -1;
        }
    }
    return n == 0 ? 0 : -1;
}

static void early_reply(struct MHD_Connection *c, http_req *r, int status, const char *msg) {
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    r->early_ns = now_ns();
    srv_response resp;
    response_init(&resp);
    srv_error(&resp, status, "%s", msg);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-Content-Type-Options: nosniff\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, reason && *reason ? reason : "Error",
                     resp.content_type ? resp.content_type : "application/json", resp.body_len);
    if (ci && n > 0 && (size_t)n < sizeof head && send_all(ci->connect_fd, head, (size_t)n) == 0 &&
        send_all(ci->connect_fd, resp.body ? resp.body : "", resp.body_len) == 0) {
        shutdown(ci->connect_fd, SHUT_WR);
        r->status = status;
        r->bytes = resp.body_len;
        r->route = resp.route ? resp.route : "other";
    }
    srv_response_free(&resp);
}

/* A chunk of the body: append it, or 413 as soon as it passes the cap. */
static enum MHD_Result on_body(http_server *s, struct MHD_Connection *c, http_req *r, const char *data, size_t n) {
    size_t max = s->ctx->cfg->max_body_bytes;
    if (r->early_ns) /* answered: discard, for a while */
        return now_ns() - r->early_ns > (uint64_t)HTTP_LINGER_MS * 1000000u ? MHD_NO : MHD_YES;
    if (r->answered) return MHD_YES;
    if (n > max - r->len) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes (--max-body-bytes)", max);
        early_reply(c, r, 413, msg);
        return MHD_YES;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        while (cap < r->len + n) cap = cap > max / 2 ? max : cap * 2;
        if (r->expect >= r->len + n && cap > r->expect) cap = r->expect; /* the exact Content-Length */
        uint8_t *p = realloc(r->body, cap);
        if (!p) {
            early_reply(c, r, 503, "out of memory");
            return MHD_YES;
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    http_server *s = cls;
    http_req *r = *req_cls;
    (void)url; /* libmicrohttpd's copy is already percent-decoded; srv_handle wants the raw path */
    (void)version;
    if (!r) return MHD_NO; /* on_uri could not allocate: close the connection */
    if (!r->started) {
        r->started = 1;
        snprintf(r->method, sizeof r->method, "%s", method);
        return on_headers(s, c, r);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return on_body(s, c, r, upload_data, n);
    }
    if (r->answered) return MHD_YES;
    if (r->early_ns) return MHD_NO; /* answered mid-upload: close without a second answer */

    if (s->ws_key_ok && !pthread_getspecific(s->ws_key)) pthread_setspecific(s->ws_key, s);
    char *q = strchr(r->uri, '?');
    if (q) *q++ = '\0';
    srv_request req = {
        .method = method,
        .path = r->uri,
        .query = q ? q : "",
        .content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"),
        .if_none_match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH),
        .body = r->len ? r->body : NULL,
        .body_len = r->len,
    };
    srv_response resp;
    response_init(&resp);
    srv_handle(s->ctx, &req, &resp);
    return queue(s, c, r, &resp);
}

/* ------------------------------------------------------------- daemon */

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\r\n")] = '\0';
    fprintf(stderr, "fmnist-serve: libmicrohttpd: %s\n", line);
}

/* Connections handed to the library and not yet closed, by our own count:
 * the library's lags behind MHD_add_connection (a worker takes the new
 * connection in its own time).  A connection the library drops before it
 * starts (only on out-of-memory) would stay counted. */
static unsigned open_connections(http_server *s) {
    return atomic_load(&s->added) - atomic_load(&s->closed);
}

/* The acceptor.  libmicrohttpd's workers would accept connections
 * themselves, each taking up to ten in a row when the listening socket
 * wakes them, so a burst of connects (a load generator, a proxy opening
 * its keep-alive pool) could land on one worker while the other idled: we
 * measured all 16 of wrk's connections on one of two workers, half the
 * throughput and twice the latency.  So this thread accepts and passes each
 * connection to MHD_add_connection, which spreads them over the workers
 * (by descriptor: consecutive descriptors go to consecutive workers).  At
 * the connection limit it stops accepting until a connection closes, so
 * clients wait in the backlog as they would with the library's accept. */
static void *acceptor_main(void *arg) {
    http_server *s = arg;
    unsigned limit = s->ctx->cfg->connection_limit;
    int warned = 0;
    for (;;) {
        int full = open_connections(s) >= limit; /* then look again in 20 ms */
        struct pollfd p[2] = {{.fd = s->wake[0], .events = POLLIN}, {.fd = s->listen_fd, .events = POLLIN}};
        if (poll(p, full ? 1 : 2, full ? 20 : -1) < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "fmnist-serve: acceptor: poll: %s\n", strerror(errno));
            return NULL;
        }
        if (p[0].revents) return NULL; /* http_quiesce / http_stop */
        if (full || !p[1].revents) continue;
        /* drain the backlog, a bounded burst at a time, up to the limit */
        for (int i = 0; i < 64 && open_connections(s) < limit; i++) {
            struct sockaddr_storage sa;
            socklen_t len = sizeof sa;
            int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (!warned++) /* EMFILE, ENFILE, ENOBUFS, ENOMEM: wait, then retry */
                    fprintf(stderr, "fmnist-serve: accept: %s (retrying)\n", strerror(errno));
                struct pollfd q = {.fd = s->wake[0], .events = POLLIN};
                if (poll(&q, 1, 100) > 0) return NULL;
                break;
            }
            warned = 0;
            /* On failure the library has closed fd and said why (error log). */
            if (MHD_add_connection(s->d, fd, (struct sockaddr *)&sa, len) == MHD_YES) atomic_fetch_add(&s->added, 1);
        }
    }
}

static void acceptor_stop(http_server *s) {
    if (!s->acceptor_running) return;
    char b = 1;
    while (write(s->wake[1], &b, 1) < 0 && errno == EINTR) {
    }
    pthread_join(s->acceptor, NULL);
    s->acceptor_running = 0;
}

/* Binds and listens on host:port: the address family getaddrinfo gives
 * first, IPv6 sockets v6-only (as libmicrohttpd made them), SO_REUSEADDR,
 * non-blocking for the acceptor's drain loop.  Returns the socket or -1. */
static int listen_on(const srv_config *cfg, char *err, size_t errsz) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, errsz, "--host %s: %s", cfg->host, gai_strerror(rc));
        if (ai) freeaddrinfo(ai);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1, e = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (ai->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        e = errno;
        if (fd >= 0) close(fd);
        fd = -1;
        snprintf(err, errsz, "cannot listen on %s port %d: %s", cfg->host, cfg->port, strerror(e));
    }
    freeaddrinfo(ai);
    return fd;
}

http_server *http_start(srv_ctx *ctx, char *err, size_t errsz) {
    const srv_config *cfg = ctx->cfg;
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    s->ctx = ctx;
    s->listen_fd = s->wake[0] = s->wake[1] = -1;
    atomic_init(&s->added, 0);
    atomic_init(&s->closed, 0);
    pthread_mutex_init(&s->lock, NULL);
    s->ws_key_ok = pthread_key_create(&s->ws_key, ws_key_free) == 0;

    s->listen_fd = listen_on(cfg, err, errsz);
    if (s->listen_fd < 0) {
        http_stop(s);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(s->listen_fd, (struct sockaddr *)&bound, &blen) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    if (pipe2(s->wake, O_CLOEXEC) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        http_stop(s);
        return NULL;
    }

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->threads = cfg->threads ? cfg->threads : (unsigned)(cores > 0 ? cores : 1);
    if (s->threads > cfg->connection_limit) s->threads = cfg->connection_limit; /* >= 1 connection per worker */
    if (s->threads < 1) s->threads = 1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_AUTO;
    errno = 0;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_THREAD_POOL_SIZE, s->threads,
                            MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, cfg->idle_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_CONN_MEMORY,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_END);
    if (!s->d) {
        int e = errno;
        snprintf(err, errsz, "cannot start the HTTP workers%s%s", e ? ": " : "", e ? strerror(e) : "");
        http_stop(s);
        return NULL;
    }
    int rc = pthread_create(&s->acceptor, NULL, acceptor_main, s);
    if (rc != 0) {
        snprintf(err, errsz, "cannot start the acceptor thread: %s", strerror(rc));
        http_stop(s);
        return NULL;
    }
    s->acceptor_running = 1;
    pthread_setname_np(s->acceptor, "accept");
    return s;
}

uint16_t http_port(const http_server *s) {
    return s->port;
}

unsigned http_threads(const http_server *s) {
    return s->threads;
}

void http_quiesce(http_server *s) {
    acceptor_stop(s);
    /* Stop listening: on Linux shutdown(2) on a listening socket refuses new
     * clients at once (and resets those waiting in the backlog) instead of
     * leaving them unserved in the backlog until we exit. */
    if (s->listen_fd >= 0) shutdown(s->listen_fd, SHUT_RDWR);
}

unsigned http_connections(http_server *s) {
    return open_connections(s);
}

void http_stop(http_server *s) {
    if (!s) return;
    acceptor_stop(s);
    if (s->d) MHD_stop_daemon(s->d); /* joins the workers: their key destructors run */
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    if (s->ws_key_ok) pthread_key_delete(s->ws_key);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
