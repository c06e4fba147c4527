/* peak_ewma.c — `peak-ewma` (Finagle's / Linkerd's peak-EWMA balancer): the power of two choices
 * on cost = latency_us * (inflight + 1) / weight, so that a server is charged both for how slowly
 * it has been answering and for the work already queued on it. Stateless; the latency estimate is
 * kept by the balancer per server with lb_ewma_update() below. The balancer feeds it per-request
 * latency: an observed latency divided by the number of requests that were in flight on the server
 * when the request was sent (itself included). Raw latency already contains the wait behind those
 * requests, and multiplying it by (inflight + 1) again would count the queue twice — with
 * one-at-a-time backends that lets about three requests pile up on a slow server instead of one.
 *
 * A target with no sample yet (latency_us == 0) is costed at the smallest latency sampled on any
 * target, or at 1 ms if no target has one: a new server looks as good as the best known one, so it
 * is probed promptly, but its cost still grows with its inflight count, so it cannot swallow every
 * request before its first response tells us how fast it really is.
 *
 * The pair is drawn from rnd exactly as in random_two.c: the first of m selectable targets is
 * number (rnd & 0xffffffff) % m, the second number (rnd >> 32) % (m - 1) among the others; the
 * first drawn wins a tie. */
#include "lb/policy.h"

#include <math.h>

#define UNSAMPLED_DEFAULT_US 1000.0

static double cost(const struct lb_target *t, double unsampled_us)
{
    double lat = t->latency_us > 0 ? t->latency_us : unsampled_us;
    return lat * ((double)t->inflight + 1.0) / (double)t->weight;
}

static void *pe_create(const struct lb_target *targets, size_t n) { return NULL; }

static int pe_pick(void *self, const struct lb_target *t, size_t n, uint64_t hash, uint64_t rnd)
{
    size_t a, b;
    size_t m = lb_draw_two(t, n, rnd, &a, &b);
    if (m <= 1)
        return m ? (int)a : -1;
    double min_lat = 0;
    for (size_t i = 0; i < n; i++)
        if (t[i].latency_us > 0 && (min_lat == 0 || t[i].latency_us < min_lat))
            min_lat = t[i].latency_us;
    double unsampled = min_lat > 0 ? min_lat : UNSAMPLED_DEFAULT_US;
    return (int)(cost(&t[b], unsampled) < cost(&t[a], unsampled) ? b : a);
}

static void pe_destroy(void *self) {}

const struct lb_policy_ops lb_policy_peak_ewma = {
    .name = "peak-ewma", .create = pe_create, .pick = pe_pick, .destroy = pe_destroy};

void lb_ewma_update(_Atomic double *ewma, uint64_t *stamp_us, double sample_us, uint64_t now_us, double tau_us)
{
    uint64_t dt = now_us > *stamp_us ? now_us - *stamp_us : 0; /* a clock step back counts as 0 */
    *stamp_us = now_us;
    /* Relaxed: updates are serialised by the caller; readers on other threads take a hint. */
    double old = atomic_load_explicit(ewma, memory_order_relaxed);
    if (old <= 0 || sample_us > old || tau_us <= 0) {
        atomic_store_explicit(ewma, sample_us, memory_order_relaxed);
        return;
    }
    double w = exp(-(double)dt / tau_us);
    atomic_store_explicit(ewma, old * w + sample_us * (1.0 - w), memory_order_relaxed);
}
