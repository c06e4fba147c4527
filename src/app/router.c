/* router.c — the JSON API route table and dispatch; see router.h. */
#include "app/router.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/replica.h"

/* Methods whose handler hashes a password (Argon2id, ~64 MiB and tens of ms): those requests run
 * on the web server's hashing pool, never on an event-loop thread (app_hashes_password). Every
 * route that hashes or verifies a password must carry the flag. */
#define HASHES_POST 1
#define HASHES_DEL  2

struct route {
    const char *pattern; /* '*' stands for one non-empty path segment */
    api_fn get, post, del;
    unsigned hashes; /* HASHES_* */
};

static const struct route routes[] = {
    {"/api/v1/accounts", NULL, api_accounts_create, NULL, HASHES_POST},
    {"/api/v1/accounts/*", api_accounts_get, NULL, NULL, 0},
    {"/api/v1/accounts/*/follow", NULL, api_accounts_follow, api_accounts_unfollow, 0},
    {"/api/v1/accounts/*/followers", api_accounts_followers, NULL, NULL, 0},
    {"/api/v1/accounts/*/following", api_accounts_following, NULL, NULL, 0},
    {"/api/v1/accounts/*/posts", api_accounts_posts, NULL, NULL, 0},
    {"/api/v1/sessions", api_sessions_get, api_sessions_create, api_sessions_delete, HASHES_POST},
    {"/api/v1/me/password", NULL, api_me_password, NULL, HASHES_POST}, /* checks and hashes a password */
    {"/api/v1/me/sessions", api_me_sessions, NULL, api_me_sessions_revoke_all, 0},
    {"/api/v1/me/sessions/*", NULL, NULL, api_me_session_revoke, 0},
    {"/api/v1/posts", NULL, api_posts_create, NULL, 0},
    {"/api/v1/posts/*", api_posts_get, NULL, api_posts_delete, 0},
    {"/api/v1/posts/*/like", NULL, api_posts_like, api_posts_unlike, 0},
    {"/api/v1/posts/*/replies", api_posts_replies, NULL, NULL, 0},
    {"/api/v1/timelines/home", api_timelines_home, NULL, NULL, 0},
};

_Static_assert(sizeof routes / sizeof routes[0] <= ROUTER_MAX, "ROUTER_MAX is too small for the route table");

unsigned router_count(void) { return sizeof routes / sizeof routes[0]; }

const char *router_pattern(unsigned i) { return i < router_count() ? routes[i].pattern : NULL; }

/* Returns 1 if path matches pattern, setting *param to the segment matched by '*'. */
static int match(const char *pattern, struct http_str path, struct http_str *param)
{
    size_t i = 0;
    for (const char *p = pattern; *p != '\0'; p++) {
        if (*p == '*') {
            size_t start = i;
            while (i < path.n && path.p[i] != '/')
                i++;
            if (i == start)
                return 0;
            param->p = path.p + start;
            param->n = i - start;
        } else if (i < path.n && path.p[i] == *p) {
            i++;
        } else {
            return 0;
        }
    }
    return i == path.n;
}

int router_hashes_password(const struct http_head *h)
{
    struct http_str param;
    unsigned m = h->method == HTTP_POST ? HASHES_POST : h->method == HTTP_DELETE ? HASHES_DEL : 0;
    if (m == 0)
        return 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (match(routes[i].pattern, h->path, &param))
            return (routes[i].hashes & m) != 0;
    return 0;
}

static void allow(const struct route *r, char *out, size_t n)
{
    out[0] = '\0';
    if (r->get)
        strncat(out, "GET, HEAD", n - strlen(out) - 1);
    if (r->post)
        strncat(out, out[0] ? ", POST" : "POST", n - strlen(out) - 1);
    if (r->del)
        strncat(out, out[0] ? ", DELETE" : "DELETE", n - strlen(out) - 1);
}

/* Routes a->req to its handler. Returns the route's index, or ROUTER_NONE for an unknown path. */
static unsigned dispatch(struct api *a)
{
    const struct http_head *h = a->head;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        if (!match(r->pattern, h->path, &a->param))
            continue;
        api_fn fn = NULL;
        if (h->method == HTTP_GET || h->method == HTTP_HEAD)
            fn = r->get;
        else if (h->method == HTTP_POST)
            fn = r->post;
        else if (h->method == HTTP_DELETE)
            fn = r->del;
        if (fn == NULL) {
            char methods[40];
            allow(r, methods, sizeof methods);
            api_error(a, 405, "method %.*s not allowed here (allowed: %s)", (int)h->method_str.n, h->method_str.p,
                      methods);
            http_response_header(a->resp, "Allow", "%s", methods);
            return (unsigned)i;
        }
        if (a->req->body_len > API_MAX_BODY) {
            api_error(a, 413, "request body too large (at most %d bytes)", API_MAX_BODY);
            return (unsigned)i;
        }
        fn(a);
        return (unsigned)i;
    }
    api_error(a, 404, "no such API endpoint: %.*s", (int)h->path.n, h->path.p);
    return ROUTER_NONE;
}

/* dispatch, a read request in one snapshot: the session lookup and the query share a transaction */
static unsigned run_read(struct api *a)
{
    unsigned route;
    if (store_read_begin(a->app->store) != STORE_OK)
        return dispatch(a);
    route = dispatch(a);
    store_read_end(a->app->store);
    return route;
}

unsigned router_handle(struct app *app, const struct http_request *req, struct http_response *resp,
                       const char *request_id)
{
    unsigned route;
    struct timespec ts;
    struct api a;
    memset(&a, 0, sizeof a);
    clock_gettime(CLOCK_REALTIME, &ts);
    a.app = app;
    a.req = req;
    a.head = req->head;
    a.resp = resp;
    a.request_id = request_id;
    a.now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    resp->status = 200;
    /* reads may go to the replica, writes answer with their position (replica.h) */
    int read = a.head->method == HTTP_GET || a.head->method == HTTP_HEAD;
    if (read)
        route = app->replica != NULL ? app_replica_read(&a, run_read) : run_read(&a);
    else
        route = dispatch(&a);
    if (!read && app->replica != NULL)
        app_replica_after_write(&a);
    /* sliding expiry: record the session's use, at most once per API_SESSION_TOUCH_MS, after the
     * read transaction (a write inside it could fail on a newer snapshot). The answer does not
     * depend on it: a failure is only logged. */
    if (a.auth == 1 && a.session.id > 0 && a.now - a.session.last_used_at >= API_SESSION_TOUCH_MS) {
        int rc = store_session_touch(app->store, a.session.id, a.now);
        if (rc != STORE_OK)
            fprintf(stderr, "agora: [%s] cannot record a session's use: %s\n", request_id, store_errmsg(app->store));
    }
    if (resp->status != 204 && resp->status != 304)
        http_response_header(resp, "Content-Type", "application/json; charset=utf-8");
    return route;
}
