/* test_h2.c — unit tests for HTTP/2 streams (src/http/h2.c) without a network.
 *
 * server.c is included (as the fuzzer does) to make a struct http_conn on a socket pair; the
 * client is an nghttp2 client session, and the two exchange bytes in memory (exchange()). A stub
 * handler records the struct http_head each stream hands it and the body, and answers with a
 * scripted HTTP/1.1 response. Checked: the synthesized head (method, target, path and query,
 * :authority as Host, Cookie fields joined, the body kinds: none, length, chunked), the response
 * made from HTTP/1.1 bytes (status, hop-by-hop fields dropped, a chunked body decoded, a HEAD
 * response without body), a truncated response resetting the stream (INTERNAL_ERROR), and a
 * paused body kept and handed over on the resume, the window given back only then. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <nghttp2/nghttp2.h>

#include "http/server.c"

/* ---- the stub handler ---- */

struct seen {
    char method[16], target[64], path[64], query[64], host[64], cookie[64];
    int body_kind;
    int64_t content_length;
    char body[256];
    size_t nbody;
    int ended, aborted;
    const char *answer; /* the HTTP/1.1 response to send at the end of the body */
    int pause_first;    /* pause on the first body piece */
    struct http_conn *conn;
    struct http_conn *conns[8]; /* every request handed over, in order */
    int nconns;
};

static struct seen seen;

static void copy(char *dst, size_t cap, struct http_str s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) /* an absent field is {NULL, 0} */
        memcpy(dst, s.p, n);
    dst[n] = 0;
}

static void on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    seen.conn = c;
    if (seen.nconns < 8)
        seen.conns[seen.nconns++] = c;
    copy(seen.method, sizeof(seen.method), h->method_str);
    copy(seen.target, sizeof(seen.target), h->target);
    copy(seen.path, sizeof(seen.path), h->path);
    copy(seen.query, sizeof(seen.query), h->query);
    copy(seen.host, sizeof(seen.host), h->host);
    const struct http_header *ck = http_find_header(h, "cookie");
    if (ck)
        copy(seen.cookie, sizeof(seen.cookie), ck->value);
    seen.body_kind = h->body;
    seen.content_length = h->content_length;
    assert_int_equal(h->http2, 1);
    http_conn_set_data(c, &seen);
}

static void on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    assert_true(n > 0 && seen.nbody + n <= sizeof(seen.body));
    memcpy(seen.body + seen.nbody, p, n);
    seen.nbody += n;
    if (seen.pause_first) {
        seen.pause_first = 0;
        http_conn_pause_body(c, 1);
    }
}

static void on_body_end(void *ctx, struct http_conn *c)
{
    seen.ended = 1;
    if (seen.answer) {
        http_conn_send(c, seen.answer, strlen(seen.answer));
        http_conn_set_data(c, NULL);
        http_conn_response_done(c, 1);
    }
}

static void on_abort(void *ctx, struct http_conn *c) { seen.aborted = 1; }

static const struct http_server_ops ops = {
    .on_request = on_request, .on_body = on_body, .on_body_end = on_body_end, .on_abort = on_abort};

/* ---- the client ---- */

struct reply {
    int status;
    char headers[512]; /* "name: value\n" each */
    char body[256];
    size_t nbody;
    uint32_t reset; /* error code of the close */
    int closed;
};

struct world {
    struct loop *loop;
    struct http_server *srv;
    struct http_conn *c;
    nghttp2_session *cli;
    struct reply r[8]; /* by (stream id - 1) / 2 */
    int sv[2];
};

static struct reply *reply_of(struct world *w, int32_t id) { return &w->r[((id - 1) / 2) % 8]; }

static int cli_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl, const uint8_t *value,
                      size_t vl, uint8_t flags, void *ud)
{
    struct reply *r = reply_of(ud, f->hd.stream_id);
    if (nl == 7 && !memcmp(name, ":status", 7))
        r->status = atoi((const char *)value);
    else
        snprintf(r->headers + strlen(r->headers), sizeof(r->headers) - strlen(r->headers), "%.*s: %.*s\n", (int)nl,
                 name, (int)vl, value);
    return 0;
}

static int cli_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *p, size_t n, void *ud)
{
    struct reply *r = reply_of(ud, id);
    memcpy(r->body + r->nbody, p, n);
    r->nbody += n;
    return 0;
}

static int cli_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct reply *r = reply_of(ud, id);
    r->closed = 1;
    r->reset = code;
    return 0;
}

static int setup(void **state)
{
    memset(&seen, 0, sizeof(seen));
    struct world *w = calloc(1, sizeof(*w));
    w->loop = loop_create(64);
    int lp[2];
    assert_int_equal(pipe2(lp, O_CLOEXEC), 0);
    close(lp[1]);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, w->sv), 0);
    w->srv = http_server_create(w->loop, lp[0], &ops, NULL, NULL);
    struct http_conn *c = alloc_calloc(1, sizeof(*c));
    c->srv = w->srv;
    c->fd = w->sv[0];
    c->keep_alive = 1;
    memcpy(c->ip, "127.0.0.1", 10);
    c->timer.fn = on_timer;
    c->timer.data = c;
    w->srv->conns = c;
    w->srv->nconns = 1;
    c->h2 = h2_session_new(c, w->loop, &ops, NULL, &w->srv->lim, 1);
    w->c = c;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, cli_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cli_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cli_close);
    nghttp2_session_client_new(&w->cli, cb, w);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(w->cli, NGHTTP2_FLAG_NONE, NULL, 0);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    nghttp2_session_del(w->cli);
    http_server_free(w->srv);
    close(w->sv[1]);
    loop_destroy(w->loop);
    free(w);
    return 0;
}

/* Moves bytes both ways until neither side has any. */
static void exchange(struct world *w)
{
    struct buf out = {0};
    for (int i = 0; i < 64; i++) {
        int moved = 0;
        const uint8_t *d;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(w->cli, &d)) > 0) {
            assert_int_equal(h2_session_recv(w->c->h2, (const char *)d, (size_t)n), RC_OK);
            moved = 1;
        }
        buf_reset(&out);
        assert_int_equal(h2_session_send(w->c->h2, &out, 1 << 20), RC_OK);
        if (buf_used(&out)) {
            assert_int_equal(nghttp2_session_mem_recv(w->cli, (const uint8_t *)buf_head(&out), buf_used(&out)),
                             (ssize_t)buf_used(&out));
            moved = 1;
        }
        if (!moved)
            break;
    }
    buf_free(&out);
}

static int32_t request(struct world *w, const char *method, const char *path, const nghttp2_nv *extra, size_t nextra,
                       nghttp2_data_provider *body)
{
    nghttp2_nv nv[12] = {
        {(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)":authority", (uint8_t *)"example.test", 10, 12, 0},
    };
    if (nextra)
        memcpy(nv + 4, extra, nextra * sizeof(*extra));
    return nghttp2_submit_request(w->cli, NULL, nv, 4 + nextra, body, NULL);
}

#define NV(n, v)                                                                                                       \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, 0                                                \
    }

static void test_get_head_and_chunked_response(void **state)
{
    struct world *w = *state; /* the client's preface goes with its first bytes */
    seen.answer = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n"
                  "X-A: b\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    nghttp2_nv extra[] = {NV("cookie", "a=1"), NV("cookie", "b=2"), NV("x-y", "z")};
    int32_t id = request(w, "GET", "/p/q?x=1&y", extra, 3, NULL);
    exchange(w);
    assert_string_equal(seen.method, "GET");
    assert_string_equal(seen.target, "/p/q?x=1&y");
    assert_string_equal(seen.path, "/p/q");
    assert_string_equal(seen.query, "x=1&y");
    assert_string_equal(seen.host, "example.test");
    assert_string_equal(seen.cookie, "a=1; b=2");
    assert_int_equal(seen.body_kind, HTTP_BODY_NONE);
    assert_true(seen.ended);
    struct reply *r = reply_of(w, id);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->headers, "x-a: b\n"); /* Connection, Keep-Alive, Transfer-Encoding dropped */
    assert_int_equal(r->nbody, 11);
    assert_memory_equal(r->body, "hello world", 11);
    assert_true(r->closed);
    assert_int_equal(r->reset, NGHTTP2_NO_ERROR);
    assert_false(seen.aborted);
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    const char *text = src->ptr;
    memcpy(buf, text, strlen(text));
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)strlen(text);
}

static void test_post_bodies_length_and_chunked(void **state)
{
    struct world *w = *state;
    seen.answer = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    nghttp2_data_provider dp = {.source.ptr = "abcdef", .read_callback = body_read};
    nghttp2_nv extra[] = {NV("content-length", "6")};
    int32_t id = request(w, "POST", "/a", extra, 1, &dp);
    exchange(w);
    assert_int_equal(seen.body_kind, HTTP_BODY_LENGTH);
    assert_int_equal(seen.content_length, 6);
    assert_int_equal(seen.nbody, 6);
    assert_memory_equal(seen.body, "abcdef", 6);
    assert_int_equal(reply_of(w, id)->status, 201);
    assert_int_equal(reply_of(w, id)->nbody, 2);
    /* No content-length: chunked to the handler's backend. */
    memset(&seen, 0, sizeof(seen));
    seen.answer = "HTTP/1.1 204 No Content\r\n\r\n";
    id = request(w, "PUT", "/b", NULL, 0, &dp);
    exchange(w);
    assert_int_equal(seen.body_kind, HTTP_BODY_CHUNKED);
    assert_int_equal(seen.content_length, -1);
    assert_int_equal(seen.nbody, 6);
    assert_int_equal(reply_of(w, id)->status, 204);
    assert_true(reply_of(w, id)->closed);
}

static void test_head_response_has_no_body(void **state)
{
    struct world *w = *state;
    seen.answer = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
    int32_t id = request(w, "HEAD", "/h", NULL, 0, NULL);
    exchange(w);
    struct reply *r = reply_of(w, id);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->headers, "content-length: 5000\n");
    assert_int_equal(r->nbody, 0);
    assert_true(r->closed);
    assert_int_equal(r->reset, NGHTTP2_NO_ERROR);
}

static void test_truncated_response_resets_the_stream(void **state)
{
    struct world *w = *state;
    int32_t id = request(w, "GET", "/t", NULL, 0, NULL);
    exchange(w);
    static const char part[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    assert_int_equal(http_conn_send(seen.conn, part, sizeof(part) - 1), 1);
    exchange(w);
    struct reply *r = reply_of(w, id);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->nbody, 3);
    assert_false(r->closed);
    /* The handler ends it 7 bytes short (its backend failed): the stream is reset. */
    http_conn_set_data(seen.conn, NULL);
    http_conn_response_done(seen.conn, 0);
    exchange(w);
    assert_true(r->closed);
    assert_int_equal(r->reset, NGHTTP2_INTERNAL_ERROR);
    assert_false(seen.aborted); /* it had given the request back */
}

static void test_paused_body_is_kept_then_handed_over(void **state)
{
    struct world *w = *state;
    seen.pause_first = 1;
    nghttp2_data_provider dp = {.source.ptr = "0123456789", .read_callback = body_read};
    int32_t id = request(w, "POST", "/p", NULL, 0, &dp);
    exchange(w);
    /* One piece taken, then paused: the end of the body is not handed over. */
    assert_int_equal(seen.nbody, 10);
    assert_false(seen.ended);
    seen.answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    http_conn_pause_body(seen.conn, 0);
    exchange(w);
    assert_true(seen.ended);
    assert_int_equal(reply_of(w, id)->status, 200);
}

static void test_connect_and_bad_path_are_answered_here(void **state)
{
    struct world *w = *state;
    nghttp2_nv nv[] = {NV(":method", "CONNECT"), NV(":authority", "example.test:443")};
    int32_t id = nghttp2_submit_request(w->cli, NULL, nv, 2, NULL, NULL);
    int32_t bad = request(w, "GET", "/a#b", NULL, 0, NULL);
    exchange(w);
    assert_int_equal(reply_of(w, id)->status, 501);
    assert_int_equal(reply_of(w, bad)->status, 400);
    assert_string_equal(seen.method, ""); /* the handler saw neither */
}

/* The handler answers the request on c (held until now). */
static void answer(struct http_conn *c)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    http_conn_send(c, ok, sizeof(ok) - 1);
    http_conn_set_data(c, NULL);
    http_conn_response_done(c, 1);
}

/* How many more connections the address could open now (each taken, then given back). */
static int room(struct http_climits *cl, const char *ip)
{
    int n = 0;
    while (n < 100 && http_climits_conn_open(cl, ip))
        n++;
    for (int i = 0; i < n; i++)
        http_climits_conn_close(cl, ip);
    return n;
}

/* A session whose server has per-address limits cl, on a connection counted at accept. */
static void limit_session(struct world *w, struct http_climits *cl)
{
    assert_int_equal(http_climits_conn_open(cl, "127.0.0.1"), 1);
    h2_session_free(w->c->h2);
    w->srv->lim.climits = cl;
    w->c->counted = 1;
    w->c->h2 = h2_session_new(w->c, w->loop, &ops, NULL, &w->srv->lim, 1);
}

/* Ends the connection: its streams' slots, then its own, are given back. */
static void unlimit_session(struct world *w, struct http_climits *cl)
{
    h2_session_free(w->c->h2);
    w->c->h2 = NULL;
    assert_int_equal(room(cl, "127.0.0.1"), 2); /* all but the connection's own */
    http_climits_conn_close(cl, "127.0.0.1");
    w->c->counted = 0;
    w->srv->lim.climits = NULL;
    assert_int_equal(room(cl, "127.0.0.1"), 3);
    http_climits_free(cl);
}

static void test_streams_take_the_address_slots(void **state)
{
    struct world *w = *state;
    struct http_climits *cl = http_climits_new(3, 0, 0);
    limit_session(w, cl);
    int32_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = request(w, "GET", "/held", NULL, 0, NULL);
    exchange(w);
    /* Three handed over (the first on the connection's own slot, two on slots of their own), the
     * others answered 503 as an HTTP/1.1 connection past the limit is. */
    assert_int_equal(seen.nconns, 3);
    for (int i = 3; i < 5; i++) {
        struct reply *r = reply_of(w, ids[i]);
        assert_int_equal(r->status, 503);
        assert_non_null(strstr(r->headers, "retry-after: 1\n"));
        assert_int_equal(r->nbody, 39);
        assert_memory_equal(r->body, "too many connections from your address\n", 39);
    }
    assert_int_equal(room(cl, "127.0.0.1"), 0);
    assert_int_equal(room(cl, "127.0.0.2"), 3); /* another address is not touched */
    /* One answered: its slot is back, and the next stream takes it. */
    answer(seen.conns[0]);
    exchange(w);
    assert_int_equal(reply_of(w, ids[0])->status, 200);
    assert_int_equal(room(cl, "127.0.0.1"), 1);
    request(w, "GET", "/held", NULL, 0, NULL);
    exchange(w);
    assert_int_equal(seen.nconns, 4);
    assert_int_equal(room(cl, "127.0.0.1"), 0);
    /* The client resets one: its slot is back. */
    nghttp2_submit_rst_stream(w->cli, NGHTTP2_FLAG_NONE, ids[1], NGHTTP2_CANCEL);
    exchange(w);
    assert_true(seen.aborted);
    assert_int_equal(room(cl, "127.0.0.1"), 1);
    /* The connection ends with two streams open (ids[2] and the last). */
    unlimit_session(w, cl);
}

static void test_streams_take_request_tokens(void **state)
{
    struct world *w = *state;
    /* 2 slots, 3 tokens (1 a second: the loop's clock does not move here). */
    struct http_climits *cl = http_climits_new(2, 1, 3);
    limit_session(w, cl);
    int32_t a = request(w, "GET", "/a", NULL, 0, NULL), b = request(w, "GET", "/b", NULL, 0, NULL);
    int32_t c = request(w, "GET", "/c", NULL, 0, NULL);
    exchange(w);
    assert_int_equal(seen.nconns, 2);
    assert_int_equal(reply_of(w, c)->status, 503); /* no slot: no token taken either */
    answer(seen.conns[0]);
    answer(seen.conns[1]);
    exchange(w);
    assert_int_equal(reply_of(w, a)->status, 200);
    assert_int_equal(reply_of(w, b)->status, 200);
    int32_t d = request(w, "GET", "/d", NULL, 0, NULL), e = request(w, "GET", "/e", NULL, 0, NULL);
    exchange(w);
    assert_int_equal(seen.nconns, 3); /* the third token */
    struct reply *r = reply_of(w, e); /* none left: 429, and its slot given back */
    assert_int_equal(r->status, 429);
    assert_non_null(strstr(r->headers, "retry-after: 1\n"));
    assert_int_equal(room(cl, "127.0.0.1"), 1);
    answer(seen.conns[2]);
    exchange(w);
    assert_int_equal(reply_of(w, d)->status, 200);
    assert_int_equal(room(cl, "127.0.0.1"), 1);
    h2_session_free(w->c->h2);
    w->c->h2 = NULL;
    http_climits_conn_close(cl, "127.0.0.1");
    w->c->counted = 0;
    w->srv->lim.climits = NULL;
    assert_int_equal(room(cl, "127.0.0.1"), 2);
    http_climits_free(cl);
}

/* A stream answered here holds no server connection: it leaves the max_conns budget at once, even
 * while its answer waits for a window the client keeps shut (counted, such answers let one address
 * take a worker's budget within its max_conns_per_ip). */
static void test_answered_streams_leave_the_budget(void **state)
{
    struct world *w = *state;
    struct http_climits *cl = http_climits_new(1, 0, 0);
    limit_session(w, cl);
    nghttp2_settings_entry shut = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0};
    nghttp2_submit_settings(w->cli, NGHTTP2_FLAG_NONE, &shut, 1);
    int32_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = request(w, "GET", "/held", NULL, 0, NULL);
    exchange(w);
    assert_int_equal(seen.nconns, 1); /* the first, on the connection's own slot */
    for (int i = 1; i < 3; i++) {
        assert_int_equal(reply_of(w, ids[i])->status, 503);
        assert_int_equal(reply_of(w, ids[i])->closed, 0); /* its body waits for the window */
    }
    assert_int_equal(w->srv->nstreams, 1); /* the 503s are not in the budget */
    assert_int_equal(h2_session_streams(w->c->h2), 3);
    h2_session_free(w->c->h2);
    w->c->h2 = NULL;
    assert_int_equal(w->srv->nstreams, 0);
    http_climits_conn_close(cl, "127.0.0.1");
    w->c->counted = 0;
    w->srv->lim.climits = NULL;
    assert_int_equal(room(cl, "127.0.0.1"), 1);
    http_climits_free(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_head_and_chunked_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_bodies_length_and_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_response_has_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_response_resets_the_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paused_body_is_kept_then_handed_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_and_bad_path_are_answered_here, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams_take_the_address_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams_take_request_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answered_streams_leave_the_budget, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
