/* local.h — the balancer's own answers on the public port: GET /health and GET /stats.
 *
 * A request is the balancer's own when its method is GET or HEAD, it has no query, and its path
 * is exactly one of the table's (local.c): "/health" (200 "OK", text/plain) and "/stats" (200,
 * the set's JSON from lb_stats_json). --stats-access decides /stats: "public" answers everyone,
 * "loopback" answers 403 to a peer that is not 127.0.0.0/8 or ::1 (as an nginx allow/deny or a
 * HAProxy "http-request deny" on a stats page does), "off" makes /stats a path like any other,
 * proxied to the backends. /health is the balancer's own in every mode. Anything else (another
 * method, a query, "/health/x") is proxied. Answers carry Cache-Control: no-store, and
 * Connection: close when the request did not ask to keep the connection; HEAD gets the head only.
 * The request body, if any, is drained by the HTTP server; the answer is complete when it ends. */
#ifndef AGORA_LB_LOCAL_H
#define AGORA_LB_LOCAL_H
#include "http/parser.h"
#include "http/server.h"
#include "lb/servers.h"

enum lb_local {
    LB_LOCAL_NONE = 0, /* not the balancer's: proxy it */
    LB_LOCAL_HEALTH,
    LB_LOCAL_STATS,
};

/* Which of the balancer's own answers h asks for under stats_access ("public", "loopback" or
 * "off"). */
enum lb_local lb_local_match(const struct http_head *h, const char *stats_access);

/* Sends the answer `what` (not LB_LOCAL_NONE) to h on c: /stats describes set under policy.
 * A refused /stats is answered with http_conn_respond_error (the request is then done); otherwise
 * the response is queued and the caller ends the request with http_conn_response_done once the
 * request body has been read. Returns 1 if the response was queued, 0 if refused. */
int lb_local_answer(struct http_conn *c, const struct http_head *h, enum lb_local what, const struct lb_set *set,
                    const char *policy, const char *stats_access);

#endif
