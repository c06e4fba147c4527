/* gate.h — who may use an operator's endpoint: the balancer's admin API (lb/admin.h) and a web
 * server's /metrics listener (cli/server.c) let requests through the same gate.
 *
 * Every request, from any address, is checked in this order:
 *   1. Host must be localhost, a loopback IP (127.x.x.x, [::1]) or the listener's own address
 *      (any IP literal when that is a wildcard), and the target must be origin-form → else 403
 *      (a DNS rebinding page sends its own name as Host; an IP literal cannot be rebound);
 *   2. with a token: an address that sent HTTP_GATE_FAIL_LIMIT wrong tokens in the last minute
 *      → 429 + Retry-After; then "Authorization: Bearer <token>", compared in constant time →
 *      else 401 with WWW-Authenticate: Bearer (every refusal is logged with the client address).
 *      Without a token (the web server's /metrics when none is configured): only a loopback
 *      client → else 403.
 * Wrong tokens are counted per client address, in a small table that evicts the oldest window:
 * it bounds log noise from one address. The right token is always accepted: every local process
 * shares 127.0.0.1, and a throttle that refused the right token too would let any of them lock
 * the operator out (found by the review of issue 9). Refusals are logged, at most
 * HTTP_GATE_LOG_PER_S lines a second; the first refusal logged in a later second is preceded by
 * a line counting those left out (one client made 14 000 lines a second: review of issue 13). What makes guessing
 * hopeless is the token itself (256 random bits when the balancer generates it). Refusals are JSON {"error": "..."} and
 * close their connection (resp->close): a refused client cannot keep one of the listener's few connections idle (review
 * of issue 13: 16 of them, one refused request a minute each, kept every scrape out).
 *
 * Threads: a gate belongs to the loop thread its listener runs on. */
#ifndef AGORA_HTTP_GATE_H
#define AGORA_HTTP_GATE_H
#include <stddef.h>
#include <stdint.h>

#include "core/net.h"
#include "http/message.h"

#define HTTP_GATE_TOKEN_MAX      128 /* longest token + 1 */
#define HTTP_GATE_FAIL_SLOTS     64
#define HTTP_GATE_FAIL_LIMIT     10
#define HTTP_GATE_FAIL_WINDOW_MS 60000
#define HTTP_GATE_LOG_PER_S      20 /* refusal lines a second; then one line counts the rest */

struct http_gate_fail {
    char ip[64];
    uint64_t since_ms; /* start of the window; 0 = free */
    unsigned count;
};

struct http_gate {
    char token[HTTP_GATE_TOKEN_MAX]; /* the bearer token in force; "" = none (loopback clients only) */
    char host[128];                  /* host part of the listener's address, for the Host check */
    int host_bracketed;              /* it was written "[v6]:port" */
    int wildcard;                    /* the address is 0.0.0.0 / [::]: any IP literal is this host */
    /* Words of the messages: set by http_gate_init, the balancer's by default. */
    const char *log_prefix; /* "agora lb: admin" */
    const char *api;        /* "admin API", starts every refusal's message */
    const char *addr_name;  /* "admin address" */
    const char *realm;      /* "agora-admin" */
    const char *token_hint; /* "see agora lb --help for where the token is" */
    struct http_gate_fail fails[HTTP_GATE_FAIL_SLOTS];
    uint64_t log_second;  /* the second the refusal lines below were counted in */
    unsigned log_count;   /* refusal lines written in it */
    unsigned log_dropped; /* refusals not logged in it */
};

/* Sets g up for a listener on listen ("host:port", "[v6]:port" or ":port", as given) bound to
 * addr: clears the token and the failure table, sets the message words to the balancer's
 * admin API's (the caller may change them afterwards). */
void http_gate_init(struct http_gate *g, const char *listen, const struct net_addr *addr);
/* 1 if the Host value v (n bytes, "name[:port]" or "[v6][:port]") names this listener. */
int http_gate_host_allowed(const struct http_gate *g, const char *v, size_t n);
/* 1 if the request carries "Authorization: Bearer <the token>" (constant time; never with an
 * empty token); *present is set to whether it has an Authorization header at all. */
int http_gate_token_ok(const struct http_gate *g, const struct http_request *req, int *present);
/* Check 1 alone. Returns 1 when the request passes; otherwise the 403 is in resp. */
int http_gate_admit_host(struct http_gate *g, const struct http_request *req, struct http_response *resp);
/* Checks 1 and 2. Returns 1 when the request passes; otherwise the refusal is in resp (403, 429
 * or 401). */
int http_gate_admit(struct http_gate *g, const struct http_request *req, struct http_response *resp);
/* Answers {"error": message} with this status, the message printf-formatted (and escaped). */
void http_gate_reply_error(struct http_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
