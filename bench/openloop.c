/*
 * openloop — an open-loop HTTP/1.1 load generator for agora's benchmarks (bench/openloop.sh).
 *
 * Closed-loop tools (wrk, ab) send a connection's next request only after its previous answer has
 * arrived, and time each request from the moment it was sent. When a server stalls they stop
 * sending, so the requests that users would have sent during the stall are never made and never
 * timed ("coordinated omission"): a 500 ms stall shows as one slow request per connection. This
 * tool sends request i at its due time t0 + i/R whatever happened before, and times each request
 * from that due time to the last byte of its response. A stall then shows in the percentiles as
 * users would see it: every request due during it waits, and its wait is counted.
 *
 * Design. One thread, one level-triggered epoll loop, non-blocking keep-alive connections, each
 * carrying one request at a time (no pipelining). Requests fall due in index order; a due request
 * takes an idle connection, else opens a new one while fewer than --conns are open, else waits.
 * Requests are sent in due order, so the waiting ones are the contiguous range [next_send,
 * next_due) and need no queue. Responses are framed by Content-Length, chunked transfer coding or
 * (without either) the connection's close. Latencies go to a log-linear histogram: 1 µs buckets
 * below 128 µs, then 128 buckets per power of two (relative error under 0.8 %), up to 60 s. A
 * request not answered --timeout seconds after its due time counts as a timeout (a connection
 * carrying it is closed); a connection that fails or breaks the protocol counts one error. Every
 * request ends as completed, error or timeout, so a run lasts at most duration + timeout.
 *
 * TLS (--tls): the same over TLS (OpenSSL; ALPN http/1.1, the server's certificate not checked:
 * a benchmark client on loopback). A connection's handshake comes before its first request is
 * written, so a request that has to open a connection waits for a handshake, counted from its due
 * time like any other wait. --preconnect opens --conns connections (handshakes included) before
 * the first request falls due, so that a keep-alive comparison does not start with a burst of
 * handshakes, and then uses them in turn (least recently idle first) so that the load goes
 * round all of them, as a closed loop's does.
 *
 * Output: a short summary for people, then one machine-readable line of key=value pairs starting
 * with "openloop:" (see print_results()); with --log FILE, also one line per completed request
 * (due time since the start, latency, status), to see when in a run the slow requests fell due.
 * Exit status 0 when the run finished (whatever the errors), 1 on a setup failure, 2 on bad usage.
 *
 * Standalone on purpose: only libc and OpenSSL, no project headers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { OK = 0, ERROR = -1, AGAIN = -2 };

#define IN_SIZE     16384            /* input buffer per connection = largest response head */
#define SUB_BITS    7                /* histogram: 2^7 buckets per power of two */
#define SUB         (1u << SUB_BITS) /* 128 */
#define HIST_MAX_US 60000000ull      /* latencies above 60 s are counted as 60 s */
#define NBUCKETS    (SUB * 20)       /* enough for HIST_MAX_US (checked in main) */
#define EVENTS      256
#define CHECK_NS    10000000ll /* how often busy connections are checked for timeouts */
#define LATE_NS     1000000ll  /* a request sent this long after its due time is "late" */
#define MAX_CONNS   60000
#define MAX_REQS    100000000.0

/* What a connection is doing. */
enum cstate { C_FREE, C_CONNECTING, C_HANDSHAKE, C_SENDING, C_READING, C_IDLE };

/* Where the response parser is: the head, then one of the body framings. */
enum phase { P_HEAD, P_LENGTH, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_UNTIL_CLOSE };

struct conn {
    int fd;
    SSL *ssl; /* --tls: the connection's TLS; NULL otherwise */
    enum cstate state;
    int64_t due;    /* due time of the request carried, ns; -1 when none (a preconnection) */
    size_t sent;    /* bytes of the request written */
    bool out_armed; /* EPOLLOUT is registered (connecting, or a write would block) */
    int prev, next; /* idle list links (indices), -1 at the ends */
    enum phase phase;
    uint64_t remaining; /* body bytes left (P_LENGTH, P_CHUNK_DATA) */
    int status;
    bool close_after; /* the server will close after this response */
    size_t in_len;
    char in[IN_SIZE];
};

struct hist {
    uint64_t counts[NBUCKETS];
    uint64_t n, max_us, sum_us;
};

struct options {
    struct sockaddr_in addr;
    const char *host, *path;
    double rate, duration, timeout;
    int max_conns;
    const char *log_path; /* --log FILE, or NULL */
    bool tls, preconnect; /* --tls, --preconnect */
};

struct gen {
    struct options opt;
    int ep;
    char *req;
    size_t req_len;
    struct conn *conns; /* opt.max_conns slots */
    int *free_slots;    /* stack of C_FREE slot indices */
    int nfree;
    int idle_head; /* most recently idle connection, -1 if none */
    int idle_tail; /* least recently idle connection, -1 if none */
    int open, busy, peak_open;
    uint64_t total, next_due, next_send;
    int64_t t0, interval_ns, last_done;
    uint64_t completed, non2xx, errors, timeouts, opened, late;
    int64_t max_lag;
    struct hist hist;
    FILE *log;      /* per-request lines (--log), or NULL */
    SSL_CTX *tls;   /* --tls */
    bool no_pwait2; /* epoll_pwait2 is missing (old kernel, valgrind): epoll_wait in ms */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* ---------------------------------------------------------------- histogram */

static unsigned bucket_of(uint64_t us)
{
    if (us > HIST_MAX_US)
        us = HIST_MAX_US;
    if (us < SUB)
        return (unsigned)us;
    unsigned k = 63u - (unsigned)__builtin_clzll(us); /* us in [2^k, 2^(k+1)), k >= SUB_BITS */
    unsigned shift = k - SUB_BITS;
    return SUB + shift * SUB + (unsigned)((us >> shift) - SUB);
}

/* The middle of bucket i's range of microseconds. */
static double bucket_mid(unsigned i)
{
    if (i < SUB)
        return i;
    unsigned shift = (i - SUB) / SUB;
    uint64_t m = SUB + (i - SUB) % SUB;
    uint64_t lo = m << shift, hi = ((m + 1) << shift) - 1;
    return (double)(lo + hi) / 2.0;
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->counts[bucket_of(us)]++;
    h->n++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
}

/* The p-quantile (0 < p <= 1) in milliseconds: the bucket holding the ceil(p * n)-th smallest
 * value, reported at its middle but never above the largest value seen. 0 when empty. */
static double hist_quantile_ms(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)h->n), seen = 0;
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double mid = bucket_mid(i);
            return (mid > (double)h->max_us ? (double)h->max_us : mid) / 1000.0;
        }
    }
    return (double)h->max_us / 1000.0;
}

/* ---------------------------------------------------------------- connections */

static void idle_push(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    c->state = C_IDLE;
    c->prev = -1;
    c->next = g->idle_head;
    if (g->idle_head >= 0)
        g->conns[g->idle_head].prev = i;
    else
        g->idle_tail = i;
    g->idle_head = i;
}

static void idle_remove(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    if (c->prev >= 0)
        g->conns[c->prev].next = c->next;
    else
        g->idle_head = c->next;
    if (c->next >= 0)
        g->conns[c->next].prev = c->prev;
    else
        g->idle_tail = c->prev;
    c->prev = c->next = -1;
}

/* Closes connection i and frees its slot. A connection carrying a request must have had that
 * request accounted for (completed, error or timeout) by the caller. */
static void conn_close(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    if (c->state == C_IDLE)
        idle_remove(g, i);
    else if (c->state != C_FREE)
        g->busy--;
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    c->fd = -1;
    c->state = C_FREE;
    g->open--;
    g->free_slots[g->nfree++] = i;
}

static void conn_fail(struct gen *g, int i)
{
    g->errors++;
    conn_close(g, i);
}

static int set_events(struct gen *g, int i, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    return epoll_ctl(g->ep, EPOLL_CTL_MOD, g->conns[i].fd, &ev);
}

/* Writes what is left of the request; moves to C_READING when all is written. Returns OK, or
 * ERROR after counting the error and closing the connection. */
static int conn_send(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    if (c->sent == 0) { /* how late the request goes out (after a connect or handshake, if any) */
        int64_t lag = now_ns() - c->due;
        if (lag > g->max_lag)
            g->max_lag = lag;
        if (lag > LATE_NS)
            g->late++;
    }
    while (c->sent < g->req_len) {
        ssize_t n;
        if (c->ssl) {
            /* A write that did not go is retried with the same bytes, as OpenSSL requires. */
            ERR_clear_error();
            int w = SSL_write(c->ssl, g->req + c->sent, (int)(g->req_len - c->sent));
            int e = w > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, w);
            n = w > 0 ? w : -1;
            errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
        } else {
            n = send(c->fd, g->req + c->sent, g->req_len - c->sent, MSG_NOSIGNAL);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!c->out_armed && set_events(g, i, EPOLLIN | EPOLLOUT) < 0)
                goto fail;
            c->out_armed = true;
            c->state = C_SENDING;
            return OK;
        }
        if (n <= 0)
            goto fail;
        c->sent += (size_t)n;
    }
    if (c->out_armed) {
        if (set_events(g, i, EPOLLIN) < 0)
            goto fail;
        c->out_armed = false;
    }
    c->state = C_READING;
    return OK;
fail:
    conn_fail(g, i);
    return ERROR;
}

/* Gives request `due` to connection i (idle or just connected) and starts sending it. */
static void conn_start(struct gen *g, int i, int64_t due)
{
    struct conn *c = &g->conns[i];
    c->due = due;
    c->sent = 0;
    c->phase = P_HEAD;
    c->in_len = 0;
    c->status = 0;
    c->close_after = false;
    if (c->state != C_CONNECTING && c->state != C_HANDSHAKE)
        conn_send(g, i);
}

/* Connection i is up (TCP, and TLS with --tls): writes the request it carries or, a
 * preconnection, makes it idle. Returns OK, or ERROR after counting the error and closing. */
static int conn_ready(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    c->state = C_SENDING;
    if (c->due >= 0)
        return conn_send(g, i);
    if ((c->out_armed || c->ssl) && set_events(g, i, EPOLLIN) < 0) {
        conn_fail(g, i);
        return ERROR;
    }
    c->out_armed = false;
    g->busy--;
    idle_push(g, i);
    return OK;
}

/* Drives connection i's TLS handshake. Once done, the request it carries is written, or (a
 * preconnection) it becomes idle. Returns OK, or ERROR after counting the error and closing. */
static int conn_handshake(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return conn_ready(g, i);
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        bool out = e == SSL_ERROR_WANT_WRITE;
        if (out != c->out_armed && set_events(g, i, out ? EPOLLOUT : EPOLLIN) < 0)
            goto fail;
        c->out_armed = out;
        return OK;
    }
fail:
    conn_fail(g, i);
    return ERROR;
}

/* Starts connection i's TLS (the TCP connection is up). Returns OK or ERROR as conn_handshake. */
static int conn_tls(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    c->state = C_HANDSHAKE;
    if (!(c->ssl = SSL_new(g->tls)) || SSL_set_fd(c->ssl, c->fd) != 1) {
        conn_fail(g, i);
        return ERROR;
    }
    SSL_set_connect_state(c->ssl);
    return conn_handshake(g, i);
}

/* Opens a new connection in a free slot; returns its index, or ERROR after counting an error. */
static int conn_open(struct gen *g)
{
    int one = 1, i = g->free_slots[--g->nfree];
    struct conn *c = &g->conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool pending = false;
    if (connect(fd, (struct sockaddr *)&g->opt.addr, sizeof(g->opt.addr)) < 0) {
        if (errno != EINPROGRESS)
            goto fail;
        pending = true;
    }
    struct epoll_event ev = {.events = pending ? EPOLLOUT : EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        goto fail;
    c->fd = fd;
    c->state = pending ? C_CONNECTING : g->tls ? C_HANDSHAKE : C_SENDING;
    c->out_armed = pending;
    c->prev = c->next = -1;
    c->due = -1;
    g->open++;
    g->busy++;
    g->opened++;
    if (g->open > g->peak_open)
        g->peak_open = g->open;
    if (c->state == C_HANDSHAKE && conn_tls(g, i) != OK)
        return ERROR; /* counted and closed */
    return i;
fail:
    if (fd >= 0)
        close(fd);
    g->free_slots[g->nfree++] = i;
    g->errors++;
    return ERROR;
}

/* Called when the response on connection i is complete: records it, then keeps the connection
 * idle or closes it. Bytes after the response are a protocol error (one request at a time): the
 * request then counts as an error, not as completed. */
static void conn_done(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    int64_t now = now_ns(); /* not the batch's: decrypting the events before this one took time */
    int64_t lat = now - c->due;
    if (c->in_len > 0) {
        conn_fail(g, i);
        return;
    }
    hist_add(&g->hist, lat > 0 ? (uint64_t)lat / 1000u : 0);
    g->completed++;
    if (g->log)
        fprintf(g->log, "%.3f %.3f %d\n", (double)(c->due - g->t0) / 1e6, (double)lat / 1e6, c->status);
    g->last_done = now;
    if (c->status < 200 || c->status > 299)
        g->non2xx++;
    if (c->close_after) {
        conn_close(g, i);
        return;
    }
    g->busy--;
    idle_push(g, i);
}

/* Case-insensitive: does the comma/space separated value v (length n) contain token t? */
static bool has_token(const char *v, size_t n, const char *t)
{
    size_t tl = strlen(t);
    for (size_t k = 0; k + tl <= n; k++)
        if (strncasecmp(v + k, t, tl) == 0)
            return true;
    return false;
}

/* Parses the response head in c->in[0, end) and chooses the body framing. Returns OK, or ERROR
 * on a malformed head. */
static int parse_head(struct conn *c, size_t end)
{
    const char *p = c->in, *lim = c->in + end;
    if (end < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return ERROR;
    bool http10 = p[7] == '0';
    c->status = atoi(p + 9);
    if (c->status < 100 || c->status > 999)
        return ERROR;
    bool chunked = false, has_len = false, keep_alive = false;
    uint64_t len = 0;
    c->close_after = false;
    const char *line = memchr(p, '\n', end);
    while (line && ++line < lim) {
        const char *eol = memchr(line, '\n', (size_t)(lim - line));
        if (!eol)
            break;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            size_t nl = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vl = (size_t)(eol - v);
            if (nl == 14 && strncasecmp(line, "content-length", 14) == 0) {
                char *endp;
                errno = 0;
                len = strtoull(v, &endp, 10);
                if (errno || endp == v)
                    return ERROR;
                has_len = true;
            } else if (nl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
                chunked = has_token(v, vl, "chunked");
            } else if (nl == 10 && strncasecmp(line, "connection", 10) == 0) {
                if (has_token(v, vl, "close"))
                    c->close_after = true;
                if (has_token(v, vl, "keep-alive"))
                    keep_alive = true;
            }
        }
        line = eol;
    }
    if (http10 && !keep_alive)
        c->close_after = true;
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        c->phase = P_LENGTH;
        c->remaining = 0;
    } else if (chunked) {
        c->phase = P_CHUNK_SIZE;
    } else if (has_len) {
        c->phase = P_LENGTH;
        c->remaining = len;
    } else {
        c->phase = P_UNTIL_CLOSE;
        c->close_after = true;
    }
    return OK;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Advances the parser over c->in. Returns OK when the response is complete, AGAIN when more input
 * is needed, ERROR on a protocol error. 1xx interim responses are skipped. */
static int parse(struct conn *c)
{
    for (;;) {
        switch (c->phase) {
        case P_HEAD: {
            char *e = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!e)
                return c->in_len == IN_SIZE ? ERROR : AGAIN;
            size_t end = (size_t)(e - c->in) + 4;
            if (parse_head(c, end) != OK)
                return ERROR;
            consume(c, end);
            if (c->status >= 100 && c->status < 200) {
                c->phase = P_HEAD;
                continue;
            }
            break;
        }
        case P_LENGTH: {
            size_t n = c->in_len < c->remaining ? c->in_len : (size_t)c->remaining;
            consume(c, n);
            c->remaining -= n;
            return c->remaining == 0 ? OK : AGAIN;
        }
        case P_CHUNK_SIZE:
        case P_TRAILER: {
            char *e = memmem(c->in, c->in_len, "\r\n", 2);
            if (!e)
                return c->in_len == IN_SIZE ? ERROR : AGAIN;
            size_t end = (size_t)(e - c->in) + 2;
            if (c->phase == P_TRAILER) {
                consume(c, end);
                if (end == 2)
                    return OK;
                continue;
            }
            char *endp;
            errno = 0;
            uint64_t size = strtoull(c->in, &endp, 16);
            if (errno || endp == c->in || (*endp != ';' && *endp != '\r' && *endp != ' ' && *endp != '\t'))
                return ERROR;
            consume(c, end);
            c->remaining = size;
            c->phase = size == 0 ? P_TRAILER : P_CHUNK_DATA;
            break;
        }
        case P_CHUNK_DATA: {
            size_t n = c->in_len < c->remaining ? c->in_len : (size_t)c->remaining;
            consume(c, n);
            c->remaining -= n;
            if (c->remaining > 0)
                return AGAIN;
            c->phase = P_CHUNK_CRLF;
            break;
        }
        case P_CHUNK_CRLF:
            if (c->in_len < 2)
                return AGAIN;
            if (c->in[0] != '\r' || c->in[1] != '\n')
                return ERROR;
            consume(c, 2);
            c->phase = P_CHUNK_SIZE;
            break;
        case P_UNTIL_CLOSE:
            c->in_len = 0;
            return AGAIN;
        }
    }
}

/* SSL_read with recv's contract: bytes, 0 at the peer's close_notify or TCP end (the context
 * takes an end without close_notify as one: SSL_OP_IGNORE_UNEXPECTED_EOF), -1 with errno EAGAIN
 * (nothing decrypted yet) or EPIPE. */
static ssize_t tls_read(struct conn *c, char *b, size_t n)
{
    ERR_clear_error();
    int r = SSL_read(c->ssl, b, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE;
    return -1;
}

/* Reads what connection i has to give and advances its response. */
static void conn_read(struct gen *g, int i)
{
    struct conn *c = &g->conns[i];
    if (c->state == C_IDLE) {
        /* The server closed an idle keep-alive connection (or sent something unasked, which no
         * request is charged with): close it. Over TLS the readiness may be only a TLS 1.3
         * session ticket, which OpenSSL takes in and reports as "want read". */
        char b[1];
        ssize_t n = c->ssl ? tls_read(c, b, 1) : recv(c->fd, b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(g, i);
        return;
    }
    for (;;) {
        ssize_t n = c->ssl ? tls_read(c, c->in + c->in_len, IN_SIZE - c->in_len)
                           : recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0) {
            conn_fail(g, i);
            return;
        }
        if (n == 0) {
            if (c->phase == P_UNTIL_CLOSE) {
                c->close_after = true;
                conn_done(g, i);
            } else {
                conn_fail(g, i);
            }
            return;
        }
        c->in_len += (size_t)n;
        int rc = parse(c);
        if (rc == ERROR) {
            conn_fail(g, i);
            return;
        }
        if (rc == OK) {
            conn_done(g, i);
            return;
        }
    }
}

static void conn_event(struct gen *g, int i, uint32_t events)
{
    struct conn *c = &g->conns[i];
    if (c->state == C_FREE)
        return;
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            conn_fail(g, i);
            return;
        }
        if (g->tls)
            conn_tls(g, i);
        else
            conn_ready(g, i);
        return;
    }
    if (c->state == C_HANDSHAKE) {
        conn_handshake(g, i);
        return;
    }
    if (c->state == C_SENDING && (events & EPOLLOUT)) {
        if (conn_send(g, i) != OK)
            return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_read(g, i);
}

/* ---------------------------------------------------------------- the schedule */

static int64_t due_of(const struct gen *g, uint64_t i) { return g->t0 + (int64_t)((double)i * 1e9 / g->opt.rate); }

/* Makes requests due, gives waiting requests connections, and times out what waited too long. */
static void schedule(struct gen *g, int64_t now)
{
    int64_t timeout = (int64_t)(g->opt.timeout * 1e9);
    while (g->next_due < g->total && due_of(g, g->next_due) <= now)
        g->next_due++;
    while (g->next_send < g->next_due && now - due_of(g, g->next_send) >= timeout) {
        g->timeouts++;
        g->next_send++;
    }
    while (g->next_send < g->next_due) {
        /* The most recently idle connection (warm, and the others may be closed as idle by the
         * server); with --preconnect the least recently idle one, so that the load goes round
         * all --conns connections as a closed loop's does (each may be a different worker of
         * the server), not over the two or three a low rate keeps busy. */
        int i = g->opt.preconnect ? g->idle_tail : g->idle_head;
        if (i >= 0) {
            idle_remove(g, i);
            g->conns[i].state = C_SENDING;
            g->conns[i].out_armed = false;
            g->busy++;
        } else if (g->open < g->opt.max_conns) {
            i = conn_open(g);
            if (i < 0) {
                g->next_send++; /* the request failed: counted as an error */
                continue;
            }
        } else {
            return;
        }
        conn_start(g, i, due_of(g, g->next_send));
        g->next_send++;
    }
}

static void check_timeouts(struct gen *g, int64_t now)
{
    int64_t timeout = (int64_t)(g->opt.timeout * 1e9);
    for (int i = 0; i < g->opt.max_conns; i++) {
        struct conn *c = &g->conns[i];
        if (c->state != C_FREE && c->state != C_IDLE && c->due >= 0 && now - c->due >= timeout) {
            g->timeouts++;
            conn_close(g, i);
        }
    }
}

/* --preconnect: opens --conns connections and waits (up to --timeout) until each is idle, its
 * handshake done. ERROR with a message when one could not be made. */
static int preconnect(struct gen *g)
{
    struct epoll_event ev[EVENTS];
    for (int k = 0; k < g->opt.max_conns; k++) {
        int i = conn_open(g);
        if (i >= 0 && g->conns[i].state == C_SENDING) /* plain TCP, connected at once */
            conn_ready(g, i);
    }
    int64_t deadline = now_ns() + (int64_t)(g->opt.timeout * 1e9);
    while (g->busy > 0) {
        int64_t now = now_ns();
        if (now >= deadline) {
            fprintf(stderr, "openloop: --preconnect: %d of %d connections not ready after --timeout\n", g->busy,
                    g->opt.max_conns);
            return ERROR;
        }
        int n = epoll_wait(g->ep, ev, EVENTS, 100);
        if (n < 0 && errno != EINTR) {
            perror("openloop: epoll_wait");
            return ERROR;
        }
        for (int k = 0; k < n; k++)
            conn_event(g, (int)ev[k].data.u32, ev[k].events);
    }
    if (g->errors) {
        fprintf(stderr, "openloop: --preconnect: %" PRIu64 " of %d connections failed\n", g->errors, g->opt.max_conns);
        return ERROR;
    }
    return OK;
}

static int run(struct gen *g)
{
    struct epoll_event ev[EVENTS];
    int64_t next_check = 0;
    g->t0 = now_ns() + 1000000; /* 1 ms of set-up slack */
    g->last_done = g->t0;
    for (;;) {
        int64_t now = now_ns();
        schedule(g, now);
        if (now >= next_check) {
            check_timeouts(g, now);
            next_check = now + CHECK_NS;
        }
        if (g->next_send == g->total && g->busy == 0)
            return OK;
        int64_t wake = next_check;
        if (g->next_due < g->total && due_of(g, g->next_due) < wake)
            wake = due_of(g, g->next_due);
        int64_t wait = wake - now_ns();
        struct timespec ts = {.tv_sec = wait > 0 ? wait / 1000000000ll : 0,
                              .tv_nsec = wait > 0 ? wait % 1000000000ll : 0};
        int n = -1;
        if (!g->no_pwait2) {
            n = epoll_pwait2(g->ep, ev, EVENTS, &ts, NULL);
            g->no_pwait2 = n < 0 && errno == ENOSYS;
        }
        if (g->no_pwait2) /* millisecond timeout, rounded up */
            n = epoll_wait(g->ep, ev, EVENTS, wait > 0 ? (int)((wait + 999999) / 1000000) : 0);
        if (n < 0 && errno != EINTR) {
            perror("openloop: epoll_pwait2");
            return ERROR;
        }
        for (int k = 0; k < n; k++)
            conn_event(g, (int)ev[k].data.u32, ev[k].events);
    }
}

/* ---------------------------------------------------------------- setup and output */

static void print_results(const struct gen *g, int64_t end)
{
    const struct hist *h = &g->hist;
    double secs = (double)((end > g->t0 ? end : g->t0) - g->t0) / 1e9;
    double span = secs > g->opt.duration ? secs : g->opt.duration;
    double achieved = span > 0 ? (double)g->completed / span : 0;
    double mean = h->n ? (double)h->sum_us / (double)h->n / 1000.0 : 0;
    printf("open loop: %.1f req/s for %.1f s to %s://%s:%u%s (%" PRIu64 " requests, up to %d connections)\n",
           g->opt.rate, g->opt.duration, g->opt.tls ? "https" : "http", g->opt.host, ntohs(g->opt.addr.sin_port),
           g->opt.path, g->total, g->opt.max_conns);
    printf("  completed %" PRIu64 " (%.1f req/s), non-2xx %" PRIu64 ", errors %" PRIu64 ", timeouts %" PRIu64
           "; %" PRIu64 " connections opened (at most %d open)\n",
           g->completed, achieved, g->non2xx, g->errors, g->timeouts, g->opened, g->peak_open);
    printf("  latency from due time: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms\n",
           hist_quantile_ms(h, 0.5), hist_quantile_ms(h, 0.9), hist_quantile_ms(h, 0.99), hist_quantile_ms(h, 0.999),
           (double)h->max_us / 1000.0, mean);
    printf("  %" PRIu64 " requests sent over 1 ms after their due time (no free connection, or this process ran late), "
           "at most %.3f ms\n",
           g->late, (double)g->max_lag / 1e6);
    printf("openloop: rate=%.3f duration=%.3f requests=%" PRIu64 " completed=%" PRIu64 " achieved_rps=%.1f"
           " non2xx=%" PRIu64 " errors=%" PRIu64 " timeouts=%" PRIu64 " conns=%" PRIu64 " peak_conns=%d"
           " late=%" PRIu64 " max_send_lag_ms=%.3f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f"
           " max_ms=%.3f mean_ms=%.3f\n",
           g->opt.rate, g->opt.duration, g->total, g->completed, achieved, g->non2xx, g->errors, g->timeouts, g->opened,
           g->peak_open, g->late, (double)g->max_lag / 1e6, hist_quantile_ms(h, 0.5), hist_quantile_ms(h, 0.9),
           hist_quantile_ms(h, 0.99), hist_quantile_ms(h, 0.999), (double)h->max_us / 1000.0, mean);
}

static void usage(FILE *out)
{
    fputs("usage: openloop --port N --rate R --duration S [options]\n"
          "Open-loop HTTP/1.1 load: GET requests at a fixed rate, latency from each request's due time.\n"
          "  --host ADDR      IPv4 address of the server (default 127.0.0.1)\n"
          "  --port N         its port (required)\n"
          "  --path PATH      request target (default /)\n"
          "  --rate R         requests per second (required)\n"
          "  --duration S     seconds during which requests fall due (required)\n"
          "  --conns N        most connections open at once (default 1024)\n"
          "  --timeout S      a request unanswered S seconds after its due time is a timeout (default 10)\n"
          "  --log FILE       write \"DUE_MS LATENCY_MS STATUS\" per completed request (due time from the start)\n"
          "  --tls            HTTPS: TLS 1.2 or 1.3, ALPN http/1.1, the certificate not checked\n"
          "  --preconnect     open --conns connections (and their handshakes) before the first request is due,\n"
          "                   and use them in turn (least recently used first)\n"
          "Prints a summary and one line \"openloop: key=value ...\".\n",
          out);
}

static double parse_num(const char *s, double min, double max, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= min && v <= max)) {
        fprintf(stderr, "openloop: %s must be a number in [%g, %g], not \"%s\"\n", what, min, max, s);
        exit(2);
    }
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"path", required_argument, NULL, 'P'},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"conns", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"log", required_argument, NULL, 'l'},
        {"tls", no_argument, NULL, 'T'},
        {"preconnect", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int port = -1, opt;
    o->host = "127.0.0.1";
    o->path = "/";
    o->rate = o->duration = -1;
    o->timeout = 10;
    o->max_conns = 1024;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            port = (int)parse_num(optarg, 1, 65535, "--port");
            break;
        case 'P':
            o->path = optarg;
            break;
        case 'r':
            o->rate = parse_num(optarg, 0.001, 1e7, "--rate");
            break;
        case 'd':
            o->duration = parse_num(optarg, 0.001, 86400, "--duration");
            break;
        case 'c':
            o->max_conns = (int)parse_num(optarg, 1, MAX_CONNS, "--conns");
            break;
        case 'l':
            o->log_path = optarg;
            break;
        case 't':
            o->timeout = parse_num(optarg, 0.001, 3600, "--timeout");
            break;
        case 'T':
            o->tls = true;
            break;
        case 'C':
            o->preconnect = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc || port < 0 || o->rate < 0 || o->duration < 0) {
        fprintf(stderr, "openloop: %s\n",
                optind < argc ? "unexpected argument" : "--port, --rate and --duration are required");
        usage(stderr);
        exit(2);
    }
    if (o->path[0] != '/' || strpbrk(o->path, " \r\n")) {
        fprintf(stderr, "openloop: --path must start with / and hold no spaces or line breaks\n");
        exit(2);
    }
    if (o->rate * o->duration > MAX_REQS) {
        fprintf(stderr, "openloop: rate x duration is over %.0f requests\n", MAX_REQS);
        exit(2);
    }
    memset(&o->addr, 0, sizeof(o->addr));
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, o->host, &o->addr.sin_addr) != 1) {
        fprintf(stderr, "openloop: --host must be an IPv4 address, not \"%s\"\n", o->host);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    static struct gen g; /* large (the histogram): not on the stack */
    int rc = 1;

    if (bucket_of(HIST_MAX_US) >= NBUCKETS) {
        fprintf(stderr, "openloop: histogram too small\n");
        return 1;
    }
    parse_options(argc, argv, &g.opt);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g.opt.max_conns + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)g.opt.max_conns + 64 ? rl.rlim_max : (rlim_t)g.opt.max_conns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    size_t cap = strlen(g.opt.path) + strlen(g.opt.host) + 64;
    g.req = malloc(cap);
    g.conns = calloc((size_t)g.opt.max_conns, sizeof(*g.conns));
    g.free_slots = calloc((size_t)g.opt.max_conns, sizeof(*g.free_slots));
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g.req || !g.conns || !g.free_slots || g.ep < 0) {
        perror("openloop: set-up");
        goto out;
    }
    if (g.opt.log_path && !(g.log = fopen(g.opt.log_path, "w"))) {
        fprintf(stderr, "openloop: %s: %s\n", g.opt.log_path, strerror(errno));
        goto out;
    }
    g.req_len = (size_t)snprintf(g.req, cap, "GET %s HTTP/1.1\r\nHost: %s:%u\r\n\r\n", g.opt.path, g.opt.host,
                                 ntohs(g.opt.addr.sin_port));
    for (int i = g.opt.max_conns - 1; i >= 0; i--) {
        g.conns[i].fd = -1;
        g.free_slots[g.nfree++] = i;
    }
    g.idle_head = g.idle_tail = -1;
    if (g.opt.tls) {
        static const unsigned char alpn[] = "\x08http/1.1";
        if (!(g.tls = SSL_CTX_new(TLS_client_method())) || !SSL_CTX_set_min_proto_version(g.tls, TLS1_2_VERSION) ||
            SSL_CTX_set_alpn_protos(g.tls, alpn, sizeof(alpn) - 1) != 0) {
            fprintf(stderr, "openloop: TLS set-up failed\n");
            goto out;
        }
        SSL_CTX_set_verify(g.tls, SSL_VERIFY_NONE, NULL);
        /* A TCP end without close_notify reads as 0 (OpenSSL 3 would report an error): an
         * answer delimited by the connection's close ends there, as over plain TCP. */
        SSL_CTX_set_options(g.tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_session_cache_mode(g.tls, SSL_SESS_CACHE_OFF);
    }
    g.total = (uint64_t)floor(g.opt.rate * g.opt.duration + 1e-9);
    if (g.opt.preconnect && preconnect(&g) != OK)
        goto out;
    if (run(&g) != OK)
        goto out;
    print_results(&g, g.last_done);
    rc = 0;
out:
    for (int i = 0; g.conns && i < g.opt.max_conns; i++) {
        SSL_free(g.conns[i].ssl);
        if (g.conns[i].fd >= 0)
            close(g.conns[i].fd);
    }
    SSL_CTX_free(g.tls);
    if (g.ep >= 0)
        close(g.ep);
    if (g.log && fclose(g.log) != 0 && rc == 0) {
        perror("openloop: --log");
        rc = 1;
    }
    free(g.free_slots);
    free(g.conns);
    free(g.req);
    return rc;
}
