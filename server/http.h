/* http.h - the libmicrohttpd edge of fmnist-serve.
 *
 * Listens itself and hands each accepted connection to the daemon's worker
 * pool (epoll) from an acceptor thread, so connections are spread over the
 * workers; gathers each request's body under
 * cfg->max_body_bytes, hands an srv_request to srv_handle() on the worker
 * thread, turns the srv_response into bytes, logs one line per request and
 * counts it in the metrics.  It also enforces what libmicrohttpd does not:
 * a whole-request deadline (http_tick), a header-size cap answered in JSON,
 * and a drain that closes idle keep-alive connections.
 *
 * Threads: http_start, http_tick, http_quiesce, http_connections and
 * http_stop are called from one controlling thread (main's signal loop);
 * everything else runs on libmicrohttpd's workers (and the acceptor). */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "srv.h"

/* Headers (names + values + the request target) larger than this are
 * answered 431 in JSON (16 KiB: Node.js's default limit; nginx's default
 * buffers allow 8 KiB a line); libmicrohttpd's per-connection memory pool
 * (HTTP_CONN_MEMORY) is sized so that such a request still reaches us. */
#define HTTP_MAX_HEADER_BYTES ((size_t)16 * 1024)
/* Request targets longer than this are answered 414 in JSON. */
#define HTTP_MAX_URI_BYTES ((size_t)8 * 1024)
/* libmicrohttpd's per-connection memory pool.  A request head that does
 * not fit gets the library's own 431 with an HTML body; at 64 KiB a single
 * header of up to ~63 KiB, or ~480 header lines of 70 bytes (~33 KiB: each
 * line also costs the library a parsed entry), still reaches us and gets our
 * JSON 431.  Not more: libmicrohttpd 0.9.75 zeroes the whole pool, and
 * half of it again, after every request, and every open connection keeps
 * its pool.  Measured against 160 KiB (docs/BENCHMARKS.md section 3):
 * peak RSS under 64 connections 28 against 35 MiB (33 → 27 MiB during the
 * load, 64 → 39 MiB at 256 connections), and ~15 % less CPU per mlp2
 * request at 64 connections, where the pools no longer fit the caches. */
#define HTTP_CONN_MEMORY ((size_t)64 * 1024)

typedef struct http_server http_server;

/* Binds ctx->cfg->host:port and starts the worker threads.  ctx must stay
 * valid until http_stop.  Returns NULL and a message in err on failure. */
http_server *http_start(srv_ctx *ctx, char *err, size_t errsz);
/* The port actually bound (the ephemeral one when cfg->port is 0). */
uint16_t http_port(const http_server *s);
/* Number of worker threads. */
unsigned http_threads(const http_server *s);
/* Enforces the request deadline (and, once ctx->draining is set, closes
 * connections with no request in progress).  Call every ~250 ms. */
void http_tick(http_server *s);
/* Stops accepting new connections; open ones are still served. */
void http_quiesce(http_server *s);
/* Open client connections. */
unsigned http_connections(http_server *s);
/* Stops the daemon (closing whatever is still open) and frees s. */
void http_stop(http_server *s);

/* Writes path to out (outsz >= 8) with control characters, blanks, '"',
 * '\\' and bytes >= 0x7f escaped as %XX, cut at outsz - 1 bytes with "..."
 * when longer: safe to print in a log line. */
void http_log_sanitize(const char *path, size_t len, char *out, size_t outsz);

#endif
