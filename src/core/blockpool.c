/* blockpool.c — bounded cache of fixed-size blocks; see blockpool.h for the contract. */
#include "core/blockpool.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

/* Under AddressSanitizer a cached block is poisoned (its link word included) until it is taken
 * again, so a use after give-back is reported as it would be after free(). */
#if defined(__SANITIZE_ADDRESS__)
#define BLOCKPOOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BLOCKPOOL_ASAN 1
#endif
#endif
#ifdef BLOCKPOOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

void blockpool_init(struct blockpool *p, size_t block, unsigned max_free)
{
    *p = (struct blockpool){.block = block < sizeof(void *) ? sizeof(void *) : block, .max_free = max_free};
}

void *blockpool_take(struct blockpool *p)
{
    void *b = p->free;
    if (b) {
        UNPOISON(b, p->block);
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
    POISON(block, p->block);
    p->free = block;
    p->nfree++;
}

void blockpool_free(struct blockpool *p)
{
    while (p->free) {
        void *b = p->free;
        UNPOISON(b, p->block);
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
