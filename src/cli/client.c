/* client.c — blocking HTTP client for the command line; see client.h. */
#include "cli/client.h"

#include <stdio.h>
#include <string.h>

#include "core/net.h"
#include "http/client.h"

/* Says why c failed, in the words agora ctl and agora up have always used. */
static void describe(const struct http_client *c, const char *addr, char *err, size_t errlen)
{
    switch (c->error) {
    case HTTP_CLIENT_ECONNECT:
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(c->err));
        break;
    case HTTP_CLIENT_ETIMEOUT:
        if (c->phase == HTTP_CLIENT_CONNECTING)
            snprintf(err, errlen, "cannot connect to %s: timed out", addr);
        else if (c->phase == HTTP_CLIENT_SENDING)
            snprintf(err, errlen, "%s: timed out sending", addr);
        else
            snprintf(err, errlen, "%s: timed out waiting for the answer", addr);
        break;
    case HTTP_CLIENT_ESEND:
        snprintf(err, errlen, "%s: send failed: %s", addr, strerror(c->err));
        break;
    case HTTP_CLIENT_ETOOLARGE:
        snprintf(err, errlen, "%s: answer too large", addr);
        break;
    case HTTP_CLIENT_EREQUEST:
        snprintf(err, errlen, "%s: request not sent: %s", addr, c->detail);
        break;
    default: /* ECLOSED, EMALFORMED */
        snprintf(err, errlen, "%s: malformed or incomplete HTTP answer", addr);
        break;
    }
}

int cli_http(const char *addr, const char *method, const char *path, const char *token, const char *json_body,
             unsigned timeout_ms, int *status, struct buf *body, char *err, size_t errlen)
{
    struct net_addr a;
    if (net_parse_addr(addr, &a) < 0) {
        snprintf(err, errlen, "invalid address '%s'", addr);
        return -1;
    }
    struct buf auth = {0};
    struct http_client_header hdrs[3] = {{"User-Agent", "agora-cli"}};
    size_t n = 1;
    if (token && *token) {
        buf_printf(&auth, "Bearer %s", token);
        hdrs[n++] = (struct http_client_header){"Authorization", buf_cstr(&auth)};
    }
    if (json_body)
        hdrs[n++] = (struct http_client_header){"Content-Type", "application/json"};
    const struct http_client_req req = {.method = method,
                                        .target = path,
                                        .host = addr,
                                        .headers = hdrs,
                                        .nheaders = n,
                                        .body = json_body ? json_body : "",
                                        .body_len = json_body ? strlen(json_body) : 0};
    const struct http_client_opts opts = {.max_body = 16u << 20};
    struct http_client c;
    int rc = -1;
    if (http_client_fetch(&c, &a, &req, &opts, timeout_ms) < 0) {
        describe(&c, addr, err, errlen);
    } else {
        *status = c.status;
        buf_append(body, buf_head(&c.body), buf_used(&c.body));
        rc = 0;
    }
    http_client_free(&c);
    buf_free(&auth);
    return rc;
}
