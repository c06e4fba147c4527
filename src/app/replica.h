/* replica.h — read replicas with read-your-writes (`agora server --db-replica URL`, PostgreSQL).
 *
 * Where a request goes. Writes (every API method but GET and HEAD) go to the primary (--db), as
 * always. After a write that succeeded (status < 400) the response carries its commit position
 * (store_position: the primary's WAL insert LSN read right after the commit), in PostgreSQL's
 * notation "X/Y", twice: the header `Agora-Position: X/Y`, for API clients to send back as a
 * request header, and the cookie `agora_pos=X/Y` (HttpOnly, SameSite=Lax, Path=/, Max-Age 60),
 * which browsers send back by themselves. A read (GET, HEAD) goes to the replica when
 *   - the replica is up: its last check (below) succeeded within APP_REPLICA_STALE_MS, it is a
 *     standby in recovery, and it lags by at most the bound (--replica-max-lag); and
 *   - the read carries no position, or the replica has replayed it: a read that carries one (the
 *     larger of the header's and the cookie's) goes to the replica only when the cached replay
 *     position has reached it, so a client that sends back what its write returned reads its
 *     write whichever server it reaches;
 * else to the primary. A read the replica fails (any 5xx: it went down, a query conflicted with
 * replay) or answers 401 or 404 (absence may be lag: a session or post not replicated yet) is
 * answered again from the primary, so the replica never makes a request fail nor denies what
 * exists; a 5xx also keeps that handler thread off the replica for APP_REPLICA_RETRY_MS.
 *
 * Hostile positions. A value that is not 1-8 hex digits, '/', 1-8 hex digits (garbage, a sign, a
 * 10 KB cookie) is no position: the read is handled as one without (the replica when it is up;
 * never an error). A well-formed position beyond everything the server knows to exist (the
 * replica's received position and this server's own writes; a genuine position from another
 * server is there within one periodic check) is answered by the primary and asks for no check: a
 * client can send its own reads to the primary that way, no more; it cannot make the server query
 * the replica per request, nor wait for it.
 *
 * The check. One thread per server (the monitor), with a store connection of its own, asks the
 * replica where it stands (store_replay, one round trip: replayed and received positions, standby,
 * streaming): every APP_REPLICA_CHECK_MS while it answers, every APP_REPLICA_RETRY_MS while it
 * does not, and sooner when a read's position lies between the cached replay position and what is
 * known to exist — at most one such check per APP_REPLICA_GAP_US, however many reads ask. Reads
 * never wait for a check: they read the cached values (atomics; no lock on the request path) and go
 * to the primary meanwhile. Lag is time, measured by the monitor: each new position it learns of
 * (the replica's received position, or a write of this server) is noted with the time it was first
 * seen; the lag is the age of the oldest noted position the replica has not replayed (0 when it has
 * replayed all), and a replica that does not stream from its primary counts as lagging by the time
 * it has not. So a replica paused, delayed (recovery_min_apply_delay) or cut off from its primary
 * is skipped once the bound is passed, and used again as soon as it is back within it.
 *
 * Handler threads open their replica connection lazily, on the first read routed to it (opening
 * fails → that read goes to the primary, and the thread tries again after APP_REPLICA_RETRY_MS).
 * /health stays about the primary.
 *
 * Threads: app_replica_start/stop on the main thread; everything else on any thread. */
#ifndef AGORA_APP_REPLICA_H
#define AGORA_APP_REPLICA_H
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"

struct app_replica;
struct api;

#define APP_REPLICA_CHECK_MS   100  /* periodic check while the replica answers */
#define APP_REPLICA_RETRY_MS   1000 /* while it does not; and a handler thread's pause after a failure */
#define APP_REPLICA_STALE_MS   1000 /* no successful check for this long: treated as down */
#define APP_REPLICA_GAP_US     2000 /* checks asked for by reads: at most one per 2 ms */
#define APP_REPLICA_MAX_LAG_MS 5000 /* default of --replica-max-lag */
#define APP_REPLICA_COOKIE     "agora_pos"
#define APP_REPLICA_HEADER     "Agora-Position"
#define APP_REPLICA_COOKIE_AGE 60 /* seconds */
#define APP_REPLICA_POS_MAX    18 /* "XXXXXXXX/XXXXXXXX" and a NUL */

/* Where a read went, and why (the metrics' counters). */
enum app_read {
    APP_READ_REPLICA,  /* the replica answered it */
    APP_READ_POSITION, /* the primary: the read's position was not replayed yet */
    APP_READ_DOWN,     /* the primary: the replica is down, refuses, is not a standby, or this thread cannot reach it */
    APP_READ_LAGGING,  /* the primary: the replica lags beyond the bound */
    APP_READ_FALLBACK, /* the primary, again: the replica failed, or answered 401/404 */
    APP_READ_N
};

/* Starts the monitor of the replica at url (a postgres:// or postgresql:// URL; anything else:
 * NULL with a message in err) with the lag bound max_lag_ms (> 0), and with primary_url (NULL:
 * none) a watcher of the primary whose flushed position counts as seen (see replica.c). The
 * replica need not be up: it is used once a check succeeds. */
struct app_replica *app_replica_start(const char *url, const char *primary_url, int64_t max_lag_ms, char *err,
                                      size_t errlen);
/* Stops the monitor and frees r (after every handler thread stopped). NULL is allowed. */
void app_replica_stop(struct app_replica *r);

/* Parses a position "X/Y" (each 1-8 hex digits, either case) from s[0, n). Returns 1 with *pos
 * set, or 0 when s is not one. */
int app_replica_parse(const char *s, size_t n, uint64_t *pos);
/* Writes pos as "X/Y" (upper-case hex, PostgreSQL's notation) into out. */
void app_replica_format(uint64_t pos, char out[APP_REPLICA_POS_MAX]);
/* The position a request carries: the larger of its Agora-Position header's and agora_pos
 * cookie's that parse; 0 when neither does. */
uint64_t app_replica_request_position(const struct http_head *h);

/* Where a read carrying position pos (0: none) goes now, from the cached state: APP_READ_REPLICA
 * or the reason it goes to the primary. May ask the monitor for a check (never waits). */
enum app_read app_replica_route(struct app_replica *r, uint64_t pos);
/* Notes a commit position written through this server (lag measurement, known positions). */
void app_replica_wrote(struct app_replica *r, uint64_t pos);

/* The router's part (router.c): runs the read request a with run, on the replica or the primary as
 * above, and counts where it went. a->app->replica must be set. Returns what run returned. */
unsigned app_replica_read(struct api *a, unsigned (*run)(struct api *a));
/* After a write request a: puts its position in the response (header and cookie) when it
 * succeeded and the store has one. */
void app_replica_after_write(struct api *a);

/* What /metrics shows. */
struct app_replica_status {
    int up;            /* reads may go to the replica now */
    int lagging;       /* it answers, but lags beyond the bound */
    int64_t lag_ms;    /* the lag as last measured */
    uint64_t replayed; /* its replay position as last seen */
    uint64_t checks;   /* checks made so far */
};
void app_replica_status(const struct app_replica *r, struct app_replica_status *out);

#endif
