/* app.c — the application entry points: open/close, and the top-level split of every request
 * into the health check, the JSON API (router.c) and the static UI (static.c). See app.h. */
#include "app/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/api.h"
#include "app/auth.h"
#include "app/json.h"
#include "app/metrics.h"
#include "app/ready.h"
#include "app/router.h"
#include "app/static.h"
#include "core/alloc.h"
#include "core/loop.h"

void app_limits_default(struct app_limits *l)
{
    l->login_account = (struct app_limit){10, 15 * 60 * 1000};
    l->login_address = (struct app_limit){50, 15 * 60 * 1000};
    l->signup_address = (struct app_limit){5, 10 * 60 * 1000};
}

struct app *app_open(const struct app_config *cfg, char *err, size_t errlen)
{
    struct app *app = NULL;
    if (auth_init() != 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return NULL;
    }
    app = alloc_calloc(1, sizeof *app);
    app->served_by = alloc_strdup(cfg->served_by ? cfg->served_by : "agora");
    app->web_dir = alloc_strdup(cfg->web_dir ? cfg->web_dir : "web");
    if (cfg->limits)
        app->limits = *cfg->limits;
    else
        app_limits_default(&app->limits);
    if (cfg->trust)
        app->trust = *cfg->trust;
    else
        client_trust_default(&app->trust);
    if (app->served_by == NULL || app->web_dir == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    struct store_options so = {0};
    if (cfg->session_days > 0)
        so.session_ttl_ms = (int64_t)cfg->session_days * 24 * 60 * 60 * 1000;
    app->ready = cfg->ready;
    so.positions = cfg->replica != NULL; /* a write answers with its position (replica.h) */
    app->replica = cfg->db_url != NULL ? cfg->replica : NULL;
    if (cfg->db_url != NULL && (app->store = store_open(cfg->db_url, &so, err, errlen)) == NULL)
        goto fail;
    app->stats = cfg->stats;
    if (app->store)
        app->store->stats = app_stats_store(cfg->stats);
    return app;
fail:
    app_close(app);
    return NULL;
}

void app_close(struct app *app)
{
    if (app == NULL)
        return;
    store_close(app->replica_store);
    store_close(app->store);
    free(app->served_by);
    free(app->web_dir);
    free(app->dummy_hash);
    free(app);
}

static int path_is(struct http_str p, const char *lit)
{
    size_t n = strlen(lit);
    return p.n == n && memcmp(p.p, lit, n) == 0;
}

static int is_get(const struct http_head *h) { return h->method == HTTP_GET || h->method == HTTP_HEAD; }

static void not_allowed(struct http_response *resp)
{
    resp->status = 405;
    json_put_error(&resp->body, "method not allowed (allowed: GET, HEAD)");
    http_response_header(resp, "Allow", "GET, HEAD");
    http_response_header(resp, "Content-Type", "application/json; charset=utf-8");
}

/* From the readiness state when the app has one (the pinger logs the failures), else a ping. */
static void health(struct app *app, struct http_response *resp)
{
    int ok;
    if (app->ready != NULL)
        ok = app_ready_ok(app->ready);
    else if ((ok = app->store != NULL && store_ping(app->store) == STORE_OK) == 0)
        fprintf(stderr, "agora: health check failed: %s\n", app->store ? store_errmsg(app->store) : "no database");
    if (ok) {
        resp->status = 200;
        jsonw_doc_str(&resp->body, JSONW_COMPACT, "status", "ok");
    } else {
        resp->status = 503;
        json_put_error(&resp->body, "database unavailable");
    }
    http_response_header(resp, "Content-Type", "application/json; charset=utf-8");
    http_response_header(resp, "Cache-Control", "no-store");
}

int app_hashes_password(const struct http_request *req) { return router_hashes_password(req->head); }

static int is_api(struct http_str p) { return path_is(p, "/api") || (p.n >= 5 && memcmp(p.p, "/api/", 5) == 0); }

int app_on_loop(const struct http_request *req) { return !is_api(req->head->path); }

void app_handle(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct app *app = ctx;
    const struct http_head *h = req->head;
    int ui = 0;
    unsigned route = APP_ROUTE_STATIC;
    uint64_t t0 = app->stats ? loop_clock_us() : 0;
    /* The request id: the balancer's (a trusted proxy's) when it is a sane one, else made here;
     * echoed, and in every error this request logs. */
    char id[HTTP_REQUEST_ID_MAX + 1];
    const struct http_header *rid = http_find_header(h, "x-request-id");
    if (rid && http_request_id_ok(rid->value) && req->remote_addr && client_trust_has(&app->trust, req->remote_addr)) {
        memcpy(id, rid->value.p, rid->value.n);
        id[rid->value.n] = '\0';
    } else {
        http_request_id_make(id);
    }
    http_response_header(resp, "X-Request-Id", "%s", id);
    http_response_header(resp, "X-Served-By", "%s", app->served_by);
    if (path_is(h->path, "/health")) {
        route = APP_ROUTE_HEALTH;
        if (is_get(h))
            health(app, resp);
        else
            not_allowed(resp);
    } else if (is_api(h->path) && app->store == NULL) {
        route = APP_ROUTE_OTHER;
        resp->status = 503; /* a request sent to the wrong thread: a bug, but never a crash */
        json_put_error(&resp->body, "no database on this thread");
        http_response_header(resp, "Content-Type", "application/json; charset=utf-8");
    } else if (is_api(h->path)) {
        route = router_handle(app, req, resp, id);
    } else if (!is_get(h)) {
        not_allowed(resp);
    } else {
        static_serve(app->web_dir, req, resp);
        ui = 1;
    }
    http_response_header(resp, "X-Content-Type-Options", "nosniff");
    http_response_header(resp, "Referrer-Policy", "no-referrer");
    http_response_header(resp, "Content-Security-Policy", "%s", ui ? APP_UI_CSP : APP_API_CSP);
    if (app->stats)
        app_stats_request(app->stats, route, h->method, resp->status, loop_clock_us() - t0);
}
