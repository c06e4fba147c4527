/* message.h — a complete, buffered HTTP request and the response a handler builds for it.
 *
 * This is what the web servers' handlers see (the balancer streams instead and never buffers a
 * whole message). The server reads the head and the whole body (bounded by its max body size,
 * chunked bodies already decoded) and calls the handler once; the handler fills a response
 * synchronously; the server adds the status line, Date, Content-Length (not for 1xx, 204 and 304)
 * and, when the connection is not kept alive, Connection: close, then writes it (it adds no
 * Server header). Everything in the request is owned by the server and valid only during the
 * call. The call happens on the connection's loop thread, or on a pool thread (pool.h) with a copy
 * of the request for the routes sent there; the handler code is the same either way. */
#ifndef AGORA_HTTP_MESSAGE_H
#define AGORA_HTTP_MESSAGE_H
#include "core/buf.h"
#include "http/parser.h"

struct http_request {
    const struct http_head *head; /* method, path, query, headers */
    const char *body;             /* decoded body, NUL-terminated; "" when none */
    size_t body_len;
    const char *remote_addr; /* client IP as text */
};

struct http_response {
    int status;         /* default 200 */
    struct buf headers; /* extra header lines, each "Name: value\r\n" */
    struct buf body;    /* the body (ignored for HEAD requests, but Content-Length kept) */
    int close;          /* 1: Connection: close, end the connection after this response */
};

/* Appends a header line "name: value" to resp->headers (value printf-formatted). */
void http_response_header(struct http_response *resp, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Request ids (X-Request-Id), as the balancer passes them to the web servers: at most
 * HTTP_REQUEST_ID_MAX characters of [A-Za-z0-9._:+/=-]. http_request_id_ok says whether v is
 * one; http_request_id_make writes 32 random hex digits and a NUL into out. */
#define HTTP_REQUEST_ID_MAX 64
int http_request_id_ok(struct http_str v);
void http_request_id_make(char out[33]);

/* Request handler: fills resp for req. Must not keep pointers into req after returning. */
typedef void (*http_handler_fn)(void *ctx, const struct http_request *req, struct http_response *resp);

#endif
