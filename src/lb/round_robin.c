/* round_robin.c — `round-robin`: nginx's smooth weighted round robin
 * (ngx_http_upstream_get_peer). Each pick adds every selectable target's weight to its running
 * `current`, chooses the largest `current` (the first one on ties) and subtracts the total of the
 * selectable weights from it. Weights {5, 1, 1} give a a b a c a a, repeating: each target gets
 * exactly its share within every cycle of sum(weights) picks, and heavy targets are interleaved
 * rather than picked in bursts. Weight-0 targets are skipped and their `current` left untouched.
 * The state is one counter per target; rnd and hash are unused, so the sequence is deterministic. */
#include "lb/policy.h"

#include <assert.h>
#include <stdlib.h>

#include "core/alloc.h"

struct rr {
    size_t n;
    int64_t current[]; /* n running counters */
};

static void *rr_create(const struct lb_target *targets, size_t n)
{
    struct rr *rr = alloc_calloc(1, sizeof(*rr) + n * sizeof(rr->current[0]));
    rr->n = n;
    return rr;
}

static int rr_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    struct rr *rr = self;
    assert(n == rr->n); /* the balancer creates a new instance whenever the set changes */
    int64_t total = 0;
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        if (t[i].weight == 0)
            continue;
        rr->current[i] += t[i].weight;
        total += t[i].weight;
        if (best < 0 || rr->current[i] > rr->current[best])
            best = (int)i;
    }
    if (best >= 0)
        rr->current[best] -= total;
    return best;
}

static void rr_destroy(void *self) { free(self); }

const struct lb_policy_ops lb_policy_round_robin = {
    .name = "round-robin", .create = rr_create, .pick = rr_pick, .destroy = rr_destroy};
