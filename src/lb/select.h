/* select.h — server selection: which server of the set gets a request (or its retry).
 *
 * A pure function of the server set's live state (admin state, health verdict, weight, time since
 * it came up, in-flight count, latency), the configuration (panic threshold, slow-start window,
 * affinity key), the servers already tried for the request and a random number: no socket, no
 * loop, no worker. It fills the policy's target array (policy.h) and asks the policy, so it is
 * unit-tested with servers made by lb_server_new and a policy that records what it was given.
 *
 * The rules, applied to each server of the set in order:
 *  - usable: active (not draining or parked) and healthy (up after active checks, not ejected by
 *    passive health): lb_server_usable(). Panic (as in Envoy): when fewer than panic_percent of
 *    the active servers are healthy, but at least one is, every active server is usable, so that
 *    a wrong health verdict cannot overload the few that remain. None healthy: nothing is usable.
 *  - tried: a server already tried for this request (struct lb_tried) is not usable again.
 *  - weight: configured weight × LB_WEIGHT_SCALE; in slow start (up for less than slow_start_ms)
 *    a share growing linearly with the time up, never below a tenth (and never 0).
 *  - a server that is not usable gets weight 0, which no policy selects.
 * A policy that declares needs_key (hash) gets the request's affinity key (lb_select_key);
 * the others get 0.
 *
 * One struct lb_selector per worker thread and server-set generation: it holds the policy
 * instance and the target array for that set (same count and order as set->servers). */
#ifndef AGORA_LB_SELECT_H
#define AGORA_LB_SELECT_H
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"
#include "lb/config.h"
#include "lb/policy.h"
#include "lb/servers.h"

#define LB_MAX_TRIES    9   /* 1 + the most retries the configuration allows */
#define LB_WEIGHT_SCALE 100 /* target weight per unit of configured weight (room for slow start) */

/* The servers a request has been sent to, in order (not referenced: the exchange holds a
 * reference on the current one, and the others are only compared by address). */
struct lb_tried {
    int n;
    struct lb_server *s[LB_MAX_TRIES];
};

static inline void lb_tried_add(struct lb_tried *t, struct lb_server *s) { t->s[t->n++] = s; }

static inline int lb_tried_has(const struct lb_tried *t, const struct lb_server *s)
{
    for (int k = 0; k < t->n; k++)
        if (t->s[k] == s)
            return 1;
    return 0;
}

struct lb_selector {
    const struct lb_policy_ops *ops;
    void *policy;              /* ops' instance for this set */
    struct lb_target *targets; /* parallel to the set's servers */
    size_t n;
};

/* Builds the selector for set: targets keyed by the servers' keys, weighted by their configured
 * weights, and a policy instance created over them. Aborts on out-of-memory. */
void lb_selector_init(struct lb_selector *sel, const struct lb_policy_ops *ops, const struct lb_set *set);
/* Frees the policy instance and the targets; sel may be initialised again. */
void lb_selector_destroy(struct lb_selector *sel);

/* The request being placed: what the affinity key may be taken from, and where it was tried. */
struct lb_select_req {
    const struct http_head *head;
    const char *client_ip;
    const struct lb_tried *tried;
    int no_panic; /* usable servers only, even in panic (a request moved off a server marked down) */
};

/* Chooses a server of set (the one sel was built for) for req at loop time now_ms, with the
 * policy's random number rnd. Returns its index in set->servers, or -1 when no server is usable
 * (the policy is then not asked). Updates sel's targets (and the policy's own state). */
int lb_select(struct lb_selector *sel, const struct lb_set *set, const struct lb_config *cfg,
              const struct lb_select_req *req, uint64_t now_ms, uint64_t rnd);

/* The affinity hash of a request under --hash-key spec: "header:NAME" hashes that header's value,
 * "cookie:NAME" that cookie's value; when the header or cookie is absent, and for "client", the
 * client's address. */
uint64_t lb_select_key(const char *spec, const struct http_head *h, const char *client_ip);

/* The workers' random numbers for selection (xorshift64*; *s never 0). */
static inline uint64_t lb_rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
