/* servers.c — backends, snapshots and the registry; see servers.h. */
#include "lb/servers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/loop.h"
#include "lb/events.h"

struct lb_server *lb_server_new(const char *spec, char *err, size_t errlen)
{
    char url[512];
    unsigned weight = 1;
    const char *comma = strchr(spec, ',');
    size_t ulen = comma ? (size_t)(comma - spec) : strlen(spec);
    if (ulen == 0 || ulen >= sizeof(url)) {
        snprintf(err, errlen, "backend '%s': empty or too long URL", spec);
        return NULL;
    }
    memcpy(url, spec, ulen);
    url[ulen] = '\0';
    while (comma) {
        const char *opt = comma + 1;
        comma = strchr(opt, ',');
        size_t olen = comma ? (size_t)(comma - opt) : strlen(opt);
        if (olen > 7 && !strncmp(opt, "weight=", 7)) {
            char *end;
            long w = strtol(opt + 7, &end, 10);
            if (end != opt + olen || w < 1 || w > 1000) {
                snprintf(err, errlen, "backend '%s': weight must be an integer from 1 to 1000", spec);
                return NULL;
            }
            weight = (unsigned)w;
        } else {
            snprintf(err, errlen, "backend '%s': unknown option '%.*s' (expected weight=N)", spec, (int)olen, opt);
            return NULL;
        }
    }
    const char *hp = url;
    if (!strncmp(hp, "http://", 7))
        hp += 7;
    else if (strstr(hp, "://")) {
        snprintf(err, errlen, "backend '%s': only http:// backends are supported", spec);
        return NULL;
    }
    char authority[300];
    size_t alen = strcspn(hp, "/");
    if (alen == 0 || alen >= sizeof(authority) || (hp[alen] == '/' && hp[alen + 1] != '\0')) {
        snprintf(err, errlen, "backend '%s': expected http://HOST:PORT", spec);
        return NULL;
    }
    memcpy(authority, hp, alen);
    authority[alen] = '\0';
    if (!strchr(authority, ':') || authority[alen - 1] == ']') {
        /* No port: HTTP's default. */
        if (alen + 3 >= sizeof(authority)) {
            snprintf(err, errlen, "backend '%s': address too long", spec);
            return NULL;
        }
        strcat(authority, ":80");
    }
    struct net_addr addr;
    if (net_parse_addr(authority, &addr) < 0) {
        snprintf(err, errlen, "backend '%s': cannot resolve address '%s'", spec, authority);
        return NULL;
    }
    struct lb_server *s = alloc_calloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->url = alloc_strdup(url);
    if (s->url[strlen(s->url) - 1] == '/')
        s->url[strlen(s->url) - 1] = '\0';
    char key[80];
    net_format_addr(&addr, key, sizeof(key));
    s->key = alloc_strdup(key);
    s->host_header = alloc_strdup(authority);
    s->addr = addr;
    atomic_init(&s->weight, weight);
    atomic_init(&s->healthy, 1);
    atomic_init(&s->up_since_ms, loop_clock_us() / 1000);
    pthread_spin_init(&s->ewma_lock, PTHREAD_PROCESS_PRIVATE);
    pthread_mutex_init(&s->hc_lock, NULL);
    snprintf(s->hc_last, sizeof(s->hc_last), "not checked yet");
    return s;
}

void lb_server_set_last_check(struct lb_server *s, const char *what, const char *suffix)
{
    pthread_mutex_lock(&s->hc_lock);
    snprintf(s->hc_last, sizeof(s->hc_last), "%s%s", what, suffix);
    pthread_mutex_unlock(&s->hc_lock);
}

void lb_server_last_check(struct lb_server *s, char *out, size_t size)
{
    pthread_mutex_lock(&s->hc_lock);
    snprintf(out, size, "%s", s->hc_last);
    pthread_mutex_unlock(&s->hc_lock);
}

void lb_server_ref(struct lb_server *s) { atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed); }

void lb_server_unref(struct lb_server *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_spin_destroy(&s->ewma_lock);
    pthread_mutex_destroy(&s->hc_lock);
    free(s->url);
    free(s->key);
    free(s->host_header);
    free(s);
}

struct lb_set *lb_set_new(struct lb_server *const *servers, size_t n, unsigned gen)
{
    struct lb_set *set = alloc_calloc(1, sizeof(*set) + n * sizeof(set->servers[0]));
    atomic_init(&set->refs, 1);
    set->gen = gen;
    set->n = n;
    for (size_t i = 0; i < n; i++) {
        set->servers[i] = servers[i];
        lb_server_ref(servers[i]);
    }
    return set;
}

void lb_set_unref(struct lb_set *set)
{
    if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < set->n; i++)
        lb_server_unref(set->servers[i]);
    free(set);
}

int lb_set_find(const struct lb_set *set, const char *key)
{
    for (size_t i = 0; i < set->n; i++)
        if (!strcmp(set->servers[i]->key, key))
            return (int)i;
    return -1;
}

void lb_registry_init(struct lb_registry *r, struct lb_set *initial)
{
    pthread_mutex_init(&r->mu, NULL);
    r->cur = initial;
    atomic_init(&r->gen, initial->gen);
}

struct lb_set *lb_registry_get(struct lb_registry *r)
{
    pthread_mutex_lock(&r->mu);
    struct lb_set *set = r->cur;
    atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&r->mu);
    return set;
}

void lb_registry_replace(struct lb_registry *r, struct lb_server *const *servers, size_t n)
{
    pthread_mutex_lock(&r->mu);
    struct lb_set *old = r->cur;
    r->cur = lb_set_new(servers, n, old->gen + 1);
    atomic_store(&r->gen, r->cur->gen);
    pthread_mutex_unlock(&r->mu);
    lb_set_unref(old);
}

void lb_registry_destroy(struct lb_registry *r)
{
    lb_set_unref(r->cur);
    r->cur = NULL;
    pthread_mutex_destroy(&r->mu);
}

int lb_server_usable(const struct lb_server *s)
{
    return atomic_load_explicit(&s->healthy, memory_order_relaxed) &&
           atomic_load_explicit(&s->admin, memory_order_relaxed) == LB_ADMIN_ACTIVE;
}

int lb_server_eject(struct lb_server *s, unsigned base_ms, unsigned max_ms, const char *why)
{
    int one = 1;
    if (!atomic_compare_exchange_strong(&s->healthy, &one, 0))
        return 0;
    uint64_t now = loop_clock_us() / 1000;
    /* A server that stayed up for a long while starts again from the base time. */
    if (now - atomic_load(&s->up_since_ms) > (uint64_t)max_ms * 5)
        atomic_store(&s->ejections, 0);
    unsigned k = atomic_fetch_add(&s->ejections, 1);
    uint64_t ms = (uint64_t)base_ms << (k > 16 ? 16 : k);
    if (ms > max_ms)
        ms = max_ms;
    atomic_store(&s->ejected_until_ms, now + ms);
    atomic_fetch_add(&s->ejections_total, 1);
    fprintf(stderr, "agora lb: server %s ejected for %llu ms: %s\n", s->url, (unsigned long long)ms, why);
    lb_events_add(s->events, LB_EV_EJECTED, s->key, "for %llu ms: %s", (unsigned long long)ms, why);
    return 1;
}

/* ---- latency histogram: log-linear buckets, 4 per power of two, from 1 µs to ~2^24 s ---- */

static unsigned hist_bucket(uint64_t us)
{
    if (us < 4)
        return (unsigned)us;
    unsigned lg = 63u - (unsigned)__builtin_clzll(us); /* >= 2 */
    unsigned sub = (unsigned)(us >> (lg - 2)) & 3u;
    unsigned b = 4 + (lg - 2) * 4 + sub;
    return b < LB_HIST_BUCKETS ? b : LB_HIST_BUCKETS - 1;
}

static uint64_t hist_upper(unsigned b)
{
    if (b < 4)
        return b;
    unsigned lg = (b - 4) / 4 + 2, sub = (b - 4) % 4;
    return ((uint64_t)(4 + sub + 1) << (lg - 2)) - 1;
}

void lb_hist_record(struct lb_server *s, uint64_t us)
{
    atomic_fetch_add_explicit(&s->hist[hist_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->prom_hist[prom_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->lat_sum_us, us, memory_order_relaxed);
}

uint64_t lb_hist_percentile(const struct lb_server *s, double pct)
{
    uint64_t counts[LB_HIST_BUCKETS];
    for (unsigned i = 0; i < LB_HIST_BUCKETS; i++)
        counts[i] = atomic_load_explicit(&s->hist[i], memory_order_relaxed);
    return lb_hist_percentile_of(counts, pct);
}

uint64_t lb_hist_percentile_of(const uint64_t counts[LB_HIST_BUCKETS], double pct)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < LB_HIST_BUCKETS; i++)
        total += counts[i];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(pct / 100.0 * (double)total), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < LB_HIST_BUCKETS; i++) {
        seen += counts[i];
        if (seen >= rank)
            return hist_upper(i);
    }
    return hist_upper(LB_HIST_BUCKETS - 1);
}

/* ---- /stats ---- */

static const char *admin_name(int a)
{
    return a == LB_ADMIN_DRAINING ? "draining" : a == LB_ADMIN_PARKED ? "parked" : "active";
}

void lb_stats_json(const struct lb_set *set, const char *policy, struct buf *out)
{
    struct jsonw w;
    jsonw_init(&w, out, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_key(&w, "health");
    jsonw_object(&w);
    for (size_t i = 0; i < set->n; i++)
        jsonw_kv_bool(&w, set->servers[i]->url, atomic_load(&set->servers[i]->healthy));
    jsonw_end(&w);
    jsonw_key(&w, "connections");
    jsonw_object(&w);
    for (size_t i = 0; i < set->n; i++)
        jsonw_kv_int(&w, set->servers[i]->url, atomic_load(&set->servers[i]->inflight));
    jsonw_end(&w);
    jsonw_kv_str(&w, "policy", policy);
    jsonw_key(&w, "servers");
    jsonw_array(&w);
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        int healthy = atomic_load(&s->healthy);
        int admin = atomic_load(&s->admin);
        char last[sizeof s->hc_last];
        lb_server_last_check(s, last, sizeof last);
        jsonw_object(&w);
        jsonw_kv_str(&w, "url", s->url);
        jsonw_kv_str(&w, "address", s->key);
        jsonw_kv_str(&w, "state", admin != LB_ADMIN_ACTIVE ? admin_name(admin) : healthy ? "up" : "down");
        jsonw_kv_bool(&w, "healthy", healthy);
        jsonw_kv_str(&w, "admin", admin_name(admin));
        jsonw_kv_uint(&w, "weight", atomic_load(&s->weight));
        jsonw_kv_int(&w, "in_flight", atomic_load(&s->inflight));
        jsonw_kv_uint(&w, "requests", atomic_load(&s->total));
        jsonw_kv_uint(&w, "errors", atomic_load(&s->errors));
        jsonw_kv_uint(&w, "ejections", atomic_load(&s->ejections_total));
        jsonw_key(&w, "latency_p50_ms");
        jsonw_double(&w, (double)lb_hist_percentile(s, 50) / 1000.0, 3);
        jsonw_key(&w, "latency_p99_ms");
        jsonw_double(&w, (double)lb_hist_percentile(s, 99) / 1000.0, 3);
        jsonw_kv_str(&w, "last_check", last);
        jsonw_end(&w);
    }
    jsonw_end(&w);
    jsonw_end(&w);
    buf_puts(out, "\n");
}
