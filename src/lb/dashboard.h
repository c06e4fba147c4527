/* dashboard.h — the balancer's live dashboard: the page, and the per-second series it draws.
 *
 * The page (src/lb/dashboard/: index.html, dashboard.js, dashboard.css, favicon.svg; plain
 * HTML/JS/CSS, no build step, no third-party code) is compiled into the binary (.incbin), so
 * `agora lb` serves it wherever it runs, without a web directory. The admin API (admin.h) serves
 * it at GET /dashboard without the token — it holds no data — and the page reads the token from
 * its URL fragment (/dashboard#token=..., which a browser never sends) or a form, then polls the
 * token-protected GET /series and GET /events once a second.
 *
 * The series: once a second (a timer on the admin's loop, the main thread) the sampler reads the
 * counters of every server of the current set and keeps, per server and for the cluster, a ring
 * of LB_SERIES_LEN points (5 minutes): requests per second, in flight, the p50 and p99 response
 * time of the responses completed in that second (from the difference of the latency histogram,
 * servers.h; null when none completed) and errors in that second. A server that leaves the set
 * loses its series; one that joins starts a new one. Only the main thread touches the sampler. */
#ifndef AGORA_LB_DASHBOARD_H
#define AGORA_LB_DASHBOARD_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "lb/proxy.h"

#define LB_SERIES_LEN 300 /* points kept: one a second, 5 minutes */

struct lb_dashboard;

/* Starts sampling sh's server set once a second on loop. Never fails. */
struct lb_dashboard *lb_dashboard_start(struct loop *loop, struct lb_shared *sh);
/* Stops the timer, drops the series and frees d (NULL: nothing). */
void lb_dashboard_stop(struct lb_dashboard *d);

/* Looks up a file of the page by request path (n bytes): "/dashboard" and "/dashboard/" are the
 * HTML, "/dashboard/NAME" the others. Returns 1 with the content and its Content-Type, 0 if the
 * path is none of them. */
int lb_dashboard_file(const char *path, size_t n, const char **type, const char **data, size_t *len);

/* Appends the series document to out (GET /series?since=S; the shape is in docs/CONFIG.md):
 * {"seq": last sample number, "interval_ms": 1000, "slow_start_ms", "columns": [...],
 *  "totals": {..., "points": [...]}, "servers": [{"address", "url", "state", ..., "points"}]}
 * with the points numbered above since (all kept ones for since = 0), oldest first. state is
 * one of "up", "slow start", "down", "ejected", "draining", "parked". */
void lb_dashboard_series_json(struct lb_dashboard *d, uint64_t since, struct buf *out);

/* The state a server is shown in at now_ms, under a slow-start window of slow_start_ms. */
const char *lb_dashboard_state(const struct lb_server *s, uint64_t now_ms, unsigned slow_start_ms);

#endif
