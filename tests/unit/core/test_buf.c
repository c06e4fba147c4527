/* test_buf.c — unit tests for the growable byte buffer (src/core/buf.h): appending, formatting,
 * consuming, lazy compaction, doubling growth and freeing. Capacities are asserted exactly because
 * the contract fixes the growth rule (256 bytes first, then doubling). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/buf.h"

static void test_zeroed_is_empty(void **state)
{
    struct buf b = {0};
    assert_int_equal(buf_used(&b), 0);
    buf_append(&b, "", 0); /* appending nothing allocates nothing */
    assert_null(b.data);
    assert_string_equal(buf_cstr(&b), "");
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(b.cap, 256);
    buf_free(&b);
}

static void test_append_puts_printf(void **state)
{
    struct buf b = {0};
    buf_append(&b, "ab", 2);
    buf_puts(&b, "cd");
    buf_printf(&b, "-%d-%s-%05.1f", 42, "x", 3.25);
    assert_int_equal(buf_used(&b), strlen("abcd-42-x-003.2"));
    assert_memory_equal(buf_head(&b), "abcd-42-x-003.2", buf_used(&b));
    /* buf_cstr terminates without counting the NUL. */
    assert_string_equal(buf_cstr(&b), "abcd-42-x-003.2");
    assert_int_equal(buf_used(&b), 15);
    buf_free(&b);
}

static void test_put_u64(void **state)
{
    struct buf b = {0};
    buf_put_u64(&b, 0);
    buf_puts(&b, " ");
    buf_put_u64(&b, 7);
    buf_puts(&b, " ");
    buf_put_u64(&b, 1234567890);
    buf_puts(&b, " ");
    buf_put_u64(&b, 18446744073709551615ull);
    assert_string_equal(buf_cstr(&b), "0 7 1234567890 18446744073709551615");
    buf_free(&b);
}

static void test_append_binary(void **state)
{
    struct buf b = {0};
    const char bin[] = {'a', '\0', 'b', '\0'};
    buf_append(&b, bin, sizeof(bin));
    assert_int_equal(buf_used(&b), 4);
    assert_memory_equal(buf_head(&b), bin, 4);
    buf_free(&b);
}

/* Formatted output longer than the first 128-byte guess takes the second vsnprintf path. */
static void test_printf_long(void **state)
{
    struct buf b = {0};
    char big[1000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_puts(&b, "head:");
    buf_printf(&b, "[%s]", big);
    assert_int_equal(buf_used(&b), 5 + 1 + 999 + 1);
    assert_memory_equal(buf_head(&b), "head:[", 6);
    assert_memory_equal(buf_head(&b) + 6, big, 999);
    assert_int_equal(buf_head(&b)[1005], ']');
    assert_int_equal(b.cap, 1024);
    /* Output of exactly the free space (no room for the NUL) also takes the second path. */
    struct buf c = {0};
    char ys[128];
    memset(ys, 'y', sizeof(ys));
    buf_append(&c, ys, 128); /* cap 256: 128 bytes free */
    buf_printf(&c, "%.*s", 128, big);
    assert_int_equal(buf_used(&c), 256);
    assert_int_equal(c.cap, 512);
    assert_memory_equal(buf_head(&c), ys, 128);
    assert_memory_equal(buf_head(&c) + 128, big, 128);
    buf_free(&b);
    buf_free(&c);
}

static void test_reserve_commit(void **state)
{
    struct buf b = {0};
    char *p = buf_reserve(&b, 10);
    assert_non_null(p);
    assert_ptr_equal(p, b.data + b.len);
    assert_true(b.cap - b.len >= 10);
    memcpy(p, "0123456789", 10);
    buf_commit(&b, 4);
    assert_int_equal(buf_used(&b), 4);
    assert_memory_equal(buf_head(&b), "0123", 4);
    /* Reserving what already fits does not move the data. */
    char *data = b.data;
    p = buf_reserve(&b, 100);
    assert_ptr_equal(b.data, data);
    assert_ptr_equal(p, data + 4);
    buf_free(&b);
}

static void test_growth_doubles(void **state)
{
    struct buf b = {0};
    char chunk[300];
    memset(chunk, 'q', sizeof(chunk));
    buf_append(&b, chunk, 200);
    assert_int_equal(b.cap, 256);
    buf_append(&b, chunk, 100); /* 300 > 256 */
    assert_int_equal(b.cap, 512);
    buf_append(&b, chunk, 300); /* 600 > 512 */
    assert_int_equal(b.cap, 1024);
    assert_int_equal(buf_used(&b), 600);
    for (size_t i = 0; i < 600; i++)
        assert_int_equal(buf_head(&b)[i], 'q');
    /* A single large reservation jumps straight to the next sufficient power of two. */
    struct buf c = {0};
    buf_reserve(&c, 5000);
    assert_int_equal(c.cap, 8192);
    buf_free(&b);
    buf_free(&c);
}

static void test_consume(void **state)
{
    struct buf b = {0};
    buf_puts(&b, "hello world");
    buf_consume(&b, 6);
    assert_int_equal(buf_used(&b), 5);
    assert_int_equal(b.off, 6);
    assert_memory_equal(buf_head(&b), "world", 5);
    assert_string_equal(buf_cstr(&b), "world");
    /* Consuming everything resets the cursor to the start of the storage. */
    buf_consume(&b, 5);
    assert_int_equal(buf_used(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    /* Consuming more than is there also empties it. */
    buf_puts(&b, "abc");
    buf_consume(&b, 10);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* With enough consumed space at the front, a reservation compacts in place instead of growing. */
static void test_compaction(void **state)
{
    struct buf b = {0};
    char chunk[200];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)('a' + i % 26);
    buf_append(&b, chunk, 200); /* cap 256 */
    buf_consume(&b, 150);       /* 50 bytes left at off 150 */
    char *data = b.data;
    char *p = buf_reserve(&b, 100); /* 56 free at the end, 206 after compaction */
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, 256);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 50);
    assert_ptr_equal(p, b.data + 50);
    assert_memory_equal(buf_head(&b), chunk + 150, 50);
    buf_free(&b);
}

/* When the unread part is larger than the consumed part, the buffer grows (copying the unread
 * bytes to the front of the new storage) instead of an overlapping move. */
static void test_grow_keeps_unread(void **state)
{
    struct buf b = {0};
    char chunk[250];
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (char)i;
    buf_append(&b, chunk, 250);
    buf_consume(&b, 10);
    buf_append(&b, chunk, 100); /* 240 unread + 100 > 256 */
    assert_int_equal(b.off, 0);
    assert_int_equal(buf_used(&b), 340);
    assert_int_equal(b.cap, 512);
    assert_memory_equal(buf_head(&b), chunk + 10, 240);
    assert_memory_equal(buf_head(&b) + 240, chunk, 100);
    buf_free(&b);
}

static void test_reset_and_free(void **state)
{
    struct buf b = {0};
    buf_puts(&b, "something");
    char *data = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(buf_used(&b), 0);
    assert_ptr_equal(b.data, data); /* storage kept */
    assert_int_equal(b.cap, cap);
    buf_puts(&b, "again");
    assert_string_equal(buf_cstr(&b), "again");
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* Reusable after free, and freeing twice is harmless. */
    buf_puts(&b, "third");
    assert_string_equal(buf_cstr(&b), "third");
    buf_free(&b);
    buf_free(&b);
}

/* Many small writes and reads interleaved, checked against a model. */
static void test_queue_model(void **state)
{
    struct buf b = {0};
    char model[8192];
    size_t mlen = 0;
    unsigned seed = 12345;
    unsigned char next = 0;
    for (int round = 0; round < 2000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % 97;
        if ((seed >> 8) & 1) {
            char tmp[97];
            for (size_t i = 0; i < n; i++)
                tmp[i] = (char)next++;
            if (mlen + n > sizeof(model))
                continue;
            buf_append(&b, tmp, n);
            memcpy(model + mlen, tmp, n);
            mlen += n;
        } else {
            if (n > mlen)
                n = mlen;
            buf_consume(&b, n);
            memmove(model, model + n, mlen - n);
            mlen -= n;
        }
        assert_int_equal(buf_used(&b), mlen);
        if (mlen)
            assert_memory_equal(buf_head(&b), model, mlen);
    }
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_u64),
        cmocka_unit_test(test_zeroed_is_empty),
        cmocka_unit_test(test_append_puts_printf),
        cmocka_unit_test(test_append_binary),
        cmocka_unit_test(test_printf_long),
        cmocka_unit_test(test_reserve_commit),
        cmocka_unit_test(test_growth_doubles),
        cmocka_unit_test(test_consume),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_grow_keeps_unread),
        cmocka_unit_test(test_reset_and_free),
        cmocka_unit_test(test_queue_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
