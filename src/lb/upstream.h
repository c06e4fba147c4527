/* upstream.h — connections to the backends and each worker's pools of idle ones.
 *
 * An upstream is one non-blocking TCP connection from a worker to one server, with an input
 * buffer (what the backend sent, not yet consumed) and an output queue (request bytes not yet
 * written). It is used by one exchange at a time, its owner, which gets the connection's events
 * through the pools' on_io callback; the owner parses, forwards and decides when it is done with
 * it (lb_upstream_release) or that it failed (lb_upstream_close). Between exchanges a reusable
 * connection waits in its server's pool: most recently used first, at most idle_max per server
 * per worker, closed after idle_timeout_ms, or as soon as it becomes readable (the backend closed
 * it, or sent bytes nobody asked for). The pools follow the worker's server-set snapshot
 * (lb_pools_adopt): idle connections of a server that stays are kept, those of a removed server
 * closed. Everything here runs on the worker's loop thread; closes free the memory after the
 * current loop iteration, so a caller up the stack may still compare pointers to it. */
#ifndef AGORA_LB_UPSTREAM_H
#define AGORA_LB_UPSTREAM_H
#include <stdint.h>

#include "core/blockpool.h"
#include "core/buf.h"
#include "core/loop.h"
#include "lb/servers.h"

enum lb_up_state { LB_UP_CONNECTING, LB_UP_ACTIVE, LB_UP_IDLE };

struct lb_upstream;
/* Events (LOOP_READ/LOOP_WRITE) of a connection that is not idle. */
typedef void lb_upstream_io_fn(struct lb_upstream *u, int events);

struct lb_upstream {
    struct lb_pools *pools;   /* the worker's */
    struct lb_server *server; /* reference held */
    struct lb_upstream *next; /* in the pool's idle list */
    int fd;
    enum lb_up_state state;
    struct buf in, out;
    uint64_t bytes_written; /* on this connection, for the current exchange */
    unsigned uses;          /* exchanges served, including the current one */
    int reading;            /* read interest wanted */
    int parked;             /* not watched (lb_upstream_park) */
    int probed;             /* its peer was probed (net_probe_peer): never pooled again */
    void *owner;            /* the exchange using it; NULL when idle or closed */
    struct loop_timer idle_timer;
};

/* Idle keep-alive connections to one server. */
struct lb_pool {
    struct lb_server *server; /* reference held */
    struct lb_upstream *idle; /* most recently used first */
    unsigned nidle;
};

struct lb_pools {
    struct loop *loop;
    struct lb_pool *pool; /* parallel to the snapshot's servers; NULL before the first */
    size_t n;
    unsigned idle_max, idle_timeout_ms;
    lb_upstream_io_fn *on_io;
    struct blockpool bufs; /* input buffers of connections in use: an idle one holds none */
};

/* Starts empty pools on loop; on_io gets the events of connections in use. */
void lb_pools_init(struct lb_pools *p, struct loop *loop, unsigned idle_max, unsigned idle_timeout_ms,
                   lb_upstream_io_fn *on_io);
/* Follows a new snapshot: one pool per server of set, carrying over the idle connections of the
 * servers that remain and closing the others. Aborts on out-of-memory. */
void lb_pools_adopt(struct lb_pools *p, const struct lb_set *set);
/* Closes every idle connection and frees the pools. */
void lb_pools_free(struct lb_pools *p);

/* A connection to s for owner: the most recent idle one from s's pool (unless fresh), or a new one
 * (connecting). Its output queue becomes *pending (taken over: *pending is left empty). Returns 0 with *out
 * set, or -errno when no connection could be started (pending untouched). */
int lb_upstream_get(struct lb_pools *p, struct lb_server *s, int fresh, void *owner, struct buf *pending,
                    struct lb_upstream **out);
/* The owner is done with u: back to its server's pool if reuse is asked, the pool has room and
 * nothing is buffered either way; closed otherwise. */
void lb_upstream_release(struct lb_upstream *u, int reuse);
/* Closes u (removing it from its pool if idle); freed after this loop iteration. */
void lb_upstream_close(struct lb_upstream *u);

/* Outcome of a connect in progress: 0 when connected, else the socket error. */
int lb_upstream_connect_error(const struct lb_upstream *u);
/* Writes queued bytes until done or the socket is full. Returns 0, or -1 when the write failed
 * (the connection is unusable; bytes already written are counted in bytes_written). */
int lb_upstream_flush(struct lb_upstream *u);
/* Reads what the backend sent into u->in: net_read's result. */
ssize_t lb_upstream_read(struct lb_upstream *u);

/* Stops watching u's descriptor: for a connection whose both directions are shut (our end of
 * stream sent, the backend's received) while its reads are paused, which epoll would report as a
 * hang-up again and again whatever the mask. lb_upstream_update_mask watches it again once it
 * wants an event. */
void lb_upstream_park(struct lb_upstream *u);
/* lb_upstream_update_mask for a parked connection. */
void lb_upstream_unpark(struct lb_upstream *u, int mask);

/* Sets the loop interest from the state: write while connecting or with bytes queued, read when
 * wanted and connected. */
static inline void lb_upstream_update_mask(struct lb_upstream *u)
{
    int mask = 0;
    if (u->state == LB_UP_CONNECTING || buf_used(&u->out) > 0)
        mask |= LOOP_WRITE;
    if (u->reading && u->state != LB_UP_CONNECTING)
        mask |= LOOP_READ;
    if (u->parked)
        lb_upstream_unpark(u, mask);
    else
        loop_set_mask(u->pools->loop, u->fd, mask);
}

#endif
