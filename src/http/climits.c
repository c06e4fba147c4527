/* climits.c — per-address connection and rate limits; see climits.h. */
#include "http/climits.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define NBUCKETS 4096
#define NSTRIPES 64

struct entry {
    struct entry *next;
    char ip[48];
    unsigned conns;
    double tokens;
    uint64_t last_ms;
};

struct http_climits {
    unsigned max_conns, rate, burst;
    pthread_mutex_t locks[NSTRIPES];
    struct entry *buckets[NBUCKETS];
};

struct http_climits *http_climits_new(unsigned max_conns, unsigned rate, unsigned burst)
{
    struct http_climits *cl = alloc_calloc(1, sizeof(*cl));
    cl->max_conns = max_conns;
    cl->rate = rate;
    cl->burst = burst ? burst : rate;
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&cl->locks[i], NULL);
    return cl;
}

void http_climits_free(struct http_climits *cl)
{
    if (!cl)
        return;
    for (int i = 0; i < NBUCKETS; i++) {
        while (cl->buckets[i]) {
            struct entry *e = cl->buckets[i];
            cl->buckets[i] = e->next;
            free(e);
        }
    }
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_destroy(&cl->locks[i]);
    free(cl);
}

int http_climits_conn_limited(const struct http_climits *cl) { return cl && cl->max_conns; }
int http_climits_rate_limited(const struct http_climits *cl) { return cl && cl->rate; }

static unsigned hash_ip(const char *ip)
{
    unsigned h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % NBUCKETS;
}

static void refill(const struct http_climits *cl, struct entry *e, uint64_t now_ms)
{
    if (!cl->rate)
        return;
    /* Workers pass their own loop clocks, which may lag each other a little: time only moves
     * forward here, so no interval is counted twice. */
    if (now_ms > e->last_ms) {
        e->tokens += (double)(now_ms - e->last_ms) * cl->rate / 1000.0;
        if (e->tokens > cl->burst)
            e->tokens = cl->burst;
        e->last_ms = now_ms;
    }
}

/* Finds (or creates, if create) ip's entry in bucket b; drops idle entries on the way. The
 * stripe lock of b must be held. */
static struct entry *lookup(struct http_climits *cl, unsigned b, const char *ip, int create, uint64_t now_ms)
{
    struct entry **pp = &cl->buckets[b], *found = NULL;
    while (*pp) {
        struct entry *e = *pp;
        if (!strcmp(e->ip, ip)) {
            found = e;
            pp = &e->next;
            continue;
        }
        refill(cl, e, now_ms ? now_ms : e->last_ms);
        if (e->conns == 0 && (!cl->rate || e->tokens >= cl->burst)) {
            *pp = e->next;
            free(e);
            continue;
        }
        pp = &e->next;
    }
    if (found || !create)
        return found;
    struct entry *e = alloc_calloc(1, sizeof(*e));
    strncpy(e->ip, ip, sizeof(e->ip) - 1);
    e->tokens = cl->burst;
    e->last_ms = now_ms;
    e->next = cl->buckets[b];
    cl->buckets[b] = e;
    return e;
}

int http_climits_conn_open(struct http_climits *cl, const char *ip)
{
    if (!cl->max_conns)
        return 1;
    unsigned b = hash_ip(ip);
    pthread_mutex_lock(&cl->locks[b % NSTRIPES]);
    struct entry *e = lookup(cl, b, ip, 1, 0);
    int ok = e->conns < cl->max_conns;
    if (ok)
        e->conns++;
    pthread_mutex_unlock(&cl->locks[b % NSTRIPES]);
    return ok;
}

void http_climits_conn_close(struct http_climits *cl, const char *ip)
{
    if (!cl->max_conns)
        return;
    unsigned b = hash_ip(ip);
    pthread_mutex_lock(&cl->locks[b % NSTRIPES]);
    struct entry *e = lookup(cl, b, ip, 0, 0);
    if (e && e->conns > 0)
        e->conns--;
    pthread_mutex_unlock(&cl->locks[b % NSTRIPES]);
}

int http_climits_take(struct http_climits *cl, const char *ip, uint64_t now_ms, unsigned *retry_after_s)
{
    if (!cl->rate)
        return 1;
    unsigned b = hash_ip(ip);
    pthread_mutex_lock(&cl->locks[b % NSTRIPES]);
    struct entry *e = lookup(cl, b, ip, 1, now_ms);
    refill(cl, e, now_ms);
    int ok = e->tokens >= 1.0;
    if (ok)
        e->tokens -= 1.0;
    else
        *retry_after_s = (unsigned)ceil((1.0 - e->tokens) / cl->rate);
    pthread_mutex_unlock(&cl->locks[b % NSTRIPES]);
    if (!ok && *retry_after_s < 1)
        *retry_after_s = 1;
    return ok;
}
