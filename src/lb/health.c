/* health.c — concurrent active health checks; see health.h. */
#include "lb/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "http/client.h"
#include "lb/events.h"

struct check {
    struct lb_health *h;
    struct check *next;
    struct lb_server *server; /* reference held */
    struct http_client client;
};

struct lb_health {
    struct loop *loop;
    const struct lb_config *cfg;
    struct lb_registry *reg;
    struct check *running;
    struct loop_timer tick;
    uint64_t skip_log_after_ms; /* loop clock: no "skipped" message before this */
    unsigned long skipped;      /* checks skipped since the last message */
    void (*on_down)(void *ctx); /* a server was marked down (lb_health_on_down) */
    void *on_down_ctx;
};

/* Skipped checks are reported at most this often. */
#define SKIP_LOG_MS 10000

/* Marks s down: `downs` first, so that a worker that sees the server unhealthy also sees the new
 * count (proxy.c compares it with the count its exchanges were sent under). */
static void mark_down(struct lb_server *s)
{
    s->hc_down = 1;
    atomic_fetch_add(&s->downs, 1);
    atomic_store(&s->healthy, 0);
}

int lb_health_apply(struct lb_server *s, int passed, unsigned rise, unsigned fall, const char *what)
{
    lb_server_set_last_check(s, what, "");
    int healthy = atomic_load(&s->healthy);
    if (passed) {
        s->hc_fall = 0;
        if (!healthy && ++s->hc_rise >= (int)rise) {
            s->hc_rise = 0;
            s->hc_down = 0;
            atomic_store(&s->healthy, 1);
            atomic_store(&s->up_since_ms, loop_clock_us() / 1000);
            lb_events_add(s->events, LB_EV_UP, s->key, "%s", what);
        }
    } else {
        s->hc_rise = 0;
        /* A server the proxy ejected (passive.h) is out already, but only the checks' own verdict
         * marks it down: it counts towards fall too. */
        if (!s->hc_down && ++s->hc_fall >= (int)fall) {
            s->hc_fall = 0;
            mark_down(s);
            lb_events_add(s->events, LB_EV_DOWN, s->key, healthy ? "%s" : "%s (was ejected)", what);
            return 1;
        }
    }
    return 0;
}

void lb_health_on_down(struct lb_health *h, void (*fn)(void *ctx), void *ctx)
{
    h->on_down = fn;
    h->on_down_ctx = ctx;
}

static void check_free(struct check *c)
{
    struct lb_health *h = c->h;
    struct check **pp = &h->running;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    http_client_free(&c->client);
    lb_server_unref(c->server);
    free(c);
}

/* The verdict of c. */
static void check_done(struct check *c, int passed, const char *what)
{
    struct lb_server *s = c->server;
    struct lb_health *h = c->h;
    int down = 0;
    if (!s->hc_checked) {
        /* The first check ever decides the state at once. */
        s->hc_checked = 1;
        if (!passed) {
            int was = atomic_load(&s->healthy); /* servers start up, added ones down */
            mark_down(s);
            down = 1;
            if (was)
                lb_events_add(s->events, LB_EV_DOWN, s->key, "first check: %s", what);
        } else if (!atomic_exchange(&s->healthy, 1)) {
            lb_events_add(s->events, LB_EV_UP, s->key, "first check: %s", what);
        }
        s->hc_rise = s->hc_fall = 0;
        lb_server_set_last_check(s, what, "");
    } else if (passed && loop_clock_us() / 1000 < atomic_load(&s->ejected_until_ms)) {
        lb_server_set_last_check(s, what, " (ejected)"); /* too early to come back */
    } else {
        down = lb_health_apply(s, passed, h->cfg->rise, h->cfg->fall, what);
    }
    check_free(c);
    if (down > 0 && h->on_down)
        h->on_down(h->on_down_ctx);
}

/* The check could not run for want of a local resource (err): that is no verdict on the server.
 * Its state and its rise/fall counts stay as they were, its last-check text (shown in /stats)
 * says why, and a message goes to stderr at most every SKIP_LOG_MS. Frees c. */
static void check_skip(struct check *c, int err)
{
    struct lb_health *h = c->h;
    char what[96];
    snprintf(what, sizeof(what), "not checked: %s (no verdict)", strerror(err));
    lb_server_set_last_check(c->server, what, "");
    h->skipped++;
    uint64_t now = loop_now(h->loop);
    if (now >= h->skip_log_after_ms) {
        fprintf(stderr,
                "agora lb: health check of %s not run: %s; server states kept (%lu check(s) skipped since the "
                "last message)\n",
                c->server->url, strerror(err), h->skipped);
        h->skipped = 0;
        h->skip_log_after_ms = now + SKIP_LOG_MS;
    }
    check_free(c);
}

/* The check's client is done (the response head came) or failed: the verdict. */
static void on_check_done(struct http_client *cl, void *data)
{
    struct check *c = data;
    char what[96];
    switch (cl->error) {
    case HTTP_CLIENT_OK:
        snprintf(what, sizeof(what), "HTTP %d", cl->status);
        check_done(c, (unsigned)cl->status == c->h->cfg->health_status, what);
        return;
    case HTTP_CLIENT_ECONNECT:
        if (net_local_shortage(cl->err)) {
            check_skip(c, cl->err);
            return;
        }
        snprintf(what, sizeof(what), "connect failed: %s", strerror(cl->err));
        break;
    case HTTP_CLIENT_ESEND:
        snprintf(what, sizeof(what), "send failed: %s", strerror(cl->err));
        break;
    case HTTP_CLIENT_ETIMEOUT:
        snprintf(what, sizeof(what), "%s",
                 cl->phase == HTTP_CLIENT_CONNECTING ? "timeout connecting" : "timeout waiting for response");
        break;
    case HTTP_CLIENT_ECLOSED:
        snprintf(what, sizeof(what), "connection closed before a response");
        break;
    case HTTP_CLIENT_EREQUEST:
        snprintf(what, sizeof(what), "not sent: %s", cl->detail);
        break;
    default: /* EMALFORMED, ETOOLARGE (a head over the limit is malformed) */
        snprintf(what, sizeof(what), "malformed response");
        break;
    }
    check_done(c, 0, what);
}

static void start_check(struct lb_health *h, struct lb_server *s)
{
    for (struct check *c = h->running; c; c = c->next)
        if (c->server == s)
            return; /* previous check still running */
    struct check *c = alloc_calloc(1, sizeof(*c));
    c->h = h;
    c->server = s;
    lb_server_ref(s);
    c->next = h->running;
    h->running = c;
    const struct http_client_header hdrs[] = {{"User-Agent", "agora-health"}};
    const struct http_client_req req = {
        .method = "GET", .target = h->cfg->health_path, .host = s->host_header, .headers = hdrs, .nheaders = 1};
    const struct http_client_opts opts = {.head_only = 1}; /* the status is the verdict */
    if (http_client_start(&c->client, &s->addr, &req, &opts) < 0) {
        on_check_done(&c->client, c); /* ECONNECT, or EREQUEST: nothing sent */
        return;
    }
    int rc = http_client_watch(&c->client, h->loop, h->cfg->health_timeout_ms, on_check_done, c);
    if (rc < 0)
        check_skip(c, -rc); /* our loop's failure, not the server's */
}

void lb_health_kick(struct lb_health *h)
{
    struct lb_set *set = lb_registry_get(h->reg);
    for (size_t i = 0; i < set->n; i++)
        start_check(h, set->servers[i]);
    lb_set_unref(set);
}

static void on_tick(struct loop *loop, struct loop_timer *t)
{
    struct lb_health *h = t->data;
    lb_health_kick(h);
    loop_timer_arm(loop, t, h->cfg->health_interval_ms);
}

struct lb_health *lb_health_start(struct loop *loop, const struct lb_config *cfg, struct lb_registry *reg)
{
    struct lb_health *h = alloc_calloc(1, sizeof(*h));
    h->loop = loop;
    h->cfg = cfg;
    h->reg = reg;
    h->tick.fn = on_tick;
    h->tick.data = h;
    loop_timer_arm(loop, &h->tick, 0);
    return h;
}

void lb_health_stop(struct lb_health *h)
{
    if (!h)
        return;
    loop_timer_cancel(h->loop, &h->tick);
    while (h->running)
        check_free(h->running);
    free(h);
}
