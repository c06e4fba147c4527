/* test_parser.c — unit tests for the HTTP/1.1 head parser and chunked decoder (src/http/parser.h).
 * Every case states its exact outcome: bytes used, status code, decoded bytes. Partial-input tests
 * copy each prefix into a buffer of exactly that size so AddressSanitizer builds catch over-reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define N(a)   (sizeof(a) / sizeof((a)[0]))
#define LIT(s) s, sizeof(s) - 1

static struct http_head H; /* large (100 headers); one shared instance is enough */

#define assert_str(hs, lit) assert_str_at((hs), (lit), __FILE__, __LINE__)
static void assert_str_at(struct http_str s, const char *want, const char *file, int line)
{
    size_t n = strlen(want);
    if (s.n != n || (n && memcmp(s.p, want, n) != 0)) {
        fprintf(stderr, "%s:%d: got \"%.*s\" (%zu), want \"%s\"\n", file, line, (int)s.n, s.p ? s.p : "", s.n, want);
        fail();
    }
}

static int req(const char *s) { return http_parse_request(s, strlen(s), NULL, &H); }
static int resp(const char *s, enum http_method m) { return http_parse_response(s, strlen(s), m, NULL, &H); }

/* ---- requests ------------------------------------------------------------------------------- */

static void test_simple_get(void **state)
{
    const char *s = "GET /index.html?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1.0\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(H.method, HTTP_GET);
    assert_str(H.method_str, "GET");
    assert_str(H.target, "/index.html?x=1&y=2");
    assert_str(H.path, "/index.html");
    assert_str(H.query, "x=1&y=2");
    assert_int_equal(H.minor, 1);
    assert_int_equal(H.nheaders, 2);
    assert_str(H.headers[0].name, "Host");
    assert_str(H.headers[0].value, "example.com");
    assert_str(H.headers[1].name, "User-Agent");
    assert_str(H.headers[1].value, "test/1.0");
    assert_int_equal(H.body, HTTP_BODY_NONE);
    assert_int_equal(H.content_length, -1);
    assert_int_equal(H.keep_alive, 1);
    assert_int_equal(H.expect_continue, 0);
    assert_int_equal(H.upgrade, 0);
    assert_str(H.host, "example.com");
    assert_int_equal(H.connection.n, 0);
    assert_null(H.connection.p);
    assert_int_equal(H.error_status, 0);
    assert_null(H.error);
    /* strings point into the caller's buffer */
    assert_ptr_equal(H.method_str.p, s);
    assert_ptr_equal(H.target.p, s + 4);
}

static void test_all_methods(void **state)
{
    static const struct {
        const char *name, *target;
        enum http_method m;
    } cases[] = {
        {"GET", "/", HTTP_GET},
        {"HEAD", "/", HTTP_HEAD},
        {"POST", "/", HTTP_POST},
        {"PUT", "/", HTTP_PUT},
        {"DELETE", "/", HTTP_DELETE},
        {"OPTIONS", "/", HTTP_OPTIONS},
        {"OPTIONS", "*", HTTP_OPTIONS},
        {"PATCH", "/", HTTP_PATCH},
        {"TRACE", "/", HTTP_TRACE},
        {"CONNECT", "example.com:443", HTTP_CONNECT},
        {"PROPFIND", "/", HTTP_OTHER},
        {"get", "/", HTTP_OTHER}, /* methods are case-sensitive */
        {"GETX", "/", HTTP_OTHER},
        {"M-SEARCH", "/", HTTP_OTHER},
        {"!#$%&'*+-.^_`|~09azAZ", "/", HTTP_OTHER},
    };
    char buf[256];
    for (size_t i = 0; i < N(cases); i++) {
        int n = snprintf(buf, sizeof(buf), "%s %s HTTP/1.1\r\nHost: h\r\n\r\n", cases[i].name, cases[i].target);
        assert_int_equal(req(buf), n);
        assert_int_equal(H.method, cases[i].m);
        assert_str(H.method_str, cases[i].name);
        if (cases[i].m != HTTP_OTHER)
            assert_string_equal(http_method_name(cases[i].m), cases[i].name);
    }
    assert_string_equal(http_method_name(HTTP_OTHER), "OTHER");
}

static void test_pipelined(void **state)
{
    const char *s = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                    "\r\n" /* a stray CRLF between requests is tolerated (RFC 9112 §2.2) */
                    "DELETE /c?d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                    "GET /partial HTTP/1.1\r\nHo";
    size_t len = strlen(s), off = 0;
    int n;

    n = http_parse_request(s, len, NULL, &H);
    assert_int_equal(n, 28);
    assert_str(H.path, "/a");
    off += (size_t)n;

    n = http_parse_request(s + off, len - off, NULL, &H);
    assert_int_equal(n, 48);
    assert_int_equal(H.method, HTTP_POST);
    assert_int_equal(H.body, HTTP_BODY_LENGTH);
    assert_int_equal(H.content_length, 5);
    off += (size_t)n;
    assert_memory_equal(s + off, "hello", 5);
    off += 5;

    n = http_parse_request(s + off, len - off, NULL, &H);
    assert_int_equal(n, 2 + 52);
    assert_int_equal(H.method, HTTP_DELETE);
    assert_str(H.path, "/c");
    assert_str(H.query, "d");
    assert_int_equal(H.keep_alive, 0);
    off += (size_t)n;

    assert_int_equal(http_parse_request(s + off, len - off, NULL, &H), HTTP_AGAIN);
}

/* Every proper prefix of msg must give AGAIN, the whole must give its length. */
static void check_every_split(const char *msg, int is_req, enum http_method m)
{
    size_t len = strlen(msg);
    for (size_t k = 0; k <= len; k++) {
        char *b = malloc(k ? k : 1);
        int rc;
        assert_non_null(b);
        memcpy(b, msg, k);
        rc = is_req ? http_parse_request(b, k, NULL, &H) : http_parse_response(b, k, m, NULL, &H);
        if (rc != (k == len ? (int)len : HTTP_AGAIN))
            fprintf(stderr, "prefix %zu of %zu: rc %d (%s)\n", k, len, rc, H.error ? H.error : "");
        assert_int_equal(rc, k == len ? (int)len : HTTP_AGAIN);
        free(b);
    }
}

static void test_partial_every_split(void **state)
{
    check_every_split("GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Empty:\r\n\r\n", 1, 0);
    check_every_split("\r\nPOST /upload HTTP/1.1\r\nHost: h:8080\r\nTransfer-Encoding: chunked\r\n"
                      "Expect: 100-continue\r\n\r\n",
                      1, 0);
    check_every_split("OPTIONS * HTTP/1.0\r\n\r\n", 1, 0);
    check_every_split("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n", 0, HTTP_GET);
    check_every_split("HTTP/1.0 404 \r\n\r\n", 0, HTTP_GET);
    check_every_split("HTTP/1.1 204\r\nX: y\r\n\r\n", 0, HTTP_GET);
}

static void test_query_split(void **state)
{
    static const struct {
        const char *method, *target, *path, *query;
    } cases[] = {
        {"GET", "/", "/", ""},
        {"GET", "/a/b", "/a/b", ""},
        {"GET", "/a?b=c", "/a", "b=c"},
        {"GET", "/a?", "/a", ""},
        {"GET", "/?x", "/", "x"},
        {"GET", "/a?b?c=/d", "/a", "b?c=/d"},
        {"GET", "/%20x?q=%41", "/%20x", "q=%41"},
        {"GET", "//double", "//double", ""},
        {"GET", "http://example.com/p?q=1", "/p", "q=1"},
        {"GET", "http://example.com", "/", ""},
        {"GET", "http://example.com?x", "/", "x"},
        {"GET", "HTTPS://example.com:8443/a/b", "/a/b", ""},
        {"GET", "http://[::1]:80/v6", "/v6", ""},
        {"OPTIONS", "*", "*", ""},
        {"CONNECT", "example.com:443", "example.com:443", ""},
        {"CONNECT", "[::1]:443", "[::1]:443", ""},
    };
    char buf[256];
    for (size_t i = 0; i < N(cases); i++) {
        int n = snprintf(buf, sizeof(buf), "%s %s HTTP/1.1\r\nHost: h\r\n\r\n", cases[i].method, cases[i].target);
        assert_int_equal(req(buf), n);
        assert_str(H.target, cases[i].target);
        assert_str(H.path, cases[i].path);
        assert_str(H.query, cases[i].query);
    }
}

static void test_header_trimming(void **state)
{
    const char *s = "GET / HTTP/1.1\r\n"
                    "Host:h\r\n"
                    "X-A:   v  \r\n"
                    "X-B:\tv\t\r\n"
                    "X-C:\r\n"
                    "X-D: a  b \t c\r\n"
                    "X-E:  \t  \r\n"
                    "x-f: \x80\xff utf8\r\n"
                    "X-G: \"quoted, list\" ;x=1\r\n"
                    "\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(H.nheaders, 8);
    assert_str(H.headers[0].value, "h");
    assert_str(H.headers[1].value, "v");
    assert_str(H.headers[2].value, "v");
    assert_str(H.headers[3].value, "");
    assert_non_null(H.headers[3].value.p);
    assert_str(H.headers[4].value, "a  b \t c");
    assert_str(H.headers[5].value, "");
    assert_str(H.headers[6].value, "\x80\xff utf8");
    assert_str(H.headers[7].value, "\"quoted, list\" ;x=1");
    assert_ptr_equal(http_find_header(&H, "X-F"), &H.headers[6]);
    assert_ptr_equal(http_find_header(&H, "x-a"), &H.headers[1]);
    assert_ptr_equal(http_find_header(&H, "HOST"), &H.headers[0]);
    assert_null(http_find_header(&H, "X-Missing"));
    assert_null(http_find_header(&H, "X-"));
}

static void test_keep_alive(void **state)
{
    static const struct {
        const char *version, *headers;
        int keep_alive;
        const char *connection;
    } cases[] = {
        {"1.1", "", 1, NULL},
        {"1.1", "Connection: close\r\n", 0, "close"},
        {"1.1", "Connection: Close\r\n", 0, "Close"},
        {"1.1", "Connection: keep-alive\r\n", 1, "keep-alive"},
        {"1.1", "Connection: foo, CLOSE\r\n", 0, "foo, CLOSE"},
        {"1.1", "Connection: closed\r\n", 1, "closed"},
        {"1.1", "Connection: keep-alive\r\nConnection: close\r\n", 0, "keep-alive"},
        {"1.0", "", 0, NULL},
        {"1.0", "Connection: keep-alive\r\n", 1, "keep-alive"},
        {"1.0", "Connection: Keep-Alive , te\r\n", 1, "Keep-Alive , te"},
        {"1.0", "Connection: keep-alive, close\r\n", 0, "keep-alive, close"},
        {"1.0", "Connection: \r\n", 0, ""},
        {"1.2", "", 1, NULL}, /* a higher 1.x minor is handled as 1.1 */
        {"1.9", "Connection: close\r\n", 0, "close"},
    };
    char buf[256];
    for (size_t i = 0; i < N(cases); i++) {
        int n = snprintf(buf, sizeof(buf), "GET / HTTP/%s\r\nHost: h\r\n%s\r\n", cases[i].version, cases[i].headers);
        assert_int_equal(req(buf), n);
        assert_int_equal(H.minor, cases[i].version[2] == '0' ? 0 : 1);
        assert_int_equal(H.keep_alive, cases[i].keep_alive);
        if (cases[i].connection)
            assert_str(H.connection, cases[i].connection);
        else
            assert_null(H.connection.p);
    }
    /* HTTP/1.0 needs no Host */
    assert_int_equal(req("GET / HTTP/1.0\r\n\r\n"), 18);
    assert_int_equal(H.host.n, 0);
}

static struct http_str S(const char *s) {
    return (struct http_str){s, strlen(s)};
}

/* Every Connection header counts, not only the first; names compare ignoring case. */
static void
test_connection_lists(void **state)
{
    assert_true(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, close\r\n\r\n") > 0);
    assert_int_equal(H.conn_names, 0);
    assert_int_equal(http_connection_lists(&H, S("close")), 0); /* the flag short-cuts the scan */
    assert_true(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-A: 1\r\nConnection: X-A ,x-b\r\n\r\n") >
                0);
    assert_int_equal(H.conn_names, 1);
    assert_int_equal(http_connection_lists(&H, S("x-a")), 1);
    assert_int_equal(http_connection_lists(&H, S("X-B")), 1);
    assert_int_equal(http_connection_lists(&H, S("x-")), 0);
    assert_int_equal(http_connection_lists(&H, S("x-a2")), 0);
    assert_int_equal(http_connection_lists(&H, S("keep-alive")), 1);
    assert_true(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: ,\r\n\r\n") > 0);
    assert_int_equal(H.conn_names, 0); /* empty elements name nothing */
    /* names that merely contain a forbidden one are allowed */
    assert_true(req("GET / HTTP/1.1\r\nHost: h\r\nConnection: content-length2, x-host, hosts\r\n\r\n") > 0);
    assert_int_equal(H.conn_names, 1);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nConnection: X-Trace\r\nContent-Length: 0\r\n\r\n", HTTP_GET) > 0, 1);
    assert_int_equal(http_connection_lists(&H, S("x-trace")), 1);
}

static void test_expect_and_upgrade(void **state)
{
    assert_true(req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") > 0);
    assert_int_equal(H.expect_continue, 1);
    assert_true(req("PUT / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\nContent-Length: 3\r\n\r\n") > 0);
    assert_int_equal(H.expect_continue, 1);
    assert_true(req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") > 0);
    assert_int_equal(H.expect_continue, 0); /* ignored in HTTP/1.0 (RFC 9110 §10.1.1) */
    assert_true(req("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n") > 0);
    assert_int_equal(H.expect_continue, 0);

    assert_true(req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n") >
                0);
    assert_int_equal(H.upgrade, 1);
    assert_true(req("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n") > 0);
    assert_int_equal(H.upgrade, 0);
    assert_true(req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n") > 0);
    assert_int_equal(H.upgrade, 0);
}

static void test_request_body_kinds(void **state)
{
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n") > 0);
    assert_int_equal(H.body, HTTP_BODY_LENGTH);
    assert_int_equal(H.content_length, 10);
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n") > 0);
    assert_int_equal(H.body, HTTP_BODY_NONE);
    assert_int_equal(H.content_length, 0);
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n") > 0);
    assert_int_equal(H.content_length, 7);
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4611686018427387903\r\n\r\n") > 0);
    assert_int_equal(H.content_length, INT64_C(4611686018427387903)); /* 2^62 - 1 */
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
    assert_int_equal(H.body, HTTP_BODY_CHUNKED);
    assert_int_equal(H.content_length, -1);
    assert_true(req("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding:  CHUNKED \r\n\r\n") > 0);
    assert_int_equal(H.body, HTTP_BODY_CHUNKED);
    assert_true(req("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    assert_int_equal(H.body, HTTP_BODY_NONE);
}

struct bad_case {
    const char *name;
    const char *s;
    size_t n;
    int status;
};
#define BAD(name, s, status)                                                                                           \
    {                                                                                                                  \
        name, s, sizeof(s) - 1, status                                                                                 \
    }
#define HOST "Host: h\r\n"

static const struct bad_case bad_requests[] = {
    /* Connection listing a framing or routing field (smuggling through hop-by-hop removal) */
    BAD("Connection: content-length",
        "GET / HTTP/1.1\r\n" HOST "Connection: content-length\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("Connection: Content-Length", "GET / HTTP/1.1\r\n" HOST "Connection: Content-Length\r\n\r\n", 400),
    BAD("Connection: CONTENT-LENGTH", "GET / HTTP/1.1\r\n" HOST "Connection: CONTENT-LENGTH\r\n\r\n", 400),
    BAD("Connection: transfer-encoding",
        "POST / HTTP/1.1\r\n" HOST "Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("Connection: host", "GET / HTTP/1.1\r\n" HOST "Connection: host\r\n\r\n", 400),
    BAD("Connection: HoSt in 1.0", "GET / HTTP/1.0\r\nConnection: HoSt\r\n\r\n", 400),
    BAD("Connection: keep-alive, content-length",
        "GET / HTTP/1.1\r\n" HOST "Connection: keep-alive, content-length\r\n\r\n", 400),
    BAD("Connection: close,content-length", "GET / HTTP/1.1\r\n" HOST "Connection: close,content-length\r\n\r\n", 400),
    BAD("Connection: ' content-length '", "GET / HTTP/1.1\r\n" HOST "Connection:   content-length\t \r\n\r\n", 400),
    BAD("Connection: ,,content-length,", "GET / HTTP/1.1\r\n" HOST "Connection: ,,content-length,\r\n\r\n", 400),
    BAD("Connection: x \t, host", "GET / HTTP/1.1\r\n" HOST "Connection: x \t, host\r\n\r\n", 400),
    BAD("second Connection header",
        "GET / HTTP/1.1\r\n" HOST "Connection: keep-alive\r\nConnection: content-length\r\n\r\n", 400),
    BAD("Connection after CL",
        "GET / HTTP/1.1\r\n" HOST "Content-Length: 5\r\nX: y\r\nconnection: Transfer-Encoding\r\n\r\n", 400),
    BAD("lower-case header name", "GET / HTTP/1.1\r\n" HOST "CONNECTION: content-length\r\n\r\n", 400),
    /* framing / smuggling */
    BAD("CL+TE", "POST / HTTP/1.1\r\n" HOST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE+CL", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400),
    BAD("duplicate CL equal", "POST / HTTP/1.1\r\n" HOST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    BAD("duplicate CL different", "POST / HTTP/1.1\r\n" HOST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    BAD("CL +5", "POST / HTTP/1.1\r\n" HOST "Content-Length: +5\r\n\r\n", 400),
    BAD("CL -5", "POST / HTTP/1.1\r\n" HOST "Content-Length: -5\r\n\r\n", 400),
    BAD("CL ' 5 5'", "POST / HTTP/1.1\r\n" HOST "Content-Length:  5 5\r\n\r\n", 400),
    BAD("CL list", "POST / HTTP/1.1\r\n" HOST "Content-Length: 5, 5\r\n\r\n", 400),
    BAD("CL empty", "POST / HTTP/1.1\r\n" HOST "Content-Length: \r\n\r\n", 400),
    BAD("CL hex", "POST / HTTP/1.1\r\n" HOST "Content-Length: 0x5\r\n\r\n", 400),
    BAD("CL 2^62", "POST / HTTP/1.1\r\n" HOST "Content-Length: 4611686018427387904\r\n\r\n", 400),
    BAD("CL overflow", "POST / HTTP/1.1\r\n" HOST "Content-Length: 99999999999999999999999\r\n\r\n", 400),
    BAD("TE gzip", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: gzip\r\n\r\n", 501),
    BAD("TE gzip, chunked", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    BAD("TE xchunked", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: xchunked\r\n\r\n", 501),
    BAD("TE chunked, gzip", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    BAD("TE chunked twice",
        "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE chunked, chunked", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    BAD("TE empty", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding:\r\n\r\n", 400),
    BAD("TE empty element", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked,\r\n\r\n", 400),
    BAD("TE parameter", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: chunked;q=1\r\n\r\n", 400),
    BAD("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    BAD("TE name with space before colon", "POST / HTTP/1.1\r\n" HOST "Transfer-Encoding : chunked\r\n\r\n", 400),
    /* line syntax */
    BAD("obs-fold", "GET / HTTP/1.1\r\n" HOST "X-A: b\r\n c\r\n\r\n", 400),
    BAD("obs-fold tab", "GET / HTTP/1.1\r\n" HOST "X-A: b\r\n\tc\r\n\r\n", 400),
    BAD("whitespace before first header", "GET / HTTP/1.1\r\n " HOST "\r\n", 400),
    BAD("space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    BAD("tab before colon", "GET / HTTP/1.1\r\n" HOST "X-A\t: b\r\n\r\n", 400),
    BAD("bare LF ending header", "GET / HTTP/1.1\r\nHost: h\n\r\n", 400),
    BAD("bare LF ending head", "GET / HTTP/1.1\r\n" HOST "\n", 400),
    BAD("bare LF request line", "GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    BAD("bare LF everywhere", "GET / HTTP/1.1\nHost: h\n\n", 400),
    BAD("bare CR in header value", "GET / HTTP/1.1\r\n" HOST "X-A: a\rb\r\n\r\n", 400),
    BAD("bare CR request line", "GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    BAD("bare CR ending head", "GET / HTTP/1.1\r\n" HOST "\rX", 400),
    BAD("NUL in header value", "GET / HTTP/1.1\r\n" HOST "X-A: a\0b\r\n\r\n", 400),
    BAD("NUL in header name", "GET / HTTP/1.1\r\n" HOST "X\0A: b\r\n\r\n", 400),
    BAD("CTL in header value", "GET / HTTP/1.1\r\n" HOST "X-A: a\x01\r\n\r\n", 400),
    BAD("DEL in header value", "GET / HTTP/1.1\r\n" HOST "X-A: a\x7f\r\n\r\n", 400),
    BAD("header without colon", "GET / HTTP/1.1\r\n" HOST "NoColon\r\n\r\n", 400),
    BAD("empty header name", "GET / HTTP/1.1\r\n" HOST ": value\r\n\r\n", 400),
    BAD("bad char in header name", "GET / HTTP/1.1\r\n" HOST "X(A): b\r\n\r\n", 400),
    BAD("non-ASCII header name", "GET / HTTP/1.1\r\n" HOST "X\xc3\xa9: b\r\n\r\n", 400),
    /* request line */
    BAD("NUL in target", "GET /a\0b HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("CTL in target", "GET /a\x01 HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("TAB in target", "GET /a\tb HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("DEL in target", "GET /a\x7f HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("fragment in target", "GET /a#frag HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("space in target", "GET /a b HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("empty target", "GET  HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("double space", "GET  / HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("empty method", " / HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("bad char in method", "GE(T / HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("method then CRLF", "GET\r\n" HOST "\r\n", 400),
    BAD("leading bare LF", "\nGET / HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("missing version", "GET /\r\n" HOST "\r\n", 400),
    BAD("lowercase version", "GET / http/1.1\r\n" HOST "\r\n", 400),
    BAD("version two digits", "GET / HTTP/1.10\r\n" HOST "\r\n", 400),
    BAD("version no dot", "GET / HTTP/11\r\n" HOST "\r\n", 400),
    BAD("trailing space after version", "GET / HTTP/1.1 \r\n" HOST "\r\n", 400),
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\n" HOST "\r\n", 505),
    BAD("HTTP/3.0", "GET / HTTP/3.0\r\n" HOST "\r\n", 505),
    BAD("HTTP/0.9", "GET / HTTP/0.9\r\n" HOST "\r\n", 505),
    BAD("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    /* target forms */
    BAD("* with GET", "GET * HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("CONNECT origin-form", "CONNECT / HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("CONNECT empty port", "CONNECT example.com: HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("authority-form with GET", "GET example.com:80 HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("relative target", "GET index.html HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("ftp scheme", "GET ftp://example.com/ HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("empty authority", "GET http:///x HTTP/1.1\r\n" HOST "\r\n", 400),
    BAD("userinfo", "GET http://user@example.com/ HTTP/1.1\r\n" HOST "\r\n", 400),
    /* Host */
    BAD("missing Host", "GET / HTTP/1.1\r\n\r\n", 400),
    BAD("two Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    BAD("two equal Host", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    BAD("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    BAD("Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    BAD("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
};

static void test_malformed_requests(void **state)
{
    for (size_t i = 0; i < N(bad_requests); i++) {
        const struct bad_case *c = &bad_requests[i];
        char *b = malloc(c->n);
        int rc;
        assert_non_null(b);
        memcpy(b, c->s, c->n);
        rc = http_parse_request(b, c->n, NULL, &H);
        if (rc != HTTP_ERROR || H.error_status != c->status)
            fprintf(stderr, "case \"%s\": rc %d status %d (%s), want %d\n", c->name, rc, H.error_status,
                    H.error ? H.error : "-", c->status);
        assert_int_equal(rc, HTTP_ERROR);
        assert_int_equal(H.error_status, c->status);
        assert_non_null(H.error);
        assert_true(strlen(H.error) > 0);
        free(b);
    }
    assert_true(N(bad_requests) >= 40);
}

/* Builds "GET /aaa... HTTP/1.1\r\n" with a request line of exactly line_len bytes (CRLF excluded). */
static size_t make_line(char *b, size_t line_len)
{
    size_t tlen = line_len - strlen("GET  HTTP/1.1");
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', tlen - 1);
    memcpy(b + 4 + tlen, " HTTP/1.1\r\n", 11);
    return line_len + 2;
}

static void test_limits(void **state)
{
    static char b[40000];
    struct http_limits lim = {0, 0}; /* zero fields mean defaults */
    size_t n;

    /* request line: 8192 bytes allowed, 8193 is 414 (complete or not) */
    n = make_line(b, 8192);
    n += (size_t)sprintf(b + n, "Host: h\r\n\r\n");
    assert_int_equal(http_parse_request(b, n, NULL, &H), (int)n);
    assert_int_equal(http_parse_request(b, n, &lim, &H), (int)n);
    n = make_line(b, 8193);
    n += (size_t)sprintf(b + n, "Host: h\r\n\r\n");
    assert_int_equal(http_parse_request(b, n, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 414);
    assert_int_equal(http_parse_request(b, 8193 + 1, NULL, &H), HTTP_ERROR); /* with the CR, no LF yet */
    assert_int_equal(H.error_status, 414);
    assert_int_equal(http_parse_request(b, 8193, NULL, &H), HTTP_ERROR); /* no CRLF seen yet */
    assert_int_equal(H.error_status, 414);
    assert_int_equal(http_parse_request(b, 8000, NULL, &H), HTTP_AGAIN);
    make_line(b, 8192);
    assert_int_equal(http_parse_request(b, 8192 + 1, NULL, &H), HTTP_AGAIN); /* 8192 bytes + the CR */
    assert_int_equal(http_parse_request(b, 8192, NULL, &H), HTTP_AGAIN);
    memset(b, 'a', 9000); /* a 9000-byte method */
    assert_int_equal(http_parse_request(b, 9000, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 414);

    /* head: 16384 bytes allowed, 16385 is 431 (complete or not) */
    n = (size_t)sprintf(b, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(b + n, 'v', 16384 - n - 4);
    memcpy(b + 16384 - 4, "\r\n\r\n", 4);
    assert_int_equal(http_parse_request(b, 16384, NULL, &H), 16384);
    assert_int_equal(H.headers[1].value.n, 16384 - 4 - n);
    assert_int_equal(http_parse_request(b, 16383, NULL, &H), HTTP_AGAIN);
    memmove(b + n + 1, b + n, 16384 - n); /* one more value byte */
    assert_int_equal(http_parse_request(b, 16385, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 431);
    assert_int_equal(http_parse_request(b, 16384, NULL, &H), HTTP_AGAIN);
    memset(b + n, 'v', 20000); /* no end of line in sight */
    assert_int_equal(http_parse_request(b, 16385, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 431);
    assert_int_equal(http_parse_request(b, 16384, NULL, &H), HTTP_AGAIN);
    assert_int_equal(http_parse_request(b, 30000, NULL, &H), HTTP_ERROR); /* extra bytes do not matter */
    assert_int_equal(H.error_status, 431);

    /* header count: 100 allowed, 101 is 431 */
    n = (size_t)sprintf(b, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)sprintf(b + n, "X-%d: %d\r\n", i, i);
    memcpy(b + n, "\r\n", 2);
    assert_int_equal(http_parse_request(b, n + 2, NULL, &H), (int)n + 2);
    assert_int_equal(H.nheaders, HTTP_MAX_HEADERS);
    assert_str(H.headers[99].name, "X-99");
    n += (size_t)sprintf(b + n, "X-100: 100\r\n\r\n");
    assert_int_equal(http_parse_request(b, n, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 431);

    /* custom limits */
    lim.max_line = 20;
    lim.max_head = 60;
    assert_int_equal(http_parse_request(LIT("GET /012345 HTTP/1.1\r\nHost: h\r\n\r\n"), &lim, &H), 33);
    assert_int_equal(http_parse_request(LIT("GET /0123456 HTTP/1.1\r\nHost: h\r\n\r\n"), &lim, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 414);
    assert_int_equal(
        http_parse_request(LIT("GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789012345678901234567\r\n\r\n"), &lim, &H), 60);
    assert_int_equal(
        http_parse_request(LIT("GET / HTTP/1.1\r\nHost: h\r\nX: 01234567890123456789012345678\r\n\r\n"), &lim, &H),
        HTTP_ERROR);
    assert_int_equal(H.error_status, 431);
    /* leading empty lines count toward the head */
    assert_int_equal(http_parse_request(LIT("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), &lim, &H), 31);
}

static void test_helpers(void **state)
{
    struct http_str s = {"Keep-Alive", 10}, empty = {NULL, 0};
    assert_true(http_str_ieq(s, "keep-alive"));
    assert_true(http_str_ieq(s, "KEEP-ALIVE"));
    assert_false(http_str_ieq(s, "keep-aliv"));
    assert_false(http_str_ieq(s, "keep-alivee"));
    assert_true(http_str_ieq(empty, ""));
    assert_false(http_str_ieq((struct http_str){"[", 1}, "{")); /* not letters: no case folding */

    assert_true(http_list_has_token((struct http_str){LIT(" a , Upgrade,c")}, "upgrade"));
    assert_true(http_list_has_token((struct http_str){LIT("a")}, "a"));
    assert_true(http_list_has_token((struct http_str){LIT("x,,\ta\t")}, "a"));
    assert_false(http_list_has_token((struct http_str){LIT("ab, b a")}, "a"));
    assert_false(http_list_has_token((struct http_str){LIT("a")}, ""));
    assert_false(http_list_has_token(empty, "a"));

    assert_string_equal(http_reason(200), "OK");
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(414), "URI Too Long");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(502), "Bad Gateway");
    assert_string_equal(http_reason(505), "HTTP Version Not Supported");
    assert_string_equal(http_reason(999), "Unknown");
    assert_string_equal(http_reason(-1), "Unknown");
}

/* ---- responses ------------------------------------------------------------------------------ */

static void test_responses(void **state)
{
    static const struct {
        const char *s;
        enum http_method m;
        int status;
        enum http_body_kind body;
        int64_t cl;
        int keep_alive;
        const char *reason;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5, 1, "OK"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP_GET, 200, HTTP_BODY_NONE, 0, 1, "OK"},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n", HTTP_GET, 404, HTTP_BODY_LENGTH, 9, 1, "Not Found"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", HTTP_HEAD, 200, HTTP_BODY_NONE, 10, 1, "OK"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_HEAD, 200, HTTP_BODY_NONE, -1, 1, "OK"},
        {"HTTP/1.1 204 No Content\r\n\r\n", HTTP_DELETE, 204, HTTP_BODY_NONE, -1, 1, "No Content"},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", HTTP_GET, 304, HTTP_BODY_NONE, 100, 1,
         "Not Modified"},
        {"HTTP/1.1 100 Continue\r\n\r\n", HTTP_POST, 100, HTTP_BODY_NONE, -1, 1, "Continue"},
        {"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", HTTP_GET, 101,
         HTTP_BODY_NONE, -1, 0, "Switching Protocols"},
        {"HTTP/1.1 200 Connection established\r\n\r\n", HTTP_CONNECT, 200, HTTP_BODY_NONE, -1, 0,
         "Connection established"},
        {"HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\n", HTTP_CONNECT, 407, HTTP_BODY_LENGTH, 2, 1, "Auth"},
        {"HTTP/1.1 200 OK\r\n\r\n", HTTP_GET, 200, HTTP_BODY_EOF, -1, 0, "OK"},
        {"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", HTTP_GET, 200, HTTP_BODY_EOF, -1, 0, "OK"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_GET, 200, HTTP_BODY_CHUNKED, -1, 1, "OK"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5, 0,
         "OK"},
        {"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5, 0, "OK"},
        {"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5,
         1, "OK"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5, 1,
         "OK"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 5, 1, "OK"},
        {"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 1, 1, ""},
        {"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 1, 1, ""},
        {"HTTP/1.1 599 Odd  reason\t(x)\r\nContent-Length: 1\r\n\r\n", HTTP_GET, 599, HTTP_BODY_LENGTH, 1, 1,
         "Odd  reason\t(x)"},
        {"HTTP/1.2 200 OK\r\nContent-Length: 1\r\n\r\n", HTTP_GET, 200, HTTP_BODY_LENGTH, 1, 1, "OK"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        int n = resp(cases[i].s, cases[i].m);
        if (n <= 0)
            fprintf(stderr, "response case %zu: rc %d (%s)\n", i, n, H.error ? H.error : "-");
        assert_int_equal(n, (int)strlen(cases[i].s));
        assert_int_equal(H.status, cases[i].status);
        assert_int_equal(H.body, cases[i].body);
        assert_int_equal(H.content_length, cases[i].cl);
        assert_int_equal(H.keep_alive, cases[i].keep_alive);
        assert_str(H.reason, cases[i].reason);
    }
    assert_true(
        resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", HTTP_GET) > 0);
    assert_int_equal(H.upgrade, 1);
    assert_true(resp("HTTP/1.1 200 OK\r\nHost: x\r\nHost: y\r\nContent-Length: 0\r\n\r\n", HTTP_GET) > 0);
    assert_int_equal(H.host.n, 0); /* Host means nothing in a response */
}

static const struct bad_case bad_responses[] = {
    BAD("Connection: content-length", "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
        502),
    BAD("Connection: Transfer-Encoding",
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n", 502),
    BAD("second Connection: keep-alive, HOST",
        "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive, HOST\r\n\r\n", 502),
    BAD("different CLs", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 502),
    BAD("different CL list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", 502),
    BAD("CL empty element", "HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n", 502),
    BAD("CL sign", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", 502),
    BAD("CL+TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 502),
    BAD("TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 502),
    BAD("TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 502),
    BAD("TE chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 502),
    BAD("TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 502),
    BAD("HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", 502),
    BAD("lowercase version", "http/1.1 200 OK\r\n\r\n", 502),
    BAD("status 99", "HTTP/1.1 099 Low\r\n\r\n", 502),
    BAD("status 600", "HTTP/1.1 600 High\r\n\r\n", 502),
    BAD("status 4 digits", "HTTP/1.1 2000 OK\r\n\r\n", 502),
    BAD("status 2 digits", "HTTP/1.1 20 OK\r\n\r\n", 502),
    BAD("no status", "HTTP/1.1\r\n\r\n", 502),
    BAD("CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 502),
    BAD("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", 502),
    BAD("obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 502),
    BAD("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", 502),
    BAD("NUL in value", "HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n", 502),
    BAD("leading empty line", "\r\nHTTP/1.1 200 OK\r\n\r\n", 502),
};

static void test_malformed_responses(void **state)
{
    static char big[20000];
    size_t n;
    for (size_t i = 0; i < N(bad_responses); i++) {
        const struct bad_case *c = &bad_responses[i];
        int rc = http_parse_response(c->s, c->n, HTTP_GET, NULL, &H);
        if (rc != HTTP_ERROR || H.error_status != c->status)
            fprintf(stderr, "case \"%s\": rc %d status %d (%s)\n", c->name, rc, H.error_status,
                    H.error ? H.error : "-");
        assert_int_equal(rc, HTTP_ERROR);
        assert_int_equal(H.error_status, c->status);
        assert_non_null(H.error);
    }
    /* too large: 502 too, with the reason in error */
    n = (size_t)sprintf(big, "HTTP/1.1 200 OK\r\nX: ");
    memset(big + n, 'a', sizeof(big) - n);
    assert_int_equal(http_parse_response(big, sizeof(big), HTTP_GET, NULL, &H), HTTP_ERROR);
    assert_int_equal(H.error_status, 502);
    assert_string_equal(H.error, "response header section too large");
}

/* ---- chunked decoder ------------------------------------------------------------------------ */

struct dec {
    struct http_chunked d;
    char out[8192];
    size_t out_len;
    size_t used; /* input bytes consumed */
    int err;
};

/* Feeds in[0,len) until it is all consumed, the body ends or an error occurs. */
static void feed_all(struct dec *x, const char *in, size_t len)
{
    size_t off = 0;
    while (off < len && !x->err && !x->d.done) {
        const char *data;
        size_t dlen;
        long r = http_chunked_feed(&x->d, in + off, len - off, &data, &dlen);
        if (r < 0) {
            x->err = 1;
            return;
        }
        assert_true(r > 0); /* progress is always made on non-empty input before the end */
        if (dlen) {
            assert_true(data >= in + off && data + dlen <= in + off + (size_t)r);
            assert_true(x->out_len + dlen <= sizeof(x->out));
            memcpy(x->out + x->out_len, data, dlen);
            x->out_len += dlen;
        } else {
            assert_null(data);
        }
        off += (size_t)r;
        x->used += (size_t)r;
    }
}

/* Decodes in[0,len) fed in pieces of `step` bytes (0: all at once); each piece is a separate
 * allocation of exactly its size. */
static void decode(struct dec *x, const char *in, size_t len, size_t step)
{
    memset(x, 0, sizeof(*x));
    http_chunked_init(&x->d);
    for (size_t off = 0; off < len && !x->err && !x->d.done;) {
        size_t n = step && len - off > step ? step : len - off;
        char *piece = malloc(n);
        size_t before = x->used;
        assert_non_null(piece);
        memcpy(piece, in + off, n);
        feed_all(x, piece, n);
        free(piece);
        off += x->used - before;
        if (x->used - before < n)
            break; /* done or error */
    }
}

struct chunk_case {
    const char *name;
    const char *in;
    size_t len;
    int ok;          /* 1: decodes to the end; 0: error */
    const char *out; /* decoded bytes (up to the error) */
    size_t out_len;
    size_t used; /* bytes consumed when ok */
};
#define CK_OK(name, in, out, used)                                                                                     \
    {                                                                                                                  \
        name, in, sizeof(in) - 1, 1, out, sizeof(out) - 1, used                                                        \
    }
#define CK_BAD(name, in, out)                                                                                          \
    {                                                                                                                  \
        name, in, sizeof(in) - 1, 0, out, sizeof(out) - 1, 0                                                           \
    }

static const struct chunk_case chunk_cases[] = {
    CK_OK("simple", "5\r\nhello\r\n0\r\n\r\n", "hello", 15),
    CK_OK("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 26),
    CK_OK("hex sizes", "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij", 35),
    CK_OK("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", 20),
    CK_OK("16 digits", "0000000000000003\r\nabc\r\n0\r\n\r\n", "abc", 28),
    CK_OK("empty body", "0\r\n\r\n", "", 5),
    CK_OK("extensions", "5;a=b;c;d=\"x y\\\"z\"\r\nhello\r\n0;last\r\n\r\n", "hello", 37),
    CK_OK("extension BWS", "5 ; a = b ;c\t;\td=\"q\"\r\nhello\r\n0\r\n\r\n", "hello", 34),
    CK_OK("trailers", "5\r\nhello\r\n0\r\nX-Sum: 1234\r\nX-Empty:\r\n\r\n", "hello", 38),
    CK_OK("pipelined bytes untouched", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc", 13),
    CK_OK("binary data with CRLF", "4\r\n\r\n\0\n\r\n0\r\n\r\n", "\r\n\0\n", 14),
    CK_BAD("invalid hex", "5\r\nhello\r\ng\r\n", "hello"),
    CK_BAD("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("negative", "-5\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("plus sign", "+5\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("leading space", " 5\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("trailing space", "5 \r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("empty size", "\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n", "hello"),
    CK_BAD("data too long", "3\r\nhello\r\n0\r\n\r\n", "hel"),
    CK_BAD("LF only after data", "5\r\nhello\n0\r\n\r\n", "hello"),
    CK_BAD("CR without LF after data", "5\r\nhello\r0\r\n\r\n", "hello"),
    CK_BAD("bare LF after size", "5\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("bare CR after size", "5\rhello\r\n0\r\n\r\n", ""),
    CK_BAD("bare LF at end", "0\r\n\n", ""),
    CK_BAD("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("2^62", "4000000000000000\r\n", ""),
    CK_BAD("2^64 - 1", "ffffffffffffffff\r\n", ""),
    CK_BAD("empty extension", "5;\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension without name", "5;=x\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension without value", "5;a=\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension unterminated quote", "5;a=\"x\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension bad char", "5;a@b\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension two tokens", "5;a=b c\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension trailing space", "5;a \r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension CTL in quotes", "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("extension after quote", "5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", ""),
    CK_BAD("trailer with space in name", "0\r\nBad Header: x\r\n\r\n", ""),
    CK_BAD("trailer space before colon", "0\r\nX-A : x\r\n\r\n", ""),
    CK_BAD("trailer without colon", "0\r\nNoColon\r\n\r\n", ""),
    CK_BAD("trailer empty name", "0\r\n: x\r\n\r\n", ""),
    CK_BAD("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", ""),
    CK_BAD("trailer CTL", "0\r\nX: a\x01\r\n\r\n", ""),
    CK_BAD("trailer bare LF", "0\r\nX: a\n\r\n", ""),
    CK_BAD("trailer bare CR", "0\r\nX: a\rb\r\n\r\n", ""),
    CK_BAD("end CR without LF", "0\r\n\rX", ""),
};

static void check_chunk_case(const struct chunk_case *c, const struct dec *x, const char *how)
{
    if (x->err == c->ok || x->out_len != c->out_len)
        fprintf(stderr, "chunk case \"%s\" (%s): err %d out %zu used %zu\n", c->name, how, x->err, x->out_len, x->used);
    assert_int_equal(x->out_len, c->out_len);
    assert_memory_equal(x->out, c->out, c->out_len);
    assert_int_equal(x->err, !c->ok);
    assert_int_equal(x->d.done, c->ok);
    assert_int_equal(x->d.total, x->out_len);
    if (c->ok)
        assert_int_equal(x->used, c->used);
}

static void test_chunked_cases(void **state)
{
    static struct dec x;
    for (size_t i = 0; i < N(chunk_cases); i++) {
        const struct chunk_case *c = &chunk_cases[i];
        decode(&x, c->in, c->len, 0);
        check_chunk_case(c, &x, "whole");
        decode(&x, c->in, c->len, 1);
        check_chunk_case(c, &x, "byte by byte");
        decode(&x, c->in, c->len, 3);
        check_chunk_case(c, &x, "3 bytes");
    }
}

static void test_chunked_every_split(void **state)
{
    static const char in[] = "4;x=\"a;b\"\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nNEXT";
    static const char want[] = "Wikipedia in \r\n\r\nchunks.";
    static struct dec x;
    size_t len = sizeof(in) - 1;
    for (size_t k = 0; k <= len; k++) {
        memset(&x, 0, sizeof(x));
        feed_all(&x, in, k);
        feed_all(&x, in + x.used, len - x.used);
        assert_int_equal(x.err, 0);
        assert_int_equal(x.d.done, 1);
        assert_int_equal(x.used, len - 4);
        assert_int_equal(x.out_len, sizeof(want) - 1);
        assert_memory_equal(x.out, want, sizeof(want) - 1);
    }
}

static void test_chunked_api(void **state)
{
    struct http_chunked d;
    const char *data = (const char *)1;
    size_t dlen = 99;
    long r;

    /* data is reported as a span into the input, and consumption stops right after it */
    http_chunked_init(&d);
    r = http_chunked_feed(&d, LIT("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), &data, &dlen);
    assert_int_equal(r, 6);
    assert_int_equal(dlen, 3);
    assert_memory_equal(data, "abc", 3);
    r = http_chunked_feed(&d, LIT("\r\n2\r\nde\r\n0\r\n\r\n"), &data, &dlen);
    assert_int_equal(r, 7);
    assert_memory_equal(data, "de", 2);
    r = http_chunked_feed(&d, LIT("\r\n0\r\n\r\nXYZ"), &data, &dlen);
    assert_int_equal(r, 7);
    assert_null(data);
    assert_int_equal(dlen, 0);
    assert_int_equal(d.done, 1);
    assert_int_equal(d.total, 5);
    /* after the end nothing more is consumed */
    assert_int_equal(http_chunked_feed(&d, LIT("XYZ"), &data, &dlen), 0);
    /* empty input */
    http_chunked_init(&d);
    assert_int_equal(http_chunked_feed(&d, NULL, 0, &data, &dlen), 0);
    /* a partial data chunk reports what is there and remembers the rest */
    r = http_chunked_feed(&d, LIT("a\r\n01234"), &data, &dlen);
    assert_int_equal(r, 8);
    assert_int_equal(dlen, 5);
    assert_int_equal(d.remaining, 5);
    /* errors stick */
    assert_int_equal(http_chunked_feed(&d, LIT("56789X"), &data, &dlen), 5);
    assert_int_equal(http_chunked_feed(&d, LIT("X"), &data, &dlen), HTTP_ERROR);
    assert_int_equal(http_chunked_feed(&d, LIT("\r\n"), &data, &dlen), HTTP_ERROR);
    /* largest allowed size: 2^62 - 1 */
    http_chunked_init(&d);
    assert_int_equal(http_chunked_feed(&d, LIT("3fffffffffffffff\r\n"), &data, &dlen), 18);
    assert_int_equal(d.remaining, (UINT64_C(1) << 62) - 1);
}

static void test_chunked_line_limits(void **state)
{
    static char in[5000];
    static struct dec x;
    size_t n;

    /* size line of exactly 4096 bytes (CRLF excluded) is fine, 4097 is not */
    n = (size_t)sprintf(in, "1;e=");
    memset(in + n, 'v', 4096 - n);
    n = 4096;
    n += (size_t)sprintf(in + n, "\r\nZ\r\n0\r\n\r\n");
    decode(&x, in, n, 0);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.d.done, 1);
    assert_int_equal(x.out_len, 1);
    memmove(in + 5, in + 4, n - 4);
    decode(&x, in, n + 1, 0);
    assert_int_equal(x.err, 1);
    decode(&x, in, 4097, 1); /* detected before the line ends */
    assert_int_equal(x.err, 1);

    /* trailer line likewise */
    n = (size_t)sprintf(in, "0\r\nX: ");
    memset(in + n, 'v', 3 + 4096 - n);
    n = 3 + 4096;
    n += (size_t)sprintf(in + n, "\r\n\r\n");
    decode(&x, in, n, 0);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.d.done, 1);
    memmove(in + 7, in + 6, n - 6);
    decode(&x, in, n + 1, 0);
    assert_int_equal(x.err, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_all_methods),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_partial_every_split),
        cmocka_unit_test(test_query_split),
        cmocka_unit_test(test_header_trimming),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_expect_and_upgrade),
        cmocka_unit_test(test_request_body_kinds),
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_malformed_responses),
        cmocka_unit_test(test_connection_lists),
        cmocka_unit_test(test_chunked_cases),
        cmocka_unit_test(test_chunked_every_split),
        cmocka_unit_test(test_chunked_api),
        cmocka_unit_test(test_chunked_line_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
