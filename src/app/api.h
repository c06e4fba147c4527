/* api.h — what the JSON API handlers share: the app object, the per-request context, and helpers
 * for authentication, request bodies, pagination, lists and error responses.
 *
 * Internal to src/app. A handler receives a struct api for one request, validates its input,
 * calls the store, and writes the JSON body into a->resp->body (with a->resp->status). On any
 * problem it calls api_error() (or a helper that does) and returns; the error replaces whatever
 * body was written so far. The router adds Content-Type for every response that has a body. */
#ifndef AGORA_APP_API_H
#define AGORA_APP_API_H
#include <jansson.h>
#include <stdint.h>

#include "app/app.h"
#include "app/store.h"
#include "core/jsonw.h"

#define API_MAX_BODY      (64 * 1024) /* request body limit, also the HTTP layer's (cli/server.c) */
#define API_DEFAULT_LIMIT 20
#define API_MAX_LIMIT     100
/* A session's last use is written at most this often (ms): every authenticated request would
 * otherwise be a write. Expiry is then exact to within this much of the session lifetime. */
#define API_SESSION_TOUCH_MS (60 * 60 * 1000)

struct app {
    struct store *store;           /* NULL in an app that answers only off-database requests */
    const struct app_ready *ready; /* NULL: /health pings store itself */
    char *served_by;
    char *web_dir;
    char *dummy_hash;          /* Argon2id hash of a random password, made on first failed log-in */
    struct app_limits limits;  /* log-in and sign-up throttles (throttle.h) */
    struct client_trust trust; /* proxies whose X-Forwarded-For is believed */
    struct app_stats *stats;   /* this thread's counters (metrics.h); NULL: none */

    /* read replica (replica.h) */
    struct app_replica *replica; /* the server's; NULL: none */
    struct store *replica_store; /* this thread's connection to it, opened on first use */
    int64_t replica_retry_us;    /* no replica for this thread before (CLOCK_MONOTONIC) */
};

struct api {
    struct app *app;
    const struct http_request *req;
    const struct http_head *head;
    struct http_response *resp;
    struct http_str param; /* the {username} or {id} segment of the path, if the route has one */
    int auth;              /* 0 not yet looked up, 1 authenticated (me is set), -1 anonymous */
    struct store_account me;
    struct store_session session; /* the caller's session, when auth is 1 */
    char user_agent[STORE_USER_AGENT_MAX + 1];
    int64_t now;            /* request time, ms since the epoch */
    const char *request_id; /* X-Request-Id, in every error logged for the request */
};

typedef void (*api_fn)(struct api *a);

/* Replaces the response with status and {"error": message} (printf-formatted). A 401 also gets
 * "WWW-Authenticate: Bearer". */
void api_error(struct api *a, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Answers a failed store call: 404 for STORE_NOT_FOUND (with what, e.g. "post not found"), 503
 * for STORE_BUSY, 500 otherwise (the store's message goes to stderr, not to the client). */
void api_store_error(struct api *a, int rc, const char *what);
/* Resolves the caller from the request's token (once per request). With required set, answers
 * 401 and returns -1 when there is no valid token; otherwise returns 1 (authenticated) or 0.
 * A write (any method but GET and HEAD) authenticated by the cookie rather than by an
 * Authorization header must also come from the site itself, or it is answered 403 (-1): its
 * body, if any, must be Content-Type: application/json (a cross-site form cannot send that),
 * and its Origin must name the site (api_same_site), or, without Origin, Sec-Fetch-Site must be
 * same-origin. Bearer tokens are never sent by a browser on its own, so need no such check. */
int api_auth(struct api *a, int required);
/* api_auth for a handler that needs of the caller's account only its id (a->me.id; the other
 * fields of a->me stay empty, also for a later api_auth in the same request): the store need not
 * read the account's row. */
int api_auth_id(struct api *a, int required);
/* "; Secure" for the session cookie when the request came over TLS through a trusted balancer
 * (client_forwarded_https), else "". */
const char *api_cookie_secure(const struct api *a);
/* Returns the request's User-Agent (cut to STORE_USER_AGENT_MAX bytes, NUL-terminated, "" when
 * absent), copied into a->user_agent. */
const char *api_user_agent(struct api *a);
/* The cross-site check above, on its own: returns 0 when the request passes, or -1 after
 * answering 403 with which check failed. */
int api_same_site(struct api *a);
/* Parses the body as a JSON object. Returns it (caller json_decref()s), or NULL after answering
 * 413 (too large) or 400 (not UTF-8, malformed, not an object). */
json_t *api_body(struct api *a);
/* Reads an optional string member. Returns 1 with *s and *n set, 0 if absent or null, or -1 after
 * answering 400 when it has another type. */
int api_string(struct api *a, json_t *obj, const char *name, const char **s, size_t *n);
/* Parses ?limit, ?max_id and ?since_id into pg (pg->limit = limit + 1, to detect a next page);
 * *limit gets the requested page size. Every list accepts both bounds: max_id keeps only items
 * with a smaller id, since_id only items with a larger one. limit is 1-100 (default 20); anything
 * else, and an id that is not a positive integer, is 400. Newest-first lists (timelines, posts of
 * an account, followers/following, whose ids are account ids) continue with max_id = the last
 * id; the oldest-first list (replies) continues with since_id = the last id. Returns 0, or -1
 * after answering 400. */
int api_page(struct api *a, struct store_page *pg, int *limit);

/* Streams a list response: api_list_begin writes "[", the callbacks append rows (stopping after
 * limit rows), api_list_end writes "]" and, when a further row existed, a Link header for the
 * next page (max_id = last id for newest-first lists, since_id for oldest-first). */
struct api_list {
    struct api *a;
    struct jsonw w; /* writes the array into a->resp->body */
    int limit;
    int count;
    int more;
    int64_t last_id;
};
void api_list_begin(struct api_list *l, struct api *a, int limit);
/* Accounts for one more row with this id before the caller writes it through l->w (which puts
 * the commas); returns 1 if it is beyond the page (the callback then returns 1 to stop). */
int api_list_row(struct api_list *l, int64_t id);
int api_list_post(void *ctx, const struct store_post *p);
int api_list_account(void *ctx, const struct store_account *acc);
void api_list_end(struct api_list *l, int oldest_first);

/* Checks a new password: at least 8 characters (code points), at most 128 bytes, not only white
 * space. Returns 0, or -1 after answering 422 with a message naming field. */
int api_password_ok(struct api *a, const char *field, const char *pw, size_t n);
/* Checks a display name: at most STORE_DISPLAY_NAME_MAX characters, no control characters, no
 * bidirectional controls, something visible. Returns 0, or -1 after answering 422. */
int api_display_name_ok(struct api *a, const char *dn, size_t n);

/* Handlers (api_accounts.c, api_posts.c, api_sessions.c). */
void api_accounts_create(struct api *a);
void api_accounts_get(struct api *a);
void api_accounts_follow(struct api *a);
void api_accounts_unfollow(struct api *a);
void api_accounts_followers(struct api *a);
void api_accounts_following(struct api *a);
void api_accounts_posts(struct api *a);
void api_sessions_create(struct api *a);
void api_sessions_get(struct api *a);
void api_sessions_delete(struct api *a);
void api_me_sessions(struct api *a);
void api_me_sessions_revoke_all(struct api *a);
void api_me_session_revoke(struct api *a);
void api_me_password(struct api *a);
void api_posts_create(struct api *a);
void api_posts_get(struct api *a);
void api_posts_delete(struct api *a);
void api_posts_like(struct api *a);
void api_posts_unlike(struct api *a);
void api_posts_replies(struct api *a);
void api_timelines_home(struct api *a);

#endif
