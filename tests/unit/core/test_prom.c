/* test_prom.c — unit tests for the Prometheus text pieces (src/core/prom.c): the bucket of a
 * duration at and around every bound, label escaping, samples with and without labels, seconds
 * written from µs, and a histogram's lines (cumulative, +Inf last, _sum and _count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/prom.h"

static void test_bucket_edges(void **state)
{
    static const uint64_t bounds[] = PROM_BOUNDS_US;
    assert_int_equal(sizeof(bounds) / sizeof(bounds[0]), PROM_BUCKETS - 1);
    assert_int_equal(prom_bucket(0), 0);
    for (unsigned b = 0; b < PROM_BUCKETS - 1; b++) {
        assert_int_equal(prom_bucket(bounds[b]), b); /* le: the bound itself is inside */
        assert_int_equal(prom_bucket(bounds[b] + 1), b + 1);
        if (b > 0)
            assert_int_equal(prom_bucket(bounds[b - 1] + 1), b);
    }
    assert_int_equal(prom_bucket(UINT64_MAX), PROM_BUCKETS - 1);
}

static void test_label_escaping_and_samples(void **state)
{
    struct buf b = {0};
    prom_label_value(&b, "plain:80");
    prom_label_value(&b, "a\\b\"c\nd");
    assert_string_equal(buf_cstr(&b), "plain:80a\\\\b\\\"c\\nd");
    buf_reset(&b);
    prom_family(&b, "x_total", "counter", "Things.");
    prom_sample(&b, "x_total", NULL, 0);
    prom_sample(&b, "x_total", "", 7);
    prom_sample(&b, "x_total", "k=\"v\"", 18446744073709551615ull);
    prom_sample_seconds(&b, "t_seconds", NULL, 0);
    prom_sample_seconds(&b, "t_seconds", "k=\"v\"", 12345678);
    prom_sample_seconds(&b, "t_seconds", NULL, 5);
    prom_sample2(&b, "y", "server=\"a\"", "code=\"2xx\"", 3);
    prom_sample2(&b, "y", "server=\"a\"", NULL, 4);
    prom_sample2(&b, "y", NULL, "code=\"2xx\"", 5);
    assert_string_equal(buf_cstr(&b), "# HELP x_total Things.\n# TYPE x_total counter\n"
                                      "x_total 0\nx_total 7\nx_total{k=\"v\"} 18446744073709551615\n"
                                      "t_seconds 0.000000\nt_seconds{k=\"v\"} 12.345678\nt_seconds 0.000005\n"
                                      "y{server=\"a\",code=\"2xx\"} 3\ny{server=\"a\"} 4\ny{code=\"2xx\"} 5\n");
    buf_free(&b);
}

static void test_histogram_lines(void **state)
{
    struct buf b = {0};
    uint64_t counts[PROM_BUCKETS] = {0};
    counts[0] = 2;  /* <= 0.5 ms */
    counts[3] = 1;  /* <= 5 ms */
    counts[14] = 4; /* > 10 s */
    prom_histogram(&b, "h_seconds", "route=\"/a\"", counts, 2500000);
    const char *want = "h_seconds_bucket{route=\"/a\",le=\"0.0005\"} 2\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.0025\"} 2\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.005\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.01\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.025\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.05\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.1\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.25\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"1\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"2.5\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"5\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"10\"} 3\n"
                       "h_seconds_bucket{route=\"/a\",le=\"+Inf\"} 7\n"
                       "h_seconds_sum{route=\"/a\"} 2.500000\n"
                       "h_seconds_count{route=\"/a\"} 7\n";
    assert_string_equal(buf_cstr(&b), want);
    buf_reset(&b);
    memset(counts, 0, sizeof(counts));
    prom_histogram(&b, "w_seconds", NULL, counts, 0);
    assert_non_null(strstr(buf_cstr(&b), "w_seconds_bucket{le=\"0.0005\"} 0\n"));
    assert_non_null(
        strstr(buf_cstr(&b), "w_seconds_bucket{le=\"+Inf\"} 0\nw_seconds_sum 0.000000\nw_seconds_count 0\n"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_label_escaping_and_samples),
        cmocka_unit_test(test_histogram_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
