/* fuzz_parser.c — libFuzzer harness for the HTTP/1.1 parser and chunked decoder (src/http/parser.h).
 *
 * Build and run from the repository root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -D_GNU_SOURCE tests/fuzz/fuzz_parser.c \
 *         src/http/parser.c -o /tmp/fuzz_parser && /tmp/fuzz_parser -max_total_time=30 tests/fuzz/corpus/parser/
 * libFuzzer writes the inputs it finds into the first corpus directory; to keep the committed seed
 * corpus small, name a scratch directory first: /tmp/fuzz_parser /tmp/corpus tests/fuzz/corpus/parser/
 *
 * Input layout: byte 0 chooses the split point (a fraction of the rest), byte 1 the method of the
 * request a response answers and whether small limits are used; the remaining bytes are the message,
 * copied into an allocation of exactly its size so any over-read is caught. The same bytes go to the
 * request parser, the response parser and the chunked decoder. Besides memory and UB errors the
 * harness traps when an invariant of the contract breaks:
 *   - a complete head ends with CRLFCRLF, fits the limits, and every string points inside it;
 *     no Connection header of it lists Content-Length, Transfer-Encoding or Host (checked here by
 *     an independent scan), conn_names is set exactly when some element names another field, and
 *     http_connection_lists agrees with that scan;
 *     headers have token names and trimmed values without CR/LF/NUL; body kind and
 *     content_length agree; error statuses are the documented ones;
 *   - every prefix shorter than a complete head is AGAIN, and the head itself parses to the same
 *     length; an incomplete input has only incomplete prefixes;
 *   - the chunked decoder gives the same result (error or not, bytes consumed, decoded bytes) fed
 *     whole, split in two at the chosen point, or one byte at a time. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

static int inside(struct http_str s, const char *b, size_t n) { return s.n == 0 || (s.p >= b && s.p + s.n <= b + n); }

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int ieq(const char *p, size_t n, const char *lit)
{
    if (strlen(lit) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i] >= 'A' && p[i] <= 'Z' ? (char)(p[i] + 32) : p[i];
        if (c != lit[i])
            return 0;
    }
    return 1;
}

/* Every Connection list element of h, scanned without the parser's helpers. */
static void check_connection(const struct http_head *h)
{
    int names = 0;
    for (int i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->headers[i];
        if (!ieq(hd->name.p, hd->name.n, "connection"))
            continue;
        const char *p = hd->value.p, *end = p + hd->value.n;
        for (;;) {
            const char *e = p;
            while (e < end && *e != ',')
                e++;
            const char *s = p, *t = e;
            while (s < t && (*s == ' ' || *s == '\t'))
                s++;
            while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
                t--;
            size_t n = (size_t)(t - s);
            CHECK(!ieq(s, n, "content-length") && !ieq(s, n, "transfer-encoding") && !ieq(s, n, "host"));
            if (n && !ieq(s, n, "close") && !ieq(s, n, "keep-alive") && !ieq(s, n, "upgrade")) {
                names = 1;
                CHECK(http_connection_lists(h, (struct http_str){s, n}));
            }
            if (e == end)
                break;
            p = e + 1;
        }
    }
    CHECK(h->conn_names == names);
    CHECK(!http_connection_lists(h, (struct http_str){"content-length", 14}));
}

static void check_head(const struct http_head *h, const char *b, int rc, int is_req, size_t max_head)
{
    size_t n = (size_t)rc;
    CHECK(n >= 4 && n <= max_head && memcmp(b + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(h->error_status == 0 && h->error == NULL);
    CHECK(h->minor == 0 || h->minor == 1);
    CHECK(h->nheaders >= 0 && h->nheaders <= HTTP_MAX_HEADERS);
    for (int i = 0; i < h->nheaders; i++) {
        const struct http_header *hd = &h->headers[i];
        CHECK(hd->name.n > 0 && inside(hd->name, b, n) && inside(hd->value, b, n));
        for (size_t k = 0; k < hd->name.n; k++)
            CHECK(is_tchar((unsigned char)hd->name.p[k]));
        for (size_t k = 0; k < hd->value.n; k++)
            CHECK(hd->value.p[k] != '\r' && hd->value.p[k] != '\n' && hd->value.p[k] != '\0');
        if (hd->value.n)
            CHECK(hd->value.p[0] != ' ' && hd->value.p[0] != '\t' && hd->value.p[hd->value.n - 1] != ' ' &&
                  hd->value.p[hd->value.n - 1] != '\t');
    }
    CHECK(h->content_length >= -1 && (uint64_t)(h->content_length + 1) <= (UINT64_C(1) << 62));
    CHECK(inside(h->connection, b, n) && inside(h->host, b, n));
    if (is_req) {
        CHECK(h->method_str.n > 0 && inside(h->method_str, b, n) && h->target.n > 0 && inside(h->target, b, n));
        CHECK(inside(h->path, b, n) || (h->path.n == 1 && h->path.p[0] == '/'));
        CHECK(h->path.n > 0 && inside(h->query, b, n));
        CHECK(h->body != HTTP_BODY_EOF);
    } else {
        CHECK(h->status >= 100 && h->status <= 599 && inside(h->reason, b, n));
    }
    if (h->body == HTTP_BODY_CHUNKED)
        CHECK(h->content_length == -1);
    if (h->body == HTTP_BODY_LENGTH)
        CHECK(h->content_length > 0);
    if (h->body == HTTP_BODY_EOF)
        CHECK(h->content_length == -1 && !h->keep_alive);
    check_connection(h);
    (void)http_find_header(h, "content-type");
    (void)http_list_has_token(h->connection, "close");
}

static int parse(const char *b, size_t n, int is_req, enum http_method m, const struct http_limits *lim,
                 struct http_head *h)
{
    return is_req ? http_parse_request(b, n, lim, h) : http_parse_response(b, n, m, lim, h);
}

static void fuzz_head(const char *b, size_t len, size_t split, int is_req, enum http_method m,
                      const struct http_limits *lim)
{
    static struct http_head h;
    size_t max_head = lim && lim->max_head ? lim->max_head : 16384;
    int rc = parse(b, len, is_req, m, lim, &h), prc;

    if (rc == HTTP_ERROR) {
        CHECK(h.error != NULL && h.error[0] != '\0');
        if (is_req)
            CHECK(h.error_status == 400 || h.error_status == 414 || h.error_status == 431 || h.error_status == 501 ||
                  h.error_status == 505);
        else
            CHECK(h.error_status == 502);
        CHECK(parse(b, split, is_req, m, lim, &h) <= 0);
        return;
    }
    if (rc == HTTP_AGAIN) {
        CHECK(len <= max_head);
        CHECK(parse(b, split, is_req, m, lim, &h) == HTTP_AGAIN);
        return;
    }
    CHECK(rc > 0 && (size_t)rc <= len);
    check_head(&h, b, rc, is_req, max_head);
    prc = parse(b, split, is_req, m, lim, &h);
    CHECK(prc == (split < (size_t)rc ? HTTP_AGAIN : rc));
    CHECK(parse(b, (size_t)rc, is_req, m, lim, &h) == rc);
}

struct dec {
    char *out;
    size_t out_len, used;
    int err, done;
};

/* Feeds b[0,n) (in pieces of at most step bytes; 0 = no limit) into d; returns 0 when it stopped
 * at the end of the body or on error, 1 when all of it was consumed. */
static int feed(struct http_chunked *d, struct dec *x, const char *b, size_t n, size_t step)
{
    size_t off = 0;
    while (off < n) {
        const char *data;
        size_t dlen, piece = step && n - off > step ? step : n - off;
        long r = http_chunked_feed(d, b + off, piece, &data, &dlen);
        if (r < 0) {
            x->err = 1;
            return 0;
        }
        CHECK((size_t)r <= piece);
        CHECK(dlen == 0 ? data == NULL : (data >= b + off && data + dlen <= b + off + (size_t)r));
        if (dlen) {
            memcpy(x->out + x->out_len, data, dlen);
            x->out_len += dlen;
        }
        x->used += (size_t)r;
        off += (size_t)r;
        if (d->done) {
            x->done = 1;
            return 0;
        }
        CHECK(r > 0);
    }
    return 1;
}

static void decode(const char *b, size_t len, size_t split, size_t step, struct dec *x)
{
    struct http_chunked d;
    http_chunked_init(&d);
    x->out_len = x->used = 0;
    x->err = x->done = 0;
    if (feed(&d, x, b, split, step))
        feed(&d, x, b + split, len - split, step);
    CHECK(d.total == x->out_len);
    CHECK(x->out_len <= x->used);
}

static void fuzz_chunked(const char *b, size_t len, size_t split)
{
    struct dec whole, halves, bytes;
    whole.out = malloc(len + 1);
    halves.out = malloc(len + 1);
    bytes.out = malloc(len + 1);
    CHECK(whole.out && halves.out && bytes.out);
    decode(b, len, len, 0, &whole);
    decode(b, len, split, 0, &halves);
    CHECK(whole.err == halves.err && whole.done == halves.done);
    CHECK(whole.out_len == halves.out_len && memcmp(whole.out, halves.out, whole.out_len) == 0);
    if (!whole.err)
        CHECK(whole.used == halves.used);
    if (len <= 4096) {
        decode(b, len, len, 1, &bytes);
        CHECK(whole.err == bytes.err && whole.done == bytes.done);
        CHECK(whole.out_len == bytes.out_len && memcmp(whole.out, bytes.out, whole.out_len) == 0);
        if (!whole.err)
            CHECK(whole.used == bytes.used);
    }
    free(whole.out);
    free(halves.out);
    free(bytes.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_limits small;
    const struct http_limits *lim = NULL;
    enum http_method m;
    size_t len, split;
    char *b;

    if (size < 2)
        return 0;
    len = size - 2;
    split = len * data[0] / 255;
    m = (enum http_method)((data[1] >> 1) % (HTTP_CONNECT + 1));
    if (data[1] & 1) {
        small.max_line = 8 + (size_t)(data[1] >> 5) * 8;
        small.max_head = 24 + (size_t)((data[1] >> 1) & 15) * 16;
        lim = &small;
    }
    b = malloc(len ? len : 1);
    CHECK(b != NULL);
    memcpy(b, data + 2, len);

    fuzz_head(b, len, split, 1, m, lim);
    fuzz_head(b, len, split, 0, m, lim);
    fuzz_chunked(b, len, split);

    free(b);
    return 0;
}
