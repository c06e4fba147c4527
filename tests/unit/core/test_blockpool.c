/* test_blockpool.c — unit tests for the bounded block cache (src/core/blockpool.h): taking and
 * giving back (LIFO reuse of the same memory), the bound on cached blocks, freeing the cache, and
 * lending blocks to struct buf (attach, release of an empty buffer, a buffer that grew past its
 * block is freed and not cached, a buffer holding bytes is left alone). Under ASan (make asan) a
 * block freed twice or used after free would fail here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/blockpool.h"

static void test_take_give_reuses(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 64, 4);
    char *a = blockpool_take(&p);
    char *b = blockpool_take(&p);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    memset(a, 'a', 64);
    memset(b, 'b', 64);
    assert_int_equal(p.nfree, 0);
    blockpool_give(&p, a);
    blockpool_give(&p, b);
    assert_int_equal(p.nfree, 2);
    /* Most recently given first. */
    assert_ptr_equal(blockpool_take(&p), b);
    assert_ptr_equal(blockpool_take(&p), a);
    assert_int_equal(p.nfree, 0);
    blockpool_give(&p, a);
    blockpool_give(&p, b);
    blockpool_give(&p, NULL); /* ignored */
    assert_int_equal(p.nfree, 2);
    blockpool_free(&p);
    assert_int_equal(p.nfree, 0);
    assert_null(p.free);
}

static void test_bounded_cache(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 128, 3);
    void *blocks[10];
    for (int i = 0; i < 10; i++)
        blocks[i] = blockpool_take(&p);
    for (int i = 0; i < 10; i++)
        blockpool_give(&p, blocks[i]); /* the last 7 are freed, not cached */
    assert_int_equal(p.nfree, 3);
    /* The cached ones are the first three given back. */
    void *t[3] = {blockpool_take(&p), blockpool_take(&p), blockpool_take(&p)};
    assert_ptr_equal(t[0], blocks[2]);
    assert_ptr_equal(t[1], blocks[1]);
    assert_ptr_equal(t[2], blocks[0]);
    assert_int_equal(p.nfree, 0);
    void *fresh = blockpool_take(&p); /* empty cache: a new block */
    assert_non_null(fresh);
    for (int i = 0; i < 3; i++)
        blockpool_give(&p, t[i]);
    blockpool_give(&p, fresh); /* over the bound: freed */
    assert_int_equal(p.nfree, 3);
    blockpool_free(&p);
}

static void test_zero_bound_caches_nothing(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 32, 0);
    void *a = blockpool_take(&p);
    blockpool_give(&p, a);
    assert_int_equal(p.nfree, 0);
    assert_null(p.free);
}

static void test_tiny_block_holds_a_link(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 1, 2);
    assert_int_equal(p.block, sizeof(void *));
    void *a = blockpool_take(&p), *b = blockpool_take(&p);
    blockpool_give(&p, a);
    blockpool_give(&p, b);
    assert_ptr_equal(blockpool_take(&p), b);
    blockpool_give(&p, b);
    blockpool_free(&p);
}

static void test_buf_attach_release(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 1024, 2);
    struct buf b = {0};
    blockpool_buf_attach(&p, &b);
    assert_non_null(b.data);
    assert_int_equal(b.cap, 1024);
    char *first = b.data;
    blockpool_buf_attach(&p, &b); /* has storage: unchanged */
    assert_ptr_equal(b.data, first);
    buf_append(&b, "hello", 5);
    assert_ptr_equal(b.data, first); /* fits: no reallocation */
    /* Holding bytes: not released. */
    blockpool_buf_release(&p, &b);
    assert_ptr_equal(b.data, first);
    assert_memory_equal(buf_head(&b), "hello", 5);
    buf_consume(&b, 5);
    blockpool_buf_release(&p, &b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(p.nfree, 1);
    /* The next buffer gets the same block back. */
    struct buf c = {0};
    blockpool_buf_attach(&p, &c);
    assert_ptr_equal(c.data, first);
    assert_int_equal(p.nfree, 0);
    /* Releasing a buffer without storage does nothing. */
    blockpool_buf_release(&p, &b);
    assert_int_equal(p.nfree, 0);
    blockpool_buf_release(&p, &c);
    blockpool_free(&p);
}

static void test_grown_buf_is_freed_not_cached(void **state)
{
    struct blockpool p;
    blockpool_init(&p, 256, 4);
    struct buf b = {0};
    blockpool_buf_attach(&p, &b);
    char big[3000];
    memset(big, 'x', sizeof(big));
    buf_append(&b, big, sizeof(big)); /* grows past the block: buf frees the block */
    assert_true(b.cap > 256);
    assert_memory_equal(buf_head(&b), big, sizeof(big));
    buf_consume(&b, sizeof(big));
    blockpool_buf_release(&p, &b); /* not the pool's size: freed */
    assert_null(b.data);
    assert_int_equal(p.nfree, 0);
    blockpool_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_give_reuses),          cmocka_unit_test(test_bounded_cache),
        cmocka_unit_test(test_zero_bound_caches_nothing), cmocka_unit_test(test_tiny_block_holds_a_link),
        cmocka_unit_test(test_buf_attach_release),        cmocka_unit_test(test_grown_buf_is_freed_not_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
