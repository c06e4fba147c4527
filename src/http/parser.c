/* parser.c — strict HTTP/1.1 head parser and streaming chunked decoder (RFC 9112); see parser.h.
 *
 * One module although over 700 lines: requests, responses and chunked bodies share the byte
 * classes, the list scanner and the framing rules, and the rules that must agree with each other
 * (what frames a body: the smuggling defences) are easiest to keep in agreement side by side.
 *
 * One forward pass over the bytes: bytes are classified through a 256-entry table built at
 * compile time (long runs of target and field-value bytes 8 at a time, see skip_field), and the
 * scan that validates a line is also the one that finds its end, so each byte is looked at once.
 * Nothing is copied or allocated; results point into the caller's buffer. The head parser keeps
 * no state between calls: a partial head is parsed again from its start when more bytes arrive
 * (heads are bounded by max_head, so the rescan is cheap), and the scan never looks past max_head
 * bytes. */
#include "http/parser.h"

#include <limits.h>
#include <string.h>

#define DEFAULT_MAX_LINE  8192
#define DEFAULT_MAX_HEAD  16384
#define LENGTH_LIMIT      ((uint64_t)1 << 62) /* Content-Length and chunk sizes must be below this */
#define CHUNK_LINE_MAX    4096                /* chunk-size and trailer line content, CRLF excluded */
#define CHUNK_SIZE_DIGITS 16

/* ---- character classes ------------------------------------------------------------------------ */

enum {
    C_TCHAR = 1,  /* token character (RFC 9110 §5.6.2) */
    C_FIELD = 2,  /* field value: VCHAR / obs-text / SP / HTAB */
    C_TARGET = 4, /* request-target: VCHAR / obs-text, except '#' (no fragment on the wire) */
    C_HOST = 8,   /* Host value / authority: unreserved / sub-delims / pct-encoded / ':' '[' ']' */
    C_QDTEXT = 16 /* quoted-string text: C_FIELD minus '"' and '\' */
};

#define IS_ALPHA(c) (((c) >= 'A' && (c) <= 'Z') || ((c) >= 'a' && (c) <= 'z'))
#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_TSYM(c)                                                                                                     \
    ((c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' ||  \
     (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define IS_HSYM(c)                                                                                                     \
    ((c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || (c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' ||  \
     (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=' || (c) == ':' ||   \
     (c) == '[' || (c) == ']' || (c) == '%')
#define IS_VCHAR_OBS(c) ((c) >= 0x21 && (c) != 0x7f)
#define IS_FIELD(c)     (IS_VCHAR_OBS(c) || (c) == ' ' || (c) == '\t')
#define CLASS(c)                                                                                                       \
    ((IS_ALPHA(c) || IS_DIGIT(c) || IS_TSYM(c) ? C_TCHAR : 0) | (IS_FIELD(c) ? C_FIELD : 0) |                          \
     (IS_VCHAR_OBS(c) && (c) != '#' ? C_TARGET : 0) | (IS_ALPHA(c) || IS_DIGIT(c) || IS_HSYM(c) ? C_HOST : 0) |        \
     (IS_FIELD(c) && (c) != '"' && (c) != '\\' ? C_QDTEXT : 0))
#define HEXVAL(c)                                                                                                      \
    (IS_DIGIT(c)                ? (c) - '0'                                                                            \
     : (c) >= 'a' && (c) <= 'f' ? (c) - 'a' + 10                                                                       \
     : (c) >= 'A' && (c) <= 'F' ? (c) - 'A' + 10                                                                       \
                                : -1)
#define ROW(F, b)                                                                                                      \
    F(b), F(b + 1), F(b + 2), F(b + 3), F(b + 4), F(b + 5), F(b + 6), F(b + 7), F(b + 8), F(b + 9), F(b + 10),         \
        F(b + 11), F(b + 12), F(b + 13), F(b + 14), F(b + 15)
#define TABLE(F)                                                                                                       \
    {                                                                                                                  \
        ROW(F, 0x00), ROW(F, 0x10), ROW(F, 0x20), ROW(F, 0x30), ROW(F, 0x40), ROW(F, 0x50), ROW(F, 0x60),              \
            ROW(F, 0x70), ROW(F, 0x80), ROW(F, 0x90), ROW(F, 0xa0), ROW(F, 0xb0), ROW(F, 0xc0), ROW(F, 0xd0),          \
            ROW(F, 0xe0), ROW(F, 0xf0)                                                                                 \
    }

static const uint8_t cls[256] = TABLE(CLASS);
static const int8_t hexval[256] = TABLE(HEXVAL);

#define IS(ch, c) (cls[(uint8_t)(ch)] & (c))

/* Word-at-a-time scanning (SWAR): bytes are checked 8 at a time for the few values that end a run
 * of target or field-value characters, and only a word that holds one is looked at byte by byte.
 * HAS_LESS(x, n) is nonzero iff some byte of x is below n (n <= 128; exact, no false positives). */
#define ONES           UINT64_C(0x0101010101010101)
#define HAS_LESS(x, n) (((x)-ONES * (n)) & ~(x) & (ONES * 0x80))
#define HAS_BYTE(x, b) HAS_LESS((x) ^ (ONES * (b)), 1)

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* Returns the first byte in [p, end) that is not a field-value character (VCHAR/obs-text/SP/HTAB). */
static const char *skip_field(const char *p, const char *end)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t x = load64(p);
            if (HAS_LESS(x, 0x20) | HAS_BYTE(x, 0x7f)) /* a CTL or DEL: CR, HTAB, ... */
                break;
            p += 8;
        }
        for (const char *stop = end - p > 8 ? p + 8 : end; p < stop; p++)
            if (!IS(*p, C_FIELD))
                return p;
        if (p == end)
            return p;
    }
}

/* Returns the first byte in [p, end) that is not a request-target character. */
static const char *skip_target(const char *p, const char *end)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t x = load64(p);
            if (HAS_LESS(x, 0x21) | HAS_BYTE(x, 0x7f) | HAS_BYTE(x, '#')) /* SP, CTL, DEL, '#' */
                break;
            p += 8;
        }
        for (const char *stop = end - p > 8 ? p + 8 : end; p < stop; p++)
            if (!IS(*p, C_TARGET))
                return p;
        if (p == end)
            return p;
    }
}

/* Returns the first byte in [p, end) that is not a token character (names are short: unrolled). */
static const char *skip_token(const char *p, const char *end)
{
    while (end - p >= 4) {
        if (!IS(p[0], C_TCHAR))
            return p;
        if (!IS(p[1], C_TCHAR))
            return p + 1;
        if (!IS(p[2], C_TCHAR))
            return p + 2;
        if (!IS(p[3], C_TCHAR))
            return p + 3;
        p += 4;
    }
    while (p < end && IS(*p, C_TCHAR))
        p++;
    return p;
}

static inline unsigned char lower(unsigned char c) { return (unsigned char)(c - 'A') < 26 ? c | 0x20 : c; }

/* 1 if p[0,n) equals the lower-case string lit (also n bytes) ignoring ASCII case. */
static int lit_ieq(const char *p, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* 1 if a[0,n) equals b[0,n) ignoring ASCII case. */
static int both_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int all_class(struct http_str s, int c)
{
    for (size_t i = 0; i < s.n; i++)
        if (!IS(s.p[i], c))
            return 0;
    return 1;
}

/* Iterates over the elements of a comma-separated list value; each element is OWS-trimmed and
 * may be empty. */
struct list_iter {
    const char *p, *end;
    int done;
};

static int list_next(struct list_iter *it, struct http_str *elem)
{
    const char *s = it->p, *e, *comma;
    if (it->done)
        return 0;
    comma = s < it->end ? memchr(s, ',', (size_t)(it->end - s)) : NULL;
    e = comma ? comma : it->end;
    if (comma)
        it->p = comma + 1;
    else
        it->done = 1;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    elem->p = s;
    elem->n = (size_t)(e - s);
    return 1;
}

/* ---- public helpers --------------------------------------------------------------------------- */

int http_str_ieq(struct http_str a, const char *b)
{
    size_t n = strlen(b);
    if (a.n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

const struct http_header *http_find_header(const struct http_head *h, const char *name)
{
    for (int i = 0; i < h->nheaders; i++)
        if (http_str_ieq(h->headers[i].name, name))
            return &h->headers[i];
    return NULL;
}

int http_list_has_token(struct http_str value, const char *token)
{
    struct list_iter it;
    struct http_str e;
    if (value.n == 0)
        return 0;
    it = (struct list_iter){value.p, value.p + value.n, 0};
    while (list_next(&it, &e))
        if (http_str_ieq(e, token))
            return 1;
    return 0;
}

int http_connection_lists(const struct http_head *h, struct http_str name)
{
    if (!h->conn_names)
        return 0;
    for (int i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->headers[i];
        struct list_iter it = {hd->value.p, hd->value.p + hd->value.n, 0};
        struct http_str e;
        if (hd->name.n != 10 || !lit_ieq(hd->name.p, "connection", 10))
            continue;
        while (list_next(&it, &e))
            if (e.n == name.n && both_ieq(e.p, name.p, name.n))
                return 1;
    }
    return 0;
}

const char *http_method_name(enum http_method m)
{
    switch (m) {
    case HTTP_GET:
        return "GET";
    case HTTP_HEAD:
        return "HEAD";
    case HTTP_POST:
        return "POST";
    case HTTP_PUT:
        return "PUT";
    case HTTP_DELETE:
        return "DELETE";
    case HTTP_OPTIONS:
        return "OPTIONS";
    case HTTP_PATCH:
        return "PATCH";
    case HTTP_TRACE:
        return "TRACE";
    case HTTP_CONNECT:
        return "CONNECT";
    case HTTP_OTHER:
        break;
    }
    return "OTHER";
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* ---- head parser ------------------------------------------------------------------------------ */

/* What the header scan gathers for the framing decision made after the last header. */
struct scan {
    struct http_head *h;
    int is_req;
    int host_n, cl_n, te_n;
    int te_chunked, te_chunked_last, te_unknown, te_bad;
    int conn_close, conn_keep, conn_upgrade, upgrade_hdr, expect;
};

/* Header names a Connection header may not list: removing them hop by hop would change how the
 * message is framed (Content-Length, Transfer-Encoding) or where it goes (Host). RFC 9110 §7.6.1
 * forbids connection options for fields meant for every recipient; a proxy that honoured one of
 * these would forward a body without its framing (request smuggling). */
static const char *const conn_forbidden[] = {"content-length", "transfer-encoding", "host"};

static int fail(struct http_head *h, int status, const char *msg)
{
    h->error_status = status;
    h->error = msg;
    return HTTP_ERROR;
}

static void reset_head(struct http_head *h)
{
    static const struct http_str none = {NULL, 0};
    h->method = HTTP_OTHER;
    h->method_str = h->target = h->path = h->query = h->reason = h->host = h->connection = none;
    h->status = 0;
    h->minor = 0;
    h->nheaders = 0;
    h->body = HTTP_BODY_NONE;
    h->content_length = -1;
    h->keep_alive = h->expect_continue = h->upgrade = h->conn_names = h->http2 = 0;
    h->error_status = 0;
    h->error = NULL;
}

/* The start line is incomplete: 414 when its bytes so far already exceed max_line, else AGAIN
 * (the caller then checks max_head). A final CR is not counted (it may begin the CRLF). */
static int line_again(struct http_head *h, const char *line, const char *end, size_t max_line, const char *msg)
{
    size_t n = (size_t)(end - line);
    if (n > 0 && end[-1] == '\r')
        n--;
    return n > max_line ? fail(h, 414, msg) : HTTP_AGAIN;
}

static enum http_method method_from(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "HEAD", 4) == 0)
            return HTTP_HEAD;
        if (memcmp(m, "POST", 4) == 0)
            return HTTP_POST;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return HTTP_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return HTTP_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return HTTP_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return HTTP_CONNECT;
        break;
    }
    return HTTP_OTHER;
}

/* 1 if the n available bytes at p (n may be < 8) can begin "HTTP/d.d" (case-sensitive). */
static int version_prefix_ok(const char *p, size_t n)
{
    static const char pat[] = "HTTP/0.0";
    for (size_t i = 0; i < n && i < 8; i++)
        if (pat[i] == '0' ? !IS_DIGIT(p[i]) : p[i] != pat[i])
            return 0;
    return 1;
}

/* Checks an authority (host [":" port]) made of C_HOST characters; 1 if valid. */
static int valid_authority(const char *p, size_t n, int need_port)
{
    const char *colon = NULL;
    if (n == 0 || !all_class((struct http_str){p, n}, C_HOST))
        return 0;
    for (size_t i = n; i-- > 0;)
        if (p[i] == ':' || p[i] == ']') {
            colon = p[i] == ':' ? p + i : NULL;
            break;
        }
    if (!colon)
        return !need_port;
    if (colon == p || colon + 1 == p + n)
        return 0;
    for (const char *q = colon + 1; q < p + n; q++)
        if (!IS_DIGIT(*q))
            return 0;
    return 1;
}

/* Validates the request-target form against the method and fills path and query. */
static int split_target(struct http_head *h)
{
    const char *t = h->target.p, *e = t + h->target.n, *q, *a;
    if (h->method == HTTP_CONNECT) {
        if (!valid_authority(t, h->target.n, 1))
            return fail(h, 400, "CONNECT requires an authority-form target (host:port)");
        h->path = h->target;
        return 0;
    }
    if (t[0] == '/') {
        q = memchr(t, '?', h->target.n);
    } else if (h->target.n == 1 && t[0] == '*') {
        if (h->method != HTTP_OPTIONS)
            return fail(h, 400, "'*' target is only allowed with OPTIONS");
        h->path = h->target;
        return 0;
    } else {
        /* absolute-form: only http and https URIs with a non-empty authority and no userinfo */
        if (h->target.n >= 7 && lit_ieq(t, "http://", 7))
            a = t + 7;
        else if (h->target.n >= 8 && lit_ieq(t, "https://", 8))
            a = t + 8;
        else
            return fail(h, 400, "invalid request target");
        for (t = a; t < e && *t != '/' && *t != '?'; t++)
            ;
        if (!valid_authority(a, (size_t)(t - a), 0))
            return fail(h, 400, "invalid authority in request target");
        q = t < e ? memchr(t, '?', (size_t)(e - t)) : NULL;
        if (t == e || t == q) {
            h->path = (struct http_str){"/", 1};
            if (q)
                h->query = (struct http_str){q + 1, (size_t)(e - q - 1)};
            return 0;
        }
    }
    h->path = (struct http_str){t, (size_t)((q ? q : e) - t)};
    if (q)
        h->query = (struct http_str){q + 1, (size_t)(e - q - 1)};
    return 0;
}

/* Parses the request line at *pp; on success advances *pp past its CRLF and returns 1. */
static int parse_request_line(const char **pp, const char *end, size_t max_line, struct http_head *h)
{
    static const char toolong[] = "request line too long";
    const char *p = *pp, *line = p, *m = p, *t;
    int major, minor;

    p = skip_token(p, end);
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (p == m)
        return fail(h, 400, *p == ' ' ? "empty method" : "invalid character in method");
    if (*p != ' ')
        return fail(h, 400, *p == '\r' || *p == '\n' ? "malformed request line" : "invalid character in method");
    h->method_str = (struct http_str){m, (size_t)(p - m)};
    h->method = method_from(m, (size_t)(p - m));

    t = ++p;
    p = skip_target(p, end);
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (p == t)
        return fail(h, 400, "empty request target");
    if (*p != ' ')
        return fail(h, 400, *p == '\r' || *p == '\n' ? "missing HTTP version" : "invalid character in request target");
    h->target = (struct http_str){t, (size_t)(p - t)};

    p++;
    if (!version_prefix_ok(p, (size_t)(end - p)))
        return fail(h, 400, "invalid HTTP version");
    if (end - p < 8)
        return line_again(h, line, end, max_line, toolong);
    major = p[5] - '0';
    minor = p[7] - '0';
    p += 8;
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (*p != '\r')
        return fail(h, 400, *p == '\n' ? "bare LF in request line" : "invalid HTTP version");
    if ((size_t)(p - line) > max_line)
        return fail(h, 414, toolong);
    if (p + 1 == end)
        return HTTP_AGAIN;
    if (p[1] != '\n')
        return fail(h, 400, "bare CR in request line");
    if (major != 1)
        return fail(h, 505, "HTTP version not supported");
    h->minor = minor > 0;
    if (split_target(h) < 0)
        return HTTP_ERROR;
    *pp = p + 2;
    return 1;
}

/* Parses the status line at *pp; on success advances *pp past its CRLF and returns 1. */
static int parse_status_line(const char **pp, const char *end, size_t max_line, struct http_head *h)
{
    static const char toolong[] = "status line too long";
    const char *p = *pp, *line = p, *r;
    int major, minor, status = 0;

    if (!version_prefix_ok(p, (size_t)(end - p)))
        return fail(h, 502, "invalid HTTP version in status line");
    if (end - p < 8)
        return line_again(h, line, end, max_line, toolong);
    major = p[5] - '0';
    minor = p[7] - '0';
    p += 8;
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (*p++ != ' ')
        return fail(h, 502, "invalid status line");
    for (int i = 0; i < 3; i++, p++) {
        if (p == end)
            return line_again(h, line, end, max_line, toolong);
        if (!IS_DIGIT(*p))
            return fail(h, 502, "invalid status code");
        status = status * 10 + (*p - '0');
    }
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (*p == ' ')
        p++;
    else if (*p != '\r')
        return fail(h, 502, *p == '\n' ? "bare LF in status line" : "invalid status code");
    r = p;
    p = skip_field(p, end);
    if (p == end)
        return line_again(h, line, end, max_line, toolong);
    if (*p != '\r')
        return fail(h, 502, *p == '\n' ? "bare LF in status line" : "invalid character in reason phrase");
    if ((size_t)(p - line) > max_line)
        return fail(h, 502, toolong);
    if (p + 1 == end)
        return HTTP_AGAIN;
    if (p[1] != '\n')
        return fail(h, 502, "bare CR in status line");
    if (major != 1)
        return fail(h, 502, "unsupported HTTP version in response");
    if (status < 100 || status > 599)
        return fail(h, 502, "invalid status code");
    h->minor = minor > 0;
    h->status = status;
    h->reason = (struct http_str){r, (size_t)(p - r)};
    *pp = p + 2;
    return 1;
}

/* Parses 1*DIGIT below 2^62 into *v. Returns NULL, or why it is not a valid length (the message). */
static const char *parse_length(struct http_str s, int64_t *v)
{
    uint64_t x = 0;
    if (s.n == 0)
        return "invalid Content-Length";
    for (size_t i = 0; i < s.n; i++) {
        unsigned d = (unsigned)(unsigned char)s.p[i] - '0';
        if (d > 9)
            return "invalid Content-Length";
        x = x * 10 + d;
        if (x >= LENGTH_LIMIT)
            return "Content-Length too large";
    }
    *v = (int64_t)x;
    return NULL;
}

static int on_content_length(struct scan *st, struct http_str v)
{
    struct http_head *h = st->h;
    struct list_iter it = {v.p, v.p + v.n, 0};
    struct http_str e;
    int64_t n;
    const char *why;

    if (st->is_req) {
        /* requests: exactly one header holding exactly one value, even a repeated equal one */
        if (st->cl_n++)
            return fail(h, 400, "multiple Content-Length headers");
        if ((why = parse_length(v, &n)) != NULL)
            return fail(h, 400, why);
        h->content_length = n;
        return 0;
    }
    /* responses: a list of identical values is tolerated (RFC 9110 §8.6) */
    st->cl_n++;
    while (list_next(&it, &e)) {
        if ((why = parse_length(e, &n)) != NULL)
            return fail(h, 502, why);
        if (h->content_length >= 0 && h->content_length != n)
            return fail(h, 502, "conflicting Content-Length values");
        h->content_length = n;
    }
    return 0;
}

static void on_transfer_encoding(struct scan *st, struct http_str v)
{
    struct list_iter it = {v.p, v.p + v.n, 0};
    struct http_str e;
    st->te_n++;
    while (list_next(&it, &e)) {
        if (e.n == 0 || !all_class(e, C_TCHAR)) {
            st->te_bad = 1;
        } else if (e.n == 7 && lit_ieq(e.p, "chunked", 7)) {
            st->te_chunked++;
            st->te_chunked_last = 1;
        } else {
            st->te_unknown = 1;
            st->te_chunked_last = 0;
        }
    }
}

static int on_connection(struct scan *st, struct http_str v)
{
    struct list_iter it = {v.p, v.p + v.n, 0};
    struct http_str e;
    if (!st->h->connection.p)
        st->h->connection = v;
    while (list_next(&it, &e)) {
        if (e.n == 5 && lit_ieq(e.p, "close", 5)) {
            st->conn_close = 1;
        } else if (e.n == 10 && lit_ieq(e.p, "keep-alive", 10)) {
            st->conn_keep = 1;
        } else if (e.n == 7 && lit_ieq(e.p, "upgrade", 7)) {
            st->conn_upgrade = 1;
        } else if (e.n) {
            st->h->conn_names = 1;
            for (size_t i = 0; i < sizeof(conn_forbidden) / sizeof(conn_forbidden[0]); i++)
                if (http_str_ieq(e, conn_forbidden[i]))
                    return fail(st->h, st->is_req ? 400 : 502,
                                "Connection header lists Content-Length, Transfer-Encoding or Host");
        }
    }
    return 0;
}

/* Looks at one parsed header field; returns 0 or HTTP_ERROR. */
static int on_header(struct scan *st, const struct http_header *hd)
{
    const char *n = hd->name.p;
    switch (hd->name.n) {
    case 4:
        if (st->is_req && lit_ieq(n, "host", 4)) {
            if (st->host_n++)
                return fail(st->h, 400, "multiple Host headers");
            if (!all_class(hd->value, C_HOST))
                return fail(st->h, 400, "invalid Host header");
            st->h->host = hd->value;
        }
        break;
    case 6:
        if (lit_ieq(n, "expect", 6) && http_str_ieq(hd->value, "100-continue"))
            st->expect = 1;
        break;
    case 7:
        if (lit_ieq(n, "upgrade", 7))
            st->upgrade_hdr = 1;
        break;
    case 10:
        if (lit_ieq(n, "connection", 10))
            return on_connection(st, hd->value);
        break;
    case 14:
        if (lit_ieq(n, "content-length", 14))
            return on_content_length(st, hd->value);
        break;
    case 17:
        if (lit_ieq(n, "transfer-encoding", 17))
            on_transfer_encoding(st, hd->value);
        break;
    }
    return 0;
}

/* Parses header lines from *pp through the empty line; returns 1 (and advances *pp), AGAIN or ERROR. */
static int parse_headers(const char **pp, const char *end, struct scan *st)
{
    struct http_head *h = st->h;
    const char *p = *pp, *name, *v, *ve;
    struct http_header *hd;

    for (;;) {
        if (p == end)
            return HTTP_AGAIN;
        if (*p == '\r') {
            if (p + 1 == end)
                return HTTP_AGAIN;
            if (p[1] != '\n')
                return fail(h, 400, "bare CR in header section");
            *pp = p + 2;
            return 1;
        }
        if (*p == '\n')
            return fail(h, 400, "bare LF in header section");
        if (*p == ' ' || *p == '\t')
            return fail(h, 400, "obsolete line folding or whitespace before a header");

        name = p;
        p = skip_token(p, end);
        if (p == end)
            return HTTP_AGAIN;
        if (*p != ':') {
            if (*p == ' ' || *p == '\t') {
                const char *q = p;
                while (q < end && (*q == ' ' || *q == '\t'))
                    q++;
                if (q == end)
                    return HTTP_AGAIN;
                return fail(h, 400,
                            *q == ':' ? "whitespace between header name and colon"
                                      : "invalid header line: a space in the name, or no colon");
            }
            if (*p == '\r' || *p == '\n')
                return fail(h, 400, "header line without colon");
            return fail(h, 400, "invalid character in header name");
        }
        if (p == name)
            return fail(h, 400, "empty header name");
        ve = p++;

        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        v = p;
        p = skip_field(p, end);
        if (p == end)
            return HTTP_AGAIN;
        if (*p != '\r')
            return fail(h, 400, *p == '\n' ? "bare LF in header section" : "invalid character in header value");
        if (p + 1 == end)
            return HTTP_AGAIN;
        if (p[1] != '\n')
            return fail(h, 400, "bare CR in header section");
        if (h->nheaders == HTTP_MAX_HEADERS)
            return fail(h, 431, "too many header fields");
        hd = &h->headers[h->nheaders++];
        hd->name = (struct http_str){name, (size_t)(ve - name)};
        for (ve = p; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
            ;
        hd->value = (struct http_str){v, (size_t)(ve - v)};
        p += 2;
        if (on_header(st, hd) < 0)
            return HTTP_ERROR;
    }
}

static int finish_request(struct scan *st)
{
    struct http_head *h = st->h;
    if (st->te_n) {
        if (h->minor == 0)
            return fail(h, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (st->cl_n)
            return fail(h, 400, "both Content-Length and Transfer-Encoding");
        if (st->te_bad)
            return fail(h, 400, "invalid Transfer-Encoding");
        if (st->te_chunked > 1)
            return fail(h, 400, "chunked transfer coding applied more than once");
        if (st->te_chunked == 1 && !st->te_chunked_last)
            return fail(h, 400, "chunked is not the final transfer coding");
        if (st->te_unknown)
            return fail(h, 501, "unsupported transfer coding");
        h->body = HTTP_BODY_CHUNKED;
    } else {
        h->body = h->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    }
    if (h->minor == 1 && st->host_n == 0)
        return fail(h, 400, "missing Host header");
    h->keep_alive = !st->conn_close && (h->minor == 1 || st->conn_keep);
    h->expect_continue = st->expect && h->minor == 1;
    h->upgrade = st->conn_upgrade && st->upgrade_hdr;
    return 0;
}

static int finish_response(struct scan *st, enum http_method req_method)
{
    struct http_head *h = st->h;
    int tunnel = h->status == 101 || (req_method == HTTP_CONNECT && h->status / 100 == 2);
    if (st->te_n) {
        if (h->minor == 0)
            return fail(h, 502, "Transfer-Encoding in an HTTP/1.0 response");
        if (st->cl_n)
            return fail(h, 502, "both Content-Length and Transfer-Encoding");
        if (st->te_bad || st->te_unknown || st->te_chunked != 1)
            return fail(h, 502, "unsupported Transfer-Encoding in response");
        h->body = HTTP_BODY_CHUNKED;
    } else if (h->content_length >= 0) {
        h->body = h->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    } else {
        h->body = HTTP_BODY_EOF;
    }
    if (req_method == HTTP_HEAD || h->status < 200 || h->status == 204 || h->status == 304 || tunnel)
        h->body = HTTP_BODY_NONE;
    h->keep_alive = !st->conn_close && (h->minor == 1 || st->conn_keep) && h->body != HTTP_BODY_EOF && !tunnel;
    h->upgrade = st->conn_upgrade && st->upgrade_hdr;
    return 0;
}

static int parse_head(const char *buf, size_t len, const struct http_limits *lim, int is_req,
                      enum http_method req_method, struct http_head *h)
{
    size_t max_line = lim && lim->max_line ? lim->max_line : DEFAULT_MAX_LINE;
    size_t max_head = lim && lim->max_head ? lim->max_head : DEFAULT_MAX_HEAD;
    struct scan st = {.h = h, .is_req = is_req};
    const char *p = buf, *end;
    int rc;

    reset_head(h);
    if (max_head > INT_MAX) /* the byte count is returned as an int */
        max_head = INT_MAX;
    if (len == 0)
        return HTTP_AGAIN;
    end = buf + (len < max_head ? len : max_head); /* a complete head fits in max_head bytes */
    if (is_req) {                                  /* RFC 9112 §2.2: ignore empty lines before the request line */
        while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
            p += 2;
        if (end - p == 1 && *p == '\r')
            return len > max_head ? fail(h, 431, "request header section too large") : HTTP_AGAIN;
    }
    rc = is_req ? parse_request_line(&p, end, max_line, h) : parse_status_line(&p, end, max_line, h);
    if (rc == 1)
        rc = parse_headers(&p, end, &st);
    if (rc == 1 && (is_req ? finish_request(&st) : finish_response(&st, req_method)) < 0)
        rc = HTTP_ERROR;
    if (rc == HTTP_AGAIN && len > max_head)
        rc = fail(h, 431, "request header section too large");
    if (rc == HTTP_ERROR)
        return rc;
    return rc == HTTP_AGAIN ? HTTP_AGAIN : (int)(p - buf);
}

int http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_head *out)
{
    return parse_head(buf, len, lim, 1, HTTP_OTHER, out);
}

int http_parse_response(const char *buf, size_t len, enum http_method req_method, const struct http_limits *lim,
                        struct http_head *out)
{
    int rc = parse_head(buf, len, lim, 0, req_method, out);
    if (rc == HTTP_ERROR) {
        if (out->error_status == 431)
            out->error = "response header section too large";
        out->error_status = 502; /* whatever is wrong with a backend's response, the client gets 502 */
    }
    return rc;
}

/* ---- chunked decoder -------------------------------------------------------------------------- */

enum {
    /* chunk-size line: hex [ *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) ] CRLF */
    CK_SIZE0 = 0, /* first hex digit */
    CK_SIZE,      /* more hex digits, or what follows them */
    CK_EXT_SEMI,  /* BWS seen: only more BWS or ';' */
    CK_EXT_NAME0, /* after ';': BWS then the extension name */
    CK_EXT_NAME,
    CK_EXT_NAME_WS, /* BWS after the name: '=' or ';' */
    CK_EXT_VAL0,    /* after '=': BWS then token or quoted-string */
    CK_EXT_TOKEN,
    CK_EXT_QS,   /* inside a quoted-string */
    CK_EXT_QP,   /* after a backslash in a quoted-string */
    CK_EXT_QEND, /* after the closing quote */
    CK_SIZE_LF,  /* CR seen, LF next */
    /* trailer section: *( field-line CRLF ) CRLF */
    CK_TR0, /* start of a trailer line (or of the final CRLF) */
    CK_TR_NAME,
    CK_TR_VALUE,
    CK_TR_LF,
    CK_END_LF,
    /* outside lines */
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_DONE,
    CK_ERROR
};

void http_chunked_init(struct http_chunked *d) { memset(d, 0, sizeof(*d)); }

static long chunk_error(struct http_chunked *d)
{
    d->state = CK_ERROR;
    return HTTP_ERROR;
}

long http_chunked_feed(struct http_chunked *d, const char *in, size_t len, const char **data, size_t *data_len)
{
    const char *p = in, *end;
    unsigned c;
    int v;

    *data = NULL;
    *data_len = 0;
    if (d->state == CK_ERROR)
        return HTTP_ERROR;
    if (len == 0)
        return 0;
    end = in + len;
    while (p < end) {
        if (d->state == CK_DATA) {
            size_t n = (size_t)(end - p);
            if (n > d->remaining)
                n = (size_t)d->remaining;
            *data = p;
            *data_len = n;
            d->remaining -= n;
            d->total += n;
            if (d->remaining == 0)
                d->state = CK_DATA_CR;
            return (long)(p + n - in);
        }
        if (d->state == CK_DONE)
            break;
        c = (unsigned char)*p++;
        if (d->state <= CK_TR_VALUE && d->state != CK_SIZE_LF && c != '\r' && ++d->line_len > CHUNK_LINE_MAX)
            return chunk_error(d);
        switch (d->state) {
        case CK_SIZE0:
            if ((v = hexval[c]) < 0)
                return chunk_error(d);
            d->remaining = (uint64_t)v;
            d->state = CK_SIZE;
            break;
        case CK_SIZE:
            if ((v = hexval[c]) >= 0) {
                if (d->line_len > CHUNK_SIZE_DIGITS || d->remaining > (LENGTH_LIMIT - 1 - (uint64_t)v) >> 4)
                    return chunk_error(d);
                d->remaining = d->remaining << 4 | (uint64_t)v;
            } else if (c == ';') {
                d->state = CK_EXT_NAME0;
            } else if (c == ' ' || c == '\t') {
                d->state = CK_EXT_SEMI;
            } else if (c == '\r') {
                d->state = CK_SIZE_LF;
            } else {
                return chunk_error(d);
            }
            break;
        case CK_EXT_SEMI:
            if (c == ';')
                d->state = CK_EXT_NAME0;
            else if (c != ' ' && c != '\t')
                return chunk_error(d);
            break;
        case CK_EXT_NAME0:
            if (IS(c, C_TCHAR))
                d->state = CK_EXT_NAME;
            else if (c != ' ' && c != '\t')
                return chunk_error(d);
            break;
        case CK_EXT_NAME:
        case CK_EXT_NAME_WS:
            if (c == '=')
                d->state = CK_EXT_VAL0;
            else if (c == ';')
                d->state = CK_EXT_NAME0;
            else if (c == ' ' || c == '\t')
                d->state = CK_EXT_NAME_WS;
            else if (d->state == CK_EXT_NAME && c == '\r')
                d->state = CK_SIZE_LF;
            else if (d->state != CK_EXT_NAME || !IS(c, C_TCHAR))
                return chunk_error(d);
            break;
        case CK_EXT_VAL0:
            if (c == '"')
                d->state = CK_EXT_QS;
            else if (IS(c, C_TCHAR))
                d->state = CK_EXT_TOKEN;
            else if (c != ' ' && c != '\t')
                return chunk_error(d);
            break;
        case CK_EXT_TOKEN:
        case CK_EXT_QEND:
            if (c == ';')
                d->state = CK_EXT_NAME0;
            else if (c == '\r')
                d->state = CK_SIZE_LF;
            else if (c == ' ' || c == '\t')
                d->state = CK_EXT_SEMI;
            else if (d->state != CK_EXT_TOKEN || !IS(c, C_TCHAR))
                return chunk_error(d);
            break;
        case CK_EXT_QS:
            if (c == '"')
                d->state = CK_EXT_QEND;
            else if (c == '\\')
                d->state = CK_EXT_QP;
            else if (!IS(c, C_QDTEXT))
                return chunk_error(d);
            break;
        case CK_EXT_QP:
            if (!IS(c, C_FIELD))
                return chunk_error(d);
            d->state = CK_EXT_QS;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                return chunk_error(d);
            d->line_len = 0;
            d->state = d->remaining ? CK_DATA : CK_TR0;
            break;
        case CK_DATA_CR:
            if (c != '\r')
                return chunk_error(d);
            d->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                return chunk_error(d);
            d->state = CK_SIZE0;
            break;
        case CK_TR0:
            if (c == '\r')
                d->state = CK_END_LF;
            else if (IS(c, C_TCHAR))
                d->state = CK_TR_NAME;
            else
                return chunk_error(d); /* obs-fold, bare LF, empty name */
            break;
        case CK_TR_NAME:
            if (c == ':')
                d->state = CK_TR_VALUE;
            else if (!IS(c, C_TCHAR))
                return chunk_error(d);
            break;
        case CK_TR_VALUE:
            if (c == '\r')
                d->state = CK_TR_LF;
            else if (!IS(c, C_FIELD))
                return chunk_error(d);
            break;
        case CK_TR_LF:
            if (c != '\n')
                return chunk_error(d);
            d->line_len = 0;
            d->state = CK_TR0;
            break;
        case CK_END_LF:
            if (c != '\n')
                return chunk_error(d);
            d->state = CK_DONE;
            d->done = 1;
            return (long)(p - in);
        default:
            return chunk_error(d);
        }
    }
    return (long)(p - in);
}
