/* store_stats.h — what a store's calls cost: a time histogram per operation and the failures
 * by kind, for the web server's /metrics (app/metrics.h).
 *
 * Timed in one place: every store_* wrapper of store.h runs its call through STORE_TIMED, which
 * does nothing but test a pointer when the store has no stats (st->stats NULL: the readiness
 * thread's store, agora seed, the tests). A store belongs to one thread (store.h), so its stats
 * have one writer: the counters are relaxed atomics written with a plain load and store (no
 * locked instruction) and read by the scraping thread, which may see a histogram a count ahead
 * of its sum — never a torn value. */
#ifndef AGORA_APP_STORE_STATS_H
#define AGORA_APP_STORE_STATS_H
#include <stdatomic.h>
#include <stdint.h>

#include "core/prom.h"

/* The timed operations, in struct store_ops's order (the op label's values): every call a
 * request makes but read_begin/read_end (a snapshot's bounds) and ping (the readiness thread's). */
#define STORE_STATS_OPS(X)                                                                                             \
    X(account_create)                                                                                                  \
    X(account_by_name)                                                                                                 \
    X(account_credentials)                                                                                             \
    X(session_create)                                                                                                  \
    X(session_account)                                                                                                 \
    X(session_delete)                                                                                                  \
    X(session_touch)                                                                                                   \
    X(session_list)                                                                                                    \
    X(session_revoke)                                                                                                  \
    X(session_revoke_others)                                                                                           \
    X(password_set)                                                                                                    \
    X(follow)                                                                                                          \
    X(account_list)                                                                                                    \
    X(post_create)                                                                                                     \
    X(post_get)                                                                                                        \
    X(post_delete)                                                                                                     \
    X(like)                                                                                                            \
    X(posts_by_author)                                                                                                 \
    X(replies)                                                                                                         \
    X(home)                                                                                                            \
    X(count_accounts)                                                                                                  \
    X(throttle_take)                                                                                                   \
    X(throttle_give)

#define STORE_STATS_ENUM(name) STORE_OP_##name,
enum store_op { STORE_STATS_OPS(STORE_STATS_ENUM) STORE_OP_N };
#undef STORE_STATS_ENUM

/* Failures counted by kind (the codes that mean the database failed, not a caller's mistake). */
enum store_fail { STORE_FAIL_ERROR, STORE_FAIL_BUSY, STORE_FAIL_FULL, STORE_FAIL_N };

struct store_stats {
    atomic_uint_fast64_t hist[STORE_OP_N][PROM_BUCKETS]; /* call durations, per bucket */
    atomic_uint_fast64_t sum_us[STORE_OP_N];
    atomic_uint_fast64_t fails[STORE_FAIL_N];
};

/* The op label of op ("home", "post_create", ...). */
const char *store_stats_op_name(enum store_op op);
/* The start of a timed call: the monotonic clock in µs, or 0 when s is NULL (no clock read). */
uint64_t store_stats_begin(const struct store_stats *s);
/* Counts a call of op that started at t0 and returned rc (nothing when s is NULL). */
void store_stats_end(struct store_stats *s, enum store_op op, uint64_t t0, int rc);

/* The body of a timed wrapper: evaluates call (an int) between begin and end, and yields it. */
#define STORE_TIMED(st, op, call)                                                                                      \
    __extension__({                                                                                                    \
        uint64_t t0_ = store_stats_begin((st)->stats);                                                                 \
        int rc_ = (call);                                                                                              \
        store_stats_end((st)->stats, (op), t0_, rc_);                                                                  \
        rc_;                                                                                                           \
    })

#endif
