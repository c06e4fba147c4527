/* client.c — the HTTP/1.1 client; see client.h. */
#include "http/client.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_MAX_HEAD 16384
#define DEFAULT_MAX_BODY (16u << 20)
#define READ_MAX         65536 /* bytes read per step */

/* ---- the response reader ---------------------------------------------------------------------- */

void http_reader_init(struct http_reader *r, enum http_method m, size_t max_head)
{
    /* Field by field: the balancer starts one per request (kind, left and chunked are set when
     * the final head is parsed). */
    r->phase = HTTP_READER_HEAD;
    r->method = m;
    r->final_101 = 0;
    r->max_head = max_head ? max_head : DEFAULT_MAX_HEAD;
    r->interim_bytes = 0;
    r->outcome = 0;
    r->error = NULL;
}

/* The reader is over with this outcome, which every later call returns. */
static int reader_end(struct http_reader *r, int outcome)
{
    r->phase = HTTP_READER_END;
    r->outcome = outcome;
    return outcome;
}

static int reader_fail(struct http_reader *r, const char *why)
{
    r->error = why;
    return reader_end(r, HTTP_ERROR);
}

/* Parses heads in `in` up to the final one. */
static int reader_head(struct http_reader *r, struct buf *in, const struct http_reader_sink *sink, void *ctx)
{
    for (;;) {
        if (buf_used(in) == 0)
            return HTTP_AGAIN;
        if (r->interim_bytes >= r->max_head)
            return reader_fail(r, "response header section too large");
        struct http_limits lim = {.max_head = r->max_head - r->interim_bytes};
        struct http_head h;
        int n = http_parse_response(buf_head(in), buf_used(in), r->method, &lim, &h);
        if (n == HTTP_AGAIN)
            return HTTP_AGAIN;
        if (n == HTTP_ERROR)
            return reader_fail(r, h.error);
        if (h.status < 200 && !(h.status == 101 && r->final_101)) {
            if (sink->on_interim && sink->on_interim(ctx, &h) < 0)
                return reader_end(r, HTTP_READER_STOPPED);
            buf_consume(in, (size_t)n);
            r->interim_bytes += (size_t)n;
            continue;
        }
        r->kind = h.body;
        r->left = h.body == HTTP_BODY_LENGTH ? (uint64_t)h.content_length : 0;
        http_chunked_init(&r->chunked);
        r->phase = HTTP_READER_BODY;
        int rc = sink->on_head(ctx, &h, buf_head(in), (size_t)n);
        buf_consume(in, (size_t)n);
        if (rc < 0)
            return reader_end(r, HTTP_READER_STOPPED);
        if (h.body == HTTP_BODY_NONE || (h.body == HTTP_BODY_LENGTH && r->left == 0))
            return reader_end(r, HTTP_READER_DONE);
        return HTTP_AGAIN; /* the body follows (phase BODY) */
    }
}

/* Decodes the body bytes in `in`, piece by piece, into the sink. */
static int reader_body(struct http_reader *r, struct buf *in, const struct http_reader_sink *sink, void *ctx)
{
    while (buf_used(in)) {
        const char *p = buf_head(in);
        size_t n = buf_used(in);
        int rc;
        if (r->kind == HTTP_BODY_LENGTH) {
            size_t take = n < r->left ? n : (size_t)r->left;
            r->left -= take;
            rc = sink->on_body(ctx, p, take);
            buf_consume(in, take);
            if (rc >= 0 && r->left == 0)
                return reader_end(r, HTTP_READER_DONE);
        } else if (r->kind == HTTP_BODY_EOF) {
            rc = sink->on_body(ctx, p, n);
            buf_consume(in, n);
        } else {
            const char *data;
            size_t dlen;
            long used = http_chunked_feed(&r->chunked, p, n, &data, &dlen);
            if (used < 0)
                return reader_fail(r, "malformed chunked body");
            rc = dlen ? sink->on_body(ctx, data, dlen) : 1;
            buf_consume(in, (size_t)used);
            if (rc >= 0 && r->chunked.done)
                return reader_end(r, HTTP_READER_DONE);
            if (used == 0)
                break; /* cannot happen with n > 0 before done; never spin */
        }
        if (rc < 0)
            return reader_end(r, HTTP_READER_STOPPED);
        if (rc == 0)
            return HTTP_READER_PAUSED;
    }
    return HTTP_AGAIN;
}

int http_reader_run(struct http_reader *r, struct buf *in, const struct http_reader_sink *sink, void *ctx)
{
    if (r->phase == HTTP_READER_END)
        return r->outcome;
    int rc = HTTP_AGAIN;
    if (r->phase == HTTP_READER_HEAD)
        rc = reader_head(r, in, sink, ctx);
    if (rc == HTTP_AGAIN && r->phase == HTTP_READER_BODY)
        rc = reader_body(r, in, sink, ctx);
    return rc;
}

int http_reader_eof(struct http_reader *r)
{
    if (r->phase == HTTP_READER_BODY && r->kind == HTTP_BODY_EOF)
        return reader_end(r, HTTP_READER_DONE);
    if (r->phase == HTTP_READER_END && r->outcome == HTTP_READER_DONE)
        return HTTP_READER_DONE;
    return HTTP_ERROR;
}

/* ---- the buffered client's sink ------------------------------------------------------------------ */

void http_client_init(struct http_client *c, enum http_method m, const struct http_client_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->phase = HTTP_CLIENT_HEAD;
    http_reader_init(&c->reader, m, o ? o->max_head : 0);
    c->reader.final_101 = 1;
    c->max_body = o && o->max_body ? o->max_body : DEFAULT_MAX_BODY;
    c->head_only = o ? o->head_only : 0;
}

static int fail(struct http_client *c, enum http_client_error e, int err, const char *detail)
{
    c->error = e;
    c->err = err;
    c->detail = detail;
    return HTTP_ERROR;
}

static int finished(struct http_client *c)
{
    c->phase = HTTP_CLIENT_FINISHED;
    return HTTP_CLIENT_DONE;
}

/* The final head is copied to c->headbuf, so c->head stays valid while c->in changes. */
static int client_on_head(void *ctx, const struct http_head *h, const char *p, size_t len)
{
    struct http_client *c = ctx;
    (void)h;
    buf_append(&c->headbuf, p, len);
    /* The same bytes parse the same way: only the pointers move, into headbuf. */
    http_parse_response(buf_head(&c->headbuf), buf_used(&c->headbuf), c->reader.method,
                        &(struct http_limits){.max_head = c->reader.max_head}, &c->head);
    c->status = c->head.status;
    if (c->head_only)
        return -1; /* DONE without the body */
    if (c->head.body == HTTP_BODY_LENGTH && (uint64_t)c->head.content_length > c->max_body) {
        fail(c, HTTP_CLIENT_ETOOLARGE, 0, NULL);
        return -1;
    }
    c->phase = HTTP_CLIENT_BODY;
    return 1;
}

/* Appends decoded body bytes, within max_body. */
static int client_on_body(void *ctx, const char *p, size_t n)
{
    struct http_client *c = ctx;
    if (n > c->max_body - buf_used(&c->body)) {
        fail(c, HTTP_CLIENT_ETOOLARGE, 0, NULL);
        return -1;
    }
    buf_append(&c->body, p, n);
    return 1;
}

static const struct http_reader_sink client_sink = {.on_head = client_on_head, .on_body = client_on_body};

/* Maps the reader's outcome to the client's. */
static int outcome(struct http_client *c, int rc)
{
    switch (rc) {
    case HTTP_READER_DONE:
        return finished(c);
    case HTTP_READER_STOPPED: /* head_only, or the client failed it (c->error) */
        return c->error ? HTTP_ERROR : finished(c);
    case HTTP_ERROR:
        return fail(c, HTTP_CLIENT_EMALFORMED, 0, c->reader.error);
    default:
        return HTTP_AGAIN;
    }
}

/* Runs the reader over what c->in holds. */
static int process(struct http_client *c)
{
    if (c->error)
        return HTTP_ERROR;
    if (c->phase == HTTP_CLIENT_FINISHED)
        return HTTP_CLIENT_DONE;
    return outcome(c, http_reader_run(&c->reader, &c->in, &client_sink, c));
}

int http_client_feed(struct http_client *c, const void *p, size_t n)
{
    if (c->error || c->phase == HTTP_CLIENT_FINISHED)
        return process(c); /* bytes after the response are ignored */
    buf_append(&c->in, p, n);
    return process(c);
}

int http_client_eof(struct http_client *c)
{
    if (c->error || c->phase == HTTP_CLIENT_FINISHED)
        return process(c);
    if (http_reader_eof(&c->reader) == HTTP_READER_DONE)
        return finished(c);
    return fail(c, HTTP_CLIENT_ECLOSED, 0, NULL);
}

/* ---- the request -------------------------------------------------------------------------------- */

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int is_token(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return 0;
    return 1;
}

/* 1 if s has no control character (HTAB allowed when tab). */
static int no_ctl(const char *s, int tab)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && !(tab && ch == '\t')) || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Checks req and writes it to out. Returns 0, or HTTP_ERROR with c->error EREQUEST. */
static int write_request(struct http_client *c, const struct http_client_req *req, struct buf *out)
{
    if (!is_token(req->method))
        return fail(c, HTTP_CLIENT_EREQUEST, 0, "invalid method");
    if (!req->target || !*req->target || !no_ctl(req->target, 0) || strchr(req->target, ' '))
        return fail(c, HTTP_CLIENT_EREQUEST, 0, "invalid request target");
    if (!req->host || !no_ctl(req->host, 1))
        return fail(c, HTTP_CLIENT_EREQUEST, 0, "invalid Host");
    for (size_t i = 0; i < req->nheaders; i++)
        if (!is_token(req->headers[i].name) || !req->headers[i].value || !no_ctl(req->headers[i].value, 1))
            return fail(c, HTTP_CLIENT_EREQUEST, 0, "invalid header field");
    buf_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method, req->target, req->host);
    for (size_t i = 0; i < req->nheaders; i++)
        buf_printf(out, "%s: %s\r\n", req->headers[i].name, req->headers[i].value);
    buf_puts(out, "Connection: close\r\n");
    if (req->body) {
        buf_puts(out, "Content-Length: ");
        buf_put_u64(out, req->body_len);
        buf_puts(out, "\r\n\r\n");
        buf_append(out, req->body, req->body_len);
    } else {
        buf_puts(out, "\r\n");
    }
    return 0;
}

static enum http_method method_of(const char *s)
{
    for (int m = HTTP_GET; m <= HTTP_CONNECT; m++)
        if (!strcmp(s, http_method_name((enum http_method)m)))
            return (enum http_method)m;
    return HTTP_OTHER;
}

/* ---- the connection ------------------------------------------------------------------------------ */

static void close_fd(struct http_client *c)
{
    if (c->fd < 0)
        return;
    if (c->loop)
        loop_unwatch(c->loop, c->fd);
    close(c->fd);
    c->fd = -1;
}

int http_client_start(struct http_client *c, const struct net_addr *a, const struct http_client_req *req,
                      const struct http_client_opts *o)
{
    http_client_init(c, req->method ? method_of(req->method) : HTTP_OTHER, o);
    c->phase = HTTP_CLIENT_CONNECTING;
    if (write_request(c, req, &c->out) < 0)
        return HTTP_ERROR;
    int fd = net_connect(a);
    if (fd < 0)
        return fail(c, HTTP_CLIENT_ECONNECT, -fd, NULL);
    c->fd = fd;
    c->want = LOOP_WRITE;
    return 0;
}

/* Ends a step: the descriptor goes once the outcome is known. */
static int step_end(struct http_client *c, int rc)
{
    if (rc != HTTP_AGAIN)
        close_fd(c);
    return rc;
}

int http_client_step(struct http_client *c, int events)
{
    if (c->error)
        return step_end(c, HTTP_ERROR);
    if (c->phase == HTTP_CLIENT_FINISHED)
        return step_end(c, HTTP_CLIENT_DONE);
    if (c->phase == HTTP_CLIENT_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err)
            return step_end(c, fail(c, HTTP_CLIENT_ECONNECT, err, NULL));
        c->phase = HTTP_CLIENT_SENDING;
    }
    if (c->phase == HTTP_CLIENT_SENDING) {
        ssize_t n = net_write(c->fd, &c->out);
        if (n < 0)
            return step_end(c, fail(c, HTTP_CLIENT_ESEND, (int)-n, NULL));
        if (buf_used(&c->out)) {
            c->want = LOOP_WRITE;
            return HTTP_AGAIN;
        }
        buf_free(&c->out);
        c->phase = HTTP_CLIENT_HEAD;
        c->want = LOOP_READ;
        return HTTP_AGAIN;
    }
    ssize_t n = net_read(c->fd, &c->in, READ_MAX);
    if (n == -EAGAIN)
        return HTTP_AGAIN;
    /* A read error ends the stream as a close does (a close-delimited body ends there too). */
    return step_end(c, n > 0 ? process(c) : http_client_eof(c));
}

void http_client_timeout(struct http_client *c)
{
    if (!c->error && c->phase != HTTP_CLIENT_FINISHED)
        fail(c, HTTP_CLIENT_ETIMEOUT, 0, NULL);
    close_fd(c);
}

/* ---- the loop driver ---------------------------------------------------------------------------- */

/* The outcome is known: everything on the loop is released before the callback, which may free c. */
static void complete(struct http_client *c)
{
    close_fd(c);
    loop_timer_cancel(c->loop, &c->timer);
    c->loop = NULL;
    c->fn(c, c->data);
}

static void on_io(struct loop *loop, int fd, int events, void *data)
{
    struct http_client *c = data;
    if (http_client_step(c, events) == HTTP_AGAIN) {
        loop_set_mask(loop, fd, c->want);
        return;
    }
    complete(c);
}

static void on_timeout(struct loop *loop, struct loop_timer *t)
{
    struct http_client *c = t->data;
    http_client_timeout(c);
    complete(c);
}

int http_client_watch(struct http_client *c, struct loop *loop, unsigned timeout_ms, http_client_fn *fn, void *data)
{
    int rc = loop_watch(loop, c->fd, c->want, on_io, c);
    if (rc < 0)
        return rc;
    c->loop = loop;
    c->fn = fn;
    c->data = data;
    c->timer.fn = on_timeout;
    c->timer.data = c;
    loop_timer_arm(loop, &c->timer, timeout_ms);
    return 0;
}

/* ---- the blocking driver ------------------------------------------------------------------------ */

int http_client_fetch(struct http_client *c, const struct net_addr *a, const struct http_client_req *req,
                      const struct http_client_opts *o, unsigned timeout_ms)
{
    if (http_client_start(c, a, req, o) < 0)
        return HTTP_ERROR;
    /* From here: the deadline bounds the exchange, not the copy of the request into c->out. */
    uint64_t deadline = loop_clock_us() / 1000 + timeout_ms;
    for (;;) {
        uint64_t now = loop_clock_us() / 1000;
        if (now >= deadline)
            break;
        uint64_t wait = deadline - now;
        struct pollfd p = {.fd = c->fd, .events = c->want == LOOP_READ ? POLLIN : POLLOUT};
        int r = poll(&p, 1, wait > INT_MAX ? INT_MAX : (int)wait);
        if (r < 0 && errno != EINTR)
            break; /* cannot wait: as good as the deadline */
        if (r <= 0)
            continue;
        int events = (p.revents & (POLLIN | POLLHUP | POLLERR) ? LOOP_READ : 0) |
                     (p.revents & (POLLOUT | POLLHUP | POLLERR) ? LOOP_WRITE : 0);
        int rc = http_client_step(c, events);
        if (rc != HTTP_AGAIN)
            return rc == HTTP_CLIENT_DONE ? 0 : HTTP_ERROR;
    }
    http_client_timeout(c);
    return HTTP_ERROR;
}

void http_client_free(struct http_client *c)
{
    close_fd(c);
    if (c->loop)
        loop_timer_cancel(c->loop, &c->timer);
    c->loop = NULL;
    buf_free(&c->out);
    buf_free(&c->in);
    buf_free(&c->headbuf);
    buf_free(&c->body);
}
