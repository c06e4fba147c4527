/* servers.h — the balancer's server set: backends, their live state, and immutable snapshots.
 *
 * A struct lb_server is one backend, shared by every worker thread; its live fields are atomics
 * (in-flight count, health, counters, latency histogram). Servers are reference-counted so that a
 * request in flight keeps its server alive after the server was removed from the set.
 * A struct lb_set is an immutable, reference-counted snapshot of the current servers. The owner
 * (struct lb_registry) swaps snapshots under a mutex when the set changes (reload, admin API);
 * workers compare the registry's generation number with their own on each request (one atomic
 * load) and take the new snapshot only when it changed. */
#ifndef AGORA_LB_SERVERS_H
#define AGORA_LB_SERVERS_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/net.h"
#include "core/prom.h"

struct lb_events;

#define LB_HIST_BUCKETS 96

enum lb_admin_state {
    LB_ADMIN_ACTIVE = 0, /* takes traffic when healthy */
    LB_ADMIN_DRAINING,   /* no new requests; in-flight ones finish */
    LB_ADMIN_PARKED,     /* drained and kept in the set, taking no traffic */
};

struct lb_server {
    atomic_int refs;
    char *url;         /* as configured, e.g. "http://127.0.0.1:8001" */
    char *key;         /* "host:port": identity, used in /stats and by hashing */
    char *host_header; /* authority to use if a request lacks Host */
    struct net_addr addr;
    atomic_uint weight;               /* configured weight, >= 1 */
    atomic_int admin;                 /* enum lb_admin_state */
    atomic_int drain_remove;          /* when drained: 1 = remove from the set, 0 = park */
    atomic_int healthy;               /* last health verdict (1 = up) */
    atomic_uint downs;                /* times the active checks marked it down (proxy.c rescues
                                         the requests in flight on it: lb_health_on_down) */
    atomic_int inflight;              /* requests in flight, all workers */
    atomic_uint_fast64_t total;       /* requests sent */
    atomic_uint_fast64_t errors;      /* failed requests: connect/send/receive failures, timeouts, 5xx */
    atomic_uint_fast64_t up_since_ms; /* wall-clock-independent: loop clock ms when it came up */
    /* passive health (outlier detection), written by workers */
    atomic_uint_fast64_t ejected_until_ms; /* loop clock; no passing check counts before it */
    atomic_uint ejections;                 /* consecutive ejections, for the growing ejection time */
    atomic_uint consec_5xx;
    atomic_uint_fast64_t ejections_total;
    atomic_uint_fast64_t hist[LB_HIST_BUCKETS]; /* response latency histogram (see lb_hist_*) */
    /* for /metrics (metrics.h), written by the workers */
    atomic_uint_fast64_t prom_hist[PROM_BUCKETS]; /* the same samples in Prometheus buckets */
    atomic_uint_fast64_t lat_sum_us;              /* and their sum */
    atomic_uint_fast64_t responses[5];            /* response heads relayed, by class 1xx..5xx */
    atomic_uint_fast64_t retries;                 /* requests retried on another server after failing here */
    atomic_uint_fast64_t connect_failures;
    atomic_uint_fast64_t bytes_sent;     /* request bytes written to it */
    atomic_uint_fast64_t bytes_received; /* response bytes read from it */
    atomic_int conns_open;               /* backend connections, all workers */
    atomic_int conns_idle;               /* of which idle in the pools */
    /* peak-EWMA latency, updated by all workers under a tiny lock (lb_ewma_update); read without
     * it by selection as a relaxed atomic load */
    pthread_spinlock_t ewma_lock;
    _Atomic double ewma_us;
    uint64_t ewma_stamp_us;
    /* health-check state, touched by the health thread only */
    int hc_rise, hc_fall;
    int hc_checked; /* a check has completed at least once */
    int hc_down;    /* the checks' own verdict is down (ejection aside) */
    /* last check outcome, written by the health thread and read by /stats in any worker: only
     * through lb_server_set_last_check() and lb_server_last_check(), which hold hc_lock */
    pthread_mutex_t hc_lock;
    char hc_last[96];
    struct lb_events *events; /* the balancer's event log (events.h); NULL outside a balancer */
};

struct lb_set {
    atomic_int refs;
    unsigned gen;
    size_t n;
    struct lb_server *servers[];
};

struct lb_registry {
    pthread_mutex_t mu;
    struct lb_set *cur; /* guarded by mu */
    atomic_uint gen;    /* cur->gen, readable without the lock */
};

/* Parses a backend spec "http://HOST:PORT[/][,weight=N]" into a new server (refs = 1).
 * Returns NULL and a message in err on a malformed spec. */
struct lb_server *lb_server_new(const char *spec, char *err, size_t errlen);
void lb_server_ref(struct lb_server *s);
void lb_server_unref(struct lb_server *s);
/* Records the outcome of the last health check ("what" followed by "suffix"), shown by /stats. */
void lb_server_set_last_check(struct lb_server *s, const char *what, const char *suffix);
/* Copies the last health-check outcome into out (size bytes, NUL-terminated). */
void lb_server_last_check(struct lb_server *s, char *out, size_t size);

/* Builds a snapshot holding a reference to each of servers[0..n). */
struct lb_set *lb_set_new(struct lb_server *const *servers, size_t n, unsigned gen);
void lb_set_unref(struct lb_set *set);
/* Index of the server with this key in the set, or -1. */
int lb_set_find(const struct lb_set *set, const char *key);

void lb_registry_init(struct lb_registry *r, struct lb_set *initial);
/* Returns the current snapshot with a reference the caller must drop. */
struct lb_set *lb_registry_get(struct lb_registry *r);
/* Replaces the snapshot by one made of servers[0..n) (reusing server objects where the caller
 * passes them); the generation number increases. */
void lb_registry_replace(struct lb_registry *r, struct lb_server *const *servers, size_t n);
void lb_registry_destroy(struct lb_registry *r);

/* Passive ejection: takes a healthy server out at once for base·2^(k-1) ms (k = consecutive
 * ejections, capped at max_ms); an active check that passes after that time brings it back
 * (rise applies). Returns 1 if this call ejected it, 0 if it was already out. */
int lb_server_eject(struct lb_server *s, unsigned base_ms, unsigned max_ms, const char *why);

/* Whether a server may get new requests now: its last health verdict is up (not failed by the
 * checker, not ejected) and its admin state is LB_ADMIN_ACTIVE (not draining or parked). The
 * weight is not looked at: it is always 1 to 1000 (servers.c, admin.c). */
int lb_server_usable(const struct lb_server *s);

/* Latency histogram: records a sample (µs); reads a percentile (0..100) back in µs. */
void lb_hist_record(struct lb_server *s, uint64_t us);
uint64_t lb_hist_percentile(const struct lb_server *s, double pct);
/* The same over bucket counts of that histogram (e.g. the samples of the last second). */
uint64_t lb_hist_percentile_of(const uint64_t counts[LB_HIST_BUCKETS], double pct);

/* Appends the seed-compatible /stats JSON for the set to out:
 * {"health": {url: bool...}, "connections": {url: n...}, "servers": [{...rich...}], ...}. */
void lb_stats_json(const struct lb_set *set, const char *policy, struct buf *out);

#endif
