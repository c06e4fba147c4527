/* api_sessions.c — the caller's own sessions and password (log-in and log-out are in
 * api_accounts.c).
 *
 *   GET    /api/v1/me/sessions       → the caller's live sessions, newest first (?max_id=)
 *   DELETE /api/v1/me/sessions       → {"revoked": n}: every session but the one making the call
 *   DELETE /api/v1/me/sessions/{id}  → 204 (the current one too: then the cookie is cleared)
 *   POST   /api/v1/me/password       {"current_password", "new_password"} → {"revoked": n}: the
 *                                      password is changed and every other session revoked
 *
 * A session is {"id", "created_at", "last_used_at", "expires_at", "user_agent", "current"}; its
 * token is never shown again after log-in. last_used_at is recorded at most once per
 * API_SESSION_TOUCH_MS, and expires_at is last_used_at + the session lifetime. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "app/api.h"
#include "app/auth.h"
#include "app/json.h"
#include "app/req.h"
#include "app/throttle.h"

struct session_list {
    struct api_list l;
    int64_t current;
};

static int put_session(void *ctx, const struct store_session *s)
{
    struct session_list *sl = ctx;
    struct api *a = sl->l.a;
    struct jsonw *w = &sl->l.w;
    if (api_list_row(&sl->l, s->id))
        return 1;
    jsonw_object(w);
    json_kv_id(w, "id", s->id);
    json_kv_time(w, "created_at", s->created_at);
    json_kv_time(w, "last_used_at", s->last_used_at);
    json_kv_time(w, "expires_at", s->last_used_at + a->app->store->session_ttl_ms);
    jsonw_kv_str(w, "user_agent", s->user_agent);
    jsonw_kv_bool(w, "current", s->id == sl->current);
    jsonw_end(w);
    return 0;
}

void api_me_sessions(struct api *a)
{
    struct store_page pg = {0};
    struct session_list sl;
    int limit;
    if (api_auth(a, 1) < 0 || api_page(a, &pg, &limit) < 0)
        return;
    api_list_begin(&sl.l, a, limit);
    sl.current = a->session.id;
    int rc = store_session_list(a->app->store, a->me.id, a->now, &pg, put_session, &sl);
    if (rc != STORE_OK)
        api_store_error(a, rc, "");
    else
        api_list_end(&sl.l, 0);
}

static void clear_cookie(struct api *a)
{
    http_response_header(a->resp, "Set-Cookie", "%s=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0%s", AUTH_COOKIE,
                         api_cookie_secure(a));
}

void api_me_session_revoke(struct api *a)
{
    int64_t id;
    if (api_auth(a, 1) < 0)
        return;
    if (!req_parse_id(a->param.p, a->param.n, &id)) {
        api_error(a, 404, "session not found");
        return;
    }
    int rc = store_session_revoke(a->app->store, a->me.id, id);
    if (rc != STORE_OK) {
        api_store_error(a, rc, "session not found");
        return;
    }
    a->resp->status = 204;
    if (id == a->session.id) {
        a->auth = -1; /* gone: nothing to record */
        clear_cookie(a);
    }
}

void api_me_sessions_revoke_all(struct api *a)
{
    int64_t n = 0;
    if (api_auth(a, 1) < 0)
        return;
    int rc = store_session_revoke_others(a->app->store, a->me.id, a->session.id, &n);
    if (rc != STORE_OK) {
        api_store_error(a, rc, "");
        return;
    }
    a->resp->status = 200;
    jsonw_doc_int(&a->resp->body, JSONW_COMPACT, "revoked", n);
}

/* Reads a required string member; answers 422 when absent and returns -1 (also on 400). */
static int required_string(struct api *a, json_t *body, const char *name, const char **s, size_t *n)
{
    int rc = api_string(a, body, name, s, n);
    if (rc == 0)
        api_error(a, 422, "%s: is required", name);
    return rc == 1 ? 0 : -1;
}

void api_me_password(struct api *a)
{
    const char *cur, *pw;
    size_t cur_n, pw_n;
    char hash[STORE_HASH_MAX];
    struct store_account acc;
    json_t *body = NULL;
    int64_t n = 0;
    int rc;
    if (api_auth(a, 1) < 0 || (body = api_body(a)) == NULL)
        return;
    if (required_string(a, body, "current_password", &cur, &cur_n) < 0 ||
        required_string(a, body, "new_password", &pw, &pw_n) < 0 || api_password_ok(a, "new_password", pw, pw_n) < 0)
        goto out;
    /* a wrong current password counts as a failed log-in of the account (throttle.h): a stolen
     * session cannot be used to guess the password faster than the log-in route allows */
    if (throttle_login_take(a, a->me.username, strlen(a->me.username), 1) < 0)
        goto out;
    if ((rc = store_account_credentials(a->app->store, a->me.username, &acc, hash)) != STORE_OK) {
        api_store_error(a, rc, "account not found");
        goto out;
    }
    if (acc.id != a->me.id || !auth_verify_password(hash, cur, cur_n)) {
        api_error(a, 403, "current_password: is not the account's password");
        goto out;
    }
    throttle_login_ok(a, a->me.username, strlen(a->me.username));
    if (auth_hash_password(pw, pw_n, hash) != 0) {
        api_error(a, 500, "cannot hash the password");
        goto out;
    }
    if ((rc = store_password_set(a->app->store, a->me.id, hash, a->session.id, &n)) != STORE_OK) {
        api_store_error(a, rc, "account not found");
        goto out;
    }
    a->resp->status = 200;
    http_response_header(a->resp, "Cache-Control", "no-store");
    jsonw_doc_int(&a->resp->body, JSONW_COMPACT, "revoked", n);
out:
    json_decref(body);
}
