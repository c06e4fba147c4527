/* test_servers.c — unit tests for the balancer's server set (src/lb/servers.h): backend spec
 * parsing, reference counting, snapshots and the registry, passive ejection times, the latency
 * histogram, and the /stats JSON (exact text, and parsed back with jansson). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/loop.h"
#include "lb/servers.h"
#include "lb_test.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_new_plain(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    assert_string_equal(s->url, "http://127.0.0.1:8001");
    assert_string_equal(s->key, "127.0.0.1:8001");
    assert_string_equal(s->host_header, "127.0.0.1:8001");
    assert_int_equal(atomic_load(&s->weight), 1);
    assert_int_equal(atomic_load(&s->refs), 1);
    assert_int_equal(atomic_load(&s->healthy), 1);
    assert_int_equal(atomic_load(&s->admin), LB_ADMIN_ACTIVE);
    assert_int_equal(atomic_load(&s->inflight), 0);
    assert_int_equal(atomic_load(&s->total), 0);
    assert_int_equal(atomic_load(&s->ejections), 0);
    assert_int_equal(s->hc_checked, 0);
    assert_string_equal(s->hc_last, "not checked yet");
    assert_int_equal(s->addr.ss.ss_family, AF_INET);
    assert_true(lb_server_usable(s));
    lb_server_unref(s);
}

/* spec -> url, key, host header, weight */
static void expect_server(const char *spec, const char *url, const char *key, const char *host, unsigned weight)
{
    struct lb_server *s = new_server(spec);
    assert_string_equal(s->url, url);
    assert_string_equal(s->key, key);
    assert_string_equal(s->host_header, host);
    assert_int_equal(atomic_load(&s->weight), weight);
    lb_server_unref(s);
}

static void test_new_forms(void **state)
{
    expect_server("http://127.0.0.1:8001/", "http://127.0.0.1:8001", "127.0.0.1:8001", "127.0.0.1:8001", 1);
    expect_server("http://127.0.0.1:8001,weight=5", "http://127.0.0.1:8001", "127.0.0.1:8001", "127.0.0.1:8001", 5);
    expect_server("http://127.0.0.1:8001/,weight=1000", "http://127.0.0.1:8001", "127.0.0.1:8001", "127.0.0.1:8001",
                  1000);
    expect_server("http://127.0.0.1:8001,weight=2,weight=3", "http://127.0.0.1:8001", "127.0.0.1:8001",
                  "127.0.0.1:8001", 3); /* the last one wins */
    expect_server("http://localhost:9000", "http://localhost:9000", "127.0.0.1:9000", "localhost:9000", 1);
    expect_server("http://127.0.0.1", "http://127.0.0.1", "127.0.0.1:80", "127.0.0.1:80", 1);
    expect_server("http://[::1]:8080", "http://[::1]:8080", "[::1]:8080", "[::1]:8080", 1);
    expect_server("http://[::1]", "http://[::1]", "[::1]:80", "[::1]:80", 1);
    expect_server("127.0.0.1:7000", "127.0.0.1:7000", "127.0.0.1:7000", "127.0.0.1:7000", 1); /* no scheme */
}

static void expect_bad(const char *spec, const char *msg)
{
    char err[1024] = "";
    struct lb_server *s = lb_server_new(spec, err, sizeof(err));
    if (s) {
        lb_server_unref(s);
        fail_msg("lb_server_new(\"%s\") accepted", spec);
    }
    assert_string_equal(err, msg);
}

static void test_new_errors(void **state)
{
    expect_bad("", "backend '': empty or too long URL");
    expect_bad(",weight=2", "backend ',weight=2': empty or too long URL");
    expect_bad("http://127.0.0.1:1,weight=0",
               "backend 'http://127.0.0.1:1,weight=0': weight must be an integer from 1 to 1000");
    expect_bad("http://127.0.0.1:1,weight=1001",
               "backend 'http://127.0.0.1:1,weight=1001': weight must be an integer from 1 to 1000");
    expect_bad("http://127.0.0.1:1,weight=-1",
               "backend 'http://127.0.0.1:1,weight=-1': weight must be an integer from 1 to 1000");
    expect_bad("http://127.0.0.1:1,weight=5x",
               "backend 'http://127.0.0.1:1,weight=5x': weight must be an integer from 1 to 1000");
    expect_bad("http://127.0.0.1:1,weight=x",
               "backend 'http://127.0.0.1:1,weight=x': weight must be an integer from 1 to 1000");
    expect_bad("http://127.0.0.1:1,foo=1",
               "backend 'http://127.0.0.1:1,foo=1': unknown option 'foo=1' (expected weight=N)");
    expect_bad("http://127.0.0.1:1,", "backend 'http://127.0.0.1:1,': unknown option '' (expected weight=N)");
    expect_bad("http://127.0.0.1:1,weight=2,",
               "backend 'http://127.0.0.1:1,weight=2,': unknown option '' (expected weight=N)");
    expect_bad("https://127.0.0.1:1", "backend 'https://127.0.0.1:1': only http:// backends are supported");
    expect_bad("ftp://127.0.0.1:1", "backend 'ftp://127.0.0.1:1': only http:// backends are supported");
    expect_bad("http://127.0.0.1:1/api", "backend 'http://127.0.0.1:1/api': expected http://HOST:PORT");
    expect_bad("http://", "backend 'http://': expected http://HOST:PORT");
    expect_bad("http:///", "backend 'http:///': expected http://HOST:PORT");
    expect_bad("http://127.0.0.1:99999", "backend 'http://127.0.0.1:99999': cannot resolve address '127.0.0.1:99999'");
    expect_bad("http://127.0.0.1:http", "backend 'http://127.0.0.1:http': cannot resolve address '127.0.0.1:http'");
    char longspec[600];
    memset(longspec, 'a', 520);
    longspec[520] = '\0';
    char want[700];
    snprintf(want, sizeof(want), "backend '%s': empty or too long URL", longspec);
    expect_bad(longspec, want);
}

static void test_refs(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    lb_server_ref(s);
    assert_int_equal(atomic_load(&s->refs), 2);
    lb_server_unref(s);
    assert_int_equal(atomic_load(&s->refs), 1);
    lb_server_unref(NULL); /* allowed */
    lb_server_unref(s);    /* frees (ASan checks) */
}

static void test_usable(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    assert_true(lb_server_usable(s));
    atomic_store(&s->admin, LB_ADMIN_DRAINING);
    assert_false(lb_server_usable(s));
    atomic_store(&s->admin, LB_ADMIN_PARKED);
    assert_false(lb_server_usable(s));
    atomic_store(&s->admin, LB_ADMIN_ACTIVE);
    atomic_store(&s->healthy, 0);
    assert_false(lb_server_usable(s));
    lb_server_unref(s);
}

static void test_set_and_registry(void **state)
{
    struct lb_server *a = new_server("http://127.0.0.1:8001"), *b = new_server("http://127.0.0.1:8002"),
                     *c = new_server("http://127.0.0.1:8003");
    struct lb_server *ab[] = {a, b};
    struct lb_set *set = lb_set_new(ab, 2, 7);
    assert_int_equal(set->n, 2);
    assert_int_equal(set->gen, 7);
    assert_int_equal(atomic_load(&set->refs), 1);
    assert_ptr_equal(set->servers[0], a);
    assert_ptr_equal(set->servers[1], b);
    assert_int_equal(atomic_load(&a->refs), 2);
    assert_int_equal(lb_set_find(set, "127.0.0.1:8001"), 0);
    assert_int_equal(lb_set_find(set, "127.0.0.1:8002"), 1);
    assert_int_equal(lb_set_find(set, "127.0.0.1:8003"), -1);
    assert_int_equal(lb_set_find(set, "http://127.0.0.1:8001"), -1); /* keys, not URLs */

    struct lb_registry reg;
    lb_registry_init(&reg, set); /* takes over our reference */
    assert_int_equal(atomic_load(&reg.gen), 7);
    struct lb_set *held = lb_registry_get(&reg); /* a worker's snapshot */
    assert_ptr_equal(held, set);
    assert_int_equal(atomic_load(&set->refs), 2);

    /* Replace: b stays (same object), a goes, c comes; the generation increases by one. */
    struct lb_server *bc[] = {b, c};
    lb_registry_replace(&reg, bc, 2);
    assert_int_equal(atomic_load(&reg.gen), 8);
    struct lb_set *cur = lb_registry_get(&reg);
    assert_ptr_not_equal(cur, held);
    assert_int_equal(cur->gen, 8);
    assert_int_equal(cur->n, 2);
    assert_ptr_equal(cur->servers[0], b);
    assert_ptr_equal(cur->servers[1], c);
    assert_int_equal(atomic_load(&b->refs), 3); /* ours, the old set's, the new set's */
    assert_int_equal(atomic_load(&c->refs), 2);
    /* The old snapshot stays intact for its holder. */
    assert_int_equal(atomic_load(&held->refs), 1);
    assert_ptr_equal(held->servers[0], a);
    assert_int_equal(atomic_load(&a->refs), 2);
    lb_set_unref(held);
    assert_int_equal(atomic_load(&a->refs), 1);
    assert_int_equal(atomic_load(&b->refs), 2);

    lb_registry_replace(&reg, NULL, 0); /* an empty set is allowed */
    assert_int_equal(atomic_load(&reg.gen), 9);
    struct lb_set *empty = lb_registry_get(&reg);
    assert_int_equal(empty->n, 0);
    assert_int_equal(lb_set_find(empty, "127.0.0.1:8002"), -1);
    lb_set_unref(empty);
    lb_set_unref(cur);
    assert_int_equal(atomic_load(&b->refs), 1);
    assert_int_equal(atomic_load(&c->refs), 1);
    lb_registry_destroy(&reg);
    assert_null(reg.cur);
    lb_set_unref(NULL);
    lb_server_unref(a);
    lb_server_unref(b);
    lb_server_unref(c);
}

/* Brings s up, ejects it and checks that the ejection lasts exactly want ms: ejected_until_ms is
 * "now + want" for a now read between the two clock reads around the call. */
static void expect_eject(struct lb_server *s, unsigned base, unsigned max, uint64_t want)
{
    atomic_store(&s->healthy, 1);
    uint64_t before = loop_clock_us() / 1000;
    assert_int_equal(lb_server_eject(s, base, max, "unit test"), 1);
    uint64_t after = loop_clock_us() / 1000;
    assert_int_equal(atomic_load(&s->healthy), 0);
    uint64_t until = atomic_load(&s->ejected_until_ms);
    if (until < before + want || until > after + want)
        fail_msg("ejected until %llu, want %llu + [%llu, %llu]", (unsigned long long)until, (unsigned long long)want,
                 (unsigned long long)before, (unsigned long long)after);
}

static void test_eject_growth_and_cap(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    const uint64_t want[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (size_t i = 0; i < N(want); i++) {
        expect_eject(s, 100, 1000, want[i]);
        assert_int_equal(atomic_load(&s->ejections), i + 1);
        assert_int_equal(atomic_load(&s->ejections_total), i + 1);
    }
    /* Ejecting a server that is already out does nothing. */
    uint64_t until = atomic_load(&s->ejected_until_ms);
    assert_int_equal(lb_server_eject(s, 100, 1000, "again"), 0);
    assert_int_equal(atomic_load(&s->ejected_until_ms), until);
    assert_int_equal(atomic_load(&s->ejections), N(want));
    assert_int_equal(atomic_load(&s->ejections_total), N(want));
    lb_server_unref(s);
}

/* The doubling stops at 2^16 times the base even when max allows more. */
static void test_eject_shift_cap(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    for (unsigned k = 0; k < 20; k++)
        expect_eject(s, 10, 4000000000u, (uint64_t)10 << (k > 16 ? 16 : k));
    lb_server_unref(s);
}

/* A server that stayed up for more than 5 x max starts again from the base time. */
static void test_eject_resets_after_long_uptime(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    expect_eject(s, 100, 1000, 100);
    expect_eject(s, 100, 1000, 200);
    expect_eject(s, 100, 1000, 400);
    uint64_t now = loop_clock_us() / 1000;
    atomic_store(&s->up_since_ms, now - 4900); /* not long enough */
    expect_eject(s, 100, 1000, 800);
    atomic_store(&s->up_since_ms, now - 6000);
    expect_eject(s, 100, 1000, 100);
    assert_int_equal(atomic_load(&s->ejections), 1);
    assert_int_equal(atomic_load(&s->ejections_total), 5);
    lb_server_unref(s);
}

static void hist_clear(struct lb_server *s)
{
    for (unsigned i = 0; i < LB_HIST_BUCKETS; i++)
        atomic_store(&s->hist[i], 0);
}

static void test_hist_values(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    assert_int_equal(lb_hist_percentile(s, 50), 0); /* empty */
    for (uint64_t v = 1; v <= 100; v++)
        lb_hist_record(s, v);
    assert_int_equal(lb_hist_percentile(s, 0), 1);
    assert_int_equal(lb_hist_percentile(s, 1), 1);
    assert_int_equal(lb_hist_percentile(s, 50), 55);  /* 50 lies in [48, 55] */
    assert_int_equal(lb_hist_percentile(s, 90), 95);  /* 90 lies in [80, 95] */
    assert_int_equal(lb_hist_percentile(s, 99), 111); /* 99 lies in [96, 111] */
    assert_int_equal(lb_hist_percentile(s, 100), 111);

    hist_clear(s);
    for (int i = 0; i < 99; i++)
        lb_hist_record(s, 1000); /* [896, 1023] */
    lb_hist_record(s, 50000);    /* [49152, 57343] */
    assert_int_equal(lb_hist_percentile(s, 50), 1023);
    assert_int_equal(lb_hist_percentile(s, 99), 1023);
    assert_int_equal(lb_hist_percentile(s, 99.5), 57343);
    assert_int_equal(lb_hist_percentile(s, 100), 57343);

    /* Small values are exact; huge ones land in the last bucket (about 33.5 s). */
    hist_clear(s);
    lb_hist_record(s, 0);
    assert_int_equal(lb_hist_percentile(s, 50), 0);
    hist_clear(s);
    lb_hist_record(s, 3);
    assert_int_equal(lb_hist_percentile(s, 50), 3);
    hist_clear(s);
    lb_hist_record(s, 1ull << 40);
    assert_int_equal(lb_hist_percentile(s, 50), 33554431);
    hist_clear(s);
    lb_hist_record(s, UINT64_MAX);
    assert_int_equal(lb_hist_percentile(s, 100), 33554431);
    lb_server_unref(s);
}

/* For every value below the last bucket: the reported bound is >= the value and within 25 %. */
static void test_hist_bounds(void **state)
{
    struct lb_server *s = new_server("http://127.0.0.1:8001");
    for (uint64_t v = 0; v < (1u << 25); v = v < 4096 ? v + 1 : v + v / 7 + 1) {
        hist_clear(s);
        lb_hist_record(s, v);
        uint64_t up = lb_hist_percentile(s, 50);
        if (up < v || up > v + v / 4)
            fail_msg("value %llu reported as %llu", (unsigned long long)v, (unsigned long long)up);
        /* The bound itself maps to the same bucket. */
        hist_clear(s);
        lb_hist_record(s, up);
        assert_int_equal(lb_hist_percentile(s, 50), up);
    }
    lb_server_unref(s);
}

static const char stats_two[] =
    "{\"health\": {\"http://127.0.0.1:8001\": true, \"http://127.0.0.1:8002\": false}, "
    "\"connections\": {\"http://127.0.0.1:8001\": 3, \"http://127.0.0.1:8002\": 0}, \"policy\": \"least-conn\", "
    "\"servers\": ["
    "{\"url\": \"http://127.0.0.1:8001\", \"address\": \"127.0.0.1:8001\", \"state\": \"up\", \"healthy\": true, "
    "\"admin\": \"active\", \"weight\": 2, \"in_flight\": 3, \"requests\": 10, \"errors\": 2, \"ejections\": 1, "
    "\"latency_p50_ms\": 1.023, \"latency_p99_ms\": 57.343, \"last_check\": \"HTTP 200\"}, "
    "{\"url\": \"http://127.0.0.1:8002\", \"address\": \"127.0.0.1:8002\", \"state\": \"draining\", "
    "\"healthy\": false, \"admin\": \"draining\", \"weight\": 1, \"in_flight\": 0, \"requests\": 0, \"errors\": 0, "
    "\"ejections\": 0, \"latency_p50_ms\": 0.000, \"latency_p99_ms\": 0.000, "
    "\"last_check\": \"say \\\"hi\\\" \\\\ there\"}"
    "]}\n";

static void test_stats_json(void **state)
{
    struct lb_server *a = new_server("http://127.0.0.1:8001,weight=2"), *b = new_server("http://127.0.0.1:8002/");
    atomic_store(&a->inflight, 3);
    atomic_store(&a->total, 10);
    atomic_store(&a->errors, 2);
    atomic_store(&a->ejections_total, 1);
    for (int i = 0; i < 98; i++)
        lb_hist_record(a, 1000);
    lb_hist_record(a, 50000);
    lb_hist_record(a, 50000);
    snprintf(a->hc_last, sizeof(a->hc_last), "HTTP 200");
    atomic_store(&b->healthy, 0);
    atomic_store(&b->admin, LB_ADMIN_DRAINING);
    snprintf(b->hc_last, sizeof(b->hc_last), "say \"hi\" \\ there");
    struct lb_server *ab[] = {a, b};
    struct lb_set *set = lb_set_new(ab, 2, 1);

    struct buf out = {0};
    buf_puts(&out, "PRE"); /* appends to what is there */
    lb_stats_json(set, "least-conn", &out);
    const char *text = buf_cstr(&out);
    assert_memory_equal(text, "PRE", 3);
    assert_true(!strncmp(text + 3, "{\"health\": {", 12));
    assert_string_equal(text + 3, stats_two);

    json_error_t jerr;
    json_t *root = json_loadb(text + 3, buf_used(&out) - 3, 0, &jerr);
    if (!root)
        fail_msg("stats JSON does not parse: %s at %d:%d", jerr.text, jerr.line, jerr.column);
    assert_true(json_is_true(json_object_get(json_object_get(root, "health"), "http://127.0.0.1:8001")));
    assert_true(json_is_false(json_object_get(json_object_get(root, "health"), "http://127.0.0.1:8002")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(root, "connections"), "http://127.0.0.1:8001")),
                     3);
    assert_string_equal(json_string_value(json_object_get(root, "policy")), "least-conn");
    json_t *servers = json_object_get(root, "servers");
    assert_int_equal(json_array_size(servers), 2);
    json_t *s0 = json_array_get(servers, 0), *s1 = json_array_get(servers, 1);
    assert_string_equal(json_string_value(json_object_get(s0, "state")), "up");
    assert_int_equal(json_integer_value(json_object_get(s0, "weight")), 2);
    assert_int_equal(json_integer_value(json_object_get(s0, "requests")), 10);
    assert_true(json_real_value(json_object_get(s0, "latency_p50_ms")) == 1.023);
    assert_string_equal(json_string_value(json_object_get(s1, "last_check")), "say \"hi\" \\ there");
    assert_string_equal(json_string_value(json_object_get(s1, "admin")), "draining");
    json_decref(root);

    /* Parked and down-but-active servers. */
    atomic_store(&b->admin, LB_ADMIN_PARKED);
    atomic_store(&a->healthy, 0);
    buf_reset(&out);
    lb_stats_json(set, "round-robin", &out);
    text = buf_cstr(&out);
    assert_non_null(strstr(text, "\"url\": \"http://127.0.0.1:8001\", \"address\": \"127.0.0.1:8001\", \"state\": "
                                 "\"down\", \"healthy\": false, \"admin\": \"active\""));
    assert_non_null(strstr(text, "\"state\": \"parked\", \"healthy\": false, \"admin\": \"parked\""));
    assert_non_null(strstr(text, "\"policy\": \"round-robin\""));
    root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    json_decref(root);

    lb_set_unref(set);
    lb_server_unref(a);
    lb_server_unref(b);
    buf_free(&out);
}

static void test_stats_json_empty(void **state)
{
    struct lb_set *set = lb_set_new(NULL, 0, 1);
    struct buf out = {0};
    lb_stats_json(set, "hash", &out);
    assert_string_equal(buf_cstr(&out),
                        "{\"health\": {}, \"connections\": {}, \"policy\": \"hash\", \"servers\": []}\n");
    json_error_t jerr;
    json_t *root = json_loads(buf_cstr(&out), 0, &jerr);
    assert_non_null(root);
    json_decref(root);
    buf_free(&out);
    lb_set_unref(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_plain),
        cmocka_unit_test(test_new_forms),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_set_and_registry),
        cmocka_unit_test(test_eject_growth_and_cap),
        cmocka_unit_test(test_eject_shift_cap),
        cmocka_unit_test(test_eject_resets_after_long_uptime),
        cmocka_unit_test(test_hist_values),
        cmocka_unit_test(test_hist_bounds),
        cmocka_unit_test(test_stats_json),
        cmocka_unit_test(test_stats_json_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
