/* jsonw.c — the JSON writer and UTF-8 rules; see jsonw.h. */
#include "core/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUT_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* Length of the valid UTF-8 sequence starting at p (a byte >= 0x80), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if ((size_t)(end - p) < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int jsonw_utf8_valid(const char *s, size_t n, size_t *count)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t cps = 0;
    while (p < end) {
        size_t len = *p < 0x80 ? 1 : utf8_seq(p, end);
        if (len == 0)
            return 0;
        p += len;
        cps++;
    }
    if (count != NULL)
        *count = cps;
    return 1;
}

void jsonw_put_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0;
    char esc[6] = {'\\', 'u', '0', '0', 0, 0};
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_seq(u + i, u + n);
            if (len > 0) {
                i += len;
                continue;
            }
        }
        buf_append(b, s + run, i - run);
        run = ++i;
        const char *named = c == '"'    ? "\\\""
                            : c == '\\' ? "\\\\"
                            : c == '\n' ? "\\n"
                            : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t"
                                        : NULL;
        if (named) {
            buf_append(b, named, 2);
        } else if (c >= 0x80) { /* not valid UTF-8: U+FFFD REPLACEMENT CHARACTER */
            PUT_LIT(b, "\xef\xbf\xbd");
        } else {
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            buf_append(b, esc, 6);
        }
    }
    buf_append(b, s + run, n - run);
    buf_append(b, "\"", 1);
}

size_t jsonw_format_int(char *out, int64_t v)
{
    char tmp[24];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = tmp[--n];
    return len;
}

void jsonw_init(struct jsonw *w, struct buf *b, int layout)
{
    memset(w, 0, sizeof(*w));
    w->b = b;
    w->spaced = layout == JSONW_SPACED;
}

/* Writes what goes before a value: the comma after an earlier member (none after a key). A value
 * inside an object must follow its key. */
static void before_value(struct jsonw *w)
{
    if (w->keyed) {
        w->keyed = 0;
        return;
    }
    if (w->depth == 0)
        return;
    uint32_t bit = 1u << (w->depth - 1);
    if (w->objects & bit)
        abort(); /* a value in an object needs a key */
    if (w->nonempty & bit)
        buf_append(w->b, ", ", w->spaced ? 2 : 1);
    w->nonempty |= bit;
}

void jsonw_key(struct jsonw *w, const char *key)
{
    uint32_t bit = w->depth ? 1u << (w->depth - 1) : 0;
    if (!(w->objects & bit) || w->keyed)
        abort(); /* a key outside an object, or two keys in a row */
    if (w->nonempty & bit)
        buf_append(w->b, ", ", w->spaced ? 2 : 1);
    w->nonempty |= bit;
    jsonw_put_str(w->b, key, strlen(key));
    buf_append(w->b, ": ", w->spaced ? 2 : 1);
    w->keyed = 1;
}

static void open_container(struct jsonw *w, int object)
{
    before_value(w);
    if (w->depth == JSONW_MAX_DEPTH)
        abort();
    uint32_t bit = 1u << w->depth;
    w->depth++;
    w->nonempty &= ~bit;
    if (object)
        w->objects |= bit;
    else
        w->objects &= ~bit;
    buf_append(w->b, object ? "{" : "[", 1);
}

void jsonw_object(struct jsonw *w) { open_container(w, 1); }
void jsonw_array(struct jsonw *w) { open_container(w, 0); }

void jsonw_end(struct jsonw *w)
{
    if (w->depth == 0 || w->keyed)
        abort(); /* nothing open, or a key without its value */
    w->depth--;
    buf_append(w->b, (w->objects >> w->depth) & 1 ? "}" : "]", 1);
}

void jsonw_str(struct jsonw *w, const char *s, size_t n)
{
    before_value(w);
    jsonw_put_str(w->b, s, n);
}

void jsonw_cstr(struct jsonw *w, const char *s) { jsonw_str(w, s, strlen(s)); }

void jsonw_int(struct jsonw *w, int64_t v)
{
    char tmp[24];
    before_value(w);
    buf_append(w->b, tmp, jsonw_format_int(tmp, v));
}

void jsonw_uint(struct jsonw *w, uint64_t v)
{
    char tmp[24];
    size_t n = sizeof(tmp);
    before_value(w);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    buf_append(w->b, tmp + n, sizeof(tmp) - n);
}

void jsonw_double(struct jsonw *w, double v, int decimals)
{
    before_value(w);
    if (!isfinite(v)) {
        PUT_LIT(w->b, "null");
        return;
    }
    buf_printf(w->b, "%.*f", decimals, v);
}

void jsonw_bool(struct jsonw *w, int v)
{
    before_value(w);
    if (v)
        PUT_LIT(w->b, "true");
    else
        PUT_LIT(w->b, "false");
}

void jsonw_null(struct jsonw *w)
{
    before_value(w);
    PUT_LIT(w->b, "null");
}

void jsonw_raw(struct jsonw *w, const char *json, size_t n)
{
    before_value(w);
    buf_append(w->b, json, n);
}

void jsonw_kv_str(struct jsonw *w, const char *key, const char *s)
{
    jsonw_key(w, key);
    jsonw_cstr(w, s);
}

void jsonw_kv_int(struct jsonw *w, const char *key, int64_t v)
{
    jsonw_key(w, key);
    jsonw_int(w, v);
}

void jsonw_kv_uint(struct jsonw *w, const char *key, uint64_t v)
{
    jsonw_key(w, key);
    jsonw_uint(w, v);
}

void jsonw_kv_bool(struct jsonw *w, const char *key, int v)
{
    jsonw_key(w, key);
    jsonw_bool(w, v);
}

void jsonw_doc_str(struct buf *b, int layout, const char *key, const char *s)
{
    struct jsonw w;
    jsonw_init(&w, b, layout);
    jsonw_object(&w);
    jsonw_kv_str(&w, key, s);
    jsonw_end(&w);
}

void jsonw_doc_int(struct buf *b, int layout, const char *key, int64_t v)
{
    struct jsonw w;
    jsonw_init(&w, b, layout);
    jsonw_object(&w);
    jsonw_kv_int(&w, key, v);
    jsonw_end(&w);
}
