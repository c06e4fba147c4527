/* passive.h — passive health: what the proxy learns about a server from its own traffic, and the
 * retry budget.
 *
 * Failures: a connect failure, a reset or a response timeout ejects the server at once
 * (lb_server_eject: base·2^(k-1) ms, growing with consecutive ejections), and so does a streak of
 * eject_5xx consecutive 5xx responses (a 503 with Retry-After, a server shedding load on purpose,
 * neither counts nor ends a streak: relay.c leaves it out); never so many that more than max_eject_percent of the
 * active servers would be out; nothing when --passive-health is off. (The caller does not report
 * a failure on a reused pooled connection before any response byte: that is most likely the
 * backend closing an idle connection as it was written to, no verdict on the server.)
 * Successes: every completed response's latency goes into the server's histogram and its
 * peak-EWMA estimate (per request: divided by the requests queued with it, see peak_ewma.c).
 *
 * The retry budget (Finagle's RetryBudget, Linkerd's retryBudget) belongs to one worker: each
 * request earns retry_budget_percent/100 of a retry (at most 100 saved; 10 to start with), and a
 * retry after bytes reached a backend spends one, so such retries stay a bounded share of the
 * traffic and cannot multiply an outage. Retries before any byte was sent cost nothing. */
#ifndef AGORA_LB_PASSIVE_H
#define AGORA_LB_PASSIVE_H
#include <stdint.h>

#include "lb/config.h"
#include "lb/servers.h"

/* LB_FAIL_DOWN (the active checks marked the server down while the request waited on it) and
 * LB_FAIL_TRY_TIMEOUT (--try-timeout passed without a response head) end a try for the proxy;
 * neither ejects here (the proxy reports a try timeout with lb_passive_5xx, as one 5xx). */
enum lb_fail { LB_FAIL_CONNECT, LB_FAIL_IO, LB_FAIL_TIMEOUT, LB_FAIL_5XX, LB_FAIL_DOWN, LB_FAIL_TRY_TIMEOUT };

/* Reports a failure of kind on s, a server of set (the worker's snapshot): ejects s if it is
 * healthy, passive health is on and the max_eject_percent cap allows. */
void lb_passive_fail(const struct lb_set *set, struct lb_server *s, const struct lb_config *cfg, enum lb_fail kind);

/* Counts a 5xx response of s: the eject_5xx-th in a row reports LB_FAIL_5XX and starts a new
 * streak. */
void lb_passive_5xx(const struct lb_set *set, struct lb_server *s, const struct lb_config *cfg);

/* Counts a response head's status from s: a 5xx extends the streak, anything else ends it. */
static inline void lb_passive_status(const struct lb_set *set, struct lb_server *s, const struct lb_config *cfg,
                                     int status)
{
    if (status >= 500)
        lb_passive_5xx(set, s, cfg);
    else if (atomic_load_explicit(&s->consec_5xx, memory_order_relaxed))
        atomic_store(&s->consec_5xx, 0);
}

/* Records a completed response of s: latency lat_us (now_us is the clock it was read at) of a
 * request sent with `queued` requests in flight on s (itself included); a status >= 500 counts
 * as an error in /stats. */
void lb_passive_done(struct lb_server *s, uint64_t lat_us, unsigned queued, uint64_t now_us, int status);

struct lb_retry_budget {
    long milli; /* thousandths of a retry */
};

static inline void lb_retry_budget_init(struct lb_retry_budget *b) { b->milli = 10000; /* 10 retries */ }

/* A request arrived: it earns percent/100 of a retry. */
static inline void lb_retry_budget_earn(struct lb_retry_budget *b, unsigned percent)
{
    b->milli += (long)percent * 10;
    if (b->milli > 100000)
        b->milli = 100000;
}

/* Takes one retry. Returns 1 if a retry may be made, 0 when the budget is spent. */
static inline int lb_retry_budget_take(struct lb_retry_budget *b)
{
    if (b->milli < 1000)
        return 0;
    b->milli -= 1000;
    return 1;
}

#endif
