/* test_jsonw.c — unit tests for the one JSON writer (src/core/jsonw.h): both layouts, commas from
 * the nesting stack, every value type, string escaping (quote, backslash, named and \u00xx
 * control characters), UTF-8 copied through and invalid bytes replaced by U+FFFD, the UTF-8
 * validity rules, and the balancer's /stats document escaping a health-check message with
 * control characters (regression: it was written unescaped and broke the document). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/jsonw.h"
#include "lb/servers.h"

#define FFFD "\xef\xbf\xbd"

/* jsonw_put_str of in[0, n) gives exactly out (n and the output's length given, for NULs). */
static const struct {
    const char *in;
    size_t n;
    const char *out;
    size_t outlen;
} strings[] = {
#define S(in, out)                                                                                                     \
    {                                                                                                                  \
        in, sizeof(in) - 1, out, sizeof(out) - 1                                                                       \
    }
    S("plain", "\"plain\""),
    S("", "\"\""),
    S("q\"b\\s/", "\"q\\\"b\\\\s/\""),
    S("\n\r\t\b\f\x01\x1f\x7f", "\"\\n\\r\\t\\u0008\\u000c\\u0001\\u001f\x7f\""),
    S("a\0b", "\"a\\u0000b\""),
    /* Valid UTF-8 is copied: é € 😀, and the largest code point. */
    S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""),
    S("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\""),
    /* Each byte that does not start a valid sequence becomes U+FFFD: a lone continuation byte, a
     * truncated sequence, an overlong '/', a surrogate, above U+10FFFF, 0xff. */
    S("a\x80", "\"a" FFFD "\""),
    S("\xe2\x82", "\"" FFFD FFFD "\""),
    S("\xc0\xaf", "\"" FFFD FFFD "\""),
    S("\xed\xa0\x80x", "\"" FFFD FFFD FFFD "x\""),
    S("\xf4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""),
    S("\xff\"", "\"" FFFD "\\\"\""),
#undef S
};

static void test_layouts_and_commas(void **state)
{
    struct buf b = {0};
    for (int layout = JSONW_COMPACT; layout <= JSONW_SPACED; layout++) {
        struct jsonw w;
        buf_reset(&b);
        buf_puts(&b, "PRE"); /* appends to what is there */
        jsonw_init(&w, &b, layout);
        jsonw_object(&w);
        jsonw_key(&w, "a");
        jsonw_int(&w, -12);
        jsonw_key(&w, "empty");
        jsonw_object(&w);
        jsonw_end(&w);
        jsonw_key(&w, "list");
        jsonw_array(&w);
        jsonw_uint(&w, UINT64_MAX);
        jsonw_array(&w);
        jsonw_end(&w);
        jsonw_object(&w);
        jsonw_key(&w, "x");
        jsonw_null(&w);
        jsonw_end(&w);
        jsonw_bool(&w, 1);
        jsonw_bool(&w, 0);
        jsonw_end(&w);
        jsonw_key(&w, "d");
        jsonw_double(&w, 1.0235, 3);
        jsonw_key(&w, "nan");
        jsonw_double(&w, NAN, 3);
        jsonw_key(&w, "raw");
        jsonw_raw(&w, "\"42\"", 4);
        jsonw_key(&w, "min");
        jsonw_int(&w, INT64_MIN);
        jsonw_end(&w);
        assert_int_equal(w.depth, 0);
        if (layout == JSONW_COMPACT)
            assert_string_equal(buf_cstr(&b),
                                "PRE{\"a\":-12,\"empty\":{},\"list\":[18446744073709551615,[],{\"x\":null},"
                                "true,false],\"d\":1.024,\"nan\":null,\"raw\":\"42\","
                                "\"min\":-9223372036854775808}");
        else
            assert_string_equal(buf_cstr(&b),
                                "PRE{\"a\": -12, \"empty\": {}, \"list\": [18446744073709551615, [], {\"x\": null}, "
                                "true, false], \"d\": 1.024, \"nan\": null, \"raw\": \"42\", "
                                "\"min\": -9223372036854775808}");
    }
    buf_free(&b);
}

static void test_top_level_scalars_and_arrays(void **state)
{
    struct buf b = {0};
    struct jsonw w;
    jsonw_init(&w, &b, JSONW_COMPACT);
    jsonw_cstr(&w, "alone");
    assert_string_equal(buf_cstr(&b), "\"alone\"");
    buf_reset(&b);
    jsonw_init(&w, &b, JSONW_SPACED);
    jsonw_array(&w);
    jsonw_cstr(&w, "a");
    jsonw_int(&w, 0);
    jsonw_end(&w);
    assert_string_equal(buf_cstr(&b), "[\"a\", 0]");
    buf_free(&b);
}

static void test_strings(void **state)
{
    struct buf b = {0};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        buf_reset(&b);
        jsonw_put_str(&b, strings[i].in, strings[i].n);
        if (buf_used(&b) != strings[i].outlen || memcmp(buf_head(&b), strings[i].out, strings[i].outlen))
            fail_msg("case %zu: got %.*s", i, (int)buf_used(&b), buf_head(&b));
        assert_true(jsonw_utf8_valid(buf_head(&b), buf_used(&b), NULL));
    }
    /* Keys are escaped too. */
    struct jsonw w;
    buf_reset(&b);
    jsonw_init(&w, &b, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_key(&w, "k\"\n");
    jsonw_cstr(&w, "v");
    jsonw_end(&w);
    assert_string_equal(buf_cstr(&b), "{\"k\\\"\\n\":\"v\"}");
    buf_free(&b);
}

static void test_utf8_valid(void **state)
{
    size_t n = 99;
    assert_true(jsonw_utf8_valid("", 0, &n));
    assert_int_equal(n, 0);
    assert_true(jsonw_utf8_valid("caf\xc3\xa9\xf0\x9f\x98\x80", 9, &n));
    assert_int_equal(n, 5);
    assert_true(jsonw_utf8_valid("\xf4\x8f\xbf\xbf", 4, NULL));  /* U+10FFFF */
    assert_false(jsonw_utf8_valid("\xf4\x90\x80\x80", 4, NULL)); /* above U+10FFFF */
    assert_false(jsonw_utf8_valid("\xc1\xbf", 2, NULL));         /* overlong */
    assert_false(jsonw_utf8_valid("\xe0\x80\x80", 3, NULL));     /* overlong */
    assert_false(jsonw_utf8_valid("\xed\xbf\xbf", 3, NULL));     /* surrogate */
    assert_false(jsonw_utf8_valid("\xc3", 1, NULL));             /* truncated */
    assert_false(jsonw_utf8_valid("\x80", 1, NULL));
    assert_false(jsonw_utf8_valid("\xf8\x88\x80\x80\x80", 5, NULL));
}

/* Regression: /stats copied a health-check message's control characters into the document raw. */
static void test_stats_escapes_check_messages(void **state)
{
    char err[256];
    struct lb_server *s = lb_server_new("http://127.0.0.1:8001", err, sizeof(err));
    assert_non_null(s);
    snprintf(s->hc_last, sizeof(s->hc_last), "bad\r\n\"x\"\x01\\");
    struct lb_server *one[] = {s};
    struct lb_set *set = lb_set_new(one, 1, 1);
    struct buf out = {0};
    lb_stats_json(set, "round-robin", &out);
    const char *text = buf_cstr(&out);
    assert_non_null(strstr(text, "\"last_check\": \"bad\\r\\n\\\"x\\\"\\u0001\\\\\"}]}\n"));
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    json_t *s0 = json_array_get(json_object_get(root, "servers"), 0);
    assert_string_equal(json_string_value(json_object_get(s0, "last_check")), "bad\r\n\"x\"\x01\\");
    json_decref(root);
    buf_free(&out);
    lb_set_unref(set);
    lb_server_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layouts_and_commas),
        cmocka_unit_test(test_top_level_scalars_and_arrays),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_stats_escapes_check_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
