/* test_tls.c — unit tests for TLS on a listener (src/http/tls.c, included to reach its statics).
 *
 * Certificates are made with http_tls_self_signed in a private temporary directory: the key's
 * mode, the names SNI matches (wildcards, case), the start errors (missing file, key of another
 * certificate, not PEM), a reload that fails leaving the running set and one that succeeds while
 * a connection still holds the old set, and the session-ticket keys: encryption under the current
 * key, rotation after HTTP_TLS_TICKET_ROTATE_S, the previous key still decrypting (renew), an
 * older one refused. Reading ahead: one http_tls_read of a flood of 1-byte records takes a bounded
 * number of them (one connection does not hold the loop for tens of milliseconds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "http/tls.c"

struct dir {
    char path[64];
    char a_crt[128], a_key[128], b_crt[128], b_key[128];
};

static int setup(void **state)
{
    struct dir *d = calloc(1, sizeof(*d));
    snprintf(d->path, sizeof(d->path), "/tmp/agora-test-tls-XXXXXX");
    assert_non_null(mkdtemp(d->path));
    snprintf(d->a_crt, sizeof(d->a_crt), "%s/a.crt", d->path);
    snprintf(d->a_key, sizeof(d->a_key), "%s/a.key", d->path);
    snprintf(d->b_crt, sizeof(d->b_crt), "%s/b.crt", d->path);
    snprintf(d->b_key, sizeof(d->b_key), "%s/b.key", d->path);
    char err[256];
    assert_int_equal(http_tls_self_signed(d->a_crt, d->a_key, "localhost", "DNS:localhost,DNS:A.Test,IP:127.0.0.1", 30,
                                          err, sizeof(err)),
                     RC_OK);
    assert_int_equal(
        http_tls_self_signed(d->b_crt, d->b_key, "b.test", "DNS:b.test,DNS:*.wild.test", 30, err, sizeof(err)), RC_OK);
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    struct dir *d = *state;
    const char *files[] = {d->a_crt, d->a_key, d->b_crt, d->b_key};
    for (size_t i = 0; i < 4; i++)
        unlink(files[i]);
    rmdir(d->path);
    free(d);
    return 0;
}

static void test_self_signed_files(void **state)
{
    struct dir *d = *state;
    struct stat st;
    assert_int_equal(stat(d->a_key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(d->a_crt, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", d->a_key);
    assert_int_not_equal(access(tmp, F_OK), 0); /* renamed into place */
    char err[256];
    assert_int_equal(
        http_tls_self_signed("/nonexistent-dir/c.pem", "/nonexistent-dir/k.pem", "x", "DNS:x", 1, err, sizeof(err)),
        RC_ERROR);
    assert_string_equal(err, "cannot write /nonexistent-dir/k.pem.tmp: No such file or directory");
}

static void test_names(void **state)
{
    assert_true(name_matches("localhost", "LocalHost"));
    assert_true(name_matches("*.wild.test", "x.wild.test"));
    assert_true(name_matches("*.wild.test", "X.WILD.test"));
    assert_false(name_matches("*.wild.test", "wild.test"));
    assert_false(name_matches("*.wild.test", "a.b.wild.test"));
    assert_false(name_matches("*.wild.test", ".wild.test"));
    assert_false(name_matches("b.test", "bb.test"));

    struct dir *d = *state;
    const char *certs[] = {d->a_crt, d->b_crt}, *keys[] = {d->a_key, d->b_key};
    char err[512];
    struct http_tls *t = http_tls_new(certs, keys, 2, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(t->cur->n, 2);
    assert_int_equal(t->cur->nnames[0], 2); /* DNS names only, lower case; the IP is not a name */
    assert_string_equal(t->cur->names[0][0], "localhost");
    assert_string_equal(t->cur->names[0][1], "a.test");
    assert_int_equal(t->cur->nnames[1], 2);
    assert_string_equal(t->cur->names[1][1], "*.wild.test");
    http_tls_free(t);
}

static void test_start_errors(void **state)
{
    struct dir *d = *state;
    char err[512], want[512];
    const char *missing = "/nonexistent/x.pem";
    const char *c1[] = {missing}, *k1[] = {d->a_key};
    assert_null(http_tls_new(c1, k1, 1, err, sizeof(err)));
    assert_string_equal(err, "TLS certificate /nonexistent/x.pem: cannot read: No such file or directory");
    const char *c2[] = {d->a_crt}, *k2[] = {d->b_key};
    assert_null(http_tls_new(c2, k2, 1, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS key %s does not match certificate %s", d->b_key, d->a_crt);
    assert_string_equal(err, want);
    const char *c3[] = {d->a_key}, *k3[] = {d->a_key}; /* a key where the certificate should be */
    assert_null(http_tls_new(c3, k3, 1, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS certificate %s: not a PEM certificate (", d->a_key);
    assert_memory_equal(err, want, strlen(want));
    const char *c4[] = {d->a_crt}, *k4[] = {d->a_crt}; /* and the other way round */
    assert_null(http_tls_new(c4, k4, 1, err, sizeof(err)));
    snprintf(want, sizeof(want), "TLS key %s: not a PEM private key without a passphrase (", d->a_crt);
    assert_memory_equal(err, want, strlen(want));
    assert_null(http_tls_new(c2, k2, 0, err, sizeof(err)));
    assert_string_equal(err, "TLS: between 1 and 16 certificates");
}

static void test_reload(void **state)
{
    struct dir *d = *state;
    const char *ca[] = {d->a_crt}, *ka[] = {d->a_key}, *cb[] = {d->b_crt}, *kb[] = {d->b_key};
    char err[512];
    struct http_tls *t = http_tls_new(ca, ka, 1, err, sizeof(err));
    assert_non_null(t);
    struct tls_set *first = t->cur;
    SSL *held = http_tls_conn_new(t, -1); /* a connection made before the reload */
    assert_non_null(held);
    assert_int_equal(atomic_load(&first->refs), 2);
    /* A bad pair: refused, the running set stays. */
    assert_int_equal(http_tls_reload(t, cb, ka, 1, err, sizeof(err)), RC_ERROR); /* a key of another certificate */
    assert_ptr_equal(t->cur, first);
    /* A good one: swapped in; the old set lives while its connection does. */
    assert_int_equal(http_tls_reload(t, cb, kb, 1, err, sizeof(err)), RC_OK);
    assert_ptr_not_equal(t->cur, first);
    assert_string_equal(t->cur->names[0][0], "b.test");
    assert_int_equal(atomic_load(&first->refs), 1);
    assert_ptr_equal(SSL_get_app_data(held), first);
    assert_string_equal(first->names[0][0], "localhost");
    http_tls_conn_free(held); /* the last reference: the old set goes */
    SSL *next = http_tls_conn_new(t, -1);
    assert_ptr_equal(SSL_get_app_data(next), t->cur);
    http_tls_conn_free(next);
    http_tls_free(t);
}

/* One call of the ticket callback: returns its result; name in/out. */
static int ticket(SSL *ssl, unsigned char name[16], int enc)
{
    unsigned char iv[EVP_MAX_IV_LENGTH] = {0};
    EVP_CIPHER_CTX *ectx = EVP_CIPHER_CTX_new();
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *hctx = EVP_MAC_CTX_new(mac);
    int r = on_ticket_key(ssl, name, iv, ectx, hctx, enc);
    EVP_MAC_CTX_free(hctx);
    EVP_MAC_free(mac);
    EVP_CIPHER_CTX_free(ectx);
    return r;
}

static void test_ticket_keys_rotate(void **state)
{
    struct dir *d = *state;
    const char *ca[] = {d->a_crt}, *ka[] = {d->a_key};
    char err[512];
    struct http_tls *t = http_tls_new(ca, ka, 1, err, sizeof(err));
    assert_non_null(t);
    SSL *ssl = http_tls_conn_new(t, -1);
    unsigned char k1[16], k2[16], k3[16], unknown[16] = {1, 2, 3};
    assert_int_equal(ticket(ssl, k1, 1), 1);
    assert_memory_equal(k1, t->key.name, 16);
    assert_int_equal(ticket(ssl, k1, 0), 1); /* the current key: valid */
    assert_int_equal(ticket(ssl, unknown, 0), 0);
    /* An hour later: a new key encrypts, the previous one still decrypts (and asks for a new ticket). */
    t->key.made -= HTTP_TLS_TICKET_ROTATE_S;
    assert_int_equal(ticket(ssl, k2, 1), 1);
    assert_memory_not_equal(k1, k2, 16);
    assert_int_equal(ticket(ssl, k2, 0), 1);
    assert_int_equal(ticket(ssl, k1, 0), 2);
    /* Another hour: the first key is gone. */
    t->key.made -= HTTP_TLS_TICKET_ROTATE_S;
    assert_int_equal(ticket(ssl, k3, 1), 1);
    assert_int_equal(ticket(ssl, k1, 0), 0);
    assert_int_equal(ticket(ssl, k2, 0), 2);
    assert_int_equal(ticket(ssl, k3, 0), 1);
    http_tls_conn_free(ssl);
    http_tls_free(t);
}

/* A connected TCP pair on the loopback, with room for the flood below in the kernel. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0), big = 1 << 20;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    fds[1] = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    assert_int_equal(connect(fds[1], (struct sockaddr *)&a, sizeof(a)), 0);
    fds[0] = accept(l, NULL, NULL);
    assert_true(fds[0] >= 0);
    setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    close(l);
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
}

static void test_read_ahead_bounded(void **state)
{
    struct dir *d = *state;
    const char *ca[] = {d->a_crt}, *ka[] = {d->a_key};
    char err[512];
    struct http_tls *t = http_tls_new(ca, ka, 1, err, sizeof(err));
    assert_non_null(t);
    int fds[2];
    tcp_pair(fds);
    SSL *srv = http_tls_conn_new(t, fds[0]);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *cli = SSL_new(cctx);
    SSL_set_fd(cli, fds[1]);
    SSL_set_connect_state(cli);
    int sdone = 0, cdone = 0;
    for (int i = 0; i < 1000 && !(sdone && cdone); i++) {
        if (!cdone)
            cdone = SSL_do_handshake(cli) == 1;
        if (!sdone)
            sdone = http_tls_handshake(srv) == RC_OK;
        poll(NULL, 0, 1);
    }
    assert_true(sdone && cdone);
    /* 20,000 records of one byte (22 bytes each on the wire), made in memory and sent at once. */
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(cli, mem);
    enum { N = 20000 };
    for (int i = 0; i < N; i++)
        assert_int_equal(SSL_write(cli, "x", 1), 1);
    char *p;
    long len = BIO_get_mem_data(mem, &p);
    assert_true(len > N * 20);
    for (long off = 0; off < len;) {
        ssize_t w = send(fds[1], p + off, (size_t)(len - off), 0);
        if (w > 0)
            off += w;
        else
            poll(NULL, 0, 1);
    }
    poll(NULL, 0, 50);
    /* One read of the server's largest (4 x 16 KB) while the socket holds 440 KB of them: about
     * one read-ahead buffer of records (some 700, half a millisecond), not 20,000 nor 64 K of
     * them, which at about a microsecond each would hold the loop for tens of milliseconds. */
    struct buf b = {0};
    ssize_t n = http_tls_read(srv, &b, 65536);
    assert_true(n > 0);
    assert_true(n <= 2048);
    /* The rest comes with the next reads, none lost. */
    size_t total = (size_t)n;
    for (int i = 0; i < 100000 && total < N; i++) {
        n = http_tls_read(srv, &b, 65536);
        if (n > 0)
            total += (size_t)n;
        else if (n != -EAGAIN)
            break;
    }
    assert_int_equal(total, N);
    assert_int_equal(buf_used(&b), N);
    buf_free(&b);
    SSL_free(cli);
    SSL_CTX_free(cctx);
    http_tls_conn_free(srv);
    close(fds[0]);
    close(fds[1]);
    http_tls_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_signed_files),  cmocka_unit_test(test_names),
        cmocka_unit_test(test_start_errors),       cmocka_unit_test(test_reload),
        cmocka_unit_test(test_ticket_keys_rotate), cmocka_unit_test(test_read_ahead_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
