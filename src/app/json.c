/* json.c — the web app's JSON shapes, written with core/jsonw; see json.h. */
#include "app/json.h"

#include <string.h>

/* Writes the member key: "text", where the text is tmp[1, n + 1) (tmp[0] and tmp[n + 1] take the
 * quotes; the text needs no escaping). */
static void kv_quoted(struct jsonw *w, const char *key, char *tmp, size_t n)
{
    tmp[0] = '"';
    tmp[n + 1] = '"';
    jsonw_key(w, key);
    jsonw_raw(w, tmp, n + 2);
}

void json_kv_id(struct jsonw *w, const char *key, int64_t id)
{
    char tmp[24];
    kv_quoted(w, key, tmp, jsonw_format_int(tmp + 1, id));
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

void json_kv_time(struct jsonw *w, const char *key, int64_t ms)
{
    char tmp[40];
    kv_quoted(w, key, tmp, json_format_time(tmp + 1, ms));
}

void json_put_account(struct jsonw *w, const struct store_account *a)
{
    jsonw_object(w);
    json_kv_id(w, "id", a->id);
    jsonw_kv_str(w, "username", a->username);
    jsonw_kv_str(w, "display_name", a->display_name);
    json_kv_time(w, "created_at", a->created_at);
    jsonw_kv_int(w, "followers_count", a->followers_count);
    jsonw_kv_int(w, "following_count", a->following_count);
    jsonw_kv_int(w, "posts_count", a->posts_count);
    jsonw_end(w);
}

void json_put_post(struct jsonw *w, const struct store_post *p)
{
    jsonw_object(w);
    json_kv_id(w, "id", p->id);
    jsonw_key(w, "author");
    json_put_account(w, &p->author);
    jsonw_key(w, "text");
    jsonw_str(w, p->text, p->text_len);
    json_kv_time(w, "created_at", p->created_at);
    if (p->reply_to > 0) {
        json_kv_id(w, "reply_to", p->reply_to);
    } else {
        jsonw_key(w, "reply_to");
        jsonw_null(w);
    }
    jsonw_kv_int(w, "likes_count", p->likes_count);
    jsonw_kv_int(w, "replies_count", p->replies_count);
    jsonw_kv_bool(w, "liked", p->liked);
    jsonw_end(w);
}

void json_put_error(struct buf *b, const char *msg) { jsonw_doc_str(b, JSONW_COMPACT, "error", msg); }
