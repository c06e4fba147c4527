/* buf.c — growable byte buffer; see buf.h for the contract. */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

char *buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->data + b->len;
    size_t used = b->len - b->off;
    if (b->off > 0 && b->cap - used >= n && b->off >= used) {
        memmove(b->data, b->data + b->off, used);
        b->off = 0;
        b->len = used;
        return b->data + b->len;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap - used < n)
        ncap *= 2;
    char *nd = alloc_malloc(ncap);
    if (used)
        memcpy(nd, b->data + b->off, used);
    free(b->data);
    b->data = nd;
    b->cap = ncap;
    b->off = 0;
    b->len = used;
    return b->data + b->len;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

void buf_puts(struct buf *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_put_u64(struct buf *b, unsigned long long v)
{
    char tmp[20], *p = tmp + sizeof(tmp);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    char *dst = buf_reserve(b, 128);
    int n = vsnprintf(dst, b->cap - b->len, fmt, cp);
    va_end(cp);
    if (n < 0)
        return;
    if ((size_t)n >= b->cap - b->len) {
        dst = buf_reserve(b, (size_t)n + 1);
        vsnprintf(dst, b->cap - b->len, fmt, ap);
    }
    b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

char *buf_cstr(struct buf *b)
{
    buf_reserve(b, 1)[0] = '\0';
    return b->data + b->off;
}
