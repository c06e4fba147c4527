/* random_two.c — `random-two`: the power of two choices (Mitzenmacher). Two distinct selectable
 * targets are drawn at random and the one with fewer requests in flight per unit of weight wins
 * (the first drawn on a tie); a lone selectable target is picked as is. Stateless.
 *
 * The draw is deterministic in rnd: with m selectable targets (in index order), the first is
 * number (rnd & 0xffffffff) % m and the second number (rnd >> 32) % (m - 1), counted among the
 * others. Every ordered pair is therefore reached by exactly one (lo, hi) with lo < m, hi < m - 1. */
#include "lb/policy.h"

static void *r2_create(const struct lb_target *targets, size_t n) { return NULL; }

static int r2_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    size_t a, b;
    size_t m = lb_draw_two(t, n, rnd, &a, &b);
    if (m <= 1)
        return m ? (int)a : -1;
    uint64_t la = (uint64_t)t[a].inflight * t[b].weight, lb = (uint64_t)t[b].inflight * t[a].weight;
    return (int)(lb < la ? b : a);
}

static void r2_destroy(void *self) {}

const struct lb_policy_ops lb_policy_random_two = {
    .name = "random-two", .create = r2_create, .pick = r2_pick, .destroy = r2_destroy};
