/* test_upstream.c — unit tests for the balancer's backend connections (src/lb/upstream.h) that
 * need no backend: lb_upstream_flush's count of the bytes that reached the backend.
 *
 * That count decides what a failure means (proxy.c, relay.c): 0 lets the request move to another
 * server as it is queued ("nothing reached the backend"), more than 0 makes it a failure after
 * sending (early answer, replay buffer). A send that writes part of the queue and then fails in
 * the same flush (on loopback a backend that closed shows exactly this: the first send goes out
 * and the reset it provokes fails the next one) must count the part: else the queue's rest, a
 * request cut in the middle, is handed to another server as if it were a whole request.
 *
 * send() is scripted by this file: its definition here is the one upstream.c links to, so the
 * partial-write-then-error sequence happens deterministically. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "lb/upstream.h"

/* What the scripted send() does: the first call takes `first` bytes (at most what it is given),
 * every later call fails with `err` (or takes nothing with EAGAIN). Mutable and global because
 * send() has no context argument; only these tests touch it. */
static struct {
    size_t first;
    int err;
    int calls;
} script;

ssize_t send(int fd, const void *p, size_t n, int flags)
{
    (void)fd;
    (void)p;
    (void)flags;
    if (script.calls++ == 0)
        return (ssize_t)(n < script.first ? n : script.first);
    errno = script.err;
    return -1;
}

/* The server the upstream belongs to: /metrics counts its bytes sent. */
static struct lb_server server;

/* An upstream with `queued` bytes to write; no descriptor is needed (send is scripted). */
static void setup_upstream(struct lb_upstream *u, size_t queued, size_t first, int err)
{
    memset(u, 0, sizeof(*u));
    memset(&server, 0, sizeof(server));
    u->server = &server;
    u->fd = -1;
    u->state = LB_UP_ACTIVE;
    char *p = buf_reserve(&u->out, queued);
    memset(p, 'x', queued);
    buf_commit(&u->out, queued);
    script.first = first;
    script.err = err;
    script.calls = 0;
}

/* Regression: net_write's -errno dropped the count of what the same call had written before the
 * failure, so bytes_written stayed 0 after 300 bytes went out. */
static void test_flush_counts_bytes_before_failure(void **state)
{
    struct lb_upstream u;
    setup_upstream(&u, 1000, 300, ECONNRESET);
    assert_int_equal(lb_upstream_flush(&u), -1);
    assert_int_equal(script.calls, 2);
    assert_int_equal(u.bytes_written, 300);
    assert_int_equal(atomic_load(&server.bytes_sent), 300);
    assert_int_equal(buf_used(&u.out), 700);
    buf_free(&u.out);
}

/* The count adds up over flushes, and a full socket is no failure. */
static void test_flush_counts_partial_writes(void **state)
{
    struct lb_upstream u;
    setup_upstream(&u, 1000, 300, EAGAIN);
    assert_int_equal(lb_upstream_flush(&u), 0);
    assert_int_equal(u.bytes_written, 300);
    assert_int_equal(buf_used(&u.out), 700);
    script.first = 700;
    script.calls = 0;
    assert_int_equal(lb_upstream_flush(&u), 0);
    assert_int_equal(u.bytes_written, 1000);
    assert_int_equal(buf_used(&u.out), 0);
    buf_free(&u.out);
}

/* A failure before any byte: nothing counted (the request may move to another server whole). */
static void test_flush_failure_at_once(void **state)
{
    struct lb_upstream u;
    setup_upstream(&u, 1000, 0, EPIPE);
    script.calls = 1; /* the first call already fails */
    assert_int_equal(lb_upstream_flush(&u), -1);
    assert_int_equal(u.bytes_written, 0);
    assert_int_equal(buf_used(&u.out), 1000);
    buf_free(&u.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flush_counts_bytes_before_failure),
        cmocka_unit_test(test_flush_counts_partial_writes),
        cmocka_unit_test(test_flush_failure_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
