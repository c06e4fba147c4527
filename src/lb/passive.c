/* passive.c — passive health (ejection on failures seen by the proxy, latency samples); see
 * passive.h. */
#include "lb/passive.h"

#include "lb/policy.h"

#define EWMA_TAU_US 10e6 /* Finagle's default decay time */

void lb_passive_fail(const struct lb_set *set, struct lb_server *s, const struct lb_config *cfg, enum lb_fail kind)
{
    if (!cfg->passive_health || kind == LB_FAIL_DOWN || kind == LB_FAIL_TRY_TIMEOUT || !atomic_load(&s->healthy))
        return;
    /* Never eject so many that the rest are overwhelmed: at most max_eject_percent may be out. */
    size_t active = 0, down = 0;
    for (size_t i = 0; i < set->n; i++) {
        if (atomic_load_explicit(&set->servers[i]->admin, memory_order_relaxed) != LB_ADMIN_ACTIVE)
            continue;
        active++;
        down += !atomic_load_explicit(&set->servers[i]->healthy, memory_order_relaxed);
    }
    if ((down + 1) * 100 > active * cfg->max_eject_percent)
        return;
    lb_server_eject(s, cfg->eject_base_ms, cfg->eject_max_ms,
                    kind == LB_FAIL_CONNECT   ? "connect failed"
                    : kind == LB_FAIL_TIMEOUT ? "response timeout"
                    : kind == LB_FAIL_5XX     ? "consecutive 5xx responses"
                                              : "connection reset");
}

void lb_passive_5xx(const struct lb_set *set, struct lb_server *s, const struct lb_config *cfg)
{
    unsigned k = atomic_fetch_add(&s->consec_5xx, 1) + 1;
    if (cfg->eject_5xx && k >= cfg->eject_5xx) {
        atomic_store(&s->consec_5xx, 0);
        lb_passive_fail(set, s, cfg, LB_FAIL_5XX);
    }
}

void lb_passive_done(struct lb_server *s, uint64_t lat_us, unsigned queued, uint64_t now_us, int status)
{
    lb_hist_record(s, lat_us);
    pthread_spin_lock(&s->ewma_lock);
    /* The estimate is per request: a latency observed behind `queued` other requests is divided
     * among them, so that cost = estimate × (in flight + 1) does not count the queue twice (it
     * would if the raw latency, which already contains the wait, went in). */
    double sample = (double)lat_us / (queued ? queued : 1);
    lb_ewma_update(&s->ewma_us, &s->ewma_stamp_us, sample, now_us, EWMA_TAU_US);
    pthread_spin_unlock(&s->ewma_lock);
    if (status >= 500)
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
}
