/*
 * testbackend — a small, fast HTTP/1.1 origin server for agora's integration tests and benchmarks.
 *
 * It is what `agora lb`, HAProxy and nginx are put in front of. Every response says which backend
 * answered (X-Backend), which TCP connection carried it (X-Conn-Id, counted per process) and how many
 * requests that connection has carried so far (X-Conn-Seq, from 1), so tests can observe balancing
 * and keep-alive reuse from the outside. Endpoints and options: see usage() below.
 *
 * Design. N worker threads, each with its own SO_REUSEPORT listening socket and its own epoll loop
 * (edge-triggered, non-blocking sockets). A connection is a state machine advanced by conn_drive();
 * requests on one connection are served strictly in order, one at a time (which is what makes
 * pipelining correct): head → [serial slot] → body → [delay timer] → response. Timers live in a
 * per-worker min-heap whose earliest deadline bounds epoll_wait. /bytes bodies are generated as the
 * socket drains and request bodies are counted and dropped as they arrive, so memory per connection
 * stays bounded (at most 64 KiB of input, a few hundred KiB of output).
 *
 * --serial runs a single worker thread whose one "slot" is held by the request being served (from
 * its head to its last response byte queued, delay included); other requests wait, in arrival
 * order, without their bodies being read. /health and /crash bypass the slot, as /health bypasses
 * --delay-ms, so health checks keep measuring liveness rather than queueing behind load.
 *
 * Standalone on purpose: only libc and pthreads, no project headers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { OK = 0, ERROR = -1, AGAIN = -2 };

#define IN_INIT      8192         /* initial input buffer per connection */
#define IN_MAX       65536        /* input buffer limit = largest accepted request head */
#define OUT_HIGH     65536        /* stop parsing pipelined requests while this much output waits */
#define STREAM_CHUNK 131072       /* /bytes body generated per step */
#define MAX_HEADERS  128          /* header fields per request */
#define BODY_PREFIX  64           /* request body bytes echoed by /echo */
#define LINGER_US    2000000      /* how long a half-closed connection drains input before close */
#define MAX_BYTES    (1ULL << 40) /* /bytes?n= limit */
#define MAX_DELAY_MS 600000ULL    /* /delay?ms= and --delay-ms limit */
#define MAX_THREADS  256
#define EVENTS       256

/* Process-wide settings, filled by main() before the workers start and read-only afterwards. */
struct config {
    const char *host;
    int port;
    char *name;  /* X-Backend value */
    char *hello; /* "hello from NAME\n" */
    size_t hello_len;
    int threads;
    bool serial;
    unsigned delay_min_ms, delay_max_ms;
    int record_fd;                  /* --record file opened O_APPEND, or -1 */
    const char *health_file;        /* --health-file, or NULL */
    atomic_uint_fast64_t *conn_ids; /* last X-Conn-Id handed out, shared by all workers */
};

/* A byte buffer: [off, len) is pending data. After an allocation failure `failed` stays set and
 * appends are dropped; the owner checks it once per step and closes the connection. */
struct buf {
    char *data;
    size_t off, len, cap;
    bool failed;
};

enum route { R_HELLO, R_HEALTH, R_ECHO, R_BYTES, R_SINK, R_STATUS, R_DELAY, R_CLOSE, R_RESET, R_CRASH, R_BADPARAM };

/* Incremental decoder for a chunked request body (RFC 9112 §7.1). */
enum chunk_state {
    CH_SIZE,
    CH_EXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER,
    CH_TRAILER_LINE,
    CH_END_LF,
    CH_DONE
};

struct chunk {
    enum chunk_state state;
    uint64_t size; /* CH_SIZE: size parsed so far; CH_DATA: bytes left in this chunk */
    unsigned digits;
    size_t meta; /* bytes of extensions and trailers seen, bounded by IN_MAX */
};

/* The request being served on a connection. Zeroed (echo freed) between requests. */
struct request {
    enum route route;
    bool head; /* HEAD: same headers, no body */
    bool http10;
    bool keep_alive;
    bool expect_continue;
    bool chunked;        /* the request body is chunked */
    uint64_t body_left;  /* Content-Length bytes still to read */
    uint64_t body_total; /* body bytes received (decoded) */
    unsigned char prefix[BODY_PREFIX];
    size_t prefix_len;
    struct chunk ch;
    uint64_t n, ms;    /* /bytes?n=, /delay?ms= */
    int code;          /* /status?code= */
    bool want_chunked; /* /bytes?chunked=1 */
    const char *bad;   /* R_BADPARAM: what was wrong (static string) */
    struct buf echo;   /* R_ECHO: JSON up to the headers, built when the head is parsed */
    uint64_t stream_left, stream_pos;
    bool stream_chunked;
};

enum state {
    S_HEAD,    /* waiting for or parsing a request head */
    S_SLOT,    /* --serial: waiting for the slot; the body is not read yet */
    S_BODY,    /* reading (and dropping) the request body */
    S_DELAY,   /* waiting for the service-time timer */
    S_STREAM,  /* generating a /bytes body as the socket drains */
    S_RESET,   /* /reset: flushing earlier responses, then abort with RST */
    S_CLOSING, /* flushing the last response, then half-close */
    S_LINGER,  /* half-closed: dropping input until EOF or timeout, then close */
};

struct conn {
    int fd;
    enum state state;
    bool readable, writable; /* edge-triggered readiness not yet consumed */
    bool rdhup;              /* peer shut its side: read until EOF, never assume drained */
    bool read_eof;
    uint64_t id, seq;
    struct buf in, out;
    size_t scan; /* bytes after in.off already searched for the end of the head */
    struct request req;
    uint64_t deadline_us; /* valid while heap_idx >= 0 */
    ssize_t heap_idx;
    struct conn *qnext, *qprev; /* --serial wait queue */
    bool queued;
    char peer[64];
};

struct worker {
    const struct config *cfg;
    int index;
    int epfd, lfd;
    int reserve_fd;     /* spare descriptor, given up to shed a connection on EMFILE */
    struct conn **heap; /* timers, min-heap on deadline_us */
    size_t heap_len, heap_cap;
    struct conn *slot_owner; /* --serial: request being served */
    struct conn *wait_head, *wait_tail;
    struct conn *kick; /* --serial: just granted the slot, to be driven by the loop */
    uint64_t rng;
    pthread_t thread;
};

enum step { STEP_PROGRESS, STEP_NEED_INPUT, STEP_WAIT, STEP_CLOSE };

static void conn_drive(struct worker *w, struct conn *c);

/* ---------------------------------------------------------------- small utilities */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* xorshift64*: per-worker, good enough for uniform delays. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void fatal(const char *what, int err)
{
    fprintf(stderr, "testbackend: %s: %s\n", what, strerror(err));
    exit(1);
}

/* Parses an unsigned decimal of 1..19 digits. Returns OK or ERROR. */
static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return ERROR;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ERROR;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return OK;
}

static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool span_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* ---------------------------------------------------------------- buffers */

/* Makes room for `need` more bytes after len, compacting then growing. Returns false on ENOMEM. */
static bool buf_reserve(struct buf *b, size_t need)
{
    if (b->failed)
        return false;
    if (b->cap - b->len >= need)
        return true;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= need)
            return true;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

static void buf_put(struct buf *b, const void *p, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_puts(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_putu(struct buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    buf_put(b, tmp + i, sizeof(tmp) - i);
}

static void buf_putx(struct buf *b, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v > 0);
    buf_put(b, tmp + i, sizeof(tmp) - i);
}

/* Appends s as the inside of a JSON string; bytes outside printable ASCII become \u00XX. */
static void buf_put_json(struct buf *b, const void *s, size_t n)
{
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            buf_put(b, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', "0123456789abcdef"[ch >> 4], "0123456789abcdef"[ch & 15]};
            buf_put(b, esc, 6);
        } else {
            buf_put(b, &ch, 1);
        }
    }
}

/* Appends k bytes of the /bytes pattern: byte i of the body is '0' + i % 10, starting at pos. */
static void buf_put_pattern(struct buf *b, uint64_t pos, size_t k)
{
    if (k == 0 || !buf_reserve(b, k))
        return;
    char *dst = b->data + b->len;
    size_t filled = k < 10 ? k : 10;
    for (size_t i = 0; i < filled; i++)
        dst[i] = (char)('0' + (pos + i) % 10);
    while (filled < k) { /* filled stays a multiple of 10 until the last copy: period preserved */
        size_t copy = filled < k - filled ? filled : k - filled;
        memcpy(dst + filled, dst, copy);
        filled += copy;
    }
    b->len += k;
}

static size_t buf_pending(const struct buf *b) { return b->len - b->off; }

static void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){0};
}

/* ---------------------------------------------------------------- timers (min-heap) */

static void heap_swap(struct worker *w, size_t i, size_t j)
{
    struct conn *t = w->heap[i];
    w->heap[i] = w->heap[j];
    w->heap[j] = t;
    w->heap[i]->heap_idx = (ssize_t)i;
    w->heap[j]->heap_idx = (ssize_t)j;
}

static void heap_fix(struct worker *w, size_t i)
{
    while (i > 0 && w->heap[(i - 1) / 2]->deadline_us > w->heap[i]->deadline_us) {
        heap_swap(w, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->heap_len && w->heap[l]->deadline_us < w->heap[m]->deadline_us)
            m = l;
        if (r < w->heap_len && w->heap[r]->deadline_us < w->heap[m]->deadline_us)
            m = r;
        if (m == i)
            return;
        heap_swap(w, i, m);
        i = m;
    }
}

/* Arms c's timer to fire `delay_us` from now. The connection must not already have one.
 * Returns OK, or ERROR when out of memory. */
static int timer_start(struct worker *w, struct conn *c, uint64_t delay_us)
{
    if (w->heap_len == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        struct conn **h = realloc(w->heap, cap * sizeof(*h));
        if (h == NULL)
            return ERROR;
        w->heap = h;
        w->heap_cap = cap;
    }
    c->deadline_us = now_us() + delay_us;
    c->heap_idx = (ssize_t)w->heap_len;
    w->heap[w->heap_len++] = c;
    heap_fix(w, (size_t)c->heap_idx);
    return OK;
}

static void timer_stop(struct worker *w, struct conn *c)
{
    if (c->heap_idx < 0)
        return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    w->heap_len--;
    if (i == w->heap_len)
        return;
    w->heap[i] = w->heap[w->heap_len];
    w->heap[i]->heap_idx = (ssize_t)i;
    heap_fix(w, i);
}

/* ---------------------------------------------------------------- --serial slot */

/* Gives c the slot if free; otherwise queues c (FIFO) and returns false. */
static bool slot_acquire(struct worker *w, struct conn *c)
{
    if (w->slot_owner == NULL) {
        w->slot_owner = c;
        return true;
    }
    c->qnext = NULL;
    c->qprev = w->wait_tail;
    if (w->wait_tail)
        w->wait_tail->qnext = c;
    else
        w->wait_head = c;
    w->wait_tail = c;
    c->queued = true;
    return false;
}

static void slot_unqueue(struct worker *w, struct conn *c)
{
    if (!c->queued)
        return;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        w->wait_head = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        w->wait_tail = c->qprev;
    c->qnext = c->qprev = NULL;
    c->queued = false;
}

/* Releases the slot if c holds it and hands it to the oldest waiter, which the worker loop then
 * drives (w->kick) — never from here, so release chains do not recurse. */
static void slot_release(struct worker *w, struct conn *c)
{
    if (w->slot_owner != c)
        return;
    w->slot_owner = w->wait_head;
    if (w->slot_owner != NULL) {
        slot_unqueue(w, w->slot_owner);
        w->kick = w->slot_owner;
    }
}

/* ---------------------------------------------------------------- responses */

static const char *reason(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

#define LEN_CHUNKED (-1)
#define LEN_NONE    (-2)

/* Appends a response head. length >= 0 sends Content-Length, LEN_CHUNKED chunked framing
 * (Content-Length instead for HTTP/1.0, by the caller), LEN_NONE no framing (204/304). */
static void put_head(const struct worker *w, struct conn *c, int status, const char *ctype, int64_t length)
{
    struct buf *o = &c->out;
    buf_puts(o, "HTTP/1.1 ");
    buf_putu(o, (uint64_t)status);
    buf_puts(o, " ");
    buf_puts(o, reason(status));
    if (ctype) {
        buf_puts(o, "\r\nContent-Type: ");
        buf_puts(o, ctype);
    }
    if (length >= 0) {
        buf_puts(o, "\r\nContent-Length: ");
        buf_putu(o, (uint64_t)length);
    } else if (length == LEN_CHUNKED) {
        buf_puts(o, "\r\nTransfer-Encoding: chunked");
    }
    buf_puts(o, "\r\nX-Backend: ");
    buf_puts(o, w->cfg->name);
    buf_puts(o, "\r\nX-Conn-Seq: ");
    buf_putu(o, c->seq);
    buf_puts(o, "\r\nX-Conn-Id: ");
    buf_putu(o, c->id);
    if (!c->req.keep_alive)
        buf_puts(o, "\r\nConnection: close");
    else if (c->req.http10)
        buf_puts(o, "\r\nConnection: keep-alive");
    buf_puts(o, "\r\n\r\n");
}

/* Appends a complete response with a fixed body (omitted for HEAD). */
static void put_simple(const struct worker *w, struct conn *c, int status, const char *ctype, const void *body,
                       size_t len)
{
    put_head(w, c, status, ctype, (int64_t)len);
    if (!c->req.head)
        buf_put(&c->out, body, len);
}

/* Ends the current request: frees its state, releases the serial slot, and moves the connection
 * on to the next request or to closing. */
static void end_request(struct worker *w, struct conn *c)
{
    bool keep = c->req.keep_alive;
    buf_free(&c->req.echo);
    c->req = (struct request){0};
    slot_release(w, c);
    c->state = keep ? S_HEAD : S_CLOSING;
}

/* Answers a request that cannot be served (malformed, too large...) and closes the connection. */
static void fail_request(struct worker *w, struct conn *c, int status, const char *why)
{
    c->req.keep_alive = false;
    c->req.head = false;
    char body[160];
    int n = snprintf(body, sizeof(body), "%s: %s\n", reason(status), why);
    put_simple(w, c, status, "text/plain", body, (size_t)n);
    end_request(w, c);
}

static void respond_echo(struct worker *w, struct conn *c)
{
    struct request *r = &c->req;
    struct buf *e = &r->echo;
    buf_puts(e, ",\"body_length\":");
    buf_putu(e, r->body_total);
    buf_puts(e, r->chunked ? ",\"chunked\":true" : ",\"chunked\":false");
    buf_puts(e, ",\"body_prefix\":\"");
    buf_put_json(e, r->prefix, r->prefix_len);
    buf_puts(e, "\"}\n");
    if (e->failed) {
        c->out.failed = true;
        return;
    }
    put_simple(w, c, 200, "application/json", e->data, e->len);
}

/* Serves the request now that its body is read and its delay has passed. */
static void respond(struct worker *w, struct conn *c)
{
    struct request *r = &c->req;
    const struct config *cfg = w->cfg;
    char body[128];
    int n;

    switch (r->route) {
    case R_HEALTH:
        if (cfg->health_file && access(cfg->health_file, F_OK) == 0)
            put_simple(w, c, 503, "text/plain", "unavailable", 11);
        else
            put_simple(w, c, 200, "text/plain", "ok", 2);
        break;
    case R_ECHO:
        respond_echo(w, c);
        break;
    case R_BYTES:
        r->stream_left = r->n;
        r->stream_pos = 0;
        r->stream_chunked = r->want_chunked && !r->http10;
        put_head(w, c, 200, "application/octet-stream", r->stream_chunked ? LEN_CHUNKED : (int64_t)r->n);
        if (!r->head) {
            c->state = S_STREAM;
            return;
        }
        break;
    case R_SINK:
        n = snprintf(body, sizeof(body), "{\"received\": %" PRIu64 ", \"chunked\": %s}\n", r->body_total,
                     r->chunked ? "true" : "false");
        put_simple(w, c, 200, "application/json", body, (size_t)n);
        break;
    case R_STATUS:
        if (r->code == 204 || r->code == 304) {
            put_head(w, c, r->code, NULL, LEN_NONE);
        } else if (r->code == 205) {
            put_head(w, c, r->code, NULL, 0);
        } else {
            n = snprintf(body, sizeof(body), "%d %s\n", r->code, reason(r->code));
            put_simple(w, c, r->code, "text/plain", body, (size_t)n);
        }
        break;
    case R_DELAY:
        n = snprintf(body, sizeof(body), "delayed %" PRIu64 " ms\n", r->ms);
        put_simple(w, c, 200, "text/plain", body, (size_t)n);
        break;
    case R_CLOSE:
        r->keep_alive = false;
        put_simple(w, c, 200, "text/plain", "closing\n", 8);
        break;
    case R_BADPARAM:
        n = snprintf(body, sizeof(body), "Bad Request: %s\n", r->bad);
        put_simple(w, c, 400, "text/plain", body, (size_t)n);
        break;
    case R_HELLO:
    case R_RESET:
    case R_CRASH:
        put_simple(w, c, 200, "text/plain", cfg->hello, cfg->hello_len);
        break;
    }
    end_request(w, c);
}

/* Body read: waits for the service time (route delay plus --delay-ms), then responds. */
static void begin_service(struct worker *w, struct conn *c)
{
    const struct config *cfg = w->cfg;
    struct request *r = &c->req;
    uint64_t ms = r->route == R_DELAY ? r->ms : 0;
    if (r->route != R_HEALTH && cfg->delay_max_ms > 0) {
        uint64_t span = (uint64_t)(cfg->delay_max_ms - cfg->delay_min_ms) + 1;
        ms += cfg->delay_min_ms + rng_next(&w->rng) % span;
    }
    if (ms == 0) {
        respond(w, c);
        return;
    }
    if (timer_start(w, c, ms * 1000) != OK) {
        c->out.failed = true;
        return;
    }
    c->state = S_DELAY;
}

/* Starts reading the body (the serial slot, if any, is held): 100 Continue first if asked. */
static void begin_body(struct conn *c)
{
    struct request *r = &c->req;
    if (r->expect_continue && !r->http10 && (r->chunked || r->body_left > 0))
        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    c->state = S_BODY;
}

/* ---------------------------------------------------------------- request bodies */

static void body_data(struct request *r, const char *p, size_t n)
{
    r->body_total += n;
    if (r->prefix_len < BODY_PREFIX) {
        size_t k = BODY_PREFIX - r->prefix_len < n ? BODY_PREFIX - r->prefix_len : n;
        memcpy(r->prefix + r->prefix_len, p, k);
        r->prefix_len += k;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Feeds n bytes of chunked framing; decoded data goes to body_data(). Sets *used to the bytes
 * consumed, which stop right after the final CRLF. Returns OK (the body is complete), AGAIN (more
 * needed) or ERROR (malformed framing). */
static int chunk_feed(struct request *r, const char *p, size_t n, size_t *used)
{
    struct chunk *ch = &r->ch;
    size_t i = 0;
    while (i < n) {
        char b = p[i];
        switch (ch->state) {
        case CH_SIZE:
            if (hexval(b) >= 0) {
                if (ch->digits >= 15)
                    return ERROR;
                ch->size = ch->size * 16 + (uint64_t)hexval(b);
                ch->digits++;
                i++;
                continue;
            }
            if (ch->digits == 0)
                return ERROR;
            if (b == ';' || b == ' ' || b == '\t')
                ch->state = CH_EXT;
            else if (b == '\r')
                ch->state = CH_SIZE_LF;
            else if (b == '\n')
                goto size_line_done;
            else
                return ERROR;
            i++;
            continue;
        case CH_EXT:
            if (++ch->meta > IN_MAX)
                return ERROR;
            i++;
            if (b == '\r')
                ch->state = CH_SIZE_LF;
            else if (b == '\n')
                goto size_line_done_consumed;
            continue;
        case CH_SIZE_LF:
            if (b != '\n')
                return ERROR;
            goto size_line_done;
        case CH_DATA: {
            size_t k = n - i < ch->size ? n - i : (size_t)ch->size;
            body_data(r, p + i, k);
            i += k;
            ch->size -= k;
            if (ch->size == 0)
                ch->state = CH_DATA_CR;
            continue;
        }
        case CH_DATA_CR:
            if (b == '\r')
                ch->state = CH_DATA_LF;
            else if (b == '\n')
                ch->state = CH_SIZE;
            else
                return ERROR;
            i++;
            continue;
        case CH_DATA_LF:
            if (b != '\n')
                return ERROR;
            ch->state = CH_SIZE;
            i++;
            continue;
        case CH_TRAILER: /* at the start of a trailer line, or of the final empty line */
            if (b == '\r')
                ch->state = CH_END_LF;
            else if (b == '\n')
                ch->state = CH_DONE;
            else
                ch->state = CH_TRAILER_LINE;
            i++;
            if (ch->state == CH_DONE)
                goto done;
            continue;
        case CH_TRAILER_LINE:
            if (++ch->meta > IN_MAX)
                return ERROR;
            if (b == '\n')
                ch->state = CH_TRAILER;
            i++;
            continue;
        case CH_END_LF:
            if (b != '\n')
                return ERROR;
            ch->state = CH_DONE;
            i++;
            goto done;
        case CH_DONE:
            goto done;
        }
        continue;
    size_line_done:
        i++;
    size_line_done_consumed:
        ch->state = ch->size == 0 ? CH_TRAILER : CH_DATA;
        ch->digits = 0;
    }
    *used = i;
    return AGAIN;
done:
    *used = i;
    return OK;
}

static enum step step_body(struct worker *w, struct conn *c)
{
    struct request *r = &c->req;
    const char *p = c->in.data + c->in.off;
    size_t avail = buf_pending(&c->in), used = 0;
    int rc;

    if (r->chunked) {
        rc = chunk_feed(r, p, avail, &used);
    } else {
        used = avail < r->body_left ? avail : (size_t)r->body_left;
        body_data(r, p, used);
        r->body_left -= used;
        rc = r->body_left == 0 ? OK : AGAIN;
    }
    c->in.off += used;
    if (rc == ERROR) {
        fail_request(w, c, 400, "malformed chunked body");
        return STEP_PROGRESS;
    }
    if (rc == OK) {
        begin_service(w, c);
        return STEP_PROGRESS;
    }
    if (used > 0)
        return STEP_PROGRESS;
    return c->read_eof ? STEP_CLOSE : STEP_NEED_INPUT;
}

/* ---------------------------------------------------------------- request heads */

/* Finds the end of the head in the pending input. Returns its length, or 0 if not complete. */
static size_t find_head_end(struct conn *c)
{
    const char *base = c->in.data + c->in.off;
    size_t len = buf_pending(&c->in);
    size_t i = c->scan;
    while (i < len) {
        const char *nl = memchr(base + i, '\n', len - i);
        if (nl == NULL)
            break;
        size_t k = (size_t)(nl - base);
        if (k + 1 < len && base[k + 1] == '\n')
            return k + 2;
        if (k + 2 < len && base[k + 1] == '\r' && base[k + 2] == '\n')
            return k + 3;
        if (k + 2 >= len) { /* could still become the end: look here again next time */
            c->scan = k;
            return 0;
        }
        i = k + 1;
    }
    c->scan = len;
    return 0;
}

struct field {
    const char *name, *value;
    size_t nlen, vlen;
};

/* Facts gathered from the header fields. */
struct head_info {
    int hosts;
    bool has_cl, te, te_chunked_last, conn_close, conn_keep, expect_other;
    uint64_t cl;
};

/* Applies one header field to the request. Returns NULL, or why the request is malformed. */
static const char *apply_field(struct head_info *hi, struct request *r, const struct field *f)
{
    const char *v = f->value;
    size_t vl = f->vlen;

    if (span_is(f->name, f->nlen, "host")) {
        hi->hosts++;
    } else if (span_is(f->name, f->nlen, "content-length")) {
        uint64_t cl;
        if (parse_u64(v, vl, &cl) != OK || cl > (1ULL << 62))
            return "invalid Content-Length";
        if (hi->has_cl && cl != hi->cl)
            return "conflicting Content-Length";
        hi->has_cl = true;
        hi->cl = cl;
    } else if (span_is(f->name, f->nlen, "expect")) {
        if (span_is(v, vl, "100-continue"))
            r->expect_continue = true;
        else
            hi->expect_other = true;
    } else if (span_is(f->name, f->nlen, "transfer-encoding") || span_is(f->name, f->nlen, "connection")) {
        bool te = f->name[0] == 't' || f->name[0] == 'T';
        size_t i = 0;
        while (i < vl) { /* comma-separated tokens */
            while (i < vl && (v[i] == ',' || v[i] == ' ' || v[i] == '\t'))
                i++;
            size_t s = i;
            while (i < vl && v[i] != ',')
                i++;
            size_t e = i;
            while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
                e--;
            if (e == s)
                continue;
            if (te) {
                if (hi->te_chunked_last)
                    return "chunked must be the final transfer coding";
                hi->te = true;
                hi->te_chunked_last = span_is(v + s, e - s, "chunked");
            } else if (span_is(v + s, e - s, "close")) {
                hi->conn_close = true;
            } else if (span_is(v + s, e - s, "keep-alive")) {
                hi->conn_keep = true;
            }
        }
        if (te && !hi->te)
            return "empty Transfer-Encoding";
    }
    return NULL;
}

/* Strips absolute-form ("http://host/p?q") to origin-form and splits path and query. */
static void split_target(const char *t, size_t tl, const char **path, size_t *plen, const char **query, size_t *qlen)
{
    if ((tl >= 7 && strncasecmp(t, "http://", 7) == 0) || (tl >= 8 && strncasecmp(t, "https://", 8) == 0)) {
        const char *s = (const char *)memchr(t, ':', tl) + 3;
        const char *slash = memchr(s, '/', tl - (size_t)(s - t));
        if (slash == NULL) {
            t = "/";
            tl = 1;
        } else {
            tl -= (size_t)(slash - t);
            t = slash;
        }
    }
    const char *q = memchr(t, '?', tl);
    *path = t;
    *plen = q ? (size_t)(q - t) : tl;
    *query = q ? q + 1 : t + tl;
    *qlen = q ? tl - *plen - 1 : 0;
}

/* Finds key in a query string. Returns true and the raw value if present. */
static bool query_get(const char *q, size_t ql, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key), i = 0;
    while (i <= ql && ql > 0) {
        const char *amp = memchr(q + i, '&', ql - i);
        size_t end = amp ? (size_t)(amp - q) : ql;
        if (end - i > klen && q[i + klen] == '=' && memcmp(q + i, key, klen) == 0) {
            *val = q + i + klen + 1;
            *vlen = end - i - klen - 1;
            return true;
        }
        if (end - i == klen && memcmp(q + i, key, klen) == 0) {
            *val = q + end;
            *vlen = 0;
            return true;
        }
        i = end + 1;
    }
    return false;
}

/* Reads numeric query parameter key into *out. Returns NULL or the reason it is unusable. */
static const char *query_u64(const char *q, size_t ql, const char *key, uint64_t max, uint64_t *out, const char *why)
{
    const char *v;
    size_t vl;
    if (!query_get(q, ql, key, &v, &vl) || parse_u64(v, vl, out) != OK || *out > max)
        return why;
    return NULL;
}

/* Picks the endpoint and validates its parameters (a bad one routes to R_BADPARAM). */
static void route_request(struct request *r, const char *target, size_t tl)
{
    const char *path, *q, *v;
    size_t pl, ql, vl;
    uint64_t code = 0;

    split_target(target, tl, &path, &pl, &q, &ql);
    r->route = R_HELLO;
    if (span_is(path, pl, "/health"))
        r->route = R_HEALTH;
    else if (span_is(path, pl, "/echo"))
        r->route = R_ECHO;
    else if (span_is(path, pl, "/sink"))
        r->route = R_SINK;
    else if (span_is(path, pl, "/close"))
        r->route = R_CLOSE;
    else if (span_is(path, pl, "/reset"))
        r->route = R_RESET;
    else if (span_is(path, pl, "/crash"))
        r->route = R_CRASH;
    else if (span_is(path, pl, "/bytes")) {
        r->route = R_BYTES;
        r->bad = query_u64(q, ql, "n", MAX_BYTES, &r->n, "/bytes needs n=0..1099511627776");
        if (r->bad == NULL && query_get(q, ql, "chunked", &v, &vl)) {
            if (vl == 1 && (v[0] == '0' || v[0] == '1'))
                r->want_chunked = v[0] == '1';
            else
                r->bad = "chunked must be 0 or 1";
        }
    } else if (span_is(path, pl, "/status")) {
        r->route = R_STATUS;
        r->bad = query_u64(q, ql, "code", 599, &code, "/status needs code=200..599");
        if (r->bad == NULL && code < 200)
            r->bad = "/status needs code=200..599";
        r->code = (int)code;
    } else if (span_is(path, pl, "/delay")) {
        r->route = R_DELAY;
        r->bad = query_u64(q, ql, "ms", MAX_DELAY_MS, &r->ms, "/delay needs ms=0..600000");
    }
    if (r->bad != NULL)
        r->route = R_BADPARAM;
}

/* Writes "METHOD TARGET\n" to the --record file in one append. */
static void record(const struct config *cfg, const char *m, size_t ml, const char *t, size_t tl)
{
    if (cfg->record_fd < 0)
        return;
    struct iovec iov[4] = {{(void *)m, ml}, {(void *)" ", 1}, {(void *)t, tl}, {(void *)"\n", 1}};
    if (writev(cfg->record_fd, iov, 4) < 0)
        fprintf(stderr, "testbackend: writing the record file: %s\n", strerror(errno));
}

/* Starts the echo JSON document with what the head says, as received. */
static void echo_begin(struct conn *c, const char *m, size_t ml, const char *t, size_t tl, const struct field *f,
                       size_t nf)
{
    struct buf *e = &c->req.echo;
    buf_puts(e, "{\"method\":\"");
    buf_put_json(e, m, ml);
    buf_puts(e, "\",\"target\":\"");
    buf_put_json(e, t, tl);
    buf_puts(e, c->req.http10 ? "\",\"version\":\"HTTP/1.0\",\"peer\":\"" : "\",\"version\":\"HTTP/1.1\",\"peer\":\"");
    buf_put_json(e, c->peer, strlen(c->peer));
    buf_puts(e, "\",\"headers\":[");
    for (size_t i = 0; i < nf; i++) {
        buf_puts(e, i ? ",[\"" : "[\"");
        buf_put_json(e, f[i].name, f[i].nlen);
        buf_puts(e, "\",\"");
        buf_put_json(e, f[i].value, f[i].vlen);
        buf_puts(e, "\"]");
    }
    buf_puts(e, "]");
}

/* Parses the request line. Returns NULL or why it is malformed; *status is 400 or 505. */
static const char *parse_request_line(const char *s, size_t n, struct request *r, const char **m, size_t *ml,
                                      const char **t, size_t *tl, int *status)
{
    size_t i = 0;
    *status = 400;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i >= n || s[i] != ' ')
        return "malformed request line";
    *m = s;
    *ml = i;
    size_t ts = ++i;
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] != 0x7f)
        i++;
    if (i == ts || i >= n || s[i] != ' ')
        return "malformed request target";
    *t = s + ts;
    *tl = i - ts;
    const char *v = s + i + 1;
    if (n - i - 1 != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' ||
        v[7] > '9')
        return "malformed HTTP version";
    if (v[5] != '1') {
        *status = 505;
        return "only HTTP/1.x is supported";
    }
    r->http10 = v[7] == '0';
    r->head = *ml == 4 && memcmp(s, "HEAD", 4) == 0;
    return NULL;
}

/* Parses one complete head of `len` bytes at in.off and sets the connection on its way.
 * Returns OK when a request started, ERROR when an error response was queued. */
static int parse_head(struct worker *w, struct conn *c, size_t len)
{
    const char *h = c->in.data + c->in.off, *end = h + len;
    struct request *r = &c->req;
    struct head_info hi = {0};
    struct field fields[MAX_HEADERS];
    size_t nf = 0;
    const char *m, *t, *why;
    size_t ml, tl;
    int status = 400;

    c->seq++;
    *r = (struct request){0};
    r->keep_alive = true; /* for error answers before the version is known; fail_request clears it */

    const char *nl = memchr(h, '\n', len);
    size_t ll = (size_t)(nl - h);
    if (ll > 0 && h[ll - 1] == '\r')
        ll--;
    why = parse_request_line(h, ll, r, &m, &ml, &t, &tl, &status);
    if (why)
        goto fail;

    for (const char *ls = nl + 1; ls < end;) {
        const char *le = memchr(ls, '\n', (size_t)(end - ls));
        size_t n = (size_t)(le - ls), i = 0;
        if (n > 0 && ls[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        why = "malformed header field";
        if (ls[0] == ' ' || ls[0] == '\t')
            goto fail; /* obsolete line folding */
        while (i < n && is_tchar((unsigned char)ls[i]))
            i++;
        if (i == 0 || i >= n || ls[i] != ':')
            goto fail;
        struct field f = {.name = ls, .nlen = i};
        for (i++; i < n && (ls[i] == ' ' || ls[i] == '\t'); i++)
            ;
        size_t ve = n;
        while (ve > i && (ls[ve - 1] == ' ' || ls[ve - 1] == '\t'))
            ve--;
        for (size_t k = i; k < ve; k++) {
            unsigned char b = (unsigned char)ls[k];
            if ((b < 0x20 && b != '\t') || b == 0x7f)
                goto fail;
        }
        f.value = ls + i;
        f.vlen = ve - i;
        if (nf == MAX_HEADERS) {
            status = 431;
            why = "too many header fields";
            goto fail;
        }
        fields[nf++] = f;
        why = apply_field(&hi, r, &f);
        if (why)
            goto fail;
        ls = le + 1;
    }

    why = NULL;
    if (!r->http10 && hi.hosts == 0)
        why = "missing Host header";
    else if (hi.hosts > 1)
        why = "more than one Host header";
    else if (hi.te && hi.has_cl)
        why = "both Content-Length and Transfer-Encoding";
    else if (hi.te && !hi.te_chunked_last)
        why = "unsupported transfer coding";
    if (why)
        goto fail;
    r->keep_alive = r->http10 ? hi.conn_keep && !hi.conn_close : !hi.conn_close;
    r->chunked = hi.te;
    r->body_left = hi.has_cl ? hi.cl : 0;

    record(w->cfg, m, ml, t, tl);
    route_request(r, t, tl);
    if (r->route == R_CRASH)
        _exit(1);
    if (r->route == R_ECHO)
        echo_begin(c, m, ml, t, tl, fields, nf);
    c->in.off += len;
    c->scan = 0;
    if (hi.expect_other) {
        status = 417;
        why = "only 100-continue is supported";
        goto fail_consumed;
    }
    if (r->route == R_RESET)
        c->state = S_RESET;
    else if (w->cfg->serial && r->route != R_HEALTH && !slot_acquire(w, c))
        c->state = S_SLOT;
    else
        begin_body(c);
    return OK;

fail:
    c->in.off += len;
    c->scan = 0;
fail_consumed:
    fail_request(w, c, status, why);
    return ERROR;
}

static enum step step_head(struct worker *w, struct conn *c)
{
    if (buf_pending(&c->out) >= OUT_HIGH)
        return STEP_WAIT;
    /* RFC 9112 §2.2: ignore empty lines before a request line. */
    while (c->in.off < c->in.len) {
        const char *p = c->in.data + c->in.off;
        if (p[0] == '\n')
            c->in.off++;
        else if (p[0] == '\r' && c->in.off + 1 < c->in.len && p[1] == '\n')
            c->in.off += 2;
        else
            break;
        c->scan = 0;
    }
    size_t len = find_head_end(c);
    if (len > 0) {
        parse_head(w, c, len);
        return STEP_PROGRESS;
    }
    if (buf_pending(&c->in) >= IN_MAX) {
        c->seq++;
        c->req.keep_alive = true;
        fail_request(w, c, 431, "request head larger than 65536 bytes");
        return STEP_PROGRESS;
    }
    if (c->read_eof) {
        c->state = S_CLOSING; /* no (complete) request will come: finish sending, then close */
        return STEP_PROGRESS;
    }
    return STEP_NEED_INPUT;
}

/* ---------------------------------------------------------------- connections */

static enum step step_stream(struct worker *w, struct conn *c)
{
    struct request *r = &c->req;
    if (buf_pending(&c->out) >= OUT_HIGH)
        return STEP_WAIT;
    size_t k = r->stream_left < STREAM_CHUNK ? (size_t)r->stream_left : STREAM_CHUNK;
    if (k > 0) {
        if (r->stream_chunked) {
            buf_putx(&c->out, k);
            buf_puts(&c->out, "\r\n");
        }
        buf_put_pattern(&c->out, r->stream_pos, k);
        if (r->stream_chunked)
            buf_puts(&c->out, "\r\n");
        r->stream_pos += k;
        r->stream_left -= k;
    }
    if (r->stream_left == 0) {
        if (r->stream_chunked)
            buf_puts(&c->out, "0\r\n\r\n");
        end_request(w, c);
    }
    return STEP_PROGRESS;
}

static enum step step(struct worker *w, struct conn *c)
{
    switch (c->state) {
    case S_HEAD:
        return step_head(w, c);
    case S_BODY:
        return step_body(w, c);
    case S_STREAM:
        return step_stream(w, c);
    case S_SLOT:
    case S_DELAY:
        return STEP_WAIT;
    case S_RESET:
        if (buf_pending(&c->out) > 0)
            return STEP_WAIT;
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &(struct linger){.l_onoff = 1, .l_linger = 0}, sizeof(struct linger));
        return STEP_CLOSE;
    case S_CLOSING:
        if (buf_pending(&c->out) > 0)
            return STEP_WAIT;
        if (c->read_eof)
            return STEP_CLOSE;
        /* Half-close and drain what the client still sends, so that closing does not turn
         * unread input into an RST that could destroy the response in flight. */
        shutdown(c->fd, SHUT_WR);
        if (timer_start(w, c, LINGER_US) != OK)
            return STEP_CLOSE;
        c->state = S_LINGER;
        return STEP_PROGRESS;
    case S_LINGER:
        c->in.off = c->in.len = 0;
        return c->read_eof ? STEP_CLOSE : STEP_NEED_INPUT;
    }
    return STEP_CLOSE;
}

/* Reads what the socket has into c->in. Returns OK (data or EOF arrived), AGAIN (nothing now) or
 * ERROR (socket error, or no room — which callers rule out before asking for input). */
static int conn_read(struct conn *c)
{
    struct buf *b = &c->in;
    if (c->read_eof) {
        c->readable = false;
        return AGAIN;
    }
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len < 1024 && b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap == b->len) {
        size_t cap = b->cap ? b->cap * 2 : IN_INIT;
        if (cap > IN_MAX || b->off > 0)
            return ERROR;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            return ERROR;
        b->data = p;
        b->cap = cap;
    }
    size_t room = b->cap - b->len;
    for (;;) {
        ssize_t n = read(c->fd, b->data + b->len, room);
        if (n > 0) {
            b->len += (size_t)n;
            /* A short read drained the socket; edge-triggered epoll reports new data. */
            if ((size_t)n < room && !c->rdhup)
                c->readable = false;
            return OK;
        }
        if (n == 0) {
            c->read_eof = true;
            c->readable = false;
            return OK;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->readable = false;
            return AGAIN;
        }
        return ERROR;
    }
}

/* Writes pending output. Returns 1 if bytes were written, 0 if none could be, ERROR on failure. */
static int conn_flush(struct conn *c)
{
    struct buf *b = &c->out;
    int wrote = 0;
    while (c->writable && buf_pending(b) > 0) {
        ssize_t n = send(c->fd, b->data + b->off, buf_pending(b), MSG_NOSIGNAL);
        if (n > 0) {
            b->off += (size_t)n;
            wrote = 1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->writable = false;
        } else {
            return ERROR;
        }
    }
    if (buf_pending(b) == 0)
        b->off = b->len = 0;
    return wrote;
}

static void conn_close(struct worker *w, struct conn *c)
{
    timer_stop(w, c);
    if (w->kick == c)
        w->kick = NULL;
    slot_unqueue(w, c);
    slot_release(w, c);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->req.echo);
    free(c);
}

/* Advances c as far as it can go without blocking; frees it when it closes. Pipelined responses
 * are batched: output is flushed only when a step stalls or enough has accumulated. */
static void conn_drive(struct worker *w, struct conn *c)
{
    for (;;) {
        enum step s = step(w, c);
        if (s == STEP_CLOSE || c->out.failed)
            goto close;
        if (s == STEP_PROGRESS && buf_pending(&c->out) < OUT_HIGH)
            continue;
        int f = conn_flush(c);
        if (f == ERROR)
            goto close;
        if (s == STEP_PROGRESS)
            continue;
        if (s == STEP_NEED_INPUT && c->readable) {
            int r = conn_read(c);
            if (r == ERROR)
                goto close;
            if (r == OK)
                continue;
        }
        if (f > 0)
            continue;
        return;
    }
close:
    conn_close(w, c);
}

static void conn_open(struct worker *w, int fd, const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->heap_idx = -1;
    c->writable = true;
    c->id = atomic_fetch_add(w->cfg->conn_ids, 1) + 1;
    char addr[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof(addr));
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", addr, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, addr, sizeof(addr));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", addr, ntohs(a->sin_port));
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fprintf(stderr, "testbackend: epoll_ctl: %s\n", strerror(errno));
        close(fd);
        free(c);
    }
}

static void accept_some(struct worker *w)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(w->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_open(w, fd, &ss);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && w->reserve_fd >= 0) {
            /* Out of descriptors: accept with the spare one and close at once, rather than
             * leave the listener readable forever. */
            fprintf(stderr, "testbackend: out of file descriptors, dropping a connection\n");
            close(w->reserve_fd);
            fd = accept(w->lfd, NULL, NULL);
            if (fd >= 0)
                close(fd);
            w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            fprintf(stderr, "testbackend: accept: %s\n", strerror(errno));
        return;
    }
}

static void conn_event(struct worker *w, struct conn *c, uint32_t ev)
{
    if (ev & (EPOLLERR | EPOLLHUP)) {
        conn_close(w, c);
        return;
    }
    if (ev & EPOLLRDHUP)
        c->rdhup = true;
    if (ev & (EPOLLIN | EPOLLRDHUP))
        c->readable = true;
    if (ev & EPOLLOUT)
        c->writable = true;
    conn_drive(w, c);
}

static void run_timers(struct worker *w)
{
    uint64_t now = now_us();
    while (w->heap_len > 0 && w->heap[0]->deadline_us <= now) {
        struct conn *c = w->heap[0];
        timer_stop(w, c);
        if (c->state == S_LINGER) {
            conn_close(w, c);
            continue;
        }
        respond(w, c); /* S_DELAY */
        conn_drive(w, c);
    }
}

static int next_timeout_ms(const struct worker *w)
{
    if (w->kick != NULL)
        return 0;
    if (w->heap_len == 0)
        return -1;
    uint64_t now = now_us(), d = w->heap[0]->deadline_us;
    if (d <= now)
        return 0;
    uint64_t ms = (d - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event ev[EVENTS];
    for (;;) {
        int n = epoll_wait(w->epfd, ev, EVENTS, next_timeout_ms(w));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fatal("epoll_wait", errno);
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL)
                accept_some(w);
            else
                conn_event(w, ev[i].data.ptr, ev[i].events);
        }
        run_timers(w);
        while (w->kick != NULL) {
            struct conn *c = w->kick;
            w->kick = NULL;
            begin_body(c);
            conn_drive(w, c);
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static void usage(FILE *out)
{
    fputs("usage: testbackend --port N [options]\n"
          "HTTP/1.1 test backend for agora's integration tests and benchmarks.\n"
          "  --port N             port to listen on (0 picks a free one; required)\n"
          "  --host ADDR          address to bind (default 127.0.0.1)\n"
          "  --name NAME          X-Backend value (default HOST:PORT)\n"
          "  --threads N          worker threads, each with its own SO_REUSEPORT socket (default 1)\n"
          "  --serial             serve one request at a time (one thread; /health bypasses)\n"
          "  --delay-ms MIN[-MAX] add a uniform random service time to every request but /health\n"
          "  --record FILE        append \"METHOD TARGET\" per request received\n"
          "  --health-file FILE   /health answers 503 while FILE exists\n"
          "endpoints: /health /echo /bytes?n=N[&chunked=1] /sink /status?code=N /delay?ms=N\n"
          "           /close /reset /crash; anything else answers \"hello from NAME\".\n",
          out);
}

static int parse_int_arg(const char *s, long min, long max, const char *opt)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "testbackend: %s must be an integer in %ld..%ld, got \"%s\"\n", opt, min, max, s);
        exit(2);
    }
    return (int)v;
}

static void parse_args(int argc, char **argv, struct config *cfg)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},   {"host", required_argument, NULL, 'H'},
        {"name", required_argument, NULL, 'n'},   {"threads", required_argument, NULL, 't'},
        {"serial", no_argument, NULL, 's'},       {"delay-ms", required_argument, NULL, 'd'},
        {"record", required_argument, NULL, 'r'}, {"health-file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *record_path = NULL;
    char *dash;
    int o;

    cfg->port = -1;
    cfg->host = "127.0.0.1";
    cfg->threads = 1;
    cfg->record_fd = -1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p':
            cfg->port = parse_int_arg(optarg, 0, 65535, "--port");
            break;
        case 'H':
            cfg->host = optarg;
            break;
        case 'n':
            cfg->name = optarg;
            break;
        case 't':
            cfg->threads = parse_int_arg(optarg, 1, MAX_THREADS, "--threads");
            break;
        case 's':
            cfg->serial = true;
            break;
        case 'r':
            record_path = optarg;
            break;
        case 'f':
            cfg->health_file = optarg;
            break;
        case 'd':
            dash = strchr(optarg, '-');
            if (dash)
                *dash = '\0';
            cfg->delay_min_ms = (unsigned)parse_int_arg(optarg, 0, MAX_DELAY_MS, "--delay-ms MIN");
            cfg->delay_max_ms =
                dash ? (unsigned)parse_int_arg(dash + 1, 0, MAX_DELAY_MS, "--delay-ms MAX") : cfg->delay_min_ms;
            if (cfg->delay_max_ms < cfg->delay_min_ms) {
                fprintf(stderr, "testbackend: --delay-ms MAX is smaller than MIN\n");
                exit(2);
            }
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc || cfg->port < 0) {
        fprintf(stderr,
                optind < argc ? "testbackend: unexpected argument \"%s\"\n" : "testbackend: --port is required\n",
                argv[optind]);
        usage(stderr);
        exit(2);
    }
    if (cfg->serial && cfg->threads > 1) {
        fprintf(stderr, "testbackend: --serial serves one request at a time: using one thread\n");
        cfg->threads = 1;
    }
    if (record_path) {
        cfg->record_fd = open(record_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (cfg->record_fd < 0) {
            fprintf(stderr, "testbackend: cannot open record file %s: %s\n", record_path, strerror(errno));
            exit(1);
        }
    }
}

/* Opens a listening socket on cfg's address, with SO_REUSEPORT when `reuseport`; with port 0 the
 * kernel picks the port, which is stored in cfg->port. Exits with a message on failure. */
static int listen_on(struct config *cfg, bool reuseport)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "testbackend: cannot resolve %s: %s\n", cfg->host, gai_strerror(rc));
        exit(1);
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fatal("socket", errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &(int){1}, sizeof(int));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "testbackend: cannot listen on %s:%d: %s\n", cfg->host, cfg->port, strerror(errno));
        exit(1);
    }
    freeaddrinfo(ai);
    if (cfg->port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        cfg->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

static void worker_start(struct worker *w, const struct config *cfg, int index, int lfd)
{
    w->cfg = cfg;
    w->index = index;
    w->lfd = lfd;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        fatal("epoll_create1", errno);
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
        w->rng = now_us();
    w->rng ^= (uint64_t)(index + 1) * 0x9E3779B97F4A7C15ULL;
    if (w->rng == 0)
        w->rng = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0)
        fatal("epoll_ctl", errno);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0)
        fatal("pthread_create", rc);
}

int main(int argc, char **argv)
{
    struct config cfg = {0};
    atomic_uint_fast64_t conn_ids = 0;
    struct worker *workers;
    sigset_t stop;
    int lfds[MAX_THREADS];
    int sig;

    parse_args(argc, argv, &cfg);
    cfg.conn_ids = &conn_ids;

    /* Workers inherit the mask: SIGTERM/SIGINT are taken by sigwait() below, SIGPIPE never hurts. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    if (cfg.threads == 1) {
        lfds[0] = listen_on(&cfg, false);
    } else {
        /* SO_REUSEPORT would also let us share a port another process is listening on: claim
         * the port alone first, so a busy port fails loudly as it does with one thread. */
        close(listen_on(&cfg, false));
        for (int i = 0; i < cfg.threads; i++)
            lfds[i] = listen_on(&cfg, true);
    }

    bool v6 = strchr(cfg.host, ':') != NULL;
    char *name = NULL;
    if (cfg.name == NULL && asprintf(&name, v6 ? "[%s]:%d" : "%s:%d", cfg.host, cfg.port) < 0)
        fatal("asprintf", ENOMEM);
    if (name)
        cfg.name = name;
    int hl = asprintf(&cfg.hello, "hello from %s\n", cfg.name);
    if (hl < 0)
        fatal("asprintf", ENOMEM);
    cfg.hello_len = (size_t)hl;

    workers = calloc((size_t)cfg.threads, sizeof(*workers));
    if (workers == NULL)
        fatal("calloc", ENOMEM);
    for (int i = 0; i < cfg.threads; i++)
        worker_start(&workers[i], &cfg, i, lfds[i]);

    printf(v6 ? "listening on [%s]:%d\n" : "listening on %s:%d\n", cfg.host, cfg.port);
    fflush(stdout);

    while (sigwait(&stop, &sig) != 0)
        ;
    /* Exit at once: workers may be mid-request, and nothing buffered needs flushing (--record
     * lines are written unbuffered). */
    _exit(0);
}
