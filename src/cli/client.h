/* client.h — the command line's HTTP calls (agora ctl, agora up): a blocking request to the
 * admin API through the HTTP client (http/client.h, http_client_fetch), with the command line's
 * headers and its error messages. One request per connection ("Connection: close"), bounded by a
 * timeout for the whole exchange; the body of the answer is at most 16 MiB. */
#ifndef AGORA_CLI_CLIENT_H
#define AGORA_CLI_CLIENT_H
#include <stddef.h>

#include "core/buf.h"

/* Sends METHOD path to addr ("host:port") with an optional JSON body and bearer token; fills
 * *status and body (the decoded response body, appended). Returns 0, or -1 with a message in err
 * (an answer that is malformed, or cut short of its framing, is an error). */
int cli_http(const char *addr, const char *method, const char *path, const char *token, const char *json_body,
             unsigned timeout_ms, int *status, struct buf *body, char *err, size_t errlen);

#endif
