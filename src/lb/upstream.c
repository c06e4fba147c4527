/* upstream.c — backend connections and the per-worker idle pools; see upstream.h. */
#include "lb/upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/net.h"

#define READ_CHUNK 65536
#define POOL_MAX   32 /* input blocks (READ_CHUNK bytes) cached per worker */

void lb_pools_init(struct lb_pools *p, struct loop *loop, unsigned idle_max, unsigned idle_timeout_ms,
                   lb_upstream_io_fn *on_io)
{
    *p = (struct lb_pools){.loop = loop, .idle_max = idle_max, .idle_timeout_ms = idle_timeout_ms, .on_io = on_io};
    blockpool_init(&p->bufs, READ_CHUNK, POOL_MAX);
}

static void free_pools(struct lb_pool *pools, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (pools[i].idle) {
            struct lb_upstream *u = pools[i].idle;
            pools[i].idle = u->next;
            u->state = LB_UP_ACTIVE; /* so lb_upstream_close does not search the pool */
            atomic_fetch_sub_explicit(&u->server->conns_idle, 1, memory_order_relaxed);
            lb_upstream_close(u);
        }
        lb_server_unref(pools[i].server);
    }
    free(pools);
}

void lb_pools_adopt(struct lb_pools *p, const struct lb_set *set)
{
    struct lb_pool *pools = alloc_calloc(set->n ? set->n : 1, sizeof(*pools));
    for (size_t i = 0; i < set->n; i++) {
        pools[i].server = set->servers[i];
        lb_server_ref(set->servers[i]);
        for (size_t j = 0; p->pool && j < p->n; j++) {
            if (p->pool[j].server == set->servers[i]) {
                pools[i].idle = p->pool[j].idle;
                pools[i].nidle = p->pool[j].nidle;
                p->pool[j].idle = NULL;
                p->pool[j].nidle = 0;
            }
        }
    }
    if (p->pool)
        free_pools(p->pool, p->n);
    p->pool = pools;
    p->n = set->n;
}

void lb_pools_free(struct lb_pools *p)
{
    if (p->pool)
        free_pools(p->pool, p->n);
    p->pool = NULL;
    p->n = 0;
    blockpool_free(&p->bufs);
}

static struct lb_pool *pool_of(struct lb_pools *p, const struct lb_server *s)
{
    for (size_t i = 0; p->pool && i < p->n; i++)
        if (p->pool[i].server == s)
            return &p->pool[i];
    return NULL;
}

static void on_idle_timeout(struct loop *loop, struct loop_timer *t) { lb_upstream_close(t->data); }

static void on_io(struct loop *loop, int fd, int events, void *data)
{
    struct lb_upstream *u = data;
    if (u->state == LB_UP_IDLE) {
        /* An idle pooled connection became readable: the backend closed it (or sent garbage). */
        lb_upstream_close(u);
        return;
    }
    u->pools->on_io(u, events);
}

int lb_upstream_get(struct lb_pools *p, struct lb_server *s, int fresh, void *owner, struct buf *pending,
                    struct lb_upstream **out)
{
    struct lb_pool *pool = fresh ? NULL : pool_of(p, s);
    struct lb_upstream *u = NULL;
    if (pool && pool->idle) {
        u = pool->idle;
        pool->idle = u->next;
        pool->nidle--;
        atomic_fetch_sub_explicit(&s->conns_idle, 1, memory_order_relaxed);
        u->next = NULL;
        loop_timer_cancel(p->loop, &u->idle_timer);
        u->state = LB_UP_ACTIVE;
    } else {
        int fd = net_connect(&s->addr);
        if (fd < 0)
            return fd;
        u = alloc_calloc(1, sizeof(*u));
        u->pools = p;
        u->fd = fd;
        u->server = s;
        lb_server_ref(s);
        atomic_fetch_add_explicit(&s->conns_open, 1, memory_order_relaxed);
        u->state = LB_UP_CONNECTING;
        u->idle_timer.fn = on_idle_timeout;
        u->idle_timer.data = u;
        int rc = loop_watch(p->loop, fd, LOOP_WRITE, on_io, u);
        if (rc < 0) {
            u->fd = -1;
            close(fd);
            lb_upstream_close(u);
            return rc;
        }
    }
    u->owner = owner;
    u->uses++;
    u->bytes_written = 0;
    u->reading = 1;
    buf_free(&u->out);
    u->out = *pending;
    memset(pending, 0, sizeof(*pending));
    *out = u;
    return 0;
}

void lb_upstream_release(struct lb_upstream *u, int reuse)
{
    struct lb_pools *p = u->pools;
    u->owner = NULL;
    struct lb_pool *pool = reuse && !u->probed ? pool_of(p, u->server) : NULL;
    if (pool && pool->nidle < p->idle_max && buf_used(&u->in) == 0 && buf_used(&u->out) == 0) {
        u->state = LB_UP_IDLE;
        u->next = pool->idle;
        pool->idle = u;
        pool->nidle++;
        atomic_fetch_add_explicit(&u->server->conns_idle, 1, memory_order_relaxed);
        u->reading = 1;
        /* Idle: no input buffer (issue 15); its block goes back to the worker's cache. The output
         * queue is empty; its storage (the last request head, under 1 KB) is freed when the next
         * exchange takes the connection: freeing it here measured 3% more instructions per
         * request (bench/instr.sh: malloc's bins) for a few hundred bytes per idle connection. */
        blockpool_buf_release(&p->bufs, &u->in);
        loop_set_mask(p->loop, u->fd, LOOP_READ); /* notice the backend closing it */
        loop_timer_arm(p->loop, &u->idle_timer, p->idle_timeout_ms);
    } else {
        lb_upstream_close(u);
    }
}

static void free_later(struct loop *loop, void *p) { free(p); }

void lb_upstream_close(struct lb_upstream *u)
{
    struct lb_pools *p = u->pools;
    if (u->state == LB_UP_IDLE) {
        struct lb_pool *pool = pool_of(p, u->server);
        if (pool) {
            struct lb_upstream **pp = &pool->idle;
            while (*pp && *pp != u)
                pp = &(*pp)->next;
            if (*pp) {
                *pp = u->next;
                pool->nidle--;
                atomic_fetch_sub_explicit(&u->server->conns_idle, 1, memory_order_relaxed);
            }
        }
    }
    loop_timer_cancel(p->loop, &u->idle_timer);
    if (u->fd >= 0) {
        loop_unwatch(p->loop, u->fd);
        close(u->fd);
        u->fd = -1;
    }
    buf_free(&u->in);
    buf_free(&u->out);
    atomic_fetch_sub_explicit(&u->server->conns_open, 1, memory_order_relaxed);
    lb_server_unref(u->server);
    u->server = NULL;
    u->owner = NULL;
    u->reading = 0;
    /* Freed after this iteration: a caller up the stack may still look at u->owner. */
    loop_defer(p->loop, free_later, u);
}

int lb_upstream_connect_error(const struct lb_upstream *u)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno ? errno : EIO;
    return err;
}

int lb_upstream_flush(struct lb_upstream *u)
{
    /* Counted from the queue, not net_write's result: a send that fails after part of the queue
     * went out returns -errno, and that part reached the backend all the same. */
    size_t before = buf_used(&u->out);
    ssize_t n = net_write(u->fd, &u->out);
    size_t sent = before - buf_used(&u->out); /* also when the call failed after some bytes */
    u->bytes_written += (uint64_t)sent;
    if (sent)
        atomic_fetch_add_explicit(&u->server->bytes_sent, (uint64_t)sent, memory_order_relaxed);
    return n < 0 ? -1 : 0;
}

/* Reads into a block from the worker's cache when u->in has no storage; a read is bounded by the
 * buffer's free space when there is some, so the block is not replaced by a larger malloc. */
ssize_t lb_upstream_read(struct lb_upstream *u)
{
    struct buf *b = &u->in;
    blockpool_buf_attach(&u->pools->bufs, b);
    size_t used = buf_used(b), room = b->off >= used ? b->cap - used : b->cap - b->len;
    size_t max = 4 * READ_CHUNK;
    ssize_t n = net_read(u->fd, b, room >= 4096 && room < max ? room : max);
    if (n > 0)
        atomic_fetch_add_explicit(&u->server->bytes_received, (uint64_t)n, memory_order_relaxed);
    return n;
}

void lb_upstream_park(struct lb_upstream *u)
{
    loop_unwatch(u->pools->loop, u->fd);
    u->parked = 1;
}

void lb_upstream_unpark(struct lb_upstream *u, int mask)
{
    if (!mask)
        return;
    /* A failure leaves it parked: the owner's timer ends the exchange. */
    if (loop_watch(u->pools->loop, u->fd, mask, on_io, u) == 0)
        u->parked = 0;
}
