/* static.c — static file serving for the web UI; see static.h. */
#include "app/static.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/json.h"
#include "app/req.h"

#define PATH_MAX_LEN 1024
#define FILE_MAX     (16L * 1024 * 1024)

static void fail(struct http_response *resp, int status, const char *msg)
{
    resp->status = status;
    buf_reset(&resp->body);
    json_put_error(&resp->body, msg);
    http_response_header(resp, "Content-Type", "application/json; charset=utf-8");
}

const char *static_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(name, '.');
    if (dot != NULL && strchr(dot, '/') == NULL)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (req_ieq(dot, strlen(dot), types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

/* 1 if the decoded path contains a segment starting with '.' or a backslash. */
static int forbidden(const char *path)
{
    if (strchr(path, '\\') != NULL)
        return 1;
    for (const char *p = path; (p = strchr(p, '/')) != NULL; p++)
        if (p[1] == '.')
            return 1;
    return 0;
}

/* 1 if the If-None-Match list contains etag (weak comparison) or "*". */
static int etag_matches(const struct http_str *inm, const char *etag)
{
    const char *p = inm->p, *end = p + inm->n;
    size_t el = strlen(etag);
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *s = p;
        while (p < end && *p != ',')
            p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e - s == 1 && *s == '*')
            return 1;
        if (e - s >= 2 && s[0] == 'W' && s[1] == '/')
            s += 2;
        if ((size_t)(e - s) == el && memcmp(s, etag, el) == 0)
            return 1;
    }
    return 0;
}

void static_serve(const char *web_dir, const struct http_request *req, struct http_response *resp)
{
    char rel[PATH_MAX_LEN], full[PATH_MAX_LEN + 512], etag[64];
    const struct http_head *h = req->head;
    struct stat st;
    int fd = -1;
    long n = req_percent_decode(h->path.p, h->path.n, rel, sizeof rel - 16);
    if (n < 1 || rel[0] != '/') {
        fail(resp, 400, "malformed path");
        return;
    }
    if (forbidden(rel)) {
        fail(resp, 404, "not found");
        return;
    }
    if (rel[n - 1] == '/')
        strcpy(rel + n, "index.html");
    if ((size_t)snprintf(full, sizeof full, "%s%s", web_dir, rel) >= sizeof full) {
        fail(resp, 404, "not found");
        return;
    }
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fail(resp, 404, "not found");
        goto out;
    }
    if (st.st_size > FILE_MAX) {
        fail(resp, 500, "file too large to serve");
        goto out;
    }
    snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec);
    const struct http_str *inm = req_header(h, "if-none-match");
    if (inm != NULL && etag_matches(inm, etag)) {
        resp->status = 304;
        http_response_header(resp, "ETag", "%s", etag);
        http_response_header(resp, "Cache-Control", "no-cache");
        goto out;
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *dst = buf_reserve(&resp->body, size + 1);
    while (got < size) {
        ssize_t r = read(fd, dst + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got != size) {
        fail(resp, 500, "cannot read file");
        goto out;
    }
    buf_commit(&resp->body, size);
    resp->status = 200;
    http_response_header(resp, "Content-Type", "%s", static_content_type(rel));
    http_response_header(resp, "Cache-Control", "no-cache");
    http_response_header(resp, "ETag", "%s", etag);
out:
    if (fd >= 0)
        close(fd);
}
