/* health.h — active health checks: every server checked concurrently, in the background.
 *
 * The checker runs on a loop of its own thread (the balancer's main thread) and never blocks
 * traffic: each round it sends "GET <path>" over a fresh connection to every server of the
 * current snapshot at once, each with its own timeout, through the HTTP client (http/client.h,
 * driven on the loop; only the response head is read: its status is the verdict). A server goes down after `fall`
 * consecutive failures and comes back after `rise` consecutive passes; the very first check of a
 * server decides its state at once (so a server that is down at start is out within one check).
 * The verdict is published in lb_server.healthy (atomic), read by the workers on every pick.
 * A check that cannot run because this process is short of something (a descriptor, buffers, a
 * local port: EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL) is no verdict: the server's state
 * and rise/fall counts are kept, its last-check text says "not checked: ...", and stderr gets a
 * message at most every 10 s.
 * A server marked down by the checks (after `fall` failures, or by its first check) has its
 * `downs` count increased before `healthy` is cleared, and the function set with
 * lb_health_on_down is called on the checker's thread: the balancer wakes its workers with it,
 * which then move the requests still in flight on that server where they may, and probe the
 * connections of the rest (proxy.c). Passive ejection does not do this (passive.h). */
#ifndef AGORA_LB_HEALTH_H
#define AGORA_LB_HEALTH_H
#include "core/loop.h"
#include "lb/config.h"
#include "lb/servers.h"

struct lb_health;

/* Starts checking on loop (first round immediately). Never fails. */
struct lb_health *lb_health_start(struct loop *loop, const struct lb_config *cfg, struct lb_registry *reg);
/* Runs a round now (e.g. after the server set changed); servers with a check in flight are
 * skipped. */
void lb_health_kick(struct lb_health *h);
/* Sets the function called (on the checker's thread) each time a check marks a server down;
 * fn may be NULL. */
void lb_health_on_down(struct lb_health *h, void (*fn)(void *ctx), void *ctx);
/* Applies a new verdict to a server (rise/fall logic); exposed for unit tests. Returns 1 if this
 * verdict marked the server down (its `downs` count was increased), else 0. */
int lb_health_apply(struct lb_server *s, int passed, unsigned rise, unsigned fall, const char *what);
/* Cancels checks in flight and frees everything. */
void lb_health_stop(struct lb_health *h);

#endif
