/* proxy.c — forwarding requests to backends and streaming responses back; see proxy.h.
 *
 * An exchange (struct px) ties one client request to one backend connection (struct upstream).
 * Request:  client --(http_server on_request/on_body)--> px --> upstream.out --> backend
 * Response: backend --> upstream.in --(parse head, decode body)--> px --> http_conn_send --> client
 * Both bodies are re-framed: Content-Length is kept, chunked bodies are decoded and re-chunked
 * (which also normalises chunk extensions and drops trailers), and a close-delimited response is
 * sent chunked to HTTP/1.1 clients. Hop-by-hop headers and those named in Connection are removed.
 *
 * Backpressure: when the backend's output queue passes HIGH_WATER the client body is paused;
 * when the client's output queue is full, reading from the backend stops until on_drain.
 * A backend connection that fails before any byte was written (connect refused, reset of a stale
 * pooled connection) is retried on another server: nothing reached a backend, so it is safe for
 * every method. */
#include "lb/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "http/parser.h"
#include "http/server.h"

#define HIGH_WATER   HTTP_OUT_HIGH_WATER
#define READ_CHUNK   65536
#define MAX_TRIES    9 /* 1 + the most retries the configuration allows */
#define WEIGHT_SCALE 100
#define EWMA_TAU_US  10e6 /* Finagle's default decay time */

struct upstream;

/* Idle keep-alive connections to one server, kept by one worker. */
struct pool {
    struct lb_server *server; /* reference held */
    struct upstream *idle;    /* most recently used first */
    unsigned nidle;
};

struct lb_worker {
    struct lb_shared *sh;
    struct loop *loop;
    struct http_server *srv;
    unsigned id;
    unsigned gen;       /* generation of `set` */
    struct lb_set *set; /* reference held */
    void *policy;       /* instance for `set` */
    struct pool *pools; /* parallel to set->servers */
    uint64_t rng;
    struct buf log; /* access-log lines not yet written */
    struct loop_timer log_timer;
    struct lb_target *targets;
    long retry_milli; /* retry budget, in thousandths of a retry */
};

enum up_state { UP_CONNECTING, UP_ACTIVE, UP_IDLE };

struct upstream {
    struct lb_worker *w;
    struct lb_server *server; /* reference held */
    struct upstream *next;    /* in the pool's idle list */
    int fd;
    enum up_state state;
    struct buf in, out;
    uint64_t bytes_written; /* on this connection, for the current exchange */
    unsigned uses;          /* exchanges served, including the current one */
    int reading;            /* read interest wanted */
    struct px *px;
    struct loop_timer idle_timer;
};

enum resp_state { RS_HEAD, RS_BODY, RS_DONE };

struct px {
    struct lb_worker *w;
    struct http_conn *client;
    const struct http_head *req;
    struct upstream *up;
    struct lb_server *server; /* reference held while counted in inflight */
    int tries;
    struct lb_server *tried[MAX_TRIES];
    int req_chunked; /* request body is sent chunked to the backend */
    int safe;        /* may be sent again after a failure: idempotent or Idempotency-Key */
    int replayable;  /* `replay` holds every request byte sent so far */
    struct buf replay;
    int req_body_done;
    int client_keep_alive;
    enum resp_state rs;
    int resp_kind;
    uint64_t resp_left;
    struct http_chunked resp_chunked;
    int resp_chunked_out; /* response re-chunked to the client */
    int resp_keep_alive;  /* backend connection reusable afterwards */
    int client_paused;    /* client's output is full: backend reads stopped */
    int status;
    int head_sent;       /* response head sent to the client */
    uint64_t body_bytes; /* response body bytes sent (for the access log) */
    unsigned queued;     /* requests in flight on the server when sent, this one included */
    uint64_t start_us;
    struct loop_timer timer;
    char req_line[160]; /* for the access log */
    char referer[128], agent[160];
    int dead; /* ended (px_free); memory stays valid until the iteration ends */
};

enum fail_kind { FAIL_CONNECT, FAIL_IO, FAIL_TIMEOUT, FAIL_5XX };

static void px_finish(struct px *px, int reuse_upstream);
static void px_backend_failed(struct px *px, enum fail_kind kind);
static void passive_fail(struct px *px, enum fail_kind kind, int stale);
static void px_fail(struct px *px, int status, const char *msg);
static void px_fail_dispatch(struct px *px, int rc);
static void up_close(struct upstream *u);
static void up_io(struct loop *loop, int fd, int events, void *data);
static void up_process(struct upstream *u);
static int px_start_upstream(struct px *px, struct buf *pending);

/* ---- small helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* 1 if the field `name` of message m is not forwarded: hop-by-hop fields, those m's Connection
 * headers list, and the framing fields, which the balancer always writes itself from what it
 * parsed (so the next hop frames the message exactly as the balancer did). */
static int is_hop_by_hop(struct http_str name, const struct http_head *m)
{
    const char *lit;
    switch (name.n) { /* one comparison at most: most names have a length none of these has */
    case 2:
        lit = "te";
        break;
    case 7:
        lit = (name.p[0] | 0x20) == 'u' ? "upgrade" : "trailer";
        break;
    case 10:
        lit = (name.p[0] | 0x20) == 'k' ? "keep-alive" : "connection";
        break;
    case 14:
        lit = "content-length";
        break;
    case 16:
        lit = "proxy-connection";
        break;
    case 17:
        lit = "transfer-encoding";
        break;
    default:
        lit = NULL;
    }
    if (lit && http_str_ieq(name, lit))
        return 1;
    return http_connection_lists(m, name);
}

/* Fields the balancer acts on besides framing and Host (which the parser guards): a Connection
 * header may not list them, or the backend would not see what the balancer decided on
 * (a retried POST whose Idempotency-Key was dropped would be created twice; an Expect dropped
 * would leave the client waiting for a 100 Continue). Returns the field, or NULL. */
static const char *lists_acted_on_field(const struct http_head *h)
{
    static const char *const acted_on[] = {"idempotency-key", "expect"};
    if (!h->conn_names)
        return NULL;
    for (size_t i = 0; i < sizeof(acted_on) / sizeof(acted_on[0]); i++)
        if (http_connection_lists(h, (struct http_str){acted_on[i], strlen(acted_on[i])}))
            return acted_on[i];
    return NULL;
}

/* ---- server set and pools ---- */

static void pools_free(struct pool *pools, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (pools[i].idle) {
            struct upstream *u = pools[i].idle;
            pools[i].idle = u->next;
            u->state = UP_ACTIVE; /* so up_close does not search the pool */
            up_close(u);
        }
        lb_server_unref(pools[i].server);
    }
    free(pools);
}

/* Takes the registry's current snapshot if it changed: new policy instance, pools carried over
 * for servers that remain. */
static void worker_refresh(struct lb_worker *w)
{
    struct lb_shared *sh = w->sh;
    if (w->set && atomic_load_explicit(&sh->registry.gen, memory_order_acquire) == w->gen)
        return;
    struct lb_set *set = lb_registry_get(&sh->registry);
    struct pool *pools = calloc(set->n ? set->n : 1, sizeof(*pools));
    if (!pools)
        abort();
    for (size_t i = 0; i < set->n; i++) {
        pools[i].server = set->servers[i];
        lb_server_ref(set->servers[i]);
        if (w->set) {
            for (size_t j = 0; j < w->set->n; j++) {
                if (w->pools[j].server == set->servers[i]) {
                    pools[i].idle = w->pools[j].idle;
                    pools[i].nidle = w->pools[j].nidle;
                    w->pools[j].idle = NULL;
                    w->pools[j].nidle = 0;
                }
            }
        }
    }
    if (w->set) {
        pools_free(w->pools, w->set->n);
        sh->policy->destroy(w->policy);
        lb_set_unref(w->set);
    }
    free(w->targets);
    w->targets = calloc(set->n ? set->n : 1, sizeof(*w->targets));
    for (size_t i = 0; i < set->n; i++) {
        w->targets[i].key = set->servers[i]->key;
        w->targets[i].weight = atomic_load(&set->servers[i]->weight) * WEIGHT_SCALE;
    }
    w->set = set;
    w->gen = set->gen;
    w->pools = pools;
    w->policy = sh->policy->create(w->targets, set->n);
}

static struct pool *pool_of(struct lb_worker *w, struct lb_server *s)
{
    for (size_t i = 0; i < w->set->n; i++)
        if (w->pools[i].server == s)
            return &w->pools[i];
    return NULL;
}

static uint64_t affinity_hash(struct lb_worker *w, struct px *px)
{
    const char *key = w->sh->cfg->hash_key;
    if (!strncmp(key, "header:", 7)) {
        const struct http_header *h = http_find_header(px->req, key + 7);
        if (h)
            return lb_hash64(h->value.p, h->value.n);
    } else if (!strncmp(key, "cookie:", 7)) {
        const struct http_header *h = http_find_header(px->req, "cookie");
        size_t nl = strlen(key + 7);
        if (h) {
            const char *p = h->value.p, *end = p + h->value.n;
            while (p < end) {
                while (p < end && (*p == ' ' || *p == ';'))
                    p++;
                const char *eq = memchr(p, '=', (size_t)(end - p));
                if (!eq)
                    break;
                const char *semi = memchr(eq, ';', (size_t)(end - eq));
                if (!semi)
                    semi = end;
                if ((size_t)(eq - p) == nl && !memcmp(p, key + 7, nl))
                    return lb_hash64(eq + 1, (size_t)(semi - eq - 1));
                p = semi;
            }
        }
    }
    const char *ip = http_conn_remote_ip(px->client);
    return lb_hash64(ip, strlen(ip));
}

/* Chooses a server not yet tried for px. Returns NULL if none is usable.
 * Servers that are down or ejected are skipped, except in panic: when fewer than panic_percent
 * of the active servers are healthy (but at least one is), every active server is a candidate,
 * so that a wrong health verdict cannot overload the few that remain (as in Envoy). Servers in
 * slow start get a share of their weight that grows linearly over the window (from 10%). */
static struct lb_server *pick_server(struct lb_worker *w, struct px *px)
{
    const struct lb_config *cfg = w->sh->cfg;
    struct lb_set *set = w->set;
    size_t active = 0, healthy = 0, usable = 0;
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        if (atomic_load_explicit(&s->admin, memory_order_relaxed) != LB_ADMIN_ACTIVE)
            continue;
        active++;
        healthy += atomic_load_explicit(&s->healthy, memory_order_relaxed) != 0;
    }
    int panic = cfg->panic_percent && healthy > 0 && healthy * 100 < active * cfg->panic_percent;
    uint64_t now = loop_now(w->loop);
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        struct lb_target *t = &w->targets[i];
        int ok = atomic_load_explicit(&s->admin, memory_order_relaxed) == LB_ADMIN_ACTIVE &&
                 (panic || atomic_load_explicit(&s->healthy, memory_order_relaxed));
        for (int k = 0; k < px->tries && ok; k++)
            if (px->tried[k] == s)
                ok = 0;
        unsigned weight = atomic_load_explicit(&s->weight, memory_order_relaxed) * WEIGHT_SCALE;
        uint64_t up = now - atomic_load_explicit(&s->up_since_ms, memory_order_relaxed);
        if (cfg->slow_start_ms && up < cfg->slow_start_ms) {
            uint64_t floor = weight / 10, ramp = (uint64_t)weight * up / cfg->slow_start_ms;
            weight = (unsigned)(ramp > floor ? ramp : floor);
            if (!weight)
                weight = 1;
        }
        t->weight = ok ? weight : 0;
        t->inflight = (unsigned)atomic_load_explicit(&s->inflight, memory_order_relaxed);
        t->latency_us = s->ewma_us; /* a racy read of a double is fine for a hint */
        usable += ok;
    }
    if (!usable)
        return NULL;
    uint64_t hash = w->sh->policy == &lb_policy_hash ? affinity_hash(w, px) : 0;
    int i = w->sh->policy->pick(w->policy, w->targets, set->n, hash, rng_next(&w->rng));
    return i < 0 ? NULL : set->servers[i];
}

/* Counts an attempt on s for px. */
static void px_use_server(struct px *px, struct lb_server *s)
{
    px->server = s;
    lb_server_ref(s);
    px->queued = (unsigned)atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&s->total, 1, memory_order_relaxed);
    px->tried[px->tries++] = s;
}

/* ---- access log ---- */

static void log_flush(struct lb_worker *w)
{
    if (buf_used(&w->log) == 0 || w->sh->access_log_fd < 0)
        return;
    ssize_t n = write(w->sh->access_log_fd, buf_head(&w->log), buf_used(&w->log));
    (void)n; /* a full disk must not stop the proxy */
    buf_reset(&w->log);
}

static void on_log_timer(struct loop *loop, struct loop_timer *t)
{
    struct lb_worker *w = t->data;
    log_flush(w);
    loop_timer_arm(loop, t, 1000);
}

static void copy_header(const struct http_head *h, const char *name, char *out, size_t outlen)
{
    const struct http_header *hd = http_find_header(h, name);
    size_t n = 0;
    if (hd)
        for (size_t i = 0; i < hd->value.n && n + 1 < outlen; i++) {
            char ch = hd->value.p[i];
            out[n++] = ch == '"' || ch == '\\' ? '\'' : ch;
        }
    out[n] = '\0';
    if (!n && outlen > 1)
        snprintf(out, outlen, "-");
}

static void log_request(struct px *px, int status)
{
    struct lb_worker *w = px->w;
    if (w->sh->access_log_fd < 0)
        return;
    time_t now = time(NULL);
    struct tm tm;
    char date[40];
    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%d/%b/%Y:%H:%M:%S %z", &tm);
    double ms = (double)(loop_clock_us() - px->start_us) / 1000.0;
    buf_printf(&w->log, "%s - - [%s] \"%s\" %d %llu \"%s\" \"%s\" %s %.3f\n", http_conn_remote_ip(px->client), date,
               px->req_line, status, (unsigned long long)px->body_bytes, px->referer, px->agent,
               px->server ? px->server->key : "-", ms);
    if (buf_used(&w->log) > 32768)
        log_flush(w);
}

/* ---- exchanges ---- */

static void px_release_server(struct px *px)
{
    if (!px->server)
        return;
    atomic_fetch_sub_explicit(&px->server->inflight, 1, memory_order_relaxed);
    lb_server_unref(px->server);
    px->server = NULL;
}

static void free_later(struct loop *loop, void *p) { free(p); }

/* Ends px. Its memory is freed after the current loop iteration, so callers up the stack may
 * still compare pointers to it (e.g. `u->px == px`) but must not use it otherwise. */
static void px_free(struct px *px)
{
    px->dead = 1;
    loop_timer_cancel(px->w->loop, &px->timer);
    buf_free(&px->replay);
    px_release_server(px);
    loop_defer(px->w->loop, free_later, px);
}

static void px_arm(struct px *px, unsigned ms) { loop_timer_arm(px->w->loop, &px->timer, ms); }

static void on_px_timer(struct loop *loop, struct loop_timer *t)
{
    struct px *px = t->data;
    if (px->up && px->up->state == UP_CONNECTING)
        px_backend_failed(px, FAIL_CONNECT); /* connect timeout: nothing was sent */
    else
        px_backend_failed(px, FAIL_TIMEOUT);
}

/* Passive health: a connect failure, a reset or a timeout ejects the server at once. A failure
 * on a reused pooled connection before any response byte is most likely the backend closing an
 * idle connection as we wrote to it, and does not count against the server. */
static void passive_fail(struct px *px, enum fail_kind kind, int stale)
{
    const struct lb_config *cfg = px->w->sh->cfg;
    if (!px->server || !cfg->passive_health || stale || !atomic_load(&px->server->healthy))
        return;
    /* Never eject so many that the rest are overwhelmed: at most max_eject_percent may be out. */
    struct lb_set *set = px->w->set;
    size_t active = 0, down = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (atomic_load_explicit(&set->servers[i]->admin, memory_order_relaxed) != LB_ADMIN_ACTIVE)
            continue;
        active++;
        down += !atomic_load_explicit(&set->servers[i]->healthy, memory_order_relaxed);
    }
    if ((down + 1) * 100 > active * cfg->max_eject_percent)
        return;
    lb_server_eject(px->server, cfg->eject_base_ms, cfg->eject_max_ms,
                    kind == FAIL_CONNECT   ? "connect failed"
                    : kind == FAIL_TIMEOUT ? "response timeout"
                    : kind == FAIL_5XX     ? "consecutive 5xx responses"
                                           : "connection reset");
}

/* Takes one retry from the worker's budget: each request earns budget_percent/100 of a retry
 * (at most 100 saved; 10 to start with), so retries after sending stay a bounded share of the
 * traffic and cannot multiply an outage. Returns 1 if a retry may be made. */
static int retry_budget_take(struct lb_worker *w)
{
    if (w->retry_milli < 1000)
        return 0;
    w->retry_milli -= 1000;
    return 1;
}

/* Starts px on px->server or, when connecting fails at once (a refused connection on loopback
 * fails inside connect()), on other servers. pending is taken over. Returns 0; -1 when no server
 * could be reached; -2 when the balancer itself is short of descriptors or memory
 * (net_local_shortage): that is no verdict on the server, and no other server would fare better.
 * px is not answered yet on failure. */
static int px_dispatch(struct px *px, struct buf *pending)
{
    struct lb_worker *w = px->w;
    for (;;) {
        int rc = px_start_upstream(px, pending);
        if (rc == 0)
            return 0;
        if (net_local_shortage(-rc)) {
            buf_free(pending);
            return -2;
        }
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        passive_fail(px, FAIL_CONNECT, 0);
        px_release_server(px);
        struct lb_server *s = px->tries <= (int)w->sh->cfg->retries ? pick_server(w, px) : NULL;
        if (!s)
            break;
        px_use_server(px, s);
    }
    buf_free(pending);
    return -1;
}

/* The backend failed. Retry on another server when nothing reached the backend (any method), or
 * when the request is safe to repeat and fully replayable and the retry budget allows; otherwise
 * answer the client (if it has no response head yet) or cut it off. */
static void px_backend_failed(struct px *px, enum fail_kind kind)
{
    struct lb_worker *w = px->w;
    struct upstream *u = px->up;
    int stale = u && u->uses > 1 && kind == FAIL_IO;
    if (px->server)
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
    passive_fail(px, kind, stale);
    int can = px->rs == RS_HEAD && px->tries <= (int)w->sh->cfg->retries && kind != FAIL_TIMEOUT && u;
    struct buf pending = {0};
    if (can && u->bytes_written == 0) {
        /* Nothing reached the backend: move what is queued to another server. */
        pending = u->out;
        memset(&u->out, 0, sizeof(u->out));
    } else if (can && px->safe && px->replayable && buf_used(&u->in) == 0 && (stale || retry_budget_take(w))) {
        buf_append(&pending, buf_head(&px->replay), buf_used(&px->replay));
    } else {
        can = 0;
    }
    if (can) {
        u->px = NULL;
        px->up = NULL;
        up_close(u);
        px_release_server(px);
        struct lb_server *s = pick_server(w, px);
        int rc = -1;
        if (s) {
            px_use_server(px, s);
            if ((rc = px_dispatch(px, &pending)) == 0)
                return;
        }
        buf_free(&pending);
        px_fail_dispatch(px, rc);
        return;
    }
    px_fail(px, kind == FAIL_TIMEOUT ? 504 : 502,
            kind == FAIL_TIMEOUT ? "Backend server timed out" : "Error communicating with backend server");
}

/* Answers a failed px_dispatch: 502 when no server could be reached, 503 (with Retry-After) when
 * the balancer itself ran short of descriptors or memory. */
static void px_fail_dispatch(struct px *px, int rc)
{
    if (rc == -2)
        px_fail(px, 503, "Balancer out of resources (descriptors or memory), try again");
    else
        px_fail(px, 502, "Error communicating with backend server");
}

/* Ends the exchange with an error: an error response if nothing was sent yet, else the client
 * connection is cut (the response cannot be completed). */
static void px_fail(struct px *px, int status, const char *msg)
{
    if (px->up) {
        struct upstream *u = px->up;
        u->px = NULL;
        px->up = NULL;
        up_close(u);
    }
    struct http_conn *c = px->client;
    http_conn_set_data(c, NULL);
    log_request(px, px->head_sent ? px->status : status);
    int head_sent = px->head_sent;
    px_free(px);
    if (head_sent) {
        http_conn_response_done(c, 0); /* truncated: the client sees the connection close */
        return;
    }
    http_conn_respond_error(c, status, msg, 1);
}

/* Response complete. */
static void px_finish(struct px *px, int reuse_upstream)
{
    struct lb_worker *w = px->w;
    struct upstream *u = px->up;
    uint64_t now = loop_clock_us();
    if (px->server) {
        uint64_t lat = now - px->start_us;
        lb_hist_record(px->server, lat);
        pthread_spin_lock(&px->server->ewma_lock);
        /* The estimate is per request: a latency observed behind `queued` other requests is
         * divided among them, so that cost = estimate × (in flight + 1) does not count the
         * queue twice (it would if the raw latency, which already contains the wait, went in). */
        double sample = (double)lat / (px->queued ? px->queued : 1);
        lb_ewma_update(&px->server->ewma_us, &px->server->ewma_stamp_us, sample, now, EWMA_TAU_US);
        pthread_spin_unlock(&px->server->ewma_lock);
        if (px->status >= 500)
            atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
    }
    px->up = NULL;
    if (u) {
        u->px = NULL;
        struct pool *pool = reuse_upstream && !atomic_load(&w->sh->stopping) ? pool_of(w, u->server) : NULL;
        if (pool && pool->nidle < w->sh->cfg->pool_idle_max && buf_used(&u->in) == 0 && buf_used(&u->out) == 0) {
            u->state = UP_IDLE;
            u->next = pool->idle;
            pool->idle = u;
            pool->nidle++;
            u->reading = 1;
            loop_set_mask(w->loop, u->fd, LOOP_READ); /* notice the backend closing it */
            loop_timer_arm(w->loop, &u->idle_timer, w->sh->cfg->pool_idle_timeout_ms);
        } else {
            up_close(u);
        }
    }
    struct http_conn *c = px->client;
    log_request(px, px->status);
    int keep = px->client_keep_alive;
    http_conn_set_data(c, NULL);
    px_free(px);
    http_conn_response_done(c, keep);
}

/* ---- upstream connections ---- */

static void up_idle_timeout(struct loop *loop, struct loop_timer *t)
{
    struct upstream *u = t->data;
    up_close(u);
}

static void up_close(struct upstream *u)
{
    struct lb_worker *w = u->w;
    if (u->state == UP_IDLE) {
        struct pool *pool = w->set ? pool_of(w, u->server) : NULL;
        if (pool) {
            struct upstream **pp = &pool->idle;
            while (*pp && *pp != u)
                pp = &(*pp)->next;
            if (*pp) {
                *pp = u->next;
                pool->nidle--;
            }
        }
    }
    loop_timer_cancel(w->loop, &u->idle_timer);
    if (u->fd >= 0) {
        loop_unwatch(w->loop, u->fd);
        close(u->fd);
        u->fd = -1;
    }
    buf_free(&u->in);
    buf_free(&u->out);
    lb_server_unref(u->server);
    u->server = NULL;
    u->px = NULL;
    u->reading = 0;
    /* Freed after this iteration: a caller up the stack may still look at u->px. */
    loop_defer(w->loop, free_later, u);
}

static void up_update_mask(struct upstream *u)
{
    int mask = 0;
    if (u->state == UP_CONNECTING || buf_used(&u->out) > 0)
        mask |= LOOP_WRITE;
    if (u->reading && u->state != UP_CONNECTING)
        mask |= LOOP_READ;
    loop_set_mask(u->w->loop, u->fd, mask);
}

/* Writes queued bytes. Returns 0, or -1 if the exchange failed (px handled). */
static int up_flush(struct upstream *u)
{
    while (buf_used(&u->out) > 0) {
        ssize_t n = send(u->fd, buf_head(&u->out), buf_used(&u->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&u->out, (size_t)n);
            u->bytes_written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        struct px *px = u->px;
        if (px && px->rs == RS_HEAD && u->bytes_written > 0) {
            /* The backend stopped reading: it may have answered early (e.g. 413 to a body it
             * will not take) and closed. Use that answer if it is there. */
            buf_free(&u->out);
            net_read(u->fd, &u->in, 4 * READ_CHUNK);
            up_process(u);
            if (u->px != px)
                return -1; /* answered */
        }
        if (u->px)
            px_backend_failed(u->px, u->bytes_written ? FAIL_IO : FAIL_CONNECT);
        else
            up_close(u);
        return -1;
    }
    struct px *px = u->px;
    if (px && buf_used(&u->out) < HIGH_WATER / 2 && !px->req_body_done)
        http_conn_pause_body(px->client, 0);
    return 0;
}

static void up_send(struct upstream *u, const void *p, size_t n)
{
    buf_append(&u->out, p, n);
    if (u->state == UP_ACTIVE && up_flush(u) < 0)
        return;
    up_update_mask(u);
}

/* Starts (or reuses) a backend connection for px->server and queues `pending` (the request
 * bytes so far; taken over). Returns 0, or -errno if no connection could be started. */
static int px_start_upstream(struct px *px, struct buf *pending)
{
    struct lb_worker *w = px->w;
    struct pool *pool = pool_of(w, px->server);
    struct upstream *u = NULL;
    if (pool && pool->idle) {
        u = pool->idle;
        pool->idle = u->next;
        pool->nidle--;
        u->next = NULL;
        loop_timer_cancel(w->loop, &u->idle_timer);
        u->state = UP_ACTIVE;
    } else {
        int fd = net_connect(&px->server->addr);
        if (fd < 0)
            return fd;
        u = calloc(1, sizeof(*u));
        if (!u)
            abort();
        u->w = w;
        u->fd = fd;
        u->server = px->server;
        lb_server_ref(u->server);
        u->state = UP_CONNECTING;
        u->idle_timer.fn = up_idle_timeout;
        u->idle_timer.data = u;
        int rc = loop_watch(w->loop, fd, LOOP_WRITE, up_io, u);
        if (rc < 0) {
            u->fd = -1;
            close(fd);
            up_close(u);
            return rc;
        }
    }
    u->px = px;
    u->uses++;
    u->bytes_written = 0;
    u->reading = 1;
    px->up = u;
    buf_free(&u->out);
    u->out = *pending;
    memset(pending, 0, sizeof(*pending));
    if (u->state == UP_CONNECTING) {
        px_arm(px, w->sh->cfg->connect_timeout_ms);
    } else {
        px_arm(px, w->sh->cfg->response_timeout_ms);
        if (up_flush(u) < 0)
            return 0; /* px already handled */
    }
    up_update_mask(u);
    return 0;
}

/* Serialises the response head for the client. */
static void send_response_head(struct px *px, const struct http_head *r)
{
    struct buf b = {0};
    buf_printf(&b, "HTTP/1.1 %d %.*s\r\n", r->status, (int)r->reason.n, r->reason.p);
    for (int i = 0; i < r->nheaders; i++) {
        const struct http_header *h = &r->headers[i];
        if (is_hop_by_hop(h->name, r))
            continue;
        buf_append(&b, h->name.p, h->name.n);
        buf_append(&b, ": ", 2);
        buf_append(&b, h->value.p, h->value.n);
        buf_append(&b, "\r\n", 2);
    }
    /* One value, even where the backend sent a list of equal ones; none on 1xx and 204, which
     * cannot have one (RFC 9110 §8.6). */
    if (r->content_length >= 0 && r->status != 204 && r->status >= 200) {
        buf_append(&b, "Content-Length: ", 16);
        buf_put_u64(&b, (unsigned long long)r->content_length);
        buf_append(&b, "\r\n", 2);
    }
    int req_minor = px->req->minor;
    px->resp_chunked_out = 0;
    if (r->body == HTTP_BODY_CHUNKED || r->body == HTTP_BODY_EOF) {
        if (req_minor >= 1) {
            buf_puts(&b, "Transfer-Encoding: chunked\r\n");
            px->resp_chunked_out = 1;
        } else {
            px->client_keep_alive = 0; /* HTTP/1.0 client: the body ends when we close */
        }
    }
    if (http_conn_will_close(px->client))
        px->client_keep_alive = 0;
    if (!px->client_keep_alive)
        buf_puts(&b, "Connection: close\r\n");
    else if (req_minor == 0)
        buf_puts(&b, "Connection: keep-alive\r\n");
    buf_puts(&b, "\r\n");
    px->head_sent = 1;
    http_conn_send(px->client, buf_head(&b), buf_used(&b));
    buf_free(&b);
}

/* Sends decoded response body bytes to the client. Returns 0 if the client's queue is full. */
static int send_body(struct px *px, const char *p, size_t n)
{
    px->body_bytes += n;
    if (!px->resp_chunked_out)
        return http_conn_send(px->client, p, n);
    char hdr[24];
    int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
    http_conn_send(px->client, hdr, (size_t)hl);
    http_conn_send(px->client, p, n);
    return http_conn_send(px->client, "\r\n", 2);
}

/* Sending to the client can fail and abort the exchange (on_abort frees px): every caller of
 * send_* checks px->dead afterwards. */
static void resp_complete(struct px *px)
{
    if (px->resp_chunked_out)
        http_conn_send(px->client, "0\r\n\r\n", 5);
    if (px->dead)
        return;
    px->rs = RS_DONE;
    int reuse = px->resp_keep_alive && px->req_body_done;
    px_finish(px, reuse);
}

/* Handles bytes in u->in for the current exchange. */
static void up_process_corked(struct upstream *u);

static void up_process(struct upstream *u)
{
    if (!u->px)
        return;
    /* One write to the client for everything this pass produces (head + body, usually). */
    struct http_conn *c = u->px->client;
    http_conn_cork(c);
    up_process_corked(u);
    http_conn_uncork(c);
}

static void up_process_corked(struct upstream *u)
{
    struct px *px = u->px;
    while (px && px == u->px && !px->client_paused) {
        if (px->rs == RS_HEAD) {
            if (buf_used(&u->in) == 0)
                return;
            struct http_head r;
            int n = http_parse_response(buf_head(&u->in), buf_used(&u->in), px->req->method, NULL, &r);
            if (n == HTTP_AGAIN)
                return;
            if (n == HTTP_ERROR) {
                atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
                px_fail(px, 502, "Error communicating with backend server");
                return;
            }
            if (r.status >= 100 && r.status < 200) {
                if (r.status == 100 && px->req->expect_continue)
                    http_conn_send(px->client, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                if (px->dead)
                    return;
                buf_consume(&u->in, (size_t)n);
                continue;
            }
            px->status = r.status;
            if (px->server) {
                const struct lb_config *cfg = px->w->sh->cfg;
                if (r.status >= 500) {
                    unsigned k = atomic_fetch_add(&px->server->consec_5xx, 1) + 1;
                    if (cfg->eject_5xx && k >= cfg->eject_5xx) {
                        atomic_store(&px->server->consec_5xx, 0);
                        passive_fail(px, FAIL_5XX, 0);
                    }
                } else if (atomic_load_explicit(&px->server->consec_5xx, memory_order_relaxed)) {
                    atomic_store(&px->server->consec_5xx, 0);
                }
            }
            px->resp_kind = r.body;
            px->resp_left = r.body == HTTP_BODY_LENGTH ? (uint64_t)r.content_length : 0;
            px->resp_keep_alive = r.keep_alive && r.body != HTTP_BODY_EOF;
            http_chunked_init(&px->resp_chunked);
            send_response_head(px, &r);
            if (px->dead)
                return;
            buf_consume(&u->in, (size_t)n);
            px->rs = RS_BODY;
            px_arm(px, px->w->sh->cfg->response_timeout_ms);
            if (r.body == HTTP_BODY_NONE || (r.body == HTTP_BODY_LENGTH && px->resp_left == 0)) {
                resp_complete(px);
                return;
            }
            continue;
        }
        if (px->rs != RS_BODY || buf_used(&u->in) == 0)
            return;
        const char *p = buf_head(&u->in);
        size_t n = buf_used(&u->in);
        int more = 1;
        if (px->resp_kind == HTTP_BODY_LENGTH) {
            size_t take = n < px->resp_left ? n : (size_t)px->resp_left;
            px->resp_left -= take;
            more = send_body(px, p, take);
            if (px->dead)
                return;
            buf_consume(&u->in, take);
            if (px->resp_left == 0) {
                resp_complete(px);
                return;
            }
        } else if (px->resp_kind == HTTP_BODY_EOF) {
            more = send_body(px, p, n);
            if (px->dead)
                return;
            buf_consume(&u->in, n);
        } else {
            const char *data;
            size_t dlen;
            long used = http_chunked_feed(&px->resp_chunked, p, n, &data, &dlen);
            if (used < 0) {
                atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
                px_fail(px, 502, "Error communicating with backend server");
                return;
            }
            if (dlen)
                more = send_body(px, data, dlen);
            if (px->dead)
                return;
            buf_consume(&u->in, (size_t)used);
            if (px->resp_chunked.done) {
                resp_complete(px);
                return;
            }
        }
        if (!more) {
            px->client_paused = 1;
            u->reading = 0;
            up_update_mask(u);
            return;
        }
    }
}

static void up_io(struct loop *loop, int fd, int events, void *data)
{
    struct upstream *u = data;
    struct px *px = u->px;
    if (u->state == UP_IDLE) {
        /* An idle pooled connection became readable: the backend closed it (or sent garbage). */
        up_close(u);
        return;
    }
    if (u->state == UP_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            if (px)
                px_backend_failed(px, FAIL_CONNECT);
            else
                up_close(u);
            return;
        }
        if (!(events & LOOP_WRITE))
            return;
        u->state = UP_ACTIVE;
        if (px)
            px_arm(px, u->w->sh->cfg->response_timeout_ms);
    }
    if (events & LOOP_WRITE) {
        if (up_flush(u) < 0)
            return;
    }
    if ((events & LOOP_READ) && u->reading) {
        ssize_t n = net_read(fd, &u->in, 4 * READ_CHUNK);
        if (n > 0 || n == -EAGAIN) {
            if (u->px)
                up_process(u);
            else if (buf_used(&u->in) > 0)
                up_close(u); /* bytes with no exchange: protocol error */
            return;
        }
        /* End of stream or error from the backend. */
        px = u->px;
        if (px && px->rs == RS_BODY && px->resp_kind == HTTP_BODY_EOF) {
            px->resp_keep_alive = 0;
            resp_complete(px); /* the close ends a close-delimited body */
        } else if (px) {
            px_backend_failed(px, FAIL_IO);
        } else {
            up_close(u);
        }
        return;
    }
    up_update_mask(u);
}

/* ---- http_server handler ---- */

static void answer_local(struct lb_worker *w, struct http_conn *c, const struct http_head *h)
{
    struct buf body = {0}, out = {0};
    int is_stats = h->path.n == 6;
    if (is_stats) {
        lb_stats_json(w->set, w->sh->policy->name, &body);
    } else {
        buf_puts(&body, "OK");
    }
    http_write_status_line(&out, 200);
    buf_printf(&out, "Content-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n",
               is_stats ? "application/json" : "text/plain; charset=utf-8", buf_used(&body),
               h->keep_alive ? "" : "Connection: close\r\n");
    if (h->method != HTTP_HEAD)
        buf_append(&out, buf_head(&body), buf_used(&body));
    http_conn_send(c, buf_head(&out), buf_used(&out));
    buf_free(&body);
    buf_free(&out);
}

static void on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    struct lb_worker *w = ctx;
    worker_refresh(w);
    if (lists_acted_on_field(h)) {
        http_conn_set_data(c, NULL);
        http_conn_respond_error(c, 400,
                                "Connection header lists a field the balancer acts on (Idempotency-Key or Expect)", 1);
        return;
    }
    /* /stats per --stats-access: "off" proxies it; "loopback" answers 403 to other peers, as an
     * nginx allow/deny or HAProxy "http-request deny" on a stats page does. */
    int stats = h->path.n == 6 && !memcmp(h->path.p, "/stats", 6) && strcmp(w->sh->cfg->stats_access, "off");
    if ((h->method == HTTP_GET || h->method == HTTP_HEAD) && h->query.n == 0 &&
        ((h->path.n == 7 && !memcmp(h->path.p, "/health", 7)) || stats)) {
        const char *ip = http_conn_remote_ip(c);
        if (stats && !strcmp(w->sh->cfg->stats_access, "loopback") && strncmp(ip, "127.", 4) && strcmp(ip, "::1")) {
            http_conn_set_data(c, NULL);
            http_conn_respond_error(c, 403, "/stats is only available from loopback (--stats-access loopback)", 0);
            return;
        }
        answer_local(w, c, h);
        http_conn_set_data(c, NULL);
        /* on_body_end completes it (the request has no body to wait for, or we drain it). */
        return;
    }
    struct px *px = calloc(1, sizeof(*px));
    if (!px)
        abort();
    px->w = w;
    px->client = c;
    px->req = h;
    px->start_us = http_conn_request_start_us(c);
    px->client_keep_alive = h->keep_alive;
    px->timer.fn = on_px_timer;
    px->timer.data = px;
    px->req_body_done = h->body == HTTP_BODY_NONE;
    if (w->sh->access_log_fd >= 0) {
        snprintf(px->req_line, sizeof(px->req_line), "%.*s %.*s HTTP/1.%d", (int)h->method_str.n, h->method_str.p,
                 (int)(h->target.n > 100 ? 100 : h->target.n), h->target.p, h->minor);
        copy_header(h, "referer", px->referer, sizeof(px->referer));
        copy_header(h, "user-agent", px->agent, sizeof(px->agent));
    }
    http_conn_set_data(c, px);
    struct lb_server *s = pick_server(w, px);
    if (!s) {
        http_conn_set_data(c, NULL);
        log_request(px, 503);
        px_free(px);
        http_conn_respond_error(c, 503, "No healthy servers available", 0);
        return;
    }
    px_use_server(px, s);
    w->retry_milli += (long)w->sh->cfg->retry_budget_percent * 10;
    if (w->retry_milli > 100000)
        w->retry_milli = 100000;
    px->safe = h->method == HTTP_GET || h->method == HTTP_HEAD || h->method == HTTP_OPTIONS || h->method == HTTP_PUT ||
               h->method == HTTP_DELETE || h->method == HTTP_TRACE || http_find_header(h, "idempotency-key") != NULL;
    px->replayable = px->safe && w->sh->cfg->replay_buffer > 0;

    /* The request head for the backend. */
    struct buf b = {0};
    buf_append(&b, h->method_str.p, h->method_str.n);
    buf_append(&b, " ", 1);
    if (h->target.n && h->target.p[0] != '/' && h->method != HTTP_OPTIONS) {
        /* absolute-form: origin servers get origin-form (RFC 9112 §3.2.1) */
        buf_append(&b, h->path.p, h->path.n);
        if (h->query.n) {
            buf_append(&b, "?", 1);
            buf_append(&b, h->query.p, h->query.n);
        }
    } else {
        buf_append(&b, h->target.p, h->target.n);
    }
    buf_puts(&b, " HTTP/1.1\r\n");
    const struct http_header *xff = NULL;
    for (int i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->headers[i];
        if (is_hop_by_hop(hd->name, h))
            continue;
        if (http_str_ieq(hd->name, "x-forwarded-for")) {
            if (w->sh->cfg->trust_forwarded && !xff)
                xff = hd;
            continue;
        }
        if (http_str_ieq(hd->name, "x-forwarded-proto"))
            continue;
        if (hd->value.n == 0 && http_str_ieq(hd->name, "host"))
            continue; /* an empty Host is replaced by the server's below: never two Host fields */
        buf_append(&b, hd->name.p, hd->name.n);
        buf_append(&b, ": ", 2);
        buf_append(&b, hd->value.p, hd->value.n);
        buf_append(&b, "\r\n", 2);
    }
    if (!h->host.n)
        buf_printf(&b, "Host: %s\r\n", s->host_header);
    if (xff)
        buf_printf(&b, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value.n, xff->value.p, http_conn_remote_ip(c));
    else {
        buf_append(&b, "X-Forwarded-For: ", 17);
        buf_puts(&b, http_conn_remote_ip(c));
        buf_append(&b, "\r\n", 2);
    }
    buf_puts(&b, "X-Forwarded-Proto: http\r\n");
    if (h->body == HTTP_BODY_CHUNKED) {
        buf_puts(&b, "Transfer-Encoding: chunked\r\n");
        px->req_chunked = 1;
    } else if (h->content_length >= 0) {
        buf_append(&b, "Content-Length: ", 16);
        buf_put_u64(&b, (unsigned long long)h->content_length);
        buf_append(&b, "\r\n", 2);
    }
    buf_puts(&b, "\r\n");
    if (px->replayable)
        buf_append(&px->replay, buf_head(&b), buf_used(&b));
    int rc = px_dispatch(px, &b);
    if (rc < 0)
        px_fail_dispatch(px, rc);
}

static void on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    struct px *px = http_conn_get_data(c);
    if (!px || !px->up)
        return;
    struct upstream *u = px->up;
    size_t before = buf_used(&u->out);
    if (px->req_chunked) {
        char hdr[24];
        int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
        buf_append(&u->out, hdr, (size_t)hl);
        buf_append(&u->out, p, n);
        buf_append(&u->out, "\r\n", 2);
    } else {
        buf_append(&u->out, p, n);
    }
    if (px->replayable) {
        size_t added = buf_used(&u->out) - before;
        if (buf_used(&px->replay) + added > px->w->sh->cfg->replay_buffer) {
            px->replayable = 0; /* too large to keep: this request will not be retried after sending */
            buf_free(&px->replay);
        } else {
            buf_append(&px->replay, buf_head(&u->out) + before, added);
        }
    }
    if (u->state == UP_ACTIVE && up_flush(u) < 0)
        return;
    if (px->up != u)
        return;
    up_update_mask(u);
    if (buf_used(&u->out) >= HIGH_WATER)
        http_conn_pause_body(c, 1);
}

static void on_body_end(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (!px) {
        /* A local answer (/health, /stats): its response is already queued. */
        http_conn_response_done(c, 1);
        return;
    }
    if (px->req_body_done)
        return;
    px->req_body_done = 1;
    if (px->req_chunked && px->up) {
        if (px->replayable)
            buf_append(&px->replay, "0\r\n\r\n", 5);
        up_send(px->up, "0\r\n\r\n", 5);
    }
}

static void on_drain(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (!px || !px->client_paused)
        return;
    px->client_paused = 0;
    struct upstream *u = px->up;
    if (!u)
        return;
    u->reading = 1;
    up_update_mask(u);
    up_process(u);
}

static void on_abort(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (!px)
        return;
    if (px->up) {
        struct upstream *u = px->up;
        u->px = NULL;
        px->up = NULL;
        up_close(u);
    }
    log_request(px, px->head_sent ? px->status : 499);
    http_conn_set_data(c, NULL);
    px_free(px);
}

static const struct http_server_ops proxy_ops = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_drain = on_drain,
    .on_abort = on_abort,
    .auto_continue = 0,
};

/* ---- worker lifecycle ---- */

struct lb_worker *lb_worker_create(struct lb_shared *sh, struct loop *loop, int listen_fd, unsigned id)
{
    struct lb_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->sh = sh;
    w->loop = loop;
    w->id = id;
    w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)id << 32) ^ loop_clock_us();
    w->retry_milli = 10000; /* 10 retries to start with */
    if (!w->rng)
        w->rng = 1;
    const struct lb_config *cfg = sh->cfg;
    struct http_server_limits lim;
    http_server_limits_default(&lim);
    lim.max_line = cfg->max_line_size;
    lim.max_head = cfg->max_header_size;
    lim.max_body = cfg->max_body_size;
    lim.header_timeout_ms = cfg->client_header_timeout_ms;
    lim.idle_timeout_ms = cfg->client_idle_timeout_ms;
    lim.body_timeout_ms = cfg->client_body_timeout_ms;
    lim.send_timeout_ms = cfg->client_send_timeout_ms;
    lim.max_conns = cfg->max_connections;
    lim.climits = sh->climits;
    worker_refresh(w);
    w->srv = http_server_create(loop, listen_fd, &proxy_ops, w, &lim);
    if (!w->srv) {
        lb_worker_free(w);
        return NULL;
    }
    w->log_timer.fn = on_log_timer;
    w->log_timer.data = w;
    if (sh->access_log_fd >= 0)
        loop_timer_arm(loop, &w->log_timer, 1000);
    return w;
}

void lb_worker_shutdown(struct lb_worker *w)
{
    atomic_store(&w->sh->stopping, 1);
    if (w->srv)
        http_server_shutdown(w->srv);
}

unsigned lb_worker_conns(const struct lb_worker *w) { return w->srv ? http_server_conns(w->srv) : 0; }

void lb_worker_free(struct lb_worker *w)
{
    if (!w)
        return;
    if (w->srv)
        http_server_free(w->srv);
    log_flush(w);
    buf_free(&w->log);
    loop_timer_cancel(w->loop, &w->log_timer);
    if (w->set) {
        pools_free(w->pools, w->set->n);
        w->sh->policy->destroy(w->policy);
        lb_set_unref(w->set);
    }
    free(w->targets);
    free(w);
}
