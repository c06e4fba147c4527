/* relay.c — the backend side of the balancer's exchanges: the backend connection's events, and
 * the response relayed to the client; see exchange.h.
 *   backend --> upstream.in --(parse head, decode body)--> px --> http_conn_send --> client
 * The response is read by the HTTP client's response reader (http/client.h), which this file
 * gives a streaming sink: the head is rewritten (rewrite.h) and sent; 1xx heads are dropped
 * except a 100 Continue the client asked for. The body is re-framed: Content-Length is
 * kept, a chunked body is decoded and re-chunked (which also normalises chunk extensions and drops
 * trailers), and a close-delimited body is sent chunked to an HTTP/1.1 client (an HTTP/1.0 client
 * sees the connection close). Everything one pass produces goes out in one write (cork). When the
 * client's output queue is full, reading from the backend stops until on_drain. The response
 * timeout bounds the wait for the head and then each gap in the body while the backend is read
 * (not while a slow client holds it up: the client's send timeout is for that). A backend that
 * stops reading the request may have answered early (a 413 to a body it will not take): that
 * answer is relayed if it came. */
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

#include "lb/exchange.h"
#include "lb/rewrite.h"

/* Writes u's queued bytes. Returns 0, or -1 if the exchange failed (px handled). */
int relay_flush(struct lb_upstream *u)
{
    if (lb_upstream_flush(u) < 0) {
        struct px *px = u->owner;
        if (px && px->resp.phase == HTTP_READER_HEAD && u->bytes_written > 0) {
            /* The backend stopped reading: it may have answered early (e.g. 413 to a body it
             * will not take) and closed. Use that answer if it is there. */
            buf_free(&u->out);
            lb_upstream_read(u);
            relay_process(u);
            if (u->owner != px)
                return -1; /* answered */
        }
        if (u->owner)
            px_backend_failed(u->owner, u->bytes_written ? LB_FAIL_IO : LB_FAIL_CONNECT);
        else
            lb_upstream_close(u);
        return -1;
    }
    struct px *px = u->owner;
    if (px && buf_used(&u->out) < HIGH_WATER / 2 && !px->req_body_done)
        http_conn_pause_body(px->client, 0);
    return 0;
}

void relay_send(struct lb_upstream *u, const void *p, size_t n)
{
    buf_append(&u->out, p, n);
    if (u->state == LB_UP_ACTIVE && relay_flush(u) < 0)
        return;
    lb_upstream_update_mask(u);
}

/* Sends the response head for the client. */
static void send_response_head(struct px *px, const struct http_head *r)
{
    struct buf b = {0};
    px->resp_chunked_out =
        lb_rewrite_response(&b, r, px->req->minor, http_conn_will_close(px->client), &px->client_keep_alive,
                            px->request_id, px->w->sh->hsts && http_conn_is_tls(px->client) ? px->w->sh->hsts : NULL);
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

/* The response is complete: ends px. (A send that fails only marks the client connection; its
 * on_abort comes after this callback returns, so px is still ours here.) */
static void resp_complete(struct px *px)
{
    if (px->resp_chunked_out)
        http_conn_send(px->client, "0\r\n\r\n", 5);
    int reuse = px->resp_keep_alive && px->req_body_done;
    px_finish(px, reuse);
}

/* The response reader's sink (http/client.h): the head is rewritten and sent, the body streamed. */
static int on_resp_interim(void *ctx, const struct http_head *r)
{
    struct px *px = ctx;
    if (r->status == 100 && px->req->expect_continue)
        http_conn_send(px->client, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 1;
}

static int on_resp_head(void *ctx, const struct http_head *r, const char *p, size_t len)
{
    struct px *px = ctx;
    px->status = r->status;
    if (lb_access_log_on(&px->w->log))
        px->header_us = loop_clock_us();
    if (px->server) {
        /* A 503 with Retry-After is a live server shedding load on purpose (a full queue): no
         * verdict for passive health, which would otherwise eject the servers a flood of costly
         * requests keeps busy. Active health still takes out one that is not ready. */
        if (r->status != 503 || http_find_header(r, "retry-after") == NULL)
            lb_passive_status(px->w->set, px->server, px->w->sh->cfg, r->status);
        atomic_fetch_add_explicit(&px->server->responses[r->status / 100 - 1], 1, memory_order_relaxed);
    }
    if (r->status == 101) {
        /* Final only for a WebSocket upgrade (final_101): the tunnel opens after this run
         * (relay_process), or the exchange fails there if the backend switched to another
         * protocol than the one asked for. */
        if (!lb_rewrite_is_websocket(r, 0))
            return -1;
        struct buf b = {0};
        lb_rewrite_switch(&b, r, px->request_id);
        px->head_sent = 1;
        px->tunnel = 1;
        http_conn_send(px->client, buf_head(&b), buf_used(&b));
        buf_free(&b);
        return -1;
    }
    px->resp_keep_alive = r->keep_alive && r->body != HTTP_BODY_EOF;
    send_response_head(px, r);
    px_arm(px, px->w->sh->cfg->response_timeout_ms);
    return 1;
}

static int on_resp_body(void *ctx, const char *p, size_t n) { return send_body(ctx, p, n); }

static const struct http_reader_sink resp_sink = {
    .on_interim = on_resp_interim, .on_head = on_resp_head, .on_body = on_resp_body};

/* Handles bytes in u->in for the current exchange, with one write to the client for everything
 * this pass produces (head + body, usually). A send that fails only marks the client connection
 * (its on_abort comes after this callback returns), so px stays ours through the run. */
void relay_process(struct lb_upstream *u)
{
    struct px *px = u->owner;
    if (!px || px->client_paused)
        return;
    struct http_conn *c = px->client;
    http_conn_cork(c);
    switch (http_reader_run(&px->resp, &u->in, &resp_sink, px)) {
    case HTTP_READER_DONE:
        resp_complete(px);
        break;
    case HTTP_READER_PAUSED: /* the client's queue is full: stop reading until on_drain */
        px->client_paused = 1;
        u->reading = 0;
        lb_upstream_update_mask(u);
        loop_timer_cancel(px->w->loop, &px->timer); /* a slow client is not a slow backend */
        break;
    case HTTP_READER_STOPPED: /* a 101 (on_resp_head) */
        if (px->tunnel) {
            tunnel_open(px);
            break;
        }
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        px_fail(px, 502, "Backend switched to a protocol other than the WebSocket asked for");
        break;
    case HTTP_ERROR: /* a malformed head or chunked body */
        atomic_fetch_add_explicit(&px->server->errors, 1, memory_order_relaxed);
        px_fail(px, 502, "Error communicating with backend server");
        break;
    default: /* HTTP_AGAIN: more bytes needed */
        if (px->resp.phase == HTTP_READER_BODY)
            px_arm(px, px->w->sh->cfg->response_timeout_ms); /* the timeout bounds each gap */
        break;
    }
    http_conn_uncork(c); /* c lives at least until this callback returns */
}

/* Handles the result n of lb_upstream_read(u): bytes (or none yet) go to the exchange; an end of
 * stream or an error ends it. */
static void relay_read(struct lb_upstream *u, ssize_t n)
{
    if (n > 0 || n == -EAGAIN) {
        if (u->owner)
            relay_process(u);
        else if (buf_used(&u->in) > 0)
            lb_upstream_close(u); /* bytes with no exchange: protocol error */
        return;
    }
    /* End of stream or error from the backend. Only a clean end (FIN) ends a close-delimited
     * body: after a reset the body may be cut short, and the client must not be told it is
     * complete. */
    struct px *px = u->owner;
    if (px && n == 0 && http_reader_eof(&px->resp) == HTTP_READER_DONE) {
        px->resp_keep_alive = 0;
        resp_complete(px); /* the close ends a close-delimited body */
    } else if (px) {
        px_backend_failed(px, LB_FAIL_IO);
    } else {
        lb_upstream_close(u);
    }
}

/* 1 if the connection failed (a reset) while its reads are paused. Without read interest the
 * kernel reports only an error or a hang-up, level-triggered; the pending error (SO_ERROR) or a
 * failing peek tells it from a readiness left over from before the pause. */
static int reset_while_paused(struct lb_upstream *u)
{
    if (u->reading)
        return 0;
    if (lb_upstream_connect_error(u))
        return 1;
    char c;
    ssize_t r = recv(u->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* Events of px's backend connection (upstream.h's on_io). */
void relay_io(struct lb_upstream *u, int events)
{
    struct px *px = u->owner;
    if (px && px->tunnel) {
        tunnel_io(u, events);
        return;
    }
    if (u->state == LB_UP_CONNECTING) {
        if (lb_upstream_connect_error(u)) {
            if (px)
                px_backend_failed(px, LB_FAIL_CONNECT);
            else
                lb_upstream_close(u);
            return;
        }
        if (!(events & LOOP_WRITE))
            return;
        u->state = LB_UP_ACTIVE;
        if (px) {
            if (lb_access_log_on(&px->w->log))
                px->connect_us = loop_clock_us();
            px_arm_head(px); /* what is left of the response timeout, all tries together */
        }
    }
    if (events & LOOP_WRITE) {
        if (relay_flush(u) < 0)
            return;
    }
    if ((events & LOOP_READ) && u->reading) {
        relay_read(u, lb_upstream_read(u));
        return;
    }
    if ((events & LOOP_READ) && px && reset_while_paused(u)) {
        /* Reads are paused (the client's queue is full) and the backend reset the connection:
         * what it had sent is lost, and the level-triggered error would be reported again at
         * once, forever (a spinning loop) until the client drained. */
        px_backend_failed(px, LB_FAIL_IO);
        return;
    }
    lb_upstream_update_mask(u);
}
