/* test_client.c — unit tests for the HTTP client (src/http/client.h), over real sockets.
 *
 * A scripted server runs on a thread behind a loopback listener: it accepts one connection, reads
 * the request (head and Content-Length body), writes a canned answer (whole, or a few bytes at a
 * time), then closes or holds the connection open until the test says stop. The blocking driver
 * (http_client_fetch) and the loop driver (http_client_watch) are run against it: Content-Length,
 * chunked (one byte per write), close-delimited and HEAD responses, 1xx skipped, malformed heads
 * and bodies, heads and bodies over their limits, a connection cut short, a refused connection,
 * timeouts while waiting for the answer and while sending, a request field that would break the
 * framing, and a watched client freed before it completed. The reader alone is also fed one byte
 * at a time. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/net.h"
#include "http/client.h"

#define BOUND_MS 5000 /* the longest any wait in this file may take */

struct server {
    int lfd;
    struct net_addr addr;
    pthread_t thread;
    int stop[2]; /* a byte on stop[1] ends a held connection */
    /* the script */
    const char *resp;
    size_t resp_len;
    size_t drip; /* bytes per write (0: all at once) */
    int hold;    /* keep the connection open after answering, until stop */
    int no_read; /* never read the request (hold implied) */
    /* what it saw */
    char req[4096];
    size_t reqlen;
};

static int wait_fd(int fd, short events, int ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    return r > 0;
}

/* Reads the request head, then the Content-Length body it announces. */
static void read_request(struct server *s, int fd)
{
    size_t want = 0;
    while (s->reqlen < sizeof(s->req) - 1 && (!want || s->reqlen < want)) {
        if (!wait_fd(fd, POLLIN, BOUND_MS))
            return;
        ssize_t n = recv(fd, s->req + s->reqlen, sizeof(s->req) - 1 - s->reqlen, 0);
        if (n <= 0)
            return;
        s->reqlen += (size_t)n;
        s->req[s->reqlen] = '\0';
        char *end = strstr(s->req, "\r\n\r\n");
        if (end && !want) {
            char *cl = strstr(s->req, "Content-Length: ");
            want = (size_t)(end + 4 - s->req) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
        }
    }
}

static void *serve(void *arg)
{
    struct server *s = arg;
    if (!wait_fd(s->lfd, POLLIN, BOUND_MS))
        return NULL;
    int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC); /* blocking */
    if (fd < 0)
        return NULL;
    if (!s->no_read)
        read_request(s, fd);
    for (size_t off = 0; s->resp && off < s->resp_len;) {
        size_t n = s->drip && s->drip < s->resp_len - off ? s->drip : s->resp_len - off;
        if (send(fd, s->resp + off, n, MSG_NOSIGNAL) != (ssize_t)n)
            break;
        off += n;
        if (s->drip)
            usleep(1000); /* separate segments */
    }
    if (s->hold || s->no_read)
        wait_fd(s->stop[0], POLLIN, BOUND_MS);
    close(fd);
    return NULL;
}

/* Starts a server answering resp (NUL-terminated; NULL: no answer). */
static void server_start(struct server *s, const char *resp, size_t drip, int hold)
{
    memset(s, 0, sizeof(*s));
    s->resp = resp;
    s->resp_len = resp ? strlen(resp) : 0;
    s->drip = drip;
    s->hold = hold;
    assert_int_equal(net_parse_addr("127.0.0.1:0", &s->addr), 0);
    s->lfd = net_listen(&s->addr, 0, 4);
    assert_true(s->lfd >= 0);
    s->addr.len = sizeof(s->addr.ss);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&s->addr.ss, &s->addr.len), 0);
    assert_int_equal(pipe(s->stop), 0);
}

static void server_run(struct server *s) { assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0); }

static void server_stop(struct server *s)
{
    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    close(s->stop[0]);
    close(s->stop[1]);
    close(s->lfd);
}

static const struct http_client_header ua[] = {{"User-Agent", "t"}};

static struct http_client_req get_req(const char *method)
{
    return (struct http_client_req){.method = method, .target = "/x?y=1", .host = "h:1", .headers = ua, .nheaders = 1};
}

/* Runs one blocking exchange against a server with the given script; returns fetch's result. */
static int fetch(struct server *s, struct http_client *c, const struct http_client_req *req,
                 const struct http_client_opts *o, unsigned timeout_ms)
{
    server_run(s);
    int rc = http_client_fetch(c, &s->addr, req, o, timeout_ms);
    server_stop(s);
    return rc;
}

static void assert_body(const struct http_client *c, const char *want)
{
    assert_int_equal(buf_used(&c->body), strlen(want));
    assert_memory_equal(buf_head(&c->body), want, strlen(want));
}

static uint64_t now_ms(void) { return loop_clock_us() / 1000; }

/* Content-Length: the response is complete without the close (the server holds on), and the
 * request went out exactly as documented. */
static void test_content_length(void **state)
{
    struct server s;
    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.error, HTTP_CLIENT_OK);
    assert_int_equal(c.phase, HTTP_CLIENT_FINISHED);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.fd, -1);
    assert_body(&c, "hello");
    const struct http_header *x = http_find_header(&c.head, "x-a");
    assert_non_null(x);
    assert_int_equal(x->value.n, 1);
    assert_memory_equal(x->value.p, "b", 1);
    assert_string_equal(s.req, "GET /x?y=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: t\r\nConnection: close\r\n\r\n");
    http_client_free(&c);
}

/* A body is sent with its Content-Length (an empty one too). */
static void test_request_body(void **state)
{
    struct server s;
    server_start(&s, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("POST");
    req.body = "{\"a\":1}";
    req.body_len = 7;
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 201);
    assert_body(&c, "");
    assert_string_equal(s.req, "POST /x?y=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: t\r\nConnection: close\r\n"
                               "Content-Length: 7\r\n\r\n{\"a\":1}");
    http_client_free(&c);

    server_start(&s, "HTTP/1.1 204 No Content\r\n\r\n", 0, 1);
    req.body = "";
    req.body_len = 0;
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 204);
    assert_string_equal(
        s.req, "POST /x?y=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    http_client_free(&c);
}

static const char chunked_resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   "5;ext=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";

/* Chunked, one byte per write: decoded, extensions and trailers dropped, complete without the
 * close. */
static void test_chunked(void **state)
{
    struct server s;
    server_start(&s, chunked_resp, 1, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 200);
    assert_body(&c, "hello world");
    http_client_free(&c);
}

/* No Content-Length and no chunked: the body runs to the close. */
static void test_close_delimited(void **state)
{
    struct server s;
    server_start(&s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 3, 0);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 200);
    assert_int_equal(c.head.body, HTTP_BODY_EOF);
    assert_body(&c, "until the end");
    http_client_free(&c);
}

/* A HEAD response has no body whatever its Content-Length; interim 1xx heads are skipped. */
static void test_head_and_interim(void **state)
{
    struct server s;
    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("HEAD");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 200);
    assert_body(&c, "");
    http_client_free(&c);

    server_start(&s,
                 "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 7, 1);
    req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), 0);
    assert_int_equal(c.status, 200);
    assert_body(&c, "ok");
    http_client_free(&c);
}

/* head_only: done at the head, the body is not waited for. */
static void test_head_only(void **state)
{
    struct server s;
    server_start(&s, "HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\npart", 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    struct http_client_opts o = {.head_only = 1};
    assert_int_equal(fetch(&s, &c, &req, &o, BOUND_MS), 0);
    assert_int_equal(c.status, 503);
    assert_body(&c, "");
    http_client_free(&c);
}

static void expect_error(const char *resp, int hold, const struct http_client_opts *o, enum http_client_error e,
                         enum http_client_phase phase)
{
    struct server s;
    server_start(&s, resp, 0, hold);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    uint64_t t0 = now_ms();
    assert_int_equal(fetch(&s, &c, &req, o, BOUND_MS), HTTP_ERROR);
    if (c.error != e || c.phase != phase)
        fail_msg("answer %.40s: error %d phase %d, want %d %d", resp ? resp : "(none)", c.error, c.phase, e, phase);
    assert_true(now_ms() - t0 < BOUND_MS / 2); /* found at once, not at the deadline */
    assert_int_equal(c.fd, -1);
    http_client_free(&c);
}

/* Malformed answers fail with the parser's reason, at once (the server holds the connection). */
static void test_malformed(void **state)
{
    expect_error("HTTP/1.1 200 OK\nContent-Length: 0\n\n", 1, NULL, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    expect_error("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 1, NULL,
                 HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    expect_error("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", 1, NULL, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    expect_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 1, NULL, HTTP_CLIENT_EMALFORMED,
                 HTTP_CLIENT_BODY);
    expect_error("SSH-2.0-OpenSSH\r\n\r\n", 1, NULL, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);

    struct server s;
    server_start(&s, "HTTP/1.1 2OO OK\r\n\r\n", 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, NULL, BOUND_MS), HTTP_ERROR);
    assert_string_equal(c.detail, "invalid status code");
    http_client_free(&c);
}

/* The connection ends before the framing says the response is complete. */
static void test_cut_short(void **state)
{
    expect_error(NULL, 0, NULL, HTTP_CLIENT_ECLOSED, HTTP_CLIENT_HEAD);
    expect_error("HTTP/1.1 200 OK\r\nContent-Le", 0, NULL, HTTP_CLIENT_ECLOSED, HTTP_CLIENT_HEAD);
    expect_error("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, NULL, HTTP_CLIENT_ECLOSED, HTTP_CLIENT_BODY);
    expect_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 0, NULL, HTTP_CLIENT_ECLOSED,
                 HTTP_CLIENT_BODY);
}

static char *repeat(const char *head, char ch, size_t n, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    memset(s + hl, ch, n);
    memcpy(s + hl + n, tail, tl + 1);
    return s;
}

/* Heads over max_head (the default 16384 too, and interim heads counting towards it) and bodies
 * over max_body fail at once, whatever the framing. */
static void test_too_large(void **state)
{
    struct http_client_opts small = {.max_head = 1024, .max_body = 100};
    char *big = repeat("HTTP/1.1 200 OK\r\nX-Big: ", 'a', 2000, "\r\n\r\n");
    expect_error(big, 1, &small, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    free(big);
    big = repeat("HTTP/1.1 200 OK\r\nX-Big: ", 'a', 17000, "\r\n\r\n");
    expect_error(big, 1, NULL, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    free(big);
    /* 30 interim heads of 40 bytes: more than 1024 bytes of heads in all. */
    struct buf b = {0};
    for (int i = 0; i < 30; i++)
        buf_puts(&b, "HTTP/1.1 100 Continue\r\nX-Pad: 123456\r\n\r\n");
    buf_puts(&b, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect_error(buf_cstr(&b), 1, &small, HTTP_CLIENT_EMALFORMED, HTTP_CLIENT_HEAD);
    buf_free(&b);

    /* A Content-Length over the cap: refused before any body byte arrives. */
    expect_error("HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", 1, &small, HTTP_CLIENT_ETOOLARGE, HTTP_CLIENT_HEAD);
    char *body = repeat("HTTP/1.1 200 OK\r\n\r\n", 'b', 101, "");
    expect_error(body, 1, &small, HTTP_CLIENT_ETOOLARGE, HTTP_CLIENT_BODY);
    free(body);
    body = repeat("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 'c', 101, "\r\n0\r\n\r\n");
    expect_error(body, 1, &small, HTTP_CLIENT_ETOOLARGE, HTTP_CLIENT_BODY);
    free(body);

    /* Exactly at the cap is fine. */
    struct server s;
    body = repeat("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 'd', 100, "");
    server_start(&s, body, 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(fetch(&s, &c, &req, &small, BOUND_MS), 0);
    assert_int_equal(buf_used(&c.body), 100);
    http_client_free(&c);
    free(body);
}

/* A server that accepts and never answers: ETIMEOUT while waiting for the head, at the deadline. */
static void test_timeout_waiting(void **state)
{
    struct server s;
    server_start(&s, NULL, 0, 1);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    uint64_t t0 = now_ms();
    assert_int_equal(fetch(&s, &c, &req, NULL, 100), HTTP_ERROR);
    uint64_t took = now_ms() - t0;
    assert_int_equal(c.error, HTTP_CLIENT_ETIMEOUT);
    assert_int_equal(c.phase, HTTP_CLIENT_HEAD);
    assert_true(took >= 100 && took < 2000);
    assert_int_equal(c.fd, -1);
    http_client_free(&c);

    /* Half an answer then silence: still the deadline, now in the body. */
    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, 1);
    assert_int_equal(fetch(&s, &c, &req, NULL, 100), HTTP_ERROR);
    assert_int_equal(c.error, HTTP_CLIENT_ETIMEOUT);
    assert_int_equal(c.phase, HTTP_CLIENT_BODY);
    http_client_free(&c);
}

/* A server that never reads: the request (32 MiB, more than the socket buffers hold) cannot be
 * written, ETIMEOUT while sending. */
static void test_timeout_sending(void **state)
{
    struct server s;
    server_start(&s, NULL, 0, 1);
    s.no_read = 1;
    size_t n = 32u << 20;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'z', n);
    struct http_client c;
    struct http_client_req req = get_req("POST");
    req.body = big;
    req.body_len = n;
    assert_int_equal(fetch(&s, &c, &req, NULL, 200), HTTP_ERROR);
    assert_int_equal(c.error, HTTP_CLIENT_ETIMEOUT);
    assert_int_equal(c.phase, HTTP_CLIENT_SENDING);
    http_client_free(&c);
    free(big);
}

/* Nothing listens: ECONNECT with the socket's error. */
static void test_refused(void **state)
{
    struct server s;
    server_start(&s, NULL, 0, 0);
    close(s.lfd);
    close(s.stop[0]);
    close(s.stop[1]);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(http_client_fetch(&c, &s.addr, &req, NULL, BOUND_MS), HTTP_ERROR);
    assert_int_equal(c.error, HTTP_CLIENT_ECONNECT);
    assert_int_equal(c.err, ECONNREFUSED);
    assert_int_equal(c.phase, HTTP_CLIENT_CONNECTING);
    http_client_free(&c);
}

/* A field that would end a line or the head is refused before any connection is made. */
static void test_bad_request_fields(void **state)
{
    struct net_addr a;
    assert_int_equal(net_parse_addr("127.0.0.1:1", &a), 0);
    const struct http_client_header inj[] = {{"Authorization", "Bearer x\r\nX-Admin: 1"}};
    const struct http_client_header badname[] = {{"Bad Name", "v"}};
    struct http_client_req reqs[] = {
        {.method = "GET", .target = "/a\r\nX: y", .host = "h"},
        {.method = "GET", .target = "/a b", .host = "h"},
        {.method = "GET", .target = "", .host = "h"},
        {.method = "G T", .target = "/", .host = "h"},
        {.method = "GET", .target = "/", .host = "h\n"},
        {.method = "GET", .target = "/", .host = "h", .headers = inj, .nheaders = 1},
        {.method = "GET", .target = "/", .host = "h", .headers = badname, .nheaders = 1},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct http_client c;
        assert_int_equal(http_client_start(&c, &a, &reqs[i], NULL), HTTP_ERROR);
        assert_int_equal(c.error, HTTP_CLIENT_EREQUEST);
        assert_non_null(c.detail);
        assert_int_equal(c.fd, -1);
        http_client_free(&c);
    }
}

/* ---- the loop driver ---- */

struct run {
    int calls;
    enum http_client_error error;
    enum http_client_phase phase;
    int status;
    char body[64];
    struct loop *loop;
    struct loop_timer watchdog;
};

static void on_done(struct http_client *c, void *data)
{
    struct run *r = data;
    r->calls++;
    r->error = c->error;
    r->phase = c->phase;
    r->status = c->status;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)buf_used(&c->body), buf_head(&c->body));
    assert_int_equal(c->fd, -1);
    http_client_free(c);
    free(c); /* the callback may free the client's memory */
    loop_stop(r->loop);
}

static void on_watchdog(struct loop *loop, struct loop_timer *t) { loop_stop(loop); }

/* Runs one exchange on a loop; returns the callback's view. */
static struct run watch_one(struct server *s, unsigned timeout_ms)
{
    struct loop *loop = loop_create(64);
    assert_non_null(loop);
    struct run r = {.loop = loop};
    r.watchdog = (struct loop_timer){.fn = on_watchdog, .data = loop};
    loop_timer_arm(loop, &r.watchdog, BOUND_MS);
    server_run(s);
    struct http_client *c = malloc(sizeof(*c));
    assert_non_null(c);
    struct http_client_req req = get_req("GET");
    assert_int_equal(http_client_start(c, &s->addr, &req, NULL), 0);
    assert_int_equal(http_client_watch(c, loop, timeout_ms, on_done, &r), 0);
    assert_int_equal(loop_run(loop), 0);
    loop_timer_cancel(loop, &r.watchdog);
    server_stop(s);
    loop_destroy(loop);
    return r;
}

static void test_loop_driver(void **state)
{
    struct server s;
    server_start(&s, chunked_resp, 2, 1);
    struct run r = watch_one(&s, BOUND_MS);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, HTTP_CLIENT_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");

    server_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", 0, 1);
    r = watch_one(&s, BOUND_MS);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, HTTP_CLIENT_EMALFORMED);

    server_start(&s, NULL, 0, 1);
    r = watch_one(&s, 50);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.error, HTTP_CLIENT_ETIMEOUT);
    assert_int_equal(r.phase, HTTP_CLIENT_HEAD);
}

static void on_never(struct http_client *c, void *data) { fail_msg("callback after cancellation"); }

/* Freed before it completed: the callback never comes, the descriptor and timer are gone. */
static void test_loop_cancel(void **state)
{
    struct loop *loop = loop_create(64);
    struct server s;
    server_start(&s, NULL, 0, 1);
    server_run(&s);
    struct http_client c;
    struct http_client_req req = get_req("GET");
    assert_int_equal(http_client_start(&c, &s.addr, &req, NULL), 0);
    assert_int_equal(http_client_watch(&c, loop, 10, on_never, NULL), 0);
    http_client_free(&c);
    assert_int_equal(c.fd, -1);
    struct loop_timer wd = {.fn = on_watchdog, .data = loop};
    loop_timer_arm(loop, &wd, 50); /* past the client's timeout: nothing fires */
    assert_int_equal(loop_run(loop), 0);
    server_stop(&s);
    loop_destroy(loop);
}

/* ---- the reader alone ---- */

/* Whole or one byte at a time, the outcome is the same. */
static void test_feed_bytewise(void **state)
{
    const char *resps[] = {chunked_resp,
                           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcXYZ"};
    const char *bodies[] = {"hello world", "abc"};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(resps[i]);
        struct http_client whole, bytes;
        http_client_init(&whole, HTTP_GET, NULL);
        assert_int_equal(http_client_feed(&whole, resps[i], n), HTTP_CLIENT_DONE);
        http_client_init(&bytes, HTTP_GET, NULL);
        int rc = HTTP_AGAIN;
        size_t k = 0;
        for (; k < n && rc == HTTP_AGAIN; k++)
            rc = http_client_feed(&bytes, resps[i] + k, 1);
        assert_int_equal(rc, HTTP_CLIENT_DONE);
        for (; k < n; k++) /* bytes after the response are ignored */
            assert_int_equal(http_client_feed(&bytes, resps[i] + k, 1), HTTP_CLIENT_DONE);
        assert_int_equal(http_client_eof(&bytes), HTTP_CLIENT_DONE);
        assert_body(&whole, bodies[i]);
        assert_body(&bytes, bodies[i]);
        assert_int_equal(whole.status, 200);
        assert_int_equal(bytes.status, 200);
        http_client_free(&whole);
        http_client_free(&bytes);
    }
}

/* ---- the reader with a streaming sink (as the balancer's relay.c uses it) ---- */

struct sink_rec {
    int interim[8], ninterim; /* the first 8 interim statuses; ninterim counts them all */
    int status;               /* of the final head */
    size_t head_len;          /* bytes of the final head */
    struct buf body;          /* body pieces, concatenated */
    int pieces;               /* on_body calls */
    int pause_every;          /* on_body returns 0 on every such call (0 = never) */
    int stop_at_head;         /* on_head returns -1 */
    int stop_interim;         /* on_interim returns -1 */
};

static int rec_interim(void *ctx, const struct http_head *h)
{
    struct sink_rec *r = ctx;
    if (r->ninterim < 8)
        r->interim[r->ninterim] = h->status;
    r->ninterim++;
    return r->stop_interim ? -1 : 1;
}

static int rec_head(void *ctx, const struct http_head *h, const char *p, size_t len)
{
    struct sink_rec *r = ctx;
    r->status = h->status;
    r->head_len = len;
    assert_memory_equal(p, "HTTP/1.", 7); /* the head's own bytes, still in the input */
    return r->stop_at_head ? -1 : 1;
}

static int rec_body(void *ctx, const char *p, size_t n)
{
    struct sink_rec *r = ctx;
    assert_true(n > 0); /* never an empty piece */
    buf_append(&r->body, p, n);
    r->pieces++;
    return r->pause_every && r->pieces % r->pause_every == 0 ? 0 : 1;
}

static const struct http_reader_sink rec_sink = {.on_interim = rec_interim, .on_head = rec_head, .on_body = rec_body};

/* Runs the reader over s (all of it at once), resuming after every pause; returns the outcome. */
static int run_all(struct http_reader *rd, struct buf *in, struct sink_rec *r, int *pauses)
{
    int rc;
    for (int i = 0; i < 1000; i++) {
        rc = http_reader_run(rd, in, &rec_sink, r);
        if (rc != HTTP_READER_PAUSED)
            return rc;
        ++*pauses;
    }
    fail_msg("the reader never finished");
    return rc;
}

/* Pausing after every piece loses and repeats nothing; the bytes after the response stay. */
static void test_reader_pause(void **state)
{
    const char *resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n4;ext=1\r\ndefg\r\n2\r\nhi\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    struct http_reader rd;
    struct sink_rec r = {.pause_every = 1};
    struct buf in = {0};
    buf_puts(&in, resp);
    http_reader_init(&rd, HTTP_GET, 0);
    int pauses = 0;
    assert_int_equal(run_all(&rd, &in, &r, &pauses), HTTP_READER_DONE);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.pieces, 3);
    /* After "hi" the body is not known to be complete (the last chunk is still to be read), so
     * that piece pauses too; the run after it reads the end. */
    assert_int_equal(pauses, 3);
    assert_int_equal(buf_used(&r.body), 9);
    assert_memory_equal(buf_head(&r.body), "abcdefghi", 9);
    assert_int_equal(buf_used(&in), 4);
    assert_memory_equal(buf_head(&in), "NEXT", 4);
    /* Over: later runs change nothing and say the same. */
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &r), HTTP_READER_DONE);
    assert_int_equal(buf_used(&in), 4);
    assert_int_equal(http_reader_eof(&rd), HTTP_READER_DONE);
    buf_free(&in);
    buf_free(&r.body);

    /* Content-Length, fed in two parts with a pause after the first piece. */
    struct sink_rec r2 = {.pause_every = 1};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &r2), HTTP_READER_PAUSED);
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &r2), HTTP_AGAIN);
    buf_puts(&in, "defXYZ");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &r2), HTTP_READER_DONE);
    assert_int_equal(buf_used(&r2.body), 6);
    assert_memory_equal(buf_head(&r2.body), "abcdef", 6);
    assert_int_equal(buf_used(&in), 3);
    buf_free(&in);
    buf_free(&r2.body);
}

/* Interim heads: each reaches on_interim (101 too, unless final_101); their bytes are capped. */
static void test_reader_interim(void **state)
{
    struct http_reader rd;
    struct buf in = {0};
    struct sink_rec r = {0};
    int pauses = 0;
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 204 No Content\r\n\r\n");
    assert_int_equal(run_all(&rd, &in, &r, &pauses), HTTP_READER_DONE);
    assert_int_equal(r.ninterim, 2);
    assert_int_equal(r.interim[0], 100);
    assert_int_equal(r.interim[1], 103);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.head_len, strlen("HTTP/1.1 204 No Content\r\n\r\n"));
    assert_int_equal(buf_used(&in), 0);
    buf_free(&in);

    /* 101: interim for the balancer (which never asks for an upgrade), final with final_101. */
    const char *sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n";
    struct sink_rec a = {0}, b = {0};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, sw);
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &a), HTTP_AGAIN);
    assert_int_equal(a.ninterim, 1);
    assert_int_equal(a.status, 0);
    buf_free(&in);
    http_reader_init(&rd, HTTP_GET, 0);
    rd.final_101 = 1;
    buf_puts(&in, sw);
    run_all(&rd, &in, &b, &pauses);
    assert_int_equal(b.ninterim, 0);
    assert_int_equal(b.status, 101);
    buf_free(&in);

    /* An endless stream of 100s ends once they pass max_head together. */
    struct sink_rec c = {0};
    http_reader_init(&rd, HTTP_GET, 256);
    int rc = HTTP_AGAIN;
    for (int i = 0; i < 100 && rc == HTTP_AGAIN; i++) {
        buf_puts(&in, "HTTP/1.1 100 Continue\r\n\r\n");
        rc = http_reader_run(&rd, &in, &rec_sink, &c);
    }
    /* Ten 25-byte heads fit in 256 bytes; the eleventh does not. */
    assert_int_equal(rc, HTTP_ERROR);
    assert_non_null(rd.error);
    assert_int_equal(c.ninterim, 10);
    assert_int_equal(c.status, 0);
    buf_free(&in);

    /* A sink that stops at an interim head ends the run there. */
    struct sink_rec d = {.stop_interim = 1};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &d), HTTP_READER_STOPPED);
    assert_int_equal(d.status, 0);
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &d), HTTP_READER_STOPPED);
    assert_int_equal(http_reader_eof(&rd), HTTP_ERROR);
    buf_free(&in);
}

/* Stopping at the head, errors, and what the end of the stream means in each state. */
static void test_reader_stop_error_eof(void **state)
{
    struct http_reader rd;
    struct buf in = {0};
    struct sink_rec r = {.stop_at_head = 1};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &r), HTTP_READER_STOPPED);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.pieces, 0);
    assert_int_equal(buf_used(&in), 5); /* the head is consumed, the body is not read */
    buf_free(&in);

    /* Close-delimited: the end of the stream completes it; a cut Content-Length body does not. */
    struct sink_rec e = {0};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\n\r\nto the end");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &e), HTTP_AGAIN);
    assert_int_equal(http_reader_eof(&rd), HTTP_READER_DONE);
    assert_int_equal(buf_used(&e.body), 10);
    buf_free(&in);
    buf_free(&e.body);
    struct sink_rec f = {0};
    http_reader_init(&rd, HTTP_GET, 0);
    assert_int_equal(http_reader_eof(&rd), HTTP_ERROR); /* nothing at all */
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &f), HTTP_AGAIN);
    assert_int_equal(http_reader_eof(&rd), HTTP_ERROR);
    buf_free(&in);
    buf_free(&f.body);

    /* HEAD: a Content-Length announces, no body follows. */
    struct sink_rec g = {0};
    http_reader_init(&rd, HTTP_HEAD, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &g), HTTP_READER_DONE);
    assert_int_equal(g.pieces, 0);
    buf_free(&in);

    /* Malformed head, malformed chunk size: ERROR with the reason; sticky. */
    struct sink_rec h = {0};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &h), HTTP_ERROR);
    assert_non_null(rd.error);
    assert_int_equal(h.status, 0);
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &h), HTTP_ERROR);
    buf_free(&in);
    struct sink_rec k = {0};
    http_reader_init(&rd, HTTP_GET, 0);
    buf_puts(&in, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n");
    assert_int_equal(http_reader_run(&rd, &in, &rec_sink, &k), HTTP_ERROR);
    assert_string_equal(rd.error, "malformed chunked body");
    assert_int_equal(buf_used(&k.body), 3);
    assert_int_equal(http_reader_eof(&rd), HTTP_ERROR);
    buf_free(&in);
    buf_free(&k.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_request_body),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_head_and_interim),
        cmocka_unit_test(test_head_only),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_cut_short),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_timeout_waiting),
        cmocka_unit_test(test_timeout_sending),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bad_request_fields),
        cmocka_unit_test(test_loop_driver),
        cmocka_unit_test(test_loop_cancel),
        cmocka_unit_test(test_feed_bytewise),
        cmocka_unit_test(test_reader_pause),
        cmocka_unit_test(test_reader_interim),
        cmocka_unit_test(test_reader_stop_error_eof),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
