/* json.c — the web app's JSON shapes, written with core/jsonw; see json.h. */
#include "app/json.h"

#include <string.h>

void json_put_id(struct jsonw *w, int64_t id)
{
    char tmp[24];
    size_t n = jsonw_format_int(tmp + 1, id);
    tmp[0] = '"';
    tmp[n + 1] = '"';
    jsonw_raw(w, tmp, n + 2);
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

void json_put_time(struct jsonw *w, int64_t ms)
{
    char tmp[40];
    size_t n = json_format_time(tmp + 1, ms);
    tmp[0] = '"';
    tmp[n + 1] = '"';
    jsonw_raw(w, tmp, n + 2);
}

void json_put_account(struct jsonw *w, const struct store_account *a)
{
    jsonw_object(w);
    jsonw_key(w, "id");
    json_put_id(w, a->id);
    jsonw_key(w, "username");
    jsonw_cstr(w, a->username);
    jsonw_key(w, "display_name");
    jsonw_cstr(w, a->display_name);
    jsonw_key(w, "created_at");
    json_put_time(w, a->created_at);
    jsonw_key(w, "followers_count");
    jsonw_int(w, a->followers_count);
    jsonw_key(w, "following_count");
    jsonw_int(w, a->following_count);
    jsonw_key(w, "posts_count");
    jsonw_int(w, a->posts_count);
    jsonw_end(w);
}

void json_put_post(struct jsonw *w, const struct store_post *p)
{
    jsonw_object(w);
    jsonw_key(w, "id");
    json_put_id(w, p->id);
    jsonw_key(w, "author");
    json_put_account(w, &p->author);
    jsonw_key(w, "text");
    jsonw_str(w, p->text, p->text_len);
    jsonw_key(w, "created_at");
    json_put_time(w, p->created_at);
    jsonw_key(w, "reply_to");
    if (p->reply_to > 0)
        json_put_id(w, p->reply_to);
    else
        jsonw_null(w);
    jsonw_key(w, "likes_count");
    jsonw_int(w, p->likes_count);
    jsonw_key(w, "replies_count");
    jsonw_int(w, p->replies_count);
    jsonw_key(w, "liked");
    jsonw_bool(w, p->liked);
    jsonw_end(w);
}

void json_put_error(struct buf *b, const char *msg)
{
    struct jsonw w;
    jsonw_init(&w, b, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_key(&w, "error");
    jsonw_cstr(&w, msg);
    jsonw_end(&w);
}

void json_put_count(struct buf *b, const char *name, int64_t n)
{
    struct jsonw w;
    jsonw_init(&w, b, JSONW_COMPACT);
    jsonw_object(&w);
    jsonw_key(&w, name);
    jsonw_int(&w, n);
    jsonw_end(&w);
}
