/* fuzz_reader.c — libFuzzer harness for the HTTP response reader (src/http/client.h), the code
 * that reads every backend response the balancer relays and every response agora's own clients
 * read.
 *
 * Build and run with `make fuzz` (or `make fuzz-smoke`); by hand, see fuzz_config.c, with
 * tests/fuzz/fuzz_reader.c and the corpus tests/fuzz/corpus/reader/.
 *
 * Input: byte 0 chooses the request method (GET or HEAD) and final_101; byte 1 a pause pattern
 * for the sink; bytes 2-3 a split seed; the rest is the response byte stream. The harness reads it
 * three ways — all at once; in pieces cut at pseudo-random points, with the sink pausing after
 * pieces as the pattern says (the way the balancer reads when its client is slow); and through the
 * buffered client (http_client_feed/eof) — then ends the stream. Besides memory errors and UB it
 * traps when:
 *   - the three disagree on the outcome (complete, incomplete, error), the status, the head's
 *     length, or the body bytes;
 *   - the reader consumes bytes after a complete response, or reports a body piece of 0 bytes;
 *   - a run returns anything but the documented codes, or changes its answer after it ended;
 *   - more body bytes come out than went in. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/client.h"

#define CHECK(x)                                                                                                       \
    do {                                                                                                               \
        if (!(x))                                                                                                      \
            __builtin_trap();                                                                                          \
    } while (0)

struct rec {
    int status;
    size_t head_len;
    struct buf body;
    unsigned pieces, pause_mask;
};

static int on_head(void *ctx, const struct http_head *h, const char *p, size_t len)
{
    struct rec *r = ctx;
    CHECK(r->status == 0 && len > 0 && !memcmp(p, "HTTP/1.", 7));
    r->status = h->status;
    r->head_len = len;
    return 1;
}

static int on_body(void *ctx, const char *p, size_t n)
{
    struct rec *r = ctx;
    CHECK(n > 0);
    buf_append(&r->body, p, n);
    r->pieces++;
    return r->pause_mask & (1u << (r->pieces % 8)) ? 0 : 1;
}

static const struct http_reader_sink sink = {.on_head = on_head, .on_body = on_body};

/* Runs until the reader needs bytes or ends; a pause is resumed at once (bounded). */
static int run(struct http_reader *rd, struct buf *in, struct rec *r)
{
    int rc = HTTP_READER_PAUSED;
    for (int i = 0; i < 1 << 20 && rc == HTTP_READER_PAUSED; i++) {
        rc = http_reader_run(rd, in, &sink, r);
        CHECK(rc == HTTP_AGAIN || rc == HTTP_READER_DONE || rc == HTTP_READER_PAUSED || rc == HTTP_ERROR);
    }
    CHECK(rc != HTTP_READER_PAUSED);
    return rc;
}

/* Reads data[0,n) (in pieces when seed != 0) then the end of the stream; returns the outcome:
 * 1 complete, 0 incomplete at the end, -1 error. *left: bytes left after a complete response. */
static int read_stream(const uint8_t *data, size_t n, enum http_method m, int final_101, unsigned seed, struct rec *r,
                       size_t *left)
{
    struct http_reader rd;
    struct buf in = {0};
    http_reader_init(&rd, m, 0);
    rd.final_101 = final_101;
    int rc = HTTP_AGAIN;
    size_t off = 0;
    while (off < n && rc == HTTP_AGAIN) {
        size_t k = n - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % (k < 64 ? k : 64);
        }
        buf_append(&in, data + off, k);
        off += k;
        rc = run(&rd, &in, r);
    }
    int out;
    if (rc == HTTP_READER_DONE) {
        out = 1;
        *left = buf_used(&in) + (n - off);
        CHECK(http_reader_run(&rd, &in, &sink, r) == HTTP_READER_DONE); /* ended: stays so */
        CHECK(http_reader_eof(&rd) == HTTP_READER_DONE);
    } else if (rc == HTTP_ERROR) {
        out = -1;
        CHECK(rd.error != NULL);
        CHECK(http_reader_run(&rd, &in, &sink, r) == HTTP_ERROR);
    } else {
        out = http_reader_eof(&rd) == HTTP_READER_DONE ? 1 : 0;
        *left = 0;
    }
    buf_free(&in);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    enum http_method m = data[0] & 1 ? HTTP_HEAD : HTTP_GET;
    int final_101 = (data[0] >> 1) & 1;
    unsigned pause = data[1];
    unsigned seed = (unsigned)data[2] << 8 | data[3] | 1u;
    data += 4;
    size -= 4;

    struct rec a = {0}, b = {.pause_mask = pause};
    size_t left_a = 0, left_b = 0;
    int oa = read_stream(data, size, m, final_101, 0, &a, &left_a);
    int ob = read_stream(data, size, m, final_101, seed, &b, &left_b);
    /* An error may be found at a different point when the input comes in pieces, but it is an
     * error either way; everything else must match exactly. */
    CHECK(oa == ob);
    if (oa >= 0) {
        CHECK(a.status == b.status && a.head_len == b.head_len);
        CHECK(buf_used(&a.body) == buf_used(&b.body));
        CHECK(!buf_used(&a.body) || !memcmp(buf_head(&a.body), buf_head(&b.body), buf_used(&a.body)));
        CHECK(buf_used(&a.body) <= size);
    }
    if (oa == 1)
        CHECK(left_a == left_b);

    /* The buffered client reads the same way (it treats 101 as final). */
    if (final_101) {
        struct http_client c;
        struct http_client_opts o = {.max_body = 1u << 30};
        http_client_init(&c, m, &o);
        int rc = http_client_feed(&c, data, size);
        if (rc == HTTP_AGAIN)
            rc = http_client_eof(&c);
        CHECK(rc == HTTP_CLIENT_DONE || rc == HTTP_ERROR);
        CHECK((rc == HTTP_CLIENT_DONE) == (oa == 1));
        if (oa == 1) {
            CHECK(c.status == a.status);
            CHECK(buf_used(&c.body) == buf_used(&a.body));
            CHECK(!buf_used(&c.body) || !memcmp(buf_head(&c.body), buf_head(&a.body), buf_used(&a.body)));
        }
        http_client_free(&c);
    }
    buf_free(&a.body);
    buf_free(&b.body);
    return 0;
}
