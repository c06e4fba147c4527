/* events.h — the balancer's event log: what happened to the server set, for the dashboard.
 *
 * A bounded ring (LB_EVENTS_MAX entries) of events, each with an id (1, 2, 3, ... in the order
 * they were logged, never reused), the wall-clock time in milliseconds since the epoch, a kind
 * from a fixed list, the server's "host:port" ("" for the balancer itself) and a short detail.
 * Written where a state changes: health.c (up, down), servers.c (ejected, by passive health in a
 * worker), admin.c (added, removed, draining, drained, enabled, weight) and lb.c (reload); read by
 * the admin API's GET /events (lb_events_json). Any thread may log: a mutex guards the ring, held
 * only to copy one entry in or the entries out. When the ring is full the oldest entry is
 * dropped; a reader that asks for events since an id that was dropped learns it from "first". */
#ifndef AGORA_LB_EVENTS_H
#define AGORA_LB_EVENTS_H
#include <stdint.h>

#include "core/buf.h"

#define LB_EVENTS_MAX 256

enum lb_event_kind {
    LB_EV_UP,       /* a health check brought the server (back) in */
    LB_EV_DOWN,     /* health checks took it out */
    LB_EV_EJECTED,  /* passive health took it out for a while */
    LB_EV_ADDED,    /* admin API */
    LB_EV_REMOVED,  /* admin API, or drained with "then": "remove" */
    LB_EV_DRAINING, /* admin API: no new requests */
    LB_EV_DRAINED,  /* the last in-flight request of a draining server ended */
    LB_EV_ENABLED,  /* admin API: active again (slow start) */
    LB_EV_WEIGHT,   /* admin API: new weight */
    LB_EV_RELOAD,   /* SIGHUP: the configuration was read again */
};

struct lb_events;

struct lb_events *lb_events_new(void);
void lb_events_free(struct lb_events *ev);

/* Logs an event of kind about server (a "host:port", or NULL/"" for the balancer) with a
 * printf-formatted detail (cut at 160 bytes). ev may be NULL: nothing is logged (servers made
 * outside a balancer, e.g. by unit tests, have no log). */
void lb_events_add(struct lb_events *ev, enum lb_event_kind kind, const char *server, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The name of a kind as the JSON shows it ("up", "down", "ejected", ...). */
const char *lb_event_kind_name(enum lb_event_kind kind);

/* Appends {"first": F, "last": L, "events": [{"id", "time_ms", "kind", "server", "detail"}...]}
 * to out: the events with an id greater than since, oldest first, at most limit of them (the
 * oldest ones; a reader continues from the last id it got). L is the newest id logged (0 if none
 * was) and F the oldest one still kept (L + 1 if none is): events from since + 1 to F - 1 were
 * dropped from the ring before they were read. */
void lb_events_json(struct lb_events *ev, uint64_t since, unsigned limit, struct buf *out);

#endif
