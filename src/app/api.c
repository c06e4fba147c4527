/* api.c — helpers shared by the JSON API handlers; see api.h. */
#include "app/api.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app/auth.h"
#include "app/client_addr.h"
#include "app/json.h"
#include "app/req.h"
#include "app/text.h"

#define PASSWORD_MIN 8   /* code points */
#define PASSWORD_MAX 128 /* bytes: the hash's input stays small */

void api_error(struct api *a, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A message cut at the buffer's end, or quoting text (a JSON error from jansson, a member
     * name) that was cut inside a multi-byte character, keeps only its valid UTF-8 prefix. */
    size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    while (len > 0 && !jsonw_utf8_valid(msg, len, NULL))
        len--;
    msg[len] = '\0';
    a->resp->status = status;
    buf_reset(&a->resp->body);
    json_put_error(&a->resp->body, msg);
    if (status == 401)
        http_response_header(a->resp, "WWW-Authenticate", "Bearer");
    else if (status == 503)
        http_response_header(a->resp, "Retry-After", "1");
}

void api_store_error(struct api *a, int rc, const char *what)
{
    if (rc == STORE_NOT_FOUND) {
        api_error(a, 404, "%s", what);
    } else if (rc == STORE_BUSY) {
        fprintf(stderr, "agora: [%s] database busy: %s\n", a->request_id, store_errmsg(a->app->store));
        api_error(a, 503, "the database is busy, try again");
    } else if (rc == STORE_FULL) {
        fprintf(stderr, "agora: [%s] database full: %s\n", a->request_id, store_errmsg(a->app->store));
        api_error(a, 507, "the database's disk is full: nothing was saved");
    } else {
        fprintf(stderr, "agora: [%s] database error: %s\n", a->request_id, store_errmsg(a->app->store));
        api_error(a, 500, "internal error");
    }
}

/* Up to 100 bytes of a header value, for an error message (api_error keeps it valid UTF-8). */
#define SHOWN(v) (int)((v)->n < 100 ? (v)->n : 100), (v)->p

int api_same_site(struct api *a)
{
    const struct http_head *h = a->head;
    const struct http_str *ct = req_header(h, "content-type"), *origin = req_header(h, "origin");
    const struct http_str *host = req_header(h, "host"), *sfs = req_header(h, "sec-fetch-site");
    if (a->req->body_len > 0 && (ct == NULL || !req_media_type_is(ct, "application/json"))) {
        if (ct == NULL)
            api_error(a, 403,
                      "cross-site request refused: a write authenticated by the %s cookie must send its body "
                      "as Content-Type: application/json (none given)",
                      AUTH_COOKIE);
        else
            api_error(a, 403,
                      "cross-site request refused: a write authenticated by the %s cookie must send its body "
                      "as Content-Type: application/json, not %.*s",
                      AUTH_COOKIE, SHOWN(ct));
        return -1;
    }
    if (origin != NULL) {
        if (req_same_origin(origin, host))
            return 0;
        static const struct http_str none = {"none", 4};
        api_error(a, 403, "cross-site request refused: Origin %.*s does not match this site (Host %.*s)", SHOWN(origin),
                  SHOWN(host ? host : &none));
        return -1;
    }
    if (sfs != NULL && req_ieq(sfs->p, sfs->n, "same-origin"))
        return 0;
    api_error(a, 403,
              "cross-site request refused: a write authenticated by the %s cookie needs an Origin header "
              "naming this site, or Sec-Fetch-Site: same-origin (use Authorization: Bearer outside a browser)",
              AUTH_COOKIE);
    return -1;
}

/* api_auth; with full 0, only a->me.id of the account (api_auth_id). */
static int auth(struct api *a, int required, int full)
{
    if (a->auth == 0) {
        struct http_str tok;
        unsigned char hash[STORE_TOKEN_HASH_LEN];
        a->auth = -1;
        if (auth_request_token(a->head, &tok) == 1 && auth_token_hash(tok.p, tok.n, hash) == 0) {
            int rc = store_session_account(a->app->store, hash, a->now, full ? &a->me : NULL, &a->session);
            if (rc == STORE_OK) {
                a->auth = 1;
                a->me.id = a->session.account_id;
            } else if (rc != STORE_NOT_FOUND) {
                a->auth = 0;
                api_store_error(a, rc, "");
                return -1;
            }
        }
        int write = a->head->method != HTTP_GET && a->head->method != HTTP_HEAD;
        if (a->auth == 1 && write && req_header(a->head, "authorization") == NULL && api_same_site(a) < 0) {
            a->auth = -1;
            return -1;
        }
    }
    if (a->auth < 0 && required) {
        api_error(a, 401, "authentication required: send Authorization: Bearer <token> or the %s cookie", AUTH_COOKIE);
        return -1;
    }
    return a->auth > 0;
}

int api_auth(struct api *a, int required) { return auth(a, required, 1); }
int api_auth_id(struct api *a, int required) { return auth(a, required, 0); }

const char *api_user_agent(struct api *a)
{
    const struct http_str *v = req_header(a->head, "user-agent");
    size_t n = v == NULL ? 0 : v->n < STORE_USER_AGENT_MAX ? v->n : STORE_USER_AGENT_MAX;
    if (n > 0)
        memcpy(a->user_agent, v->p, n);
    a->user_agent[n] = '\0';
    return a->user_agent;
}

int api_password_ok(struct api *a, const char *field, const char *pw, size_t n)
{
    size_t chars = 0;
    if (!jsonw_utf8_valid(pw, n, &chars) || chars < PASSWORD_MIN || n > PASSWORD_MAX) {
        api_error(a, 422, "%s: must be at least %d characters and at most %d bytes long", field, PASSWORD_MIN,
                  PASSWORD_MAX);
        return -1;
    }
    if (text_is_space(pw, n)) {
        api_error(a, 422, "%s: must not be only white space", field);
        return -1;
    }
    return 0;
}

int api_display_name_ok(struct api *a, const char *dn, size_t n)
{
    size_t chars = 0;
    jsonw_utf8_valid(dn, n, &chars);
    if (chars > STORE_DISPLAY_NAME_MAX) {
        api_error(a, 422, "display_name: must be at most %d characters", STORE_DISPLAY_NAME_MAX);
        return -1;
    }
    if (text_has_control(dn, n)) { /* C1 too: U+009B is a terminal's escape */
        api_error(a, 422, "display_name: must not contain control characters");
        return -1;
    }
    if (text_has_bidi_control(dn, n)) {
        api_error(a, 422,
                  "display_name: must not contain bidirectional embedding, override or isolate controls "
                  "(U+202A-U+202E, U+2066-U+2069)");
        return -1;
    }
    if (n > 0 && text_is_blank(dn, n)) {
        api_error(a, 422,
                  "display_name: must contain a visible character (not only white space or zero-width "
                  "characters)");
        return -1;
    }
    return 0;
}

json_t *api_body(struct api *a)
{
    json_error_t err;
    json_t *obj;
    if (a->req->body_len > API_MAX_BODY) {
        api_error(a, 413, "request body too large (at most %d bytes)", API_MAX_BODY);
        return NULL;
    }
    if (!jsonw_utf8_valid(a->req->body, a->req->body_len, NULL)) {
        api_error(a, 400, "request body is not valid UTF-8");
        return NULL;
    }
    if (a->req->body_len == 0) {
        api_error(a, 400, "request body must be a JSON object");
        return NULL;
    }
    obj = json_loadb(a->req->body, a->req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (obj == NULL) {
        api_error(a, 400, "invalid JSON: %s (line %d, column %d)", err.text, err.line, err.column);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        api_error(a, 400, "request body must be a JSON object");
        return NULL;
    }
    return obj;
}

int api_string(struct api *a, json_t *obj, const char *name, const char **s, size_t *n)
{
    json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        api_error(a, 400, "%s: must be a string", name);
        return -1;
    }
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 1;
}

/* Reads query parameter name as an id into *out (0 when absent). Returns 0 or -1 after a 400. */
static int query_id(struct api *a, const char *name, int64_t *out)
{
    char v[32];
    int rc = req_query_param(a->head->query, name, v, sizeof v);
    *out = 0;
    if (rc == 0)
        return 0;
    if (rc < 0 || !req_parse_id(v, strlen(v), out)) {
        api_error(a, 400, "%s: must be a positive integer id", name);
        return -1;
    }
    return 0;
}

int api_page(struct api *a, struct store_page *pg, int *limit)
{
    char v[32];
    int64_t n = API_DEFAULT_LIMIT;
    int rc = req_query_param(a->head->query, "limit", v, sizeof v);
    if (rc != 0 && (rc < 0 || !req_parse_id(v, strlen(v), &n) || n > API_MAX_LIMIT)) {
        api_error(a, 400, "limit: must be an integer from 1 to %d", API_MAX_LIMIT);
        return -1;
    }
    if (query_id(a, "max_id", &pg->max_id) < 0 || query_id(a, "since_id", &pg->since_id) < 0)
        return -1;
    *limit = (int)n;
    pg->limit = (int)n + 1;
    return 0;
}

void api_list_begin(struct api_list *l, struct api *a, int limit)
{
    memset(l, 0, sizeof *l);
    l->a = a;
    l->limit = limit;
    jsonw_init(&l->w, &a->resp->body, JSONW_COMPACT);
    jsonw_array(&l->w);
}

int api_list_row(struct api_list *l, int64_t id)
{
    if (l->count == l->limit) {
        l->more = 1;
        return 1;
    }
    l->count++;
    l->last_id = id;
    return 0;
}

int api_list_post(void *ctx, const struct store_post *p)
{
    struct api_list *l = ctx;
    if (api_list_row(l, p->id))
        return 1;
    json_put_post(&l->w, p);
    return 0;
}

int api_list_account(void *ctx, const struct store_account *acc)
{
    struct api_list *l = ctx;
    if (api_list_row(l, acc->id))
        return 1;
    json_put_account(&l->w, acc);
    return 0;
}

void api_list_end(struct api_list *l, int oldest_first)
{
    struct api *a = l->a;
    jsonw_end(&l->w);
    a->resp->status = 200;
    if (l->more)
        http_response_header(a->resp, "Link", "<%.*s?limit=%d&%s=%" PRId64 ">; rel=\"next\"", (int)a->head->path.n,
                             a->head->path.p, l->limit, oldest_first ? "since_id" : "max_id", l->last_id);
}

const char *api_cookie_secure(const struct api *a)
{
    return client_forwarded_https(&a->app->trust, a->req->remote_addr, a->head) ? "; Secure" : "";
}
