/* test_tunnel.c — unit tests for the WebSocket parts of header rewriting (src/lb/rewrite.h, used
 * by src/lb/tunnel.c): which requests are tunnelled, the request head the backend gets and the 101
 * head the client gets, from heads parsed by the real parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lb/rewrite.h"

#define RID "0123456789abcdef0123456789abcdef"

struct msg {
    char raw[1024];
    struct http_head h;
};

static void parse(struct msg *m, const char *raw, int request)
{
    strcpy(m->raw, raw);
    int n = request ? http_parse_request(m->raw, strlen(m->raw), NULL, &m->h)
                    : http_parse_response(m->raw, strlen(m->raw), HTTP_GET, NULL, &m->h);
    if (n <= 0)
        fail_msg("parse(%s): %d", raw, n);
}

static int is_ws_request(const char *raw)
{
    struct msg m;
    parse(&m, raw, 1);
    return lb_rewrite_is_websocket(&m.h, 1);
}

#define UPG "Upgrade: websocket\r\nConnection: Upgrade\r\n"

static void test_which_requests(void **state)
{
    /* RFC 6455 §4.1: GET, HTTP/1.1, Connection lists upgrade, Upgrade is websocket (any case). */
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\n" UPG "\r\n"), 1);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\n\r\n"),
                     1);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\n" UPG "Content-Length: 0\r\n\r\n"), 1);
    /* Everything else is a plain request. */
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.0\r\nHost: h\r\n" UPG "\r\n"), 0);
    assert_int_equal(is_ws_request("POST /ws HTTP/1.1\r\nHost: h\r\n" UPG "\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\n" UPG "Content-Length: 5\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\n" UPG "Transfer-Encoding: chunked\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket, h2c\r\n"
                                   "Connection: Upgrade\r\n\r\n"),
                     0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\n" UPG "Upgrade: websocket\r\n\r\n"), 0);
    assert_int_equal(is_ws_request("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websockets\r\nConnection: Upgrade\r\n\r\n"),
                     0);
}

static void test_which_responses(void **state)
{
    struct msg m;
    parse(&m, "HTTP/1.1 101 Switching Protocols\r\n" UPG "\r\n", 0);
    assert_int_equal(lb_rewrite_is_websocket(&m.h, 0), 1);
    parse(&m, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 0);
    assert_int_equal(lb_rewrite_is_websocket(&m.h, 0), 0);
    parse(&m, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 0);
    assert_int_equal(lb_rewrite_is_websocket(&m.h, 0), 0);
}

/* The backend gets the request as lb_rewrite_request writes it, plus Connection and Upgrade. */
static void test_upgrade_request(void **state)
{
    struct msg m;
    parse(&m,
          "GET /chat HTTP/1.1\r\nHost: h\r\n" UPG "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "Sec-WebSocket-Version: 13\r\n\r\n",
          1);
    struct buf b = {0};
    assert_int_equal(lb_rewrite_request(&b, &m.h, "192.0.2.7", "127.0.0.1:8001", 0, RID, 0), 0);
    lb_rewrite_upgrade_request(&b);
    buf_append(&b, "", 1);
    assert_string_equal(buf_head(&b), "GET /chat HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                      "Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 192.0.2.7\r\n"
                                      "X-Forwarded-Proto: http\r\nX-Request-Id: " RID "\r\n"
                                      "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    buf_free(&b);
}

/* The client's 101: the backend's end-to-end fields in order, no framing or hop-by-hop field (nor
 * one its Connection lists), the request id, then Connection and Upgrade. */
static void test_switch_head(void **state)
{
    struct msg m;
    parse(&m,
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Secret\r\n"
          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
          "Content-Length: 0\r\nX-Request-Id: theirs\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
          0);
    struct buf b = {0};
    lb_rewrite_switch(&b, &m.h, RID);
    buf_append(&b, "", 1);
    assert_string_equal(buf_head(&b), "HTTP/1.1 101 Switching Protocols\r\n"
                                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                      "Sec-WebSocket-Protocol: chat\r\nX-Request-Id: " RID "\r\n"
                                      "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_which_requests),
        cmocka_unit_test(test_which_responses),
        cmocka_unit_test(test_upgrade_request),
        cmocka_unit_test(test_switch_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
