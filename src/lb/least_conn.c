/* least_conn.c — `least-conn`, the default policy: the selectable target with the fewest requests
 * in flight per unit of weight. Loads are compared as inflight_a * weight_b < inflight_b * weight_a
 * (64-bit, exact, no division). Stateless.
 *
 * Ties are broken by rnd, weighted by the tied targets' weights: with R = sum of their weights,
 * the tied target whose cumulative-weight interval contains rnd % R wins. Equal servers thus
 * share the load (rnd = 0, 1, 2 over three equal idle servers picks 0, 1, 2), and weights are
 * honoured even at low load, when every server is idle and all of them tie. */
#include "lb/policy.h"

/* Returns <0, 0 or >0 as a's load (inflight/weight) is below, equal to or above b's. */
static int cmp_load(const struct lb_target *a, const struct lb_target *b)
{
    uint64_t la = (uint64_t)a->inflight * b->weight, lb = (uint64_t)b->inflight * a->weight;
    return (la > lb) - (la < lb);
}

static void *lc_create(const struct lb_target *targets, size_t n) { return NULL; }

static int lc_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    const struct lb_target *best = NULL;
    uint64_t tied_weight = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].weight == 0)
            continue;
        int c = best ? cmp_load(&t[i], best) : -1;
        if (c < 0) {
            best = &t[i];
            tied_weight = t[i].weight;
        } else if (c == 0) {
            tied_weight += t[i].weight;
        }
    }
    if (!best)
        return -1;
    uint64_t r = rnd % tied_weight;
    for (size_t i = 0; i < n; i++) {
        if (t[i].weight == 0 || cmp_load(&t[i], best) != 0)
            continue;
        if (r < t[i].weight)
            return (int)i;
        r -= t[i].weight;
    }
    return -1; /* not reached: the tied targets' weights sum to tied_weight > r */
}

static void lc_destroy(void *self) {}

const struct lb_policy_ops lb_policy_least_conn = {
    .name = "least-conn", .create = lc_create, .pick = lc_pick, .destroy = lc_destroy};
