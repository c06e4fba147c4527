/* test_rewrite.c — unit tests for header rewriting (src/lb/rewrite.h): the exact request head a
 * backend gets and the exact response head a client gets, from heads parsed by the real parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lb/rewrite.h"

#define IP   "192.0.2.7"
#define RID  "0123456789abcdef0123456789abcdef"
#define HOST "127.0.0.1:8001"

struct req {
    char raw[1024];
    struct http_head h;
};

static void parse_req(struct req *r, const char *raw)
{
    strcpy(r->raw, raw);
    int n = http_parse_request(r->raw, strlen(r->raw), NULL, &r->h);
    if (n <= 0)
        fail_msg("parse_request(%s): %d", raw, n);
}

/* The request head for raw must be exactly want, with the given framing. */
static void expect_request(const char *raw, int trust, const char *want, int want_chunked)
{
    struct req r;
    parse_req(&r, raw);
    struct buf b = {0};
    int chunked = lb_rewrite_request(&b, &r.h, IP, HOST, trust, RID, 0);
    assert_int_equal(chunked, want_chunked);
    buf_append(&b, "", 1);
    /* The request id always follows X-Forwarded-Proto. */
    char full[2048];
    const char *at = strstr(want, "X-Forwarded-Proto: http\r\n");
    assert_non_null(at);
    size_t cut = (size_t)(at - want) + strlen("X-Forwarded-Proto: http\r\n");
    snprintf(full, sizeof(full), "%.*sX-Request-Id: " RID "\r\n%s", (int)cut, want, want + cut);
    assert_string_equal(buf_head(&b), full);
    buf_free(&b);
}

static void test_request_plain(void **state)
{
    expect_request("GET /a?b=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n", 0,
                   "GET /a?b=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: " IP
                   "\r\nX-Forwarded-Proto: http\r\n\r\n",
                   0);
}

/* Hop-by-hop fields and the fields Connection lists are not forwarded; the rest keep their order
 * and bytes. */
static void test_request_hop_by_hop(void **state)
{
    expect_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\nKeep-Alive: 5\r\n"
                   "TE: trailers\r\nProxy-Connection: x\r\nTrailer: y\r\nx-bar:  two words\r\nX-FOO: 2\r\n\r\n",
                   0,
                   "GET / HTTP/1.1\r\nHost: h\r\nx-bar: two words\r\nX-Forwarded-For: " IP
                   "\r\nX-Forwarded-Proto: http\r\n\r\n",
                   0);
}

/* An absolute-form target becomes origin-form (not for OPTIONS); HTTP/1.0 without Host gets the
 * server's authority; the version is always 1.1. */
static void test_request_target_and_host(void **state)
{
    expect_request(
        "GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", 0,
        "GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: " IP "\r\nX-Forwarded-Proto: http\r\n\r\n", 0);
    expect_request("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 0,
                   "OPTIONS * HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " IP "\r\nX-Forwarded-Proto: http\r\n\r\n", 0);
    expect_request("GET /x HTTP/1.0\r\n\r\n", 0,
                   "GET /x HTTP/1.1\r\nHost: " HOST "\r\nX-Forwarded-For: " IP "\r\nX-Forwarded-Proto: http\r\n\r\n",
                   0);
}

/* X-Forwarded-For: replaced, or (trusted) the first one extended; X-Forwarded-Proto replaced. */
static void test_request_forwarded(void **state)
{
    const char *raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
                      "X-Forwarded-For: 5.6.7.8\r\n\r\n";
    expect_request(raw, 0, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " IP "\r\nX-Forwarded-Proto: http\r\n\r\n",
                   0);
    expect_request(
        raw, 1, "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, " IP "\r\nX-Forwarded-Proto: http\r\n\r\n", 0);
}

/* The framing is the balancer's: one Content-Length, or chunked. */
static void test_request_framing(void **state)
{
    expect_request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", 0,
                   "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " IP
                   "\r\nX-Forwarded-Proto: http\r\nContent-Length: 5\r\n\r\n",
                   0);
    expect_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
                   "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " IP
                   "\r\nX-Forwarded-Proto: http\r\nTransfer-Encoding: chunked\r\n\r\n",
                   1);
}

static void test_acted_on(void **state)
{
    struct req r;
    parse_req(&r, "POST / HTTP/1.1\r\nHost: h\r\nConnection: Idempotency-Key\r\nIdempotency-Key: k\r\n\r\n");
    assert_string_equal(lb_rewrite_acted_on(&r.h), "idempotency-key");
    parse_req(&r, "POST / HTTP/1.1\r\nHost: h\r\nConnection: close, EXPECT\r\n\r\n");
    assert_string_equal(lb_rewrite_acted_on(&r.h), "expect");
    parse_req(&r, "POST / HTTP/1.1\r\nHost: h\r\nConnection: close, x-other\r\n\r\n");
    assert_null(lb_rewrite_acted_on(&r.h));
    parse_req(&r, "GET / HTTP/1.1\r\nHost: h\r\nIdempotency-Key: k\r\nExpect: 100-continue\r\n\r\n");
    assert_null(lb_rewrite_acted_on(&r.h));
}

/* The response head for raw (answering method) must be exactly want; *keep as it ends. */
static void expect_response(const char *raw, enum http_method method, int req_minor, int will_close, int keep_in,
                            const char *want, int want_chunked, int want_keep)
{
    char copy[1024];
    strcpy(copy, raw);
    struct http_head r;
    int n = http_parse_response(copy, strlen(copy), method, NULL, &r);
    if (n <= 0)
        fail_msg("parse_response(%s): %d", raw, n);
    struct buf b = {0};
    int keep = keep_in;
    int chunked = lb_rewrite_response(&b, &r, req_minor, will_close, &keep, RID, NULL);
    buf_append(&b, "", 1);
    /* The request id comes after the backend's fields, before those the balancer writes. */
    char full[2048];
    size_t cut = strlen(want) - 2;
    const char *const ours[] = {"Content-Length:", "Transfer-Encoding:", "Connection:"};
    for (int i = 0; i < 3; i++) {
        const char *at = strstr(want, ours[i]);
        if (at && (size_t)(at - want) < cut)
            cut = (size_t)(at - want);
    }
    snprintf(full, sizeof(full), "%.*sX-Request-Id: " RID "\r\n%s", (int)cut, want, want + cut);
    assert_string_equal(buf_head(&b), full);
    assert_int_equal(chunked, want_chunked);
    assert_int_equal(keep, want_keep);
    buf_free(&b);
}

static void test_response(void **state)
{
    /* Content-Length: one value; hop-by-hop and listed fields dropped */
    expect_response("HTTP/1.1 200 Fine\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                    "Content-Length: 3, 3\r\nX-Kept: a\r\n\r\n",
                    HTTP_GET, 1, 0, 1, "HTTP/1.1 200 Fine\r\nX-Kept: a\r\nContent-Length: 3\r\n\r\n", 0, 1);
    /* chunked: re-chunked for HTTP/1.1, ends with the connection for HTTP/1.0 */
    expect_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_GET, 1, 0, 1,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 1);
    expect_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_GET, 0, 0, 1,
                    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 0, 0);
    /* close-delimited: chunked for HTTP/1.1 */
    expect_response("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", HTTP_GET, 1, 0, 1,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 1);
    /* an HTTP/1.0 client kept alive is told so; one that will close is told so */
    expect_response("HTTP/1.1 204 No Content\r\n\r\n", HTTP_GET, 0, 0, 1,
                    "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n", 0, 1);
    expect_response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", HTTP_GET, 1, 1, 1,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0, 0);
    expect_response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", HTTP_GET, 1, 0, 0,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0, 0);
    /* a HEAD answer keeps its Content-Length and has no body to re-frame */
    expect_response("HTTP/1.0 200 OK\r\nContent-Length: 42\r\n\r\n", HTTP_HEAD, 1, 0, 1,
                    "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", 0, 1);
}

/* X-Request-Id: the client's fields never reach the backend (the balancer writes its own, once);
 * the backend's never reach the client (the request's id is echoed instead). */
static void test_request_id(void **state)
{
    struct req r;
    parse_req(&r, "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: forged\r\nx-request-id: again\r\n\r\n");
    struct buf b = {0};
    lb_rewrite_request(&b, &r.h, IP, HOST, 1, "abc", 0);
    buf_append(&b, "", 1);
    assert_string_equal(buf_head(&b), "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " IP
                                      "\r\nX-Forwarded-Proto: http\r\nX-Request-Id: abc\r\n\r\n");
    buf_free(&b);
    char resp[] = "HTTP/1.1 200 OK\r\nX-Request-Id: backend-made\r\nContent-Length: 0\r\n\r\n";
    struct http_head h;
    assert_true(http_parse_response(resp, strlen(resp), HTTP_GET, NULL, &h) > 0);
    int keep = 1;
    lb_rewrite_response(&b, &h, 1, 0, &keep, "abc", NULL);
    buf_append(&b, "", 1);
    assert_string_equal(buf_head(&b), "HTTP/1.1 200 OK\r\nX-Request-Id: abc\r\nContent-Length: 0\r\n\r\n");
    buf_free(&b);

    const char *good[] = {"a", "0123456789abcdef0123456789abcdef",
                          "req-1.2_3:4+5/6=", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    const char *bad[] = {"",
                         "with space",
                         "quote\"",
                         "semi;colon",
                         "tab\tx",
                         "caf\xc3\xa9",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 65 */};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(http_request_id_ok((struct http_str){good[i], strlen(good[i])}));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(http_request_id_ok((struct http_str){bad[i], strlen(bad[i])}));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_plain),
        cmocka_unit_test(test_request_hop_by_hop),
        cmocka_unit_test(test_request_target_and_host),
        cmocka_unit_test(test_request_forwarded),
        cmocka_unit_test(test_request_framing),
        cmocka_unit_test(test_acted_on),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_request_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
