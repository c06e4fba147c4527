/* store_stats.c — a store's per-operation timing and failure counts; see store_stats.h. */
#include "app/store_stats.h"

#include "app/store.h"
#include "core/loop.h"

#define STORE_STATS_NAME(name) #name,
static const char *const op_names[STORE_OP_N] = {STORE_STATS_OPS(STORE_STATS_NAME)};
#undef STORE_STATS_NAME

const char *store_stats_op_name(enum store_op op) { return op < STORE_OP_N ? op_names[op] : "other"; }

uint64_t store_stats_begin(const struct store_stats *s) { return s ? loop_clock_us() : 0; }

/* One writer (the store's thread): a relaxed load and store, no locked add. */
static void bump(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

void store_stats_end(struct store_stats *s, enum store_op op, uint64_t t0, int rc)
{
    if (!s)
        return;
    uint64_t now = loop_clock_us(), us = now > t0 ? now - t0 : 0;
    bump(&s->hist[op][prom_bucket(us)], 1);
    bump(&s->sum_us[op], us);
    if (rc == STORE_ERROR)
        bump(&s->fails[STORE_FAIL_ERROR], 1);
    else if (rc == STORE_BUSY)
        bump(&s->fails[STORE_FAIL_BUSY], 1);
    else if (rc == STORE_FULL)
        bump(&s->fails[STORE_FAIL_FULL], 1);
}
