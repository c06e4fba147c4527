/* tls.c — TLS on the server side with OpenSSL 3; see tls.h for the contract.
 *
 * The certificate set (struct tls_set) is immutable once built and reference-counted: the
 * process's struct http_tls holds one reference to the set in force, each connection one to the
 * set it was made from (kept as the SSL's app data). Every SSL_CTX of a set points back at the set
 * (SSL_CTX app data), which is how the SNI, ALPN and ticket callbacks find it. The session cache
 * lives in the set's default SSL_CTX (OpenSSL keeps the cache in the SSL's first context even
 * after SNI switched it), the ticket keys in the struct http_tls, so they outlive reloads. */
#include "http/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/rc.h"

/* Mozilla's "intermediate" configuration (ssl-config.mozilla.org, version 5.7) for TLS 1.2; the
 * TLS 1.3 suites are OpenSSL's defaults, which are the same three. */
#define TLS12_CIPHERS                                                                                                  \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                         \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                           \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS   "X25519:P-256:P-384"
#define MAX_NAMES    64 /* DNS names kept per certificate for SNI */
#define READ_STEP    16384

/* A session-ticket key: its name (sent in the ticket), the AES-256-CBC key and the HMAC-SHA256
 * key, and when it was made. */
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t made;
};

struct tls_set {
    atomic_int refs;
    struct http_tls *tls;
    size_t n;
    SSL_CTX *ctx[HTTP_TLS_MAX_CERTS];
    char *names[HTTP_TLS_MAX_CERTS][MAX_NAMES]; /* lower case; "*.example.com" for wildcards */
    size_t nnames[HTTP_TLS_MAX_CERTS];
};

struct http_tls {
    pthread_mutex_t mu; /* guards cur */
    struct tls_set *cur;
    pthread_mutex_t kmu; /* guards the keys */
    struct ticket_key key, prev;
    int has_prev;
    atomic_int h2; /* ALPN offers "h2" (http_tls_set_h2) */
};

/* ---- the certificate set ---- */

static void set_unref(struct tls_set *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++) {
        SSL_CTX_free(s->ctx[i]);
        for (size_t k = 0; k < s->nnames[i]; k++)
            free(s->names[i][k]);
    }
    free(s);
}

/* 1 if the SNI name matches pattern (both compared without case; "*.x.y" matches one label). */
static int name_matches(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        return dot && dot != name && !strcasecmp(pattern + 1, dot);
    }
    return !strcasecmp(pattern, name);
}

/* SNI: the first certificate whose names match, else the default one. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_set *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < s->n; i++)
        for (size_t k = 0; k < s->nnames[i]; k++)
            if (name_matches(s->names[i][k], name)) {
                if (i > 0 && SSL_set_SSL_CTX(ssl, s->ctx[i]) == NULL)
                    return SSL_TLSEXT_ERR_ALERT_FATAL;
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_NOACK; /* the default certificate */
}

/* ALPN: h2 when the client offers it and the listener enables it (preferred over http/1.1, as
 * in our list's order), else http/1.1 when offered; otherwise no protocol is agreed (HTTP/1.1
 * anyway). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    struct tls_set *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int h2 = s && atomic_load_explicit(&s->tls->h2, memory_order_relaxed);
    const unsigned char *ours = h2 ? both : both + 3;
    unsigned ourlen = h2 ? sizeof(both) - 1 : sizeof(both) - 4;
    unsigned char *sel;
    unsigned char sellen;
    if (SSL_select_next_proto(&sel, &sellen, ours, ourlen, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sellen;
    return SSL_TLSEXT_ERR_OK;
}

static void key_make(struct ticket_key *k)
{
    RAND_bytes(k->name, sizeof(k->name));
    RAND_bytes(k->aes, sizeof(k->aes));
    RAND_bytes(k->hmac, sizeof(k->hmac));
    k->made = time(NULL);
}

static int mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* Session tickets (OpenSSL's ticket_key_evp_cb contract): encrypt with the current key, rotated
 * lazily here once it is HTTP_TLS_TICKET_ROTATE_S old; decrypt with the current or the previous
 * one (2 = valid, but issue a new ticket under the current key). Returns 1, 2, 0 (unknown key:
 * full handshake) or -1. */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *ectx,
                         EVP_MAC_CTX *hctx, int enc)
{
    struct tls_set *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    struct http_tls *t = s->tls;
    int rc = -1;
    pthread_mutex_lock(&t->kmu);
    time_t now = time(NULL);
    if (now - t->key.made >= HTTP_TLS_TICKET_ROTATE_S) {
        t->prev = t->key;
        t->has_prev = 1;
        key_make(&t->key);
    }
    if (enc) {
        if (RAND_bytes(iv, 16) != 1)
            goto out;
        memcpy(name, t->key.name, 16);
        if (EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, t->key.aes, iv) != 1 || mac_init(hctx, t->key.hmac) != 1)
            goto out;
        rc = 1;
        goto out;
    }
    struct ticket_key *k = NULL;
    if (!memcmp(name, t->key.name, 16))
        k = &t->key;
    else if (t->has_prev && !memcmp(name, t->prev.name, 16))
        k = &t->prev;
    if (!k) {
        rc = 0;
        goto out;
    }
    if (mac_init(hctx, k->hmac) != 1 || EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
        goto out;
    rc = k == &t->key ? 1 : 2;
out:
    pthread_mutex_unlock(&t->kmu);
    return rc;
}

/* Never asks for a passphrase (an encrypted key is refused instead of blocking on a terminal). */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return 0; }

/* The reason of the last OpenSSL error, for messages. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

static void time_text(const ASN1_TIME *at, char *out, size_t outlen)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(at, &tm) != 1 || !strftime(out, outlen, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(out, outlen, "?");
}

static void add_name(struct tls_set *s, size_t i, const char *name, size_t len)
{
    if (s->nnames[i] >= MAX_NAMES || len == 0 || memchr(name, '\0', len))
        return;
    char *n = alloc_strndup(name, len);
    for (char *p = n; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    s->names[i][s->nnames[i]++] = n;
}

/* The names SNI chooses certificate i by: its DNS subject alternative names, else its CN. */
static void cert_names(struct tls_set *s, size_t i, X509 *x)
{
    GENERAL_NAMES *alt = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int k = 0; alt && k < sk_GENERAL_NAME_num(alt); k++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(alt, k);
        if (g->type == GEN_DNS)
            add_name(s, i, (const char *)ASN1_STRING_get0_data(g->d.dNSName), (size_t)ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(alt);
    if (s->nnames[i] > 0)
        return;
    char cn[256];
    int len = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    if (len > 0)
        add_name(s, i, cn, (size_t)len);
}

/* Makes the SSL_CTX of pair i of s: settings, certificate chain, key, checks. Returns RC_OK or
 * RC_ERROR with err set. */
static int load_pair(struct tls_set *s, size_t i, const char *cert, const char *key, char *err, size_t errlen)
{
    int rc = RC_ERROR;
    EVP_PKEY *pkey = NULL;
    FILE *f = fopen(cert, "r");
    if (!f) {
        snprintf(err, errlen, "TLS certificate %s: cannot read: %s", cert, strerror(errno));
        return RC_ERROR;
    }
    fclose(f);
    f = fopen(key, "r");
    if (!f) {
        snprintf(err, errlen, "TLS key %s: cannot read: %s", key, strerror(errno));
        return RC_ERROR;
    }
    pkey = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    s->ctx[i] = ctx;
    if (!ctx) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", ossl_reason());
        goto out;
    }
    SSL_CTX_set_app_data(ctx, s);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 || SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
        snprintf(err, errlen, "TLS: cannot set the cipher list: %s", ossl_reason());
        goto out;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"agora", 5);
    /* No automatic clearing: OpenSSL would walk the whole cache under its lock every 255
     * handshakes; the cache stays bounded anyway (the oldest session goes when it is full) and an
     * expired session is never resumed. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR);
    SSL_CTX_sess_set_cache_size(ctx, HTTP_TLS_SESSION_CACHE);
    SSL_CTX_set_timeout(ctx, HTTP_TLS_TICKET_ROTATE_S);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "TLS certificate %s: not a PEM certificate (%s)", cert, ossl_reason());
        goto out;
    }
    if (!pkey) {
        snprintf(err, errlen, "TLS key %s: not a PEM private key without a passphrase (%s)", key, ossl_reason());
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "TLS key %s does not match certificate %s", key, cert);
        goto out;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char when[64];
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        time_text(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(err, errlen, "TLS certificate %s expired on %s", cert, when);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        time_text(X509_get0_notBefore(x), when, sizeof(when));
        snprintf(err, errlen, "TLS certificate %s is not valid before %s", cert, when);
        goto out;
    }
    cert_names(s, i, x);
    rc = RC_OK;
out:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

static struct tls_set *set_build(struct http_tls *t, const char *const *certs, const char *const *keys, size_t n,
                                 char *err, size_t errlen)
{
    if (n == 0 || n > HTTP_TLS_MAX_CERTS) {
        snprintf(err, errlen, "TLS: between 1 and %d certificates", HTTP_TLS_MAX_CERTS);
        return NULL;
    }
    struct tls_set *s = alloc_calloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->tls = t;
    for (size_t i = 0; i < n; i++) {
        s->n = i + 1;
        if (load_pair(s, i, certs[i], keys[i], err, errlen) < 0) {
            set_unref(s);
            return NULL;
        }
    }
    SSL_CTX_set_tlsext_servername_callback(s->ctx[0], on_servername);
    SSL_CTX_set_tlsext_servername_arg(s->ctx[0], s);
    return s;
}

struct http_tls *http_tls_new(const char *const *certs, const char *const *keys, size_t n, char *err, size_t errlen)
{
    struct http_tls *t = alloc_calloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    pthread_mutex_init(&t->kmu, NULL);
    key_make(&t->key);
    t->cur = set_build(t, certs, keys, n, err, errlen);
    if (!t->cur) {
        http_tls_free(t);
        return NULL;
    }
    return t;
}

int http_tls_reload(struct http_tls *t, const char *const *certs, const char *const *keys, size_t n, char *err,
                    size_t errlen)
{
    struct tls_set *s = set_build(t, certs, keys, n, err, errlen);
    if (!s)
        return RC_ERROR;
    pthread_mutex_lock(&t->mu);
    struct tls_set *old = t->cur;
    t->cur = s;
    pthread_mutex_unlock(&t->mu);
    set_unref(old); /* freed once its last connection is */
    return RC_OK;
}

void http_tls_free(struct http_tls *t)
{
    if (!t)
        return;
    set_unref(t->cur);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->kmu);
    OPENSSL_cleanse(&t->key, sizeof(t->key));
    OPENSSL_cleanse(&t->prev, sizeof(t->prev));
    free(t);
}

/* ---- connections ----
 *
 * Reading ahead. Without it OpenSSL reads a record in two read(2)s (its header, then its body) and
 * never past it, so a client's requests written as several records in one go (h2load's streams,
 * a browser's pipelined frames) came out one record per readiness: each record after the first
 * waited a whole loop iteration, and HTTP/2's p99 was 1.3x HAProxy's (bench/RESULTS.md, "Reading
 * ahead"). With read-ahead on (once the handshake is done: the handshake must not swallow the
 * request that follows it), one read(2) takes what the socket holds, up to OpenSSL's buffer
 * (16 KB and a record's overhead). The price is that OpenSSL may then hold whole records the
 * socket no longer reports, which a level-triggered loop would never come back for. So the
 * connection's BIO (a socket BIO of our own, struct conn_bio) can be told to hold: it then
 * answers "retry" instead of reading, and http_tls_read ends every call by decrypting, held,
 * whatever whole records OpenSSL has left, which is at most one buffer. What stays in OpenSSL is
 * part of a record whose rest is still to come through the socket, where the loop sees it. */

/* The BIO's data: the descriptor (as unsigned: no shift of a negative value), shifted left by
 * one, and the hold bit. */
#define BIO_HOLD 1

static int bio_fd(BIO *bio) { return (int)(unsigned)((uintptr_t)BIO_get_data(bio) >> 1); }

static int conn_bio_read(BIO *bio, char *p, size_t n, size_t *got)
{
    uintptr_t d = (uintptr_t)BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (d & BIO_HOLD) {
        BIO_set_retry_read(bio);
        return 0;
    }
    ssize_t r = read(bio_fd(bio), p, n);
    if (r > 0) {
        *got = (size_t)r;
        return 1;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(bio);
    if (r == 0)
        BIO_set_flags(bio, BIO_FLAGS_IN_EOF); /* for BIO_CTRL_EOF, as OpenSSL's socket BIO */
    return r == 0 ? 0 : -1;                   /* 0: the end of the stream; OpenSSL sees no retry flag */
}

static int conn_bio_write(BIO *bio, const char *p, size_t n, size_t *put)
{
    BIO_clear_retry_flags(bio);
    ssize_t w = send(bio_fd(bio), p, n, MSG_NOSIGNAL);
    if (w >= 0) {
        *put = (size_t)w;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        BIO_set_retry_write(bio);
    return -1;
}

static long conn_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* nothing is buffered here */
        return 1;
    case BIO_CTRL_EOF:
        /* OpenSSL asks this when a read returns nothing without a retry: a socket's end without a
         * close_notify is the clean end SSL_OP_IGNORE_UNEXPECTED_EOF makes it (SSL_ERROR_ZERO_RETURN)
         * only if the BIO says so; otherwise it is an error, and a request waiting for its answer
         * is dropped instead of answered after a half-close (as over plain HTTP). */
        return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = bio_fd(bio);
        return bio_fd(bio);
    default:
        return 0;
    }
}

static int conn_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static BIO_METHOD *conn_bio_method;
static pthread_once_t conn_bio_once = PTHREAD_ONCE_INIT;

/* Made once for the process and never changed afterwards (as OpenSSL's own methods). */
static void conn_bio_method_make(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "agora socket");
    if (m && BIO_meth_set_read_ex(m, conn_bio_read) == 1 && BIO_meth_set_write_ex(m, conn_bio_write) == 1 &&
        BIO_meth_set_ctrl(m, conn_bio_ctrl) == 1 && BIO_meth_set_create(m, conn_bio_create) == 1) {
        conn_bio_method = m;
        return;
    }
    BIO_meth_free(m);
}

static void conn_bio_hold(SSL *ssl, int hold)
{
    BIO *bio = SSL_get_rbio(ssl);
    uintptr_t d = (uintptr_t)BIO_get_data(bio);
    BIO_set_data(bio, (void *)(hold ? d | BIO_HOLD : d & ~(uintptr_t)BIO_HOLD));
}

SSL *http_tls_conn_new(struct http_tls *t, int fd)
{
    pthread_once(&conn_bio_once, conn_bio_method_make);
    if (!conn_bio_method)
        return NULL;
    pthread_mutex_lock(&t->mu);
    struct tls_set *s = t->cur;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&t->mu);
    SSL *ssl = SSL_new(s->ctx[0]);
    BIO *bio = ssl ? BIO_new(conn_bio_method) : NULL;
    if (!bio) {
        SSL_free(ssl);
        set_unref(s);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(bio, (void *)((uintptr_t)(unsigned)fd << 1));
    SSL_set_bio(ssl, bio, bio);
    SSL_set_app_data(ssl, s);
    SSL_set_accept_state(ssl);
    return ssl;
}

/* A fatal error: no close_notify may follow (SSL_shutdown's rule). */
static void conn_failed(SSL *ssl)
{
    SSL_set_quiet_shutdown(ssl, 1);
    ERR_clear_error();
}

void http_tls_close_notify(SSL *ssl)
{
    if (!SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
        return;
    ERR_clear_error();
    SSL_shutdown(ssl); /* one try: what the socket does not take now is not waited for */
    ERR_clear_error();
}

void http_tls_conn_free(SSL *ssl)
{
    if (!ssl)
        return;
    struct tls_set *s = SSL_get_app_data(ssl);
    http_tls_close_notify(ssl);
    SSL_free(ssl);
    set_unref(s);
}

int http_tls_handshake(SSL *ssl)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        SSL_set_read_ahead(ssl, 1); /* from now on: see "Reading ahead" above */
        return RC_OK;
    }
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return HTTP_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return HTTP_TLS_WANT_WRITE;
    default:
        conn_failed(ssl);
        return RC_ERROR;
    }
}

/* A read that returns bytes leaves the end (close_notify) or an error it met after them to the
 * next read. Without read-ahead that record was still in the socket, which stayed readable; now
 * it may have been taken from a socket that holds nothing more, and a client that sends
 * close_notify without closing the connection would never be read again. Shutting our reading
 * side down makes the socket report the end: the next read meets OpenSSL's state again (0, or
 * the error) and the connection closes as it did. */
static void end_seen_again(SSL *ssl, int r)
{
    int e = SSL_get_error(ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        shutdown(SSL_get_fd(ssl), SHUT_RD);
}

ssize_t http_tls_read(SSL *ssl, struct buf *b, size_t max)
{
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < READ_STEP ? max - total : READ_STEP, got = 0;
        ERR_clear_error();
        int r = SSL_read_ex(ssl, buf_reserve(b, want), want, &got);
        if (r == 1) {
            buf_commit(b, got);
            total += got;
            if (got < want && !SSL_has_pending(ssl))
                break; /* what the socket held is taken: as net_read, no read() only to see EAGAIN */
            continue;
        }
        if (total) {
            end_seen_again(ssl, r);
            break;
        }
        switch (SSL_get_error(ssl, r)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
            return 0;
        default:
            conn_failed(ssl);
            return -EPROTO;
        }
    }
    /* Whatever whole records OpenSSL still holds (read ahead, or the rest of a record begun), and
     * no more from the socket: at most its buffer, 16 KB and some, past max. What it keeps after
     * this is part of a record whose rest the socket has yet to bring, so the caller's
     * level-triggered loop misses nothing. */
    if (SSL_has_pending(ssl)) {
        conn_bio_hold(ssl, 1);
        for (;;) {
            size_t got = 0;
            ERR_clear_error();
            int r = SSL_read_ex(ssl, buf_reserve(b, READ_STEP), READ_STEP, &got);
            if (r != 1) {
                end_seen_again(ssl, r);
                break;
            }
            buf_commit(b, got);
            total += got;
        }
        ERR_clear_error();
        conn_bio_hold(ssl, 0);
    }
    return (ssize_t)total;
}

ssize_t http_tls_write(SSL *ssl, const void *p, size_t n)
{
    size_t w = 0;
    if (n == 0)
        return 0;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, p, n, &w);
    if (r == 1)
        return (ssize_t)w;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    default:
        conn_failed(ssl);
        return -EPIPE;
    }
}

ssize_t http_tls_write_buf(SSL *ssl, struct buf *b)
{
    size_t total = 0;
    while (buf_used(b) > 0) {
        ssize_t w = http_tls_write(ssl, buf_head(b), buf_used(b));
        if (w == -EAGAIN)
            break;
        if (w < 0)
            return w;
        buf_consume(b, (size_t)w);
        total += (size_t)w;
    }
    return (ssize_t)total;
}

/* ---- a self-signed certificate ---- */

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    int ok = ext && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? RC_OK : RC_ERROR;
}

/* Writes what fn writes to path through path.tmp (mode), then renames it. RC_OK or RC_ERROR. */
static int write_pem(const char *path, mode_t mode, int (*fn)(FILE *, void *), void *arg, char *err, size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return RC_ERROR;
    }
    int ok = fn(f, arg) == 1;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, ok ? strerror(errno) : "write failed");
        unlink(tmp);
        return RC_ERROR;
    }
    return RC_OK;
}

static int put_key(FILE *f, void *pkey) { return PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL); }
static int put_cert(FILE *f, void *x) { return PEM_write_X509(f, x); }

int http_tls_self_signed(const char *cert_path, const char *key_path, const char *cn, const char *alt_names,
                         unsigned days, char *err, size_t errlen)
{
    int rc = RC_ERROR;
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    if (!x || !serial || !pkey || !BN_rand(serial, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) || X509_set_version(x, 2) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400L) || X509_set_pubkey(x, pkey) != 1 ||
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 || add_ext(x, NID_subject_alt_name, alt_names) < 0 ||
        add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 || add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
        X509_sign(x, pkey, EVP_sha256()) <= 0) {
        snprintf(err, errlen, "cannot make a self-signed certificate: %s", ossl_reason());
        goto out;
    }
    if (write_pem(key_path, 0600, put_key, pkey, err, errlen) < 0 ||
        write_pem(cert_path, 0644, put_cert, x, err, errlen) < 0)
        goto out;
    rc = RC_OK;
out:
    X509_free(x);
    BN_free(serial);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

void http_tls_set_h2(struct http_tls *t, int on) { atomic_store(&t->h2, on ? 1 : 0); }

int http_tls_conn_is_h2(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}
