/* test_app.c — the application behind `agora server`, driven through app_handle() with
 * hand-built requests on a temporary SQLite database and web directory: every route, every error
 * status, exact JSON fields, pagination with Link, idempotent likes and follows,
 * Idempotency-Key, authorisation, and the static UI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "app/app.h"
#include "app/auth.h"
#include "app/req.h"
#include "app/store.h"

/* One Argon2id hash of "password123", made once: fixture accounts are inserted through the store
 * so the tests do not pay for a hash per account (sign-up and log-in themselves are tested
 * through the API). */
static char fixture_hash[STORE_HASH_MAX];

struct fx {
    char dir[64];
    char db[160];
    struct app *app;
    struct store *st; /* a second connection to the same file, for fixtures */
};

struct res {
    int status;
    char headers[8192];
    char *body;
    size_t body_len;
    json_t *json;
};

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char web[128], err[256] = "";
    strcpy(f->dir, "/tmp/agora-app-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->db, sizeof f->db, "sqlite:%s/app.db", f->dir);
    snprintf(web, sizeof web, "%s/web", f->dir);
    assert_int_equal(mkdir(web, 0755), 0);
    write_file(web, "index.html", "<!doctype html><title>agora</title>");
    write_file(web, "app.js", "console.log(1);");
    write_file(web, "style.css", "body{}");
    write_file(web, "logo.svg", "<svg/>");
    write_file(web, ".secret", "no");
    write_file(f->dir, "outside.txt", "secret");
    struct app_config cfg = {.db_url = f->db, .served_by = "test:1", .web_dir = web};
    f->app = app_open(&cfg, err, sizeof err);
    if (f->app == NULL)
        fail_msg("app_open: %s", err);
    f->st = store_open(f->db, NULL, err, sizeof err);
    assert_non_null(f->st);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    app_close(f->app);
    store_close(f->st);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void res_free(struct res *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static enum http_method method_of(const char *m)
{
    static const char *const names[] = {"", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (int i = 1; i < 8; i++)
        if (!strcmp(m, names[i]))
            return (enum http_method)i;
    return HTTP_OTHER;
}

/* Sends one request: headers is "Name: value\n..." (may be NULL), body may be NULL. The result
 * replaces *r (call res_free afterwards, or let the next call do it). */
static void call_n(struct fx *f, struct res *r, const char *method, const char *target, const char *headers,
                   const char *body, size_t body_len)
{
    struct http_head h;
    char hbuf[4096] = "";
    res_free(r);
    memset(&h, 0, sizeof h);
    h.method = method_of(method);
    h.method_str = (struct http_str){method, strlen(method)};
    h.target = (struct http_str){target, strlen(target)};
    const char *q = strchr(target, '?');
    h.path = (struct http_str){target, q ? (size_t)(q - target) : strlen(target)};
    h.query = q ? (struct http_str){q + 1, strlen(q + 1)} : (struct http_str){target + strlen(target), 0};
    h.minor = 1;
    h.content_length = body ? (int64_t)body_len : -1;
    if (headers != NULL) {
        snprintf(hbuf, sizeof hbuf, "%s", headers);
        for (char *line = hbuf; *line != '\0';) {
            char *nl = strchr(line, '\n'), *colon = strchr(line, ':');
            if (nl != NULL)
                *nl = '\0';
            assert_non_null(colon);
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            h.headers[h.nheaders].name = (struct http_str){line, (size_t)(colon - line)};
            h.headers[h.nheaders].value = (struct http_str){v, strlen(v)};
            h.nheaders++;
            if (nl == NULL)
                break;
            line = nl + 1;
        }
    }
    struct http_request req = {&h, body ? body : "", body ? body_len : 0, "127.0.0.1"};
    struct http_response resp;
    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    app_handle(f->app, &req, &resp);
    r->status = resp.status;
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)buf_used(&resp.headers), buf_head(&resp.headers));
    r->body_len = buf_used(&resp.body);
    r->body = malloc(r->body_len + 1);
    if (r->body_len > 0)
        if (r->body_len)
            memcpy(r->body, buf_head(&resp.body), r->body_len);
    r->body[r->body_len] = '\0';
    r->json = r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    buf_free(&resp.headers);
    buf_free(&resp.body);
}

static void call(struct fx *f, struct res *r, const char *method, const char *target, const char *headers,
                 const char *body)
{
    call_n(f, r, method, target, headers, body, body ? strlen(body) : 0);
}

/* Returns the value of response header name (copied into a static-duration slot in r), or NULL. */
static const char *header(struct res *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (char *line = r->headers; *line != '\0';) {
        char *end = strstr(line, "\r\n");
        assert_non_null(end);
        if ((size_t)(end - line) > nl + 1 && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            snprintf(out, outlen, "%.*s", (int)(end - line - nl - 2), line + nl + 2);
            return out;
        }
        line = end + 2;
    }
    return NULL;
}

static int count_header(struct res *r, const char *name)
{
    int n = 0;
    size_t nl = strlen(name);
    for (char *line = r->headers; *line != '\0';) {
        char *end = strstr(line, "\r\n");
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':')
            n++;
        line = end + 2;
    }
    return n;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        fail_msg("member %s is not a string", key);
    return json_string_value(v);
}

static json_int_t jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        fail_msg("member %s is not an integer", key);
    return json_integer_value(v);
}

static void expect_error(struct res *r, int status, const char *message)
{
    if (r->status != status)
        fail_msg("status %d, want %d (body %s)", r->status, status, r->body);
    assert_non_null(r->json);
    assert_int_equal(json_object_size(r->json), 1);
    assert_string_equal(jstr(r->json, "error"), message);
    char v[128];
    assert_non_null(header(r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "application/json; charset=utf-8");
}

static void expect_status(struct res *r, int status)
{
    if (r->status != status)
        fail_msg("status %d, want %d (body %s)", r->status, status, r->body);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Creates an account through the store and a session for it; writes "Authorization: Bearer t". */
static int64_t user(struct fx *f, const char *name, char auth[80])
{
    struct store_account a;
    unsigned char th[STORE_TOKEN_HASH_LEN];
    char token[AUTH_TOKEN_CHARS + 1];
    assert_int_equal(store_account_create(f->st, name, name, fixture_hash, 1000, &a), STORE_OK);
    auth_new_token(token, th);
    assert_int_equal(store_session_create(f->st, th, a.id, "unit test", now_ms()), STORE_OK);
    snprintf(auth, 80, "Authorization: Bearer %s", token);
    return a.id;
}

/* Posts text as the user with the given auth header; returns the new id (as a number). */
static int64_t post(struct fx *f, const char *auth, const char *text)
{
    struct res r = {0};
    char body[700];
    snprintf(body, sizeof body, "{\"text\":\"%s\"}", text);
    call(f, &r, "POST", "/api/v1/posts", auth, body);
    expect_status(&r, 201);
    int64_t id = strtoll(jstr(r.json, "id"), NULL, 10);
    res_free(&r);
    return id;
}

static int is_rfc3339_ms(const char *s)
{
    int y, mo, d, h, mi, sec, ms;
    char z;
    return strlen(s) == 24 && sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &sec, &ms, &z) == 8 &&
           z == 'Z';
}

static void check_account_shape(json_t *a, const char *username)
{
    static const char *const keys[] = {
        "id", "username", "display_name", "created_at", "followers_count", "following_count", "posts_count"};
    assert_true(json_is_object(a));
    assert_int_equal(json_object_size(a), 7);
    for (size_t i = 0; i < 7; i++)
        assert_non_null(json_object_get(a, keys[i]));
    assert_string_equal(jstr(a, "username"), username);
    assert_true(strtoll(jstr(a, "id"), NULL, 10) > 0);
    assert_true(is_rfc3339_ms(jstr(a, "created_at")));
}

static void check_post_shape(json_t *p)
{
    static const char *const keys[] = {"id",       "author",      "text",          "created_at",
                                       "reply_to", "likes_count", "replies_count", "liked"};
    assert_true(json_is_object(p));
    assert_int_equal(json_object_size(p), 8);
    for (size_t i = 0; i < 8; i++)
        assert_non_null(json_object_get(p, keys[i]));
    assert_true(is_rfc3339_ms(jstr(p, "created_at")));
    assert_true(json_is_boolean(json_object_get(p, "liked")));
}

/* ---- health, routing, generic errors ---- */

static void test_health_and_served_by(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[128];
    call(f, &r, "GET", "/health", NULL, NULL);
    expect_status(&r, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_string_equal(header(&r, "X-Served-By", v, sizeof v), "test:1");
    call(f, &r, "HEAD", "/health", NULL, NULL);
    expect_status(&r, 200);
    call(f, &r, "POST", "/health", NULL, "{}");
    expect_error(&r, 405, "method not allowed (allowed: GET, HEAD)");
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD");
    assert_string_equal(header(&r, "X-Served-By", v, sizeof v), "test:1");
    call(f, &r, "GET", "/api/v1/nothing", NULL, NULL);
    expect_error(&r, 404, "no such API endpoint: /api/v1/nothing");
    assert_int_equal(count_header(&r, "X-Served-By"), 1);
    call(f, &r, "GET", "/api", NULL, NULL);
    expect_status(&r, 404);
    call(f, &r, "GET", "/api/v1/posts/", NULL, NULL);
    expect_status(&r, 404);
    res_free(&r);
}

static void test_health_fails_without_database(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[128];
    sqlite3 *db;
    /* break the schema under the running app: its queries can no longer run */
    assert_int_equal(sqlite3_open(f->db + strlen("sqlite:"), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "ALTER TABLE accounts RENAME TO gone", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    call(f, &r, "GET", "/health", NULL, NULL);
    expect_error(&r, 503, "database unavailable");
    assert_string_equal(header(&r, "X-Served-By", v, sizeof v), "test:1");
    call(f, &r, "GET", "/api/v1/accounts/alice", NULL, NULL);
    expect_error(&r, 500, "internal error");
    res_free(&r);
}

static void test_method_not_allowed(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[128];
    call(f, &r, "PUT", "/api/v1/posts", NULL, "{}");
    expect_error(&r, 405, "method PUT not allowed here (allowed: POST)");
    assert_string_equal(header(&r, "Allow", v, sizeof v), "POST");
    call(f, &r, "PATCH", "/api/v1/posts/1", NULL, NULL);
    expect_status(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD, DELETE");
    call(f, &r, "GET", "/api/v1/accounts/bob/follow", NULL, NULL);
    expect_status(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "POST, DELETE");
    call(f, &r, "DELETE", "/api/v1/timelines/home", NULL, NULL);
    expect_status(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD");
    call(f, &r, "PUT", "/api/v1/sessions", NULL, NULL);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD, POST, DELETE");
    res_free(&r);
}

static void test_body_limits_and_json_errors(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char auth[80];
    user(f, "alice", auth);
    size_t big = 64 * 1024 + 1;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[big] = '\0';
    call_n(f, &r, "POST", "/api/v1/accounts", NULL, body, big);
    expect_error(&r, 413, "request body too large (at most 65536 bytes)");
    free(body);
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\": ");
    expect_status(&r, 400);
    assert_non_null(strstr(jstr(r.json, "error"), "invalid JSON"));
    call(f, &r, "POST", "/api/v1/accounts", NULL, "[1,2]");
    expect_error(&r, 400, "request body must be a JSON object");
    call(f, &r, "POST", "/api/v1/accounts", NULL, "");
    expect_error(&r, 400, "request body must be a JSON object");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"\xff\xfe\"}");
    expect_error(&r, 400, "request body is not valid UTF-8");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"\xc0\xaf\"}"); /* overlong */
    expect_error(&r, 400, "request body is not valid UTF-8");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"\\ud800\"}"); /* lone surrogate */
    expect_status(&r, 400);
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"a\",\"text\":\"b\"}");
    expect_status(&r, 400);
    /* a non-JSON Content-Type is accepted: the body is parsed as JSON */
    call(f, &r, "POST", "/api/v1/posts", "Content-Type: text/plain\nAuthorization: Bearer x", "{\"text\":\"a\"}");
    expect_status(&r, 401);
    res_free(&r);
}

/* ---- accounts ---- */

static void test_account_create_and_get(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[128];
    call(f, &r, "POST", "/api/v1/accounts", "Content-Type: application/json",
         "{\"username\":\"Alice_1\",\"password\":\"password123\"}");
    expect_status(&r, 201);
    check_account_shape(r.json, "Alice_1");
    assert_string_equal(jstr(r.json, "id"), "1");
    assert_string_equal(jstr(r.json, "display_name"), "Alice_1");
    assert_int_equal(jint(r.json, "followers_count"), 0);
    assert_int_equal(jint(r.json, "following_count"), 0);
    assert_int_equal(jint(r.json, "posts_count"), 0);
    assert_string_equal(header(&r, "Location", v, sizeof v), "/api/v1/accounts/Alice_1");
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json; charset=utf-8");

    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"alice_1\",\"password\":\"password123\"}");
    expect_error(&r, 409, "username: already taken");

    /* display name: 50 code points fine, 51 too long */
    char body[512], dn[256] = "";
    for (int i = 0; i < 50; i++)
        strcat(dn, "\xc3\xa9");
    snprintf(body, sizeof body, "{\"username\":\"bob\",\"password\":\"password123\",\"display_name\":\"%s\"}", dn);
    call(f, &r, "POST", "/api/v1/accounts", NULL, body);
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "display_name"), dn);
    strcat(dn, "x");
    snprintf(body, sizeof body, "{\"username\":\"carol\",\"password\":\"password123\",\"display_name\":\"%s\"}", dn);
    call(f, &r, "POST", "/api/v1/accounts", NULL, body);
    expect_error(&r, 422, "display_name: must be at most 50 characters");

    call(f, &r, "GET", "/api/v1/accounts/ALICE_1", NULL, NULL);
    expect_status(&r, 200);
    check_account_shape(r.json, "Alice_1");
    call(f, &r, "HEAD", "/api/v1/accounts/alice_1", NULL, NULL);
    expect_status(&r, 200);
    call(f, &r, "GET", "/api/v1/accounts/nobody", NULL, NULL);
    expect_error(&r, 404, "account not found");
    call(f, &r, "GET", "/api/v1/accounts/bad-name", NULL, NULL);
    expect_error(&r, 404, "account not found");
    res_free(&r);
}

static void test_account_validation(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    static const char *const bad_names[] = {"\"\"", "\"a-b\"", "\"0123456789012345678901234567890\"", "\"caf\xc3\xa9\"",
                                            "\"a b\""};
    char body[256];
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        snprintf(body, sizeof body, "{\"username\":%s,\"password\":\"password123\"}", bad_names[i]);
        call(f, &r, "POST", "/api/v1/accounts", NULL, body);
        expect_error(&r, 422, "username: must be 1-30 characters of A-Z, a-z, 0-9 and _");
    }
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"password\":\"password123\"}");
    expect_error(&r, 422, "username: is required");
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":5,\"password\":\"password123\"}");
    expect_error(&r, 400, "username: must be a string");
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"ok\",\"password\":\"short77\"}");
    expect_error(&r, 422, "password: must be at least 8 characters and at most 128 bytes long");
    char longpw[200];
    memset(longpw, 'p', 129);
    longpw[129] = '\0';
    snprintf(body, sizeof body, "{\"username\":\"ok\",\"password\":\"%s\"}", longpw);
    call(f, &r, "POST", "/api/v1/accounts", NULL, body);
    expect_error(&r, 422, "password: must be at least 8 characters and at most 128 bytes long");
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"ok\",\"password\":[]}");
    expect_error(&r, 400, "password: must be a string");
    call(f, &r, "POST", "/api/v1/accounts", NULL,
         "{\"username\":\"ok\",\"password\":\"password123\",\"display_name\":7}");
    expect_error(&r, 400, "display_name: must be a string");
    call(f, &r, "POST", "/api/v1/accounts", NULL,
         "{\"username\":\"ok\",\"password\":\"password123\",\"display_name\":\"a\\u0007\"}");
    expect_error(&r, 422, "display_name: must not contain control characters");
    /* C1 too (Regression: U+009B, a terminal's CSI, was accepted) */
    call(f, &r, "POST", "/api/v1/accounts", NULL,
         "{\"username\":\"ok\",\"password\":\"password123\",\"display_name\":\"a\\u009b2J\"}");
    expect_error(&r, 422, "display_name: must not contain control characters");
    /* 8 bytes but 4 characters; 8 spaces; 8 mixed white space characters */
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"ok\",\"password\":\"\u00e9\u00e9\u00e9\u00e9\"}");
    expect_error(&r, 422, "password: must be at least 8 characters and at most 128 bytes long");
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"ok\",\"password\":\"        \"}");
    expect_error(&r, 422, "password: must not be only white space");
    call(f, &r, "POST", "/api/v1/accounts", NULL,
         "{\"username\":\"ok\",\"password\":\" \\t\\n\\r\u3000\u00a0\u2003 \"}");
    expect_error(&r, 422, "password: must not be only white space");
    static const char *const bidi[] = {"\\u202a", "\\u202e", "\\u2066", "\\u2069"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(body, sizeof body, "{\"username\":\"ok\",\"password\":\"password123\",\"display_name\":\"adm%sin\"}",
                 bidi[i]);
        call(f, &r, "POST", "/api/v1/accounts", NULL, body);
        expect_error(&r, 422,
                     "display_name: must not contain bidirectional embedding, override or isolate controls "
                     "(U+202A-U+202E, U+2066-U+2069)");
    }
    /* the last ones: Regression (found by the review of issue 9): tags, variation selectors, the
     * Braille blank, musical format controls, interlinear annotation, U+061C, combining marks */
    static const char *const blank[] = {" ",
                                        "\\u200b",
                                        "\\u200b\\u200c\\u200d",
                                        "\\u2060 \\ufeff",
                                        "\\u3164",
                                        "\\udb40\\udc41\\udb40\\udc7f",
                                        "\\udb40\\udd00",
                                        "\\u2800\\u2800",
                                        "\\ud834\\udd73",
                                        "\\ufff9\\ufffb",
                                        "\\u061c",
                                        "\\u0301\\u0302 \\u20dd",
                                        "\\u180e\\u180b"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
        snprintf(body, sizeof body, "{\"username\":\"ok\",\"password\":\"password123\",\"display_name\":\"%s\"}",
                 blank[i]);
        call(f, &r, "POST", "/api/v1/accounts", NULL, body);
        expect_error(&r, 422,
                     "display_name: must contain a visible character (not only white space or zero-width "
                     "characters)");
    }
    int64_t n = -1;
    assert_int_equal(store_count_accounts(f->st, &n), STORE_OK);
    assert_int_equal(n, 0);
    res_free(&r);
}

/* ---- sessions ---- */

static void test_sessions(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[256], auth[128], cookie[128];
    call(f, &r, "POST", "/api/v1/accounts", NULL,
         "{\"username\":\"alice\",\"password\":\"correct horse\",\"display_name\":\"Alice\"}");
    expect_status(&r, 201);
    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"ALICE\",\"password\":\"correct horse\"}");
    expect_status(&r, 200);
    assert_int_equal(json_object_size(r.json), 2);
    const char *token = jstr(r.json, "token");
    assert_int_equal(strlen(token), 43);
    check_account_shape(json_object_get(r.json, "account"), "alice");
    assert_string_equal(jstr(json_object_get(r.json, "account"), "display_name"), "Alice");
    char want[160];
    snprintf(want, sizeof want, "agora_token=%s; HttpOnly; SameSite=Strict; Path=/", token);
    assert_string_equal(header(&r, "Set-Cookie", v, sizeof v), want);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    snprintf(cookie, sizeof cookie, "Cookie: theme=dark; agora_token=%s; x=y", token);

    call(f, &r, "GET", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 200);
    check_account_shape(r.json, "alice");
    call(f, &r, "GET", "/api/v1/sessions", cookie, NULL);
    expect_status(&r, 200);
    check_account_shape(r.json, "alice");

    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"alice\",\"password\":\"wrong horse\"}");
    expect_error(&r, 401, "invalid username or password");
    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"nobody\",\"password\":\"correct horse\"}");
    expect_error(&r, 401, "invalid username or password");
    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"alice\"}");
    expect_error(&r, 422, "password: is required");

    call(f, &r, "GET", "/api/v1/sessions", NULL, NULL);
    expect_status(&r, 401);
    assert_string_equal(header(&r, "WWW-Authenticate", v, sizeof v), "Bearer");
    call(f, &r, "GET", "/api/v1/sessions", "Authorization: Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL);
    expect_status(&r, 401);
    call(f, &r, "GET", "/api/v1/sessions", "Authorization: Basic YTpi", NULL);
    expect_status(&r, 401);

    call(f, &r, "DELETE", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 204);
    assert_int_equal(r.body_len, 0);
    assert_null(header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(header(&r, "Set-Cookie", v, sizeof v),
                        "agora_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    call(f, &r, "GET", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 401);
    call(f, &r, "DELETE", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 401);
    res_free(&r);
}

/* ---- cross-site writes (CSRF), security headers ---- */

static void test_same_origin_rule(void **state)
{
    static const struct {
        const char *origin, *host;
        int same;
    } cases[] = {
        {"http://127.0.0.1:8000", "127.0.0.1:8000", 1},
        {"https://127.0.0.1:8000", "127.0.0.1:8000", 1},
        {"HTTP://Example.COM", "example.com", 1},
        {"http://example.com", "example.com:80", 1},
        {"http://example.com:80", "example.com", 1},
        {"https://example.com", "example.com:443", 1},
        {"https://example.com:443", "example.com", 1},
        {"http://[::1]:8000", "[::1]:8000", 1},
        {"http://example.com", "example.com:443", 0},
        {"https://example.com", "example.com:80", 0},
        {"http://127.0.0.1:8001", "127.0.0.1:8000", 0},
        {"http://127.0.0.1", "127.0.0.1:8000", 0},
        {"http://evil.example", "127.0.0.1:8000", 0},
        {"http://127.0.0.1.evil.example:8000", "127.0.0.1:8000", 0},
        {"http://127.0.0.1:8000/", "127.0.0.1:8000", 0},
        {"http://user@127.0.0.1:8000", "127.0.0.1:8000", 0},
        {"ftp://127.0.0.1:8000", "127.0.0.1:8000", 0},
        {"null", "127.0.0.1:8000", 0},
        {"", "127.0.0.1:8000", 0},
        {"http://", "", 0},
        {"http://a:b:8000", "a:b:8000", 0},
        {"http://x:99999", "x:99999", 0},
        {"http://x:", "x:", 0},
        {"http://[::1", "[::1", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_str o = {cases[i].origin, strlen(cases[i].origin)}, h = {cases[i].host, strlen(cases[i].host)};
        if (req_same_origin(&o, &h) != cases[i].same)
            fail_msg("Origin %s, Host %s: want %d", cases[i].origin, cases[i].host, cases[i].same);
    }
    assert_int_equal(req_same_origin(NULL, NULL), 0);
    struct http_str ct = {" Application/JSON ; charset=utf-8", 34};
    assert_true(req_media_type_is(&ct, "application/json"));
    ct = (struct http_str){"application/json-seq", 20};
    assert_false(req_media_type_is(&ct, "application/json"));
    ct = (struct http_str){"text/plain", 10};
    assert_false(req_media_type_is(&ct, "application/json"));
}

#define CSRF_TYPE                                                                                                      \
    "cross-site request refused: a write authenticated by the agora_token cookie must send its body as "               \
    "Content-Type: application/json, not text/plain"
#define CSRF_NO_TYPE                                                                                                   \
    "cross-site request refused: a write authenticated by the agora_token cookie must send its body as "               \
    "Content-Type: application/json (none given)"
#define CSRF_NO_ORIGIN                                                                                                 \
    "cross-site request refused: a write authenticated by the agora_token cookie needs an Origin header naming "       \
    "this site, or Sec-Fetch-Site: same-origin (use Authorization: Bearer outside a browser)"

static int64_t count_posts(struct fx *f)
{
    struct res r = {0};
    call(f, &r, "GET", "/api/v1/accounts/alice", NULL, NULL);
    expect_status(&r, 200);
    int64_t n = jint(r.json, "posts_count");
    res_free(&r);
    return n;
}

static void test_cookie_writes_need_same_site(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char auth[80], ck[300], hdr[600], path[64];
    user(f, "alice", auth);
    user(f, "bob", hdr);
    snprintf(ck, sizeof ck, "Host: agora.test:8000\nCookie: agora_token=%s", auth + strlen("Authorization: Bearer "));
    const char *form = "{\"text\":\"csrf\"}";

    /* the reproduction: a text/plain form post carrying the cookie creates nothing */
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: text/plain\nOrigin: http://agora.test:9999", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_error(&r, 403, CSRF_TYPE);
    snprintf(hdr, sizeof hdr, "%s\nOrigin: http://agora.test:8000", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_error(&r, 403, CSRF_NO_TYPE);
    /* JSON, but from another origin, or with no Origin */
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json\nOrigin: http://agora.test:9999", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_error(&r, 403,
                 "cross-site request refused: Origin http://agora.test:9999 does not match this site "
                 "(Host agora.test:8000)");
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json\nOrigin: null\nSec-Fetch-Site: same-origin", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_status(&r, 403); /* an Origin, when sent, decides */
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_error(&r, 403, CSRF_NO_ORIGIN);
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json\nSec-Fetch-Site: same-site", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_error(&r, 403, CSRF_NO_ORIGIN);
    assert_int_equal(count_posts(f), 0);

    /* what a browser sends from the site itself */
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json; charset=utf-8\nOrigin: http://agora.test:8000", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_status(&r, 201);
    snprintf(path, sizeof path, "/api/v1/posts/%s/like", jstr(r.json, "id"));
    snprintf(hdr, sizeof hdr, "%s\nContent-Type: application/json\nSec-Fetch-Site: same-origin", ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_status(&r, 201);
    assert_int_equal(count_posts(f), 2);

    /* no body (like, follow, delete): the Origin check alone */
    call(f, &r, "POST", path, ck, NULL);
    expect_error(&r, 403, CSRF_NO_ORIGIN);
    snprintf(hdr, sizeof hdr, "%s\nOrigin: http://evil.test", ck);
    call(f, &r, "POST", "/api/v1/accounts/bob/follow", hdr, NULL);
    expect_status(&r, 403);
    call(f, &r, "GET", "/api/v1/accounts/bob", NULL, NULL);
    assert_int_equal(jint(r.json, "followers_count"), 0);
    snprintf(hdr, sizeof hdr, "%s\nOrigin: http://agora.test:8000", ck);
    call(f, &r, "POST", path, hdr, NULL);
    expect_status(&r, 200);
    assert_int_equal(jint(r.json, "likes_count"), 1);
    call(f, &r, "POST", "/api/v1/accounts/bob/follow", hdr, NULL);
    expect_status(&r, 200);
    call(f, &r, "DELETE", "/api/v1/sessions", ck, NULL); /* log-out too */
    expect_error(&r, 403, CSRF_NO_ORIGIN);

    /* reads with the cookie need nothing */
    call(f, &r, "GET", "/api/v1/timelines/home", ck, NULL);
    expect_status(&r, 200);
    /* a Bearer token needs nothing either, even with a cookie and a foreign Origin */
    snprintf(hdr, sizeof hdr, "%s\n%s\nContent-Type: text/plain\nOrigin: http://evil.test", auth, ck);
    call(f, &r, "POST", "/api/v1/posts", hdr, form);
    expect_status(&r, 201);
    call(f, &r, "POST", "/api/v1/posts", auth, form);
    expect_status(&r, 201);
    assert_int_equal(count_posts(f), 4);
    /* sign-up and log-in are not cookie-authenticated writes */
    call(f, &r, "POST", "/api/v1/sessions", "Origin: http://evil.test",
         "{\"username\":\"nobody\",\"password\":\"password123\"}");
    expect_status(&r, 401);
    res_free(&r);
}

static void test_security_headers(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[512];
    static const char *const ui[] = {"/", "/app.js", "/missing.html"};
    for (size_t i = 0; i < 3; i++) {
        call(f, &r, "GET", ui[i], NULL, NULL);
        assert_string_equal(header(&r, "Content-Security-Policy", v, sizeof v),
                            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                            "frame-ancestors 'none'");
        assert_string_equal(header(&r, "X-Content-Type-Options", v, sizeof v), "nosniff");
        assert_string_equal(header(&r, "Referrer-Policy", v, sizeof v), "no-referrer");
        assert_int_equal(count_header(&r, "X-Content-Type-Options"), 1);
    }
    static const char *const api[] = {"/api/v1/accounts/nobody", "/api/v1/timelines/home", "/health"};
    for (size_t i = 0; i < 3; i++) {
        call(f, &r, "GET", api[i], NULL, NULL);
        assert_string_equal(header(&r, "Content-Security-Policy", v, sizeof v),
                            "default-src 'none'; frame-ancestors 'none'; sandbox");
        assert_string_equal(header(&r, "X-Content-Type-Options", v, sizeof v), "nosniff");
        assert_string_equal(header(&r, "Referrer-Policy", v, sizeof v), "no-referrer");
    }
    res_free(&r);
}

/* ---- the caller's sessions and password ---- */

/* Logs alice in through the API with a User-Agent; writes "Authorization: Bearer t". */
static void login(struct fx *f, const char *ua, char auth[80])
{
    struct res r = {0};
    char hdr[128];
    snprintf(hdr, sizeof hdr, "User-Agent: %s", ua);
    call(f, &r, "POST", "/api/v1/sessions", hdr, "{\"username\":\"alice\",\"password\":\"password123\"}");
    expect_status(&r, 200);
    snprintf(auth, 80, "Authorization: Bearer %s", jstr(r.json, "token"));
    res_free(&r);
}

static void test_me_sessions(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], a3[80], bob[80], v[256], path[64];
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"alice\",\"password\":\"password123\"}");
    expect_status(&r, 201);
    user(f, "bob", bob);
    login(f, "phone", a1);
    login(f, "laptop", a2);
    login(f, "tablet", a3);

    call(f, &r, "GET", "/api/v1/me/sessions", a2, NULL);
    expect_status(&r, 200);
    assert_int_equal(json_array_size(r.json), 3);
    static const char *const uas[] = {"tablet", "laptop", "phone"}; /* newest first */
    char ids[3][32];
    for (size_t i = 0; i < 3; i++) {
        json_t *s = json_array_get(r.json, i);
        assert_int_equal(json_object_size(s), 6);
        assert_string_equal(jstr(s, "user_agent"), uas[i]);
        assert_true(is_rfc3339_ms(jstr(s, "created_at")));
        assert_string_equal(jstr(s, "last_used_at"), jstr(s, "created_at"));
        assert_true(is_rfc3339_ms(jstr(s, "expires_at")));
        assert_true(strcmp(jstr(s, "expires_at"), jstr(s, "created_at")) > 0);
        assert_true(json_is_boolean(json_object_get(s, "current")));
        assert_int_equal(json_is_true(json_object_get(s, "current")), i == 1);
        snprintf(ids[i], sizeof ids[i], "%s", jstr(s, "id"));
        assert_null(strstr(r.body, a1 + strlen("Authorization: Bearer "))); /* no token shown */
    }
    call(f, &r, "GET", "/api/v1/me/sessions?limit=2", a2, NULL);
    assert_int_equal(json_array_size(r.json), 2);
    assert_non_null(header(&r, "Link", v, sizeof v));
    call(f, &r, "GET", "/api/v1/me/sessions", bob, NULL);
    assert_int_equal(json_array_size(r.json), 1);
    call(f, &r, "GET", "/api/v1/me/sessions", NULL, NULL);
    expect_status(&r, 401);

    /* revoke one: not someone else's, not a made-up one */
    snprintf(path, sizeof path, "/api/v1/me/sessions/%s", ids[2]);
    call(f, &r, "DELETE", path, bob, NULL);
    expect_error(&r, 404, "session not found");
    call(f, &r, "DELETE", "/api/v1/me/sessions/999999", a2, NULL);
    expect_error(&r, 404, "session not found");
    call(f, &r, "DELETE", "/api/v1/me/sessions/x", a2, NULL);
    expect_error(&r, 404, "session not found");
    call(f, &r, "DELETE", path, a2, NULL); /* the phone */
    expect_status(&r, 204);
    assert_null(header(&r, "Set-Cookie", v, sizeof v));
    call(f, &r, "GET", "/api/v1/sessions", a1, NULL);
    expect_status(&r, 401);
    call(f, &r, "DELETE", path, a2, NULL);
    expect_status(&r, 404);

    /* revoke all others: the tablet goes, the laptop stays */
    call(f, &r, "DELETE", "/api/v1/me/sessions", a2, NULL);
    expect_status(&r, 200);
    assert_int_equal(jint(r.json, "revoked"), 1);
    call(f, &r, "GET", "/api/v1/sessions", a3, NULL);
    expect_status(&r, 401);
    call(f, &r, "GET", "/api/v1/me/sessions", a2, NULL);
    assert_int_equal(json_array_size(r.json), 1);
    assert_string_equal(jstr(json_array_get(r.json, 0), "id"), ids[1]);
    call(f, &r, "GET", "/api/v1/sessions", bob, NULL);
    expect_status(&r, 200);

    /* revoking the current one logs out and clears the cookie */
    snprintf(path, sizeof path, "/api/v1/me/sessions/%s", ids[1]);
    call(f, &r, "DELETE", path, a2, NULL);
    expect_status(&r, 204);
    assert_string_equal(header(&r, "Set-Cookie", v, sizeof v),
                        "agora_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    call(f, &r, "GET", "/api/v1/sessions", a2, NULL);
    expect_status(&r, 401);
    res_free(&r);
}

/* An expired session is refused; a use more than API_SESSION_TOUCH_MS after the recorded one is
 * recorded (sliding expiry), one within it is not (no write). */
static void test_session_expiry_and_touch(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char auth[80], sql[200];
    user(f, "alice", auth);
    int64_t now = now_ms();
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db + strlen("sqlite:"), &db), SQLITE_OK);
    /* 10 minutes ago: used, not written again */
    snprintf(sql, sizeof sql, "UPDATE sessions SET last_used_at = %lld", (long long)(now - 600000));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    call(f, &r, "GET", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 200);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT last_used_at FROM sessions", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), now - 600000);
    sqlite3_reset(q);
    /* 29 days ago: still valid, and now recorded as used */
    snprintf(sql, sizeof sql, "UPDATE sessions SET last_used_at = %lld", (long long)(now - 29LL * 86400000));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    call(f, &r, "GET", "/api/v1/timelines/home", auth, NULL);
    expect_status(&r, 200);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_true(sqlite3_column_int64(q, 0) >= now);
    sqlite3_reset(q);
    /* 30 days ago: expired */
    snprintf(sql, sizeof sql, "UPDATE sessions SET last_used_at = %lld", (long long)(now - 30LL * 86400000 - 1000));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    call(f, &r, "GET", "/api/v1/sessions", auth, NULL);
    expect_status(&r, 401);
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"late\"}");
    expect_status(&r, 401);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), now - 30LL * 86400000 - 1000); /* not revived */
    sqlite3_finalize(q);
    sqlite3_close(db);
    res_free(&r);
}

static void test_password_change(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], bob[80];
    call(f, &r, "POST", "/api/v1/accounts", NULL, "{\"username\":\"alice\",\"password\":\"password123\"}");
    expect_status(&r, 201);
    user(f, "bob", bob);
    login(f, "one", a1);
    login(f, "two", a2);
    call(f, &r, "POST", "/api/v1/me/password", NULL, "{\"current_password\":\"password123\",\"new_password\":\"x\"}");
    expect_status(&r, 401);
    call(f, &r, "POST", "/api/v1/me/password", a1, "{\"new_password\":\"new password 1\"}");
    expect_error(&r, 422, "current_password: is required");
    call(f, &r, "POST", "/api/v1/me/password", a1, "{\"current_password\":\"password123\"}");
    expect_error(&r, 422, "new_password: is required");
    call(f, &r, "POST", "/api/v1/me/password", a1, "{\"current_password\":\"password123\",\"new_password\":\"short\"}");
    expect_error(&r, 422, "new_password: must be at least 8 characters and at most 128 bytes long");
    call(f, &r, "POST", "/api/v1/me/password", a1,
         "{\"current_password\":\"password123\",\"new_password\":\"          \"}");
    expect_error(&r, 422, "new_password: must not be only white space");
    call(f, &r, "POST", "/api/v1/me/password", a1,
         "{\"current_password\":\"password124\",\"new_password\":\"new password 1\"}");
    expect_error(&r, 403, "current_password: is not the account's password");
    call(f, &r, "GET", "/api/v1/sessions", a2, NULL); /* nothing changed yet */
    expect_status(&r, 200);

    call(f, &r, "POST", "/api/v1/me/password", a1,
         "{\"current_password\":\"password123\",\"new_password\":\"new password 1\"}");
    expect_status(&r, 200);
    assert_int_equal(jint(r.json, "revoked"), 1);
    call(f, &r, "GET", "/api/v1/sessions", a1, NULL); /* this session stays */
    expect_status(&r, 200);
    call(f, &r, "GET", "/api/v1/sessions", a2, NULL); /* the other is gone */
    expect_status(&r, 401);
    call(f, &r, "GET", "/api/v1/sessions", bob, NULL); /* other accounts untouched */
    expect_status(&r, 200);
    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"alice\",\"password\":\"password123\"}");
    expect_error(&r, 401, "invalid username or password");
    call(f, &r, "POST", "/api/v1/sessions", NULL, "{\"username\":\"alice\",\"password\":\"new password 1\"}");
    expect_status(&r, 200);
    res_free(&r);
}

/* ---- posts ---- */

static void test_post_create_get_delete(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], v[128];
    user(f, "alice", a1);
    user(f, "bob", a2);
    call(f, &r, "POST", "/api/v1/posts", a1, "{\"text\":\"  hello <b>world</b> \\n\"}");
    expect_status(&r, 201);
    check_post_shape(r.json);
    assert_string_equal(jstr(r.json, "id"), "1");
    assert_string_equal(jstr(r.json, "text"), "hello <b>world</b>");
    assert_true(json_is_null(json_object_get(r.json, "reply_to")));
    assert_int_equal(jint(r.json, "likes_count"), 0);
    assert_int_equal(jint(r.json, "replies_count"), 0);
    assert_true(json_is_false(json_object_get(r.json, "liked")));
    check_account_shape(json_object_get(r.json, "author"), "alice");
    assert_int_equal(jint(json_object_get(r.json, "author"), "posts_count"), 1);
    assert_string_equal(header(&r, "Location", v, sizeof v), "/api/v1/posts/1");

    call(f, &r, "GET", "/api/v1/posts/1", NULL, NULL);
    expect_status(&r, 200);
    check_post_shape(r.json);
    assert_string_equal(jstr(r.json, "text"), "hello <b>world</b>");
    call(f, &r, "GET", "/api/v1/posts/999", NULL, NULL);
    expect_error(&r, 404, "post not found");
    call(f, &r, "GET", "/api/v1/posts/abc", NULL, NULL);
    expect_error(&r, 404, "post not found");
    call(f, &r, "GET", "/api/v1/posts/99999999999999999999", NULL, NULL);
    expect_error(&r, 404, "post not found");

    /* replies */
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"a reply\",\"reply_to\":\"1\"}");
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "reply_to"), "1");
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"x\",\"reply_to\":\"77\"}");
    expect_error(&r, 422, "reply_to: post not found");
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"x\",\"reply_to\":\"nope\"}");
    expect_error(&r, 422, "reply_to: post not found");
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"x\",\"reply_to\":true}");
    expect_error(&r, 400, "reply_to: must be a post id string or null");
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"x\",\"reply_to\":1}");
    expect_error(&r, 400, "reply_to: must be a post id string or null");
    call(f, &r, "POST", "/api/v1/posts", a2, "{\"text\":\"no parent\",\"reply_to\":null}");
    expect_status(&r, 201);
    assert_true(json_is_null(json_object_get(r.json, "reply_to")));
    call(f, &r, "GET", "/api/v1/posts/1", NULL, NULL);
    assert_int_equal(jint(r.json, "replies_count"), 1);

    /* deleting: author only */
    call(f, &r, "DELETE", "/api/v1/posts/1", NULL, NULL);
    expect_status(&r, 401);
    call(f, &r, "DELETE", "/api/v1/posts/1", a2, NULL);
    expect_error(&r, 403, "you can only delete your own posts");
    call(f, &r, "DELETE", "/api/v1/posts/999", a2, NULL);
    expect_error(&r, 404, "post not found");
    call(f, &r, "DELETE", "/api/v1/posts/1", a1, NULL);
    expect_status(&r, 204);
    assert_int_equal(r.body_len, 0);
    call(f, &r, "GET", "/api/v1/posts/1", NULL, NULL);
    expect_status(&r, 404);
    call(f, &r, "DELETE", "/api/v1/posts/1", a1, NULL);
    expect_status(&r, 404);
    call(f, &r, "GET", "/api/v1/posts/2", NULL, NULL);
    expect_status(&r, 200);
    assert_true(json_is_null(json_object_get(r.json, "reply_to")));
    call(f, &r, "GET", "/api/v1/accounts/alice", NULL, NULL);
    assert_int_equal(jint(r.json, "posts_count"), 0);
    res_free(&r);
}

static void test_post_validation(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char auth[80], body[4096], text[2048];
    user(f, "alice", auth);
    call(f, &r, "POST", "/api/v1/posts", NULL, "{\"text\":\"hi\"}");
    expect_error(&r, 401, "authentication required: send Authorization: Bearer <token> or the agora_token cookie");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\" \\t\\n \"}");
    expect_error(&r, 422, "text: must be 1-500 characters after trimming white space");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"\xc2\xa0\xe3\x80\x80\"}"); /* NBSP, ideographic */
    expect_status(&r, 422);
    call(f, &r, "POST", "/api/v1/posts", auth, "{}");
    expect_error(&r, 422, "text: is required");
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":42}");
    expect_error(&r, 400, "text: must be a string");
    /* 500 code points (two bytes each) is the maximum, surrounding spaces do not count */
    text[0] = '\0';
    for (int i = 0; i < 500; i++)
        strcat(text, "\xc3\xa9");
    snprintf(body, sizeof body, "{\"text\":\"  %s  \"}", text);
    call(f, &r, "POST", "/api/v1/posts", auth, body);
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "text"), text);
    snprintf(body, sizeof body, "{\"text\":\"%sx\"}", text);
    call(f, &r, "POST", "/api/v1/posts", auth, body);
    expect_status(&r, 422);
    /* escapes survive the round trip */
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"q\\\"b\\\\s\\u0001 \\ud83d\\ude00\"}");
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "text"), "q\"b\\s\x01 \xf0\x9f\x98\x80");
    assert_non_null(strstr(r.body, "\"text\":\"q\\\"b\\\\s\\u0001 \xf0\x9f\x98\x80\""));
    /* bidirectional controls anywhere, invisible-only content: refused; marks are fine */
    static const char *const bidi[] = {"\\u202a", "\\u202b", "\\u202c", "\\u202d", "\\u202e",
                                       "\\u2066", "\\u2067", "\\u2068", "\\u2069"};
    for (size_t i = 0; i < 9; i++) {
        snprintf(body, sizeof body, "{\"text\":\"see %sgnp.exe\"}", bidi[i]);
        call(f, &r, "POST", "/api/v1/posts", auth, body);
        expect_error(&r, 422,
                     "text: must not contain bidirectional embedding, override or isolate controls "
                     "(U+202A-U+202E, U+2066-U+2069)");
    }
    static const char *const blank[] = {"\\u200b", "\\u200b \\u200c\\u200d", "\\u2060\\ufeff", " \\u200b\\u00a0 "};
    for (size_t i = 0; i < 4; i++) {
        snprintf(body, sizeof body, "{\"text\":\"%s\"}", blank[i]);
        call(f, &r, "POST", "/api/v1/posts", auth, body);
        expect_error(&r, 422, "text: must contain a visible character (not only white space or zero-width characters)");
    }
    call(f, &r, "POST", "/api/v1/posts", auth, "{\"text\":\"a\\u200bb \\u200e\\u05d0\"}");
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "text"), "a\xe2\x80\x8b"
                                              "b \xe2\x80\x8e\xd7\x90");
    res_free(&r);
}

static void test_idempotency_key(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], hdr[300];
    user(f, "alice", a1);
    user(f, "bob", a2);
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: abc-123", a1);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"once\"}");
    expect_status(&r, 201);
    char first[32];
    snprintf(first, sizeof first, "%s", jstr(r.json, "id"));
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"once\"}");
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "id"), first);
    assert_string_equal(jstr(r.json, "text"), "once");
    assert_int_equal(jint(json_object_get(r.json, "author"), "posts_count"), 1);
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: abc-123", a2); /* keys are per author */
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"once\"}");
    expect_status(&r, 201);
    assert_string_not_equal(jstr(r.json, "id"), first);
    /* the same key with another body: 422, nothing created, and the first post is not shown */
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: abc-123", a1);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"twice\"}");
    expect_error(&r, 422, "Idempotency-Key: already used for a request with another body; use a new key");
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\": \"once\"}"); /* other bytes, same meaning */
    expect_status(&r, 422);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"once\"}"); /* and the original still works */
    expect_status(&r, 201);
    assert_string_equal(jstr(r.json, "id"), first);
    call(f, &r, "GET", "/api/v1/accounts/alice", NULL, NULL);
    assert_int_equal(jint(r.json, "posts_count"), 1);
    call(f, &r, "POST", "/api/v1/posts", a1, "{\"text\":\"once\"}"); /* no key: a new post */
    expect_status(&r, 201);
    assert_string_not_equal(jstr(r.json, "id"), first);
    char key[200];
    memset(key, 'k', 129);
    key[129] = '\0';
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: %s", a1, key);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"x\"}");
    expect_error(&r, 400, "Idempotency-Key: must be 1-128 printable ASCII characters");
    key[128] = '\0';
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"x\"}");
    expect_status(&r, 400);
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: %s", a1, key);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"x\"}");
    expect_status(&r, 201);
    snprintf(hdr, sizeof hdr, "%s\nIdempotency-Key: ", a1);
    call(f, &r, "POST", "/api/v1/posts", hdr, "{\"text\":\"x\"}");
    expect_status(&r, 400);
    res_free(&r);
}

static void test_likes(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80];
    user(f, "alice", a1);
    user(f, "bob", a2);
    int64_t id = post(f, a1, "like me");
    char path[64];
    snprintf(path, sizeof path, "/api/v1/posts/%lld/like", (long long)id);
    call(f, &r, "POST", path, NULL, NULL);
    expect_status(&r, 401);
    for (int i = 0; i < 2; i++) {
        call(f, &r, "POST", path, a2, NULL);
        expect_status(&r, 200);
        check_post_shape(r.json);
        assert_int_equal(jint(r.json, "likes_count"), 1);
        assert_true(json_is_true(json_object_get(r.json, "liked")));
    }
    call(f, &r, "POST", path, a1, NULL);
    assert_int_equal(jint(r.json, "likes_count"), 2);
    call(f, &r, "GET", "/api/v1/posts/1", NULL, NULL);
    assert_true(json_is_false(json_object_get(r.json, "liked")));
    call(f, &r, "GET", "/api/v1/posts/1", a2, NULL);
    assert_true(json_is_true(json_object_get(r.json, "liked")));
    for (int i = 0; i < 2; i++) {
        call(f, &r, "DELETE", path, a2, NULL);
        expect_status(&r, 200);
        assert_int_equal(jint(r.json, "likes_count"), 1);
        assert_true(json_is_false(json_object_get(r.json, "liked")));
    }
    call(f, &r, "POST", "/api/v1/posts/999/like", a2, NULL);
    expect_error(&r, 404, "post not found");
    call(f, &r, "DELETE", "/api/v1/posts/999/like", a2, NULL);
    expect_error(&r, 404, "post not found");
    res_free(&r);
}

/* ---- follows and timelines ---- */

static void test_follow(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], a3[80];
    user(f, "alice", a1);
    user(f, "bob", a2);
    user(f, "carol", a3);
    call(f, &r, "POST", "/api/v1/accounts/bob/follow", NULL, NULL);
    expect_status(&r, 401);
    for (int i = 0; i < 2; i++) {
        call(f, &r, "POST", "/api/v1/accounts/BOB/follow", a1, NULL);
        expect_status(&r, 200);
        assert_string_equal(r.body, "{\"following\":true}");
    }
    call(f, &r, "POST", "/api/v1/accounts/bob/follow", a3, NULL);
    call(f, &r, "POST", "/api/v1/accounts/alice/follow", a1, NULL);
    expect_error(&r, 422, "cannot follow yourself");
    call(f, &r, "POST", "/api/v1/accounts/nobody/follow", a1, NULL);
    expect_error(&r, 404, "account not found");
    call(f, &r, "GET", "/api/v1/accounts/bob", NULL, NULL);
    assert_int_equal(jint(r.json, "followers_count"), 2);
    call(f, &r, "GET", "/api/v1/accounts/alice", NULL, NULL);
    assert_int_equal(jint(r.json, "following_count"), 1);

    call(f, &r, "GET", "/api/v1/accounts/bob/followers", NULL, NULL);
    expect_status(&r, 200);
    assert_true(json_is_array(r.json));
    assert_int_equal(json_array_size(r.json), 2);
    check_account_shape(json_array_get(r.json, 0), "carol");
    check_account_shape(json_array_get(r.json, 1), "alice");
    call(f, &r, "GET", "/api/v1/accounts/alice/following", NULL, NULL);
    assert_int_equal(json_array_size(r.json), 1);
    check_account_shape(json_array_get(r.json, 0), "bob");
    call(f, &r, "GET", "/api/v1/accounts/nobody/followers", NULL, NULL);
    expect_status(&r, 404);

    for (int i = 0; i < 2; i++) {
        call(f, &r, "DELETE", "/api/v1/accounts/bob/follow", a1, NULL);
        expect_status(&r, 200);
        assert_string_equal(r.body, "{\"following\":false}");
    }
    call(f, &r, "GET", "/api/v1/accounts/bob", NULL, NULL);
    assert_int_equal(jint(r.json, "followers_count"), 1);
    call(f, &r, "DELETE", "/api/v1/accounts/nobody/follow", a1, NULL);
    expect_status(&r, 404);
    res_free(&r);
}

static void test_home_timeline(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], a3[80];
    user(f, "alice", a1);
    user(f, "bob", a2);
    user(f, "carol", a3);
    call(f, &r, "POST", "/api/v1/accounts/bob/follow", a1, NULL);
    int64_t b1 = post(f, a2, "bob 1");
    int64_t c1 = post(f, a3, "carol 1");
    int64_t a1p = post(f, a1, "alice 1");
    int64_t b2 = post(f, a2, "bob 2");
    (void)c1;
    call(f, &r, "GET", "/api/v1/timelines/home", NULL, NULL);
    expect_status(&r, 401);
    call(f, &r, "GET", "/api/v1/timelines/home", a1, NULL);
    expect_status(&r, 200);
    assert_int_equal(json_array_size(r.json), 3);
    int64_t want[] = {b2, a1p, b1};
    for (int i = 0; i < 3; i++) {
        check_post_shape(json_array_get(r.json, i));
        assert_int_equal(strtoll(jstr(json_array_get(r.json, i), "id"), NULL, 10), want[i]);
    }
    char v[16];
    assert_null(header(&r, "Link", v, sizeof v));
    /* following carol later brings her earlier post in; unfollowing bob removes his */
    call(f, &r, "POST", "/api/v1/accounts/carol/follow", a1, NULL);
    call(f, &r, "DELETE", "/api/v1/accounts/bob/follow", a1, NULL);
    call(f, &r, "GET", "/api/v1/timelines/home", a1, NULL);
    assert_int_equal(json_array_size(r.json), 2);
    assert_string_equal(jstr(json_array_get(r.json, 0), "text"), "alice 1");
    assert_string_equal(jstr(json_array_get(r.json, 1), "text"), "carol 1");
    /* liked reflects the caller */
    char path[64];
    snprintf(path, sizeof path, "/api/v1/posts/%lld/like", (long long)c1);
    call(f, &r, "POST", path, a1, NULL);
    call(f, &r, "GET", "/api/v1/timelines/home", a1, NULL);
    assert_true(json_is_false(json_object_get(json_array_get(r.json, 0), "liked")));
    assert_true(json_is_true(json_object_get(json_array_get(r.json, 1), "liked")));
    res_free(&r);
}

static void test_pagination(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char auth[80], v[256], want[256], target[256];
    int64_t ids[5];
    user(f, "alice", auth);
    for (int i = 0; i < 5; i++) {
        char t[24];
        snprintf(t, sizeof t, "post %d", i);
        ids[i] = post(f, auth, t);
    }
    /* user timeline, newest first, pages of 2 */
    call(f, &r, "GET", "/api/v1/accounts/alice/posts?limit=2", NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(json_array_size(r.json), 2);
    assert_int_equal(strtoll(jstr(json_array_get(r.json, 1), "id"), NULL, 10), ids[3]);
    snprintf(want, sizeof want, "</api/v1/accounts/alice/posts?limit=2&max_id=%lld>; rel=\"next\"", (long long)ids[3]);
    assert_string_equal(header(&r, "Link", v, sizeof v), want);
    snprintf(target, sizeof target, "/api/v1/accounts/alice/posts?limit=2&max_id=%lld", (long long)ids[3]);
    call(f, &r, "GET", target, NULL, NULL);
    assert_int_equal(json_array_size(r.json), 2);
    assert_int_equal(strtoll(jstr(json_array_get(r.json, 0), "id"), NULL, 10), ids[2]);
    snprintf(target, sizeof target, "/api/v1/accounts/alice/posts?limit=2&max_id=%lld", (long long)ids[1]);
    assert_non_null(header(&r, "Link", v, sizeof v));
    call(f, &r, "GET", target, NULL, NULL);
    assert_int_equal(json_array_size(r.json), 1);
    assert_null(header(&r, "Link", v, sizeof v)); /* exactly one left: no next page */
    call(f, &r, "GET", "/api/v1/accounts/alice/posts?limit=5", NULL, NULL);
    assert_int_equal(json_array_size(r.json), 5);
    assert_null(header(&r, "Link", v, sizeof v));
    call(f, &r, "GET", "/api/v1/accounts/alice/posts", NULL, NULL);
    assert_int_equal(json_array_size(r.json), 5);
    /* home timeline pages the same way */
    call(f, &r, "GET", "/api/v1/timelines/home?limit=4", auth, NULL);
    assert_int_equal(json_array_size(r.json), 4);
    snprintf(want, sizeof want, "</api/v1/timelines/home?limit=4&max_id=%lld>; rel=\"next\"", (long long)ids[1]);
    assert_string_equal(header(&r, "Link", v, sizeof v), want);
    /* bad parameters */
    static const char *const bad_limits[] = {"0", "101", "abc", "-1", "1.5", ""};
    for (size_t i = 0; i < sizeof bad_limits / sizeof bad_limits[0]; i++) {
        snprintf(target, sizeof target, "/api/v1/accounts/alice/posts?limit=%s", bad_limits[i]);
        call(f, &r, "GET", target, NULL, NULL);
        expect_error(&r, 400, "limit: must be an integer from 1 to 100");
    }
    call(f, &r, "GET", "/api/v1/accounts/alice/posts?limit=100", NULL, NULL);
    expect_status(&r, 200);
    call(f, &r, "GET", "/api/v1/timelines/home?max_id=x", auth, NULL);
    expect_error(&r, 400, "max_id: must be a positive integer id");
    call(f, &r, "GET", "/api/v1/posts/1/replies?since_id=-4", NULL, NULL);
    expect_error(&r, 400, "since_id: must be a positive integer id");
    call(f, &r, "GET", "/api/v1/accounts/nobody/posts", NULL, NULL);
    expect_error(&r, 404, "account not found");
    res_free(&r);
}

static void test_replies_oldest_first(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char a1[80], a2[80], v[256], want[256], body[64], target[128];
    int64_t rep[3];
    user(f, "alice", a1);
    user(f, "bob", a2);
    int64_t root = post(f, a1, "root");
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof body, "{\"text\":\"r%d\",\"reply_to\":\"%lld\"}", i, (long long)root);
        call(f, &r, "POST", "/api/v1/posts", i % 2 ? a1 : a2, body);
        expect_status(&r, 201);
        rep[i] = strtoll(jstr(r.json, "id"), NULL, 10);
    }
    snprintf(target, sizeof target, "/api/v1/posts/%lld/replies?limit=2", (long long)root);
    call(f, &r, "GET", target, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(json_array_size(r.json), 2);
    assert_string_equal(jstr(json_array_get(r.json, 0), "text"), "r0");
    assert_string_equal(jstr(json_array_get(r.json, 1), "text"), "r1");
    snprintf(want, sizeof want, "</api/v1/posts/%lld/replies?limit=2&since_id=%lld>; rel=\"next\"", (long long)root,
             (long long)rep[1]);
    assert_string_equal(header(&r, "Link", v, sizeof v), want);
    snprintf(target, sizeof target, "/api/v1/posts/%lld/replies?limit=2&since_id=%lld", (long long)root,
             (long long)rep[1]);
    call(f, &r, "GET", target, NULL, NULL);
    assert_int_equal(json_array_size(r.json), 1);
    assert_string_equal(jstr(json_array_get(r.json, 0), "text"), "r2");
    assert_null(header(&r, "Link", v, sizeof v));
    snprintf(target, sizeof target, "/api/v1/posts/%lld/replies", (long long)rep[0]);
    call(f, &r, "GET", target, NULL, NULL);
    expect_status(&r, 200);
    assert_string_equal(r.body, "[]");
    call(f, &r, "GET", "/api/v1/posts/999/replies", NULL, NULL);
    expect_error(&r, 404, "post not found");
    res_free(&r);
}

/* ---- static files ---- */

static void test_static_files(void **state)
{
    struct fx *f = *state;
    struct res r = {0};
    char v[256], etag[128], hdr[200];
    call(f, &r, "GET", "/", NULL, NULL);
    expect_status(&r, 200);
    assert_string_equal(r.body, "<!doctype html><title>agora</title>");
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "text/html; charset=utf-8");
    assert_string_equal(header(&r, "Cache-Control", v, sizeof v), "no-cache");
    assert_string_equal(header(&r, "X-Served-By", v, sizeof v), "test:1");
    assert_non_null(header(&r, "ETag", etag, sizeof etag));
    assert_int_equal(etag[0], '"');

    snprintf(hdr, sizeof hdr, "If-None-Match: \"zzz\", %s", etag);
    call(f, &r, "GET", "/index.html", hdr, NULL);
    expect_status(&r, 304);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(header(&r, "ETag", v, sizeof v), etag);
    snprintf(hdr, sizeof hdr, "If-None-Match: W/%s", etag);
    call(f, &r, "GET", "/", hdr, NULL);
    expect_status(&r, 304);
    call(f, &r, "GET", "/", "If-None-Match: \"other\"", NULL);
    expect_status(&r, 200);

    call(f, &r, "GET", "/app.js", NULL, NULL);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "text/javascript; charset=utf-8");
    call(f, &r, "GET", "/style.css", NULL, NULL);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "text/css; charset=utf-8");
    call(f, &r, "HEAD", "/logo.svg", NULL, NULL);
    expect_status(&r, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "image/svg+xml");
    assert_string_equal(r.body, "<svg/>"); /* the server drops it for HEAD, keeping Content-Length */
    call(f, &r, "GET", "/style.css?v=3", NULL, NULL);
    expect_status(&r, 200);

    static const char *const hidden[] = {"/missing.html",         "/../outside.txt", "/%2e%2e/outside.txt",
                                         "/%2E%2E%2Foutside.txt", "/.secret",        "/a/../index.html",
                                         "/..%5coutside.txt",     "/web/",           "/app.js/"};
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        call(f, &r, "GET", hidden[i], NULL, NULL);
        if (r.status != 404)
            fail_msg("%s: status %d", hidden[i], r.status);
        expect_error(&r, 404, "not found");
    }
    call(f, &r, "GET", "/%zz", NULL, NULL);
    expect_error(&r, 400, "malformed path");
    call(f, &r, "GET", "/a%00b", NULL, NULL);
    expect_error(&r, 400, "malformed path");
    call(f, &r, "POST", "/index.html", NULL, "x");
    expect_error(&r, 405, "method not allowed (allowed: GET, HEAD)");
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD");
    res_free(&r);
}

int main(void)
{
    if (auth_init() != 0 || auth_hash_password("password123", 11, fixture_hash) != 0) {
        fprintf(stderr, "cannot hash the fixture password\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_and_served_by, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_fails_without_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limits_and_json_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_create_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_account_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_create_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_likes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_home_timeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replies_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_files, setup, teardown),
        cmocka_unit_test(test_same_origin_rule),
        cmocka_unit_test_setup_teardown(test_cookie_writes_need_same_site, setup, teardown),
        cmocka_unit_test_setup_teardown(test_security_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_me_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry_and_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_change, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
