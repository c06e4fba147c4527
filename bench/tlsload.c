/*
 * tlsload — TLS handshakes per second, full or resumed, for agora's benchmarks (bench/tls.sh).
 *
 * Each of --threads threads runs a closed loop of one connection at a time: TCP connect, TLS
 * handshake (TLS 1.3 unless --tls12; the certificate is not verified, the handshake signature is),
 * one "GET / HTTP/1.1" with "Connection: close", read to the end, close. With --resume a thread
 * offers the session (ticket) its previous connection received, so every connection but a
 * thread's first resumes when the server accepts it; the output counts how many did. A
 * connection that fails anywhere, or whose answer does not start "HTTP/1.1 2", counts one error.
 * wrk and h2load cannot do this: wrk keeps connections alive, h2load opens each client's
 * connection once and never offers a session.
 *
 * Output: the lines bench/wrk_output.py reads from wrk --latency (50% and 99% of the connection
 * time from connect to the last byte, "N requests in", "Requests/sec:" = connections per second,
 * errors as "Socket errors"), then one "tlsload:" line with key=value pairs (full, resumed,
 * protocol, cipher of the last connection). Exit status 0 when the run finished, 1 on a setup
 * failure, 2 on bad usage. Standalone: libc, pthreads and OpenSSL only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000

struct opts {
    int port, threads, seconds, resume, tls12;
};

struct worker {
    pthread_t th;
    const struct opts *o;
    SSL_CTX *ctx;
    double deadline;
    long ok, full, resumed, errors;
    unsigned *lat_us; /* one per completed connection */
    long nlat;
    char proto[32], cipher[64];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One connection; returns 0 on success (and updates *sess when resuming), -1 on failure. */
static int one(struct worker *w, SSL_SESSION **sess, int *reused)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    int rc = -1, fd = socket(AF_INET, SOCK_STREAM, 0);
    SSL *ssl = NULL;
    char head[16] = {0}, buf[16384];
    size_t got = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->o->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ssl = SSL_new(w->ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, "localhost") != 1)
        goto out;
    if (*sess)
        SSL_set_session(ssl, *sess);
    if (SSL_connect(ssl) != 1 || SSL_write(ssl, req, (int)sizeof(req) - 1) != (int)sizeof(req) - 1)
        goto out;
    for (;;) {
        int r = SSL_read(ssl, buf, sizeof(buf));
        if (r <= 0)
            break; /* close_notify or the TCP end: the answer is complete */
        if (got < sizeof(head) - 1) {
            size_t take = sizeof(head) - 1 - got < (size_t)r ? sizeof(head) - 1 - got : (size_t)r;
            memcpy(head + got, buf, take);
        }
        got += (size_t)r;
    }
    if (strncmp(head, "HTTP/1.1 2", 10) != 0)
        goto out;
    *reused = SSL_session_reused(ssl);
    snprintf(w->proto, sizeof(w->proto), "%s", SSL_get_version(ssl));
    snprintf(w->cipher, sizeof(w->cipher), "%s", SSL_get_cipher_name(ssl));
    if (w->o->resume) {
        SSL_SESSION *s = SSL_get1_session(ssl); /* holds the ticket received after the handshake */
        if (s) {
            SSL_SESSION_free(*sess);
            *sess = s;
        }
    }
    rc = 0;
out:
    if (ssl) {
        SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN); /* keeps the session good */
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
    ERR_clear_error();
    return rc;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    SSL_SESSION *sess = NULL;
    while (now_s() < w->deadline) {
        double t0 = now_s();
        int reused = 0;
        if (one(w, &sess, &reused) < 0) {
            w->errors++;
            SSL_SESSION_free(sess); /* start again with a full handshake */
            sess = NULL;
            continue;
        }
        w->ok++;
        if (reused)
            w->resumed++;
        else
            w->full++;
        if (w->nlat < MAX_SAMPLES / w->o->threads)
            w->lat_us[w->nlat++] = (unsigned)((now_s() - t0) * 1e6);
    }
    SSL_SESSION_free(sess);
    return NULL;
}

static int cmp_u(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: tlsload --port N [--threads N] [--seconds N] [--resume] [--tls12]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct opts o = {.threads = 8, .seconds = 5};
    static const struct option longs[] = {
        {"port", required_argument, NULL, 'p'},    {"threads", required_argument, NULL, 't'},
        {"seconds", required_argument, NULL, 'd'}, {"resume", no_argument, NULL, 'r'},
        {"tls12", no_argument, NULL, '2'},         {NULL, 0, NULL, 0},
    };
    for (int c; (c = getopt_long(argc, argv, "p:t:d:r2", longs, NULL)) != -1;) {
        switch (c) {
        case 'p':
            o.port = atoi(optarg);
            break;
        case 't':
            o.threads = atoi(optarg);
            break;
        case 'd':
            o.seconds = atoi(optarg);
            break;
        case 'r':
            o.resume = 1;
            break;
        case '2':
            o.tls12 = 1;
            break;
        default:
            usage();
        }
    }
    if (o.port <= 0 || o.port > 65535 || o.threads <= 0 || o.threads > 256 || o.seconds <= 0)
        usage();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        fprintf(stderr, "tlsload: SSL_CTX_new failed\n");
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(ctx, o.tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, o.tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    /* One suite and one group offered, so every server negotiates the same ones. */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
    SSL_CTX_set1_groups_list(ctx, "X25519");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* sessions are kept by hand */
    struct worker *ws = calloc((size_t)o.threads, sizeof(*ws));
    double start = now_s(), deadline = start + o.seconds;
    for (int i = 0; i < o.threads; i++) {
        ws[i].o = &o;
        ws[i].ctx = ctx;
        ws[i].deadline = deadline;
        ws[i].lat_us = malloc(sizeof(unsigned) * (MAX_SAMPLES / (size_t)o.threads));
        if (!ws[i].lat_us || pthread_create(&ws[i].th, NULL, run, &ws[i]) != 0) {
            fprintf(stderr, "tlsload: cannot start thread %d\n", i);
            return 1;
        }
    }
    long ok = 0, full = 0, resumed = 0, errors = 0, n = 0;
    for (int i = 0; i < o.threads; i++) {
        pthread_join(ws[i].th, NULL);
        ok += ws[i].ok, full += ws[i].full, resumed += ws[i].resumed, errors += ws[i].errors, n += ws[i].nlat;
    }
    double secs = now_s() - start;
    unsigned *all = malloc(sizeof(unsigned) * (size_t)(n ? n : 1));
    for (int i = 0, k = 0; i < o.threads; i++)
        for (long j = 0; j < ws[i].nlat; j++)
            all[k++] = ws[i].lat_us[j];
    qsort(all, (size_t)n, sizeof(unsigned), cmp_u);
    double p50 = n ? all[n / 2] / 1000.0 : 0, p99 = n ? all[(n * 99) / 100] / 1000.0 : 0;
    const char *proto = "-", *cipher = "-";
    for (int i = 0; i < o.threads; i++)
        if (ws[i].ok)
            proto = ws[i].proto, cipher = ws[i].cipher;
    printf("tlsload %s handshakes, %d threads, one connection each at a time, %ds, port %d\n",
           o.resume ? "resumed" : "full", o.threads, o.seconds, o.port);
    printf("  Latency Distribution\n     50%%   %.3fms\n     99%%   %.3fms\n", p50, p99);
    printf("  %ld requests in %.2fs\n", ok, secs);
    if (errors)
        printf("  Socket errors: connect %ld, read 0, write 0, timeout 0\n", errors);
    printf("Requests/sec: %.2f\n", ok / secs);
    printf("tlsload: connections=%ld full=%ld resumed=%ld errors=%ld seconds=%.2f protocol=%s cipher=%s\n", ok, full,
           resumed, errors, secs, proto, cipher);
    return 0;
}
