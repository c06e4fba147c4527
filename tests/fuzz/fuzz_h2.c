/* fuzz_h2.c — libFuzzer harness for the HTTP/2 session (src/http/h2.c): everything a client can
 * send after the connection preface, through nghttp2 and our callbacks, request heads, bodies,
 * resets and floods, with a stub handler that answers in the ways the balancer does.
 *
 * Build and run with `make fuzz` (or `make fuzz-smoke`); the seeds are tests/fuzz/corpus/h2/.
 *
 * The harness includes server.c (as unit tests may include the file under test) to make a
 * connection without a network: a struct http_conn on a socket pair whose output nobody reads,
 * driven by calling h2_session_recv and h2_session_send directly. Input: byte 0 is where the rest
 * is cut in two (the two parts are fed one after the other, with frames written in between); the
 * rest is the client's bytes after the preface. The handler, by the request path's second
 * character: 'e' answers 404 at once (http_conn_respond_error), 'p' pauses the body on its first
 * piece and resumes it on the next, 't' sends a truncated response (the stream is reset), 'c' a
 * chunked one in three pieces, 'x' never answers (aborted at the end), anything else 200 with a
 * small body at the end of the request body. Besides memory errors and UB it traps when a
 * handler callback comes for a request the handler does not own, or on_body with 0 bytes. */
#pragma GCC diagnostic ignored "-Wunused-parameter" /* server.c's callbacks and ours */
#include <fcntl.h>

#include "http/server.c"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

struct stub {
    char kind;
    int paused;
    uint64_t body;
};

static void stub_end(struct http_conn *c, struct stub *st)
{
    free(st);
    http_conn_set_data(c, NULL);
}

static void answer(struct http_conn *c, struct stub *st)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char cut[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    if (st->kind == 'c') {
        http_conn_send(c, chunked, 20);
        http_conn_send(c, chunked + 20, 30);
        http_conn_send(c, chunked + 50, sizeof(chunked) - 51);
    } else if (st->kind == 't') {
        http_conn_send(c, cut, sizeof(cut) - 1);
    } else {
        http_conn_send(c, ok, sizeof(ok) - 1);
    }
    stub_end(c, st);
    http_conn_response_done(c, 1);
}

static void on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    CHECK(http_conn_get_data(c) == NULL);
    struct stub *st = calloc(1, sizeof(*st));
    st->kind = h->path.n > 1 ? h->path.p[1] : '/';
    http_conn_set_data(c, st);
    if (st->kind == 'e') {
        stub_end(c, st);
        http_conn_respond_error(c, 404, "not here", 0);
    }
}

static void on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    struct stub *st = http_conn_get_data(c);
    CHECK(st != NULL && n > 0);
    st->body += n;
    if (st->kind == 'p') {
        http_conn_pause_body(c, !st->paused);
        st->paused = !st->paused;
    }
}

static void on_body_end(void *ctx, struct http_conn *c)
{
    struct stub *st = http_conn_get_data(c);
    CHECK(st != NULL);
    if (st->kind != 'x')
        answer(c, st);
}

static void on_drain(void *ctx, struct http_conn *c) { CHECK(http_conn_get_data(c) != NULL); }

static void on_abort(void *ctx, struct http_conn *c)
{
    struct stub *st = http_conn_get_data(c);
    CHECK(st != NULL);
    stub_end(c, st);
}

static const struct http_server_ops stub_ops = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_drain = on_drain,
    .on_abort = on_abort,
};

static void drive(struct http_conn *c, struct buf *out)
{
    for (int i = 0; i < 8; i++) {
        buf_reset(out);
        if (h2_session_send(c->h2, out, 1 << 20) < 0 || buf_used(out) == 0)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 1)
        return 0;
    size_t cut = size > 1 ? data[0] % size : 0;
    data++;
    size--;
    if (cut > size)
        cut = size;
    struct loop *loop = loop_create(64);
    int lp[2], sv[2];
    if (!loop || pipe2(lp, O_CLOEXEC) < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    close(lp[1]);
    struct http_server *s = http_server_create(loop, lp[0], &stub_ops, NULL, NULL);
    struct http_conn *c = alloc_calloc(1, sizeof(*c));
    c->srv = s;
    c->fd = sv[0];
    c->state = ST_HEAD;
    c->keep_alive = 1;
    memcpy(c->ip, "127.0.0.1", 10);
    c->timer.fn = on_timer;
    c->timer.data = c;
    s->conns = c;
    s->nconns = 1;
    c->h2 = h2_session_new(c, loop, &stub_ops, NULL, &s->lim, 1);
    struct buf out = {0};
    int rc = h2_session_recv(c->h2, preface, sizeof(preface) - 1);
    drive(c, &out);
    if (rc == RC_OK && h2_session_recv(c->h2, (const char *)data, cut) == RC_OK) {
        drive(c, &out);
        if (h2_session_recv(c->h2, (const char *)data + cut, size - cut) == RC_OK)
            drive(c, &out);
    }
    drive(c, &out);
    buf_free(&out);
    http_server_free(s); /* closes c: its streams' handlers get on_abort */
    close(sv[1]);
    loop_destroy(loop); /* runs the deferred calls: h2_kicked finds c closed, conn_free */
    return 0;
}
