/* test_policy.c — unit tests for the balancing policies (src/lb/policy.h and one file per policy).
 * Plain arrays, no sockets; every random draw is enumerated so outcomes are exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lb/policy.h"

#define NPOL 5
static const struct lb_policy_ops *const all[NPOL] = {
    &lb_policy_least_conn, &lb_policy_round_robin, &lb_policy_random_two, &lb_policy_peak_ewma, &lb_policy_hash,
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Deterministic test RNG (splitmix64). */
static uint64_t next_rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The rnd that makes random-two / peak-ewma draw the lo-th then the hi-th remaining target. */
static uint64_t pair_rnd(uint64_t lo, uint64_t hi) { return hi << 32 | lo; }

/* cmocka 1.1 only compares floats; this compares doubles to within eps. */
#define assert_near(a, b, eps) assert_near_at((a), (b), (eps), __LINE__)
static void assert_near_at(double a, double b, double eps, int line)
{
    if (!(fabs(a - b) <= eps))
        fail_msg("line %d: %.17g != %.17g (tolerance %g)", line, a, b, eps);
}

/* Picks once with a fresh instance. */
static int pick_once(const struct lb_policy_ops *ops, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    void *self = ops->create(t, n);
    int r = ops->pick(self, t, n, hash, rnd);
    ops->destroy(self);
    return r;
}

static void test_find(void **state)
{
    for (size_t i = 0; i < NPOL; i++)
        assert_ptr_equal(lb_policy_find(all[i]->name), all[i]);
    assert_ptr_equal(lb_policy_find("least-conn"), &lb_policy_least_conn);
    assert_ptr_equal(lb_policy_find("round-robin"), &lb_policy_round_robin);
    assert_ptr_equal(lb_policy_find("random-two"), &lb_policy_random_two);
    assert_ptr_equal(lb_policy_find("peak-ewma"), &lb_policy_peak_ewma);
    assert_ptr_equal(lb_policy_find("hash"), &lb_policy_hash);
    assert_null(lb_policy_find("roundrobin"));
    assert_null(lb_policy_find(""));
    assert_null(lb_policy_find(NULL));
}

static void test_none_selectable(void **state)
{
    struct lb_target t[3] = {{"a:1", 0, 0, 0}, {"b:1", 0, 3, 100}, {"c:1", 0, 1, 0}};
    uint64_t s = 1;
    for (size_t p = 0; p < NPOL; p++) {
        void *empty = all[p]->create(NULL, 0);
        void *self = all[p]->create(t, N(t));
        for (int k = 0; k < 50; k++) {
            uint64_t h = next_rnd(&s), r = next_rnd(&s);
            assert_int_equal(all[p]->pick(empty, NULL, 0, h, r), -1);
            assert_int_equal(all[p]->pick(self, t, N(t), h, r), -1);
        }
        all[p]->destroy(empty);
        all[p]->destroy(self);
    }
}

static void test_single_target(void **state)
{
    struct lb_target one[1] = {{"a:1", 1, 7, 2500}};
    uint64_t s = 2;
    for (size_t p = 0; p < NPOL; p++) {
        void *self = all[p]->create(one, 1);
        for (int k = 0; k < 50; k++)
            assert_int_equal(all[p]->pick(self, one, 1, next_rnd(&s), next_rnd(&s)), 0);
        all[p]->destroy(self);
    }
}

/* Weight-0 targets are never picked, even when they look idle and fast. */
static void test_skips_weight_zero(void **state)
{
    struct lb_target t[5] = {
        {"a:1", 0, 0, 10}, {"b:1", 1, 9, 9000}, {"c:1", 0, 0, 10}, {"d:1", 2, 20, 8000}, {"e:1", 0, 0, 10},
    };
    uint64_t s = 3;
    for (size_t p = 0; p < NPOL; p++) {
        void *self = all[p]->create(t, N(t));
        for (int k = 0; k < 2000; k++) {
            int i = all[p]->pick(self, t, N(t), next_rnd(&s), next_rnd(&s));
            assert_true(i == 1 || i == 3);
        }
        all[p]->destroy(self);
    }
}

static void test_least_conn_least_loaded(void **state)
{
    struct lb_target t[3] = {{"a:1", 1, 5, 0}, {"b:1", 1, 2, 0}, {"c:1", 1, 7, 0}};
    for (uint64_t r = 0; r < 100; r++)
        assert_int_equal(pick_once(&lb_policy_least_conn, t, 3, 0, r), 1);
    /* 5/3 < 2/1: weight counts */
    struct lb_target w[2] = {{"a:1", 3, 5, 0}, {"b:1", 1, 2, 0}};
    for (uint64_t r = 0; r < 100; r++)
        assert_int_equal(pick_once(&lb_policy_least_conn, w, 2, 0, r), 0);
    /* no overflow with huge counts: 4e9/4e9 == 1 < 2/1 */
    struct lb_target big[2] = {{"a:1", 4000000000u, 4000000000u, 0}, {"b:1", 1, 2, 0}};
    assert_int_equal(pick_once(&lb_policy_least_conn, big, 2, 0, 0), 0);
}

/* Weight 2 with 2 in flight ties weight 1 with 1 in flight; the tie is split by weight. */
static void test_least_conn_weighted_tie(void **state)
{
    struct lb_target t[3] = {{"a:1", 2, 2, 0}, {"b:1", 1, 1, 0}, {"c:1", 1, 2, 0}};
    const int want[3] = {0, 0, 1};
    for (uint64_t r = 0; r < 30; r++)
        assert_int_equal(pick_once(&lb_policy_least_conn, t, 3, 0, r), want[r % 3]);
    /* idle servers: weight 3 gets three picks in four */
    struct lb_target idle[2] = {{"a:1", 1, 0, 0}, {"b:1", 3, 0, 0}};
    int count[2] = {0};
    for (uint64_t r = 0; r < 400; r++)
        count[pick_once(&lb_policy_least_conn, idle, 2, 0, r)]++;
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 300);
}

static void test_least_conn_tie_spread(void **state)
{
    struct lb_target t[4] = {{"a:1", 1, 0, 0}, {"b:1", 1, 4, 0}, {"c:1", 1, 0, 0}, {"d:1", 1, 0, 0}};
    const int want[3] = {0, 2, 3};
    int count[4] = {0};
    for (uint64_t r = 0; r < 300; r++) {
        int i = pick_once(&lb_policy_least_conn, t, 4, 0, r);
        assert_int_equal(i, want[r % 3]);
        count[i]++;
    }
    assert_int_equal(count[0], 100);
    assert_int_equal(count[1], 0);
    assert_int_equal(count[2], 100);
    assert_int_equal(count[3], 100);
}

/* nginx's smooth weighted round robin: {5, 1, 1} gives a a b a c a a. */
static void test_round_robin_sequence(void **state)
{
    struct lb_target t[3] = {{"a:1", 5, 0, 0}, {"b:1", 1, 0, 0}, {"c:1", 1, 0, 0}};
    const int want[7] = {0, 0, 1, 0, 2, 0, 0};
    void *self = lb_policy_round_robin.create(t, 3);
    for (int k = 0; k < 70; k++)
        assert_int_equal(lb_policy_round_robin.pick(self, t, 3, 0, (uint64_t)k * 7919), want[k % 7]);
    lb_policy_round_robin.destroy(self);

    int count[3] = {0};
    self = lb_policy_round_robin.create(t, 3);
    for (int k = 0; k < 700; k++)
        count[lb_policy_round_robin.pick(self, t, 3, 0, 0)]++;
    lb_policy_round_robin.destroy(self);
    assert_int_equal(count[0], 500);
    assert_int_equal(count[1], 100);
    assert_int_equal(count[2], 100);
}

static void test_round_robin_skip(void **state)
{
    struct lb_target t[3] = {{"a:1", 1, 0, 0}, {"b:1", 0, 0, 0}, {"c:1", 1, 0, 0}};
    void *self = lb_policy_round_robin.create(t, 3);
    for (int k = 0; k < 10; k++)
        assert_int_equal(lb_policy_round_robin.pick(self, t, 3, 0, 0), k % 2 ? 2 : 0);
    lb_policy_round_robin.destroy(self);
}

/* Load of t[i] is lower than t[j]'s: inflight_i/weight_i < inflight_j/weight_j. */
static int less_loaded(const struct lb_target *a, const struct lb_target *b)
{
    return (uint64_t)a->inflight * b->weight < (uint64_t)b->inflight * a->weight;
}

/* Over every draw of the pair, the pick is the less loaded of the two (the first drawn on a tie). */
static void test_random_two_pair(void **state)
{
    uint64_t s = 4;
    for (int round = 0; round < 50; round++) {
        struct lb_target t[6];
        for (size_t i = 0; i < 6; i++)
            t[i] = (struct lb_target){"x", 1 + (unsigned)(next_rnd(&s) % 3), (unsigned)(next_rnd(&s) % 8), 0};
        for (uint64_t lo = 0; lo < 6; lo++)
            for (uint64_t hi = 0; hi < 5; hi++) {
                size_t a = lo, b = hi < lo ? hi : hi + 1;
                size_t want = less_loaded(&t[b], &t[a]) ? b : a;
                assert_int_equal(pick_once(&lb_policy_random_two, t, 6, 0, pair_rnd(lo, hi)), (int)want);
            }
    }
}

static void test_random_two_fractions(void **state)
{
    /* {0, 10, 10}: index 0 is in 4 of the 6 ordered pairs and wins each of them */
    struct lb_target t[3] = {{"a:1", 1, 0, 0}, {"b:1", 1, 10, 0}, {"c:1", 1, 10, 0}};
    int count[3] = {0};
    for (uint64_t lo = 0; lo < 3; lo++)
        for (uint64_t hi = 0; hi < 2; hi++)
            count[pick_once(&lb_policy_random_two, t, 3, 0, pair_rnd(lo, hi))]++;
    assert_int_equal(count[0], 4);
    assert_int_equal(count[1], 1);
    assert_int_equal(count[2], 1);

    /* distinct loads: the k-th best wins 2*(3-k) of the 12 ordered pairs; the worst never wins */
    struct lb_target d[4] = {{"a:1", 1, 1, 0}, {"b:1", 1, 5, 0}, {"c:1", 1, 3, 0}, {"d:1", 1, 0, 0}};
    int dc[4] = {0};
    for (uint64_t lo = 0; lo < 4; lo++)
        for (uint64_t hi = 0; hi < 3; hi++)
            dc[pick_once(&lb_policy_random_two, d, 4, 0, pair_rnd(lo, hi))]++;
    assert_int_equal(dc[3], 6);
    assert_int_equal(dc[0], 4);
    assert_int_equal(dc[2], 2);
    assert_int_equal(dc[1], 0);

    /* weights: 2 in flight on weight 2 beats 2 in flight on weight 1 */
    struct lb_target w[2] = {{"a:1", 2, 2, 0}, {"b:1", 1, 2, 0}};
    for (uint64_t lo = 0; lo < 2; lo++)
        assert_int_equal(pick_once(&lb_policy_random_two, w, 2, 0, pair_rnd(lo, 0)), 0);
}

/* Every ordered pair of t (all selectable) picks `want` when `want` is in it. */
static void assert_pair_winner(const struct lb_target *t, size_t n, int want)
{
    for (uint64_t lo = 0; lo < n; lo++)
        for (uint64_t hi = 0; hi + 1 < n; hi++) {
            size_t a = lo, b = hi < lo ? hi : hi + 1;
            int got = pick_once(&lb_policy_peak_ewma, t, n, 0, pair_rnd(lo, hi));
            if ((int)a == want || (int)b == want)
                assert_int_equal(got, want);
        }
}

static void test_peak_ewma_cost(void **state)
{
    struct lb_target fast[2] = {{"a:1", 1, 0, 1000}, {"b:1", 1, 0, 5000}};
    assert_pair_winner(fast, 2, 0);
    /* 1000us * 10 > 5000us * 1 */
    struct lb_target busy[2] = {{"a:1", 1, 9, 1000}, {"b:1", 1, 0, 5000}};
    assert_pair_winner(busy, 2, 1);
    /* 3000/2 > 1000/1 */
    struct lb_target w[2] = {{"a:1", 2, 0, 3000}, {"b:1", 1, 0, 1000}};
    assert_pair_winner(w, 2, 1);
    /* lowest latency * (inflight + 1) among three */
    struct lb_target three[3] = {{"a:1", 1, 1, 2000}, {"b:1", 1, 3, 900}, {"c:1", 1, 0, 3000}};
    assert_pair_winner(three, 3, 2); /* costs 4000, 3600, 3000 */
    /* unsampled costs the smallest known latency: idle, it is probed ... */
    struct lb_target probe[2] = {{"a:1", 1, 0, 0}, {"b:1", 1, 1, 2000}};
    assert_pair_winner(probe, 2, 0);
    /* ... but not without bound: 2000 * 4 > 2000 * 1 */
    struct lb_target bound[2] = {{"a:1", 1, 3, 0}, {"b:1", 1, 0, 2000}};
    assert_pair_winner(bound, 2, 1);
    /* a weight-0 target's sample still counts as the smallest known latency: 500*2 < 2000*1 */
    struct lb_target known[3] = {{"a:1", 1, 1, 0}, {"b:1", 1, 0, 2000}, {"c:1", 0, 0, 500}};
    for (uint64_t lo = 0; lo < 2; lo++)
        assert_int_equal(pick_once(&lb_policy_peak_ewma, known, 3, 0, pair_rnd(lo, 0)), 0);
    /* no samples anywhere: plain inflight */
    struct lb_target none[2] = {{"a:1", 1, 2, 0}, {"b:1", 1, 1, 0}};
    assert_pair_winner(none, 2, 1);
}

static void test_ewma_update(void **state)
{
    const double tau = 10e6; /* 10 s */
    _Atomic double e = 0;
    uint64_t stamp = 0;
    lb_ewma_update(&e, &stamp, 500, 1000, tau); /* first sample taken as is */
    assert_near(e, 500, 1e-9);
    assert_int_equal(stamp, 1000);
    lb_ewma_update(&e, &stamp, 2000, 2000, tau); /* peak: jumps */
    assert_near(e, 2000, 1e-9);
    assert_int_equal(stamp, 2000);
    lb_ewma_update(&e, &stamp, 1000, 2000 + 10000000, tau); /* dt = tau: 2000/e + 1000(1 - 1/e) */
    assert_near(e, 1367.8794411714425, 1e-9);
    assert_int_equal(stamp, 10002000);
    lb_ewma_update(&e, &stamp, 100, 10002000 + 5000000, tau); /* dt = tau/2 */
    assert_near(e, 869.0077538897998, 1e-9);
    double before = e;
    lb_ewma_update(&e, &stamp, 100, 15002000, tau); /* dt = 0: no decay */
    assert_near(e, before, 1e-9);
    lb_ewma_update(&e, &stamp, 100, 1000, tau); /* clock stepped back: dt counts as 0 */
    assert_near(e, before, 1e-9);
    assert_int_equal(stamp, 1000);
    lb_ewma_update(&e, &stamp, 1e12, 1000, tau); /* peak again */
    assert_near(e, 1e12, 1e-9);
}

static void test_hash64(void **state)
{
    /* FNV-1a 64 then MurmurHash3 fmix64; values computed independently */
    assert_true(lb_hash64("", 0) == 0xefd01f60ba992926ULL);
    assert_true(lb_hash64("a", 1) == 0x82a2a958a9bece5bULL);
    assert_true(lb_hash64("127.0.0.1:8001", 14) == 0x32d0deee18eaa970ULL);
    assert_true(lb_hash64("127.0.0.1:8001#0", 16) == 0x2a5ac277e0ff3f5aULL);
}

#define NKEYS 30000

static uint64_t client_hash(int k)
{
    char s[32];
    int len = snprintf(s, sizeof(s), "client-%d", k);
    return lb_hash64(s, (size_t)len);
}

/* Maps NKEYS client hashes with one instance built from t. */
static void map_keys(const struct lb_target *t, size_t n, int *out)
{
    void *self = lb_policy_hash.create(t, n);
    for (int k = 0; k < NKEYS; k++)
        out[k] = lb_policy_hash.pick(self, t, n, client_hash(k), (uint64_t)k);
    lb_policy_hash.destroy(self);
}

static int before[NKEYS], after[NKEYS];

static void test_hash_stable_and_even(void **state)
{
    struct lb_target t[3] = {{"10.0.0.1:80", 1, 0, 0}, {"10.0.0.2:80", 1, 50, 0}, {"10.0.0.3:80", 1, 0, 0}};
    map_keys(t, 3, before);
    map_keys(t, 3, after);
    int count[3] = {0};
    for (int k = 0; k < NKEYS; k++) {
        assert_int_equal(before[k], after[k]); /* same hash, same target, across instances */
        count[before[k]]++;
    }
    for (int i = 0; i < 3; i++) {
        assert_in_range(count[i], 9000, 11000);
    }
    /* weights divided by their gcd: {2, 2, 2} builds the same ring as {1, 1, 1} */
    for (int i = 0; i < 3; i++)
        t[i].weight = 2;
    map_keys(t, 3, after);
    assert_memory_equal(before, after, sizeof(before));
    /* weight 2 owns about half */
    t[1].weight = 1, t[2].weight = 1;
    map_keys(t, 3, after);
    int heavy = 0;
    for (int k = 0; k < NKEYS; k++)
        heavy += after[k] == 0;
    assert_in_range(heavy, 13500, 16500);
}

static void test_hash_weight_zero_moves_only_its_keys(void **state)
{
    struct lb_target t[3] = {{"10.0.0.1:80", 1, 0, 0}, {"10.0.0.2:80", 1, 0, 0}, {"10.0.0.3:80", 1, 0, 0}};
    void *self = lb_policy_hash.create(t, 3);
    int owned = 0, moved = 0;
    for (int k = 0; k < NKEYS; k++)
        before[k] = lb_policy_hash.pick(self, t, 3, client_hash(k), 0);
    t[1].weight = 0;
    for (int k = 0; k < NKEYS; k++) {
        after[k] = lb_policy_hash.pick(self, t, 3, client_hash(k), 0);
        assert_int_not_equal(after[k], 1);
        if (before[k] == 1)
            owned++;
        else
            assert_int_equal(after[k], before[k]);
        moved += after[k] != before[k];
    }
    assert_int_equal(moved, owned);
    assert_true(owned > 0);
    /* back up: the same instance maps everything as before */
    t[1].weight = 1;
    for (int k = 0; k < NKEYS; k++)
        assert_int_equal(lb_policy_hash.pick(self, t, 3, client_hash(k), 0), before[k]);
    lb_policy_hash.destroy(self);
}

static void test_hash_removal_remaps_about_one_nth(void **state)
{
    struct lb_target t[3] = {{"10.0.0.1:80", 1, 0, 0}, {"10.0.0.2:80", 1, 0, 0}, {"10.0.0.3:80", 1, 0, 0}};
    struct lb_target rest[2] = {t[0], t[2]};
    map_keys(t, 3, before);
    map_keys(rest, 2, after);
    int moved = 0;
    for (int k = 0; k < NKEYS; k++) {
        const char *was = t[before[k]].key, *now = rest[after[k]].key;
        if (before[k] != 1)
            assert_string_equal(was, now); /* keys of the remaining targets stay put */
        moved += strcmp(was, now) != 0;
    }
    assert_true(moved < NKEYS * 45 / 100);
    assert_true(moved > 0);
}

/* A target that was down (weight 0) when the ring was built still owns its share when it is up. */
static void test_hash_down_at_create(void **state)
{
    struct lb_target t[3] = {{"10.0.0.1:80", 1, 0, 0}, {"10.0.0.2:80", 0, 0, 0}, {"10.0.0.3:80", 1, 0, 0}};
    void *self = lb_policy_hash.create(t, 3);
    t[1].weight = 1;
    for (int k = 0; k < NKEYS; k++)
        after[k] = lb_policy_hash.pick(self, t, 3, client_hash(k), 0);
    lb_policy_hash.destroy(self);
    map_keys(t, 3, before);
    assert_memory_equal(before, after, sizeof(before));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_none_selectable),
        cmocka_unit_test(test_single_target),
        cmocka_unit_test(test_skips_weight_zero),
        cmocka_unit_test(test_least_conn_least_loaded),
        cmocka_unit_test(test_least_conn_weighted_tie),
        cmocka_unit_test(test_least_conn_tie_spread),
        cmocka_unit_test(test_round_robin_sequence),
        cmocka_unit_test(test_round_robin_skip),
        cmocka_unit_test(test_random_two_pair),
        cmocka_unit_test(test_random_two_fractions),
        cmocka_unit_test(test_peak_ewma_cost),
        cmocka_unit_test(test_ewma_update),
        cmocka_unit_test(test_hash64),
        cmocka_unit_test(test_hash_stable_and_even),
        cmocka_unit_test(test_hash_weight_zero_moves_only_its_keys),
        cmocka_unit_test(test_hash_removal_remaps_about_one_nth),
        cmocka_unit_test(test_hash_down_at_create),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
