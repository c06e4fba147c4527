/* climits.h — per-client-address limits: concurrent connections and a request-rate token bucket.
 *
 * One table shared by all worker threads of a process (striped locks). Both limits are off
 * when their setting is 0. An address's entry lives while it has connections, or while its
 * bucket is not yet full again; idle entries are dropped when their bucket chain is visited. */
#ifndef AGORA_HTTP_CLIMITS_H
#define AGORA_HTTP_CLIMITS_H
#include <stdint.h>

struct http_climits;

/* max_conns: per address (0 = unlimited); rate: requests per second per address (0 = off);
 * burst: bucket size (0 = rate). */
struct http_climits *http_climits_new(unsigned max_conns, unsigned rate, unsigned burst);
void http_climits_free(struct http_climits *cl);
/* Counts a new connection from ip. Returns 1, or 0 if the address is at its limit (not counted). */
int http_climits_conn_open(struct http_climits *cl, const char *ip);
/* Forgets a connection counted by http_climits_conn_open. */
void http_climits_conn_close(struct http_climits *cl, const char *ip);
/* Takes a request token for ip at now_ms. Returns 1, or 0 if the rate is exceeded, with
 * *retry_after_s set to the whole seconds until a token is available (>= 1). */
int http_climits_take(struct http_climits *cl, const char *ip, uint64_t now_ms, unsigned *retry_after_s);
/* Whether any limit is on. */
int http_climits_conn_limited(const struct http_climits *cl);
int http_climits_rate_limited(const struct http_climits *cl);

#endif
