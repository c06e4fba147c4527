/* client_addr.h — who the client is: the peer's address, or the one a trusted proxy reports.
 *
 * A web server behind `agora lb` sees the balancer as its TCP peer; the balancer names the client
 * in X-Forwarded-For (it replaces whatever the client sent with the address it saw). That header
 * is believed only when the peer is a trusted proxy (`agora server --trusted-proxy`, default
 * loopback: 127.0.0.0/8 and ::1); then the client is the right-most address of the header(s)
 * that is not itself a trusted proxy (an address a client wrote further left is never used),
 * or the left-most one when all are trusted. An element that is not an IP address ends the walk
 * (the last address accepted is the client). A client talking to a server directly from an
 * untrusted address is that address, whatever it sends.
 *
 * Addresses are normalised (inet_pton then inet_ntop; IPv4-mapped IPv6 as IPv4), and
 * client_addr_key() gives the form limits count by: an IPv4 address as is, an IPv6 address by
 * its /64 (one subscriber's share, which an attacker gets whole). Pure functions, no allocation. */
#ifndef AGORA_APP_CLIENT_ADDR_H
#define AGORA_APP_CLIENT_ADDR_H
#include <stddef.h>

#include "http/parser.h"

#define CLIENT_TRUST_MAX  32
#define CLIENT_ADDR_CHARS 48 /* an address as text, NUL included */

struct client_net {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};

struct client_trust {
    struct client_net net[CLIENT_TRUST_MAX];
    int n;
};

/* Sets t to the default: 127.0.0.0/8 and ::1. */
void client_trust_default(struct client_trust *t);
/* Adds "ADDR[/BITS]" entries, several separated by commas; "none" empties the list. Returns 0,
 * or -1 with a message in err (err may be NULL) and t unchanged. */
int client_trust_add(struct client_trust *t, const char *spec, char *err, size_t errlen);
/* 1 if ip (text) is in one of t's networks. */
int client_trust_has(const struct client_trust *t, const char *ip);
/* Writes the client's normalised address into out (CLIENT_ADDR_CHARS bytes): peer, or what the
 * X-Forwarded-For headers of h say when peer is trusted (see above). */
void client_addr(const struct client_trust *t, const char *peer, const struct http_head *h,
                 char out[CLIENT_ADDR_CHARS]);
/* 1 if the client reached the balancer over TLS: peer is a trusted proxy (the rule above) and the
 * request carries exactly one X-Forwarded-Proto field, "https" (the balancer replaces whatever a
 * client sent with one field of its own). A client talking to the server directly from an untrusted
 * address gets 0 whatever it sends. */
int client_forwarded_https(const struct client_trust *t, const char *peer, const struct http_head *h);
/* Writes the limit key of address ip into out (CLIENT_ADDR_CHARS bytes): IPv4 as is, IPv6 as its
 * /64 ("2001:db8:1:2::/64"); text that is not an address is copied (cut to fit). */
void client_addr_key(const char *ip, char out[CLIENT_ADDR_CHARS]);

#endif
