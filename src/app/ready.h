/* ready.h — the readiness of a web server, cached: did the database answer lately?
 *
 * `/health` is answered on the event-loop threads, which must never wait on the database. So a
 * thread of its own with its own store connection pings the database (store_ping) every
 * interval; /health reads the time of the last successful ping (one atomic load) and reports
 * ready while it is more recent than `fresh`. A database that fails, or a ping that hangs, makes
 * the server unready within `fresh`; the next successful ping makes it ready again by itself.
 * The pinger logs each change of state once (not every failed ping).
 *
 * Threads: app_ready_start/stop on one thread (the main thread); app_ready_ok on any thread. */
#ifndef AGORA_APP_READY_H
#define AGORA_APP_READY_H
#include <stddef.h>
#include <stdint.h>

struct app_ready;

#define APP_READY_INTERVAL_MS 1000 /* a ping a second */
#define APP_READY_FRESH_MS    3000 /* ready while the last good ping is younger than this */

/* Opens a store connection to db_url (as app_open does: NULL with a message in err when it
 * cannot), takes the first ping now (so a server starts ready only when its database answers:
 * else NULL too) and starts the pinging thread. interval_ms/fresh_ms 0 take the defaults above. */
struct app_ready *app_ready_start(const char *db_url, unsigned interval_ms, unsigned fresh_ms, char *err,
                                  size_t errlen);
/* 1 while the database answered within fresh_ms, else 0. */
int app_ready_ok(const struct app_ready *r);
/* Microseconds since the database last answered a ping (for metrics). */
uint64_t app_ready_age_us(const struct app_ready *r);
/* Stops the thread, closes its connection and frees r. NULL is allowed. */
void app_ready_stop(struct app_ready *r);

#endif
