/* test_server.c — unit tests for the rule of src/http/server.h that a call never frees its
 * caller: a send to a client that has gone away only marks the connection, and on_abort comes
 * from a deferred call after the current callback returns; resuming a paused body hands the body
 * over after the call, not inside it. A real server on a loopback socket, one client socket;
 * every loop_run is bounded by a watchdog timer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "http/server.h"

#define WATCHDOG_MS 5000

struct fixture {
    struct loop *loop;
    struct http_server *srv;
    int port;
    int client;
    struct http_conn *conn; /* the current request's, from on_request */
    int requests, bodies, body_ends, aborts;
    size_t body_bytes;
    int pause_on_request;
    int stop_on; /* 1: stop the loop at on_request, 2: at on_body */
    int watchdog_fired;
};

static void on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    struct fixture *f = ctx;
    f->conn = c;
    f->requests++;
    if (f->pause_on_request)
        http_conn_pause_body(c, 1);
    if (f->stop_on == 1)
        loop_stop(f->loop);
}

static void on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    struct fixture *f = ctx;
    f->bodies++;
    f->body_bytes += n;
    if (f->stop_on == 2)
        loop_stop(f->loop);
}

static void on_body_end(void *ctx, struct http_conn *c)
{
    struct fixture *f = ctx;
    f->body_ends++;
}

static void on_abort(void *ctx, struct http_conn *c)
{
    struct fixture *f = ctx;
    f->aborts++;
}

static const struct http_server_ops ops = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_abort = on_abort,
};

static void on_watchdog(struct loop *loop, struct loop_timer *t)
{
    struct fixture *f = t->data;
    f->watchdog_fired = 1;
    loop_stop(loop);
}

static void on_stop(struct loop *loop, struct loop_timer *t) { loop_stop(loop); }

/* Runs the loop until a callback stops it (or the watchdog does, which fails the test). */
static void run_until_stopped(struct fixture *f)
{
    struct loop_timer wd = {.fn = on_watchdog, .data = f};
    loop_timer_arm(f->loop, &wd, WATCHDOG_MS);
    assert_int_equal(loop_run(f->loop), 0);
    loop_timer_cancel(f->loop, &wd);
    assert_false(f->watchdog_fired);
}

/* Runs one loop iteration: its callbacks, then its deferred calls. */
static void run_once(struct fixture *f)
{
    struct loop_timer t = {.fn = on_stop};
    loop_timer_arm(f->loop, &t, 0);
    assert_int_equal(loop_run(f->loop), 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = loop_create(0);
    assert_non_null(f->loop);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    f->port = ntohs(a.sin_port);
    f->srv = http_server_create(f->loop, lfd, &ops, f, NULL);
    assert_non_null(f->srv);
    f->client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->client >= 0);
    assert_int_equal(connect(f->client, (struct sockaddr *)&a, sizeof(a)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->client >= 0)
        close(f->client);
    http_server_free(f->srv);
    loop_destroy(f->loop);
    free(f);
    return 0;
}

static void client_send(struct fixture *f, const char *s)
{
    assert_int_equal(send(f->client, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Resets the client's connection (RST, not FIN), so the server's next write fails. */
static void client_reset(struct fixture *f)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(f->client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(f->client);
    f->client = -1;
    usleep(20000); /* loopback delivers the RST at once; a margin all the same */
}

/* A send to a reset client returns 0 and leaves the request to its handler: on_abort comes once
 * the loop runs its deferred calls, exactly once, and the connection is gone then. */
static void test_failed_send_aborts_later(void **state)
{
    struct fixture *f = *state;
    f->stop_on = 1;
    client_send(f, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    run_until_stopped(f);
    assert_int_equal(f->requests, 1);
    assert_int_equal(f->body_ends, 1); /* no body: right after on_request */
    assert_int_equal(http_server_conns(f->srv), 1);
    client_reset(f);

    /* As a handler would from a backend's event: the first write meets the reset. */
    static char big[65536];
    assert_int_equal(http_conn_send(f->conn, "HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n", 42), 0);
    assert_int_equal(f->aborts, 0);
    assert_int_equal(http_conn_send(f->conn, big, sizeof(big)), 0); /* dropped: no more I/O */
    http_conn_cork(f->conn);
    http_conn_uncork(f->conn);
    assert_int_equal(f->aborts, 0);
    assert_int_equal(http_server_conns(f->srv), 1);

    run_once(f);
    assert_int_equal(f->aborts, 1);
    assert_int_equal(http_server_conns(f->srv), 0);
    run_once(f);
    assert_int_equal(f->aborts, 1);
}

/* A handler that ends its response after a failed send owns nothing any more: no on_abort. */
static void test_failed_send_then_done_no_abort(void **state)
{
    struct fixture *f = *state;
    f->stop_on = 1;
    client_send(f, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    run_until_stopped(f);
    client_reset(f);
    assert_int_equal(http_conn_send(f->conn, "HTTP/1.1 204 No Content\r\n\r\n", 27), 0);
    http_conn_response_done(f->conn, 1);
    assert_int_equal(f->aborts, 0);
    run_once(f);
    assert_int_equal(f->aborts, 0);
    assert_int_equal(http_server_conns(f->srv), 0);
}

/* Resuming a paused body does not call on_body inside http_conn_pause_body: the bytes read
 * meanwhile come after the call, from the loop. */
static void test_resume_body_is_deferred(void **state)
{
    struct fixture *f = *state;
    f->stop_on = 1;
    f->pause_on_request = 1;
    client_send(f, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel");
    run_until_stopped(f);
    assert_int_equal(f->requests, 1);
    /* The first body bytes came with the head, and on_request paused the body before them. */
    assert_int_equal(f->bodies, 0);
    client_send(f, "lo");
    f->stop_on = 2;
    http_conn_pause_body(f->conn, 0);
    assert_int_equal(f->bodies, 0);
    run_until_stopped(f);
    assert_true(f->bodies >= 1);
    run_once(f); /* the rest, if it came in a second read */
    assert_int_equal(f->body_bytes, 5);
    assert_int_equal(f->body_ends, 1);
    assert_int_equal(f->aborts, 0);
    http_conn_send(f->conn, "HTTP/1.1 204 No Content\r\n\r\n", 27);
    http_conn_response_done(f->conn, 1);
    char buf[64];
    ssize_t n = recv(f->client, buf, sizeof(buf), 0);
    assert_int_equal(n, 27);
    assert_memory_equal(buf, "HTTP/1.1 204 No Content\r\n\r\n", 27);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_failed_send_aborts_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_send_then_done_no_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_body_is_deferred, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
