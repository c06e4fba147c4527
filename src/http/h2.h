/* h2.h — HTTP/2 on the server side of a client connection (RFC 9113), with nghttp2.
 *
 * One HTTP stack: an HTTP/2 connection is a struct http_conn (server.h) whose bytes, once TLS
 * (ALPN "h2") has chosen the protocol, go to a struct h2_session instead of the HTTP/1.1 parser.
 * The session owns the nghttp2_session (framing, HPACK, flow control) and turns each request
 * stream into a struct http_conn of its own ("a stream's conn") that the handler serves exactly as
 * an HTTP/1.1 connection carrying one request (struct http_server_ops, the http_conn_* calls): the
 * balancer's proxy serves streams unchanged.
 *
 * Request side: the stream's HEADERS become the struct http_head the HTTP/1.1 parser makes
 * (:method, :path → target/path/query, :authority → Host, the other fields as they came, Cookie
 * fields joined with "; " as RFC 9113 §8.2.3 asks); a request whose HEADERS end the stream has no
 * body, one with Content-Length has that length, any other is HTTP_BODY_CHUNKED (the backend gets
 * Transfer-Encoding: chunked). RFC 9113 §8 checks are nghttp2's HTTP messaging rules (pseudo-header
 * rules, connection-specific fields and Upgrade, TE other than "trailers", upper-case names,
 * Content-Length against the DATA received: each a stream error PROTOCOL_ERROR) plus ours (the
 * :path and :authority characters the HTTP/1.1 parser allows; more than HTTP_MAX_HEADERS fields or
 * a field section over max_head → 431 on that stream; CONNECT → 501; a body over max_body → 413).
 * Body bytes go to on_body; the stream's flow-control window is given back (WINDOW_UPDATE) only for
 * the bytes the handler took, so http_conn_pause_body holds the client back: what arrives while
 * paused (at most one stream window) is kept and handed over on the resume.
 * A body that stops (no DATA for lim->body_timeout_ms while the handler owns the request and has
 * not paused it; 0 = no limit) ends that stream as on HTTP/1.1: 408 when no response has begun
 * (the rest of the body dropped), else RST_STREAM CANCEL; the handler gets on_abort.
 *
 * Response side: the handler writes an HTTP/1.1 response with http_conn_send, as on any
 * connection. The stream parses it (parser.h), sends its head as HEADERS (hop-by-hop fields
 * dropped, 1xx interim responses dropped) and its decoded body as DATA, ending the stream at the
 * end of the body. http_conn_send returns 0 once H2_STREAM_HIGH_WATER bytes wait for the client's
 * window, and on_drain follows when the client has taken them down to a quarter of it: the
 * client's WINDOW_UPDATEs drive the backend. A response the handler ends before its body is
 * complete (http_conn_response_done) resets the stream (INTERNAL_ERROR); the connection goes on.
 *
 * Lifetime: a stream's conn lives until the stream closes (the response sent, or a reset either
 * way); on_abort reaches the handler that still owns the request when the client resets the
 * stream, the stream fails, or the connection ends. As on HTTP/1.1, no call a handler makes on a
 * stream's conn calls back into the handler or frees anything: frames are written from a deferred
 * call (http_conn_h2_kick), resumed bodies are handed over there too.
 *
 * Per-address limits (climits.h, lim->climits; nothing when NULL): a stream handed to the handler
 * may hold a server connection until it ends, so it counts against max_conns_per_ip as an
 * HTTP/1.1 connection does. A connection holds max(1, such streams open) of its address's slots:
 * its own, taken at accept, serves its first stream, each further stream takes one more and gives
 * it back when it ends, however it ends (response done, reset either way, GOAWAY, timeout, the
 * connection closing). A stream that finds no slot is answered 503 with Retry-After, as an
 * HTTP/1.1 connection past the limit is (nothing reached a server, no request token was taken);
 * then each stream takes a token of rate_limit, or is answered 429 with the bucket's Retry-After.
 *
 * Limits (docs/SECURITY.md): H2_MAX_STREAMS concurrent streams, max_head as
 * SETTINGS_MAX_HEADER_LIST_SIZE, H2_STREAM_WINDOW / H2_CONN_WINDOW receive windows, at most
 * lim->h2_max_requests streams per connection (H2_MAX_REQUESTS_DEF) or a stream id from H2_LAST_IDS (then GOAWAY
 * NO_ERROR, the open ones finish, the client goes on on a new connection), and per H2_GLITCH_WINDOW_MS: H2_MAX_RESETS
 * resets: the client's RST_STREAMs (rapid reset) and those it provoked (MadeYouReset), H2_MAX_CONTROL PING, SETTINGS
 * and PRIORITY frames, H2_MAX_EMPTY_DATA empty DATA frames without END_STREAM — beyond any, GOAWAY ENHANCE_YOUR_CALM
 * and the connection closes. nghttp2 itself bounds CONTINUATION frames (8 per header block), queued SETTINGS/PING
 * acknowledgements (1000) and SETTINGS entries.
 *
 * Cost: a session keeps up to H2_SPARE_STREAMS freed streams (with their synthesized head and
 * buffers up to H2_SPARE_BUF each) for its next streams, freed after H2_SPARE_MS without a stream, and its HPACK
 * encoder uses no dynamic table (as HAProxy): per-response values such as X-Request-Id would only fill it and lengthen
 * every lookup. bench/instr.sh INSTR_MODE=h2 counts the instructions per stream. The per-address slots cost nothing
 * with climits off, and with max_conns_per_ip on (the default) two locked lookups in the table per stream beyond a
 * connection's first (taken, given back): about 450 instructions of 32,000 in that bench.
 *
 * Threading: a session and its streams live on their connection's loop thread. */
#ifndef AGORA_HTTP_H2_H
#define AGORA_HTTP_H2_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"

struct http_conn;
struct http_server_ops;
struct http_server_limits;
struct h2_session;
struct h2_stream;

#define H2_MAX_STREAMS       100
#define H2_STREAM_WINDOW     (256 * 1024)
#define H2_CONN_WINDOW       (1024 * 1024)
#define H2_STREAM_HIGH_WATER (128 * 1024)
#define H2_MAX_REQUESTS_DEF  100000                            /* http_server_limits.h2_max_requests */
#define H2_LAST_IDS          (0x7fffffff - 2 * H2_MAX_STREAMS) /* a stream id from here: GOAWAY */
#define H2_GLITCH_WINDOW_MS  10000
#define H2_MAX_RESETS        200
#define H2_MAX_CONTROL       1000
#define H2_MAX_EMPTY_DATA    1000
#define H2_SPARE_STREAMS     16          /* freed streams a session keeps for reuse */
#define H2_SPARE_BUF         (16 * 1024) /* a spare stream's buffers keep at most this storage */
#define H2_SPARE_MS          1000        /* no stream open for this long: the spares are freed */

/* ---- for server.c: the connection ---- */

/* A session on the connection c (which must outlive it), serving its streams with ops/ctx under
 * the limits lim (copied). Its SETTINGS are queued. tls: the streams report http_conn_is_tls. */
struct h2_session *h2_session_new(struct http_conn *c, struct loop *loop, const struct http_server_ops *ops, void *ctx,
                                  const struct http_server_limits *lim, int tls);
/* Aborts the streams a handler owns (on_abort), frees them and the session. Only from the
 * server's own callbacks (never from inside a handler's call). */
void h2_session_free(struct h2_session *s);
/* Feeds n bytes read from the client. Handler callbacks run inside. RC_OK, or RC_ERROR when the
 * connection must end: a GOAWAY is queued, send what h2_session_send gives, then close. */
int h2_session_recv(struct h2_session *s, const char *p, size_t n);
/* Hands over resumed request bodies, then appends frames to out while it holds fewer than limit
 * bytes, then calls on_drain for the streams whose output went down. RC_OK or RC_ERROR (close). */
int h2_session_send(struct h2_session *s, struct buf *out, size_t limit);
/* 1 while the connection should go on reading (0 after a GOAWAY once every stream is done). */
int h2_session_want_read(const struct h2_session *s);
/* 1 while frames wait to be produced (h2_session_send would append some). */
int h2_session_want_write(const struct h2_session *s);
/* Open streams. */
unsigned h2_session_streams(const struct h2_session *s);
/* 1 if response bytes wait that nothing can send: the client's flow-control window is shut. */
int h2_session_blocked(const struct h2_session *s);
/* Queues a GOAWAY with this code (0 NO_ERROR: idle or shutting down; the open streams finish). */
void h2_session_goaway(struct h2_session *s, uint32_t code);

/* ---- for server.c: the public http_conn_* calls on a stream's conn ---- */
int h2_stream_send(struct h2_stream *st, const void *p, size_t n);
void h2_stream_response_done(struct h2_stream *st);
void h2_stream_pause_body(struct h2_stream *st, int paused);

/* ---- from server.c, for h2.c ---- */

/* 1 while parent's server has room for one more stream's conn: its connections and streams
 * together below lim.max_conns (each may hold a backend connection, and max_conns is the
 * descriptor budget); else the stream is refused (RST_STREAM REFUSED_STREAM, retried by clients). */
int http_conn_stream_room(const struct http_conn *parent);
/* A stream's conn: shares parent's server, address and TLS flag; data NULL, request start now.
 * Counted against lim.max_conns until http_conn_stream_free, or until http_conn_stream_answered. */
struct http_conn *http_conn_stream_new(struct http_conn *parent, struct h2_stream *st, int tls);
void http_conn_stream_free(struct http_conn *sc);
/* The stream's request is answered here (h2.c's reject) and never holds a server connection: sc
 * stops counting against lim.max_conns. Its answer may wait for the client's window until
 * client_send; counted, such answers let one address fill the budget within max_conns_per_ip.
 * Their memory is bounded per connection by H2_MAX_STREAMS, as HAProxy and nginx bound streams. */
void http_conn_stream_answered(struct http_conn *sc);
/* The Retry-After of a 429 or 503 answered on the stream's conn sc (http_conn_respond_error). */
void http_conn_stream_retry_after(struct http_conn *sc, unsigned seconds);
/* Frames wait (or a body resumes): the parent writes them from a deferred call. */
void http_conn_h2_kick(struct http_conn *parent);

#endif
