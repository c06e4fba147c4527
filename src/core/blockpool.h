/* blockpool.h — a bounded cache of fixed-size memory blocks, one per worker (issue 15).
 *
 * Connections take their I/O buffers (and per-request state) from the worker's pool only while
 * they need them and give them back when idle, so an idle connection holds none; the pool keeps
 * the blocks warm for the next taker instead of going through malloc each time. Every block is a
 * plain malloc(block) allocation: a block that leaves the pool may be freed with free() or grown
 * with realloc by its user (struct buf grows it when more space is needed) and simply never
 * returns. At most max_free blocks are cached; a block given back beyond that is freed, so the
 * pool never hoards more than max_free * block bytes after a burst.
 *
 * Not thread-safe: a pool belongs to one loop thread (no mutable globals; the owner, e.g. the
 * worker's struct http_server, holds it). Allocation failure aborts, as in buf.h. */
#ifndef AGORA_BLOCKPOOL_H
#define AGORA_BLOCKPOOL_H
#include <stddef.h>

#include "core/buf.h"

struct blockpool {
    void *free;        /* cached blocks, linked through their first word */
    size_t block;      /* size of every block (>= sizeof(void *)) */
    unsigned nfree;    /* blocks cached */
    unsigned max_free; /* cache bound */
};

/* An empty pool of blocks of `block` bytes caching at most max_free of them. */
void blockpool_init(struct blockpool *p, size_t block, unsigned max_free);
/* A block of p->block bytes (contents undefined): a cached one, else a new malloc. */
void *blockpool_take(struct blockpool *p);
/* Gives back a block of exactly p->block bytes (taken from p or malloc'd that size); freed if
 * the cache is full. NULL is ignored. */
void blockpool_give(struct blockpool *p, void *block);
/* Frees the cached blocks (blocks taken and not given back stay their holders'). */
void blockpool_free(struct blockpool *p);

void blockpool_buf_attach_slow(struct blockpool *p, struct buf *b);
void blockpool_buf_release_slow(struct blockpool *p, struct buf *b);

/* Gives an empty buffer with no storage a pool block as its storage (cap = p->block); does
 * nothing to a buffer that has storage. (Inline: the hot path mostly finds nothing to do.) */
static inline void blockpool_buf_attach(struct blockpool *p, struct buf *b)
{
    if (!b->data)
        blockpool_buf_attach_slow(p, b);
}
/* Takes the storage away from an empty buffer (buf_used == 0): back to the pool when it is a
 * block of the pool's size, freed otherwise (it grew). Leaves b zeroed. A buffer still holding
 * bytes, or without storage, is left as it is. */
static inline void blockpool_buf_release(struct blockpool *p, struct buf *b)
{
    if (b->data && b->len == b->off)
        blockpool_buf_release_slow(p, b);
}

#endif
