/* req.h — small helpers for reading a buffered request: headers, query parameters, cookies,
 * percent-decoding and ids. They never allocate and never modify the request.
 * (The app does not depend on the parser's lookup helpers so it can be tested with hand-built
 * heads.) */
#ifndef AGORA_APP_REQ_H
#define AGORA_APP_REQ_H
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"

/* Returns the value of the first header named name (ASCII case-insensitive), or NULL. */
const struct http_str *req_header(const struct http_head *h, const char *name);
/* 1 if s equals the NUL-terminated lit ignoring ASCII case. */
int req_ieq(const char *s, size_t n, const char *lit);
/* Percent-decodes in[0,n) into out (outlen bytes incl. a NUL); '+' is kept as is. Returns the
 * decoded length, or -1 if an escape is malformed, the result contains NUL, or it does not fit. */
long req_percent_decode(const char *in, size_t n, char *out, size_t outlen);
/* Looks for name in the query string (first occurrence). Returns 1 and the decoded value in out,
 * 0 if absent, -1 if the value is malformed or longer than outlen - 1 bytes. */
int req_query_param(struct http_str query, const char *name, char *out, size_t outlen);
/* Finds cookie name in the Cookie header(s); returns 1 and its value in *out, or 0. */
int req_cookie(const struct http_head *h, const char *name, struct http_str *out);
/* 1 if the media type of Content-Type value ct (before any ';' parameters, white space
 * around it ignored) is type, ignoring ASCII case. */
int req_media_type_is(const struct http_str *ct, const char *type);
/* 1 if origin (an Origin header value, "scheme://host[:port]") names the site whose Host header
 * is host: the scheme is http or https and host[:port] equals host ignoring ASCII case, where a
 * default port (80 for http, 443 for https) may be written on either side or omitted. 0 for
 * anything else, including "null", a path, user info, or a missing Host. */
int req_same_origin(const struct http_str *origin, const struct http_str *host);
/* Parses a positive decimal id (1-19 digits, no sign, fits in int64_t). Returns 1 or 0. */
int req_parse_id(const char *s, size_t n, int64_t *out);

#endif
