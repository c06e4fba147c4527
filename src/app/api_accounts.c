/* api_accounts.c — account, follow and session handlers of the JSON API.
 *
 *   POST   /api/v1/accounts                      sign up → 201 account
 *   GET    /api/v1/accounts/{username}           → account (username matched ignoring case)
 *   POST   /api/v1/accounts/{username}/follow    → {"following": true}   (idempotent)
 *   DELETE /api/v1/accounts/{username}/follow    → {"following": false}  (idempotent)
 *   GET    /api/v1/accounts/{username}/followers → accounts, highest account id first
 *   GET    /api/v1/accounts/{username}/following → accounts, highest account id first
 *   GET    /api/v1/accounts/{username}/posts     → posts, newest first (api_posts.c)
 *   POST   /api/v1/sessions                      log in → {"token", "account"} + cookie
 * Sign-up and log-in hash a password: they run on the hashing pool (router.c flags them) and are
 * throttled before hashing (throttle.h: 429 with Retry-After).
 *   GET    /api/v1/sessions                      → the caller's account
 *   DELETE /api/v1/sessions                      log out → 204, cookie cleared */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/api.h"
#include "app/auth.h"
#include "app/json.h"
#include "app/throttle.h"
#include "core/alloc.h"

static int valid_username(const char *s, size_t n)
{
    if (n < 1 || n > STORE_USERNAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Looks up the account named by the path parameter; answers 404 and returns -1 if none. */
static int path_account(struct api *a, struct store_account *out)
{
    char name[STORE_USERNAME_MAX + 1];
    if (!valid_username(a->param.p, a->param.n)) {
        api_error(a, 404, "account not found");
        return -1;
    }
    memcpy(name, a->param.p, a->param.n);
    name[a->param.n] = '\0';
    int rc = store_account_by_name(a->app->store, name, out);
    if (rc != STORE_OK) {
        api_store_error(a, rc, "account not found");
        return -1;
    }
    return 0;
}

/* Reads a required string member; answers 422 when absent and returns -1 (also on 400). */
static int required_string(struct api *a, json_t *body, const char *name, const char **s, size_t *n)
{
    int rc = api_string(a, body, name, s, n);
    if (rc == 0)
        api_error(a, 422, "%s: is required", name);
    return rc == 1 ? 0 : -1;
}

static void reply_account(struct api *a, int status, const struct store_account *acc)
{
    struct jsonw w;
    a->resp->status = status;
    jsonw_init(&w, &a->resp->body, JSONW_COMPACT);
    json_put_account(&w, acc);
}

void api_accounts_create(struct api *a)
{
    const char *user, *pw, *dn = NULL;
    size_t user_n, pw_n, dn_n = 0;
    char hash[STORE_HASH_MAX];
    struct store_account acc;
    json_t *body = api_body(a);
    int rc;
    if (body == NULL)
        return;
    if (required_string(a, body, "username", &user, &user_n) < 0 ||
        required_string(a, body, "password", &pw, &pw_n) < 0 || api_string(a, body, "display_name", &dn, &dn_n) < 0)
        goto out;
    if (!valid_username(user, user_n)) {
        api_error(a, 422, "username: must be 1-%d characters of A-Z, a-z, 0-9 and _", STORE_USERNAME_MAX);
        goto out;
    }
    if (api_password_ok(a, "password", pw, pw_n) < 0 || (dn != NULL && api_display_name_ok(a, dn, dn_n) < 0))
        goto out;
    if (dn == NULL || dn_n == 0)
        dn = user;
    /* cheap check first so a taken name does not cost an Argon2 hash; the UNIQUE index decides */
    rc = store_account_by_name(a->app->store, user, &acc);
    if (rc == STORE_OK) {
        api_error(a, 409, "username: already taken");
        goto out;
    }
    if (rc != STORE_NOT_FOUND) {
        api_store_error(a, rc, "");
        goto out;
    }
    if (throttle_signup_take(a) < 0) /* before the hash: a refused sign-up costs none */
        goto out;
    if (auth_hash_password(pw, pw_n, hash) != 0) {
        api_error(a, 500, "cannot hash the password");
        goto out;
    }
    rc = store_account_create(a->app->store, user, dn, hash, a->now, &acc);
    if (rc == STORE_CONFLICT) {
        api_error(a, 409, "username: already taken");
        goto out;
    }
    if (rc != STORE_OK) {
        api_store_error(a, rc, "");
        goto out;
    }
    http_response_header(a->resp, "Location", "/api/v1/accounts/%s", acc.username);
    reply_account(a, 201, &acc);
out:
    json_decref(body);
}

void api_accounts_get(struct api *a)
{
    struct store_account acc;
    if (path_account(a, &acc) == 0)
        reply_account(a, 200, &acc);
}

static void follow(struct api *a, int on)
{
    struct store_account target;
    if (api_auth(a, 1) < 0 || path_account(a, &target) < 0)
        return;
    if (target.id == a->me.id) {
        if (on) {
            api_error(a, 422, "cannot follow yourself");
            return;
        }
    } else {
        int rc = store_follow(a->app->store, a->me.id, target.id, on, a->now);
        if (rc != STORE_OK) {
            api_store_error(a, rc, "account not found");
            return;
        }
    }
    a->resp->status = 200;
    struct jsonw w;
    jsonw_init(&w, &a->resp->body, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_kv_bool(&w, "following", on);
    jsonw_end(&w);
}

void api_accounts_follow(struct api *a) { follow(a, 1); }
void api_accounts_unfollow(struct api *a) { follow(a, 0); }

static void account_list(struct api *a, enum store_account_list which)
{
    struct store_account acc;
    struct store_page pg = {0};
    struct api_list l;
    int limit;
    if (path_account(a, &acc) < 0 || api_page(a, &pg, &limit) < 0)
        return;
    api_list_begin(&l, a, limit);
    int rc = store_account_list(a->app->store, which, acc.id, &pg, api_list_account, &l);
    if (rc != STORE_OK)
        api_store_error(a, rc, "account not found");
    else
        api_list_end(&l, 0);
}

void api_accounts_followers(struct api *a) { account_list(a, STORE_FOLLOWERS); }
void api_accounts_following(struct api *a) { account_list(a, STORE_FOLLOWING); }

/* Returns the app's dummy hash, making it on first use (log-ins for unknown users verify
 * against it so they take as long as real ones), or NULL if hashing fails. */
static const char *dummy_hash(struct app *app)
{
    if (app->dummy_hash == NULL) {
        char pw[AUTH_TOKEN_CHARS + 1], hash[STORE_HASH_MAX];
        unsigned char hb[STORE_TOKEN_HASH_LEN];
        auth_new_token(pw, hb); /* any random string will do */
        if (auth_hash_password(pw, strlen(pw), hash) == 0)
            app->dummy_hash = alloc_strdup(hash);
    }
    return app->dummy_hash;
}

void api_sessions_create(struct api *a)
{
    const char *user, *pw;
    size_t user_n, pw_n;
    char hash[STORE_HASH_MAX], token[AUTH_TOKEN_CHARS + 1];
    unsigned char th[STORE_TOKEN_HASH_LEN];
    struct store_account acc;
    json_t *body = api_body(a);
    int rc = STORE_NOT_FOUND;
    if (body == NULL)
        return;
    if (required_string(a, body, "username", &user, &user_n) < 0 ||
        required_string(a, body, "password", &pw, &pw_n) < 0)
        goto out;
    /* the throttle comes before the lookup and the hash: a refused guess costs no Argon2 */
    if (throttle_login_take(a, user, user_n, valid_username(user, user_n)) < 0)
        goto out;
    if (valid_username(user, user_n))
        rc = store_account_credentials(a->app->store, user, &acc, hash);
    if (rc != STORE_OK && rc != STORE_NOT_FOUND) {
        api_store_error(a, rc, "");
        goto out;
    }
    if (rc == STORE_NOT_FOUND) {
        const char *dummy = dummy_hash(a->app);
        if (dummy != NULL)
            auth_verify_password(dummy, pw, pw_n);
        api_error(a, 401, "invalid username or password");
        goto out;
    }
    if (!auth_verify_password(hash, pw, pw_n)) {
        api_error(a, 401, "invalid username or password");
        goto out;
    }
    throttle_login_ok(a, user, user_n);
    auth_new_token(token, th);
    if ((rc = store_session_create(a->app->store, th, acc.id, api_user_agent(a), a->now)) != STORE_OK) {
        api_store_error(a, rc, "");
        goto out;
    }
    http_response_header(a->resp, "Set-Cookie", "%s=%s; HttpOnly; SameSite=Strict; Path=/%s", AUTH_COOKIE, token,
                         api_cookie_secure(a));
    http_response_header(a->resp, "Cache-Control", "no-store");
    a->resp->status = 200;
    struct jsonw w;
    jsonw_init(&w, &a->resp->body, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_kv_str(&w, "token", token);
    jsonw_key(&w, "account");
    json_put_account(&w, &acc);
    jsonw_end(&w);
out:
    json_decref(body);
}

void api_sessions_get(struct api *a)
{
    if (api_auth(a, 1) == 1)
        reply_account(a, 200, &a->me);
}

void api_sessions_delete(struct api *a)
{
    struct http_str tok;
    unsigned char th[STORE_TOKEN_HASH_LEN];
    /* the cookie is cleared whatever happens: a stale cookie is useless to the browser */
    if (api_auth(a, 1) == 1 && auth_request_token(a->head, &tok) == 1 && auth_token_hash(tok.p, tok.n, th) == 0) {
        int rc = store_session_delete(a->app->store, th);
        if (rc != STORE_OK)
            api_store_error(a, rc, "");
        else
            a->resp->status = 204;
    }
    http_response_header(a->resp, "Set-Cookie", "%s=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0%s", AUTH_COOKIE,
                         api_cookie_secure(a));
}

void api_accounts_posts(struct api *a)
{
    struct store_account acc;
    struct store_page pg = {0};
    struct api_list l;
    struct http_str tok;
    int limit, rc;
    if (auth_request_token(a->head, &tok) != 1 && valid_username(a->param.p, a->param.n) &&
        api_page(a, &pg, &limit) == 0) {
        /* anonymous (api_auth would find no token): the account and its posts in one store call */
        char name[STORE_USERNAME_MAX + 1];
        memcpy(name, a->param.p, a->param.n);
        name[a->param.n] = '\0';
        a->auth = -1;
        api_list_begin(&l, a, limit);
        rc = store_posts_by_name(a->app->store, name, 0, &pg, &acc, api_list_post, &l);
        if (rc != STORE_OK)
            api_store_error(a, rc, "account not found");
        else
            api_list_end(&l, 0);
        return;
    }
    /* else as always: the account's 404 first, then the page's 400 (again), then the caller */
    if (path_account(a, &acc) < 0 || api_page(a, &pg, &limit) < 0 || api_auth(a, 0) < 0)
        return;
    api_list_begin(&l, a, limit);
    rc = store_posts_by_author(a->app->store, acc.id, a->auth > 0 ? a->me.id : 0, &pg, api_list_post, &l);
    if (rc != STORE_OK)
        api_store_error(a, rc, "account not found");
    else
        api_list_end(&l, 0);
}
