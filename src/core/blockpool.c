/* blockpool.c — bounded cache of fixed-size blocks; see blockpool.h for the contract. */
#include "core/blockpool.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

void blockpool_init(struct blockpool *p, size_t block, unsigned max_free)
{
    *p = (struct blockpool){.block = block < sizeof(void *) ? sizeof(void *) : block, .max_free = max_free};
}

void *blockpool_take(struct blockpool *p)
{
    void *b = p->free;
    if (b) {
        memcpy(&p->free, b, sizeof(void *));
        p->nfree--;
        return b;
    }
    return alloc_malloc(p->block);
}

void blockpool_give(struct blockpool *p, void *block)
{
    if (!block)
        return;
    if (p->nfree >= p->max_free) {
        free(block);
        return;
    }
    memcpy(block, &p->free, sizeof(void *));
    p->free = block;
    p->nfree++;
}

void blockpool_free(struct blockpool *p)
{
    while (p->free) {
        void *b = p->free;
        memcpy(&p->free, b, sizeof(void *));
        free(b);
    }
    p->nfree = 0;
}

void blockpool_buf_attach_slow(struct blockpool *p, struct buf *b)
{
    b->data = blockpool_take(p);
    b->cap = p->block;
    b->off = b->len = 0;
}

void blockpool_buf_release_slow(struct blockpool *p, struct buf *b)
{
    if (b->cap == p->block)
        blockpool_give(p, b->data);
    else
        free(b->data);
    *b = (struct buf){0};
}
