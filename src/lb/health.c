/* health.c — concurrent active health checks; see health.h. */
#include "lb/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/parser.h"

struct check {
    struct lb_health *h;
    struct check *next;
    struct lb_server *server; /* reference held */
    int fd;
    int connected;
    struct buf out, in;
    struct loop_timer timer;
};

struct lb_health {
    struct loop *loop;
    const struct lb_config *cfg;
    struct lb_registry *reg;
    struct check *running;
    struct loop_timer tick;
    uint64_t skip_log_after_ms; /* loop clock: no "skipped" message before this */
    unsigned long skipped;      /* checks skipped since the last message */
};

/* Skipped checks are reported at most this often. */
#define SKIP_LOG_MS 10000

void lb_health_apply(struct lb_server *s, int passed, unsigned rise, unsigned fall, const char *what)
{
    lb_server_set_last_check(s, what, "");
    int healthy = atomic_load(&s->healthy);
    if (passed) {
        s->hc_fall = 0;
        if (!healthy && ++s->hc_rise >= (int)rise) {
            s->hc_rise = 0;
            atomic_store(&s->healthy, 1);
            atomic_store(&s->up_since_ms, loop_clock_us() / 1000);
        }
    } else {
        s->hc_rise = 0;
        if (healthy && ++s->hc_fall >= (int)fall) {
            s->hc_fall = 0;
            atomic_store(&s->healthy, 0);
        }
    }
}

static void check_free(struct check *c)
{
    struct lb_health *h = c->h;
    struct check **pp = &h->running;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    loop_timer_cancel(h->loop, &c->timer);
    if (c->fd >= 0) {
        loop_unwatch(h->loop, c->fd);
        close(c->fd);
    }
    buf_free(&c->in);
    buf_free(&c->out);
    lb_server_unref(c->server);
    free(c);
}

static void check_done(struct check *c, int passed, const char *what)
{
    struct lb_server *s = c->server;
    if (!s->hc_checked) {
        /* The first check ever decides the state at once. */
        s->hc_checked = 1;
        atomic_store(&s->healthy, passed);
        s->hc_rise = s->hc_fall = 0;
        lb_server_set_last_check(s, what, "");
    } else if (passed && loop_clock_us() / 1000 < atomic_load(&s->ejected_until_ms)) {
        lb_server_set_last_check(s, what, " (ejected)"); /* too early to come back */
    } else {
        lb_health_apply(s, passed, c->h->cfg->rise, c->h->cfg->fall, what);
    }
    check_free(c);
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

static void on_check_timeout(struct loop *loop, struct loop_timer *t)
{
    struct check *c = t->data;
    check_done(c, 0, c->connected ? "timeout waiting for response" : "timeout connecting");
}

static void on_check_io(struct loop *loop, int fd, int events, void *data)
{
    struct check *c = data;
    char what[96];
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err && net_local_shortage(err)) {
            check_skip(c, err);
            return;
        }
        if (err) {
            snprintf(what, sizeof(what), "connect failed: %s", strerror(err));
            check_done(c, 0, what);
            return;
        }
        c->connected = 1;
    }
    if (buf_used(&c->out)) {
        ssize_t n = send(fd, buf_head(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            snprintf(what, sizeof(what), "send failed: %s", strerror(errno));
            check_done(c, 0, what);
            return;
        }
        if (n > 0)
            buf_consume(&c->out, (size_t)n);
        loop_set_mask(loop, fd, buf_used(&c->out) ? LOOP_WRITE : LOOP_READ);
        return;
    }
    if (!(events & LOOP_READ))
        return;
    ssize_t n = net_read(fd, &c->in, 4096);
    if (n == -EAGAIN)
        return;
    struct http_head r;
    int rc = http_parse_response(buf_head(&c->in), buf_used(&c->in), HTTP_GET, NULL, &r);
    if (rc > 0) {
        int ok = (unsigned)r.status == c->h->cfg->health_status;
        snprintf(what, sizeof(what), "HTTP %d", r.status);
        check_done(c, ok, what);
        return;
    }
    if (rc == HTTP_ERROR || n <= 0 || buf_used(&c->in) > 65536) {
        check_done(c, 0, n <= 0 ? "connection closed before a response" : "malformed response");
        return;
    }
}

static void start_check(struct lb_health *h, struct lb_server *s)
{
    for (struct check *c = h->running; c; c = c->next)
        if (c->server == s)
            return; /* previous check still running */
    struct check *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->h = h;
    c->server = s;
    lb_server_ref(s);
    c->next = h->running;
    h->running = c;
    c->timer.fn = on_check_timeout;
    c->timer.data = c;
    loop_timer_arm(h->loop, &c->timer, h->cfg->health_timeout_ms);
    buf_printf(&c->out, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: agora-health\r\nConnection: close\r\n\r\n",
               h->cfg->health_path, s->host_header);
    c->fd = net_connect(&s->addr);
    if (c->fd < 0) {
        if (net_local_shortage(-c->fd)) {
            check_skip(c, -c->fd);
            return;
        }
        char what[96];
        snprintf(what, sizeof(what), "connect failed: %s", strerror(-c->fd));
        check_done(c, 0, what);
        return;
    }
    int rc = loop_watch(h->loop, c->fd, LOOP_WRITE, on_check_io, c);
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
    struct lb_health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
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
