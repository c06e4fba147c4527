/* message.c — helpers for buffered requests/responses; see message.h. */
#include "http/message.h"

#include <sodium.h>
#include <stdarg.h>
#include <string.h>

void http_response_header(struct http_response *resp, const char *name, const char *fmt, ...)
{
    va_list ap;
    buf_puts(&resp->headers, name);
    buf_append(&resp->headers, ": ", 2);
    va_start(ap, fmt);
    buf_vprintf(&resp->headers, fmt, ap);
    va_end(ap);
    buf_append(&resp->headers, "\r\n", 2);
}

int http_request_id_ok(struct http_str v)
{
    if (v.n == 0 || v.n > HTTP_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char ch = (unsigned char)v.p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("._:+/=-", ch)))
            return 0;
    }
    return 1;
}

void http_request_id_make(char out[33])
{
    unsigned char raw[16];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(out, 33, raw, sizeof(raw));
}
