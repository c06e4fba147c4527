/* test_select.c — unit tests for server selection (src/lb/select.h): the weights handed to the
 * policy under slow start, panic, drain and ejection, the tried set, the affinity key, and the
 * real policies on top. No sockets: servers come from lb_server_new, their live state is set by
 * hand, and a recording policy shows exactly what selection gave it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/select.h"
#include "lb_test.h"

#define N(a)   (sizeof(a) / sizeof((a)[0]))
#define NOW_MS 1000000u

/* ---- a policy that records what it was given ---- */

struct rec {
    size_t n;
    struct lb_target t[8];
    uint64_t hash, rnd;
    int calls;
    int choose; /* index returned; -1 = the first selectable target */
};

static void *rec_create(const struct lb_target *t, size_t n)
{
    struct rec *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_true(n <= N(r->t));
    r->n = n;
    r->choose = -1;
    for (size_t i = 0; i < n; i++)
        assert_non_null(t[i].key);
    return r;
}

static int rec_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    struct rec *r = self;
    assert_int_equal(n, r->n);
    memcpy(r->t, t, n * sizeof(*t));
    r->hash = hash;
    r->rnd = rnd;
    r->calls++;
    if (r->choose >= 0)
        return r->choose;
    for (size_t i = 0; i < n; i++)
        if (t[i].weight)
            return (int)i;
    return -1;
}

static void rec_destroy(void *self) { free(self); }

static const struct lb_policy_ops rec_ops = {
    .name = "rec", .needs_key = 0, .create = rec_create, .pick = rec_pick, .destroy = rec_destroy};
static const struct lb_policy_ops rec_key_ops = {
    .name = "rec-key", .needs_key = 1, .create = rec_create, .pick = rec_pick, .destroy = rec_destroy};

/* ---- fixture: n servers http://127.0.0.1:8001... with the given weights, up for ages ---- */

struct fx {
    struct lb_config cfg;
    size_t n;
    struct lb_server *s[8];
    struct lb_set *set;
    struct lb_selector sel;
    struct lb_tried tried;
    struct http_head head;
    char raw[512];
};

/* Parses raw (a request head) into f->head. */
static void fx_request(struct fx *f, const char *raw)
{
    snprintf(f->raw, sizeof(f->raw), "%s", raw);
    assert_true(http_parse_request(f->raw, strlen(f->raw), NULL, &f->head) > 0);
}

static struct fx *fx_new(const struct lb_policy_ops *ops, const unsigned *weights, size_t n)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    lb_config_defaults(&f->cfg);
    f->cfg.slow_start_ms = 0; /* the tests that want it turn it on */
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "http://127.0.0.1:%zu,weight=%u", 8001 + i, weights[i]);
        f->s[i] = new_server(spec);
        atomic_store(&f->s[i]->up_since_ms, 0);
    }
    f->set = lb_set_new(f->s, n, 1);
    lb_selector_init(&f->sel, ops, f->set);
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    return f;
}

static void fx_free(struct fx *f)
{
    lb_selector_destroy(&f->sel);
    lb_set_unref(f->set);
    for (size_t i = 0; i < f->n; i++)
        lb_server_unref(f->s[i]);
    lb_config_free(&f->cfg);
    free(f);
}

static int fx_select(struct fx *f, uint64_t rnd)
{
    struct lb_select_req req = {.head = &f->head, .client_ip = "192.0.2.7", .tried = &f->tried};
    return lb_select(&f->sel, f->set, &f->cfg, &req, NOW_MS, rnd);
}

static struct rec *fx_rec(struct fx *f) { return f->sel.policy; }

/* The weights the policy was last given must be exactly `want`. */
static void expect_weights(struct fx *f, const unsigned *want)
{
    for (size_t i = 0; i < f->n; i++)
        if (fx_rec(f)->t[i].weight != want[i])
            fail_msg("target %zu: weight %u, want %u", i, fx_rec(f)->t[i].weight, want[i]);
}

/* ---- the selector ---- */

static void test_selector_init(void **state)
{
    unsigned w[] = {1, 2, 5};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    assert_ptr_equal(f->sel.ops, &rec_ops);
    assert_int_equal(f->sel.n, 3);
    assert_int_equal(fx_rec(f)->n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_ptr_equal(f->sel.targets[i].key, f->s[i]->key); /* the server's own key, not a copy */
        assert_int_equal(f->sel.targets[i].weight, w[i] * LB_WEIGHT_SCALE);
    }
    fx_free(f);
}

/* Every server up and active: configured weight × scale, live in-flight count and latency. */
static void test_all_usable(void **state)
{
    unsigned w[] = {1, 2, 3};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    atomic_store(&f->s[1]->inflight, 7);
    f->s[2]->ewma_us = 1234.5;
    fx_rec(f)->choose = 2;
    assert_int_equal(fx_select(f, 99), 2);
    expect_weights(f, (unsigned[]){100, 200, 300});
    assert_int_equal(fx_rec(f)->t[0].inflight, 0);
    assert_int_equal(fx_rec(f)->t[1].inflight, 7);
    assert_true(fx_rec(f)->t[2].latency_us == 1234.5);
    assert_int_equal(fx_rec(f)->rnd, 99);
    assert_int_equal(fx_rec(f)->hash, 0); /* no needs_key: no key computed */
    assert_int_equal(fx_rec(f)->calls, 1);
    fx_rec(f)->choose = -1;
    assert_int_equal(fx_select(f, 5), 0);
    fx_free(f);
}

/* Draining and parked servers take no new requests; the rest keep their weights. */
static void test_drain(void **state)
{
    unsigned w[] = {1, 1, 1};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    atomic_store(&f->s[0]->admin, LB_ADMIN_DRAINING);
    atomic_store(&f->s[2]->admin, LB_ADMIN_PARKED);
    assert_int_equal(fx_select(f, 0), 1);
    expect_weights(f, (unsigned[]){0, 100, 0});
    atomic_store(&f->s[1]->admin, LB_ADMIN_DRAINING);
    assert_int_equal(fx_select(f, 0), -1);
    assert_int_equal(fx_rec(f)->calls, 1); /* no usable server: the policy is not asked */
    fx_free(f);
}

/* A server ejected by passive health (or down after active checks) gets weight 0. */
static void test_ejection(void **state)
{
    unsigned w[] = {2, 2, 2, 2};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    assert_int_equal(lb_server_eject(f->s[0], 2000, 60000, "test"), 1);
    assert_int_equal(fx_select(f, 0), 1);
    expect_weights(f, (unsigned[]){0, 200, 200, 200});
    atomic_store(&f->s[1]->healthy, 0); /* active checks said down */
    assert_int_equal(fx_select(f, 0), 2);
    expect_weights(f, (unsigned[]){0, 0, 200, 200});
    atomic_store(&f->s[0]->healthy, 1); /* back up */
    assert_int_equal(fx_select(f, 0), 0);
    expect_weights(f, (unsigned[]){200, 0, 200, 200});
    fx_free(f);
}

/* Panic: fewer than panic_percent of the active servers healthy (but some) → every active server
 * is usable; draining ones still are not. Exactly at the threshold is no panic. */
static void test_panic(void **state)
{
    unsigned w[] = {1, 1, 1, 1, 1};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    f->cfg.panic_percent = 50;
    atomic_store(&f->s[4]->admin, LB_ADMIN_DRAINING); /* 4 active */
    atomic_store(&f->s[0]->healthy, 0);
    atomic_store(&f->s[1]->healthy, 0);
    /* 2 of 4 healthy = 50%: not below the threshold */
    assert_int_equal(fx_select(f, 0), 2);
    expect_weights(f, (unsigned[]){0, 0, 100, 100, 0});
    /* 1 of 4 = 25% < 50%: panic, every active server */
    atomic_store(&f->s[2]->healthy, 0);
    assert_int_equal(fx_select(f, 0), 0);
    expect_weights(f, (unsigned[]){100, 100, 100, 100, 0});
    /* a draining server does not count as active: 1 of 4 still */
    atomic_store(&f->s[4]->healthy, 0);
    assert_int_equal(fx_select(f, 0), 0);
    expect_weights(f, (unsigned[]){100, 100, 100, 100, 0});
    /* panic off */
    f->cfg.panic_percent = 0;
    assert_int_equal(fx_select(f, 0), 3);
    expect_weights(f, (unsigned[]){0, 0, 0, 100, 0});
    /* none healthy: no panic, nothing usable */
    f->cfg.panic_percent = 100;
    atomic_store(&f->s[3]->healthy, 0);
    int calls = fx_rec(f)->calls;
    assert_int_equal(fx_select(f, 0), -1);
    assert_int_equal(fx_rec(f)->calls, calls);
    fx_free(f);
}

/* Slow start: the weight grows linearly over the window from a tenth (never 0). */
static void test_slow_start(void **state)
{
    unsigned w[] = {1, 3, 1};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    f->cfg.slow_start_ms = 10000;
    atomic_store(&f->s[0]->up_since_ms, NOW_MS);         /* just up: the floor */
    atomic_store(&f->s[1]->up_since_ms, NOW_MS - 5000);  /* half-way */
    atomic_store(&f->s[2]->up_since_ms, NOW_MS - 10000); /* window over */
    assert_int_equal(fx_select(f, 0), 0);
    expect_weights(f, (unsigned[]){10, 150, 100});
    atomic_store(&f->s[0]->up_since_ms, NOW_MS - 500); /* 5% < the 10% floor */
    atomic_store(&f->s[1]->up_since_ms, NOW_MS - 9999);
    fx_select(f, 0);
    expect_weights(f, (unsigned[]){10, 299, 100});
    atomic_store(&f->s[0]->up_since_ms, NOW_MS - 2500);
    fx_select(f, 0);
    expect_weights(f, (unsigned[]){25, 299, 100});
    /* off: full weight at once */
    f->cfg.slow_start_ms = 0;
    fx_select(f, 0);
    expect_weights(f, (unsigned[]){100, 300, 100});
    /* a server in slow start that is not usable still gets 0 */
    f->cfg.slow_start_ms = 10000;
    atomic_store(&f->s[0]->admin, LB_ADMIN_DRAINING);
    fx_select(f, 0);
    expect_weights(f, (unsigned[]){0, 299, 100});
    fx_free(f);
}

/* The tried set: a server already tried for the request is not chosen again. */
static void test_tried(void **state)
{
    unsigned w[] = {1, 1, 1};
    struct fx *f = fx_new(&rec_ops, w, N(w));
    assert_false(lb_tried_has(&f->tried, f->s[0]));
    lb_tried_add(&f->tried, f->s[0]);
    assert_true(lb_tried_has(&f->tried, f->s[0]));
    assert_false(lb_tried_has(&f->tried, f->s[1]));
    assert_int_equal(fx_select(f, 0), 1);
    expect_weights(f, (unsigned[]){0, 100, 100});
    lb_tried_add(&f->tried, f->s[2]);
    assert_int_equal(fx_select(f, 0), 1);
    expect_weights(f, (unsigned[]){0, 100, 0});
    lb_tried_add(&f->tried, f->s[1]);
    assert_int_equal(f->tried.n, 3);
    int calls = fx_rec(f)->calls;
    assert_int_equal(fx_select(f, 0), -1);
    assert_int_equal(fx_rec(f)->calls, calls);
    /* in panic too */
    f->cfg.panic_percent = 100;
    atomic_store(&f->s[0]->healthy, 0);
    assert_int_equal(fx_select(f, 0), -1);
    fx_free(f);
}

/* ---- the affinity key ---- */

static uint64_t str_hash(const char *s) { return lb_hash64(s, strlen(s)); }

static void test_key(void **state)
{
    unsigned w[] = {1, 1};
    struct fx *f = fx_new(&rec_key_ops, w, N(w));
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\nX-User: alice\r\nCookie: a=1; sid=s3cr3t; b=2\r\n\r\n");
    const char *ip = "192.0.2.7";
    assert_int_equal(lb_select_key("client", &f->head, ip), str_hash(ip));
    assert_int_equal(lb_select_key("header:x-user", &f->head, ip), str_hash("alice"));
    assert_int_equal(lb_select_key("header:X-USER", &f->head, ip), str_hash("alice"));
    assert_int_equal(lb_select_key("header:x-other", &f->head, ip), str_hash(ip));
    assert_int_equal(lb_select_key("cookie:sid", &f->head, ip), str_hash("s3cr3t"));
    assert_int_equal(lb_select_key("cookie:a", &f->head, ip), str_hash("1"));
    assert_int_equal(lb_select_key("cookie:b", &f->head, ip), str_hash("2"));
    assert_int_equal(lb_select_key("cookie:SID", &f->head, ip), str_hash(ip)); /* names are exact */
    assert_int_equal(lb_select_key("cookie:si", &f->head, ip), str_hash(ip));
    /* the policy that needs a key gets the request's */
    snprintf(f->cfg.hash_key, sizeof(f->cfg.hash_key), "cookie:sid");
    fx_select(f, 0);
    assert_int_equal(fx_rec(f)->hash, str_hash("s3cr3t"));
    snprintf(f->cfg.hash_key, sizeof(f->cfg.hash_key), "client");
    fx_select(f, 0);
    assert_int_equal(fx_rec(f)->hash, str_hash(ip));
    fx_free(f);
}

static void test_key_cookie_forms(void **state)
{
    unsigned w[] = {1};
    struct fx *f = fx_new(&rec_key_ops, w, N(w));
    const char *ip = "::1";
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\nCookie: sidx=1;sid=2\r\n\r\n");
    assert_int_equal(lb_select_key("cookie:sid", &f->head, ip), str_hash("2"));
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\nCookie: sid=\r\n\r\n");
    assert_int_equal(lb_select_key("cookie:sid", &f->head, ip), str_hash(""));
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\nCookie: sid\r\n\r\n");
    assert_int_equal(lb_select_key("cookie:sid", &f->head, ip), str_hash(ip));
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(lb_select_key("cookie:sid", &f->head, ip), str_hash(ip));
    fx_free(f);
}

/* ---- with the real policies ---- */

/* Round-robin never reaches a drained, ejected or tried server, and shares the rest by weight. */
static void test_round_robin(void **state)
{
    unsigned w[] = {1, 2, 1, 1};
    struct fx *f = fx_new(&lb_policy_round_robin, w, N(w));
    atomic_store(&f->s[2]->admin, LB_ADMIN_DRAINING);
    assert_int_equal(lb_server_eject(f->s[3], 2000, 60000, "test"), 1);
    int count[4] = {0};
    for (int k = 0; k < 300; k++) {
        int i = fx_select(f, (uint64_t)k);
        assert_true(i >= 0 && i < 2);
        count[i]++;
    }
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 200);
    lb_tried_add(&f->tried, f->s[1]);
    for (int k = 0; k < 10; k++)
        assert_int_equal(fx_select(f, (uint64_t)k), 0);
    fx_free(f);
}

/* Hash: the same key reaches the same server; when it is tried (or ejected), another one. */
static void test_hash_policy(void **state)
{
    unsigned w[] = {1, 1, 1};
    struct fx *f = fx_new(&lb_policy_hash, w, N(w));
    snprintf(f->cfg.hash_key, sizeof(f->cfg.hash_key), "header:x-user");
    fx_request(f, "GET / HTTP/1.1\r\nHost: x\r\nX-User: bob\r\n\r\n");
    int first = fx_select(f, 1);
    assert_true(first >= 0);
    for (uint64_t r = 2; r < 50; r++)
        assert_int_equal(fx_select(f, r), first);
    lb_tried_add(&f->tried, f->s[first]);
    int second = fx_select(f, 1);
    assert_true(second >= 0 && second != first);
    f->tried.n = 0;
    atomic_store(&f->s[first]->healthy, 0);
    assert_int_equal(fx_select(f, 7), second);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selector_init),
        cmocka_unit_test(test_all_usable),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_ejection),
        cmocka_unit_test(test_panic),
        cmocka_unit_test(test_slow_start),
        cmocka_unit_test(test_tried),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_key_cookie_forms),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_hash_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
