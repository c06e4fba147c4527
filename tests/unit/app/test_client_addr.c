/* test_client_addr.c — who the client is (src/app/client_addr.c): trusted-proxy lists, the
 * right-most untrusted X-Forwarded-For address, spoofing attempts, and the keys limits count by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "app/client_addr.h"

/* A head with the given X-Forwarded-For values (NULL-terminated), plus another header first. */
static void head_with(struct http_head *h, const char *const *xff)
{
    memset(h, 0, sizeof *h);
    h->headers[0].name = (struct http_str){"Host", 4};
    h->headers[0].value = (struct http_str){"x", 1};
    h->nheaders = 1;
    for (int i = 0; xff && xff[i]; i++) {
        h->headers[h->nheaders].name = (struct http_str){"x-Forwarded-FOR", 15};
        h->headers[h->nheaders].value = (struct http_str){xff[i], strlen(xff[i])};
        h->nheaders++;
    }
}

static const char *who(const struct client_trust *t, const char *peer, const char *const *xff)
{
    static char out[CLIENT_ADDR_CHARS];
    struct http_head h;
    head_with(&h, xff);
    client_addr(t, peer, &h, out);
    return out;
}

static void test_trust_lists(void **state)
{
    struct client_trust t;
    char err[160];
    client_trust_default(&t);
    assert_int_equal(t.n, 2);
    assert_true(client_trust_has(&t, "127.0.0.1"));
    assert_true(client_trust_has(&t, "127.255.0.9"));
    assert_true(client_trust_has(&t, "::1"));
    assert_true(client_trust_has(&t, "::ffff:127.0.0.1"));
    assert_false(client_trust_has(&t, "128.0.0.1"));
    assert_false(client_trust_has(&t, "::2"));
    assert_false(client_trust_has(&t, "garbage"));
    assert_int_equal(client_trust_add(&t, "none", err, sizeof err), 0);
    assert_int_equal(t.n, 0);
    assert_false(client_trust_has(&t, "127.0.0.1"));
    assert_int_equal(client_trust_add(&t, " 10.1.2.3/8 , 2001:db8::/32,192.168.0.7", err, sizeof err), 0);
    assert_int_equal(t.n, 3);
    assert_true(client_trust_has(&t, "10.200.0.1"));
    assert_true(client_trust_has(&t, "2001:db8:ffff::1"));
    assert_false(client_trust_has(&t, "2001:db9::1"));
    assert_true(client_trust_has(&t, "192.168.0.7"));
    assert_false(client_trust_has(&t, "192.168.0.8"));
    const char *bad[] = {"", "10.0.0.1/33", "::1/129", "10.0.0.1/", "10.0.0.1/x", "host.example", "1.2.3.4,", "1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(client_trust_add(&t, bad[i], err, sizeof err), -1);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(t.n, 3);
}

static void test_forwarded_for(void **state)
{
    struct client_trust t;
    client_trust_default(&t);
    /* no header, or an untrusted peer: the peer */
    assert_string_equal(who(&t, "127.0.0.1", NULL), "127.0.0.1");
    const char *spoof[] = {"1.1.1.1", NULL};
    assert_string_equal(who(&t, "203.0.113.5", spoof), "203.0.113.5");
    /* a trusted peer (the balancer): the address it reports */
    assert_string_equal(who(&t, "127.0.0.1", spoof), "1.1.1.1");
    /* the right-most untrusted one: what a client wrote further left is ignored */
    const char *chain[] = {"6.6.6.6, 198.51.100.7", NULL};
    assert_string_equal(who(&t, "127.0.0.1", chain), "198.51.100.7");
    const char *chain2[] = {"6.6.6.6", "198.51.100.7 , 127.0.0.2", NULL};
    assert_string_equal(who(&t, "127.0.0.1", chain2), "198.51.100.7");
    /* all trusted: the left-most */
    const char *loops[] = {"127.0.0.9,127.0.0.3", NULL};
    assert_string_equal(who(&t, "127.0.0.1", loops), "127.0.0.9");
    /* garbage ends the walk at the last address accepted */
    const char *junk[] = {"1.2.3.4, junk, 127.0.0.5", NULL};
    assert_string_equal(who(&t, "127.0.0.1", junk), "127.0.0.5");
    const char *empty[] = {"", NULL};
    assert_string_equal(who(&t, "127.0.0.1", empty), "127.0.0.1");
    /* normalised: mapped IPv4 and IPv6 spellings */
    const char *v6[] = {"2001:DB8:0:0:0:0:0:1", NULL};
    assert_string_equal(who(&t, "::ffff:127.0.0.1", v6), "2001:db8::1");
    const char *mapped[] = {"::ffff:198.51.100.1", NULL};
    assert_string_equal(who(&t, "::1", mapped), "198.51.100.1");
    /* a list that trusts someone else: loopback is an ordinary client, its header ignored */
    struct client_trust other = {0};
    assert_int_equal(client_trust_add(&other, "10.0.0.1", NULL, 0), 0);
    assert_string_equal(who(&other, "127.0.0.1", spoof), "127.0.0.1");
    assert_string_equal(who(&other, "10.0.0.1", spoof), "1.1.1.1");
}

static void test_keys(void **state)
{
    char k[CLIENT_ADDR_CHARS];
    client_addr_key("198.51.100.7", k);
    assert_string_equal(k, "198.51.100.7");
    client_addr_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", k);
    assert_string_equal(k, "2001:db8:1:2::/64");
    client_addr_key("2001:db8:1:2::9", k);
    assert_string_equal(k, "2001:db8:1:2::/64");
    client_addr_key("unix", k);
    assert_string_equal(k, "unix");
}

/* A head with the given X-Forwarded-Proto values (NULL-terminated). */
static int https_of(const struct client_trust *t, const char *peer, const char *const *xfp)
{
    struct http_head h;
    head_with(&h, NULL);
    for (int i = 0; xfp && xfp[i]; i++) {
        h.headers[h.nheaders].name = (struct http_str){"X-forwarded-PROTO", 17};
        h.headers[h.nheaders].value = (struct http_str){xfp[i], strlen(xfp[i])};
        h.nheaders++;
    }
    return client_forwarded_https(t, peer, &h);
}

static void test_forwarded_https(void **state)
{
    struct client_trust t;
    client_trust_default(&t);
    const char *https[] = {"https", NULL}, *upper[] = {"HTTPS", NULL}, *http[] = {"http", NULL};
    const char *two[] = {"https", "https", NULL}, *mixed[] = {"http", "https", NULL}, *odd[] = {"https ", NULL};
    assert_int_equal(https_of(&t, "127.0.0.1", https), 1);
    assert_int_equal(https_of(&t, "::1", upper), 1);
    assert_int_equal(https_of(&t, "127.0.0.1", http), 0);
    assert_int_equal(https_of(&t, "127.0.0.1", NULL), 0);
    assert_int_equal(https_of(&t, "127.0.0.1", two), 0); /* the balancer sends exactly one */
    assert_int_equal(https_of(&t, "127.0.0.1", mixed), 0);
    assert_int_equal(https_of(&t, "127.0.0.1", odd), 0);
    /* An untrusted peer is never believed. */
    assert_int_equal(https_of(&t, "192.0.2.1", https), 0);
    assert_int_equal(https_of(&t, "garbage", https), 0);
    assert_int_equal(client_forwarded_https(&t, NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trust_lists),
        cmocka_unit_test(test_forwarded_for),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_forwarded_https),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
