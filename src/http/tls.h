/* tls.h — TLS on the server side of a listener (OpenSSL 3): certificates, handshakes, records.
 *
 * One struct http_tls per process and TLS listener, shared by every worker thread. It holds the
 * certificate set in force (a reference-counted snapshot: one SSL_CTX per certificate, the first
 * the default, the others chosen by SNI), the session-ticket keys (made in memory, rotated every
 * HTTP_TLS_TICKET_ROTATE_S seconds; the previous key still decrypts, so a ticket lives two
 * periods at most) and, through the default SSL_CTX, the server-side session cache for TLS 1.2
 * clients without tickets. Workers share both because they share the SSL_CTX (OpenSSL locks it).
 *
 * Defaults (docs/SECURITY.md): TLS 1.2 and 1.3 only; Mozilla's "intermediate" TLS 1.2 cipher
 * list (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305) and OpenSSL's TLS 1.3 suites; groups X25519,
 * P-256, P-384; no renegotiation, no compression; ALPN answers "h2" when offered and enabled
 * (http_tls_set_h2; off by default: only the balancer serves HTTP/2, http/h2.h), else "http/1.1"
 * when offered; an unexpected EOF reads as an EOF.
 *
 * http_tls_reload builds a new certificate set and swaps it in only when every certificate
 * loads; connections keep the set they started with (each holds a reference) and new handshakes
 * take the new one. A start error names the file and the reason: missing or unreadable, not a
 * certificate or key, key not matching the certificate, expired, not yet valid.
 *
 * Per connection, the functions below wrap SSL_* for a non-blocking socket with the contracts of
 * core/net.h: reads and writes return counts or -errno, -EAGAIN meaning "wait for the loop". They
 * run on the connection's loop thread only. */
#ifndef AGORA_HTTP_TLS_H
#define AGORA_HTTP_TLS_H
#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"

#define HTTP_TLS_MAX_CERTS        16
#define HTTP_TLS_TICKET_ROTATE_S  3600
#define HTTP_TLS_SESSION_CACHE    20480 /* sessions kept for TLS 1.2 clients without tickets */
#define HTTP_TLS_HANDSHAKE_MS_DEF 10000

struct http_tls;

/* Loads n certificate/key pairs (PEM files; a certificate file may hold the whole chain) and
 * makes the process's TLS object. Returns NULL with a message in err on any bad pair. */
struct http_tls *http_tls_new(const char *const *certs, const char *const *keys, size_t n, char *err, size_t errlen);
/* Loads the pairs again (SIGHUP). On success the new set serves new handshakes from now on and
 * RC_OK is returned; on failure RC_ERROR with a message in err, and the running set stays. */
int http_tls_reload(struct http_tls *t, const char *const *certs, const char *const *keys, size_t n, char *err,
                    size_t errlen);
/* Whether ALPN offers "h2" from now on (preferred over "http/1.1"); off after http_tls_new. */
void http_tls_set_h2(struct http_tls *t, int on);
/* Frees t. Every connection made from it must have been freed. */
void http_tls_free(struct http_tls *t);

/* Makes a self-signed certificate (`agora up`'s for localhost): a new P-256 key, subject CN cn,
 * subjectAltName alt_names (e.g. "DNS:localhost,IP:127.0.0.1"), valid from an hour ago for days.
 * The key is written to key_path with mode 0600 and the certificate to cert_path (0644), each
 * under a temporary name first and then renamed, so a reader never sees half a file. Returns
 * RC_OK, or RC_ERROR with a message in err. */
int http_tls_self_signed(const char *cert_path, const char *key_path, const char *cn, const char *alt_names,
                         unsigned days, char *err, size_t errlen);

/* A new server-side TLS connection on fd (the caller keeps the descriptor), holding a reference
 * to the certificate set in force. NULL when OpenSSL cannot make one (then close the socket). */
SSL *http_tls_conn_new(struct http_tls *t, int fd);
/* Sends a close_notify if the handshake was done and nothing failed (best effort: never waits),
 * then frees the connection and drops its reference. NULL is fine. */
void http_tls_conn_free(SSL *ssl);

/* Results of http_tls_handshake besides RC_OK (done) and RC_ERROR (failed: close). */
#define HTTP_TLS_WANT_READ  1
#define HTTP_TLS_WANT_WRITE 2
int http_tls_handshake(SSL *ssl);
/* Reads decrypted bytes into b, up to max (as net_read), and then every whole record OpenSSL has
 * read ahead (at most its buffer, 16 KB and a record's overhead, more), so that OpenSSL is left
 * holding at most part of a record whose rest is still to come: what is not read yet is in the
 * socket, where the loop sees it. An end or an error met after bytes were read is returned by the
 * next read, which the socket then reports (its reading side is shut). Returns the count, 0 at the
 * end of the stream (close_notify or EOF), -EAGAIN when nothing is readable yet, -EPROTO on a TLS
 * error. */
ssize_t http_tls_read(SSL *ssl, struct buf *b, size_t max);
/* Writes n bytes from p (as send(2)): the count written (whole records), -EAGAIN when none could
 * go, -EPIPE on failure. Bytes not taken must be offered again, first in the next write. */
ssize_t http_tls_write(SSL *ssl, const void *p, size_t n);
/* Writes what b holds, consuming what went out (as net_write). */
ssize_t http_tls_write_buf(SSL *ssl, struct buf *b);
/* 1 if the handshake (done) agreed on "h2" by ALPN. */
int http_tls_conn_is_h2(SSL *ssl);
/* Sends a close_notify now (best effort), before the write side is shut. */
void http_tls_close_notify(SSL *ssl);

#endif
