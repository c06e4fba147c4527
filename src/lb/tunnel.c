/* tunnel.c — WebSocket pass-through: an exchange whose backend answered 101 becomes a tunnel; see
 * exchange.h.
 *
 * Which requests (rewrite.h, lb_rewrite_is_websocket): a GET over HTTP/1.1 without a body, with
 * Connection: upgrade and Upgrade: websocket. proxy.c takes one of max_tunnels slots for it (503
 * when none is left), forwards it with those two fields, never retries it once a byte was sent
 * and never pools its backend connection. The response reader treats a 101 as final for it
 * (final_101); relay.c relays a 101 that names websocket (lb_rewrite_switch) and calls
 * tunnel_open; any other answer is an ordinary response, after which the client connection goes
 * on as HTTP (pipelined bytes are parsed as requests: bytes after the request head reach the
 * backend raw only after its 101). A 101 for another protocol is a 502.
 *
 * The tunnel: bytes both ways, as they come.
 *   client --(http_conn, on_body)--> tunnel_from_client --(send, else u->out)--> backend
 *   backend --(u->in)--> tunnel_to_client --(http_conn_send)--> client
 * Each direction writes straight from the buffer the bytes were read into (c->in, u->in) and
 * queues only what the socket did not take. Backpressure: when u->out passes HIGH_WATER the
 * client is not read (http_conn_pause_body) until it is below half; when the client's queue is
 * full (http_conn_send returns 0) the backend is not read until on_drain. So a tunnel holds at
 * most about one high-water mark per direction, whatever the peers do.
 * Half-close: an end of stream from one side is passed on (shutdown SHUT_WR) once what was queued
 * for the other side is written; reading the other way goes on. When both sides have ended, the
 * tunnel ends. A reset or error on either side ends it at once. A socket shut both ways (its end of
 * stream passed on, the peer's received) while its reads are paused is reported by epoll as a
 * hang-up whatever the mask, again and again: it is unwatched until the resume (lb_upstream_park
 * here, the HTTP server's own for the client).
 * Idle timeout (tunnel_timeout): px->timer, re-armed by every byte either way; when it fires, both
 * connections are closed. Drains: once a second (tunnel_tick) a worker with tunnels looks for
 * those whose server is draining, parked or no longer in the set; they are closed once the
 * shutdown timeout has passed since the worker first saw that. A graceful stop or upgrade lets
 * tunnels run until the daemon's shutdown deadline, which then closes every connection.
 * While open, a tunnel counts in its server's in-flight requests (least-conn sees it; a drain
 * waits for it); its handshake's latency went to passive health when it opened. It ends through
 * px_finish (closing both sides, the access-log line with status 101, its duration and bytes),
 * or on_abort when the client connection fails. */
#include <errno.h>
#include <sys/socket.h>

#include "lb/exchange.h"

#define TICK_MS 1000

static void on_tunnel_timer(struct loop *loop, struct loop_timer *t)
{
    px_finish(t->data, 0); /* idle both ways for tunnel_timeout */
}

/* Bytes moved: the idle timeout starts again. */
static void tunnel_active(struct px *px) { px_arm(px, px->w->sh->cfg->tunnel_timeout_ms); }

/* Both sides have ended their streams and everything queued for the backend is written. */
static int tunnel_done(const struct px *px)
{
    return px->client_eof && px->backend_eof && px->up && buf_used(&px->up->out) == 0;
}

/* Passes what u->in holds to the client. */
static void tunnel_to_client(struct px *px)
{
    struct lb_upstream *u = px->up;
    size_t n = buf_used(&u->in);
    if (n == 0)
        return;
    int more = http_conn_send(px->client, buf_head(&u->in), n);
    buf_consume(&u->in, n);
    blockpool_buf_release(&u->pools->bufs, &u->in); /* an idle tunnel holds no input block */
    px->body_bytes += n;
    atomic_fetch_add_explicit(&px->w->sh->counters.tunnel_bytes_to_client, n, memory_order_relaxed);
    tunnel_active(px);
    if (!more) {
        px->client_paused = 1; /* until on_drain */
        u->reading = 0;
    }
}

/* Writes u->out. Returns 0, or -1 when the backend failed (px ended). */
static int tunnel_flush(struct px *px)
{
    struct lb_upstream *u = px->up;
    size_t before = buf_used(&u->out);
    if (before > 0) {
        if (lb_upstream_flush(u) < 0) {
            px_finish(px, 0);
            return -1;
        }
        if (buf_used(&u->out) < before)
            tunnel_active(px);
    }
    if (buf_used(&u->out) < HIGH_WATER / 2 && !px->client_eof)
        http_conn_pause_body(px->client, 0);
    if (buf_used(&u->out) == 0 && px->client_eof && !px->backend_shut) {
        shutdown(u->fd, SHUT_WR);
        px->backend_shut = 1;
    }
    return 0;
}

void tunnel_open(struct px *px)
{
    struct lb_worker *w = px->w;
    struct lb_counters *k = &w->sh->counters;
    uint64_t now = loop_clock_us();
    lb_passive_done(px->server, now - px->start_us, px->queued, now, 101);
    atomic_fetch_add_explicit(&k->tunnels_open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->tunnels_total, 1, memory_order_relaxed);
    px->client_keep_alive = 0;
    px->tnext = w->tunnels;
    if (w->tunnels)
        w->tunnels->tprev = px;
    w->tunnels = px;
    if (!loop_timer_armed(&w->tunnel_tick))
        loop_timer_arm(w->loop, &w->tunnel_tick, TICK_MS);
    px->timer.fn = on_tunnel_timer;
    tunnel_active(px);
    px->req = NULL; /* dead once the client connection is a tunnel */
    http_conn_tunnel(px->client);
    struct lb_upstream *u = px->up;
    if (buf_used(&u->out) == 0)
        buf_free(&u->out); /* the request head's storage */
    u->reading = 1;
    tunnel_to_client(px); /* what the backend sent right after its 101 */
    lb_upstream_update_mask(u);
}

void tunnel_from_client(struct px *px, const char *p, size_t n)
{
    struct lb_upstream *u = px->up;
    px->to_server += n;
    atomic_fetch_add_explicit(&px->w->sh->counters.tunnel_bytes_to_server, n, memory_order_relaxed);
    tunnel_active(px);
    if (buf_used(&u->out) == 0) {
        /* Nothing queued: straight from the client's input buffer. */
        ssize_t wr = send(u->fd, p, n, MSG_NOSIGNAL);
        if (wr < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            px_finish(px, 0);
            return;
        }
        if (wr > 0) {
            u->bytes_written += (uint64_t)wr;
            atomic_fetch_add_explicit(&u->server->bytes_sent, (uint64_t)wr, memory_order_relaxed);
            p += wr;
            n -= (size_t)wr;
        }
    }
    if (n > 0) {
        buf_append(&u->out, p, n);
        if (buf_used(&u->out) >= HIGH_WATER)
            http_conn_pause_body(px->client, 1);
    }
    lb_upstream_update_mask(u);
}

void tunnel_client_eof(struct px *px)
{
    px->client_eof = 1;
    if (tunnel_flush(px) < 0)
        return;
    if (tunnel_done(px)) {
        px_finish(px, 0);
        return;
    }
    lb_upstream_update_mask(px->up);
}

void tunnel_client_drained(struct px *px)
{
    if (!px->client_paused)
        return;
    px->client_paused = 0;
    struct lb_upstream *u = px->up;
    u->reading = !px->backend_eof;
    lb_upstream_update_mask(u);
}

/* The backend ended its stream: passed on to the client once its queue is written. */
static void backend_ended(struct px *px)
{
    px->backend_eof = 1;
    px->up->reading = 0;
    http_conn_shutdown_write(px->client);
    if (tunnel_done(px))
        px_finish(px, 0);
    else
        lb_upstream_update_mask(px->up);
}

void tunnel_io(struct lb_upstream *u, int events)
{
    struct px *px = u->owner;
    if ((events & LOOP_WRITE) && tunnel_flush(px) < 0)
        return;
    if (tunnel_done(px)) {
        px_finish(px, 0);
        return;
    }
    if (!(events & LOOP_READ)) {
        lb_upstream_update_mask(u);
        return;
    }
    if (!u->reading) {
        /* Not reading (the client's queue is full, or the backend ended): a reset, or an end of
         * stream with nothing before it? (Data waits for the resume; u->in is empty here.) */
        char ch;
        ssize_t r = recv(u->fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            px_finish(px, 0);
        else if (r == 0 && !px->backend_eof)
            backend_ended(px);
        else if (r > 0 && px->backend_shut && buf_used(&u->out) == 0)
            lb_upstream_park(u); /* a hang-up with data waiting for the client to drain */
        else
            lb_upstream_update_mask(u);
        return;
    }
    ssize_t n = lb_upstream_read(u);
    if (n > 0) {
        tunnel_to_client(px);
        lb_upstream_update_mask(u);
    } else if (n == 0) {
        backend_ended(px);
    } else if (n != -EAGAIN) {
        px_finish(px, 0); /* a reset: both sides close */
    }
}

void tunnel_release(struct px *px)
{
    struct lb_worker *w = px->w;
    struct lb_counters *k = &w->sh->counters;
    if (px->tunnel) {
        if (px->tprev)
            px->tprev->tnext = px->tnext;
        else if (w->tunnels == px)
            w->tunnels = px->tnext;
        if (px->tnext)
            px->tnext->tprev = px->tprev;
        px->tprev = px->tnext = NULL;
        atomic_fetch_sub_explicit(&k->tunnels_open, 1, memory_order_relaxed);
        px->tunnel = 0;
    }
    if (px->slot) {
        atomic_fetch_sub_explicit(&k->tunnel_slots, 1, memory_order_relaxed);
        px->slot = 0;
    }
}

/* 1 if s is in set. */
static int in_set(const struct lb_set *set, const struct lb_server *s)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->servers[i] == s)
            return 1;
    return 0;
}

/* Closes the tunnels of servers that are draining, parked or removed, once the shutdown timeout
 * has passed since this worker first saw it. */
static void on_tick(struct loop *loop, struct loop_timer *t)
{
    struct lb_worker *w = t->data;
    if (!w->tunnels)
        return; /* armed again by the next tunnel_open */
    struct lb_set *set = lb_registry_get(&w->sh->registry);
    uint64_t now = loop_now(loop);
    for (struct px *px = w->tunnels, *next; px; px = next) {
        next = px->tnext;
        struct lb_server *s = px->server;
        if (atomic_load_explicit(&s->admin, memory_order_relaxed) == LB_ADMIN_ACTIVE && in_set(set, s)) {
            px->drain_seen_ms = 0; /* enabled again */
            continue;
        }
        if (!px->drain_seen_ms)
            px->drain_seen_ms = now;
        else if (now - px->drain_seen_ms >= w->sh->cfg->shutdown_timeout_ms)
            px_finish(px, 0); /* unlinks px: next stays valid */
    }
    lb_set_unref(set);
    if (w->tunnels)
        loop_timer_arm(loop, t, TICK_MS);
}

void tunnel_worker_init(struct lb_worker *w)
{
    w->tunnel_tick.fn = on_tick;
    w->tunnel_tick.data = w;
}

void tunnel_worker_stop(struct lb_worker *w) { loop_timer_cancel(w->loop, &w->tunnel_tick); }
