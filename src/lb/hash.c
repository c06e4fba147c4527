/* hash.c — `hash`: consistent hashing on a ring (ketama / nginx `hash ... consistent`), and
 * lb_hash64.
 *
 * create() places POINTS_PER_WEIGHT points per unit of weight for every target on a 64-bit ring;
 * point i of a target is lb_hash64("<key>#<i>"). pick() takes the first point at or after the
 * request's hash (wrapping round) and walks forward past points whose target now has weight 0.
 * Consequences: the same hash always reaches the same target while the set is unchanged; when a
 * target becomes unselectable only the hashes it owned move (to the next targets on the ring);
 * when a target leaves the set (create() with it removed) only its hashes move, about 1/n of them,
 * because the others' points do not depend on it.
 *
 * Point counts come from the weights passed to create(), divided by their greatest common divisor
 * (so {2, 2, 2} builds the same ring as {1, 1, 1}) and capped at MAX_WEIGHT units. A target whose
 * weight is 0 at create() time (down or draining when the set was built) still gets one unit, so
 * it owns its share again as soon as it comes back up without the ring being rebuilt. Every
 * target must have a non-NULL key; keys should be distinct (of two equal keys, the lower index
 * owns all the shared points while it is selectable). */
#include "lb/policy.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define POINTS_PER_WEIGHT 160
#define MAX_WEIGHT        256

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME  0x100000001b3ULL

struct point {
    uint64_t hash;
    size_t target;
};

struct ring {
    size_t n; /* targets the ring was built for */
    size_t npoints;
    struct point points[]; /* sorted by hash, then by target index */
};

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* MurmurHash3's fmix64: spreads FNV's weak high bits over the whole word. */
static uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t lb_hash64(const void *p, size_t n) { return fmix64(fnv1a(FNV_OFFSET, p, n)); }

static int cmp_point(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->target > y->target) - (x->target < y->target);
}

static unsigned gcd(unsigned a, unsigned b)
{
    while (b) {
        unsigned r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Ring units for weight w once divided by g (the weights' gcd, 0 if all are 0). */
static size_t units(unsigned w, unsigned g)
{
    if (w == 0 || g == 0)
        return 1;
    return w / g < MAX_WEIGHT ? w / g : MAX_WEIGHT;
}

static void *hash_create(const struct lb_target *t, size_t n)
{
    unsigned g = 0;
    size_t npoints = 0;
    for (size_t i = 0; i < n; i++)
        g = gcd(g, t[i].weight);
    for (size_t i = 0; i < n; i++)
        npoints += units(t[i].weight, g) * POINTS_PER_WEIGHT;
    struct ring *r = alloc_malloc(sizeof(*r) + npoints * sizeof(r->points[0]));
    r->n = n;
    r->npoints = npoints;
    struct point *pt = r->points;
    for (size_t i = 0; i < n; i++) {
        /* lb_hash64("<key>#<j>"), with the key's FNV state computed once */
        uint64_t base = fnv1a(FNV_OFFSET, t[i].key, strlen(t[i].key));
        size_t count = units(t[i].weight, g) * POINTS_PER_WEIGHT;
        for (size_t j = 0; j < count; j++) {
            char suffix[24];
            size_t len = (size_t)snprintf(suffix, sizeof(suffix), "#%zu", j);
            pt->hash = fmix64(fnv1a(base, suffix, len));
            pt->target = i;
            pt++;
        }
    }
    qsort(r->points, npoints, sizeof(r->points[0]), cmp_point);
    return r;
}

static int hash_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    const struct ring *r = self;
    assert(n == r->n); /* the balancer creates a new instance whenever the set changes */
    size_t selectable = 0;
    for (size_t i = 0; i < n; i++)
        selectable += t[i].weight != 0;
    if (selectable == 0)
        return -1;
    size_t lo = 0, hi = r->npoints; /* first point with point.hash >= hash */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < r->npoints; k++) {
        const struct point *p = &r->points[(lo + k) % r->npoints];
        if (t[p->target].weight != 0)
            return (int)p->target;
    }
    return -1; /* not reached: every target has at least one point */
}

static void hash_destroy(void *self) { free(self); }

const struct lb_policy_ops lb_policy_hash = {
    .name = "hash", .needs_key = 1, .create = hash_create, .pick = hash_pick, .destroy = hash_destroy};
