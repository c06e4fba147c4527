/* server.c — server side of HTTP/1.1; see server.h for the contract.
 *
 * One module although over 1,000 lines: the states, timers, input, output and the buffered
 * adapter all work on one struct http_conn whose rules (a call never frees its caller, the
 * output high-water stall of pipelined requests, lingering close) span them; the adapter is the
 * part that could leave first (issue 11 moves handlers to a pool).
 *
 * A connection moves through these states:
 *   HEAD   waiting for (more of) a request head; timer = idle or header deadline
 *   BODY   head handed to the handler, body being read and passed on; timer = body timeout
 *   WAIT   body complete, handler producing the response; reading paused (pipelined bytes wait)
 *   CLOSE  closing: the rest of the output is flushed, then the descriptor is closed
 * The response may be produced while the body is still arriving (BODY), e.g. an early 413.
 *
 * Closing: conn_close (which calls the handler's on_abort if it owns a request) runs only from
 * the server's own event callbacks (I/O, timers) and from deferred calls. What a handler calls
 * (http_conn_send, uncork, response_done, pause_body) never closes the connection on the spot nor
 * aborts the caller's request: a failed write, or the end of a response that closes the
 * connection, only marks it (conn_close_later: `closing`, no more I/O) and conn_close follows
 * from a deferred call after the current callback has returned. Resuming a paused body is
 * deferred the same way, so the handler that resumes it is not re-entered. Inside process_input
 * the handler's sends are only queued, so nothing it does there closes the connection either. */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/blockpool.h"
#include "core/jsonw.h"
#include "core/net.h"
#include "http/climits.h"
#include "http/h2.h"
#include "http/pool.h"
#include "http/tls.h"

#define READ_CHUNK 16384
#define LINGER_MS  2000          /* lingering close: how long input is discarded */
#define LINGER_MAX (1024 * 1024) /* ... and how much of it */

/* Memory of a connection (issue 15): an idle keep-alive connection holds only its struct
 * http_conn (below, about 250 bytes). Its input and output buffers are blocks of IO_BLOCK bytes
 * taken from the worker's pool (core/blockpool.h) when bytes arrive or a response has to be
 * queued, and given back as soon as they are empty outside process_input; the parsed head lives
 * in a struct conn_req taken from a second pool while a request is in progress. The pools keep
 * at most POOL_MAX blocks each. A buffer that needs more than a block (a head longer than one, a
 * queued response) grows with malloc as before and is freed, not pooled, when empty. */
#define IO_BLOCK    16384
#define POOL_MAX    64
#define INLINE_HEAD 1024 /* a head up to this long is kept in the conn_req itself */

enum conn_state { ST_HEAD, ST_BODY, ST_WAIT, ST_CLOSE };

/* The state of one request, from its head being parsed until the connection is back in ST_HEAD
 * (the response is done and the body read): the parsed head (about 3.3 KB: the header array),
 * the head's bytes it points into, and the chunked-body decoder. */
struct conn_req {
    struct http_head head;
    struct http_chunked chunked;
    struct buf headbuf;            /* the head's bytes when longer than INLINE_HEAD */
    char inline_head[INLINE_HEAD]; /* ... else here */
};

/* One client connection. Field by field: the server and the list of its connections (closing
 * them all, shutdown); the descriptor; the input buffer (bytes read and not yet consumed: a
 * partial head, body bytes, pipelined requests) and the output queue, both without storage while
 * empty; the request state while one is in progress; the timer (idle, header, body and send
 * deadlines); the body framing counters; the handler's per-request slot; the per-request figures
 * the access log and the timers need; the OpenSSL connection on a TLS listener (8 bytes, NULL on a
 * plain one: the plain path tests it and nothing more); the state and flags in bits; and the
 * client's address as
 * text (returned by http_conn_remote_ip, and the key of the per-address limits), which is 48
 * bytes where a stored sockaddr would be 28 and a formatting per request. */
struct http_conn {
    struct http_server *srv;
    struct http_conn *prev, *next;
    struct buf in;
    struct buf out;
    struct conn_req *req; /* NULL between requests */
    struct loop_timer timer;
    uint64_t body_left; /* HTTP_BODY_LENGTH */
    uint64_t body_seen;
    void *data;
    uint64_t req_start_us;
    uint64_t head_deadline_ms; /* loop clock; 0 = no request head being received */
    uint64_t resp_bytes;
    SSL *ssl;              /* NULL on a plain listener (see "transport" below) */
    struct h2_session *h2; /* an HTTP/2 connection (h2.h): its bytes go there, not to the parser */
    struct h2_stream *h2s; /* a stream's conn (h2.h): the public calls below go there */
    int fd;
    unsigned retry_after;  /* Retry-After seconds for a 429/503 made here */
    unsigned linger_bytes; /* at most LINGER_MAX plus one read */
    unsigned state : 2;    /* enum conn_state */
    unsigned body_kind : 3;
    unsigned body_done : 1;
    unsigned response_done : 1; /* handler finished the current response */
    unsigned owned : 1;         /* handler owns the current request */
    unsigned keep_alive : 1;
    unsigned paused : 1;      /* handler asked to pause the body */
    unsigned want_drain : 1;  /* handler was told to stop producing */
    unsigned in_process : 1;  /* inside process_input (re-entrancy guard) */
    unsigned corked : 1;      /* http_conn_cork: queue sends, write on uncork */
    unsigned closing : 1;     /* failed or finished: no more I/O; conn_close has run or is deferred */
    unsigned freed : 1;       /* conn_close has run: free is scheduled */
    unsigned resuming : 1;    /* a deferred resume_body is scheduled */
    unsigned hup : 1;         /* peer hung up */
    unsigned counted : 1;     /* counted in the per-address connection limit */
    unsigned lingering : 1;   /* response sent, write side shut: discarding input, then close */
    unsigned handshaking : 1; /* TLS handshake in progress: the mask and timer are its own */
    unsigned tunnel : 1;      /* http_conn_tunnel: raw bytes both ways */
    unsigned tunnel_eof : 1;  /* ... the client's end of stream was handed over */
    unsigned shut_wr : 1;     /* ... http_conn_shutdown_write asked for */
    unsigned shut_done : 1;   /* ... and done */
    unsigned feeding : 1;     /* ... a deferred tunnel_feed is scheduled */
    unsigned parked : 1;      /* ... not watched while paused after a hang-up (tunnel_read) */
    unsigned stream_tls : 1;  /* a stream's conn: its connection is TLS */
    unsigned answered : 1;    /* ... answered here: not in nstreams (http_conn_stream_answered) */
    unsigned h2_kicked : 1;   /* an HTTP/2 connection: a deferred h2_pump is scheduled */
    char ip[48];
};

struct http_server {
    struct loop *loop;
    int lfd;
    int accepting;
    int accept_paused;              /* accept() ran out of descriptors: waiting for accept_timer */
    struct loop_timer accept_timer; /* ends the pause */
    uint64_t accept_log_after_ms;   /* loop clock: no accept-failure message before this */
    unsigned long accept_failures;  /* since the last message */
    int shutting_down;
    const struct http_server_ops *ops;
    void *ctx;
    struct http_server_limits lim;
    struct http_limits plim;
    struct http_conn *conns;
    unsigned nconns;
    /* spreading (server.h): nconns and the connections queued to this server, for the other members;
     * the queue and spread_efd's wake-ups, under the group's lock */
    atomic_uint spread_load;
    /* nstreams, for the other members: with nconns it fills lim.max_conns, so a member it filled
     * is not chosen (spread_pass) while its spread_load still looks light */
    atomic_uint spread_streams;
    int spread_efd;
    struct spread_fd *inbox;
    unsigned ninbox, capinbox;
    unsigned nstreams;     /* HTTP/2 streams with a conn: each may hold a backend connection, so they
                            * count against lim.max_conns as connections do (h2.h) */
    struct blockpool bufs; /* IO_BLOCK blocks for the connections' in and out buffers */
    struct blockpool reqs; /* struct conn_req blocks */
};

static void conn_close(struct http_conn *c);
static void conn_close_later(struct http_conn *c);
static void process_input(struct http_conn *c);
static int fail_request(struct http_conn *c, int status, const char *message);
static void conn_update_mask(struct http_conn *c);
static int conn_flush(struct http_conn *c);
static int h2_start(struct http_conn *c);
static void h2_pump(struct http_conn *c);

/* The method of the current request; HTTP_OTHER when none is parsed. */
static enum http_method conn_method(const struct http_conn *c) { return c->req ? c->req->head.method : HTTP_OTHER; }

/* The request state, taken from the pool when there is none (it is reused by the next pipelined
 * request of the same process_input). */
static struct conn_req *conn_req(struct http_conn *c)
{
    if (!c->req) {
        c->req = blockpool_take(&c->srv->reqs);
        c->req->headbuf = (struct buf){0};
    }
    return c->req;
}

static void conn_req_release(struct http_conn *c)
{
    if (!c->req)
        return;
    if (c->req->headbuf.data) /* a head longer than INLINE_HEAD */
        buf_free(&c->req->headbuf);
    blockpool_give(&c->srv->reqs, c->req);
    c->req = NULL;
}

/* The output queue's storage once it is empty: a pool block at once; storage that grew past a
 * block (a response queued for a slow reader) only when the exchange is over (ST_HEAD), so that a
 * streaming response that fills and drains the queue again and again does not malloc and free
 * it every time. */
static void conn_release_out(struct http_conn *c)
{
    if (c->out.cap == IO_BLOCK || c->state == ST_HEAD)
        blockpool_buf_release(&c->srv->bufs, &c->out);
}

/* Gives back what an idle connection does not need: the request state once the connection is
 * between requests (ST_HEAD: a partial head is re-parsed from `in` anyway), and the buffers that
 * are empty. Only where no pointer into them is held: not inside process_input (the handler may
 * hold the head or body bytes) — the end of process_input, after a read, after a flush. */
static void conn_trim(struct http_conn *c)
{
    if (c->in_process)
        return;
    if (c->state == ST_HEAD)
        conn_req_release(c);
    blockpool_buf_release(&c->srv->bufs, &c->in);
    conn_release_out(c);
}

/* ---- transport ----
 *
 * A connection reads and writes through the socket, or through OpenSSL (http/tls.h) when it came
 * to a TLS listener (c->ssl set). The choice is one predictable branch in each of the three places
 * that move bytes (conn_read, conn_send_now, conn_flush), so the plain path costs what it did
 * (bench/instr.sh: 12,669 instructions per proxied request against 12,644 before TLS); a table of
 * function pointers would add an indirect call per read and write instead. TLS differs in one way
 * the rest of the file sees: the handshake comes first (conn_handshake, with its own mask and
 * deadline). OpenSSL never keeps a whole record the socket would not report again, because a TLS
 * read ends by decrypting every whole record OpenSSL read ahead (http_tls_read), and an end or an
 * error met after bytes shuts the socket's reading side so that it reports them: level-triggered
 * readiness stays the whole truth. */

/* Writes n bytes from p now: the count written, -EAGAIN when none could go, or -errno. */
static inline ssize_t conn_send_now(struct http_conn *c, const void *p, size_t n)
{
    if (__builtin_expect(c->ssl != NULL, 0))
        return http_tls_write(c->ssl, p, n);
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w >= 0)
        return w;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

/* Reads up to max bytes into `in` (net_read's result), into a pool block when `in` has no
 * storage. A read is bounded by the free space of the buffer when there is some, so that the
 * block is not replaced by a larger malloc while it has room; the rest comes with the next
 * (level-triggered) readiness. A read of nothing gives the block back. */
static inline __attribute__((always_inline)) ssize_t conn_read(struct http_conn *c, size_t max)
{
    struct buf *b = &c->in;
    blockpool_buf_attach(&c->srv->bufs, b);
    size_t used = buf_used(b), room = b->cap - b->len;
    if (b->off >= used)
        room = b->cap - used; /* buf_reserve compacts first */
    size_t want = room >= 1024 && room < max ? room : max;
    ssize_t n = __builtin_expect(c->ssl != NULL, 0) ? http_tls_read(c->ssl, b, want) : net_read(c->fd, b, want);
    if (n <= 0)
        blockpool_buf_release(&c->srv->bufs, b);
    return n;
}

/* ---- counts for metrics ---- */

static const int answer_codes[HTTP_ANSWER_N - 1] = HTTP_ANSWER_CODES;

void http_answers_count(struct http_answers *a, int status)
{
    unsigned i = 0;
    while (i < HTTP_ANSWER_N - 1 && answer_codes[i] != status)
        i++;
    atomic_fetch_add_explicit(&a->by_code[i == HTTP_ANSWER_N - 1 ? 0 : i + 1], 1, memory_order_relaxed);
}

int http_answers_code(unsigned i) { return i == 0 || i >= HTTP_ANSWER_N ? 0 : answer_codes[i - 1]; }

/* An answer the server makes itself: counted, then sent as http_conn_respond_error does. */
static void server_error(struct http_conn *c, int status, const char *message, int close_after)
{
    if (c->srv->lim.stats)
        http_answers_count(&c->srv->lim.stats->answers, status);
    http_conn_respond_error(c, status, message, close_after);
}

/* ---- dates ---- */

const char *http_date_now(void)
{
    /* Per-thread cache: formatting a date per response is measurable at high request rates. */
    static __thread char cached[32];
    static __thread time_t cached_at;
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof(cached), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    return cached;
}

void http_write_status_line(struct buf *b, int status)
{
    buf_printf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, http_reason(status), http_date_now());
}

void http_server_limits_default(struct http_server_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    lim->max_line = 8192;
    lim->max_head = 16384;
    lim->header_timeout_ms = 30000;
    lim->idle_timeout_ms = 60000;
    lim->body_timeout_ms = 30000;
    lim->send_timeout_ms = 60000;
    lim->handshake_timeout_ms = HTTP_TLS_HANDSHAKE_MS_DEF;
    lim->h2_max_requests = H2_MAX_REQUESTS_DEF;
}

/* ---- timers ---- */

static void on_timer(struct loop *loop, struct loop_timer *t)
{
    struct http_conn *c = t->data;
    if (c->h2) {
        conn_close(c); /* idle with no stream open, or the client reads nothing: see h2_pump */
        return;
    }
    if (c->handshaking && c->srv->lim.stats) /* the TLS handshake deadline */
        atomic_fetch_add_explicit(&c->srv->lim.stats->tls_failed, 1, memory_order_relaxed);
    switch (c->state) {
    case ST_HEAD:
        if (buf_used(&c->in) > 0 && !c->owned) {
            server_error(c, 408, "request header timeout: the request head was not received in time", 1);
            return;
        }
        conn_close(c); /* idle keep-alive connection */
        return;
    case ST_BODY:
        fail_request(c, 408, "request body timeout: no body data received in time");
        return;
    case ST_WAIT:
    case ST_CLOSE:
        conn_close(c); /* the client did not read its response in time */
        return;
    }
}

/* Sets the timer for the connection's state. */
static void conn_arm_timer(struct http_conn *c)
{
    struct http_server *s = c->srv;
    if (c->lingering || c->closing)
        return; /* lingering: its own deadline, set when it began; closing: none */
    unsigned ms = 0;
    if (c->tunnel) {
        /* Only the send timeout: the handler times the tunnel's idleness itself. */
        if (buf_used(&c->out) > 0)
            loop_timer_arm(s->loop, &c->timer, s->lim.send_timeout_ms);
        else
            loop_timer_cancel(s->loop, &c->timer);
        return;
    }
    if (c->state == ST_HEAD && (buf_used(&c->in) > 0 || c->resp_bytes == 0)) {
        /* A whole-head deadline, set once when the head starts (or at accept): trickling bytes
         * does not extend it (slowloris). */
        uint64_t now = loop_now(s->loop);
        if (!c->head_deadline_ms)
            c->head_deadline_ms = now + s->lim.header_timeout_ms;
        ms = c->head_deadline_ms > now ? (unsigned)(c->head_deadline_ms - now) : 1;
    } else if (c->state == ST_HEAD)
        ms = s->lim.idle_timeout_ms;
    else if (c->state == ST_BODY && !c->paused && !c->body_done)
        ms = s->lim.body_timeout_ms;
    if (buf_used(&c->out) > 0 && (ms == 0 || s->lim.send_timeout_ms < ms))
        ms = s->lim.send_timeout_ms;
    if (ms)
        loop_timer_arm(s->loop, &c->timer, ms);
    else
        loop_timer_cancel(s->loop, &c->timer);
}

/* ---- output ---- */

/* Ends our direction of the stream (the queue is written): a TLS connection's close_notify
 * first, then the TCP FIN; reading goes on. */
static void conn_shut_write(struct http_conn *c)
{
    if (c->ssl)
        http_tls_close_notify(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

/* Writes as much queued output as the socket takes. Returns 0, or -1 if the connection failed or
 * its last response is out (it is then closing: conn_close follows from a deferred call). May
 * call on_drain. */
static int conn_flush(struct http_conn *c)
{
    if (c->closing)
        return -1;
    ssize_t w = __builtin_expect(c->ssl != NULL, 0) ? http_tls_write_buf(c->ssl, &c->out) : net_write(c->fd, &c->out);
    if (w < 0) {
        conn_close_later(c);
        return -1;
    }
    if (buf_used(&c->out) == 0) {
        if (c->tunnel && c->shut_wr && !c->shut_done && c->state != ST_CLOSE) {
            conn_shut_write(c); /* http_conn_shutdown_write */
            c->shut_done = 1;
        }
        if (c->state == ST_CLOSE && !c->lingering) {
            if (c->body_done && buf_used(&c->in) == 0) {
                conn_close_later(c);
                return -1;
            }
            /* Unread input (a body answered early, e.g. 413, or bytes after a bad request):
             * closing now would reset the connection and could destroy the response before the
             * client reads it. Shut the write side and discard input for a while (lingering
             * close, as nginx does). */
            conn_shut_write(c);
            c->lingering = 1;
            buf_reset(&c->in);
            conn_update_mask(c);
            loop_timer_arm(c->srv->loop, &c->timer, LINGER_MS);
            return 0;
        }
        conn_release_out(c);
        if (c->want_drain) {
            c->want_drain = 0;
            if (c->owned && c->srv->ops->on_drain)
                c->srv->ops->on_drain(c->srv->ctx, c);
        }
    }
    return 0;
}

int http_conn_send(struct http_conn *c, const void *p, size_t n)
{
    if (__builtin_expect(c->h2s != NULL, 0)) {
        c->resp_bytes += n;
        return h2_stream_send(c->h2s, p, n);
    }
    if (c->closing)
        return 0;
    c->resp_bytes += n;
    if (buf_used(&c->out) == 0 && !c->in_process && !c->corked) {
        /* Nothing queued: write straight from the caller's memory. */
        ssize_t w = conn_send_now(c, p, n);
        if (w < 0 && w != -EAGAIN) {
            conn_close_later(c); /* on_abort comes after the caller's callback returns */
            return 0;
        }
        if (w > 0) {
            p = (const char *)p + w;
            n -= (size_t)w;
        }
        if (n == 0)
            return 1;
    }
    blockpool_buf_attach(&c->srv->bufs, &c->out);
    buf_append(&c->out, p, n);
    if (!c->in_process && !c->corked) {
        conn_update_mask(c);
        conn_arm_timer(c);
    }
    if (buf_used(&c->out) >= HTTP_OUT_HIGH_WATER) {
        c->want_drain = 1;
        return 0;
    }
    return 1;
}

void http_conn_cork(struct http_conn *c) { c->corked = 1; }

void http_conn_uncork(struct http_conn *c)
{
    c->corked = 0;
    if (c->closing || c->in_process || c->h2s)
        return;
    if (conn_flush(c) < 0)
        return;
    conn_update_mask(c);
    conn_arm_timer(c);
}

/* ---- connection bookkeeping ---- */

static void conn_free(struct loop *loop, void *data)
{
    free(data); /* its buffers went back in conn_close: the server may be gone by now */
}

static void server_maybe_accept(struct http_server *s);

static void close_deferred(struct loop *loop, void *data)
{
    struct http_conn *c = data;
    conn_close(c); /* nothing if it was closed meanwhile (http_server_free): conn_free comes later */
}

/* The connection failed (or its last response is out) inside a call the handler may be up the
 * stack of: from now on it does no I/O (unwatched, timer off, sends dropped), and conn_close, with
 * its on_abort, runs from a deferred call after the current callback has returned. The
 * descriptor stays open until then, so its number cannot be reused meanwhile. */
static void conn_close_later(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->state = ST_CLOSE;
    loop_timer_cancel(c->srv->loop, &c->timer);
    loop_unwatch(c->srv->loop, c->fd);
    loop_defer(c->srv->loop, close_deferred, c);
}

/* Closes c now: on_abort if the handler owns a request, then the descriptor; the memory is freed
 * from a deferred call. Only for the server's own event callbacks and deferred calls (see the top
 * of this file); anything a handler may have called uses conn_close_later. */
static void conn_close(struct http_conn *c)
{
    if (c->freed)
        return;
    struct http_server *s = c->srv;
    c->closing = 1;
    c->freed = 1;
    c->state = ST_CLOSE;
    if (c->owned) {
        c->owned = 0;
        if (s->ops->on_abort)
            s->ops->on_abort(s->ctx, c);
    }
    h2_session_free(c->h2); /* aborts its streams' handlers */
    c->h2 = NULL;
    loop_timer_cancel(s->loop, &c->timer);
    loop_unwatch(s->loop, c->fd);
    http_tls_conn_free(c->ssl); /* a close_notify first, when the handshake was done */
    c->ssl = NULL;
    close(c->fd);
    if (c->counted)
        http_climits_conn_close(s->lim.climits, c->ip);
    c->fd = -1;
    /* The handler was aborted above and dropped its pointers: the buffers and the request state
     * go back to the pool now (conn_free runs when the server may already be freed). */
    buf_reset(&c->in);
    buf_reset(&c->out);
    conn_req_release(c);
    blockpool_buf_release(&s->bufs, &c->in);
    blockpool_buf_release(&s->bufs, &c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    atomic_fetch_sub_explicit(&s->spread_load, 1, memory_order_relaxed);
    if (s->lim.stats)
        atomic_fetch_sub_explicit(&s->lim.stats->conns, 1, memory_order_relaxed);
    loop_defer(s->loop, conn_free, c);
    server_maybe_accept(s);
}

/* 1 while the output queue is over its high-water mark: the next pipelined request is neither
 * parsed nor read until it drains, so a client that sends requests and never reads the answers
 * holds at most one high-water mark of responses (plus the kernel's buffers), not all of them. */
static int out_full(const struct http_conn *c) { return buf_used(&c->out) >= HTTP_OUT_HIGH_WATER; }

/* While the handler produces a response (WAIT), read interest stays on so that the common
 * request/response cycle costs no epoll_ctl: bytes that arrive (a pipelined request) are kept,
 * up to one head's worth, and an EOF is noted (the response is finished, then the connection
 * closed). */
static int wait_reads(const struct http_conn *c)
{
    return c->state == ST_WAIT && !c->hup && buf_used(&c->in) < c->srv->lim.max_head + READ_CHUNK;
}

static void on_conn_io(struct loop *loop, int fd, int events, void *data);

/* The loop interest the connection's state calls for. */
static inline int conn_mask(const struct http_conn *c)
{
    int mask = 0;
    if (c->tunnel && c->state != ST_CLOSE && !c->paused && !c->tunnel_eof)
        mask |= LOOP_READ;
    else if ((c->state == ST_HEAD && !out_full(c)) || (c->state == ST_BODY && !c->paused && !c->body_done) ||
             wait_reads(c) || c->lingering)
        mask |= LOOP_READ;
    if (buf_used(&c->out) > 0)
        mask |= LOOP_WRITE;
    return mask;
}

/* Sets the loop's interest from the connection's state. Never called during a TLS handshake
 * (conn_handshake sets the mask then; no request exists yet to make a handler call here). */
static void conn_update_mask(struct http_conn *c)
{
    if (c->closing)
        return;
    if (c->parked) {
        if (c->state == ST_CLOSE || c->paused || c->tunnel_eof)
            return; /* still nothing to read: closing, paused, or read to its end */
        c->parked = 0;
        if (loop_watch(c->srv->loop, c->fd, LOOP_READ, on_conn_io, c) < 0)
            conn_close_later(c);
        return;
    }
    loop_set_mask(c->srv->loop, c->fd, conn_mask(c));
}

/* ---- responses ---- */

void http_conn_respond_error(struct http_conn *c, int status, const char *message, int close_after)
{
    struct buf b = {0}, body = {0};
    if (c->srv->lim.json_errors)
        jsonw_doc_str(&body, JSONW_COMPACT, "error", message);
    else
        buf_puts(&body, message);
    buf_puts(&body, "\n");
    http_write_status_line(&b, status);
    buf_printf(&b, "Content-Type: %s; charset=utf-8\r\nContent-Length: %zu\r\n",
               c->srv->lim.json_errors ? "application/json" : "text/plain", buf_used(&body));
    if (close_after || http_conn_will_close(c))
        buf_puts(&b, "Connection: close\r\n");
    if (c->srv->lim.extra_headers)
        buf_puts(&b, c->srv->lim.extra_headers);
    if (status == 503 || status == 429)
        buf_printf(&b, "Retry-After: %u\r\n", c->retry_after ? c->retry_after : 1);
    buf_puts(&b, "\r\n");
    if (!(conn_method(c) == HTTP_HEAD && c->state != ST_HEAD))
        buf_append(&b, buf_head(&body), buf_used(&body));
    http_conn_send(c, buf_head(&b), buf_used(&b));
    buf_free(&b);
    buf_free(&body);
    http_conn_response_done(c, !close_after);
}

void http_conn_response_done(struct http_conn *c, int keep_alive)
{
    c->owned = 0; /* also when closing: the deferred conn_close then calls no on_abort */
    c->response_done = 1;
    c->data = NULL;
    if (c->h2s) {
        h2_stream_response_done(c->h2s);
        return;
    }
    if (c->closing)
        return;
    if (!keep_alive || c->srv->shutting_down)
        c->keep_alive = 0;
    if (!c->body_done) {
        /* The body was not read: what follows on the connection cannot be framed. */
        c->keep_alive = 0;
    }
    if (!c->keep_alive) {
        c->state = ST_CLOSE;
        if (c->in_process)
            return;
        if (conn_flush(c) < 0)
            return;
        conn_update_mask(c);
        conn_arm_timer(c);
        return;
    }
    if (c->body_done) {
        c->state = ST_HEAD; /* the request state goes back at the end of process_input */
        if (!c->in_process)
            process_input(c);
    }
}

/* ---- input ---- */

/* Copies the parsed head out of the input buffer (so `in` may move) and re-points the head. */
static void keep_head(struct http_conn *c, size_t len)
{
    struct conn_req *r = c->req;
    char *neu = r->inline_head;
    if (len > sizeof(r->inline_head)) {
        buf_reset(&r->headbuf);
        neu = buf_reserve(&r->headbuf, len);
    }
    memcpy(neu, buf_head(&c->in), len);
    const char *old = buf_head(&c->in);
    /* Only what points into the head moves: the parser may point elsewhere (an absolute-form
     * target without a path has the path "/" from a constant). */
#define REBASE(s)                                                                                                      \
    do {                                                                                                               \
        if ((s).p >= old && (s).p < old + len)                                                                         \
            (s).p = neu + ((s).p - old);                                                                               \
    } while (0)
    REBASE(r->head.method_str);
    REBASE(r->head.target);
    REBASE(r->head.path);
    REBASE(r->head.query);
    REBASE(r->head.reason);
    REBASE(r->head.host);
    REBASE(r->head.connection);
    for (int i = 0; i < r->head.nheaders; i++) {
        REBASE(r->head.headers[i].name);
        REBASE(r->head.headers[i].value);
    }
#undef REBASE
    buf_consume(&c->in, len);
}

/* Starts a new request from a parsed head. Returns 0 to keep processing, -1 when the
 * connection is done (error answered or closed). */
static int start_request(struct http_conn *c, size_t len)
{
    struct http_server *s = c->srv;
    const struct http_head *h = &c->req->head;
    keep_head(c, len);
    c->head_deadline_ms = 0;
    c->req_start_us = loop_clock_us();
    c->resp_bytes = 0;
    c->body_kind = h->body;
    c->body_left = h->body == HTTP_BODY_LENGTH ? (uint64_t)h->content_length : 0;
    c->body_seen = 0;
    c->body_done = h->body == HTTP_BODY_NONE;
    http_chunked_init(&c->req->chunked);
    c->response_done = 0;
    c->keep_alive = h->keep_alive && !s->shutting_down;
    c->paused = 0;
    c->data = NULL;
    if ((h->upgrade && !s->ops->upgrades) || h->method == HTTP_CONNECT) {
        server_error(c, 501, "not implemented: CONNECT and protocol upgrades are not supported", 1);
        return -1;
    }
    if (s->lim.max_body && h->body == HTTP_BODY_LENGTH && (uint64_t)h->content_length > s->lim.max_body) {
        server_error(c, 413, "request body too large", 1);
        return -1;
    }
    unsigned retry_after;
    if (s->lim.climits && http_climits_rate_limited(s->lim.climits) &&
        !http_climits_take(s->lim.climits, c->ip, loop_now(s->loop), &retry_after)) {
        c->retry_after = retry_after;
        c->state = c->body_done ? ST_WAIT : ST_BODY;
        server_error(c, 429, "too many requests from your address: slow down", 0);
        return 0;
    }
    c->state = c->body_done ? ST_WAIT : ST_BODY;
    if (h->expect_continue && !c->body_done && s->ops->auto_continue)
        http_conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->owned = 1;
    s->ops->on_request(s->ctx, c, h);
    if (c->body_done && c->owned)
        s->ops->on_body_end(s->ctx, c);
    return 0;
}

/* The request cannot go on (bad body, too large, too slow): the handler, if it still owns it, is
 * aborted and the client gets status and message; when a response has already begun, the
 * connection is just closed. Returns -1 (the connection is done). */
static int fail_request(struct http_conn *c, int status, const char *message)
{
    struct http_server *s = c->srv;
    c->keep_alive = 0;
    if (c->owned && !c->response_done) {
        c->owned = 0;
        if (s->ops->on_abort)
            s->ops->on_abort(s->ctx, c);
        c->data = NULL;
        server_error(c, status, message, 1);
    } else {
        conn_close_later(c);
    }
    return -1;
}

/* Passes buffered body bytes to the handler. Returns -1 if the connection is done. */
static int feed_body(struct http_conn *c)
{
    struct http_server *s = c->srv;
    while (!c->body_done && !c->paused && buf_used(&c->in) > 0) {
        const char *p = buf_head(&c->in);
        size_t n = buf_used(&c->in);
        if (c->body_kind == HTTP_BODY_LENGTH) {
            size_t take = n < c->body_left ? n : (size_t)c->body_left;
            c->body_left -= take;
            c->body_seen += take;
            buf_consume(&c->in, take);
            if (c->body_left == 0)
                c->body_done = 1;
            if (c->owned)
                s->ops->on_body(s->ctx, c, p, take);
        } else {
            const char *data = NULL;
            size_t dlen = 0;
            long used = http_chunked_feed(&c->req->chunked, p, n, &data, &dlen);
            if (used < 0)
                return fail_request(c, 400, "bad request: malformed chunked body");
            c->body_seen += dlen;
            if (s->lim.max_body && c->body_seen > s->lim.max_body)
                return fail_request(c, 413, "request body too large");
            if (c->req->chunked.done)
                c->body_done = 1;
            /* data points into `in`: hand it over before consuming. */
            if (dlen > 0 && c->owned)
                s->ops->on_body(s->ctx, c, data, dlen);
            buf_consume(&c->in, (size_t)used);
        }
        if (c->body_done) {
            if (c->response_done) {
                /* The response went out before the body ended: continue with the next request. */
                if (c->keep_alive) {
                    c->state = ST_HEAD;
                } else {
                    c->state = ST_CLOSE;
                }
            } else {
                c->state = ST_WAIT;
                if (c->owned)
                    s->ops->on_body_end(s->ctx, c);
            }
        }
    }
    return 0;
}

/* h2c prior knowledge (lim.h2c): 1 if a connection's first bytes are the HTTP/2 connection
 * preface, RC_AGAIN while they are a beginning of it, 0 if not (HTTP/1.1 then). Only before the
 * connection's first request (the parser answers a preface later on with 505). */
static int h2c_detect(const struct http_conn *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t n = buf_used(&c->in) < sizeof(preface) - 1 ? buf_used(&c->in) : sizeof(preface) - 1;
    if (memcmp(buf_head(&c->in), preface, n))
        return 0;
    return n < sizeof(preface) - 1 ? RC_AGAIN : 1;
}

static void process_input(struct http_conn *c)
{
    struct http_server *s = c->srv;
    int stalled;
again:
    stalled = 0;
    c->in_process = 1;
    for (;;) {
        if (c->state == ST_HEAD) {
            if (buf_used(&c->in) == 0)
                break;
            if (out_full(c)) {
                stalled = 1; /* see out_full */
                break;
            }
            if (__builtin_expect(s->lim.h2c, 0) && !c->req_start_us && !c->ssl) {
                int d = h2c_detect(c);
                if (d == RC_AGAIN)
                    break;
                if (d == 1) { /* HTTP/2 with prior knowledge: the connection's bytes go there now */
                    c->in_process = 0;
                    if (h2_start(c) < 0)
                        return;
                    int rc = h2_session_recv(c->h2, buf_head(&c->in), buf_used(&c->in));
                    buf_reset(&c->in);
                    blockpool_buf_release(&s->bufs, &c->in);
                    (void)rc; /* a failed session sends its GOAWAY, then closes (h2_pump) */
                    h2_pump(c);
                    return;
                }
            }
            struct http_head *h = &conn_req(c)->head;
            int r = http_parse_request(buf_head(&c->in), buf_used(&c->in), &s->plim, h);
            if (r == HTTP_AGAIN)
                break;
            if (r == HTTP_ERROR) {
                c->keep_alive = 0;
                c->in_process = 0;
                c->state = ST_WAIT; /* so a HEAD-less error keeps its body */
                h->method = HTTP_OTHER;
                server_error(c, h->error_status ? h->error_status : 400, h->error ? h->error : "bad request", 1);
                return;
            }
            if (start_request(c, (size_t)r) < 0)
                break; /* answered (e.g. 413, 501) or closed: flush below */
            continue;
        }
        if (c->state == ST_BODY) {
            if (feed_body(c) < 0)
                break;
            if (c->state == ST_BODY || c->state == ST_WAIT)
                break;
            continue;
        }
        break; /* WAIT or CLOSE: pipelined bytes wait */
    }
    if (c->hup && c->state == ST_HEAD && !stalled) {
        /* The client ended its stream and every complete request it sent has been answered:
         * close once the answers are written (an incomplete head left over is dropped). */
        c->keep_alive = 0;
        c->state = ST_CLOSE;
    }
    c->in_process = 0;
    if (conn_flush(c) < 0)
        return;
    if (stalled && c->state == ST_HEAD && !out_full(c))
        goto again; /* the socket took enough: go on with the pipelined requests */
    conn_trim(c);
    conn_update_mask(c);
    conn_arm_timer(c);
}

/* ---- tunnels (http_conn_tunnel) ---- */

/* Hands what `in` holds to the handler as tunnel bytes, then the client's end of stream if it was
 * seen meanwhile (hup, or a read of nothing). */
static void tunnel_feed(struct http_conn *c)
{
    struct http_server *s = c->srv;
    size_t n = buf_used(&c->in);
    const char *p = buf_head(&c->in);
    /* Consumed first: if the handler ends the tunnel inside on_body, `in` is then empty as the
     * close expects (its memory stays until conn_trim below). */
    buf_consume(&c->in, n);
    if (n > 0 && c->owned)
        s->ops->on_body(s->ctx, c, p, n);
    if (c->hup && !c->tunnel_eof && !c->closing) {
        c->tunnel_eof = 1;
        if (c->owned)
            s->ops->on_body_end(s->ctx, c);
    }
    conn_trim(c);
    conn_update_mask(c);
    conn_arm_timer(c);
}

static void tunnel_feed_deferred(struct loop *loop, void *data)
{
    struct http_conn *c = data;
    c->feeding = 0;
    if (!c->closing) /* closed meanwhile: conn_free was deferred after this call */
        tunnel_feed(c);
}

/* The client's side of a tunnel is readable. */
static void tunnel_read(struct http_conn *c)
{
    if (c->paused || c->tunnel_eof || c->feeding) {
        /* Not reading: a reset or an end of stream? (Left unread, data waits for the resume.) */
        char tmp;
        ssize_t n = recv(c->fd, &tmp, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_close(c);
            return;
        }
        if (n == 0 && !c->tunnel_eof && !c->feeding) {
            c->hup = 1;
            tunnel_feed(c); /* hands the end of stream over */
            return;
        }
        if (c->shut_done && ((n > 0 && c->paused) || c->tunnel_eof)) {
            /* Both directions are shut (our end of stream went out, the client's came, maybe
             * after data it sent): epoll reports the hang-up level-triggered whatever the mask,
             * so it would be reported again at once, forever. Nothing is to be written: unwatch,
             * until the resume if data waits (conn_update_mask watches it again), else for good. */
            loop_unwatch(c->srv->loop, c->fd);
            c->parked = 1;
            return;
        }
        conn_update_mask(c);
        return;
    }
    ssize_t n = conn_read(c, 4 * READ_CHUNK);
    if (n == -EAGAIN)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0)
        c->hup = 1;
    tunnel_feed(c);
}

void http_conn_tunnel(struct http_conn *c)
{
    if (c->closing || c->h2s) /* never on a stream: upgrades are refused there */
        return;
    c->tunnel = 1;
    conn_req_release(c); /* the head is not needed any more: 3 KB less per tunnel */
    if ((buf_used(&c->in) > 0 || c->hup) && !c->feeding) {
        c->feeding = 1; /* the bytes held from before, after the caller's callback */
        loop_defer(c->srv->loop, tunnel_feed_deferred, c);
    }
    conn_update_mask(c);
    conn_arm_timer(c);
}

void http_conn_shutdown_write(struct http_conn *c)
{
    if (c->closing || !c->tunnel || c->shut_wr || c->h2s)
        return;
    c->shut_wr = 1;
    if (buf_used(&c->out) == 0 && c->state != ST_CLOSE) {
        conn_shut_write(c);
        c->shut_done = 1;
    }
}

/* Advances the TLS handshake. Returns 1 once it is done (the header deadline starts then), 0
 * while it goes on (the mask asks for what OpenSSL wants), -1 if it failed (c is closed). */
static int conn_handshake(struct http_conn *c)
{
    int r = http_tls_handshake(c->ssl);
    if (r == RC_OK) {
        c->handshaking = 0;
        c->head_deadline_ms = 0;
        conn_update_mask(c);
        conn_arm_timer(c);
        return 1;
    }
    if (r < 0) {
        /* Not TLS (a plain HTTP request, garbage) or a failed negotiation: what the client sent
         * and OpenSSL did not read is discarded first (a little of it), so the close is a FIN and
         * not a reset that could destroy an alert on its way. */
        char junk[4096];
        for (int i = 0; i < 4 && recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
            ;
        if (c->srv->lim.stats)
            atomic_fetch_add_explicit(&c->srv->lim.stats->tls_failed, 1, memory_order_relaxed);
        conn_close(c);
        return -1;
    }
    loop_set_mask(c->srv->loop, c->fd, r == HTTP_TLS_WANT_WRITE ? LOOP_READ | LOOP_WRITE : LOOP_READ);
    return 0;
}

/* ---- HTTP/2 connections (h2.h) ----
 *
 * A connection whose TLS handshake chose "h2" hands its bytes to its h2_session, which calls
 * the handler with a stream's conn per request (http_conn_stream_new). The connection reads while
 * the session wants to and its output is below the high-water mark, writes whatever the session
 * produces, and closes once the session wants neither. Its timer: the send timeout while output
 * waits in the socket's queue or behind a window the client keeps shut (the timer is not pushed
 * back by what the client sends meanwhile, only by bytes written), the idle timeout while no
 * stream is open, none otherwise (the handler times its requests). */

static void h2_pump(struct http_conn *c)
{
    if (c->closing || c->lingering)
        return;
    struct http_server *s = c->srv;
    int wrote = 0;
    for (int i = 0; i < 16; i++) {
        size_t before = buf_used(&c->out);
        if (before < HTTP_OUT_HIGH_WATER) {
            blockpool_buf_attach(&s->bufs, &c->out);
            if (h2_session_send(c->h2, &c->out, HTTP_OUT_HIGH_WATER) < 0) {
                conn_close_later(c);
                return;
            }
        }
        if (buf_used(&c->out) == 0)
            break;
        ssize_t w = c->ssl ? http_tls_write_buf(c->ssl, &c->out) : net_write(c->fd, &c->out);
        if (w < 0) {
            conn_close_later(c);
            return;
        }
        wrote |= w > 0 || buf_used(&c->out) != before;
        if (buf_used(&c->out) > 0)
            break; /* the socket is full */
    }
    int reading = h2_session_want_read(c->h2);
    if (!reading && buf_used(&c->out) == 0 && !h2_session_want_write(c->h2)) {
        /* GOAWAY sent and every stream done, or the session failed: a lingering close (see
         * conn_flush), so that what the client sent meanwhile does not turn the close into a
         * reset that destroys the GOAWAY before the client reads it. */
        conn_shut_write(c);
        c->lingering = 1;
        loop_set_mask(s->loop, c->fd, LOOP_READ);
        loop_timer_arm(s->loop, &c->timer, LINGER_MS);
        return;
    }
    conn_release_out(c);
    int mask =
        (reading && buf_used(&c->out) < HTTP_OUT_HIGH_WATER ? LOOP_READ : 0) | (buf_used(&c->out) ? LOOP_WRITE : 0);
    loop_set_mask(s->loop, c->fd, mask);
    if (buf_used(&c->out)) {
        if (wrote || !loop_timer_armed(&c->timer)) /* bytes went out: the send timeout starts again */
            loop_timer_arm(s->loop, &c->timer, s->lim.send_timeout_ms);
    } else if (h2_session_streams(c->h2) == 0) {
        if (!loop_timer_armed(&c->timer))
            loop_timer_arm(s->loop, &c->timer, s->lim.idle_timeout_ms);
    } else if (h2_session_blocked(c->h2)) {
        /* The client keeps its window shut on a response: as a client that reads nothing (what
         * else it makes us write, PING acknowledgements, does not push the deadline back). */
        if (!loop_timer_armed(&c->timer))
            loop_timer_arm(s->loop, &c->timer, s->lim.send_timeout_ms);
    } else {
        loop_timer_cancel(s->loop, &c->timer);
    }
}

static void h2_kicked(struct loop *loop, void *data)
{
    struct http_conn *c = data;
    c->h2_kicked = 0;
    if (!c->closing) /* closed meanwhile: conn_free was deferred after this call */
        h2_pump(c);
}

void http_conn_h2_kick(struct http_conn *c)
{
    if (c->h2_kicked || c->closing)
        return;
    c->h2_kicked = 1;
    loop_defer(c->srv->loop, h2_kicked, c);
}

static void h2_io(struct http_conn *c, int events)
{
    if (events & LOOP_READ) {
        ssize_t n = conn_read(c, 4 * READ_CHUNK);
        if (n == 0 || (n < 0 && n != -EAGAIN)) {
            conn_close(c);
            return;
        }
        if (n > 0) {
            int rc = h2_session_recv(c->h2, buf_head(&c->in), buf_used(&c->in));
            buf_reset(&c->in);
            blockpool_buf_release(&c->srv->bufs, &c->in);
            if (rc < 0 || c->closing) {
                h2_pump(c); /* the GOAWAY, then the close */
                return;
            }
        }
    }
    h2_pump(c);
}

/* The handshake chose h2: the connection becomes an HTTP/2 one. -1 if it could not (closed). */
static int h2_start(struct http_conn *c)
{
    struct http_server *s = c->srv;
    c->h2 = h2_session_new(c, s->loop, s->ops, s->ctx, &s->lim, c->ssl != NULL);
    if (!c->h2) {
        conn_close(c);
        return -1;
    }
    loop_timer_cancel(s->loop, &c->timer);
    return 0;
}

int http_conn_stream_room(const struct http_conn *parent)
{
    const struct http_server *s = parent->srv;
    return !s->lim.max_conns || s->nconns + s->nstreams < s->lim.max_conns;
}

struct http_conn *http_conn_stream_new(struct http_conn *parent, struct h2_stream *st, int tls)
{
    struct http_conn *c = alloc_calloc(1, sizeof(*c));
    c->srv = parent->srv;
    c->srv->nstreams++;
    atomic_store_explicit(&c->srv->spread_streams, c->srv->nstreams, memory_order_relaxed);
    c->h2s = st;
    c->fd = -1;
    c->keep_alive = 1;
    c->stream_tls = tls ? 1 : 0;
    c->state = ST_WAIT;
    c->req_start_us = loop_clock_us();
    memcpy(c->ip, parent->ip, sizeof(c->ip));
    return c;
}

void http_conn_stream_retry_after(struct http_conn *sc, unsigned seconds) { sc->retry_after = seconds; }

void http_conn_stream_answered(struct http_conn *c)
{
    if (c->answered)
        return;
    c->answered = 1;
    c->srv->nstreams--;
    atomic_store_explicit(&c->srv->spread_streams, c->srv->nstreams, memory_order_relaxed);
    server_maybe_accept(c->srv);
}

void http_conn_stream_free(struct http_conn *c)
{
    struct http_server *s = c->srv;
    if (!c->answered) {
        s->nstreams--;
        atomic_store_explicit(&s->spread_streams, s->nstreams, memory_order_relaxed);
    }
    free(c);
    server_maybe_accept(s);
}

static void on_conn_io(struct loop *loop, int fd, int events, void *data)
{
    struct http_conn *c = data;
    if (__builtin_expect(c->handshaking, 0)) {
        if (conn_handshake(c) <= 0)
            return;
        events = LOOP_READ; /* the request may have come with the handshake's last flight */
        if (http_tls_conn_is_h2(c->ssl) && h2_start(c) < 0)
            return;
    }
    if (c->h2 && !c->lingering) {
        h2_io(c, events);
        return;
    }
    if (events & LOOP_WRITE) {
        if (conn_flush(c) < 0)
            return;
        if (c->state == ST_HEAD && buf_used(&c->in) > 0 && !out_full(c)) {
            process_input(c); /* pipelined requests held back by out_full */
        } else {
            conn_update_mask(c);
            conn_arm_timer(c);
        }
    }
    if (!(events & LOOP_READ) || c->closing)
        return;
    if (c->lingering) {
        ssize_t n = conn_read(c, READ_CHUNK);
        c->linger_bytes += n > 0 ? (unsigned)n : 0;
        buf_reset(&c->in);
        blockpool_buf_release(&c->srv->bufs, &c->in);
        if ((n <= 0 && n != -EAGAIN) || c->linger_bytes > LINGER_MAX)
            conn_close(c);
        return;
    }
    if (c->tunnel && c->state != ST_CLOSE) {
        tunnel_read(c);
        return;
    }
    int reading = (c->state == ST_HEAD && !out_full(c)) || (c->state == ST_BODY && !c->paused && !c->body_done);
    if (!reading) {
        ssize_t n = 0;
        if (wait_reads(c)) {
            /* Waiting for the handler: keep what arrives for later (see wait_reads). */
            n = conn_read(c, READ_CHUNK);
            if (n < 0)
                errno = (int)-n;
        } else {
            /* Readable while not reading (paused, closing): a hang-up? Peek for EOF. */
            char tmp;
            n = recv(c->fd, &tmp, 1, MSG_PEEK | MSG_DONTWAIT);
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (c->state == ST_CLOSE || n < 0 || c->state == ST_BODY) {
                conn_close(c);
                return;
            }
            /* Half-close after a complete request: nothing more will come. The requests already
             * read (this one and any pipelined after it) are answered in order, then the
             * connection closes (process_input). */
            c->hup = 1;
        }
        conn_update_mask(c);
        return;
    }
    /* A head is read up to its limit (plus a chunk, to tell "too long" from "incomplete"). */
    size_t max = c->state == ST_HEAD ? c->srv->lim.max_head + READ_CHUNK : 4 * READ_CHUNK;
    ssize_t n = conn_read(c, max);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        /* End of stream or error while reading a head or a body: neither can complete. (A
         * request already read is answered: the end is only seen after it was processed.) */
        conn_close(c);
        return;
    }
    process_input(c);
}

/* ---- accepting ---- */

static void on_accept(struct loop *loop, int fd, int events, void *data);

/* After accept() fails for want of a descriptor or memory, the pending connection stays in the
 * backlog and the level-triggered listening socket would be reported again at once: a busy loop.
 * Accepting pauses this long instead (nginx waits 500 ms), then resumes; at most one message per
 * ACCEPT_LOG_MS goes to stderr. */
#define ACCEPT_PAUSE_MS 100
/* A graceful stop closes idle keep-alive connections after this long (http_server_shutdown). */
#define SHUTDOWN_IDLE_GRACE_MS 250
#define ACCEPT_LOG_MS          10000

static void server_maybe_accept(struct http_server *s)
{
    if (s->lfd < 0 || s->shutting_down)
        return;
    int want = !s->accept_paused && (!s->lim.max_conns || s->nconns + s->nstreams < s->lim.max_conns);
    if (want && !s->accepting) {
        loop_set_mask(s->loop, s->lfd, LOOP_READ);
        s->accepting = 1;
    } else if (!want && s->accepting) {
        loop_set_mask(s->loop, s->lfd, 0);
        s->accepting = 0;
    }
}

static void on_accept_resume(struct loop *loop, struct loop_timer *t)
{
    struct http_server *s = t->data;
    s->accept_paused = 0;
    server_maybe_accept(s);
}

static void accept_pause(struct http_server *s, int err)
{
    s->accept_paused = 1;
    s->accept_timer.fn = on_accept_resume;
    s->accept_timer.data = s;
    loop_timer_arm(s->loop, &s->accept_timer, ACCEPT_PAUSE_MS);
    s->accept_failures++;
    uint64_t now = loop_now(s->loop);
    if (now >= s->accept_log_after_ms) {
        fprintf(stderr,
                "agora: accept: %s; not accepting for %d ms (%lu time(s) since the last message); "
                "see the descriptor limit\n",
                strerror(err), ACCEPT_PAUSE_MS, s->accept_failures);
        s->accept_failures = 0;
        s->accept_log_after_ms = now + ACCEPT_LOG_MS;
    }
}

/* Serves fd, a connection just accepted (here, or by another member of the group: spreading),
 * counted in s->spread_load already (so that the other members never see s lighter than it is
 * meanwhile); a connection refused here leaves the count again. */
static void adopt(struct http_server *s, int fd, const struct sockaddr_storage *ss)
{
    struct loop *loop = s->loop;
    net_tune(fd);
    char ip[48];
    net_format_ip((const struct sockaddr *)ss, ip, sizeof(ip));
    int counted = 0;
    if (http_climits_conn_limited(s->lim.climits)) {
        if (!http_climits_conn_open(s->lim.climits, ip)) {
            /* Refused cleanly: a short answer, then close (as nginx's limit_conn does). */
            static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                      "Content-Length: 39\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                                      "too many connections from your address\n";
            ssize_t w = s->lim.tls ? 0 : send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL); /* none in TLS */
            (void)w;
            close(fd);
            atomic_fetch_sub_explicit(&s->spread_load, 1, memory_order_relaxed);
            if (s->lim.stats)
                http_answers_count(&s->lim.stats->answers, 503);
            return;
        }
        counted = 1;
    }
    struct http_conn *c = alloc_calloc(1, sizeof(*c));
    c->srv = s;
    c->fd = fd;
    c->state = ST_HEAD;
    c->keep_alive = 1;
    c->counted = counted;
    memcpy(c->ip, ip, sizeof(c->ip));
    c->timer.fn = on_timer;
    c->timer.data = c;
    if (s->lim.tls) {
        c->ssl = http_tls_conn_new(s->lim.tls, fd);
        c->handshaking = 1;
    }
    if ((s->lim.tls && !c->ssl) || loop_watch(loop, fd, LOOP_READ, on_conn_io, c) < 0) {
        http_tls_conn_free(c->ssl);
        close(fd);
        atomic_fetch_sub_explicit(&s->spread_load, 1, memory_order_relaxed);
        if (counted)
            http_climits_conn_close(s->lim.climits, ip);
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (s->lim.stats)
        atomic_fetch_add_explicit(&s->lim.stats->conns, 1, memory_order_relaxed);
    if (c->handshaking)
        loop_timer_arm(loop, &c->timer, s->lim.handshake_timeout_ms); /* then closed (on_timer) */
    else
        conn_arm_timer(c);
}

/* ---- spreading (server.h) ---- */

#define SPREAD_MAX    HTTP_SPREAD_MAX
#define SPREAD_MARGIN 1 /* a connection moves when this many more are held here (server.h) */

struct spread_fd {
    int fd;
    struct sockaddr_storage ss;
};

struct http_spread {
    pthread_mutex_t mu;
    struct http_server *m[SPREAD_MAX];
    atomic_uint n;
    atomic_ulong handed;
};

struct http_spread *http_spread_new(void)
{
    struct http_spread *g = alloc_calloc(1, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    return g;
}

void http_spread_free(struct http_spread *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    free(g);
}

unsigned long http_spread_handed(struct http_spread *g)
{
    return g ? atomic_load_explicit(&g->handed, memory_order_relaxed) : 0;
}

unsigned http_spread_loads(struct http_spread *g, unsigned *workers, unsigned *conns, unsigned max)
{
    if (!g)
        return 0;
    pthread_mutex_lock(&g->mu);
    unsigned n = atomic_load_explicit(&g->n, memory_order_relaxed);
    n = n < max ? n : max;
    for (unsigned i = 0; i < n; i++) {
        workers[i] = g->m[i]->lim.worker;
        conns[i] = atomic_load_explicit(&g->m[i]->spread_load, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* Counts fd, just accepted by s, for the member that is to serve it: 1 if that is a less loaded
 * one (whose loop then adopts it), 0 if s keeps it. Counted under the group's lock when the lock is
 * taken, so that no other member reads s one short meanwhile. */
static int spread_pass(struct http_server *s, int fd, const struct sockaddr_storage *ss)
{
    struct http_spread *g = s->lim.spread;
    if (!g || atomic_load_explicit(&g->n, memory_order_relaxed) < 2 ||
        atomic_load_explicit(&s->spread_load, memory_order_relaxed) < SPREAD_MARGIN) {
        atomic_fetch_add_explicit(&s->spread_load, 1, memory_order_relaxed);
        return 0;
    }
    pthread_mutex_lock(&g->mu);
    struct http_server *to = NULL;
    unsigned least = atomic_load_explicit(&s->spread_load, memory_order_relaxed); /* again, under the lock */
    unsigned n = atomic_load_explicit(&g->n, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        struct http_server *m = g->m[i];
        unsigned load = atomic_load_explicit(&m->spread_load, memory_order_relaxed);
        /* room as on_accept counts it: connections (with those queued) and HTTP/2 streams; a member
         * its streams filled has paused accepting, and would close what it is handed (spread_take) */
        unsigned busy = load + atomic_load_explicit(&m->spread_streams, memory_order_relaxed);
        if (m != s && load + SPREAD_MARGIN <= least && (!m->lim.max_conns || busy < m->lim.max_conns)) {
            to = m;
            least = load;
        }
    }
    if (to && to->ninbox == to->capinbox) {
        unsigned cap = to->capinbox ? to->capinbox * 2 : 16;
        struct spread_fd *q = realloc(to->inbox, cap * sizeof(*q));
        if (q) {
            to->inbox = q;
            to->capinbox = cap;
        } else {
            to = NULL;
        }
    }
    if (to) {
        to->inbox[to->ninbox++] = (struct spread_fd){fd, *ss};
        atomic_fetch_add_explicit(&to->spread_load, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&g->handed, 1, memory_order_relaxed);
        uint64_t one = 1;
        ssize_t w = write(to->spread_efd, &one, sizeof(one)); /* under the lock: `to` cannot leave meanwhile */
        (void)w;
    } else {
        atomic_fetch_add_explicit(&s->spread_load, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g->mu);
    return to != NULL;
}

/* Takes what other members queued to s (under the group's lock) and serves it, or closes it (as a
 * refused connection) when s is being freed. */
static void spread_take(struct http_server *s, int serve)
{
    struct http_spread *g = s->lim.spread;
    pthread_mutex_lock(&g->mu);
    struct spread_fd *q = s->inbox;
    unsigned n = s->ninbox;
    s->inbox = NULL;
    s->ninbox = s->capinbox = 0;
    if (!serve) /* served ones stay counted: adopt takes them so */
        atomic_fetch_sub_explicit(&s->spread_load, n, memory_order_relaxed);
    pthread_mutex_unlock(&g->mu);
    for (unsigned i = 0; i < n; i++) {
        /* Not closed when s filled up since it was chosen (its own accepts got in between): the
         * connection is accepted already, its descriptor held, and the member that accepted it had
         * room; closing it unread dropped a client that the backlog would have kept waiting. Going
         * over max_conns by the few accepted meanwhile is the smaller harm (each was chosen while
         * s had room, spread_pass). */
        if (!serve)
            close(q[i].fd);
        else
            adopt(s, q[i].fd, &q[i].ss);
    }
    free(q);
}

static void on_spread(struct loop *loop, int fd, int events, void *data)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    spread_take(data, 1);
}

static void spread_join(struct http_server *s)
{
    struct http_spread *g = s->lim.spread;
    s->spread_efd = -1;
    if (!g)
        return;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || loop_watch(s->loop, efd, LOOP_READ, on_spread, s) < 0) {
        if (efd >= 0)
            close(efd);
        s->lim.spread = NULL; /* serves alone: only its own listening socket's connections */
        return;
    }
    s->spread_efd = efd;
    pthread_mutex_lock(&g->mu);
    unsigned n = atomic_load_explicit(&g->n, memory_order_relaxed);
    if (n < SPREAD_MAX) {
        g->m[n] = s;
        atomic_store_explicit(&g->n, n + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Leaves the group (no connection is queued to s afterwards); what was queued is served (a
 * graceful stop: as connections accepted just before it) or closed (s is being freed). */
static void spread_leave(struct http_server *s, int serve)
{
    struct http_spread *g = s->lim.spread;
    if (!g || s->spread_efd < 0)
        return;
    pthread_mutex_lock(&g->mu);
    unsigned n = atomic_load_explicit(&g->n, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        if (g->m[i] == s) {
            g->m[i] = g->m[n - 1];
            atomic_store_explicit(&g->n, n - 1, memory_order_relaxed);
            break;
        }
    }
    pthread_mutex_unlock(&g->mu);
    spread_take(s, serve);
    loop_unwatch(s->loop, s->spread_efd);
    close(s->spread_efd);
    s->spread_efd = -1;
}

static void on_accept(struct loop *loop, int lfd, int events, void *data)
{
    struct http_server *s = data;
    for (int i = 0; i < 64; i++) {
        if (s->lim.max_conns && s->nconns + s->nstreams >= s->lim.max_conns)
            break;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_pause(s, errno);
            break; /* EAGAIN (or an error of the client's): wait for the next event */
        }
        if (spread_pass(s, fd, &ss))
            continue;
        adopt(s, fd, &ss);
    }
    server_maybe_accept(s);
}

struct http_server *http_server_create(struct loop *loop, int listen_fd, const struct http_server_ops *ops, void *ctx,
                                       const struct http_server_limits *lim)
{
    struct http_server *s = alloc_calloc(1, sizeof(*s));
    s->loop = loop;
    s->lfd = listen_fd;
    s->ops = ops;
    s->ctx = ctx;
    struct http_server_limits def;
    http_server_limits_default(&def);
    s->lim = lim ? *lim : def;
#define DEF(f)                                                                                                         \
    if (!s->lim.f)                                                                                                     \
    s->lim.f = def.f
    DEF(max_line);
    DEF(max_head);
    DEF(header_timeout_ms);
    DEF(idle_timeout_ms);
    DEF(body_timeout_ms);
    DEF(send_timeout_ms);
    DEF(handshake_timeout_ms);
    DEF(h2_max_requests);
#undef DEF
    s->plim.max_line = s->lim.max_line;
    s->plim.max_head = s->lim.max_head;
    blockpool_init(&s->bufs, IO_BLOCK, POOL_MAX);
    blockpool_init(&s->reqs, sizeof(struct conn_req), POOL_MAX);
    if (loop_watch(loop, listen_fd, LOOP_READ, on_accept, s) < 0) {
        free(s);
        return NULL;
    }
    s->accepting = 1;
    spread_join(s);
    return s;
}

void http_server_shutdown(struct http_server *s)
{
    if (s->shutting_down)
        return;
    s->shutting_down = 1;
    if (s->lfd >= 0) {
        loop_unwatch(s->loop, s->lfd);
        close(s->lfd);
        s->lfd = -1;
    }
    spread_leave(s, 1);
    /* Idle keep-alive connections are closed after a short grace, not at once: a client may have
     * a request on its way on one (closing under it would fail that request); such a request is
     * answered, with Connection: close. */
    struct http_conn *c = s->conns;
    for (; c; c = c->next) {
        c->keep_alive = 0;
        if (c->h2) { /* the open streams finish; then the connection closes (h2_pump) */
            h2_session_goaway(c->h2, 0);
            http_conn_h2_kick(c);
            continue;
        }
        if (c->state == ST_HEAD && buf_used(&c->in) == 0 && buf_used(&c->out) == 0 && !c->closing)
            loop_timer_arm(s->loop, &c->timer, SHUTDOWN_IDLE_GRACE_MS);
    }
}

unsigned http_server_conns(const struct http_server *s) { return s->nconns; }

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    loop_timer_cancel(s->loop, &s->accept_timer);
    spread_leave(s, 0);
    if (s->lfd >= 0) {
        loop_unwatch(s->loop, s->lfd);
        close(s->lfd);
    }
    while (s->conns) {
        struct http_conn *c = s->conns;
        conn_close(c);
    }
    blockpool_free(&s->bufs);
    blockpool_free(&s->reqs);
    free(s);
}

/* ---- small accessors ---- */

/* The deferred half of http_conn_pause_body(c, 0): feeds the body read meanwhile. */
static void resume_body(struct loop *loop, void *data)
{
    struct http_conn *c = data;
    c->resuming = 0;
    if (!c->closing) /* closed meanwhile: conn_free was deferred after this call */
        process_input(c);
}

void http_conn_pause_body(struct http_conn *c, int paused)
{
    paused = !!paused; /* a one-bit field */
    if (c->h2s) {
        h2_stream_pause_body(c->h2s, paused);
        return;
    }
    if (c->closing || c->paused == (unsigned)paused)
        return;
    c->paused = (unsigned)paused;
    if (c->in_process)
        return; /* feed_body's loop sees the flag */
    if (!paused && c->state == ST_BODY) {
        /* Feeding the body calls the handler, which may be the caller: after it returns. */
        if (!c->resuming) {
            c->resuming = 1;
            loop_defer(c->srv->loop, resume_body, c);
        }
        return;
    }
    conn_update_mask(c);
    conn_arm_timer(c);
}

const char *http_conn_remote_ip(const struct http_conn *c) { return c->ip; }
int http_conn_is_tls(const struct http_conn *c) { return c->ssl != NULL || c->stream_tls; }
uint64_t http_conn_request_start_us(const struct http_conn *c) { return c->req_start_us; }
uint64_t http_conn_response_bytes(const struct http_conn *c) { return c->resp_bytes; }
int http_conn_will_close(const struct http_conn *c)
{
    /* After a half-close, only the last request read is answered with "close". */
    return !c->keep_alive || (c->hup && buf_used(&c->in) == 0) || c->srv->shutting_down;
}
void *http_conn_get_data(const struct http_conn *c) { return c->data; }
void http_conn_set_data(struct http_conn *c, void *data) { c->data = data; }

/* ---- the buffered adapter ---- */

/* The request being collected, and (when it went to a pool) its job. */
struct buffered_req {
    struct buf body;
    struct http_pool_job *job;
};

static void buf_on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    struct buffered_req *r = alloc_calloc(1, sizeof(*r));
    http_conn_set_data(c, r);
}

static void buf_on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    struct buffered_req *r = http_conn_get_data(c);
    buf_append(&r->body, p, n);
}

static void buffered_req_free(struct buffered_req *r)
{
    buf_free(&r->body);
    free(r);
}

static void buf_on_abort(void *ctx, struct http_conn *c)
{
    struct buffered_req *r = http_conn_get_data(c);
    if (r) {
        if (r->job)
            http_pool_cancel(r->job); /* its done function is never called now */
        buffered_req_free(r);
    }
}

/* Writes a handler's response (adding the framing headers) and ends the request. */
static void buf_send_response(struct http_conn *c, struct http_response *resp)
{
    struct buf out = {0};
    int no_body = resp->status == 204 || resp->status == 304 || resp->status < 200;
    http_write_status_line(&out, resp->status);
    if (!no_body)
        buf_printf(&out, "Content-Length: %zu\r\n", buf_used(&resp->body));
    int last = resp->close || http_conn_will_close(c);
    if (last)
        buf_puts(&out, "Connection: close\r\n");
    buf_append(&out, buf_head(&resp->headers), buf_used(&resp->headers));
    buf_puts(&out, "\r\n");
    if (conn_method(c) != HTTP_HEAD && !no_body)
        buf_append(&out, buf_head(&resp->body), buf_used(&resp->body));
    http_conn_send(c, buf_head(&out), buf_used(&out));
    buf_free(&out);
    http_conn_response_done(c, !last); /* what the head or the handler said */
}

/* A pool job finished (on the connection's loop thread; the connection is alive, or the job
 * would have been cancelled by buf_on_abort). resp == NULL: it waited too long for a thread. */
static void buf_job_done(void *arg, struct http_response *resp)
{
    struct http_conn *c = arg;
    struct buffered_req *r = http_conn_get_data(c);
    r->job = NULL;
    buffered_req_free(r);
    http_conn_set_data(c, NULL);
    if (!resp) {
        c->retry_after = 1;
        server_error(c, 503, "server busy: no worker was free in time, try again shortly", 0);
        return;
    }
    buf_send_response(c, resp);
}

static void buf_on_body_end(void *ctx, struct http_conn *c)
{
    struct http_buffered *hb = ctx;
    struct buffered_req *r = http_conn_get_data(c);
    struct http_request req = {
        .head = &c->req->head,
        .body = buf_cstr(&r->body),
        .body_len = buf_used(&r->body),
        .remote_addr = c->ip,
    };
    struct http_pool_port *port = hb->pick ? hb->pick(hb->pick_ctx, &req) : NULL;
    if (port) {
        /* Runs on a pool thread; the response comes back through buf_job_done. */
        r->job = http_pool_submit(port, &req, buf_job_done, c);
        buf_free(&r->body); /* copied into the job */
        if (!r->job) {
            buffered_req_free(r);
            http_conn_set_data(c, NULL);
            c->retry_after = 1;
            server_error(c, 503, "server busy: too many requests waiting for a worker, try again shortly", 0);
        }
        return;
    }
    struct http_response resp = {.status = 200};
    hb->fn(hb->fn_ctx, &req, &resp);
    buffered_req_free(r);
    http_conn_set_data(c, NULL);
    buf_send_response(c, &resp);
    buf_free(&resp.headers);
    buf_free(&resp.body);
}

const struct http_server_ops http_server_buffered_ops = {
    .on_request = buf_on_request,
    .on_body = buf_on_body,
    .on_body_end = buf_on_body_end,
    .on_abort = buf_on_abort,
    .auto_continue = 1,
};
