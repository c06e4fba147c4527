/* h2.c — HTTP/2 on the server side with nghttp2; see h2.h for the contract.
 *
 * nghttp2 is used through its callbacks and its memory interface: server.c reads the socket (or
 * TLS) and hands the bytes to h2_session_recv (nghttp2_session_mem_recv), and takes the frames
 * from h2_session_send (nghttp2_session_mem_send) into the connection's output queue. The handler
 * is called from three places only, all of them the server's own context (never from inside a
 * call the handler made): the nghttp2 callbacks during mem_recv (a request's head, body, end, or
 * a reset → on_abort), the top of h2_session_send (a resumed body), and its end (on_drain, and
 * on_abort for streams nghttp2 closed while writing).
 *
 * A stream (struct h2_stream) collects its request head's fields while the header block arrives
 * (on_header), builds the struct http_head at the end of the block, and then carries the body
 * both ways: request DATA in `in` while the handler pauses it, the response's decoded body in
 * `out` until the data provider (data_read) puts it into DATA frames as the client's window
 * allows. */
#include "http/h2.h"

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/rc.h"
#include "http/climits.h"
#include "http/parser.h"
#include "http/server.h"

/* A field kept while a header block arrives: offsets into the stream's hb. */
struct field {
    uint32_t no, nn, vo, vn;
};

enum { R_HEAD, R_BODY, R_DONE };

struct h2_stream {
    struct h2_session *s;
    struct h2_stream *prev, *next;
    struct http_conn *conn; /* made when the request head is complete */
    int32_t id;
    /* the request head */
    struct buf hb;
    int nf;
    struct field method, path, authority; /* nn = 1 when present */
    size_t hsize;                         /* field section size as RFC 9113 counts it */
    struct http_head *head;
    /* the request body */
    struct buf in; /* DATA kept while paused */
    uint64_t body_seen;
    struct loop_timer body_timer; /* lim.body_timeout_ms: no DATA for that long → 408 / reset */
    /* the response */
    struct buf rhead; /* its head's bytes until complete */
    struct http_chunked rchunk;
    uint64_t rleft;
    struct buf out; /* decoded body not yet in DATA frames */
    enum http_method req_method;
    char status[4];
    unsigned rstate : 2;
    unsigned rkind : 3;
    unsigned too_big : 1;   /* field section over max_head, or too many fields: 431 */
    unsigned owned : 1;     /* the handler owns the request */
    unsigned rejected : 1;  /* answered here (4xx/5xx): the body is dropped */
    unsigned paused : 1;    /* http_conn_pause_body */
    unsigned req_ended : 1; /* END_STREAM received */
    unsigned eos_given : 1; /* on_body_end called */
    unsigned resume : 1;    /* a body to hand over at the next h2_session_send */
    unsigned out_eof : 1;   /* the whole response body is in out */
    unsigned submitted : 1; /* response HEADERS submitted */
    unsigned deferred : 1;  /* the data provider said DEFERRED: resume_data when bytes come */
    unsigned want_drain : 1;
    unsigned drain : 1; /* on_drain to call */
    unsigned failed : 1;
    unsigned counted : 1;             /* counted against its address's max_conns_per_ip (admit) */
    struct field f[HTTP_MAX_HEADERS]; /* last: not zeroed at the start (stream_new) */
};

struct h2_session {
    nghttp2_session *ng;
    struct http_conn *c;
    struct loop *loop;
    const struct http_server_ops *ops;
    void *ctx;
    struct http_server_limits lim;
    struct h2_stream *streams;
    unsigned nstreams;
    struct http_head *rh;    /* scratch for parsing response heads (the parser keeps no state) */
    struct h2_stream *spare; /* freed streams kept for the next ones, with their head and buffers */
    unsigned nspare;
    struct loop_timer spare_timer; /* frees the spares when no stream came for H2_SPARE_MS */
    unsigned nrequests;
    unsigned counted; /* its streams counted against max_conns_per_ip: the first on the connection's own slot */
    uint64_t window_start;
    unsigned resets, control, empty;
    unsigned tls : 1, calm : 1, dead : 1, freeing : 1, goaway : 1;
};

/* ---- small helpers ---- */

static void give_back(struct h2_session *s, int32_t id, size_t n)
{
    if (!n)
        return;
    nghttp2_session_consume_connection(s->ng, n);
    if (id)
        nghttp2_session_consume_stream(s->ng, id, n);
}

/* Counts one frame of a kind a client should send rarely; beyond max in the current window the
 * connection ends with ENHANCE_YOUR_CALM (mem_recv fails; h2_session_recv says why). */
static int glitch(struct h2_session *s, unsigned *count, unsigned max)
{
    uint64_t now = loop_now(s->loop);
    if (now - s->window_start >= H2_GLITCH_WINDOW_MS) {
        s->window_start = now;
        s->resets = s->control = s->empty = 0;
    }
    if (++*count > max) {
        s->calm = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static struct h2_stream *stream_of(struct h2_session *s, int32_t id)
{
    return id ? nghttp2_session_get_stream_user_data(s->ng, id) : NULL;
}

static void on_body_timeout(struct loop *loop, struct loop_timer *t);

/* A stream for id: a spare one (its head and buffers' storage kept, the rest zeroed; f is filled
 * up to nf), else a new one. Allocations per stream were ~10 % of a request's instructions. */
static struct h2_stream *stream_new(struct h2_session *s, int32_t id)
{
    struct h2_stream *st = s->spare;
    if (st) {
        s->spare = st->next;
        s->nspare--;
        struct buf hb = st->hb, in = st->in, rhead = st->rhead, out = st->out;
        struct http_head *head = st->head;
        memset(st, 0, offsetof(struct h2_stream, f));
        st->hb = hb;
        st->in = in;
        st->rhead = rhead;
        st->out = out;
        st->head = head;
    } else {
        st = alloc_malloc(sizeof(*st));
        memset(st, 0, offsetof(struct h2_stream, f));
    }
    st->s = s;
    st->id = id;
    st->body_timer.fn = on_body_timeout;
    st->body_timer.data = st;
    return st;
}

/* Empties b, keeping storage up to H2_SPARE_BUF bytes for the next stream. */
static void spare_buf(struct buf *b)
{
    if (b->cap > H2_SPARE_BUF)
        buf_free(b);
    else
        buf_reset(b);
}

/* Frees a stream's memory (it is unlinked). */
static void stream_release(struct h2_stream *st)
{
    buf_free(&st->hb);
    buf_free(&st->in);
    buf_free(&st->rhead);
    buf_free(&st->out);
    free(st->head);
    free(st);
}

static void spares_free(struct h2_session *s)
{
    while (s->spare) {
        struct h2_stream *st = s->spare;
        s->spare = st->next;
        stream_release(st);
    }
    s->nspare = 0;
}

/* No stream for H2_SPARE_MS: an idle connection holds no spare memory. */
static void on_spare_timer(struct loop *loop, struct loop_timer *t)
{
    struct h2_session *s = t->data;
    if (!s->nstreams)
        spares_free(s);
}

static void uncount(struct h2_stream *st);

static void stream_free(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    if (st->counted)
        uncount(st);
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    s->nstreams--;
    loop_timer_cancel(s->loop, &st->body_timer);
    /* DATA kept and not handed over (a paused body, then a reset): it still holds the connection's
     * window, which would shrink for good with every such stream. */
    if (buf_used(&st->in) && !s->freeing)
        nghttp2_session_consume_connection(s->ng, buf_used(&st->in));
    if (st->conn)
        http_conn_stream_free(st->conn);
    if (!s->freeing && s->nspare < H2_SPARE_STREAMS) {
        spare_buf(&st->hb);
        spare_buf(&st->in);
        spare_buf(&st->rhead);
        spare_buf(&st->out);
        st->next = s->spare;
        s->spare = st;
        s->nspare++;
        if (!s->nstreams) /* none open: the spares go unless a stream comes within H2_SPARE_MS */
            loop_timer_arm(s->loop, &s->spare_timer, H2_SPARE_MS);
        return;
    }
    stream_release(st);
}

/* Answers a request here (the handler never sees it, or was aborted): status on that stream, its
 * body dropped. The stream holds no server connection, so it leaves the max_conns budget. */
static void reject(struct h2_stream *st, int status, const char *msg)
{
    struct h2_session *s = st->s;
    st->rejected = 1;
    if (!st->conn)
        st->conn = http_conn_stream_new(s->c, st, s->tls);
    http_conn_stream_answered(st->conn);
    if (s->lim.stats)
        http_answers_count(&s->lim.stats->answers, status);
    http_conn_respond_error(st->conn, status, msg, 0);
    if (buf_used(&st->in)) {
        give_back(s, st->id, buf_used(&st->in));
        buf_free(&st->in);
    }
}

/* The request body timer (lim.body_timeout_ms, 0 = none), as on HTTP/1.1: running while the
 * handler owns a request whose body has not ended and has not paused it; pushed back by every
 * DATA frame. */
static void body_timer_update(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    if (st->owned && !st->req_ended && !st->paused && s->lim.body_timeout_ms)
        loop_timer_arm(s->loop, &st->body_timer, s->lim.body_timeout_ms);
    else
        loop_timer_cancel(s->loop, &st->body_timer);
}

/* No request body byte for body_timeout_ms: 408 on the stream when no response has begun (the
 * rest of the body is dropped, then RST_STREAM NO_ERROR: on_frame_send), else the stream is
 * reset (CANCEL). The handler's request is aborted either way. */
static void on_body_timeout(struct loop *loop, struct loop_timer *t)
{
    struct h2_stream *st = t->data;
    struct h2_session *s = st->s;
    if (!st->owned || st->req_ended)
        return;
    st->owned = 0;
    s->ops->on_abort(s->ctx, st->conn);
    http_conn_set_data(st->conn, NULL);
    if (!st->submitted && !st->rhead.len) {
        reject(st, 408, "request body timeout: no body data received in time");
    } else {
        st->failed = 1;
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    }
    http_conn_h2_kick(s->c);
}

/* ---- the request head ---- */

static enum http_method method_of(struct http_str m)
{
    for (int i = HTTP_GET; i <= HTTP_CONNECT; i++) {
        const char *n = http_method_name((enum http_method)i);
        if (strlen(n) == m.n && !memcmp(n, m.p, m.n))
            return (enum http_method)i;
    }
    return HTTP_OTHER;
}

/* The request-target characters parser.h allows: VCHAR and obs-text but '#'. */
static int path_ok(struct http_str p)
{
    if (!p.n)
        return 0;
    for (size_t i = 0; i < p.n; i++) {
        unsigned char ch = (unsigned char)p.p[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '#')
            return 0;
    }
    return 1;
}

/* The authority characters parser.h allows for Host: unreserved, sub-delims, '%', ':', '[', ']'. */
static int authority_ok(struct http_str a)
{
    for (size_t i = 0; i < a.n; i++) {
        unsigned char ch = (unsigned char)a.p[i];
        if (!ch || !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                     strchr("-._~!$&'()*+,;=%:[]", ch)))
            return 0;
    }
    return 1;
}

static struct http_str str_at(const struct h2_stream *st, uint32_t off, uint32_t n)
{
    return (struct http_str){st->hb.data + off, n};
}

/* Content-Length: 1*DIGIT below 2^62, else -1. */
static int64_t parse_length(struct http_str v)
{
    if (!v.n || v.n > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        n = n * 10 + (v.p[i] - '0');
    }
    return n;
}

/* Builds st->head from the fields. Returns 0, or an HTTP status to answer with. */
static int build_head(struct h2_stream *st, int end_stream)
{
    /* The Cookie fields joined with "; " (RFC 9113 §8.2.3), appended to hb before any pointer
     * into hb is taken. */
    uint32_t cookie_o = 0, cookie_n = 0;
    size_t need = 0;
    for (int i = 0; i < st->nf; i++)
        if (st->f[i].nn == 6 && !memcmp(st->hb.data + st->f[i].no, "cookie", 6))
            need += st->f[i].vn + 2;
    if (need)
        buf_reserve(&st->hb, need); /* the appends below read from hb: no move meanwhile */
    for (int i = 0; i < st->nf; i++) {
        struct field *f = &st->f[i];
        if (f->nn != 6 || memcmp(st->hb.data + f->no, "cookie", 6))
            continue;
        if (!cookie_n)
            cookie_o = (uint32_t)st->hb.len;
        else
            buf_append(&st->hb, "; ", 2);
        buf_append(&st->hb, st->hb.data + f->vo, f->vn);
        cookie_n = (uint32_t)st->hb.len - cookie_o;
    }
    /* The header array is filled up to nheaders below: only the fields around it are zeroed (a
     * calloc of the 3.3 KB head per request showed in profiles). */
    if (!st->head)
        st->head = alloc_malloc(sizeof(*st->head));
    struct http_head *h = st->head;
    memset(h, 0, offsetof(struct http_head, headers));
    memset(&h->nheaders, 0, sizeof(*h) - offsetof(struct http_head, nheaders));
    if (!st->method.nn || (!st->path.nn && method_of(str_at(st, st->method.vo, st->method.vn)) != HTTP_CONNECT))
        return 400;
    h->method_str = str_at(st, st->method.vo, st->method.vn);
    h->method = method_of(h->method_str);
    st->req_method = h->method;
    if (h->method == HTTP_CONNECT)
        return 501;
    h->target = str_at(st, st->path.vo, st->path.vn);
    if (!path_ok(h->target) || (h->target.p[0] != '/' && !(h->method == HTTP_OPTIONS && h->target.n == 1)))
        return 400;
    const char *q = memchr(h->target.p, '?', h->target.n);
    h->path = (struct http_str){h->target.p, q ? (size_t)(q - h->target.p) : h->target.n};
    if (q)
        h->query = (struct http_str){q + 1, h->target.n - h->path.n - 1};
    h->minor = 1;
    h->http2 = 1;
    h->keep_alive = 1;
    h->content_length = -1;
    if (st->authority.nn) {
        h->host = str_at(st, st->authority.vo, st->authority.vn);
        if (!authority_ok(h->host))
            return 400;
        h->headers[h->nheaders++] = (struct http_header){{"host", 4}, h->host};
    }
    for (int i = 0; i < st->nf; i++) {
        struct http_header hd = {str_at(st, st->f[i].no, st->f[i].nn), str_at(st, st->f[i].vo, st->f[i].vn)};
        if (http_str_ieq(hd.name, "cookie") || http_str_ieq(hd.name, "expect"))
            continue; /* joined below; Expect: the client sends its body anyway */
        if (http_str_ieq(hd.name, "host")) {
            if (st->authority.nn)
                continue; /* :authority wins (RFC 9113 §8.3.1) */
            if (h->host.n || !authority_ok(hd.value))
                return 400;
            h->host = hd.value;
        }
        if (http_str_ieq(hd.name, "content-length")) {
            if (h->content_length >= 0 || (h->content_length = parse_length(hd.value)) < 0)
                return 400;
        }
        h->headers[h->nheaders++] = hd;
    }
    if (cookie_n)
        h->headers[h->nheaders++] = (struct http_header){{"cookie", 6}, str_at(st, cookie_o, cookie_n)};
    if (end_stream)
        h->body = HTTP_BODY_NONE;
    else if (h->content_length >= 0)
        h->body = h->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    else
        h->body = HTTP_BODY_CHUNKED;
    return 0;
}

/* The per-address limits (climits.h) for a stream about to be handed over, which may hold a server
 * connection until it ends: a slot of max_conns_per_ip, then a request token of rate_limit.
 * An HTTP/2 connection holds max(1, streams counted) of its address's slots: its own, taken at
 * accept, serves its first stream, and each stream beyond takes one more, which uncount gives
 * back when the stream ends, however it ends (stream_free); so one address holds at most
 * max_conns_per_ip server requests at once over HTTP/2 as over HTTP/1.1, and as many connections.
 * Returns 0, or the status to answer: 503 (no slot: as an HTTP/1.1 connection past the limit,
 * nothing reached a server and no token was taken) or 429 (no token: the slot is given back at
 * once, Retry-After is the bucket's). */
static int admit(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    struct http_climits *cl = s->lim.climits;
    const char *ip = http_conn_remote_ip(st->conn);
    if (http_climits_conn_limited(cl)) {
        if (s->counted && !http_climits_conn_open(cl, ip))
            return 503;
        s->counted++;
        st->counted = 1;
    }
    unsigned retry_after;
    if (http_climits_rate_limited(cl) && !http_climits_take(cl, ip, loop_now(s->loop), &retry_after)) {
        if (st->counted)
            uncount(st);
        http_conn_stream_retry_after(st->conn, retry_after);
        return 429;
    }
    return 0;
}

/* Gives back what admit counted for st: a slot of the address, unless st was the only stream
 * counted (that one was on the connection's own slot). */
static void uncount(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    st->counted = 0;
    if (--s->counted > 0)
        http_climits_conn_close(s->lim.climits, http_conn_remote_ip(st->conn));
}

/* The request's header block is complete: the handler takes it, or it is answered here. */
static void start_request(struct h2_stream *st, int end_stream)
{
    struct h2_session *s = st->s;
    st->req_ended = end_stream;
    if (st->too_big) {
        reject(st, 431, "request header fields too large");
        return;
    }
    int status = build_head(st, end_stream);
    if (status) {
        reject(st, status,
               status == 501 ? "not implemented: CONNECT is not supported" : "bad request: malformed HTTP/2 request");
        return;
    }
    if (!http_conn_stream_room(s->c)) { /* as many streams and connections as max_conns */
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    const struct http_head *h = st->head;
    st->conn = http_conn_stream_new(s->c, st, s->tls);
    if (s->lim.max_body && h->content_length > 0 && (uint64_t)h->content_length > s->lim.max_body) {
        reject(st, 413, "request body too large");
        return;
    }
    if (s->lim.climits && (status = admit(st)) != 0) {
        reject(st, status,
               status == 429 ? "too many requests from your address: slow down"
                             : "too many connections from your address");
        return;
    }
    st->owned = 1;
    s->ops->on_request(s->ctx, st->conn, h);
    if (h->body == HTTP_BODY_NONE && st->owned) {
        st->eos_given = 1;
        s->ops->on_body_end(s->ctx, st->conn);
    }
    body_timer_update(st);
}

/* Hands the body kept in `in` to the handler, then its end, while it takes them. */
static void feed_kept(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    while (st->owned && !st->paused && buf_used(&st->in)) {
        size_t n = buf_used(&st->in);
        if (n > 65536)
            n = 65536;
        const char *p = buf_head(&st->in);
        buf_consume(&st->in, n); /* the memory stays until the next append or free */
        give_back(s, st->id, n);
        s->ops->on_body(s->ctx, st->conn, p, n);
    }
    if (!st->owned && buf_used(&st->in)) {
        give_back(s, st->id, buf_used(&st->in));
        buf_reset(&st->in);
    }
    if (!buf_used(&st->in))
        buf_free(&st->in);
    if (st->owned && !st->paused && st->req_ended && !st->eos_given && !buf_used(&st->in)) {
        st->eos_given = 1;
        s->ops->on_body_end(s->ctx, st->conn);
    }
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = stream_new(s, frame->hd.stream_id);
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    s->nstreams++;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    /* Enough on one connection, or stream ids nearly used up: the open streams finish, the
     * client opens a new connection for more. */
    if ((++s->nrequests == s->lim.h2_max_requests || st->id >= H2_LAST_IDS) && !s->goaway) {
        s->goaway = 1;
        nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR, NULL, 0);
    }
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (frame->hd.type != NGHTTP2_HEADERS || !st)
        return 0;
    st->hsize += namelen + valuelen + 32;  /* trailers count too */
    if (st->hsize > 4 * s->lim.max_head) { /* an HPACK bomb: far past what is answered 431 */
        s->calm = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: dropped */
    if (st->hsize > s->lim.max_head || st->too_big) {
        st->too_big = 1;
        buf_free(&st->hb);
        return 0;
    }
    struct field f = {(uint32_t)st->hb.len, (uint32_t)namelen, (uint32_t)(st->hb.len + namelen), (uint32_t)valuelen};
    buf_append(&st->hb, name, namelen);
    buf_append(&st->hb, value, valuelen);
    f.nn = (uint32_t)namelen;
    if (namelen && name[0] == ':') {
        f.nn = 1; /* present */
        if (namelen == 7 && !memcmp(name, ":method", 7))
            st->method = f;
        else if (namelen == 5 && !memcmp(name, ":path", 5))
            st->path = f;
        else if (namelen == 10 && !memcmp(name, ":authority", 10))
            st->authority = f;
        return 0; /* :scheme: nghttp2 checked it is there */
    }
    if (st->nf >= HTTP_MAX_HEADERS - 2) { /* room for Host and the joined Cookie */
        st->too_big = 1;
        return 0;
    }
    st->f[st->nf++] = f;
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, id);
    if (!st || !st->owned) {
        give_back(s, id, len); /* no one takes it: dropped */
        return 0;
    }
    st->body_seen += len;
    if (!st->paused && s->lim.body_timeout_ms)
        loop_timer_arm(s->loop, &st->body_timer, s->lim.body_timeout_ms);
    if (s->lim.max_body && st->body_seen > s->lim.max_body) {
        give_back(s, id, len);
        if (!st->submitted && !st->rhead.len) {
            st->owned = 0;
            s->ops->on_abort(s->ctx, st->conn);
            http_conn_set_data(st->conn, NULL);
            reject(st, 413, "request body too large");
        } else {
            st->failed = 1;
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        }
        return 0;
    }
    if (st->paused || buf_used(&st->in)) {
        buf_append(&st->in, data, len); /* at most the stream's window: the client waits for it */
        return 0;
    }
    give_back(s, id, len);
    s->ops->on_body(s->ctx, st->conn, (const char *)data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!st)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            start_request(st, end);
            return 0;
        }
        break; /* trailers: only their END_STREAM matters */
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !end)
            return glitch(s, &s->empty, H2_MAX_EMPTY_DATA);
        break;
    case NGHTTP2_RST_STREAM:
        return glitch(s, &s->resets, H2_MAX_RESETS);
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            return 0;
        return glitch(s, &s->control, H2_MAX_CONTROL);
    case NGHTTP2_PRIORITY:
        return glitch(s, &s->control, H2_MAX_CONTROL);
    default:
        return 0;
    }
    if (st && end && !st->req_ended) {
        st->req_ended = 1;
        loop_timer_cancel(s->loop, &st->body_timer);
        if (st->owned && !st->paused && !buf_used(&st->in) && !st->eos_given) {
            st->eos_given = 1;
            s->ops->on_body_end(s->ctx, st->conn);
        }
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    struct h2_session *s = ud;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        /* A reset the client provoked (a malformed request, a window overflow, a frame on a closed
         * stream...) frees its stream slot as the client's own RST_STREAM does: counted with those,
         * or a client opens and gets reset streams without bound (MadeYouReset, CVE-2025-8671).
         * Not counted: our own (INTERNAL_ERROR: the server failed; CANCEL: max_body; NO_ERROR), nor
         * REFUSED_STREAM (no stream was started: over the concurrency or the max_conns budget). */
        uint32_t code = frame->rst_stream.error_code;
        if (code != NGHTTP2_NO_ERROR && code != NGHTTP2_INTERNAL_ERROR && code != NGHTTP2_CANCEL &&
            code != NGHTTP2_REFUSED_STREAM && !s->dead && glitch(s, &s->resets, H2_MAX_RESETS) < 0) {
            nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
            s->dead = 1;
        }
        return 0;
    }
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    /* The response is complete while the request is not: the client may stop sending (RFC 9113
     * §8.1, RST_STREAM NO_ERROR after a complete response). */
    if (st && !st->req_ended)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error_code, void *ud)
{
    struct h2_session *s = ud;
    struct h2_stream *st = stream_of(s, id);
    if (!st || s->freeing)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (st->owned) {
        st->owned = 0;
        s->ops->on_abort(s->ctx, st->conn);
    }
    stream_free(st);
    return 0;
}

/* The response body's DATA, as the client's window allows. */
static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *p, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct h2_stream *st = src->ptr;
    size_t n = buf_used(&st->out);
    if (n > len)
        n = len;
    if (n) /* an empty buf may have no storage: memcpy from NULL is undefined even for 0 bytes */
        memcpy(p, buf_head(&st->out), n);
    buf_consume(&st->out, n);
    if (st->want_drain && buf_used(&st->out) <= H2_STREAM_HIGH_WATER / 4) {
        st->want_drain = 0;
        st->drain = 1;
    }
    if (!buf_used(&st->out)) {
        if (st->out_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            buf_reset(&st->out); /* its storage serves the next stream (stream_free) */
        } else if (!n) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* ---- the response ---- */

/* Hop-by-hop fields, which HTTP/2 does not carry (RFC 9113 §8.2.2). */
static int hop_by_hop(struct http_str n)
{
    switch (n.n) { /* by length first: this runs for every response field */
    case 2:
        return http_str_ieq(n, "te");
    case 7:
        return http_str_ieq(n, "upgrade");
    case 10:
        return http_str_ieq(n, "connection") || http_str_ieq(n, "keep-alive");
    case 16:
        return http_str_ieq(n, "proxy-connection");
    case 17:
        return http_str_ieq(n, "transfer-encoding");
    default:
        return 0;
    }
}

/* Submits the response head rh (its names and values point into the handler's bytes or rhead;
 * nghttp2 copies them). RC_OK or RC_ERROR. */
static int submit_head(struct h2_stream *st, const struct http_head *rh)
{
    struct h2_session *s = st->s;
    nghttp2_nv nv[HTTP_MAX_HEADERS + 1];
    char small[2048]; /* the names in lower case: most heads fit here */
    size_t need = 1;
    for (int i = 0; i < rh->nheaders; i++)
        need += rh->headers[i].name.n;
    char *low = need <= sizeof(small) ? small : alloc_malloc(need), *lp = low;
    size_t n = 0;
    int code = rh->status; /* 100-599 (the parser checks); printf's cost showed in profiles */
    st->status[0] = (char)('0' + code / 100 % 10);
    st->status[1] = (char)('0' + code / 10 % 10);
    st->status[2] = (char)('0' + code % 10);
    st->status[3] = 0;
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st->status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (int i = 0; i < rh->nheaders; i++) {
        const struct http_header *hd = &rh->headers[i];
        if (hop_by_hop(hd->name) || (rh->conn_names && http_connection_lists(rh, hd->name)))
            continue;
        for (size_t k = 0; k < hd->name.n; k++) {
            char ch = hd->name.p[k];
            lp[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        nv[n++] = (nghttp2_nv){(uint8_t *)lp, (uint8_t *)hd->value.p, hd->name.n, hd->value.n, NGHTTP2_NV_FLAG_NONE};
        lp += hd->name.n;
    }
    st->rkind = rh->body;
    st->rleft = rh->body == HTTP_BODY_LENGTH ? (uint64_t)rh->content_length : 0;
    http_chunked_init(&st->rchunk);
    int rc;
    if (rh->body == HTTP_BODY_NONE) {
        st->rstate = R_DONE;
        rc = nghttp2_submit_response(s->ng, st->id, nv, n, NULL);
    } else {
        st->rstate = R_BODY;
        nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read};
        rc = nghttp2_submit_response(s->ng, st->id, nv, n, &dp);
    }
    if (low != small)
        free(low);
    st->submitted = 1;
    return rc == 0 ? RC_OK : RC_ERROR;
}

/* Decoded body bytes into out. RC_OK or RC_ERROR (bad chunked coding). */
static int body_feed(struct h2_stream *st, const char *p, size_t n)
{
    while (n > 0 && st->rstate == R_BODY) {
        if (st->rkind == HTTP_BODY_LENGTH) {
            size_t take = n < st->rleft ? n : (size_t)st->rleft;
            buf_append(&st->out, p, take);
            st->rleft -= take;
            n -= take;
            p += take;
            if (!st->rleft) {
                st->rstate = R_DONE;
                st->out_eof = 1;
            }
        } else if (st->rkind == HTTP_BODY_CHUNKED) {
            const char *data = NULL;
            size_t dlen = 0;
            long used = http_chunked_feed(&st->rchunk, p, n, &data, &dlen);
            if (used < 0)
                return RC_ERROR;
            if (dlen)
                buf_append(&st->out, data, dlen);
            p += used;
            n -= (size_t)used;
            if (st->rchunk.done) {
                st->rstate = R_DONE;
                st->out_eof = 1;
            } else if (used == 0 && !dlen) {
                return RC_ERROR; /* no progress: cannot happen with n > 0 */
            }
        } else { /* HTTP_BODY_EOF: until http_conn_response_done */
            buf_append(&st->out, p, n);
            n = 0;
        }
    }
    return RC_OK; /* bytes after the end of the response are dropped */
}

/* The handler's HTTP/1.1 bytes. RC_OK or RC_ERROR (not a response we can carry). */
static int response_feed(struct h2_stream *st, const char *p, size_t n)
{
    if (st->rstate != R_HEAD)
        return body_feed(st, p, n);
    /* The head usually comes whole in one call: parsed where it is, kept in rhead only if not. */
    int kept = buf_used(&st->rhead) > 0;
    if (kept) {
        buf_append(&st->rhead, p, n);
        p = buf_head(&st->rhead);
        n = buf_used(&st->rhead);
    }
    struct http_head *rh = st->s->rh;
    for (;;) {
        int r = http_parse_response(p, n, st->req_method, NULL, rh);
        if (r == HTTP_AGAIN) {
            if (!kept)
                buf_append(&st->rhead, p, n);
            else if (p != buf_head(&st->rhead))
                buf_consume(&st->rhead, (size_t)(p - buf_head(&st->rhead)));
            return RC_OK;
        }
        if (r < 0 || rh->status == 101)
            return RC_ERROR;
        p += r;
        n -= (size_t)r;
        if (rh->status < 200) /* 1xx interim: dropped */
            continue;
        if (submit_head(st, rh) < 0)
            return RC_ERROR;
        int rc = body_feed(st, p, n);
        buf_reset(&st->rhead);
        return rc;
    }
}

static void stream_fail(struct h2_stream *st)
{
    if (st->failed)
        return;
    st->failed = 1;
    nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    http_conn_h2_kick(st->s->c);
}

static void stream_resume_data(struct h2_stream *st)
{
    if (st->deferred && st->submitted && (buf_used(&st->out) || st->out_eof)) {
        st->deferred = 0;
        nghttp2_session_resume_data(st->s->ng, st->id);
    }
    http_conn_h2_kick(st->s->c);
}

int h2_stream_send(struct h2_stream *st, const void *p, size_t n)
{
    if (st->failed)
        return 0; /* on_abort follows when the reset is written */
    if (response_feed(st, p, n) < 0) {
        stream_fail(st);
        return 0;
    }
    stream_resume_data(st);
    if (buf_used(&st->out) >= H2_STREAM_HIGH_WATER) {
        st->want_drain = 1;
        return 0;
    }
    return 1;
}

void h2_stream_response_done(struct h2_stream *st)
{
    st->owned = 0;
    loop_timer_cancel(st->s->loop, &st->body_timer);
    if (st->failed)
        return;
    if (st->rstate == R_BODY && st->rkind == HTTP_BODY_EOF) {
        st->rstate = R_DONE;
        st->out_eof = 1;
    }
    if (st->rstate != R_DONE) {
        stream_fail(st); /* truncated: the client sees the stream reset */
        return;
    }
    if (buf_used(&st->in) || (!st->req_ended && !st->rejected))
        st->resume = 1; /* the body kept is given back (feed_kept) */
    stream_resume_data(st);
}

void h2_stream_pause_body(struct h2_stream *st, int paused)
{
    st->paused = paused ? 1 : 0;
    body_timer_update(st); /* a paused body is not timed: the client waits for its window */
    if (!paused && (buf_used(&st->in) || (st->req_ended && !st->eos_given))) {
        st->resume = 1;
        http_conn_h2_kick(st->s->c);
    }
}

/* ---- the session ---- */

struct h2_session *h2_session_new(struct http_conn *c, struct loop *loop, const struct http_server_ops *ops, void *ctx,
                                  const struct http_server_limits *lim, int tls)
{
    struct h2_session *s = alloc_calloc(1, sizeof(*s));
    s->c = c;
    s->loop = loop;
    s->ops = ops;
    s->ctx = ctx;
    s->lim = *lim;
    s->tls = tls ? 1 : 0;
    s->window_start = loop_now(loop);
    s->spare_timer.fn = on_spare_timer;
    s->spare_timer.data = s;
    s->rh = alloc_malloc(sizeof(*s->rh));
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb)) {
        free(s->rh);
        free(s);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    if (nghttp2_option_new(&opt)) {
        nghttp2_session_callbacks_del(cb);
        free(s->rh);
        free(s);
        return NULL;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 0);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_no_closed_streams(opt, 1); /* kept only for priorities, which RFC 9113 dropped */
    int rc = nghttp2_session_server_new2(&s->ng, cb, s, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rc) {
        free(s->rh);
        free(s);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->lim.max_head},
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    return s;
}

void h2_session_free(struct h2_session *s)
{
    if (!s)
        return;
    while (s->streams) {
        struct h2_stream *st = s->streams;
        if (st->owned) {
            st->owned = 0;
            s->ops->on_abort(s->ctx, st->conn);
        }
        nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
        stream_free(st);
    }
    s->freeing = 1;
    nghttp2_session_del(s->ng);
    loop_timer_cancel(s->loop, &s->spare_timer);
    spares_free(s);
    free(s->rh);
    free(s);
}

int h2_session_recv(struct h2_session *s, const char *p, size_t n)
{
    if (s->dead)
        return RC_ERROR;
    ssize_t r = nghttp2_session_mem_recv(s->ng, (const uint8_t *)p, n);
    if (r >= 0)
        return RC_OK;
    /* Our bounds (calm), nghttp2's on queued acks (FLOODED) and CONTINUATION frames: the peer
     * misbehaves on purpose; anything else is a protocol error (bad preface, bad frame). */
    int calm = s->calm || r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
    uint32_t code = calm ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR;
    nghttp2_session_terminate_session(s->ng, code);
    s->dead = 1;
    return RC_ERROR;
}

int h2_session_send(struct h2_session *s, struct buf *out, size_t limit)
{
    for (struct h2_stream *st = s->streams; st; st = st->next) {
        if (st->resume && !st->paused) {
            st->resume = 0;
            feed_kept(st);
        }
    }
    while (buf_used(out) < limit) {
        const uint8_t *d;
        ssize_t k = nghttp2_session_mem_send(s->ng, &d);
        if (k < 0)
            return RC_ERROR;
        if (k == 0)
            break;
        buf_append(out, d, (size_t)k);
    }
    for (struct h2_stream *st = s->streams; st; st = st->next) {
        if (st->drain) {
            st->drain = 0;
            if (st->owned && s->ops->on_drain)
                s->ops->on_drain(s->ctx, st->conn);
        }
    }
    return RC_OK;
}

int h2_session_want_read(const struct h2_session *s) { return !s->dead && nghttp2_session_want_read(s->ng); }
int h2_session_want_write(const struct h2_session *s) { return nghttp2_session_want_write(s->ng); }
unsigned h2_session_streams(const struct h2_session *s) { return s->nstreams; }

int h2_session_blocked(const struct h2_session *s)
{
    if (nghttp2_session_want_write(s->ng))
        return 0;
    for (const struct h2_stream *st = s->streams; st; st = st->next)
        if (buf_used(&st->out) > 0)
            return 1;
    return 0;
}

void h2_session_goaway(struct h2_session *s, uint32_t code)
{
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng), code, NULL, 0);
}
