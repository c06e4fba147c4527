/* client.h — the HTTP/1.1 client: one request out, one response read into a buffer; and the
 * response reader every client in the code base shares, the balancer's streaming one included.
 *
 * One request per connection. The client connects (net_connect, non-blocking), writes the request
 * (request line, Host, the caller's headers in order, "Connection: close", Content-Length when
 * there is a body, the body), reads the response head with http_parse_response and the body with
 * the framing that head gives (Content-Length, chunked through http_chunked_feed, or up to the
 * close), and closes. All of it is one state machine, struct http_client, advanced by
 * http_client_step() whenever its descriptor is ready for c->want. Two drivers run it:
 *   - http_client_watch: on a loop, non-blocking, with a timeout timer and a completion callback
 *     (the balancer's health checker);
 *   - http_client_fetch: blocking, poll() on the one descriptor until a deadline (the command
 *     line: agora ctl, agora up).
 * The response reader alone (http_client_init + http_client_feed / http_client_eof) needs no
 * socket: bytes from anywhere go in, the same outcome comes out.
 *
 * Strictness and limits. The request is checked before anything is sent (EREQUEST): the method
 * and header names are tokens, the target is 1*(VCHAR / obs-text), Host and header values hold no
 * control character but HTAB — a caller's string can never add a header or end the head. The
 * response head follows every rule of parser.h; a head over max_head bytes (default 16384) is
 * malformed, as the parser says. Interim 1xx responses (but 101) are skipped; their bytes count
 * towards max_head, so a stream of them ends too. The decoded body is capped at max_body bytes
 * (default 16 MiB): a Content-Length over the cap fails at once, a chunked or close-delimited body
 * as soon as it passes it (ETOOLARGE). A connection that ends (or fails to read) before the framing
 * says the response is complete is ECLOSED; it completes a close-delimited body (as in the
 * proxy). Bytes after the response are ignored. While the request is being written nothing is
 * read: an early answer is seen only once the request is out (requests here are small).
 *
 * Outcome. http_client_step/feed/eof return HTTP_CLIENT_DONE (the response is complete: status,
 * head and body are set), HTTP_AGAIN (wait until the descriptor is ready for c->want) or
 * HTTP_ERROR (c->error says what failed, c->phase where, c->err the errno for ECONNECT/ESEND,
 * c->detail a static reason for EREQUEST/EMALFORMED). After DONE or ERROR the descriptor is
 * closed; the result stays readable until http_client_free. With head_only the response is DONE
 * as soon as its final head is parsed and the body is not read (a health check needs the status).
 *
 * Ownership. struct http_client lives in its owner (no allocation of its own but its buffers);
 * http_client_free releases everything — descriptor, loop registration, timer, buffers — and may be
 * called at any time after http_client_init or http_client_start (even a failed start), in any
 * phase: a watched client freed before it completed never calls its callback (cancellation).
 *
 * The response reader (struct http_reader) is the part every client of the code base shares: it
 * takes one response out of a byte stream — heads through http_parse_response, interim 1xx heads,
 * the three framings (Content-Length, chunked through http_chunked_feed, up to the close) — and
 * hands what it finds to a sink: the buffered client above keeps the head and body; the
 * balancer's backend side (src/lb/relay.c) rewrites the head and streams the body to its client,
 * pausing when the client's queue is full. The connections differ (the client owns one
 * descriptor per request; the balancer's come from its upstream pool and are reused), the reading
 * is one piece of code. */
#ifndef AGORA_HTTP_CLIENT_H
#define AGORA_HTTP_CLIENT_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/net.h"
#include "http/parser.h"

#define HTTP_CLIENT_DONE 1 /* with HTTP_AGAIN (0) and HTTP_ERROR (-1) from parser.h */

enum http_client_phase {
    HTTP_CLIENT_CONNECTING = 0,
    HTTP_CLIENT_SENDING,
    HTTP_CLIENT_HEAD, /* waiting for (the rest of) the response head */
    HTTP_CLIENT_BODY,
    HTTP_CLIENT_FINISHED /* the response is complete */
};

enum http_client_error {
    HTTP_CLIENT_OK = 0,
    HTTP_CLIENT_EREQUEST,   /* the request has a field that is not allowed (detail says which) */
    HTTP_CLIENT_ECONNECT,   /* the connection could not be made (err) */
    HTTP_CLIENT_ESEND,      /* writing the request failed (err) */
    HTTP_CLIENT_ECLOSED,    /* the connection ended before the response was complete */
    HTTP_CLIENT_EMALFORMED, /* not a valid response (detail: the parser's reason); head too large too */
    HTTP_CLIENT_ETOOLARGE,  /* the body is larger than max_body */
    HTTP_CLIENT_ETIMEOUT    /* the deadline passed (phase says while doing what) */
};

struct http_client_header {
    const char *name, *value;
};

struct http_client_req {
    const char *method;                       /* a token: "GET", "POST", ... */
    const char *target;                       /* origin-form, e.g. "/servers" */
    const char *host;                         /* the Host header's value */
    const struct http_client_header *headers; /* sent after Host, in this order */
    size_t nheaders;
    const char *body; /* NULL: no body and no Content-Length; else body_len bytes (even 0) */
    size_t body_len;
};

struct http_client_opts {
    size_t max_head; /* response head limit, interim 1xx heads included (0 = 16384) */
    size_t max_body; /* decoded body limit (0 = 16 MiB) */
    int head_only;   /* DONE once the final head is parsed; the body is not read */
};

/* ---- the response reader ---------------------------------------------------------------------
 *
 * http_reader_run(r, in, sink, ctx) parses what `in` holds and consumes what it used:
 *   - interim heads (1xx; 101 too unless final_101) go to sink->on_interim and are dropped; their
 *     bytes count towards max_head, so an endless stream of them is an error;
 *   - the final head goes to sink->on_head, its pointers into `in` (valid during the call; len is
 *     its size in bytes; it is consumed after the call);
 *   - decoded body bytes go to sink->on_body, in as many pieces as the input and framing give.
 * Each callback returns 1 to go on or -1 to stop the run at once (the sink ended the exchange, or
 * wants nothing more: a head-only read); on_body may return 0: its piece is taken and the run
 * pauses, to be run again (on the same `in`) when the sink can take more. on_interim may be NULL.
 * Returns HTTP_READER_DONE once the response is complete (the bytes after it stay in `in`),
 * HTTP_AGAIN when it needs more bytes, HTTP_READER_PAUSED, HTTP_READER_STOPPED, or HTTP_ERROR with
 * r->error set to a static reason (malformed head, head too large, malformed chunked body). After
 * DONE, STOPPED or ERROR the reader does nothing more until it is initialised again.
 * http_reader_eof(r) says what the end of the stream means: DONE when it completes the response (a
 * close-delimited body, or already DONE), else HTTP_ERROR (the response was cut short). */
#define HTTP_READER_DONE    1
#define HTTP_READER_PAUSED  2
#define HTTP_READER_STOPPED 3

enum http_reader_phase { HTTP_READER_HEAD = 0, HTTP_READER_BODY, HTTP_READER_END };

struct http_reader_sink {
    int (*on_interim)(void *ctx, const struct http_head *h);
    int (*on_head)(void *ctx, const struct http_head *h, const char *p, size_t len);
    int (*on_body)(void *ctx, const char *p, size_t n);
};

struct http_reader {
    enum http_reader_phase phase;
    enum http_method method; /* of the request: HEAD and CONNECT change the framing */
    int final_101;           /* 101 Switching Protocols is the final head (else interim) */
    int kind;                /* the body's framing (enum http_body), once the head is parsed */
    uint64_t left;           /* Content-Length bytes still to come */
    size_t max_head;         /* per head, and for all interim heads together */
    size_t interim_bytes;
    struct http_chunked chunked;
    int outcome;       /* once the phase is END: what every later run returns */
    const char *error; /* static reason after HTTP_ERROR */
};

/* Prepares r for the response to a request with method m; max_head 0 = 16384. */
void http_reader_init(struct http_reader *r, enum http_method m, size_t max_head);
int http_reader_run(struct http_reader *r, struct buf *in, const struct http_reader_sink *sink, void *ctx);
int http_reader_eof(struct http_reader *r);

/* ---- the buffered client ---------------------------------------------------------------------- */

struct http_client;
/* Completion on a loop: called once, from the loop, when the client is DONE or failed (c->error).
 * The descriptor, watch and timer are gone already and the client touches nothing after the call
 * returns, so fn may free c (http_client_free) and the memory holding it. */
typedef void http_client_fn(struct http_client *c, void *data);

struct http_client {
    /* the outcome (see the contract above) */
    enum http_client_phase phase;
    enum http_client_error error;
    int err;               /* errno for ECONNECT and ESEND */
    const char *detail;    /* static reason for EREQUEST and EMALFORMED, else NULL */
    int status;            /* of the final response, once its head is parsed */
    struct http_head head; /* the final head; its strings point into headbuf */
    struct buf body;       /* the decoded body */
    int want;              /* LOOP_READ or LOOP_WRITE: what the next step waits for */
    int fd;                /* -1 when closed */

    /* private */
    struct http_reader reader;
    size_t max_body;
    int head_only;
    struct buf out, in, headbuf;
    struct loop *loop; /* while watched */
    struct loop_timer timer;
    http_client_fn *fn;
    void *data;
};

/* Prepares c to read the response to a request with method m (no socket: feed it yourself).
 * o may be NULL for the defaults. Phase HEAD. */
void http_client_init(struct http_client *c, enum http_method m, const struct http_client_opts *o);
/* Feeds response bytes; returns DONE, AGAIN (more bytes needed) or ERROR (see above). */
int http_client_feed(struct http_client *c, const void *p, size_t n);
/* The byte stream ended: DONE if that completes the response (close-delimited body, or already
 * DONE), else ERROR (ECLOSED). */
int http_client_eof(struct http_client *c);

/* Initialises c, checks and serialises req, and starts connecting to a. Returns 0 (phase
 * CONNECTING, want LOOP_WRITE), or HTTP_ERROR with c->error EREQUEST or ECONNECT (c->err: e.g.
 * EMFILE when no descriptor is left; see net_local_shortage). Either way call http_client_free. */
int http_client_start(struct http_client *c, const struct net_addr *a, const struct http_client_req *req,
                      const struct http_client_opts *o);
/* Advances a started client without blocking; events are the readiness seen (unused but for
 * documentation: the step acts on its phase). Returns DONE, AGAIN (wait for c->want) or ERROR. */
int http_client_step(struct http_client *c, int events);
/* The caller's deadline passed: fails c with ETIMEOUT in its current phase and closes it. */
void http_client_timeout(struct http_client *c);

/* Drives a started client on loop: fn(c, data) once it completes or fails, or after timeout_ms
 * with ETIMEOUT. Returns 0, or -errno when the descriptor cannot be watched (fn is then never
 * called; free c). */
int http_client_watch(struct http_client *c, struct loop *loop, unsigned timeout_ms, http_client_fn *fn, void *data);
/* Blocking: start + step until the response is complete or timeout_ms (the whole exchange) has
 * passed. Returns 0 with the response in c, or HTTP_ERROR (c->error set). Free c either way. */
int http_client_fetch(struct http_client *c, const struct net_addr *a, const struct http_client_req *req,
                      const struct http_client_opts *o, unsigned timeout_ms);

/* Closes and frees everything c holds (see Ownership); c may be initialised again afterwards. */
void http_client_free(struct http_client *c);

#endif
