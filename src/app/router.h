/* router.h — dispatches a JSON API request (path under /api/) to its handler.
 *
 * Routes are matched segment by segment ({username} and {id} are one non-empty segment). An
 * unknown path gets 404; a known path with a method it does not support gets 405 with an Allow
 * header (HEAD is accepted wherever GET is). Every response with a body gets
 * "Content-Type: application/json; charset=utf-8". */
#ifndef AGORA_APP_ROUTER_H
#define AGORA_APP_ROUTER_H
#include "app/api.h"

/* Handles one API request for app; fills resp. */
void router_handle(struct app *app, const struct http_request *req, struct http_response *resp, const char *request_id);

/* 1 if the handler for h's method and path hashes a password (a flag of the route table). */
int router_hashes_password(const struct http_head *h);

#endif
