/* test_replica.c — read replicas (app/replica.h) without a database: positions parsed and
 * written (hostile values are no position), the position a request carries (header, cookie, the
 * larger), the routing decision from a hand-set cached state (down, stale, lagging, replayed or
 * not, a check asked for only for a position known to exist, once), the lag measured from first-seen
 * positions (also with the ring full), and start/stop with a replica that never answers.
 * Includes replica.c to reach its state and static helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "app/replica.c"

static int parses(const char *s, uint64_t *pos) { return app_replica_parse(s, strlen(s), pos); }

static void test_positions_parse_and_format(void **state)
{
    uint64_t p = 99;
    char out[APP_REPLICA_POS_MAX];
    assert_true(parses("0/0", &p));
    assert_int_equal(p, 0);
    assert_true(parses("1/2", &p));
    assert_true(p == ((uint64_t)1 << 32 | 2));
    assert_true(parses("ffffffff/FFFFFFFF", &p));
    assert_true(p == UINT64_MAX);
    assert_true(parses("16/B374D848", &p));
    app_replica_format(p, out);
    assert_string_equal(out, "16/B374D848");
    app_replica_format(UINT64_MAX, out);
    assert_string_equal(out, "FFFFFFFF/FFFFFFFF");
    app_replica_format(0, out);
    assert_string_equal(out, "0/0");
    static const char *const bad[] = {"",     "/",           "0/",          "/0",    "0//0", "1/2/3",
                                      "-1/5", "0/-5",        "+1/1",        " 0/1",  "0/1 ", "0x1/0",
                                      "G/0",  "123456789/0", "0/123456789", "0/1\n", "%30/1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = 7;
        assert_false(parses(bad[i], &p));
        assert_int_equal(p, 7); /* untouched */
    }
    char big[10241];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[4] = '/';
    assert_false(parses(big, &p));
    assert_false(app_replica_parse("1/2", 2, &p)); /* only n bytes count: "1/" */
}

static void set_header(struct http_head *h, const char *name, const char *value)
{
    struct http_header *x = &h->headers[h->nheaders++];
    x->name = (struct http_str){name, strlen(name)};
    x->value = (struct http_str){value, strlen(value)};
}

static void test_the_position_of_a_request(void **state)
{
    static struct http_head h;
    memset(&h, 0, sizeof h);
    assert_int_equal(app_replica_request_position(&h), 0);
    set_header(&h, "agora-position", "0/10");
    assert_int_equal(app_replica_request_position(&h), 0x10);
    set_header(&h, "Cookie", "a=b; agora_pos=0/20; c=d");
    assert_int_equal(app_replica_request_position(&h), 0x20); /* the larger */
    memset(&h, 0, sizeof h);
    set_header(&h, "Agora-Position", "1/0");
    set_header(&h, "Cookie", "agora_pos=garbage");
    assert_true(app_replica_request_position(&h) == (uint64_t)1 << 32);
    memset(&h, 0, sizeof h);
    set_header(&h, "Agora-Position", "nope");
    set_header(&h, "Cookie", "agora_pos=\"0/30\"");
    assert_int_equal(app_replica_request_position(&h), 0x30);
    memset(&h, 0, sizeof h);
    set_header(&h, "Agora-Position", "-1/0");
    set_header(&h, "Cookie", "agora_position=0/40; xagora_pos=0/50");
    assert_int_equal(app_replica_request_position(&h), 0); /* neither is one */
}

/* A replica state set by hand, as the monitor would leave it (no thread). */
static struct app_replica *fake(int state, uint64_t replayed, uint64_t received, uint64_t written)
{
    struct app_replica *r = alloc_calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->state = state;
    r->replayed = replayed;
    r->received = received;
    r->written = written;
    r->checked_us = now_us();
    return r;
}

static void unfake(struct app_replica *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void test_routing(void **state)
{
    struct app_replica *r = fake(UP, 100, 200, 150);
    assert_int_equal(app_replica_route(r, 0), APP_READ_REPLICA);
    assert_int_equal(app_replica_route(r, 100), APP_READ_REPLICA);
    assert_int_equal(r->want, 0);
    /* beyond what exists as far as the server knows: the primary, and no check */
    assert_int_equal(app_replica_route(r, 201), APP_READ_POSITION);
    assert_int_equal(r->want, 0);
    /* known to exist (received by the replica, or written here), not replayed: a check, once */
    assert_int_equal(app_replica_route(r, 200), APP_READ_POSITION);
    assert_int_equal(r->want, 1);
    assert_int_equal(app_replica_route(r, 150), APP_READ_POSITION);
    assert_int_equal(r->want, 1);
    r->want = 0;
    r->received = 50;
    assert_int_equal(app_replica_route(r, 150), APP_READ_POSITION); /* our own write */
    assert_int_equal(r->want, 1);
    app_replica_wrote(r, 120); /* a maximum: an older write changes nothing */
    assert_int_equal(r->written, 150);
    app_replica_wrote(r, 400);
    assert_int_equal(r->written, 400);

    r->state = LAGGING;
    assert_int_equal(app_replica_route(r, 0), APP_READ_LAGGING);
    r->state = DOWN;
    assert_int_equal(app_replica_route(r, 0), APP_READ_DOWN);
    r->state = UP;
    r->checked_us = now_us() - APP_REPLICA_STALE_MS * 1000LL - 1000; /* the monitor is stuck */
    assert_int_equal(app_replica_route(r, 0), APP_READ_DOWN);
    r->checked_us = 0; /* never checked */
    assert_int_equal(app_replica_route(r, 0), APP_READ_DOWN);

    struct app_replica_status st;
    r->checked_us = now_us();
    r->lag_us = 1500000;
    app_replica_status(r, &st);
    assert_int_equal(st.up, 1);
    assert_int_equal(st.lagging, 0);
    assert_int_equal(st.lag_ms, 1500);
    assert_int_equal(st.replayed, 100);
    unfake(r);
}

static void test_lag_from_first_seen_positions(void **state)
{
    struct app_replica *r = fake(UP, 0, 0, 0);
    assert_int_equal(lag_of(r, 0, 0, 1000), 0);       /* nothing pending */
    assert_int_equal(lag_of(r, 100, 50, 1000), 0);    /* 100 first seen now */
    assert_int_equal(lag_of(r, 100, 50, 3000), 2000); /* still not replayed */
    assert_int_equal(lag_of(r, 200, 50, 3500), 2500); /* the oldest pending counts */
    assert_int_equal(lag_of(r, 200, 100, 4000), 500); /* 100 replayed: 200, seen at 3500 */
    assert_int_equal(lag_of(r, 200, 200, 5000), 0);
    assert_int_equal(r->n, 0);
    /* a full ring: the newest entry grows, keeping its (older) time: the lag is never understated */
    for (int i = 1; i <= RING + 10; i++)
        lag_of(r, 1000 + (uint64_t)i, 1000, 10000 + i);
    assert_int_equal(r->n, RING);
    assert_int_equal(lag_of(r, 5000, 1000 + RING - 1, 20000), 20000 - (10000 + RING));
    assert_int_equal(lag_of(r, 5000, 4999, 21000), 21000 - (10000 + RING));
    assert_int_equal(lag_of(r, 5000, 5000, 22000), 0);
    unfake(r);
}

static void test_start_refuses_sqlite_and_survives_a_replica_that_never_answers(void **state)
{
    char err[256] = "";
    assert_null(app_replica_start("sqlite:/tmp/x.db", NULL, 5000, err, sizeof err));
    assert_non_null(strstr(err, "must be PostgreSQL"));
    struct app_replica *r = app_replica_start("postgresql:///agora?host=/nonexistent-agora-replica&user=agora", NULL,
                                              5000, err, sizeof err);
    assert_non_null(r);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    struct app_replica_status st;
    app_replica_status(r, &st);
    assert_int_equal(st.up, 0);
    assert_int_equal(app_replica_route(r, 0), APP_READ_DOWN);
    assert_true(st.checks >= 1);
    app_replica_stop(r);
    app_replica_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positions_parse_and_format),
        cmocka_unit_test(test_the_position_of_a_request),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_lag_from_first_seen_positions),
        cmocka_unit_test(test_start_refuses_sqlite_and_survives_a_replica_that_never_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
