/* policy.h — the balancing-policy interface (after h2o's balancer.h).
 *
 * A policy chooses one server for a request from an array of targets. It never touches a socket
 * and is unit-tested with plain arrays. The balancer keeps one policy instance per worker thread
 * per server-set generation: create() is called with the server set's targets (their count and
 * keys are fixed for the life of the instance; the balancer calls create() again whenever the set
 * changes). For each request the balancer refreshes the live fields of every target (weight,
 * inflight, latency) and calls pick().
 *
 * A target with weight 0 is not selectable (down, draining, or already tried for this request).
 * pick() returns the index of the chosen target, or -1 when none is selectable. `hash` is the
 * request's affinity hash (client address, header or cookie: lb_select_key in select.h), computed
 * only for a policy that declares needs_key (0 for the others), and `rnd` a fresh 64-bit random
 * number (policies must not keep their own global RNG state). */
#ifndef AGORA_LB_POLICY_H
#define AGORA_LB_POLICY_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct lb_target {
    const char *key;   /* stable identity, e.g. "127.0.0.1:8001" (hash ring points) */
    unsigned weight;   /* effective weight now; 0 = not selectable */
    unsigned inflight; /* requests in flight on this server, across all workers */
    double latency_us; /* peak-EWMA response latency in microseconds; 0 = no sample yet */
};

struct lb_policy_ops {
    const char *name;
    int needs_key; /* 1 if pick() uses `hash`: the balancer then computes the request's key */
    /* Returns the policy's per-instance state (may be NULL if it needs none; never fails
     * except on out-of-memory, which aborts). */
    void *(*create)(const struct lb_target *targets, size_t n);
    /* `targets` must have the n (same count, same keys, same order) given to create(); only the
     * live fields may differ. Stateful policies (round-robin) update self: one instance must not
     * be used by two threads at once. */
    int (*pick)(void *self, const struct lb_target *targets, size_t n, uint64_t hash, uint64_t rnd);
    void (*destroy)(void *self);
};

extern const struct lb_policy_ops lb_policy_least_conn;  /* least_conn.c */
extern const struct lb_policy_ops lb_policy_round_robin; /* round_robin.c: smooth weighted */
extern const struct lb_policy_ops lb_policy_random_two;  /* random_two.c: power of two choices */
extern const struct lb_policy_ops lb_policy_peak_ewma;   /* peak_ewma.c */
extern const struct lb_policy_ops lb_policy_hash;        /* hash.c: consistent hashing */

/* Looks a policy up by name ("least-conn", "round-robin", "random-two", "peak-ewma", "hash");
 * NULL if unknown. */
const struct lb_policy_ops *lb_policy_find(const char *name);

/* Peak-EWMA latency update (Finagle/Linkerd): if sample > *ewma the estimate jumps to the sample
 * (peak-sensitive); otherwise it decays towards it with weight exp(-dt/tau_us), where dt is the
 * time since the previous update (*stamp_us, updated; a clock stepping back counts as dt = 0). A
 * zero *ewma takes the sample as is, and so does tau_us <= 0. tau_us is the decay time constant:
 * 10 s (10e6) is Finagle's and Linkerd's default and what the balancer is expected to pass. The
 * caller serialises updates of one server's estimate (*stamp_us is plain memory); *ewma is written
 * with one relaxed atomic store, so other threads may read it without the lock (a relaxed atomic
 * load: the estimate is a hint, a value one update old is as good). */
void lb_ewma_update(_Atomic double *ewma, uint64_t *stamp_us, double sample_us, uint64_t now_us, double tau_us);

/* The draw of the power-of-two-choices policies (random-two, peak-ewma): with m selectable targets
 * (weight > 0, in index order), *a is number (rnd & 0xffffffff) % m and *b number
 * (rnd >> 32) % (m - 1) among the others, so every ordered pair is reached by exactly one rnd.
 * Returns m; *b is set only when m >= 2, *a only when m >= 1. */
size_t lb_draw_two(const struct lb_target *t, size_t n, uint64_t rnd, size_t *a, size_t *b);

/* 64-bit hash (FNV-1a then a 64-bit finaliser) used for affinity keys and ring points. */
uint64_t lb_hash64(const void *p, size_t n);

#endif
