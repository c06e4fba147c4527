/* parser.h — strict HTTP/1.1 message-head parser and chunked-body decoder (RFC 9112).
 *
 * The parser works on a complete-or-partial head held in a caller's buffer and never copies:
 * every string in the result points into that buffer, which must outlive the result, except the
 * path of an absolute-form target without one ("http://host" or "http://host?q"), which is a
 * constant "/" (a caller that moves the head must move only pointers inside it).
 * It is deliberately strict because the balancer faces the internet and must never forward a
 * request that a backend could frame differently (request smuggling). Rules, each answered with
 * an error status and the connection closed by the caller:
 *   - request line "METHOD SP request-target SP HTTP/1.x CRLF"; method a token; target
 *     origin-form ("/..."), absolute-form ("http://..."), "*" (OPTIONS only) or authority-form
 *     (CONNECT only); bad line → 400; line longer than max_line → 414; HTTP/2+ version → 505.
 *   - header "name: value" with name a token; whitespace before the colon, obs-fold (line that
 *     starts with SP/HTAB), bare CR or bare LF as line end, NUL or other CTLs (except HTAB) in
 *     values → 400. Head (line + headers) larger than max_head → 431; more than HTTP_MAX_HEADERS
 *     headers → 431.
 *   - framing: Content-Length must be 1*DIGIT (no sign, no spaces inside, < 2^62); several
 *     Content-Length headers or a list value → 400 even when equal; both Content-Length and
 *     Transfer-Encoding → 400; Transfer-Encoding other than exactly "chunked" (case-insensitive)
 *     → 501 for a request (unknown coding) or 400 when "chunked" is not last / repeated;
 *     Transfer-Encoding in an HTTP/1.0 request → 400. HTTP/1.1 request without Host, or more
 *     than one Host → 400.
 *   - Connection (every Connection header, each a comma list): an element naming Content-Length,
 *     Transfer-Encoding or Host (any case, any surrounding whitespace) → 400 for a request, 502 for
 *     a response. A proxy removes the fields a Connection header lists; removing one of these
 *     would forward a body without its framing, or the message without its Host (smuggling).
 * Lone LF line endings are rejected (only CRLF is accepted) for requests and responses alike.
 * Further details of the strictness:
 *   - the request-target is 1*( VCHAR / obs-text ) without '#'; absolute-form accepts only
 *     "http://" and "https://" (any case) with a non-empty authority and no userinfo; the Host
 *     value and authorities may hold only unreserved / sub-delims / '%' / ':' / '[' / ']';
 *   - the version is exactly "HTTP/" DIGIT "." DIGIT (case-sensitive): 1.0 is minor 0, 1.1 and
 *     any higher 1.x is minor 1, a major other than 1 is 505;
 *   - empty lines (CRLF) before a request line are skipped and counted in the bytes used;
 *   - Transfer-Encoding list elements must be tokens (no empty elements, no parameters).
 *
 * Limits: max_line bounds the request/status line without its CRLF; max_head bounds the whole head
 * through the final CRLFCRLF (leading empty lines included). Both are enforced on partial input
 * too: as soon as the bytes so far exceed a limit the answer is 414/431, never AGAIN. Heads are
 * never scanned beyond max_head bytes, whatever len is.
 *
 * Return codes (all parse functions): > 0 the head is complete and this many bytes were used;
 * HTTP_AGAIN (0) need more bytes (and the bytes so far are not yet over a limit);
 * HTTP_ERROR (-1, RC_ERROR of core/rc.h) malformed: out->error_status holds 400/414/431/501/505
 * for a request (502 for every malformed response: the client of a proxy sees Bad Gateway) and
 * out->error a short human-readable reason (static string). Only a return > 0 leaves the other fields meaningful.
 * The parser keeps no state between calls: after AGAIN, call it again on the grown buffer.
 * HTTP_AGAIN is 0, not RC_AGAIN (-2): these functions return a count of bytes, and "nothing
 * consumed yet" is the count 0 (the rule for counts in core/rc.h), as it is for http_chunked_feed
 * below; the client built on the parser (client.h: DONE 1, AGAIN 0, ERROR -1), the tests and the
 * fuzzer rely on it (`> 0`, `<= 0`). */
#ifndef AGORA_HTTP_PARSER_H
#define AGORA_HTTP_PARSER_H
#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

#define HTTP_AGAIN       0
#define HTTP_ERROR       RC_ERROR
#define HTTP_MAX_HEADERS 100

struct http_str {
    const char *p;
    size_t n;
};

struct http_header {
    struct http_str name;
    struct http_str value; /* leading/trailing OWS removed */
};

enum http_method {
    HTTP_OTHER = 0,
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_OPTIONS,
    HTTP_PATCH,
    HTTP_TRACE,
    HTTP_CONNECT
};

/* Framing of the body that follows the head. */
enum http_body_kind {
    HTTP_BODY_NONE = 0, /* no body (length 0, or a response that cannot have one) */
    HTTP_BODY_LENGTH,   /* content_length bytes */
    HTTP_BODY_CHUNKED,  /* chunked transfer coding */
    HTTP_BODY_EOF       /* response only: read until the connection closes */
};

struct http_head {
    /* request line (requests) */
    enum http_method method;
    struct http_str method_str;
    struct http_str target; /* as sent */
    struct http_str path;   /* origin-form: target up to '?'; absolute-form: the part after the
                               authority up to '?' ("/" when empty); "*" and authority-form
                               (CONNECT): the whole target */
    struct http_str query;  /* after '?', without it; n == 0 when absent or empty */
    /* status line (responses) */
    int status;
    struct http_str reason;
    int minor; /* HTTP/1.<minor>: 0 or 1 */
    int http2; /* the request came as an HTTP/2 stream (h2.h makes such heads; minor is 1) */

    struct http_header headers[HTTP_MAX_HEADERS];
    int nheaders;

    /* derived from the headers */
    enum http_body_kind body;
    int64_t content_length;     /* -1 when no Content-Length header */
    int keep_alive;             /* 1 if the connection may be reused after this message */
    int expect_continue;        /* request has "Expect: 100-continue" */
    int upgrade;                /* Connection: upgrade + Upgrade header present */
    struct http_str host;       /* Host header value (requests), n == 0 if none or empty; for an
                                   absolute-form target this is still the Host header, while RFC 9112
                                   §3.2.2 makes the target's authority the one to use */
    struct http_str connection; /* raw value of the first Connection header */
    int conn_names;             /* some Connection header lists a name other than close, keep-alive
                                   and upgrade: see http_connection_lists */

    int error_status;  /* on HTTP_ERROR */
    const char *error; /* on HTTP_ERROR */
};

struct http_limits {
    size_t max_line; /* request line; default 8192 (0 = default) */
    size_t max_head; /* whole head incl. request line; default 16384 (0 = default; capped at INT_MAX) */
};

/* Parses a request head from buf[0,len). lim may be NULL for defaults. See return codes above.
 * Sets body kind: CHUNKED, LENGTH (content_length > 0), or NONE. */
int http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_head *out);

/* Parses a response head. req_method is the method of the request it answers (HEAD responses
 * and 1xx/204/304 have no body; 2xx to CONNECT neither). Without Content-Length or chunked the
 * body kind is HTTP_BODY_EOF. Several identical Content-Length values are accepted in responses
 * (RFC 9110 §8.6), as separate headers or as a list; different ones are an error. Transfer-Encoding
 * must be exactly "chunked" and not combined with Content-Length or HTTP/1.0. Content-Length 0
 * gives HTTP_BODY_NONE; content_length keeps the header's value even when the body kind is NONE.
 * keep_alive is 0 for BODY_EOF, for 101 and for 2xx to CONNECT (the connection is no longer HTTP).
 * The status must be 100-599; the reason phrase may be empty and its SP may be missing.
 * Every error is reported with error_status 502. */
int http_parse_response(const char *buf, size_t len, enum http_method req_method, const struct http_limits *lim,
                        struct http_head *out);

/* Case-insensitive header lookup; returns the first match or NULL. */
const struct http_header *http_find_header(const struct http_head *h, const char *name);
/* 1 if any Connection header of h lists the field name `name` (case-insensitive): a proxy must not
 * forward that field (RFC 9110 §7.6.1). Cheap when h->conn_names is 0 (the usual case). */
int http_connection_lists(const struct http_head *h, struct http_str name);
/* 1 if the comma-separated header value list contains token (case-insensitive), else 0. */
int http_list_has_token(struct http_str value, const char *token);
/* 1 if the two strings are equal ignoring ASCII case. */
int http_str_ieq(struct http_str a, const char *b);
/* Canonical name of a known method; "OTHER" for HTTP_OTHER (method_str has the actual text). */
const char *http_method_name(enum http_method m);
/* Standard reason phrase for a status code ("OK", "Not Found", ...; "Unknown" otherwise). */
const char *http_reason(int status);

/* Streaming decoder for the chunked transfer coding. Zero-initialise (or call
 * http_chunked_init) before use. Chunk extensions are parsed and ignored but must be
 * syntactically valid (;token[=token|quoted-string], with the optional whitespace RFC 9112 §7.1.1
 * allows before ';' and around '=', but none before the CRLF); a chunk size is 1-16 hex digits
 * with no sign or spaces, below 2^62 (chunk size line: hex [ext] CRLF); trailers are parsed and
 * discarded (each must be a valid header line: token ':' field-value, no obs-fold); bare LF or
 * bare CR is an error, and so is a size or trailer line longer than 4096 bytes (CRLF excluded).
 * The decoder keeps no pointers into the input between calls, so it works fed one byte at a time. */
struct http_chunked {
    int state;
    uint64_t remaining; /* bytes left in the current chunk */
    unsigned line_len;  /* bytes of the current size/trailer line seen, bounded */
    int done;           /* 1 after the last chunk and trailers */
    uint64_t total;     /* decoded bytes so far */
};
void http_chunked_init(struct http_chunked *d);
/* Feeds in[0,len). Decoded data is reported as at most one contiguous span per call:
 * *data and *data_len point into `in` (or are NULL/0). Returns the number of input bytes consumed
 * (>= 0; may be less than len — call again with the rest; consumption stops right after a data
 * span so the caller can handle it, and right after the end of the body so pipelined bytes are
 * left untouched), or HTTP_ERROR (-1) on malformed input. d->done is set once the terminating
 * zero chunk and its trailer section have been consumed; later calls consume nothing and return 0.
 * Errors are sticky: once HTTP_ERROR was returned, every later call returns it too. */
long http_chunked_feed(struct http_chunked *d, const char *in, size_t len, const char **data, size_t *data_len);

#endif
