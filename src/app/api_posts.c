/* api_posts.c — post, like, reply and timeline handlers of the JSON API.
 *
 *   POST   /api/v1/posts               {"text", "reply_to"?} → 201 post; Idempotency-Key honoured
 *                                       (the same key with another body → 422)
 *   GET    /api/v1/posts/{id}          → post
 *   DELETE /api/v1/posts/{id}          → 204 (author only, else 403)
 *   POST   /api/v1/posts/{id}/like     → post (idempotent)
 *   DELETE /api/v1/posts/{id}/like     → post (idempotent)
 *   GET    /api/v1/posts/{id}/replies  → posts, oldest first (next page: ?since_id=)
 *   GET    /api/v1/timelines/home      → the caller's home timeline, newest first (?max_id=) */
#include <sodium.h>
#include <string.h>

#include "app/api.h"
#include "app/auth.h"
#include "app/json.h"
#include "app/req.h"
#include "app/text.h"

#define TEXT_MAX     500 /* code points, after trimming */
#define IDEM_KEY_MAX 128

/* Parses the {id} path parameter; answers 404 and returns -1 if it cannot name a post. */
static int path_id(struct api *a, int64_t *id)
{
    if (!req_parse_id(a->param.p, a->param.n, id)) {
        api_error(a, 404, "post not found");
        return -1;
    }
    return 0;
}

static int put_post(void *ctx, const struct store_post *p)
{
    struct jsonw w;
    jsonw_init(&w, &((struct api *)ctx)->resp->body, JSONW_COMPACT);
    json_put_post(&w, p);
    return 0;
}

/* Answers status with post id as seen by the caller (404 if it vanished meanwhile). */
static void reply_post(struct api *a, int status, int64_t id)
{
    buf_reset(&a->resp->body);
    int rc = store_post_get(a->app->store, id, a->auth > 0 ? a->me.id : 0, put_post, a);
    if (rc != STORE_OK)
        api_store_error(a, rc, "post not found");
    else
        a->resp->status = status;
}

/* put_post for store_post_create_get, noting that the post was seen. */
struct created {
    struct api *a;
    int seen;
};

static int put_created(void *ctx, const struct store_post *p)
{
    struct created *c = ctx;
    c->seen = 1;
    return put_post(c->a, p);
}

/* Reads the optional Idempotency-Key header into key (NUL-terminated; "" when absent). Returns 0,
 * or -1 after answering 400 when it is empty, too long or not printable ASCII. */
static int idempotency_key(struct api *a, char key[IDEM_KEY_MAX + 1])
{
    const struct http_str *v = req_header(a->head, "idempotency-key");
    key[0] = '\0';
    if (v == NULL)
        return 0;
    int ok = v->n >= 1 && v->n <= IDEM_KEY_MAX;
    for (size_t i = 0; ok && i < v->n; i++)
        ok = v->p[i] >= 0x20 && v->p[i] <= 0x7e;
    if (!ok) {
        api_error(a, 400, "Idempotency-Key: must be 1-%d printable ASCII characters", IDEM_KEY_MAX);
        return -1;
    }
    memcpy(key, v->p, v->n);
    key[v->n] = '\0';
    return 0;
}

/* Reads the optional reply_to member: a post id string, or null. Returns 0 with *id (0 = none),
 * or -1 after answering 400 (another type) or 422 (a string that names no post). */
static int reply_to(struct api *a, json_t *body, int64_t *id)
{
    json_t *v = json_object_get(body, "reply_to");
    *id = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        api_error(a, 400, "reply_to: must be a post id string or null");
        return -1;
    }
    if (req_parse_id(json_string_value(v), json_string_length(v), id))
        return 0;
    api_error(a, 422, "reply_to: post not found");
    return -1;
}

static int ignore_post(void *ctx, const struct store_post *p) { return 0; }

void api_posts_create(struct api *a)
{
    char key[IDEM_KEY_MAX + 1];
    unsigned char body_hash[STORE_BODY_HASH_LEN];
    const char *text;
    size_t n, chars = 0;
    int64_t parent, id = 0;
    json_t *body = NULL;
    int rc;
    if (api_auth_id(a, 1) < 0 || idempotency_key(a, key) < 0 || (body = api_body(a)) == NULL)
        return;
    if ((rc = api_string(a, body, "text", &text, &n)) <= 0) {
        if (rc == 0)
            api_error(a, 422, "text: is required");
        goto out;
    }
    if (!jsonw_utf8_valid(text, n, NULL)) {
        api_error(a, 400, "text: is not valid UTF-8");
        goto out;
    }
    text = text_trim(text, &n);
    jsonw_utf8_valid(text, n, &chars);
    if (chars < 1 || chars > TEXT_MAX) {
        api_error(a, 422, "text: must be 1-%d characters after trimming white space", TEXT_MAX);
        goto out;
    }
    if (text_has_bidi_control(text, n)) {
        api_error(a, 422,
                  "text: must not contain bidirectional embedding, override or isolate controls "
                  "(U+202A-U+202E, U+2066-U+2069)");
        goto out;
    }
    if (text_is_blank(text, n)) {
        api_error(a, 422, "text: must contain a visible character (not only white space or zero-width characters)");
        goto out;
    }
    if (reply_to(a, body, &parent) < 0)
        goto out;
    /* the key is bound to the exact request body it came with: another body is another request */
    crypto_generichash(body_hash, sizeof body_hash, (const unsigned char *)a->req->body, a->req->body_len, NULL, 0);
    /* the post is read back as its author sees it, by the same store call (reply_post's answer) */
    struct created c = {a, 0};
    buf_reset(&a->resp->body);
    rc = store_post_create_get(a->app->store, a->me.id, text, n, parent, key[0] ? key : NULL, body_hash, a->now, &id,
                               put_created, &c);
    if (rc == STORE_NOT_FOUND &&
        (parent == 0 || store_post_get(a->app->store, parent, 0, ignore_post, NULL) == STORE_OK)) {
        /* no such author: the account was deleted (its sessions with it) after api_auth_id found
         * the session: 401, as for a session that is gone (the parent, if any, exists) */
        a->auth = -1;
        api_auth_id(a, 1);
        goto out;
    }
    if (rc == STORE_NOT_FOUND) {
        api_error(a, 422, "reply_to: post not found");
        goto out;
    }
    if (rc == STORE_CONFLICT) {
        api_error(a, 422, "Idempotency-Key: already used for a request with another body; use a new key");
        goto out;
    }
    if (rc != STORE_OK) {
        api_store_error(a, rc, "");
        goto out;
    }
    if (!c.seen) { /* deleted again before it was read */
        api_error(a, 404, "post not found");
        goto out;
    }
    a->resp->status = 201;
    http_response_header(a->resp, "Location", "/api/v1/posts/%lld", (long long)id);
out:
    json_decref(body);
}

void api_posts_get(struct api *a)
{
    int64_t id;
    if (path_id(a, &id) == 0 && api_auth(a, 0) >= 0)
        reply_post(a, 200, id);
}

void api_posts_delete(struct api *a)
{
    int64_t id;
    if (api_auth(a, 1) < 0 || path_id(a, &id) < 0)
        return;
    int rc = store_post_delete(a->app->store, id, a->me.id);
    if (rc == STORE_FORBIDDEN)
        api_error(a, 403, "you can only delete your own posts");
    else if (rc != STORE_OK)
        api_store_error(a, rc, "post not found");
    else
        a->resp->status = 204;
}

static void like(struct api *a, int on)
{
    int64_t id;
    if (api_auth(a, 1) < 0 || path_id(a, &id) < 0)
        return;
    int rc = store_like(a->app->store, id, a->me.id, on, a->now);
    if (rc != STORE_OK)
        api_store_error(a, rc, "post not found");
    else
        reply_post(a, 200, id);
}

void api_posts_like(struct api *a) { like(a, 1); }
void api_posts_unlike(struct api *a) { like(a, 0); }

void api_posts_replies(struct api *a)
{
    struct store_page pg = {0};
    struct api_list l;
    int64_t id;
    int limit;
    if (path_id(a, &id) < 0 || api_page(a, &pg, &limit) < 0 || api_auth(a, 0) < 0)
        return;
    api_list_begin(&l, a, limit);
    int rc = store_replies(a->app->store, id, a->auth > 0 ? a->me.id : 0, &pg, api_list_post, &l);
    if (rc == STORE_OK && l.count == 0) /* an empty list: tell "no replies" from "no such post" */
        rc = store_post_get(a->app->store, id, 0, ignore_post, NULL);
    if (rc != STORE_OK)
        api_store_error(a, rc, "post not found");
    else
        api_list_end(&l, 1);
}

void api_timelines_home(struct api *a)
{
    struct store_page pg = {0};
    struct api_list l;
    struct http_str tok;
    unsigned char hash[STORE_TOKEN_HASH_LEN];
    int limit, rc;
    if (api_page(a, &pg, &limit) < 0) {
        api_auth(a, 1); /* the caller's 401 (or 503) comes before the page's 400, which stays otherwise */
        return;
    }
    if (auth_request_token(a->head, &tok) != 1 || auth_token_hash(tok.p, tok.n, hash) != 0) {
        api_auth(a, 1); /* no well-formed token: its 401 */
        return;
    }
    /* api_auth and the timeline in one store call, with their outcomes: 401 when the session is
     * unknown or expired; on a store error the caller stays unresolved (a->auth 0), as when
     * api_auth's own lookup fails. Of the account only its id is needed (the session's account_id):
     * the store need not read its row */
    api_list_begin(&l, a, limit);
    rc = store_session_home(a->app->store, hash, a->now, &pg, NULL, &a->session, api_list_post, &l);
    if (rc == STORE_OK) {
        a->auth = 1;
        a->me.id = a->session.account_id;
        api_list_end(&l, 0);
    } else if (rc == STORE_NOT_FOUND) {
        a->auth = -1;
        api_auth(a, 1);
    } else {
        api_store_error(a, rc, "");
    }
}
