/* exchange.h — inside the balancer's request path: a worker and its exchanges, shared by proxy.c
 * (the client side: the worker, the http_server handler, choosing, dispatching and retrying) and
 * relay.c (the backend side: the connection's events, the response relayed to the client).
 * Not for use outside those two files; the rest of the balancer sees proxy.h.
 *
 * An exchange (struct px) ties one client request to one backend connection at a time. It is
 * created by on_request and ends in exactly one of px_finish (response complete), px_fail (error
 * answered, or the client connection cut), on_abort (the client went away) or, when no server is
 * usable, on_request's own 503; each of those detaches the backend connection, writes the
 * access-log line and frees px after the current loop iteration. A call never ends the exchange
 * of its caller behind its back: sending to the client never aborts it (a failed send marks the
 * client connection, and on_abort follows from a deferred call, server.h), nor does resuming the
 * client's body; the functions that can end px say so by their return value (relay_flush's -1). Everything runs on the
 * worker's thread. */
#ifndef AGORA_LB_EXCHANGE_H
#define AGORA_LB_EXCHANGE_H
#include <stdint.h>

#include "core/buf.h"
#include "http/client.h"
#include "http/parser.h"
#include "http/server.h"
#include "lb/accesslog.h"
#include "lb/passive.h"
#include "lb/proxy.h"
#include "lb/rewrite.h"
#include "lb/select.h"
#include "lb/upstream.h"

#define HIGH_WATER HTTP_OUT_HIGH_WATER /* backend output queued past this pauses the client body */

/* A worker's exchanges on one server (proxy.c): when the server is marked down (its `downs`
 * count moves) the worker walks this list only. Created when a first exchange goes to the server;
 * an empty one is freed when the worker takes a new snapshot. */
struct px_group {
    struct lb_server *server; /* reference held */
    struct px *head;          /* through px.gprev/gnext */
    unsigned downs_seen;      /* server->downs when the worker last looked */
    struct px_group *next;    /* in lb_worker.groups */
};

struct lb_worker {
    struct lb_shared *sh;
    struct lb_worker *next; /* in sh->workers, under sh->workers_mu */
    struct loop *loop;
    struct http_server *srv;
    struct http_server *tls_srv; /* the TLS listener's, NULL = none */
    unsigned tls_port;           /* its port, for --redirect-https */
    unsigned id;
    unsigned gen;       /* generation of `set` */
    struct lb_set *set; /* reference held */
    struct lb_selector sel;
    struct lb_pools pools;
    uint64_t rng;
    uint64_t id_state; /* request ids: a counter from a random start, mixed (proxy.c) */
    struct lb_access_log log;
    struct lb_retry_budget retry;
    struct px *tunnels;            /* open WebSocket tunnels (tunnel.c), a list through tprev/tnext */
    struct loop_timer tunnel_tick; /* once a second while there are tunnels: drains (tunnel.c) */
    struct px_group *groups;       /* exchanges by server (proxy.c) */
    int walking;                   /* a marked-down walk is running: groups are not freed */
};

struct px {
    struct lb_worker *w;
    struct http_conn *client;
    const struct http_head *req;
    struct lb_upstream *up;
    struct lb_server *server; /* reference held while counted in inflight */
    struct lb_tried tried;
    int fresh;       /* an upgrade, or a pooled connection went stale: every (later) try opens a new one */
    int req_chunked; /* request body is sent chunked to the backend */
    int safe;        /* may be sent again after a failure: idempotent or Idempotency-Key */
    int replayable;  /* `replay` holds every request byte sent so far */
    struct buf replay;
    int req_body_done;
    int client_keep_alive;
    struct http_reader resp; /* the backend's response; phase HEAD until its head is in */
    int resp_chunked_out;    /* response re-chunked to the client */
    int resp_keep_alive;     /* backend connection reusable afterwards */
    int client_paused;       /* client's output is full: backend reads stopped */
    int status;
    int head_sent;       /* response head sent to the client */
    uint64_t body_bytes; /* response body bytes sent (for the access log) */
    unsigned queued;     /* requests in flight on the server when sent, this one included */
    uint64_t start_us;
    uint64_t connect_us, header_us;         /* backend connection ready, response head in (0 = not yet) */
    char request_id[LB_REQUEST_ID_MAX + 1]; /* X-Request-Id: the trusted client's, or made here */
    struct loop_timer timer;
    struct loop_timer try_timer; /* --try-timeout: the current try has no response head yet */
    uint64_t head_deadline_ms;   /* loop clock: the response timeout for the head, all tries */
    struct px_group *grp;        /* of `server`, while it is set */
    struct px *gprev, *gnext;    /* in grp->head */
    unsigned downs_at;           /* server->downs when sent there */
    unsigned retry_reasons;      /* bit (1 << enum lb_retry_reason) for each kind of retry made */
    int ended;                   /* px_free ran (the memory lives until the iteration ends) */
    struct lb_log_req log;
    /* its server marked down, the connection stays: its peer probed (proxy.c px_server_down) */
    struct loop_timer probe_timer; /* looks at `up` (up->probed) every tick */
    int probe_misses;              /* ticks in a row that found the peer unanswering too long */
    /* WebSocket (tunnel.c) */
    int upgrade;              /* a WebSocket upgrade the balancer will tunnel (rewrite.h) */
    int slot;                 /* holds one of max_tunnels (counters.tunnel_slots) */
    int tunnel;               /* the 101 came: the exchange is a tunnel */
    int client_eof;           /* the client ended its stream (passed on once u->out is written) */
    int backend_eof;          /* the backend ended its stream (passed on to the client) */
    int backend_shut;         /* the backend's stream was ended (shutdown SHUT_WR) */
    uint64_t to_server;       /* tunnel bytes from the client */
    uint64_t drain_seen_ms;   /* loop clock: the server was first seen draining or removed */
    struct px *tprev, *tnext; /* in w->tunnels */
};

/* proxy.c */

/* (Re)arms px's timer: when it fires the backend has failed (connect or response timeout). */
void px_arm(struct px *px, unsigned ms);
/* The try's connection is up: arms px's timer for the wait for the response head, what is left
 * of the response timeout, which bounds every try together (head_deadline_ms), and the try
 * timer (--try-timeout) if the client's request is all in. */
void px_arm_head(struct px *px);
/* The backend failed: retries on another server when allowed (see proxy.c), else px_fail. */
void px_backend_failed(struct px *px, enum lb_fail kind);
/* Ends px with an error: status and msg if no response head was sent, else the client connection
 * is cut. */
void px_fail(struct px *px, int status, const char *msg);
/* Ends px after a complete response; the backend connection goes back to its pool if
 * reuse_upstream (and the balancer is not stopping). */
void px_finish(struct px *px, int reuse_upstream);

/* tunnel.c: WebSocket tunnels (see the top of tunnel.c) */

/* The 101 was relayed (relay.c): px becomes a tunnel; what u->in holds goes to the client. */
void tunnel_open(struct px *px);
/* The events of a tunnel's backend connection (relay_io passes them on). */
void tunnel_io(struct lb_upstream *u, int events);
/* The client side (proxy.c's handler): bytes, its end of stream, its queue drained. */
void tunnel_from_client(struct px *px, const char *p, size_t n);
void tunnel_client_eof(struct px *px);
void tunnel_client_drained(struct px *px);
/* px ends (px_free): leaves the worker's list and gives back its max_tunnels slot. */
void tunnel_release(struct px *px);
/* The worker's tunnel timer, set up and stopped with the worker. */
void tunnel_worker_init(struct lb_worker *w);
void tunnel_worker_stop(struct lb_worker *w);

/* relay.c */

/* The events of a backend connection in use (lb_pools' on_io). */
void relay_io(struct lb_upstream *u, int events);
/* Writes u's queued bytes. Returns 0, or -1 if that failed and the exchange was handled (ended,
 * answered by what the backend had sent, or retried). */
int relay_flush(struct lb_upstream *u);
/* Queues n bytes for the backend and writes what it can. */
void relay_send(struct lb_upstream *u, const void *p, size_t n);
/* Relays what u->in holds (response head, body) to the owner's client. */
void relay_process(struct lb_upstream *u);

#endif
