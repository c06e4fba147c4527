/* select.c — server selection: panic mode, slow start, the tried set, the affinity key; see
 * select.h. */
#include "lb/select.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

void lb_selector_init(struct lb_selector *sel, const struct lb_policy_ops *ops, const struct lb_set *set)
{
    sel->ops = ops;
    sel->n = set->n;
    sel->targets = alloc_calloc(set->n ? set->n : 1, sizeof(*sel->targets));
    for (size_t i = 0; i < set->n; i++) {
        sel->targets[i].key = set->servers[i]->key;
        sel->targets[i].weight = atomic_load(&set->servers[i]->weight) * LB_WEIGHT_SCALE;
    }
    sel->policy = ops->create(sel->targets, set->n);
}

void lb_selector_destroy(struct lb_selector *sel)
{
    if (sel->ops)
        sel->ops->destroy(sel->policy);
    free(sel->targets);
    sel->targets = NULL;
    sel->policy = NULL;
    sel->ops = NULL;
    sel->n = 0;
}

static int is_active(const struct lb_server *s)
{
    return atomic_load_explicit(&s->admin, memory_order_relaxed) == LB_ADMIN_ACTIVE;
}

/* The weight s may have now: slow start scales it while s has been up for less than window_ms. */
static unsigned current_weight(const struct lb_server *s, unsigned window_ms, uint64_t now_ms)
{
    unsigned weight = atomic_load_explicit(&s->weight, memory_order_relaxed) * LB_WEIGHT_SCALE;
    uint64_t up = now_ms - atomic_load_explicit(&s->up_since_ms, memory_order_relaxed);
    if (window_ms && up < window_ms) {
        uint64_t floor = weight / 10, ramp = (uint64_t)weight * up / window_ms;
        weight = (unsigned)(ramp > floor ? ramp : floor);
        if (!weight)
            weight = 1;
    }
    return weight;
}

int lb_select(struct lb_selector *sel, const struct lb_set *set, const struct lb_config *cfg,
              const struct lb_select_req *req, uint64_t now_ms, uint64_t rnd)
{
    size_t active = 0, healthy = 0, usable = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct lb_server *s = set->servers[i];
        if (!is_active(s))
            continue;
        active++;
        healthy += atomic_load_explicit(&s->healthy, memory_order_relaxed) != 0;
    }
    int panic = cfg->panic_percent && healthy > 0 && healthy * 100 < active * cfg->panic_percent;
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        struct lb_target *t = &sel->targets[i];
        int ok = (panic && !req->no_panic ? is_active(s) : lb_server_usable(s)) && !lb_tried_has(req->tried, s);
        unsigned weight = current_weight(s, cfg->slow_start_ms, now_ms);
        t->weight = ok ? weight : 0;
        t->inflight = (unsigned)atomic_load_explicit(&s->inflight, memory_order_relaxed);
        t->latency_us = atomic_load_explicit(&s->ewma_us, memory_order_relaxed); /* a hint: no ordering */
        usable += ok;
    }
    if (!usable)
        return -1;
    uint64_t key = sel->ops->needs_key ? lb_select_key(cfg->hash_key, req->head, req->client_ip) : 0;
    return sel->ops->pick(sel->policy, sel->targets, set->n, key, rnd);
}

/* The value of cookie `name` (nl bytes) in a Cookie header value, or NULL. */
static const char *find_cookie(struct http_str v, const char *name, size_t nl, size_t *len)
{
    const char *p = v.p, *end = p + v.n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq)
            break;
        const char *semi = memchr(eq, ';', (size_t)(end - eq));
        if (!semi)
            semi = end;
        if ((size_t)(eq - p) == nl && !memcmp(p, name, nl)) {
            *len = (size_t)(semi - eq - 1);
            return eq + 1;
        }
        p = semi;
    }
    return NULL;
}

uint64_t lb_select_key(const char *spec, const struct http_head *h, const char *client_ip)
{
    if (!strncmp(spec, "header:", 7)) {
        const struct http_header *hd = http_find_header(h, spec + 7);
        if (hd)
            return lb_hash64(hd->value.p, hd->value.n);
    } else if (!strncmp(spec, "cookie:", 7)) {
        const struct http_header *hd = http_find_header(h, "cookie");
        size_t len;
        const char *v = hd ? find_cookie(hd->value, spec + 7, strlen(spec + 7), &len) : NULL;
        if (v)
            return lb_hash64(v, len);
    }
    return lb_hash64(client_ip, strlen(client_ip));
}
