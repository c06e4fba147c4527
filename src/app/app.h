/* app.h — the social-network application behind `agora server`.
 *
 * One struct app per worker thread: it owns that thread's database connection (through the
 * store interface, store.h) and is used by that thread only. The HTTP server (src/http/server.c)
 * reads a whole request (body ≤ max body size, default 64 KiB) and calls app_handle(), which
 * routes it (JSON API under /api/v1/, static web UI from web_dir otherwise) and fills the
 * response. app_handle never fails: every problem becomes an HTTP error response with a JSON
 * body {"error": "..."}.
 *
 * Every response carries X-Content-Type-Options: nosniff and Referrer-Policy: no-referrer, and a
 * Content-Security-Policy: the UI's files get APP_UI_CSP (scripts only from the site's own
 * files, no inline script, no framing); JSON answers get APP_API_CSP (nothing at all). */
#ifndef AGORA_APP_H
#define AGORA_APP_H
#include <stddef.h>
#include <stdint.h>

#include "app/client_addr.h"
#include "http/message.h"

struct app;

#define APP_UI_CSP                                                                                                     \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "                    \
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
#define APP_API_CSP "default-src 'none'; frame-ancestors 'none'; sandbox"

/* At most count events per window (throttle.h); count <= 0: no limit. */
struct app_limit {
    int count;
    int64_t window_ms;
};

/* Password-guessing and sign-up limits (defaults by app_limits_default, in brackets). */
struct app_limits {
    struct app_limit login_account;  /* failed log-ins per account [10 per 15 min] */
    struct app_limit login_address;  /* failed log-ins per client address [50 per 15 min] */
    struct app_limit signup_address; /* sign-ups per client address [5 per 10 min] */
};

struct app_ready;
struct app_stats;
struct app_config {
    const char *db_url;               /* "sqlite:PATH" (later also "postgres://..."); NULL: no database
                                         (an event loop's app: only requests app_on_loop accepts) */
    const struct app_ready *ready;    /* /health answers from it (ready.h); NULL: /health pings */
    const char *served_by;            /* value of the X-Served-By header, e.g. "127.0.0.1:8001" */
    const char *web_dir;              /* directory of the static UI files, e.g. "web" */
    const struct app_limits *limits;  /* NULL: app_limits_default */
    const struct client_trust *trust; /* proxies whose X-Forwarded-For is believed; NULL: loopback */
    int session_days;                 /* a session unused this many days expires; <= 0: 30 */
    struct app_stats *stats;          /* this thread's counters (metrics.h); NULL: none */
    struct app_replica *replica;      /* reads go there when they may (replica.h); NULL: none */
};

void app_limits_default(struct app_limits *l);

/* Opens the database (creating/migrating the schema) and returns a new app, or NULL with a
 * message in err (errlen bytes) on failure. */
struct app *app_open(const struct app_config *cfg, char *err, size_t errlen);
/* Handles one request; matches http_handler_fn (ctx is the struct app). */
void app_handle(void *app, const struct http_request *req, struct http_response *resp);
/* 1 if the route of req hashes a password (sign-up, log-in): such requests must not run on an
 * event-loop thread (agora server sends them to its hashing pool). Needs no app: a pure function
 * of the route table, safe on any thread. */
int app_hashes_password(const struct http_request *req);
/* 1 if app_handle answers req without the database when the app has a readiness state (ready.h):
 * GET/HEAD /health (from that state), the UI's files, and the 405s of paths outside /api. Such
 * requests may run on an event-loop thread; every other one must go to a handler thread whose
 * app holds a store connection (an app without one answers them 503). A pure function of the
 * path, safe on any thread. */
int app_on_loop(const struct http_request *req);
/* Closes the database and frees the app. NULL is allowed. */
void app_close(struct app *app);

#endif
