/* buf.h — growable byte buffer with a read cursor.
 *
 * A buf holds bytes in data[off, len). Appending grows the storage (doubling); consuming advances
 * off, and the storage is compacted lazily when space is needed. Used for socket I/O queues,
 * serialising responses and building JSON. A zeroed struct buf is a valid empty buffer.
 * Allocation failure aborts the process, as every allocation does (core/alloc.h). */
#ifndef AGORA_BUF_H
#define AGORA_BUF_H
#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t off; /* first unread byte */
    size_t len; /* one past the last byte */
    size_t cap;
};

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
static inline char *buf_head(const struct buf *b) { return b->data + b->off; }

/* Makes room for at least n more bytes after len; returns a pointer to that free space. */
char *buf_reserve(struct buf *b, size_t n);
/* Appends n bytes from p. */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
/* Appends v in decimal (the hot path's header values, where printf's cost shows). */
void buf_put_u64(struct buf *b, unsigned long long v);
/* Appends printf-formatted text. */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Marks n bytes (after reserve) as written. */
static inline void buf_commit(struct buf *b, size_t n) { b->len += n; }
/* Drops n bytes from the front; resets to empty when everything is consumed. */
void buf_consume(struct buf *b, size_t n);
/* Empties the buffer, keeping its storage. */
static inline void buf_reset(struct buf *b) { b->off = b->len = 0; }
/* Frees the storage; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* NUL-terminates the content (not counted in length) and returns it. */
char *buf_cstr(struct buf *b);

#endif
