/* fuzz_json.c — libFuzzer harness for the web app's JSON request input (src/app/api.h, json.h,
 * req.h): api_body() (size limit, UTF-8 check, jansson parse, object check and the 400/413
 * answers), api_string() on every member, jsonw_utf8_valid(), jsonw_put_str() and req_parse_id().
 * None of these needs a database: the struct api is built with a request and a response only.
 *
 * Build and run with `make fuzz` (or `make fuzz-smoke`); by hand, see fuzz_config.c, with
 * tests/fuzz/fuzz_json.c and the corpus tests/fuzz/corpus/json/.
 *
 * The input is the request body, copied into an allocation of exactly its size plus the NUL the
 * server guarantees. Besides memory errors, leaks and UB the harness traps when:
 *   - jsonw_utf8_valid() disagrees with a reference validator written from the Unicode standard
 *     (Table 3-7, well-formed byte sequences), or counts code points differently;
 *   - api_body() fails without answering 400/413 with a body that is a valid UTF-8 JSON object
 *     {"error": "..."}, or succeeds but changed the response or returned a non-object;
 *   - api_string() returns anything but 1 for a string member (with the same bytes), 0 for null,
 *     or -1 with a 400 error body for other types;
 *   - a string does not survive jsonw_put_str() and a jansson parse unchanged;
 *   - req_parse_id() accepts a string that is not 1-19 digits, or returns another value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/api.h"
#include "app/json.h"
#include "app/req.h"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

/* Reference UTF-8 validator (Unicode Table 3-7). */
static int ref_utf8(const unsigned char *s, size_t n, size_t *count)
{
    size_t i = 0, c = 0;
    while (i < n) {
        unsigned char b = s[i], lo = 0x80, hi = 0xbf;
        size_t len;
        if (b <= 0x7f) {
            i++;
            c++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf)
            len = 2;
        else if (b == 0xe0)
            len = 3, lo = 0xa0;
        else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef)
            len = 3;
        else if (b == 0xed)
            len = 3, hi = 0x9f;
        else if (b == 0xf0)
            len = 4, lo = 0x90;
        else if (b >= 0xf1 && b <= 0xf3)
            len = 4;
        else if (b == 0xf4)
            len = 4, hi = 0x8f;
        else
            return 0;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        i += len;
        c++;
    }
    *count = c;
    return 1;
}

static void check_utf8(const uint8_t *p, size_t n)
{
    size_t c1 = 0, c2 = 0;
    int v1 = jsonw_utf8_valid((const char *)p, n, &c1), v2 = ref_utf8(p, n, &c2);
    CHECK(v1 == v2);
    if (v1)
        CHECK(c1 == c2);
    CHECK(jsonw_utf8_valid((const char *)p, n, NULL) == v1);
}

/* The response is a 400 (or 413) with body {"error": "<message>"} that is valid UTF-8 JSON. */
static void check_error(struct http_response *resp, int status)
{
    CHECK(resp->status == status);
    size_t n = buf_used(&resp->body);
    CHECK(n > 0);
    CHECK(jsonw_utf8_valid(buf_head(&resp->body), n, NULL));
    json_error_t err;
    json_t *e = json_loadb(buf_head(&resp->body), n, 0, &err);
    CHECK(e != NULL);
    CHECK(json_is_object(e) && json_object_size(e) == 1);
    json_t *msg = json_object_get(e, "error");
    CHECK(json_is_string(msg) && json_string_length(msg) > 0);
    json_decref(e);
}

static void reset_response(struct http_response *resp)
{
    resp->status = 200;
    buf_reset(&resp->body);
    buf_reset(&resp->headers);
}

/* s[0,n) survives jsonw_put_str and a jansson parse. */
static void check_roundtrip(const char *s, size_t n)
{
    struct buf b = {0};
    jsonw_put_str(&b, s, n);
    json_error_t err;
    json_t *v = json_loadb(buf_head(&b), buf_used(&b), JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    CHECK(v != NULL && json_is_string(v));
    CHECK(json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0);
    json_decref(v);
    buf_free(&b);
}

static void check_id(const char *s, size_t n)
{
    int64_t id = -7;
    if (!req_parse_id(s, n, &id)) {
        CHECK(id == -7);
        return;
    }
    CHECK(n >= 1 && n <= 19 && strspn(s, "0123456789") >= n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    CHECK(id > 0 && (uint64_t)id == v);
}

static void check_members(struct api *a, json_t *obj)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        check_roundtrip(key, strlen(key));
        const char *s = NULL;
        size_t n = 0;
        int rc = api_string(a, obj, key, &s, &n);
        if (json_is_string(val)) {
            CHECK(rc == 1 && s == json_string_value(val) && n == json_string_length(val));
            CHECK(strlen(s) == n); /* no NUL inside: jansson rejects \u0000 without JSON_ALLOW_NUL */
            CHECK(jsonw_utf8_valid(s, n, NULL));
            check_roundtrip(s, n);
            check_id(s, n);
            CHECK(a->resp->status == 200);
        } else if (json_is_null(val)) {
            CHECK(rc == 0 && a->resp->status == 200);
        } else {
            CHECK(rc == -1);
            check_error(a->resp, 400);
            reset_response(a->resp);
        }
    }
    /* The members the handlers read, present or not. */
    static const char *const names[] = {"username", "password", "display_name", "text", "reply_to"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *s = NULL;
        size_t n = 0;
        int rc = api_string(a, obj, names[i], &s, &n);
        CHECK(rc >= -1 && rc <= 1);
        if (rc < 0)
            reset_response(a->resp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_utf8(data, size);

    char *body = malloc(size + 1);
    CHECK(body != NULL);
    memcpy(body, data, size);
    body[size] = '\0';
    struct http_head head;
    memset(&head, 0, sizeof(head));
    struct http_request req = {.head = &head, .body = body, .body_len = size, .remote_addr = "127.0.0.1"};
    struct http_response resp = {.status = 200};
    struct api a;
    memset(&a, 0, sizeof(a));
    a.req = &req;
    a.head = &head;
    a.resp = &resp;

    json_t *obj = api_body(&a);
    if (obj == NULL) {
        check_error(&resp, size > API_MAX_BODY ? 413 : 400);
    } else {
        CHECK(size > 0 && size <= API_MAX_BODY);
        CHECK(jsonw_utf8_valid(body, size, NULL));
        CHECK(resp.status == 200 && buf_used(&resp.body) == 0 && buf_used(&resp.headers) == 0);
        CHECK(json_is_object(obj));
        check_members(&a, obj);
        json_decref(obj);
    }
    buf_free(&resp.body);
    buf_free(&resp.headers);
    free(body);
    return 0;
}
