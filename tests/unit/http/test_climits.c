/* test_climits.c — unit tests for per-client-address limits (src/http/climits.h): connection
 * counting per address and the request-rate token bucket, driven with explicit now_ms values so
 * every refill is exact (times are chosen so that token counts are exact binary fractions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>

#include "http/climits.h"

static void test_off(void **state)
{
    struct http_climits *cl = http_climits_new(0, 0, 0);
    assert_false(http_climits_conn_limited(cl));
    assert_false(http_climits_rate_limited(cl));
    assert_false(http_climits_conn_limited(NULL));
    assert_false(http_climits_rate_limited(NULL));
    unsigned ra = 77;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
        assert_int_equal(http_climits_take(cl, "10.0.0.1", 5, &ra), 1);
    }
    assert_int_equal(ra, 77); /* untouched when allowed */
    http_climits_conn_close(cl, "10.0.0.1");
    http_climits_free(cl);
    http_climits_free(NULL);
}

static void test_conn_limit(void **state)
{
    struct http_climits *cl = http_climits_new(3, 0, 0);
    assert_true(http_climits_conn_limited(cl));
    assert_false(http_climits_rate_limited(cl));
    for (int i = 0; i < 3; i++)
        assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 0);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 0); /* refusals are not counted */
    /* Other addresses have their own count. */
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.2"), 1);
    assert_int_equal(http_climits_conn_open(cl, "::1"), 1);
    /* Closing one makes room for exactly one more. */
    http_climits_conn_close(cl, "10.0.0.1");
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 0);
    /* Closing all, then more closes than opens, never goes below zero. */
    for (int i = 0; i < 5; i++)
        http_climits_conn_close(cl, "10.0.0.1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 0);
    /* Closing an address never seen is harmless. */
    http_climits_conn_close(cl, "192.0.2.1");
    http_climits_free(cl);
}

/* Entries whose count dropped to zero are removed as their chain is visited; counting must not
 * be disturbed by that (many addresses, most of them idle). */
static void test_conn_many_addresses(void **state)
{
    struct http_climits *cl = http_climits_new(2, 0, 0);
    char ip[48];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20000; i++) {
            snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
            assert_int_equal(http_climits_conn_open(cl, ip), 1);
            if (i % 2)
                http_climits_conn_close(cl, ip);
        }
        /* Even addresses hold one connection (one more fits), odd ones none (two fit). */
        for (int i = 0; i < 20000; i++) {
            snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
            int held = i % 2 ? 0 : 1;
            for (int k = held; k < 2; k++)
                assert_int_equal(http_climits_conn_open(cl, ip), 1);
            assert_int_equal(http_climits_conn_open(cl, ip), 0);
            for (int k = 0; k < 2; k++)
                http_climits_conn_close(cl, ip);
        }
    }
    http_climits_free(cl);
}

struct opener {
    struct http_climits *cl;
    const char *ip;
    int refused;
};

static void *open_close(void *arg)
{
    struct opener *o = arg;
    for (int i = 0; i < 20000; i++) {
        if (http_climits_conn_open(o->cl, o->ip))
            http_climits_conn_close(o->cl, o->ip);
        else
            o->refused++;
    }
    return NULL;
}

/* Four threads open and close on one address, each holding at most one connection at a time:
 * with a limit of 4 nothing is ever refused, and the count is back to zero at the end. */
static void test_conn_threads(void **state)
{
    struct http_climits *cl = http_climits_new(4, 0, 0);
    struct opener o[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        o[i] = (struct opener){.cl = cl, .ip = "10.9.9.9"};
        assert_int_equal(pthread_create(&th[i], NULL, open_close, &o[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(o[i].refused, 0);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(http_climits_conn_open(cl, "10.9.9.9"), 1);
    assert_int_equal(http_climits_conn_open(cl, "10.9.9.9"), 0);
    http_climits_free(cl);
}

/* Takes a token at now and checks the outcome (and Retry-After when refused). */
static void expect_take(struct http_climits *cl, const char *ip, uint64_t now, int ok, unsigned retry)
{
    unsigned ra = 999;
    int got = http_climits_take(cl, ip, now, &ra);
    if (got != ok)
        fail_msg("take(%s, %llu) = %d, want %d", ip, (unsigned long long)now, got, ok);
    if (!ok && ra != retry)
        fail_msg("take(%s, %llu): Retry-After %u, want %u", ip, (unsigned long long)now, ra, retry);
    if (ok)
        assert_int_equal(ra, 999);
}

static void test_rate_bucket(void **state)
{
    /* 2 requests per second, bursts of 3: a token every 500 ms. */
    struct http_climits *cl = http_climits_new(0, 2, 3);
    assert_true(http_climits_rate_limited(cl));
    assert_false(http_climits_conn_limited(cl));
    const char *ip = "10.0.0.1";
    /* A new address starts with a full bucket. */
    expect_take(cl, ip, 1000, 1, 0);
    expect_take(cl, ip, 1000, 1, 0);
    expect_take(cl, ip, 1000, 1, 0);
    expect_take(cl, ip, 1000, 0, 1);
    expect_take(cl, ip, 1000, 0, 1); /* refusals take nothing */
    /* Half a token after 250 ms, a whole one after 500 ms. */
    expect_take(cl, ip, 1250, 0, 1);
    expect_take(cl, ip, 1500, 1, 0);
    expect_take(cl, ip, 1500, 0, 1);
    /* 1.5 tokens accumulate over 750 ms: one request, then half a token is left. */
    expect_take(cl, ip, 2250, 1, 0);
    expect_take(cl, ip, 2250, 0, 1);
    expect_take(cl, ip, 2500, 1, 0);
    /* A long pause refills only up to the burst. */
    expect_take(cl, ip, 60000, 1, 0);
    expect_take(cl, ip, 60000, 1, 0);
    expect_take(cl, ip, 60000, 1, 0);
    expect_take(cl, ip, 60000, 0, 1);
    /* Another address is independent. */
    expect_take(cl, "10.0.0.2", 60000, 1, 0);
    /* A clock that goes backwards adds nothing. */
    expect_take(cl, ip, 59000, 0, 1);
    http_climits_free(cl);
}

static void test_rate_burst_default(void **state)
{
    /* burst 0 = rate: 4 at once, then one every 250 ms. */
    struct http_climits *cl = http_climits_new(0, 4, 0);
    for (int i = 0; i < 4; i++)
        expect_take(cl, "::1", 0, 1, 0);
    expect_take(cl, "::1", 0, 0, 1);
    expect_take(cl, "::1", 125, 0, 1);
    expect_take(cl, "::1", 250, 1, 0);
    expect_take(cl, "::1", 10000, 1, 0);
    expect_take(cl, "::1", 10000, 1, 0);
    expect_take(cl, "::1", 10000, 1, 0);
    expect_take(cl, "::1", 10000, 1, 0);
    expect_take(cl, "::1", 10000, 0, 1);
    http_climits_free(cl);
}

/* Retry-After is the whole seconds until the next token, at least 1. */
static void test_retry_after(void **state)
{
    /* 1 request per second, burst 1. */
    struct http_climits *cl = http_climits_new(0, 1, 1);
    expect_take(cl, "a", 0, 1, 0);
    expect_take(cl, "a", 0, 0, 1);
    expect_take(cl, "a", 500, 0, 1); /* half a second to go: rounds up */
    expect_take(cl, "a", 1000, 1, 0);
    http_climits_free(cl);
    /* 1000 per second: the next token is 1 ms away, still reported as 1 s. */
    cl = http_climits_new(0, 1000, 1);
    expect_take(cl, "b", 0, 1, 0);
    expect_take(cl, "b", 0, 0, 1);
    expect_take(cl, "b", 1, 1, 0);
    http_climits_free(cl);
}

/* An idle address's entry is dropped once its bucket is full again; a later request from it
 * starts with a full bucket, exactly as if it had been kept. */
static void test_rate_idle_entries(void **state)
{
    struct http_climits *cl = http_climits_new(0, 2, 2);
    char ip[48];
    for (int i = 0; i < 10000; i++) {
        snprintf(ip, sizeof(ip), "10.1.%d.%d", i >> 8, i & 255);
        expect_take(cl, ip, 1000, 1, 0);
        expect_take(cl, ip, 1000, 1, 0);
        expect_take(cl, ip, 1000, 0, 1);
    }
    for (int i = 0; i < 10000; i++) {
        snprintf(ip, sizeof(ip), "10.1.%d.%d", i >> 8, i & 255);
        expect_take(cl, ip, 2000, 1, 0);
        expect_take(cl, ip, 2000, 1, 0);
        expect_take(cl, ip, 2000, 0, 1);
    }
    http_climits_free(cl);
}

/* Regression: refill() stored now_ms as the bucket's last refill time even when now_ms was earlier
 * than it, so a clock that steps back and forth re-granted time already counted. The table is
 * shared by all workers and each passes its own loop clock (server.c: loop_now(s->loop)), which
 * differ by up to an iteration's length, so a client spread over several workers got extra tokens
 * (rate x the skew, on every alternation). The fix only moves last_ms forward. */
static void test_rate_clock_skew(void **state)
{
    struct http_climits *cl = http_climits_new(0, 2, 3);
    for (int i = 0; i < 3; i++)
        expect_take(cl, "10.0.0.1", 60000, 1, 0);
    expect_take(cl, "10.0.0.1", 60000, 0, 1);
    expect_take(cl, "10.0.0.1", 59000, 0, 1); /* another worker, 1 s behind */
    expect_take(cl, "10.0.0.1", 60000, 0, 1); /* no time passed since 60000: still empty */
    http_climits_free(cl);
}

/* Both limits at once on one table. */
static void test_both(void **state)
{
    struct http_climits *cl = http_climits_new(1, 1, 2);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 0);
    expect_take(cl, "10.0.0.1", 5000, 1, 0);
    expect_take(cl, "10.0.0.1", 5000, 1, 0);
    expect_take(cl, "10.0.0.1", 5000, 0, 1);
    http_climits_conn_close(cl, "10.0.0.1");
    assert_int_equal(http_climits_conn_open(cl, "10.0.0.1"), 1);
    /* The connection count did not disturb the bucket. */
    expect_take(cl, "10.0.0.1", 5000, 0, 1);
    expect_take(cl, "10.0.0.1", 6000, 1, 0);
    http_climits_free(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_conn_limit),
        cmocka_unit_test(test_conn_many_addresses),
        cmocka_unit_test(test_conn_threads),
        cmocka_unit_test(test_rate_bucket),
        cmocka_unit_test(test_rate_burst_default),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_rate_idle_entries),
        cmocka_unit_test(test_rate_clock_skew),
        cmocka_unit_test(test_both),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
