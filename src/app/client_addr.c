/* client_addr.c — trusted proxies and X-Forwarded-For; see client_addr.h. */
#include "app/client_addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/req.h"

/* Parses an address (n bytes of text) into family/bytes; IPv4-mapped IPv6 becomes IPv4. */
static int parse_ip(const char *s, size_t n, int *family, unsigned char addr[16])
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET, tmp, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, tmp, addr) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) {
            memmove(addr, addr + 12, 4);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return 0;
    }
    return -1;
}

static int net_has(const struct client_net *net, int family, const unsigned char *addr)
{
    if (net->family != family)
        return 0;
    int full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, addr, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (addr[full] & mask);
}

static int trusted(const struct client_trust *t, int family, const unsigned char *addr)
{
    for (int i = 0; i < t->n; i++)
        if (net_has(&t->net[i], family, addr))
            return 1;
    return 0;
}

void client_trust_default(struct client_trust *t)
{
    memset(t, 0, sizeof *t);
    client_trust_add(t, "127.0.0.0/8,::1", NULL, 0);
}

/* Parses one "ADDR[/BITS]" of n bytes into net. */
static int parse_net(const char *s, size_t n, struct client_net *net)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    memset(net, 0, sizeof *net);
    if (parse_ip(s, alen, &net->family, net->addr) < 0)
        return -1;
    int max = net->family == AF_INET ? 32 : 128;
    net->bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t dn = n - alen - 1;
        if (dn == 0 || dn > 3)
            return -1;
        int bits = 0;
        for (size_t i = 0; i < dn; i++) {
            if (d[i] < '0' || d[i] > '9')
                return -1;
            bits = bits * 10 + (d[i] - '0');
        }
        if (bits > max)
            return -1;
        net->bits = bits;
    }
    /* clear host bits so that 10.1.2.3/8 means 10.0.0.0/8 */
    for (int i = net->bits; i < max; i++)
        net->addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
    return 0;
}

int client_trust_add(struct client_trust *out, const char *spec, char *err, size_t errlen)
{
    const char *p = spec;
    struct client_trust copy = *out, *t = &copy; /* all or nothing */
    if (strcmp(spec, "none") == 0) {
        out->n = 0;
        return 0;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        struct client_net net;
        if (parse_net(p, n, &net) < 0) {
            if (err)
                snprintf(err, errlen, "'%.*s' is not an address or ADDR/BITS network", (int)(n > 60 ? 60 : n), p);
            return -1;
        }
        if (t->n == CLIENT_TRUST_MAX) {
            if (err)
                snprintf(err, errlen, "at most %d trusted proxies", CLIENT_TRUST_MAX);
            return -1;
        }
        t->net[t->n++] = net;
        if (!comma) {
            *out = copy;
            return 0;
        }
        p = comma + 1;
    }
}

int client_trust_has(const struct client_trust *t, const char *ip)
{
    int family;
    unsigned char addr[16];
    return parse_ip(ip, strlen(ip), &family, addr) == 0 && trusted(t, family, addr);
}

static void format_ip(int family, const unsigned char *addr, char out[CLIENT_ADDR_CHARS])
{
    if (!inet_ntop(family, addr, out, CLIENT_ADDR_CHARS))
        snprintf(out, CLIENT_ADDR_CHARS, "?");
}

int client_forwarded_https(const struct client_trust *t, const char *peer, const struct http_head *h)
{
    if (!peer || !client_trust_has(t, peer))
        return 0;
    int https = 0, n = 0;
    for (int i = 0; i < h->nheaders; i++) {
        if (!req_ieq(h->headers[i].name.p, h->headers[i].name.n, "x-forwarded-proto"))
            continue;
        n++;
        https = req_ieq(h->headers[i].value.p, h->headers[i].value.n, "https");
    }
    return n == 1 && https;
}

void client_addr(const struct client_trust *t, const char *peer, const struct http_head *h, char out[CLIENT_ADDR_CHARS])
{
    int family;
    unsigned char addr[16];
    if (parse_ip(peer, strlen(peer), &family, addr) < 0) {
        snprintf(out, CLIENT_ADDR_CHARS, "%s", peer); /* e.g. "unix" */
        return;
    }
    /* Walk the X-Forwarded-For elements right to left, across headers last to first, while the
     * hop that reported the current address is trusted. */
    for (int i = h->nheaders - 1; i >= 0 && trusted(t, family, addr); i--) {
        if (!req_ieq(h->headers[i].name.p, h->headers[i].name.n, "x-forwarded-for"))
            continue;
        const char *v = h->headers[i].value.p;
        size_t end = h->headers[i].value.n;
        while (end > 0 && trusted(t, family, addr)) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            size_t a = start, b = end;
            while (a < b && (v[a] == ' ' || v[a] == '\t'))
                a++;
            while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
                b--;
            int f2;
            unsigned char a2[16];
            if (parse_ip(v + a, b - a, &f2, a2) < 0)
                goto done; /* not an address: the last one accepted stands */
            family = f2;
            memcpy(addr, a2, sizeof a2);
            end = start > 0 ? start - 1 : 0;
        }
    }
done:
    format_ip(family, addr, out);
}

void client_addr_key(const char *ip, char out[CLIENT_ADDR_CHARS])
{
    int family;
    unsigned char addr[16];
    if (parse_ip(ip, strlen(ip), &family, addr) < 0) {
        snprintf(out, CLIENT_ADDR_CHARS, "%s", ip);
        return;
    }
    if (family == AF_INET6) {
        memset(addr + 8, 0, 8);
        format_ip(family, addr, out);
        size_t n = strlen(out);
        snprintf(out + n, CLIENT_ADDR_CHARS - n, "/64");
        return;
    }
    format_ip(family, addr, out);
}
