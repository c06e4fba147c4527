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

void http_client_init(struct http_client *c, enum http_method m, const struct http_client_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->phase = HTTP_CLIENT_HEAD;
    c->method = m;
    c->max_head = o && o->max_head ? o->max_head : DEFAULT_MAX_HEAD;
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

/* Parses heads in c->in: interim 1xx ones are dropped, the final one is moved to c->headbuf (so
 * c->head stays valid while c->in grows) and sets up the body. */
static int read_head(struct http_client *c)
{
    for (;;) {
        if (c->head_bytes >= c->max_head)
            return fail(c, HTTP_CLIENT_EMALFORMED, 0, "response header section too large");
        struct http_limits lim = {.max_head = c->max_head - c->head_bytes};
        int n = http_parse_response(buf_head(&c->in), buf_used(&c->in), c->method, &lim, &c->head);
        if (n == HTTP_AGAIN)
            return HTTP_AGAIN;
        if (n == HTTP_ERROR)
            return fail(c, HTTP_CLIENT_EMALFORMED, 0, c->head.error);
        if (c->head.status >= 200 || c->head.status == 101) {
            buf_append(&c->headbuf, buf_head(&c->in), (size_t)n);
            buf_consume(&c->in, (size_t)n);
            /* The same bytes parse the same way: only the pointers move, into headbuf. */
            http_parse_response(buf_head(&c->headbuf), buf_used(&c->headbuf), c->method, &lim, &c->head);
            break;
        }
        buf_consume(&c->in, (size_t)n);
        c->head_bytes += (size_t)n;
    }
    c->status = c->head.status;
    if (c->head_only || c->head.body == HTTP_BODY_NONE)
        return finished(c);
    if (c->head.body == HTTP_BODY_LENGTH) {
        if ((uint64_t)c->head.content_length > c->max_body)
            return fail(c, HTTP_CLIENT_ETOOLARGE, 0, NULL);
        c->left = (uint64_t)c->head.content_length;
    }
    http_chunked_init(&c->chunked);
    c->phase = HTTP_CLIENT_BODY;
    return HTTP_AGAIN;
}

/* Appends decoded body bytes, within max_body. */
static int take_body(struct http_client *c, const char *p, size_t n)
{
    if (n > c->max_body - buf_used(&c->body))
        return fail(c, HTTP_CLIENT_ETOOLARGE, 0, NULL);
    buf_append(&c->body, p, n);
    return HTTP_AGAIN;
}

/* Decodes the body bytes in c->in. */
static int read_body(struct http_client *c)
{
    while (buf_used(&c->in)) {
        const char *p = buf_head(&c->in);
        size_t n = buf_used(&c->in);
        if (c->head.body == HTTP_BODY_LENGTH) {
            size_t take = n < c->left ? n : (size_t)c->left;
            take_body(c, p, take); /* within max_body: checked against Content-Length */
            buf_consume(&c->in, take);
            c->left -= take;
            if (c->left == 0)
                return finished(c);
        } else if (c->head.body == HTTP_BODY_EOF) {
            if (take_body(c, p, n) == HTTP_ERROR)
                return HTTP_ERROR;
            buf_consume(&c->in, n);
        } else {
            const char *data;
            size_t dlen;
            long used = http_chunked_feed(&c->chunked, p, n, &data, &dlen);
            if (used < 0)
                return fail(c, HTTP_CLIENT_EMALFORMED, 0, "malformed chunked body");
            if (dlen && take_body(c, data, dlen) == HTTP_ERROR)
                return HTTP_ERROR;
            buf_consume(&c->in, (size_t)used);
            if (c->chunked.done)
                return finished(c);
            if (used == 0)
                break; /* cannot happen with n > 0 before done; never spin */
        }
    }
    return HTTP_AGAIN;
}

/* Runs the reader over what c->in holds. */
static int process(struct http_client *c)
{
    if (c->error)
        return HTTP_ERROR;
    if (c->phase == HTTP_CLIENT_FINISHED)
        return HTTP_CLIENT_DONE;
    int rc = HTTP_AGAIN;
    if (c->phase == HTTP_CLIENT_HEAD)
        rc = read_head(c);
    if (rc == HTTP_AGAIN && c->phase == HTTP_CLIENT_BODY)
        rc = read_body(c);
    return rc;
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
    if (c->phase == HTTP_CLIENT_BODY && c->head.body == HTTP_BODY_EOF)
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
        while (buf_used(&c->out)) {
            ssize_t n = send(c->fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
            if (n > 0) {
                buf_consume(&c->out, (size_t)n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                c->want = LOOP_WRITE;
                return HTTP_AGAIN;
            }
            return step_end(c, fail(c, HTTP_CLIENT_ESEND, n < 0 ? errno : EPIPE, NULL));
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
    uint64_t deadline = loop_clock_us() / 1000 + timeout_ms;
    if (http_client_start(c, a, req, o) < 0)
        return HTTP_ERROR;
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
