/* events.c — the balancer's event log; see events.h. */
#include "lb/events.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/alloc.h"
#include "core/jsonw.h"

struct event {
    uint64_t id;
    uint64_t time_ms;
    enum lb_event_kind kind;
    char server[80];
    char detail[160];
};

struct lb_events {
    pthread_mutex_t mu;
    uint64_t last; /* id of the newest event; event id k lives in ring[(k - 1) % LB_EVENTS_MAX] */
    struct event ring[LB_EVENTS_MAX];
};

static const char *const kind_names[] = {"up",       "down",    "ejected", "added",  "removed",
                                         "draining", "drained", "enabled", "weight", "reload"};

const char *lb_event_kind_name(enum lb_event_kind kind)
{
    return (unsigned)kind < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[kind] : "unknown";
}

struct lb_events *lb_events_new(void)
{
    struct lb_events *ev = alloc_calloc(1, sizeof(*ev));
    pthread_mutex_init(&ev->mu, NULL);
    return ev;
}

void lb_events_free(struct lb_events *ev)
{
    if (!ev)
        return;
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

void lb_events_add(struct lb_events *ev, enum lb_event_kind kind, const char *server, const char *fmt, ...)
{
    if (!ev)
        return;
    struct event e = {.kind = kind};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e.time_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    snprintf(e.server, sizeof(e.server), "%s", server ? server : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.detail, sizeof(e.detail), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&ev->mu);
    e.id = ++ev->last;
    ev->ring[(e.id - 1) % LB_EVENTS_MAX] = e;
    pthread_mutex_unlock(&ev->mu);
}

void lb_events_json(struct lb_events *ev, uint64_t since, unsigned limit, struct buf *out)
{
    struct event *copy = alloc_calloc(LB_EVENTS_MAX, sizeof(*copy));
    size_t n = 0;
    pthread_mutex_lock(&ev->mu);
    uint64_t last = ev->last, first = last > LB_EVENTS_MAX ? last - LB_EVENTS_MAX + 1 : 1;
    for (uint64_t id = since + 1 > first ? since + 1 : first; id <= last && n < limit; id++)
        copy[n++] = ev->ring[(id - 1) % LB_EVENTS_MAX];
    pthread_mutex_unlock(&ev->mu);
    struct jsonw w;
    jsonw_init(&w, out, JSONW_SPACED);
    jsonw_object(&w);
    jsonw_kv_uint(&w, "first", first);
    jsonw_kv_uint(&w, "last", last);
    jsonw_key(&w, "events");
    jsonw_array(&w);
    for (size_t i = 0; i < n; i++) {
        jsonw_object(&w);
        jsonw_kv_uint(&w, "id", copy[i].id);
        jsonw_kv_uint(&w, "time_ms", copy[i].time_ms);
        jsonw_kv_str(&w, "kind", lb_event_kind_name(copy[i].kind));
        jsonw_kv_str(&w, "server", copy[i].server);
        jsonw_kv_str(&w, "detail", copy[i].detail);
        jsonw_end(&w);
    }
    jsonw_end(&w);
    jsonw_end(&w);
    buf_puts(out, "\n");
    free(copy);
}
