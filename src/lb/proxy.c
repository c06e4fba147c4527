/* proxy.c — the balancer's workers and the client side of their exchanges; see proxy.h.
 *
 * A worker serves its clients as an http_server handler (server.h). For each request it refreshes
 * its server-set snapshot, answers the balancer's own paths itself (local.h), and otherwise
 * starts an exchange (exchange.h): it chooses a server (select.h), rewrites the head for it
 * (rewrite.h), queues it on a pooled or new backend connection (upstream.h) and streams the body
 * after it; relay.c takes the backend's answer back to the client.
 *   client --(on_request/on_body)--> px --> upstream.out --> backend
 * The request body is re-framed: Content-Length is kept, a chunked body is decoded by the HTTP
 * server and re-chunked here. When the backend's output queue passes HIGH_WATER the client body is
 * paused.
 *
 * Failures (passive.h counts them against the server): a backend connection that fails before any
 * byte was written (connect refused or timed out, reset of a stale pooled connection) moves the
 * request to another server, for every method, since nothing reached a backend. After bytes were
 * written, the request goes to another server only if it is safe to repeat (idempotent method or
 * Idempotency-Key), fully kept in the replay buffer, has no response byte yet and the retry budget
 * allows. Otherwise the client gets 502 (504 for a response timeout), or its connection is cut
 * once a response has begun.
 *
 * Two events end a try that is still waiting, under the same rules (HAProxy's `on-marked-down
 * shutdown-sessions`, Envoy's per-try timeout):
 * - the active checks mark its server down (health.h raises the server's `downs` and wakes every
 *   worker: lb_proxy_servers_down). Each worker keeps its exchanges in a list per server
 *   (struct px_group) and walks only the lists of servers whose count moved since it last looked.
 *   An exchange sent before the count moved and still waiting for its head moves to another
 *   server (a healthy one, even in panic mode) if that is allowed as above. What cannot move
 *   stays, and its backend connection is probed (TCP keep-alive probes, net_probe_peer, and a
 *   look at TCP_INFO every 500 ms: on_px_probe_timer): the checks cannot tell a cut link or a
 *   dead host from a live server too busy to answer them, draining or not ready, which may still
 *   commit a POST and answer it, but the connection can: a live peer acknowledges and the
 *   exchange is left to finish; a dead one leaves a probe (or data) unanswered for 3 s and the
 *   exchange ends as on any backend error (moved if it may, else 502, or its client connection
 *   cut if the response had begun). The connection is never pooled again. Exchanges sent to a
 *   server already down (panic mode) are left alone by that down. Passive ejection does none of
 *   this.
 * - --try-timeout passes with no response head (counted from when the try's connection is up and
 *   the client's request is all in): the try is abandoned and the request moved when
 *   allowed as above and another server is there; when not, the try goes on (a try timeout never
 *   fails a request by itself: retrying is its only purpose).
 * The response timeout bounds the wait for the response head over all tries together
 * (head_deadline_ms, counted from the request's last byte: px_request_progress), then each gap in
 * the body. */
#include "lb/proxy.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/net.h"
#include "core/rc.h"
#include "http/daemon.h"
#include "lb/exchange.h"
#include "lb/local.h"
#include "lb/rewrite.h"

/* ---- the workers' list, and exchanges by server ---- */

void lb_shared_init(struct lb_shared *sh)
{
    pthread_mutex_init(&sh->workers_mu, NULL);
    sh->workers = NULL;
}

void lb_shared_destroy(struct lb_shared *sh) { pthread_mutex_destroy(&sh->workers_mu); }

void lb_proxy_servers_down(struct lb_shared *sh)
{
    pthread_mutex_lock(&sh->workers_mu);
    for (struct lb_worker *w = sh->workers; w; w = w->next)
        loop_wake(w->loop);
    pthread_mutex_unlock(&sh->workers_mu);
}

static void worker_register(struct lb_worker *w)
{
    pthread_mutex_lock(&w->sh->workers_mu);
    w->next = w->sh->workers;
    w->sh->workers = w;
    pthread_mutex_unlock(&w->sh->workers_mu);
}

/* Leaves sh->workers: no thread wakes w's loop after this returns. */
static void worker_unregister(struct lb_worker *w)
{
    pthread_mutex_lock(&w->sh->workers_mu);
    struct lb_worker **pp = &w->sh->workers;
    while (*pp && *pp != w)
        pp = &(*pp)->next;
    if (*pp)
        *pp = w->next;
    pthread_mutex_unlock(&w->sh->workers_mu);
}

/* The worker's group of exchanges on s, made if there is none. */
static struct px_group *group_of(struct lb_worker *w, struct lb_server *s)
{
    for (struct px_group *g = w->groups; g; g = g->next)
        if (g->server == s)
            return g;
    struct px_group *g = alloc_calloc(1, sizeof(*g));
    g->server = s;
    lb_server_ref(s);
    g->downs_seen = atomic_load(&s->downs);
    g->next = w->groups;
    w->groups = g;
    return g;
}

/* Frees the worker's empty groups (all of them when `all`, at the worker's end). */
static void groups_sweep(struct lb_worker *w, int all)
{
    if (w->walking)
        return;
    struct px_group **pp = &w->groups;
    while (*pp) {
        struct px_group *g = *pp;
        if (g->head && !all) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        lb_server_unref(g->server);
        free(g);
    }
}

/* ---- choosing a server ---- */

/* Takes the registry's current snapshot if it changed: new selector (policy instance and
 * targets), pools carried over for servers that remain. */
static void worker_refresh(struct lb_worker *w)
{
    struct lb_shared *sh = w->sh;
    if (w->set && atomic_load_explicit(&sh->registry.gen, memory_order_acquire) == w->gen)
        return;
    struct lb_set *set = lb_registry_get(&sh->registry);
    lb_pools_adopt(&w->pools, set);
    if (w->set) {
        lb_selector_destroy(&w->sel);
        lb_set_unref(w->set);
    }
    lb_selector_init(&w->sel, sh->policy, set);
    w->set = set;
    w->gen = set->gen;
    groups_sweep(w, 0); /* servers removed meanwhile keep no group */
}

/* Chooses a server not yet tried for px; NULL if none is usable. A request moved off a server
 * marked down (kind LB_FAIL_DOWN) goes only to a healthy one, even in panic mode: panic balances
 * new requests over every server, but moving one to a server known down would only make it wait
 * there for the response timeout. */
static struct lb_server *pick_server_for(struct px *px, enum lb_fail kind)
{
    struct lb_worker *w = px->w;
    struct lb_select_req req = {.head = px->req,
                                .client_ip = http_conn_remote_ip(px->client),
                                .tried = &px->tried,
                                .no_panic = kind == LB_FAIL_DOWN};
    int i = lb_select(&w->sel, w->set, w->sh->cfg, &req, loop_now(w->loop), lb_rng_next(&w->rng));
    return i < 0 ? NULL : w->set->servers[i];
}

/* Chooses a server not yet tried for px; NULL if none is usable. */
static struct lb_server *pick_server(struct px *px)
{
    struct lb_worker *w = px->w;
    struct lb_select_req req = {.head = px->req, .client_ip = http_conn_remote_ip(px->client), .tried = &px->tried};
    int i = lb_select(&w->sel, w->set, w->sh->cfg, &req, loop_now(w->loop), lb_rng_next(&w->rng));
    return i < 0 ? NULL : w->set->servers[i];
}

/* Counts an attempt on s for px. */
static void px_use_server(struct px *px, struct lb_server *s)
{
    px->server = s;
    lb_server_ref(s);
    px->queued = (unsigned)atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed) + 1;
    atomic_fetch_add_explicit(&s->total, 1, memory_order_relaxed);
    lb_tried_add(&px->tried, s);
    px->downs_at = atomic_load(&s->downs);
    px->grp = group_of(px->w, s);
    px->gprev = NULL;
    px->gnext = px->grp->head;
    if (px->gnext)
        px->gnext->gprev = px;
    px->grp->head = px;
}

static void px_release_server(struct px *px)
{
    if (!px->server)
        return;
    if (px->gprev)
        px->gprev->gnext = px->gnext;
    else
        px->grp->head = px->gnext;
    if (px->gnext)
        px->gnext->gprev = px->gprev;
    px->grp = NULL;
    px->gprev = px->gnext = NULL;
    atomic_fetch_sub_explicit(&px->server->inflight, 1, memory_order_relaxed);
    lb_server_unref(px->server);
    px->server = NULL;
}

/* Releases px's server for another try and returns it with a reference of the caller's (NULL when
 * px had none): not w->set's to keep alive, since a server removed meanwhile left it when the
 * worker took a newer set, and px's reference may have been the last the worker held. The caller
 * ends with px_retried. */
static struct lb_server *px_leave_server(struct px *px)
{
    struct lb_server *failed = px->server;
    if (failed)
        lb_server_ref(failed);
    px_release_server(px);
    return failed;
}

/* Counts a retry of failed when the request goes on to next (NULL: it does not), and drops the
 * reference px_leave_server gave. */
static void px_retried(struct lb_server *failed, const struct lb_server *next)
{
    if (failed && next)
        atomic_fetch_add_explicit(&failed->retries, 1, memory_order_relaxed);
    lb_server_unref(failed);
}

/* A failure of px's server (passive health), unless px has none. */
static void px_passive_fail(struct px *px, enum lb_fail kind)
{
    if (px->server)
        lb_passive_fail(px->w->set, px->server, px->w->sh->cfg, kind);
}

/* ---- exchanges ---- */

static void px_log(struct px *px, int status)
{
    if (!lb_access_log_on(&px->w->log))
        return;
    struct lb_log_entry e = {.client_ip = http_conn_remote_ip(px->client),
                             .request_id = px->request_id,
                             .status = status,
                             .body_bytes = px->body_bytes,
                             .server_key = px->server ? px->server->key : NULL,
                             .retries = px->tried.n > 1 ? (unsigned)px->tried.n - 1 : 0,
                             .retry_reasons = px->retry_reasons,
                             .start_us = px->start_us,
                             .connect_us = px->connect_us,
                             .header_us = px->header_us,
                             .tunnel = px->tunnel,
                             .tunnel_to_server = px->to_server};
    lb_access_log_write(&px->w->log, &px->log, &e);
}

static void free_later(struct loop *loop, void *p) { free(p); }

/* Ends px. Its memory is freed after the current loop iteration, so callers up the stack may
 * still compare pointers to it (e.g. `u->owner == px`) but must not use it otherwise. */
static void px_free(struct px *px)
{
    px->ended = 1;
    loop_timer_cancel(px->w->loop, &px->timer);
    loop_timer_cancel(px->w->loop, &px->try_timer);
    loop_timer_cancel(px->w->loop, &px->probe_timer);
    buf_free(&px->replay);
    tunnel_release(px);
    px_release_server(px);
    loop_defer(px->w->loop, free_later, px);
}

void px_arm(struct px *px, unsigned ms) { loop_timer_arm(px->w->loop, &px->timer, ms); }

/* Milliseconds left of the response timeout for the head (0 when it passed). */
static unsigned head_left(const struct px *px)
{
    uint64_t now = loop_now(px->w->loop);
    return px->head_deadline_ms > now ? (unsigned)(px->head_deadline_ms - now) : 0;
}

/* Starts the try timer (--try-timeout) once the try's connection is up and the client's request
 * is all in (as Envoy's per-try timeout: neither a slow connect, which the connect timeout
 * bounds, nor a slow upload counts against the backend). */
static void px_arm_try(struct px *px)
{
    const struct lb_config *cfg = px->w->sh->cfg;
    if (cfg->try_timeout_ms && !px->upgrade && px->req_body_done && px->up && px->up->state != LB_UP_CONNECTING &&
        !loop_timer_armed(&px->try_timer))
        loop_timer_arm(px->w->loop, &px->try_timer, cfg->try_timeout_ms);
}

void px_arm_head(struct px *px)
{
    px_arm(px, head_left(px));
    px_arm_try(px);
}

/* The client's request body moved on (or ended): the response timeout for the head counts from
 * the last byte of the request, not from its head, so a long upload on a slow link is not a slow
 * backend (the backend cannot answer before it has the request). Not once a response began. */
static void px_request_progress(struct px *px)
{
    if (px->head_sent || px->resp.phase != HTTP_READER_HEAD)
        return;
    px->head_deadline_ms = loop_now(px->w->loop) + px->w->sh->cfg->response_timeout_ms;
    if (px->up && px->up->state != LB_UP_CONNECTING)
        px_arm(px, head_left(px));
}

static void on_px_timer(struct loop *loop, struct loop_timer *t)
{
    struct px *px = t->data;
    if (px->up && px->up->state == LB_UP_CONNECTING && head_left(px) > 0)
        px_backend_failed(px, LB_FAIL_CONNECT); /* connect timeout: nothing was sent */
    else
        px_backend_failed(px, LB_FAIL_TIMEOUT);
}

static void on_px_try_timer(struct loop *loop, struct loop_timer *t);

/* Detaches and closes px's backend connection, if any. */
static void px_close_upstream(struct px *px)
{
    struct lb_upstream *u = px->up;
    if (!u)
        return;
    u->owner = NULL;
    px->up = NULL;
    lb_upstream_close(u);
}

/* Starts (or reuses) a backend connection for px->server and queues `pending` (the request
 * bytes so far; taken over on success). Returns 0, or -errno if no connection could be started. */
static int px_start_upstream(struct px *px, struct buf *pending)
{
    struct lb_worker *w = px->w;
    struct lb_upstream *u;
    int rc = lb_upstream_get(&w->pools, px->server, px->fresh, px, pending, &u);
    if (rc < 0)
        return rc;
    px->up = u;
    http_reader_init(&px->resp, px->req->method, 0); /* a retry reads a new response */
    px->resp.final_101 = px->upgrade;                /* a 101 ends the exchange's HTTP part */
    loop_timer_cancel(w->loop, &px->try_timer);      /* a new try: armed once connected (px_arm_head) */
    loop_timer_cancel(w->loop, &px->probe_timer);    /* a new connection: not probed */
    if (u->state == LB_UP_CONNECTING) {
        unsigned left = head_left(px);
        px_arm(px, w->sh->cfg->connect_timeout_ms < left ? w->sh->cfg->connect_timeout_ms : left);
    } else {
        if (lb_access_log_on(&w->log))
            px->connect_us = loop_clock_us(); /* a pooled connection, ready at once */
        px_arm_head(px);
        if (relay_flush(u) < 0)
            return 0; /* px already handled */
    }
    lb_upstream_update_mask(u);
    return 0;
}

/* Starts px on px->server or, when connecting fails at once (a refused connection on loopback
 * fails inside connect()), on other servers. pending is taken over. Returns RC_OK; RC_ERROR when no
 * server could be reached; RC_AGAIN when the balancer itself is short of descriptors or memory
 * (net_local_shortage): that is no verdict on the server, and no other server would fare better.
 * px is not answered yet on failure. */
static int px_dispatch(struct px *px, struct buf *pending)
{
    struct lb_worker *w = px->w;
    for (;;) {
        int rc = px_start_upstream(px, pending);
        if (rc == 0)
            return RC_OK;
        if (net_local_shortage(-rc)) {
            buf_free(pending);
            return RC_AGAIN;
        }
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&px->server->connect_failures, 1, memory_order_relaxed);
        px_passive_fail(px, LB_FAIL_CONNECT);
        struct lb_server *failed = px_leave_server(px);
        struct lb_server *s = px->tried.n <= (int)w->sh->cfg->retries ? pick_server(px) : NULL;
        px_retried(failed, s);
        if (!s)
            break;
        px->retry_reasons |= 1u << LB_RETRY_CONNECT;
        atomic_fetch_add_explicit(&w->sh->counters.retries[LB_RETRY_CONNECT], 1, memory_order_relaxed);
        px_use_server(px, s);
    }
    buf_free(pending);
    return RC_ERROR;
}

/* Answers a failed px_dispatch: 502 when no server could be reached, 503 (with Retry-After) when
 * the balancer itself ran short of descriptors or memory. */
static void px_fail_dispatch(struct px *px, int rc)
{
    if (rc == RC_AGAIN)
        px_fail(px, 503, "Balancer out of resources (descriptors or memory), try again");
    else
        px_fail(px, 502, "Error communicating with backend server");
}

/* How a try that failed or was abandoned may go on elsewhere. */
enum move { MOVE_NO, MOVE_QUEUED, MOVE_REPLAY };

/* Whether any byte of a response came on px's try: one not parsed yet, or an interim head (100
 * Continue, 103 Early Hints), which the reader consumes without leaving its head phase. Either
 * says the backend has the request: no stale connection, and no replay as if nothing came. */
static int px_response_began(const struct px *px)
{
    return buf_used(&px->up->in) > 0 || px->resp.interim_bytes > 0 || px->resp.phase != HTTP_READER_HEAD;
}

/* Whether px's try may move to another server (a server still to be found): MOVE_QUEUED when
 * nothing reached the backend (any method: what is queued moves), MOVE_REPLAY when the request is
 * safe to repeat, every byte of it is in the replay buffer and no response byte came (a retry
 * budget permit is still needed, except for a stale pooled connection), else MOVE_NO; also
 * MOVE_NO once a response head came, after --retries, and on a response timeout. */
static enum move px_movable(const struct px *px, enum lb_fail kind)
{
    const struct lb_upstream *u = px->up;
    if (!u || px->resp.phase != HTTP_READER_HEAD || px->head_sent || kind == LB_FAIL_TIMEOUT ||
        px->tried.n > (int)px->w->sh->cfg->retries)
        return MOVE_NO;
    if (u->bytes_written == 0)
        return MOVE_QUEUED;
    if (px->safe && px->replayable && !px_response_began(px))
        return MOVE_REPLAY;
    return MOVE_NO;
}

static enum lb_retry_reason retry_reason(enum lb_fail kind)
{
    switch (kind) {
    case LB_FAIL_CONNECT:
        return LB_RETRY_CONNECT;
    case LB_FAIL_DOWN:
        return LB_RETRY_MARKED_DOWN;
    case LB_FAIL_TRY_TIMEOUT:
        return LB_RETRY_TRY_TIMEOUT;
    default:
        return LB_RETRY_ERROR;
    }
}

/* Moves px (px_movable said how) from its server to s, or to a server picked now when s is NULL;
 * answers the client (px_fail_dispatch) when there is none or none can be reached. */
static void px_move(struct px *px, enum lb_fail kind, enum move how, struct lb_server *s)
{
    struct lb_worker *w = px->w;
    struct lb_upstream *u = px->up;
    struct buf pending = {0};
    if (how == MOVE_QUEUED) {
        pending = u->out; /* nothing reached the backend: move what is queued */
        memset(&u->out, 0, sizeof(u->out));
    } else {
        buf_append(&pending, buf_head(&px->replay), buf_used(&px->replay));
    }
    px_close_upstream(px);
    struct lb_server *failed = px_leave_server(px);
    if (!s)
        s = pick_server_for(px, kind);
    px_retried(failed, s);
    int rc = -1;
    if (s) {
        enum lb_retry_reason r = retry_reason(kind);
        px->retry_reasons |= 1u << r;
        atomic_fetch_add_explicit(&w->sh->counters.retries[r], 1, memory_order_relaxed);
        px_use_server(px, s);
        if ((rc = px_dispatch(px, &pending)) == 0)
            return;
    }
    buf_free(&pending);
    px_fail_dispatch(px, rc);
}

/* Whether s is in set, this very server (not one added again under its key): a server removed
 * (admin API, reload) after px took it is not tried again, and w->set's reference keeps it alive
 * while px_move drops px's own. */
static int in_set(const struct lb_set *set, const struct lb_server *s)
{
    int i = lb_set_find(set, s->key);
    return i >= 0 && set->servers[i] == s;
}

/* Counts a failure of px's try on its server: errors, connect failures, passive health (not for
 * a stale pooled connection). */
static void px_count_failure(struct px *px, enum lb_fail kind, int stale)
{
    if (px->server) {
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        if (kind == LB_FAIL_CONNECT)
            atomic_fetch_add_explicit(&px->server->connect_failures, 1, memory_order_relaxed);
    }
    if (!stale)
        px_passive_fail(px, kind);
}

/* The backend failed, or (LB_FAIL_DOWN) its server was marked down while px waited. Retry on
 * another server when px_movable allows and, after bytes were sent, the retry budget does;
 * otherwise answer the client (if it has no response head yet) or cut it off. A failure on a
 * reused pooled connection before any response byte (stale) is no verdict on the server and
 * costs no budget. */
void px_backend_failed(struct px *px, enum lb_fail kind)
{
    struct lb_worker *w = px->w;
    struct lb_upstream *u = px->up;
    /* Stale: the connection was reused and died before a byte of answer (an interim head is one:
     * a backend that sent 103 or 100 Continue and then closed had the request, and is failing). */
    int stale = u && u->uses > 1 && kind == LB_FAIL_IO && !px_response_began(px);
    px_count_failure(px, kind, stale);
    enum move how = px_movable(px, kind);
    if (how == MOVE_REPLAY && !stale && !lb_retry_budget_take(&w->retry)) {
        atomic_fetch_add_explicit(&w->sh->counters.budget_refusals, 1, memory_order_relaxed);
        how = MOVE_NO;
    }
    if (how != MOVE_NO) {
        struct lb_server *s = NULL;
        if (stale) {
            /* The backend closed an idle connection as it was taken (a keep-alive timeout, a
             * server that closes after each answer): another server, else the same one again,
             * on a new connection this time. */
            px->fresh = 1;
            s = pick_server_for(px, kind);
            if (!s && px->server && lb_server_usable(px->server) && in_set(w->set, px->server))
                s = px->server;
        }
        px_move(px, kind, how, s);
        return;
    }
    if (kind == LB_FAIL_TIMEOUT || kind == LB_FAIL_TRY_TIMEOUT)
        px_fail(px, 504, "Backend server timed out");
    else if (kind == LB_FAIL_DOWN)
        px_fail(px, 502, "Backend server marked down by health checks");
    else
        px_fail(px, 502, "Error communicating with backend server");
}

/* Moves px's waiting try (kind: why) to another server if px_movable allows, a usable server is
 * there and, after sending, the retry budget has a retry. Returns 1 if px was moved (or answered
 * by px_move), 0 if it was left as it was. */
static int px_try_move(struct px *px, enum lb_fail kind)
{
    if (px->ended || px->tunnel || !px->server)
        return 0;
    enum move how = px_movable(px, kind);
    if (how == MOVE_NO)
        return 0;
    struct lb_server *s = pick_server_for(px, kind); /* px->server is in the tried set */
    if (!s)
        return 0;
    if (how == MOVE_REPLAY && !lb_retry_budget_take(&px->w->retry)) {
        atomic_fetch_add_explicit(&px->w->sh->counters.budget_refusals, 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
    /* For passive health a try timeout is a 5xx (Envoy counts it as a gateway failure): one in a
     * streak of eject_5xx, not an ejection at once; a slow response is no dead server. */
    if (kind == LB_FAIL_TRY_TIMEOUT)
        lb_passive_5xx(px->w->set, px->server, px->w->sh->cfg);
    px_move(px, kind, how, s);
    return 1;
}

/* --try-timeout passed without a response head: the try is abandoned when px may move and
 * another server is there (budget permitting); otherwise it goes on, bounded by the response
 * timeout. */
static void on_px_try_timer(struct loop *loop, struct loop_timer *t) { px_try_move(t->data, LB_FAIL_TRY_TIMEOUT); }

/* How long a probed backend connection (px_server_down) may go without the peer sending anything
 * (an acknowledgement of a keep-alive or window probe, of data, or data) before it counts as
 * dead: long enough for a lost probe or two on a real network, at least the checks' own timeout.
 * Looked at every PX_PROBE_TICK_MS. */
#define PX_PROBE_MIN_MS  3000
#define PX_PROBE_TICK_MS 500

static unsigned probe_ms(const struct px *px)
{
    unsigned ms = px->w->sh->cfg->health_timeout_ms;
    return ms > PX_PROBE_MIN_MS ? ms : PX_PROBE_MIN_MS;
}

/* px's connection, probed (never pooled again, so px's own), and its peer has left a probe (or
 * data) of ours unanswered and sent nothing for the probe time, on two ticks in a row? Then it is
 * dead (a cut link, a host powered off): px moves if it may, else is answered 502 or cut
 * (px_backend_failed, as marked down: no stale-connection retry); a tunnel ends. Looked at
 * whether or not px reads the connection (a response paused by a slow client). */
static void on_px_probe_timer(struct loop *loop, struct loop_timer *t)
{
    struct px *px = t->data;
    struct lb_upstream *u = px->up;
    if (px->ended || !u || !u->probed || u->fd < 0)
        return;
    long silent = net_peer_unanswered_ms(u->fd);
    /* Twice in a row: a probe just sent after a long quiet time (a closed window's probes back
     * off) has not had its round trip yet. -errno: the connection's own error path reports. */
    px->probe_misses = silent >= (long)probe_ms(px) ? px->probe_misses + 1 : 0;
    if (px->probe_misses < 2) {
        loop_timer_arm(loop, t, PX_PROBE_TICK_MS);
        return;
    }
    if (px->tunnel) {
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        px_finish(px, 0);
        return;
    }
    px_backend_failed(px, LB_FAIL_DOWN);
}

/* px's server was marked down while px was on it (health.h). px moves now when it may and a
 * usable server is there (px_try_move). Otherwise it stays, whatever the checks saw: they cannot
 * tell a cut link or a dead host from a live server that is too busy to answer them, draining
 * (its listener closed: checks refused), or saying it is not ready — and such a server may still
 * commit a POST it holds and answer it. px's own connection can tell: its peer is probed
 * (net_probe_peer, keep-alive probes) and watched (on_px_probe_timer). A live peer acknowledges
 * the probes at once, also with its receive window closed, and px is left to finish, bounded by
 * the response timeout; a dead one (nothing from it for the probe time: a cut link, a host
 * powered off) fails px: it moves if it may, else is answered 502 or its response cut. A reset
 * from a host that rebooted takes the usual error path. The connection is never pooled again. */
static void px_server_down(struct px *px)
{
    if (px_try_move(px, LB_FAIL_DOWN))
        return;
    struct lb_upstream *u = px->up;
    if (u && u->fd >= 0 && !u->probed && net_probe_peer(u->fd) == 0) {
        u->probed = 1; /* never pooled again: only px uses it */
        px->probe_misses = 0;
        loop_timer_arm(px->w->loop, &px->probe_timer, PX_PROBE_TICK_MS);
    }
}

void lb_worker_wake(struct lb_worker *w)
{
    for (struct px_group *g = w->groups; g; g = g->next) {
        unsigned downs = atomic_load(&g->server->downs);
        if (downs == g->downs_seen)
            continue;
        g->downs_seen = downs;
        /* Handling one exchange may end or move others' neighbours in the list (a client's next
         * pipelined request starts when one is answered): take the list first, then check each
         * is still on this server and not handled (an ended px lives until the iteration ends). */
        size_t n = 0;
        for (struct px *px = g->head; px; px = px->gnext)
            n++;
        if (!n)
            continue;
        struct px **v = alloc_calloc(n, sizeof(*v));
        n = 0;
        for (struct px *px = g->head; px; px = px->gnext)
            v[n++] = px;
        w->walking++;
        for (size_t i = 0; i < n; i++) {
            struct px *px = v[i];
            if (px->ended || px->grp != g || px->downs_at == downs)
                continue;
            px->downs_at = downs;
            px_server_down(px);
        }
        w->walking--;
        free(v);
    }
}

/* Ends the exchange with an error: an error response if nothing was sent yet, else the client
 * connection is cut (the response cannot be completed). */
void px_fail(struct px *px, int status, const char *msg)
{
    px_close_upstream(px);
    struct http_conn *c = px->client;
    http_conn_set_data(c, NULL);
    px_log(px, px->head_sent ? px->status : status);
    int head_sent = px->head_sent;
    if (!head_sent)
        http_answers_count(&px->w->sh->counters.answers, status);
    px_free(px);
    if (head_sent) {
        http_conn_response_done(c, 0); /* truncated: the client sees the connection close */
        return;
    }
    http_conn_respond_error(c, status, msg, 1);
}

/* Response complete. */
void px_finish(struct px *px, int reuse_upstream)
{
    struct lb_worker *w = px->w;
    struct lb_upstream *u = px->up;
    if (px->server && !px->tunnel) { /* a tunnel's handshake was counted when it opened */
        uint64_t now = loop_clock_us();
        lb_passive_done(px->server, now - px->start_us, px->queued, now, px->status);
    }
    if (px->upgrade)
        reuse_upstream = 0; /* the backend was asked to switch protocols: never pooled */
    px->up = NULL;
    if (u)
        lb_upstream_release(u, reuse_upstream && !atomic_load(&w->sh->stopping));
    struct http_conn *c = px->client;
    px_log(px, px->status);
    int keep = px->client_keep_alive;
    http_conn_set_data(c, NULL);
    px_free(px);
    http_conn_response_done(c, keep);
}

/* ---- the http_server handler ---- */

/* The handler's slot of a client connection (http_conn_get_data) holds the request's exchange,
 * or LOCAL while a request the balancer answers itself (local.h) reads its body; it is never
 * NULL while the handler owns a request. (A tag, not NULL: NULL would also be what a slot holds
 * by mistake.) */
static const char local_tag;
#define LOCAL ((struct px *)(void *)&local_tag)

/* --redirect-https: answers a request on the plain listener (but /health and /stats) with 308 to the same host and
 * target on the TLS port (the Host header's port replaced; none when it is 443). The response is queued now and
 * completed at the end of the request body, as a local answer is (LOCAL). */
static void redirect_https(struct lb_worker *w, struct http_conn *c, const struct http_head *h)
{
    if (!h->host.n) {
        http_conn_set_data(c, NULL);
        http_answers_count(&w->sh->counters.answers, 400);
        http_conn_respond_error(c, 400, "a Host header is needed to redirect to https", 1);
        return;
    }
    size_t hn = h->host.n; /* the host without its port (the parser checked its characters) */
    if (h->host.p[0] == '[') {
        const char *end = memchr(h->host.p, ']', h->host.n);
        hn = end ? (size_t)(end - h->host.p) + 1 : h->host.n;
    } else {
        const char *colon = memchr(h->host.p, ':', h->host.n);
        if (colon)
            hn = (size_t)(colon - h->host.p);
    }
    struct buf b = {0};
    http_write_status_line(&b, 308);
    buf_printf(&b, "Location: https://%.*s", (int)hn, h->host.p);
    if (w->tls_port != 443)
        buf_printf(&b, ":%u", w->tls_port);
    if (h->target.n && h->target.p[0] == '/')
        buf_append(&b, h->target.p, h->target.n);
    else { /* absolute-form (or OPTIONS *): the path and query */
        buf_append(&b, h->path.p, h->path.n);
        if (h->query.n) {
            buf_append(&b, "?", 1);
            buf_append(&b, h->query.p, h->query.n);
        }
    }
    buf_puts(&b, "\r\nContent-Length: 0\r\n");
    if (http_conn_will_close(c))
        buf_puts(&b, "Connection: close\r\n");
    buf_puts(&b, "\r\n");
    http_conn_set_data(c, LOCAL);
    http_conn_send(c, buf_head(&b), buf_used(&b));
    buf_free(&b);
}

static void on_request(void *ctx, struct http_conn *c, const struct http_head *h)
{
    struct lb_worker *w = ctx;
    const struct lb_config *cfg = w->sh->cfg;
    worker_refresh(w);
    if (lb_rewrite_acted_on(h)) {
        http_conn_set_data(c, NULL);
        http_answers_count(&w->sh->counters.answers, 400);
        http_conn_respond_error(c, 400,
                                "Connection header lists a field the balancer acts on (Idempotency-Key or Expect)", 1);
        return;
    }
    enum lb_local own = lb_local_match(h, cfg->stats_access);
    if (cfg->redirect_https && own == LB_LOCAL_NONE && !http_conn_is_tls(c)) {
        redirect_https(w, c, h); /* the balancer's own /health and /stats stay on plain HTTP for monitors */
        return;
    }
    if (own != LB_LOCAL_NONE) {
        /* Not an exchange: on_body_end completes it once the body, if any, is read. (A refused
         * /stats is done at once: http_conn_response_done clears the slot.) */
        http_conn_set_data(c, LOCAL);
        lb_local_answer(c, h, own, w->set, w->sh->policy->name, cfg->stats_access);
        return;
    }
    struct px *px = alloc_calloc(1, sizeof(*px));
    px->w = w;
    px->client = c;
    px->req = h;
    px->start_us = http_conn_request_start_us(c);
    px->client_keep_alive = h->keep_alive;
    px->timer.fn = on_px_timer;
    px->timer.data = px;
    px->try_timer.fn = on_px_try_timer;
    px->try_timer.data = px;
    px->probe_timer.fn = on_px_probe_timer;
    px->probe_timer.data = px;
    px->head_deadline_ms = loop_now(w->loop) + cfg->response_timeout_ms;
    px->req_body_done = h->body == HTTP_BODY_NONE;
    lb_request_id(h, w->sh->cfg->trust_forwarded, &w->id_state, px->request_id);
    if (lb_access_log_on(&w->log))
        lb_log_req_capture(&px->log, h);
    http_conn_set_data(c, px);
    if ((px->upgrade = lb_rewrite_is_websocket(h, 1))) {
        struct lb_counters *k = &w->sh->counters;
        if ((unsigned)atomic_fetch_add_explicit(&k->tunnel_slots, 1, memory_order_relaxed) >= cfg->max_tunnels) {
            atomic_fetch_sub_explicit(&k->tunnel_slots, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&k->tunnels_refused, 1, memory_order_relaxed);
            http_conn_set_data(c, NULL);
            px_log(px, 503);
            px_free(px);
            http_answers_count(&k->answers, 503);
            http_conn_respond_error(c, 503, "Too many WebSocket connections open (max_tunnels), try again later", 0);
            return;
        }
        px->slot = 1;
    }
    struct lb_server *s = pick_server(px);
    if (!s) {
        http_conn_set_data(c, NULL);
        px_log(px, 503);
        px_free(px);
        http_answers_count(&w->sh->counters.answers, 503);
        http_conn_respond_error(c, 503, "No healthy servers available", 0);
        return;
    }
    px_use_server(px, s);
    lb_retry_budget_earn(&w->retry, cfg->retry_budget_percent);
    px->safe = h->method == HTTP_GET || h->method == HTTP_HEAD || h->method == HTTP_OPTIONS || h->method == HTTP_PUT ||
               h->method == HTTP_DELETE || h->method == HTTP_TRACE || http_find_header(h, "idempotency-key") != NULL;
    px->safe = px->safe && !px->upgrade; /* an upgrade is never sent twice */
    /* ...so it takes no pooled connection either: one the backend closed as it was taken (a
     * keep-alive timeout) would fail it with a 502 where any other GET is sent again. */
    px->fresh = px->upgrade;
    px->replayable = px->safe && cfg->replay_buffer > 0;
    struct buf b = {0};
    px->req_chunked = lb_rewrite_request(&b, h, http_conn_remote_ip(c), s->host_header, cfg->trust_forwarded,
                                         px->request_id, http_conn_is_tls(c));
    if (px->upgrade)
        lb_rewrite_upgrade_request(&b);
    if (px->replayable)
        buf_append(&px->replay, buf_head(&b), buf_used(&b));
    int rc = px_dispatch(px, &b);
    if (rc < 0)
        px_fail_dispatch(px, rc);
}

static void on_body(void *ctx, struct http_conn *c, const char *p, size_t n)
{
    struct px *px = http_conn_get_data(c);
    if (px == LOCAL)
        return; /* drained */
    if (px->tunnel) {
        tunnel_from_client(px, p, n);
        return;
    }
    struct lb_upstream *u = px->up; /* set while px lives: px_dispatch either connects or ends px */
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
    px_request_progress(px);
    if (u->state == LB_UP_ACTIVE && relay_flush(u) < 0)
        return;
    lb_upstream_update_mask(u);
    if (buf_used(&u->out) >= HIGH_WATER)
        http_conn_pause_body(c, 1);
}

static void on_body_end(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (px == LOCAL) {
        /* Its response is already queued. */
        http_conn_response_done(c, 1);
        return;
    }
    if (px->tunnel) {
        tunnel_client_eof(px);
        return;
    }
    if (px->req_body_done)
        return;
    px->req_body_done = 1;
    px_request_progress(px);
    px_arm_try(px);
    if (px->req_chunked && px->up) {
        if (px->replayable)
            buf_append(&px->replay, "0\r\n\r\n", 5);
        relay_send(px->up, "0\r\n\r\n", 5);
    }
}

static void on_drain(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (px != LOCAL && px->tunnel) {
        tunnel_client_drained(px);
        return;
    }
    if (px == LOCAL || !px->client_paused)
        return;
    px->client_paused = 0;
    struct lb_upstream *u = px->up;
    if (!u)
        return;
    u->reading = 1;
    lb_upstream_update_mask(u);
    relay_process(u);
}

static void on_abort(void *ctx, struct http_conn *c)
{
    struct px *px = http_conn_get_data(c);
    if (px == LOCAL)
        return;
    px_close_upstream(px);
    px_log(px, px->head_sent ? px->status : 499);
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
    .upgrades = 1, /* WebSocket (tunnel.c); other upgrades go on as plain requests (rewrite.h) */
};

/* ---- worker lifecycle ---- */

struct lb_worker *lb_worker_create(struct lb_shared *sh, struct loop *loop, int listen_fd, int tls_fd, unsigned id)
{
    struct lb_worker *w = alloc_calloc(1, sizeof(*w));
    const struct lb_config *cfg = sh->cfg;
    w->sh = sh;
    w->loop = loop;
    w->id = id;
    w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)id << 32) ^ loop_clock_us();
    randombytes_buf(&w->id_state, sizeof(w->id_state));
    if (!w->rng)
        w->rng = 1;
    lb_retry_budget_init(&w->retry);
    tunnel_worker_init(w);
    worker_register(w);
    lb_pools_init(&w->pools, loop, cfg->pool_idle_max, cfg->pool_idle_timeout_ms, relay_io);
    lb_access_log_init(&w->log, loop, sh->access_log_fd,
                       strcmp(sh->cfg->access_log_format, "json") ? LB_LOG_COMBINED : LB_LOG_JSON);
    struct http_server_limits lim;
    lb_config_client_limits(cfg, &lim);
    lim.climits = sh->climits;
    lim.stats = &sh->counters.http;
    lim.spread = sh->spread;
    lim.worker = id;
    worker_refresh(w);
    w->srv = http_server_create(loop, listen_fd, &proxy_ops, w, &lim);
    if (w->srv && tls_fd >= 0) {
        const char *colon = strrchr(cfg->tls_listen, ':');
        w->tls_port = colon ? (unsigned)atoi(colon + 1) : 443;
        lim.tls = sh->tls;
        lim.extra_headers = sh->hsts; /* on the answers the server makes itself */
        lim.spread = sh->spread_tls;
        w->tls_srv = http_server_create(loop, tls_fd, &proxy_ops, w, &lim);
    }
    if (!w->srv || (tls_fd >= 0 && !w->tls_srv)) {
        lb_worker_free(w);
        return NULL;
    }
    return w;
}

void lb_worker_shutdown(struct lb_worker *w)
{
    atomic_store(&w->sh->stopping, 1);
    if (w->srv)
        http_server_shutdown(w->srv);
    if (w->tls_srv)
        http_server_shutdown(w->tls_srv);
}

unsigned lb_worker_conns(const struct lb_worker *w)
{
    return (w->srv ? http_server_conns(w->srv) : 0) + (w->tls_srv ? http_server_conns(w->tls_srv) : 0);
}

void lb_worker_free(struct lb_worker *w)
{
    if (!w)
        return;
    worker_unregister(w);
    if (w->srv)
        http_server_free(w->srv); /* aborts the exchanges, tunnels too */
    if (w->tls_srv)
        http_server_free(w->tls_srv);
    groups_sweep(w, 1);
    tunnel_worker_stop(w);
    lb_access_log_close(&w->log);
    lb_pools_free(&w->pools);
    if (w->set) {
        lb_selector_destroy(&w->sel);
        lb_set_unref(w->set);
    }
    free(w);
}
