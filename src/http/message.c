/* message.c — helpers for buffered requests/responses; see message.h. */
#include "http/message.h"

#include <stdarg.h>

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
