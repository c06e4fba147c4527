/* dashboard.c — the dashboard's page (compiled in) and its per-second series; see dashboard.h. */
#include "lb/dashboard.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/jsonw.h"

/* ---- the page: the files of src/lb/dashboard/, embedded by the assembler ----
 * (.incbin reads them at compile time, relative to the directory make runs in, the repository
 * root; the Makefile makes this object depend on them.) */
#define EMBED(sym, file)                                                                                               \
    __asm__(".section .rodata\n.globl " #sym "\n.hidden " #sym "\n" #sym ":\n.incbin \"" file "\"\n.globl " #sym       \
            "_end\n.hidden " #sym "_end\n" #sym "_end:\n.previous\n");                                                 \
    extern const char sym[], sym##_end[]

EMBED(lb_dash_html, "src/lb/dashboard/index.html");
EMBED(lb_dash_js, "src/lb/dashboard/dashboard.js");
EMBED(lb_dash_css, "src/lb/dashboard/dashboard.css");
EMBED(lb_dash_icon, "src/lb/dashboard/favicon.svg");

struct page_file {
    const char *path;
    const char *type;
    const char *data, *end;
};

int lb_dashboard_file(const char *path, size_t n, const char **type, const char **data, size_t *len)
{
    const struct page_file files[] = {
        {"/dashboard", "text/html; charset=utf-8", lb_dash_html, lb_dash_html_end},
        {"/dashboard/", "text/html; charset=utf-8", lb_dash_html, lb_dash_html_end},
        {"/dashboard/dashboard.js", "text/javascript; charset=utf-8", lb_dash_js, lb_dash_js_end},
        {"/dashboard/dashboard.css", "text/css; charset=utf-8", lb_dash_css, lb_dash_css_end},
        {"/dashboard/favicon.svg", "image/svg+xml", lb_dash_icon, lb_dash_icon_end},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (strlen(files[i].path) == n && !memcmp(files[i].path, path, n)) {
            *type = files[i].type;
            *data = files[i].data;
            *len = (size_t)(files[i].end - files[i].data);
            return 1;
        }
    }
    return 0;
}

/* ---- the series ---- */

#define INTERVAL_MS 1000

struct point {
    uint64_t seq;      /* sample number, from 1 */
    uint64_t time_ms;  /* wall clock */
    uint64_t requests; /* sent in this interval */
    double rps;        /* requests / the interval's length in seconds */
    int64_t in_flight;
    uint64_t completed; /* responses recorded in the histogram in this interval */
    uint64_t p50_us, p99_us;
    uint64_t errors;
};

struct track {
    struct lb_server *s; /* reference held */
    uint64_t first_seq;  /* its first point */
    uint64_t prev_total, prev_errors;
    uint64_t prev_hist[LB_HIST_BUCKETS];
    uint64_t delta[LB_HIST_BUCKETS]; /* of the last interval */
    struct point ring[LB_SERIES_LEN];
};

struct lb_dashboard {
    struct loop *loop;
    struct lb_shared *sh;
    struct loop_timer tick;
    uint64_t seq;     /* the last sample's number; 0 before the first */
    uint64_t last_us; /* loop clock of the last sample */
    struct track *tracks[LB_MAX_BACKENDS];
    size_t ntracks;
    struct point totals[LB_SERIES_LEN];
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* The track of s, made if it has none (called while sample d->seq is taken). A new track's
 * baseline is zero: a server joins the set with zero counts, and between joining and the next
 * sample, so its first point covers all its life until then. */
static struct track *track_of(struct lb_dashboard *d, struct lb_server *s)
{
    for (size_t i = 0; i < d->ntracks; i++)
        if (d->tracks[i]->s == s)
            return d->tracks[i];
    if (d->ntracks >= LB_MAX_BACKENDS)
        return NULL;
    struct track *t = alloc_calloc(1, sizeof(*t));
    t->s = s;
    lb_server_ref(s);
    t->first_seq = d->seq;
    d->tracks[d->ntracks++] = t;
    return t;
}

static void track_free(struct track *t)
{
    lb_server_unref(t->s);
    free(t);
}

/* Fills p with the percentiles of the histogram counts h (count = their sum). */
static void put_latency(struct point *p, const uint64_t h[LB_HIST_BUCKETS])
{
    p->completed = 0;
    for (unsigned i = 0; i < LB_HIST_BUCKETS; i++)
        p->completed += h[i];
    p->p50_us = lb_hist_percentile_of(h, 50);
    p->p99_us = lb_hist_percentile_of(h, 99);
}

static void sample(struct lb_dashboard *d)
{
    uint64_t now_us = loop_clock_us(), t_ms = wall_ms();
    double dt = d->last_us ? (double)(now_us - d->last_us) / 1e6 : INTERVAL_MS / 1000.0;
    if (dt <= 0)
        dt = INTERVAL_MS / 1000.0;
    d->last_us = now_us;
    uint64_t seq = ++d->seq;
    struct lb_set *set = lb_registry_get(&d->sh->registry);
    /* Tracks of servers that left the set go. */
    for (size_t i = 0; i < d->ntracks;) {
        int at = lb_set_find(set, d->tracks[i]->s->key);
        if (at < 0 || set->servers[at] != d->tracks[i]->s) {
            track_free(d->tracks[i]);
            d->tracks[i] = d->tracks[--d->ntracks];
        } else {
            i++;
        }
    }
    struct point *tot = &d->totals[seq % LB_SERIES_LEN];
    uint64_t all[LB_HIST_BUCKETS] = {0}, total_delta = 0;
    memset(tot, 0, sizeof(*tot));
    tot->seq = seq;
    tot->time_ms = t_ms;
    for (size_t i = 0; i < set->n; i++) {
        struct track *t = track_of(d, set->servers[i]);
        if (!t)
            continue;
        struct lb_server *s = t->s;
        struct point *p = &t->ring[seq % LB_SERIES_LEN];
        uint64_t total = LOAD(s->total), errors = LOAD(s->errors);
        memset(p, 0, sizeof(*p));
        p->seq = seq;
        p->time_ms = t_ms;
        p->requests = total - t->prev_total;
        p->rps = (double)p->requests / dt;
        p->in_flight = LOAD(s->inflight) > 0 ? LOAD(s->inflight) : 0;
        p->errors = errors - t->prev_errors;
        for (unsigned b = 0; b < LB_HIST_BUCKETS; b++) {
            uint64_t v = LOAD(s->hist[b]);
            t->delta[b] = v - t->prev_hist[b];
            t->prev_hist[b] = v;
            all[b] += t->delta[b];
        }
        put_latency(p, t->delta);
        total_delta += total - t->prev_total;
        t->prev_total = total;
        t->prev_errors = errors;
        tot->in_flight += p->in_flight;
        tot->errors += p->errors;
    }
    tot->requests = total_delta;
    tot->rps = (double)total_delta / dt;
    put_latency(tot, all);
    lb_set_unref(set);
}

static void on_tick(struct loop *loop, struct loop_timer *t)
{
    struct lb_dashboard *d = t->data;
    sample(d);
    loop_timer_arm(loop, t, INTERVAL_MS);
}

struct lb_dashboard *lb_dashboard_start(struct loop *loop, struct lb_shared *sh)
{
    struct lb_dashboard *d = alloc_calloc(1, sizeof(*d));
    d->loop = loop;
    d->sh = sh;
    d->tick.fn = on_tick;
    d->tick.data = d;
    d->last_us = loop_clock_us();
    loop_timer_arm(loop, &d->tick, INTERVAL_MS);
    return d;
}

void lb_dashboard_stop(struct lb_dashboard *d)
{
    if (!d)
        return;
    loop_timer_cancel(d->loop, &d->tick);
    for (size_t i = 0; i < d->ntracks; i++)
        track_free(d->tracks[i]);
    free(d);
}

const char *lb_dashboard_state(const struct lb_server *s, uint64_t now_ms, unsigned slow_start_ms)
{
    int admin = LOAD(s->admin);
    if (admin == LB_ADMIN_DRAINING)
        return "draining";
    if (admin == LB_ADMIN_PARKED)
        return "parked";
    if (LOAD(s->ejected_until_ms) > now_ms)
        return "ejected";
    if (!LOAD(s->healthy))
        return "down";
    if (slow_start_ms && now_ms - LOAD(s->up_since_ms) < slow_start_ms)
        return "slow start";
    return "up";
}

/* The points of ring numbered from max(since + 1, first, oldest kept) to the last sample. */
static void put_points(struct jsonw *w, const struct lb_dashboard *d, const struct point *ring, uint64_t first,
                       uint64_t since)
{
    uint64_t from = since + 1;
    if (from < first)
        from = first;
    if (d->seq >= LB_SERIES_LEN && from < d->seq - LB_SERIES_LEN + 1)
        from = d->seq - LB_SERIES_LEN + 1;
    jsonw_key(w, "points");
    jsonw_array(w);
    for (uint64_t seq = from; seq <= d->seq; seq++) {
        const struct point *p = &ring[seq % LB_SERIES_LEN];
        jsonw_array(w);
        jsonw_uint(w, p->seq);
        jsonw_uint(w, p->time_ms);
        jsonw_uint(w, p->requests);
        jsonw_double(w, p->rps, 1);
        jsonw_int(w, p->in_flight);
        if (p->completed) {
            jsonw_double(w, (double)p->p50_us / 1000.0, 3);
            jsonw_double(w, (double)p->p99_us / 1000.0, 3);
        } else {
            jsonw_null(w);
            jsonw_null(w);
        }
        jsonw_uint(w, p->errors);
        jsonw_end(w);
    }
    jsonw_end(w);
}

void lb_dashboard_series_json(struct lb_dashboard *d, uint64_t since, struct buf *out)
{
    const struct lb_config *cfg = d->sh->cfg;
    uint64_t now_ms = loop_clock_us() / 1000;
    struct lb_set *set = lb_registry_get(&d->sh->registry);
    struct jsonw w;
    jsonw_init(&w, out, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_kv_uint(&w, "seq", d->seq);
    jsonw_kv_uint(&w, "interval_ms", INTERVAL_MS);
    jsonw_kv_uint(&w, "slow_start_ms", cfg->slow_start_ms);
    jsonw_kv_str(&w, "policy", d->sh->policy->name);
    jsonw_key(&w, "columns");
    jsonw_array(&w);
    static const char *const columns[] = {"seq",       "time_ms", "requests", "rps",
                                          "in_flight", "p50_ms",  "p99_ms",   "errors"};
    for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++)
        jsonw_cstr(&w, columns[i]);
    jsonw_end(&w);
    jsonw_key(&w, "totals");
    jsonw_object(&w);
    size_t up = 0;
    int64_t in_flight = 0;
    uint64_t requests = 0;
    for (size_t i = 0; i < set->n; i++) {
        const char *st = lb_dashboard_state(set->servers[i], now_ms, cfg->slow_start_ms);
        up += !strcmp(st, "up") || !strcmp(st, "slow start");
        in_flight += LOAD(set->servers[i]->inflight) > 0 ? LOAD(set->servers[i]->inflight) : 0;
        requests += LOAD(set->servers[i]->total);
    }
    jsonw_kv_uint(&w, "servers", set->n);
    jsonw_kv_uint(&w, "up", up);
    jsonw_kv_int(&w, "in_flight", in_flight);
    jsonw_kv_uint(&w, "requests", requests);
    put_points(&w, d, d->totals, 1, since);
    jsonw_end(&w);
    jsonw_key(&w, "servers");
    jsonw_array(&w);
    for (size_t i = 0; i < set->n; i++) {
        struct lb_server *s = set->servers[i];
        struct track *t = NULL;
        for (size_t k = 0; k < d->ntracks && !t; k++)
            if (d->tracks[k]->s == s)
                t = d->tracks[k];
        uint64_t until = LOAD(s->ejected_until_ms);
        char last[sizeof s->hc_last];
        lb_server_last_check(s, last, sizeof last);
        jsonw_object(&w);
        jsonw_kv_str(&w, "address", s->key);
        jsonw_kv_str(&w, "url", s->url);
        jsonw_kv_str(&w, "state", lb_dashboard_state(s, now_ms, cfg->slow_start_ms));
        jsonw_kv_uint(&w, "weight", LOAD(s->weight));
        jsonw_kv_int(&w, "in_flight", LOAD(s->inflight) > 0 ? LOAD(s->inflight) : 0);
        jsonw_kv_uint(&w, "requests", LOAD(s->total));
        jsonw_kv_uint(&w, "errors", LOAD(s->errors));
        jsonw_kv_uint(&w, "ejections", LOAD(s->ejections_total));
        jsonw_kv_uint(&w, "ejected_for_ms", until > now_ms ? until - now_ms : 0);
        jsonw_kv_str(&w, "last_check", last);
        if (t) {
            put_points(&w, d, t->ring, t->first_seq, since);
        } else { /* joined since the last sample */
            jsonw_key(&w, "points");
            jsonw_array(&w);
            jsonw_end(&w);
        }
        jsonw_end(&w);
    }
    jsonw_end(&w);
    jsonw_end(&w);
    buf_puts(out, "\n");
    lb_set_unref(set);
}
