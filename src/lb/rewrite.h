/* rewrite.h — header rewriting: the request head the backend gets, the response head the client
 * gets.
 *
 * Not forwarded in either direction: the hop-by-hop fields (Connection, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade), every field a Connection header of
 * the message lists (RFC 9110 §7.6.1), and Content-Length: the balancer always writes the framing
 * itself from what it parsed (one Content-Length value, or Transfer-Encoding: chunked), so the
 * next hop frames the message exactly as the balancer did. Everything else is copied in order,
 * byte for byte.
 * Request: the request line is "METHOD TARGET HTTP/1.1", an absolute-form target becoming
 * origin-form (RFC 9112 §3.2.1; not for OPTIONS); Host is kept, or the server's authority added
 * when the request has none; X-Forwarded-Proto is replaced by "http"; X-Forwarded-For is set to
 * the client's address, or appended to the client's first X-Forwarded-For when trust_forwarded
 * (the others dropped).
 * Response: the status line is "HTTP/1.1 STATUS REASON"; a chunked or close-delimited body is
 * re-chunked for an HTTP/1.1 client, and for an HTTP/1.0 client the body ends with the connection;
 * "Connection: close" when the client connection will not be kept, "Connection: keep-alive" for
 * a kept HTTP/1.0 client. */
#ifndef AGORA_LB_REWRITE_H
#define AGORA_LB_REWRITE_H
#include "core/buf.h"
#include "http/message.h"
#include "http/parser.h"

/* A field the balancer acts on besides framing and Host (which the parser guards) that a
 * Connection header of h lists: the backend would not see what the balancer decided on (a retried
 * POST whose Idempotency-Key was dropped would be created twice; an Expect dropped would leave the
 * client waiting for a 100 Continue), so such a request is refused. Returns the field, or NULL. */
const char *lb_rewrite_acted_on(const struct http_head *h);

/* Request ids (X-Request-Id): see http/message.h (http_request_id_ok). */
#define LB_REQUEST_ID_MAX HTTP_REQUEST_ID_MAX
/* Writes request h's id into out: a trusted client's X-Request-Id (trust: --trust-forwarded, as
 * for X-Forwarded-For) when it is a sane one, else 32 hex digits made from *state, a per-worker
 * counter from a random start, mixed (splitmix64): ids never repeat within a worker and collide
 * across workers and restarts with probability 2^-128. */
void lb_request_id(const struct http_head *h, int trust, uint64_t *state, char out[LB_REQUEST_ID_MAX + 1]);

/* Appends the head of request h for the backend to b: client_ip is the client's address,
 * host_header the server's authority, request_id the X-Request-Id the backend gets (every
 * X-Request-Id of h is dropped), https whether the client came over TLS (X-Forwarded-Proto: https
 * or http; a client's own X-Forwarded-Proto is always dropped). Returns 1 if the body is to be
 * sent chunked, 0 if it has a Content-Length (or none). */
int lb_rewrite_request(struct buf *b, const struct http_head *h, const char *client_ip, const char *host_header,
                       int trust_forwarded, const char *request_id, int https);

/* Appends the head of response r for the client to b: req_minor is the request's HTTP minor
 * version, *keep_alive whether the client connection is to be kept (in: as the request asked;
 * out: 0 if it must close: an HTTP/1.0 client whose body ends with the connection, or will_close,
 * the client connection closing anyway). The request's id is echoed as X-Request-Id (the
 * backend's own X-Request-Id fields are dropped); extra (NULL = none) is added as is, whole header
 * lines (Strict-Transport-Security on TLS). Returns 1 if the body is to be re-chunked. */
int lb_rewrite_response(struct buf *b, const struct http_head *r, int req_minor, int will_close, int *keep_alive,
                        const char *request_id, const char *extra);

/* WebSocket upgrades (RFC 6455 §4, RFC 9110 §7.8). A request is tunnelled only when it is a GET
 * over HTTP/1.1 without a body (no Content-Length above 0, no Transfer-Encoding) whose Connection
 * lists "upgrade" and whose one Upgrade field is exactly "websocket" (any case): then
 * lb_rewrite_is_websocket(h, 1) is 1. Any other request with an Upgrade field (another protocol
 * such as h2c, HTTP/1.0, a body, another method) is forwarded as a plain request, its Upgrade
 * field dropped like every hop-by-hop field, so the backend cannot switch it. For a response,
 * lb_rewrite_is_websocket(r, 0) is 1 when it has Connection: upgrade and Upgrade: websocket. */
int lb_rewrite_is_websocket(const struct http_head *h, int request);
/* Adds "Connection: upgrade" and "Upgrade: websocket" to the request head lb_rewrite_request just
 * appended to b (which ends with its empty line). */
void lb_rewrite_upgrade_request(struct buf *b);
/* Appends the 101 head for the client to b: "HTTP/1.1 101 REASON", the backend's end-to-end
 * fields (Sec-WebSocket-Accept, -Protocol, -Extensions, ...), X-Request-Id, then
 * "Connection: Upgrade" and "Upgrade: websocket"; no framing field. */
void lb_rewrite_switch(struct buf *b, const struct http_head *r, const char *request_id);

#endif
