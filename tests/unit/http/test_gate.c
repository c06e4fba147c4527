/* test_gate.c — unit tests for the operators' gate (src/http/gate.c) through http_gate_admit:
 * a foreign Host is refused before anything else; without a token only loopback clients pass
 * (an outside address is refused even with a Host naming the listener); with a token every
 * client must present it, a missing or wrong one is 401 with WWW-Authenticate, and after
 * HTTP_GATE_FAIL_LIMIT wrong ones from an address that address gets 429 while the right token
 * still passes (the Host tables are in tests/unit/lb/test_admin.c). Every refusal closes its
 * connection (resp.close), every admitted request leaves it open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/gate.h"
#include "http/parser.h"

static struct http_head head;

/* Runs the gate on a GET /metrics with this Host and Authorization (NULL: none) from ip.
 * Returns the status (200 when admitted); the body goes to body when not NULL. */
static int run(struct http_gate *g, const char *ip, const char *host, const char *auth, char *body, size_t bodylen)
{
    char text[512];
    int n = snprintf(text, sizeof(text), "GET /metrics HTTP/1.1\r\nHost: %s\r\n", host);
    if (auth)
        n += snprintf(text + n, sizeof(text) - n, "Authorization: %s\r\n", auth);
    snprintf(text + n, sizeof(text) - n, "\r\n");
    if (http_parse_request(text, strlen(text), NULL, &head) <= 0)
        fail_msg("request did not parse: %s", text);
    struct http_request req = {.head = &head, .body = "", .remote_addr = ip};
    struct http_response resp = {.status = 200};
    int ok = http_gate_admit(g, &req, &resp);
    if (ok)
        assert_int_equal(resp.status, 200);
    else
        assert_true(resp.status >= 400);
    assert_int_equal(resp.close, !ok); /* a refusal ends its connection (review of issue 13) */
    if (body)
        snprintf(body, bodylen, "%s", buf_cstr(&resp.body));
    int st = ok ? 200 : resp.status;
    buf_free(&resp.headers);
    buf_free(&resp.body);
    return st;
}

static void gate_on(struct http_gate *g, const char *listen)
{
    struct net_addr addr;
    assert_int_equal(net_parse_addr(listen, &addr), 0);
    http_gate_init(g, listen, &addr);
    g->api = "metrics";
    g->addr_name = "metrics address";
}

static void test_no_token_loopback_only(void **state)
{
    struct http_gate g;
    char body[512];
    gate_on(&g, "0.0.0.0:9100"); /* a wildcard listener without a token: loopback clients only */
    assert_int_equal(run(&g, "127.0.0.1", "127.0.0.1:9100", NULL, NULL, 0), 200);
    assert_int_equal(run(&g, "::1", "localhost", NULL, NULL, 0), 200);
    assert_int_equal(run(&g, "127.0.0.1", "localhost:9100", "Bearer anything", NULL, 0), 200);
    assert_int_equal(run(&g, "192.0.2.7", "192.0.2.1:9100", NULL, body, sizeof(body)), 403);
    assert_non_null(strstr(body, "only loopback clients"));
    assert_int_equal(run(&g, "10.1.2.3", "localhost", "Bearer x", NULL, 0), 403);
    /* a foreign Host is refused even from loopback (DNS rebinding) */
    assert_int_equal(run(&g, "127.0.0.1", "rebind.evil.example", NULL, body, sizeof(body)), 403);
    assert_non_null(strstr(body, "metrics: the Host header must be localhost, a loopback address or the metrics "
                                 "address (DNS rebinding defence)"));
}

static void test_token_required_and_throttled(void **state)
{
    struct http_gate g;
    char body[512];
    gate_on(&g, "0.0.0.0:9100");
    snprintf(g.token, sizeof(g.token), "%s", "s3cret-s3cret-s3cret");
    assert_int_equal(run(&g, "127.0.0.1", "localhost", NULL, body, sizeof(body)), 401); /* loopback too */
    assert_non_null(strstr(body, "missing bearer token"));
    assert_int_equal(run(&g, "192.0.2.7", "192.0.2.1", "Bearer s3cret-s3cret-s3cret", NULL, 0), 200);
    assert_int_equal(run(&g, "192.0.2.7", "evil.example", "Bearer s3cret-s3cret-s3cret", NULL, 0), 403);
    for (int i = 0; i < HTTP_GATE_FAIL_LIMIT; i++)
        assert_int_equal(run(&g, "192.0.2.7", "192.0.2.1", "Bearer wrong", NULL, 0), 401);
    assert_int_equal(run(&g, "192.0.2.7", "192.0.2.1", "Bearer wrong", body, sizeof(body)), 429);
    assert_non_null(strstr(body, "too many failed attempts from 192.0.2.7"));
    /* the right token still passes from that address, and another address is not throttled */
    assert_int_equal(run(&g, "192.0.2.7", "192.0.2.1", "Bearer s3cret-s3cret-s3cret", NULL, 0), 200);
    assert_int_equal(run(&g, "192.0.2.8", "192.0.2.1", "Bearer wrong", NULL, 0), 401);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_token_loopback_only),
        cmocka_unit_test(test_token_required_and_throttled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
