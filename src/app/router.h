/* router.h — dispatches a JSON API request (path under /api/) to its handler.
 *
 * Routes are matched segment by segment ({username} and {id} are one non-empty segment). An
 * unknown path gets 404; a known path with a method it does not support gets 405 with an Allow
 * header (HEAD is accepted wherever GET is). Every response with a body gets
 * "Content-Type: application/json; charset=utf-8". */
#ifndef AGORA_APP_ROUTER_H
#define AGORA_APP_ROUTER_H
#include "app/api.h"

#define ROUTER_MAX  24         /* at least the number of routes in the table */
#define ROUTER_NONE ROUTER_MAX /* no route matched the path */

/* Handles one API request for app; fills resp. Returns the index of the route that matched the
 * path (whatever the method), or ROUTER_NONE: for metrics, which count by route, never by path. */
unsigned router_handle(struct app *app, const struct http_request *req, struct http_response *resp,
                       const char *request_id);
/* The number of routes, and the pattern of route i (with * for a segment; NULL past the end). */
unsigned router_count(void);
const char *router_pattern(unsigned i);

/* 1 if the handler for h's method and path hashes a password (a flag of the route table). */
int router_hashes_password(const struct http_head *h);

#endif
