/* server.h — server side of HTTP/1.1: accepting, reading requests, writing responses.
 *
 * One struct http_server per worker thread and listening socket; it runs on that thread's loop.
 * The server owns each client connection (struct http_conn): it reads and parses request heads
 * with the strict parser (parser.h), enforces limits and timeouts, decodes request bodies
 * (Content-Length or chunked) and hands them to a handler in pieces, and queues whatever the
 * handler sends. Keep-alive and pipelining are handled here: requests on one connection are
 * handled one at a time, in order; the next pipelined request is parsed only after the handler
 * has called http_conn_response_done() for the current one.
 *
 * The handler (struct http_server_ops) is either the balancer's proxy, which streams, or the
 * buffered adapter (http_server_buffered_ops) that collects the whole body and calls an
 * http_handler_fn (message.h) for the web servers.
 *
 * HTTP/2 (h2.h, the balancer only): a TLS connection whose ALPN chose "h2" (http_tls_set_h2), or
 * with lim.h2c a plain one that starts with the HTTP/2 preface, is served by an h2 session, which
 * hands the handler each request stream as a struct http_conn of its own: one request, no
 * pipelining, no tunnel, and every call below works on it as documented (http_conn_send takes the
 * HTTP/1.1 response, which the stream turns into HEADERS and DATA). Its limits are the same
 * (max_head, max_body, the rate limit), plus the HTTP/2 ones of h2.h.
 *
 * Errors the server detects itself (malformed request → 400/501/505, too long → 414/431, body too
 * large → 413, header deadline → 408) are answered by the server, and the connection is closed.
 *
 * Lifetime: the handler may keep a struct http_conn pointer while it owns a request (between
 * on_request and http_conn_response_done, or until on_abort). After on_abort the pointer is dead.
 * The connection is freed only from a deferred call, never inside a handler callback.
 *
 * Sends and frees: a call never frees its caller. No function below that a handler calls
 * (http_conn_send, cork/uncork, http_conn_response_done, http_conn_respond_error,
 * http_conn_pause_body) closes the connection or aborts the request the caller owns: when a
 * write fails, the connection is only marked (no more I/O; later sends are dropped and return 0)
 * and it is closed, with on_abort if the handler still owns the request, from a deferred call
 * after the current callback has returned. So the handler's state is still its own after any of
 * these calls; it learns of the failure from on_abort. The handler is re-entered from inside a
 * call only twice: on_drain from http_conn_uncork (the queue drained there), and the next
 * pipelined request's callbacks (on_request ... even on_abort, for that request) from
 * http_conn_response_done, once the caller's own request is over. */
#ifndef AGORA_HTTP_SERVER_H
#define AGORA_HTTP_SERVER_H
#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "http/message.h"
#include "http/parser.h"

struct http_conn;
struct http_server;
struct http_tls;

/* Counts of answers by status, for metrics: those a server makes itself (malformed or too large
 * requests, timeouts, limits) and, in the balancer, its own (lb/metrics.h). Relaxed atomics,
 * shared by the workers. */
#define HTTP_ANSWER_CODES                                                                                              \
    {                                                                                                                  \
        400, 403, 408, 413, 414, 429, 431, 500, 501, 502, 503, 504, 505                                                \
    }
#define HTTP_ANSWER_N 14 /* the codes above and "other" */
struct http_answers {
    atomic_uint_fast64_t by_code[HTTP_ANSWER_N];
};
/* Counts one answer with this status. */
void http_answers_count(struct http_answers *a, int status);
/* The status counted at index i (0 for "other"). */
int http_answers_code(unsigned i);

/* What a server counts for its owner's metrics (http_server_limits.stats). */
struct http_server_stats {
    atomic_int conns;                /* open client connections */
    atomic_uint_fast64_t tls_failed; /* TLS handshakes that failed or missed their deadline */
    struct http_answers answers;     /* answers the server made itself */
};

struct http_server_limits {
    size_t max_line;                 /* request line, → 414; default 8192 */
    size_t max_head;                 /* whole head, → 431; default 16384 */
    uint64_t max_body;               /* → 413; 0 = unlimited */
    unsigned header_timeout_ms;      /* whole-head deadline from its first byte, → 408; default 30000 */
    unsigned idle_timeout_ms;        /* keep-alive idle between requests; default 60000 */
    unsigned body_timeout_ms;        /* no body byte for this long, → 408; default 30000 */
    unsigned send_timeout_ms;        /* client reads nothing for this long → close; default 60000 */
    unsigned max_conns;              /* per server (worker); 0 = unlimited */
    int json_errors;                 /* server-made errors as {"error": "..."} instead of text */
    struct http_climits *climits;    /* per-address connection/rate limits (climits.h); NULL = none */
    const char *extra_headers;       /* added to server-made responses, e.g. "X-Served-By: h:p\r\n" */
    struct http_server_stats *stats; /* counted here when not NULL (may be shared by servers) */
    struct http_tls *tls;            /* TLS on this listener (tls.h), shared by servers; NULL = plain */
    unsigned handshake_timeout_ms;   /* TLS handshake deadline from accept, then close; default 10000 */
    int h2c;                         /* a plain connection that starts with the HTTP/2 preface speaks HTTP/2 (h2.h) */
    unsigned h2_max_requests;        /* streams per HTTP/2 connection, then GOAWAY; default H2_MAX_REQUESTS_DEF */
    struct http_spread *spread;      /* the servers of this listener on the other workers; NULL = none */
    unsigned worker;                 /* this server's worker, as spreading's counts name it */
};

/* Spreading accepted connections over the workers of one listener. Each worker has its own
 * SO_REUSEPORT listening socket, so the kernel spreads new connections by a hash of their
 * addresses, blind to load: h2load's 16 connections came out 11/5 or 4/13 as often as 8/8, and
 * the busier worker's streams waited longer (bench/RESULTS.md, "Two workers over h2"). The
 * servers given the same group (http_server_limits.spread) share their connection counts; one
 * that accepts a connection while it holds more than the least loaded member hands the
 * connection, before reading a byte of it, to that member's loop (a queue under the group's lock
 * and an eventfd), as HAProxy's listeners pass a connection to the least loaded thread. A
 * connection counts for its member from the moment it is accepted or queued to it until it
 * closes, so counts opened one after another stay within one of each other unless a member is
 * full (closes may part them again, until the next accepts). Handing over only at two or more
 * above, as at first, left the two workers of 8 short TLS clients three or more apart 14-18 % of
 * the time, against 9 % (bench/RESULTS.md, "Spreading by one"). A member whose connections and
 * HTTP/2 streams fill its max_conns is not chosen; one that filled up after it was chosen still
 * serves what it was handed (it is accepted already).
 * A server leaves its group when it shuts down or is freed; the group must outlive its servers. */
struct http_spread;
/* Servers in a group, one per worker: as many as `agora lb --workers` allows (lb/config.c), so that
 * no worker is left out of the spreading or of the per-worker counts (it was 64) */
#define HTTP_SPREAD_MAX 256
struct http_spread *http_spread_new(void);
void http_spread_free(struct http_spread *g);
/* Connections handed from one worker to another so far (for /metrics). */
unsigned long http_spread_handed(struct http_spread *g);
/* Each member's worker (http_server_limits.worker) and open connections, at most max of them, in
 * no set order: the count written. */
unsigned http_spread_loads(struct http_spread *g, unsigned *workers, unsigned *conns, unsigned max);

struct http_server_ops {
    /* A request head is complete. h is valid until http_conn_response_done() or on_abort. */
    void (*on_request)(void *ctx, struct http_conn *c, const struct http_head *h);
    /* A piece of decoded request body (never called with n == 0). */
    void (*on_body)(void *ctx, struct http_conn *c, const char *p, size_t n);
    /* The request body is complete (also called right after on_request when there is none). */
    void (*on_body_end)(void *ctx, struct http_conn *c);
    /* The output queue drained (after http_conn_send reported it as full). May be NULL. */
    void (*on_drain)(void *ctx, struct http_conn *c);
    /* The connection failed or timed out while the handler owned a request: the handler must drop
     * every reference to c. Not called after http_conn_response_done(). */
    void (*on_abort)(void *ctx, struct http_conn *c);
    /* Send "100 Continue" by itself when a request expects it (the proxy says 0 and relays the
     * backend's own). */
    int auto_continue;
    /* The handler takes requests asking for a protocol upgrade (Connection: upgrade and an
     * Upgrade header; see http_conn_tunnel). 0: the server answers them 501 itself. CONNECT is
     * always 501. */
    int upgrades;
};

/* Creates a server that accepts on listen_fd (owned by the server from now on) using ops/ctx.
 * lim may be NULL for defaults; fields left 0 take their defaults (max_body 0 = unlimited). */
struct http_server *http_server_create(struct loop *loop, int listen_fd, const struct http_server_ops *ops, void *ctx,
                                       const struct http_server_limits *lim);
/* Graceful stop: closes the listening socket, closes idle connections now, and makes busy ones
 * close after their current response. */
void http_server_shutdown(struct http_server *s);
/* Number of open client connections. */
unsigned http_server_conns(const struct http_server *s);
/* Closes every connection (aborting handlers) and frees the server. */
void http_server_free(struct http_server *s);
/* Default limits, as documented in struct http_server_limits. */
void http_server_limits_default(struct http_server_limits *lim);

/* The output high-water mark: bytes queued for one connection (a client's here, a backend's in
 * the proxy) beyond which the producer stops until the queue drains. */
#define HTTP_OUT_HIGH_WATER (256 * 1024)

/* Queues n bytes for the client and tries to write them. Returns 1 while the queue is below
 * HTTP_OUT_HIGH_WATER, 0 when the caller should stop producing until on_drain — or because the
 * connection has failed: then on_abort follows from a deferred call (never from inside this one). */
int http_conn_send(struct http_conn *c, const void *p, size_t n);
/* Cork: while corked, http_conn_send only queues; uncork writes everything queued in one go
 * (e.g. a response head and the first body bytes in one packet). Safe on a connection that failed
 * or ended in between (then it does nothing); may call on_drain when the queue empties. */
void http_conn_cork(struct http_conn *c);
void http_conn_uncork(struct http_conn *c);
/* The handler has queued the whole response. keep_alive 0 forces the connection to close after
 * it is written. The head passed to on_request is dead after this call. */
void http_conn_response_done(struct http_conn *c, int keep_alive);
/* Answers the current request with a small complete response (server-made: text, or JSON per
 * the limits' json_errors with the message escaped by core/jsonw) and calls
 * http_conn_response_done. close_after forces Connection: close. */
void http_conn_respond_error(struct http_conn *c, int status, const char *message, int close_after);
/* Stops (1) or resumes (0) reading the request body from the client (backpressure). Body bytes
 * already read are handed over (on_body) after the current callback returns, not inside this
 * call. */
void http_conn_pause_body(struct http_conn *c, int paused);
/* Tunnels (protocol upgrades, e.g. WebSocket). After the handler has queued a 101 response to
 * a request without a body, http_conn_tunnel(c) makes the connection carry opaque bytes: what the
 * client sends from then on (and anything it sent after the request head, which the server held
 * unparsed) goes to on_body as it arrives, raw, in pieces the handler must take whole; the
 * client's end of stream goes to on_body_end (a half-close: the client may still read);
 * http_conn_pause_body pauses and resumes reading; http_conn_send and on_drain work as before.
 * The request's head (h of on_request) is dead from then on.
 * The request timers stop (the handler keeps its own idle timer); the send timeout stays: a client
 * that reads nothing of what is queued for that long is closed (on_abort). The bytes held from
 * before are handed over from a deferred call, never inside http_conn_tunnel. The tunnel ends with
 * http_conn_response_done(c, 0) (the queue is written, then the connection closes) or on_abort. */
void http_conn_tunnel(struct http_conn *c);
/* In a tunnel: once the queued bytes are written, ends the client's stream (shutdown SHUT_WR);
 * reading goes on. */
void http_conn_shutdown_write(struct http_conn *c);

/* 1 if the connection came to a TLS listener (its bytes are decrypted by the server). */
int http_conn_is_tls(const struct http_conn *c);
/* Client IP as text, e.g. "127.0.0.1". */
const char *http_conn_remote_ip(const struct http_conn *c);
/* Time the current request's head was complete (loop_clock_us). */
uint64_t http_conn_request_start_us(const struct http_conn *c);
/* Bytes of response sent for the current request (for access logs). */
uint64_t http_conn_response_bytes(const struct http_conn *c);
/* 1 if the connection will close after the current response (the request asked for it, the
 * client half-closed, or the server is shutting down). */
int http_conn_will_close(const struct http_conn *c);
/* Per-request slot for the handler's state (NULL at on_request). */
void *http_conn_get_data(const struct http_conn *c);
void http_conn_set_data(struct http_conn *c, void *data);

/* Writes an "HTTP/1.1 status reason" line plus a Date header into b. */
void http_write_status_line(struct buf *b, int status);
/* Formats the current time as an IMF-fixdate (cached per second per thread); 29 chars + NUL. */
const char *http_date_now(void);

/* The adapter for buffered handlers (web servers): ctx must point to a struct http_buffered.
 * A request runs fn(fn_ctx, ...) on the loop thread, unless pick (may be NULL) names a pool port
 * (pool.h) for it: then it runs on that pool's threads and its response is written when it comes
 * back; meanwhile the connection reads nothing more (pipelined bytes wait) and, if it closes, the
 * job is withdrawn. When the pool's queue is full, or the job waits longer than the pool allows,
 * the answer is 503 with Retry-After: 1. */
struct http_pool_port;
struct http_buffered {
    http_handler_fn fn;
    void *fn_ctx;
    struct http_pool_port *(*pick)(void *pick_ctx, const struct http_request *req);
    void *pick_ctx;
};
extern const struct http_server_ops http_server_buffered_ops;

#endif
