/* json.c — JSON response writing and UTF-8 checks; see json.h. */
#include "app/json.h"

#include <string.h>

void json_put_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    char esc[6] = {'\\', 'u', '0', '0', 0, 0};
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        case '\r':
            buf_append(b, "\\r", 2);
            break;
        case '\t':
            buf_append(b, "\\t", 2);
            break;
        default:
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            buf_append(b, esc, 6);
        }
    }
    buf_append(b, s + run, n - run);
    buf_append(b, "\"", 1);
}

/* Writes v in decimal to out (at least 21 bytes); returns the length. */
static size_t fmt_int(char *out, int64_t v)
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

static void put_int(struct buf *b, int64_t v)
{
    char tmp[24];
    buf_append(b, tmp, fmt_int(tmp, v));
}

void json_put_id(struct buf *b, int64_t id)
{
    char tmp[24];
    size_t n = fmt_int(tmp + 1, id);
    tmp[0] = '"';
    tmp[n + 1] = '"';
    buf_append(b, tmp, n + 2);
}

/* Writes v as exactly width decimal digits (v >= 0). */
static char *digits(char *out, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        out[i] = (char)('0' + v % 10);
    return out + width;
}

/* Converts days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

size_t json_format_time(char *out, int64_t ms)
{
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t rem = secs - days * 86400, y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    if (y < 0 || y > 9999) /* outside RFC 3339's four-digit years: clamp */
        y = y < 0 ? 0 : 9999;
    char *p = out;
    p = digits(p, (unsigned)y, 4);
    *p++ = '-';
    p = digits(p, mo, 2);
    *p++ = '-';
    p = digits(p, d, 2);
    *p++ = 'T';
    p = digits(p, (unsigned)(rem / 3600), 2);
    *p++ = ':';
    p = digits(p, (unsigned)(rem / 60 % 60), 2);
    *p++ = ':';
    p = digits(p, (unsigned)(rem % 60), 2);
    *p++ = '.';
    p = digits(p, (unsigned)(ms - secs * 1000), 3);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - out);
}

void json_put_time(struct buf *b, int64_t ms)
{
    char tmp[40];
    size_t n = json_format_time(tmp + 1, ms);
    tmp[0] = '"';
    tmp[n + 1] = '"';
    buf_append(b, tmp, n + 2);
}

#define PUT_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

void json_put_account(struct buf *b, const struct store_account *a)
{
    PUT_LIT(b, "{\"id\":");
    json_put_id(b, a->id);
    PUT_LIT(b, ",\"username\":");
    json_put_str(b, a->username, strlen(a->username));
    PUT_LIT(b, ",\"display_name\":");
    json_put_str(b, a->display_name, strlen(a->display_name));
    PUT_LIT(b, ",\"created_at\":");
    json_put_time(b, a->created_at);
    PUT_LIT(b, ",\"followers_count\":");
    put_int(b, a->followers_count);
    PUT_LIT(b, ",\"following_count\":");
    put_int(b, a->following_count);
    PUT_LIT(b, ",\"posts_count\":");
    put_int(b, a->posts_count);
    PUT_LIT(b, "}");
}

void json_put_post(struct buf *b, const struct store_post *p)
{
    PUT_LIT(b, "{\"id\":");
    json_put_id(b, p->id);
    PUT_LIT(b, ",\"author\":");
    json_put_account(b, &p->author);
    PUT_LIT(b, ",\"text\":");
    json_put_str(b, p->text, p->text_len);
    PUT_LIT(b, ",\"created_at\":");
    json_put_time(b, p->created_at);
    PUT_LIT(b, ",\"reply_to\":");
    if (p->reply_to > 0)
        json_put_id(b, p->reply_to);
    else
        PUT_LIT(b, "null");
    PUT_LIT(b, ",\"likes_count\":");
    put_int(b, p->likes_count);
    PUT_LIT(b, ",\"replies_count\":");
    put_int(b, p->replies_count);
    if (p->liked)
        PUT_LIT(b, ",\"liked\":true}");
    else
        PUT_LIT(b, ",\"liked\":false}");
}

void json_put_error(struct buf *b, const char *msg)
{
    buf_puts(b, "{\"error\":");
    json_put_str(b, msg, strlen(msg));
    buf_puts(b, "}");
}

int json_utf8_valid(const char *s, size_t n, size_t *count)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t cps = 0;
    while (p < end) {
        unsigned c = *p;
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            p++;
            cps++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(end - p) < len)
            return 0;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += len;
        cps++;
    }
    if (count != NULL)
        *count = cps;
    return 1;
}
