/* client.h — a small blocking HTTP/1.1 client for the command line (agora ctl, agora up).
 * One request per connection ("Connection: close"), bounded by a timeout. */
#ifndef AGORA_CLI_CLIENT_H
#define AGORA_CLI_CLIENT_H
#include <stddef.h>

#include "core/buf.h"

/* Sends METHOD path to addr ("host:port") with an optional JSON body and bearer token; fills
 * *status and body (the response body, appended). Returns 0, or -1 with a message in err. */
int cli_http(const char *addr, const char *method, const char *path, const char *token, const char *json_body,
             unsigned timeout_ms, int *status, struct buf *body, char *err, size_t errlen);

#endif
