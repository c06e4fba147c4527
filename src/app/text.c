/* text.c — rules for text that users show to each other; see text.h. */
#include "app/text.h"

/* Decodes the code point starting at s[0] (valid UTF-8 assumed); sets *len to its byte length. */
static unsigned decode(const unsigned char *s, size_t *len)
{
    if (s[0] < 0x80)
        return *len = 1, s[0];
    if ((s[0] & 0xe0) == 0xc0)
        return *len = 2, ((s[0] & 0x1fu) << 6) | (s[1] & 0x3fu);
    if ((s[0] & 0xf0) == 0xe0)
        return *len = 3, ((s[0] & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
    return *len = 4, ((s[0] & 0x07u) << 18) | ((s[1] & 0x3fu) << 12) | ((s[2] & 0x3fu) << 6) | (s[3] & 0x3fu);
}

/* Unicode White_Space. */
static int is_space(unsigned c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static int is_invisible(unsigned c)
{
    if (c < 0x2000)
        return c == 0xad || c == 0x34f || c == 0x61c || c == 0x115f || c == 0x1160 || c == 0x17b4 || c == 0x17b5 ||
               (c >= 0x180b && c <= 0x180f);
    if (c < 0x10000)
        return (c >= 0x200b && c <= 0x200f) || (c >= 0x2060 && c <= 0x2064) || (c >= 0x206a && c <= 0x206f) ||
               c == 0x2800 || c == 0x3164 || (c >= 0xfe00 && c <= 0xfe0f) || c == 0xfeff || c == 0xffa0 ||
               (c >= 0xfff9 && c <= 0xfffb);
    return (c >= 0x13430 && c <= 0x1345f) || (c >= 0x1bca0 && c <= 0x1bca3) || (c >= 0x1d173 && c <= 0x1d17a) ||
           (c >= 0xe0000 && c <= 0xe0fff);
}

/* Combining marks of the main blocks: they draw nothing without a base character. */
static int is_combining(unsigned c)
{
    return (c >= 0x300 && c <= 0x36f) || (c >= 0x483 && c <= 0x489) || (c >= 0x1ab0 && c <= 0x1aff) ||
           (c >= 0x1dc0 && c <= 0x1dff) || (c >= 0x20d0 && c <= 0x20ff) || (c >= 0xfe20 && c <= 0xfe2f);
}

/* C0 controls, DEL and C1 controls (U+0080-U+009F: terminal escapes such as U+009B CSI). */
static int is_control(unsigned c) { return c < 0x20 || (c >= 0x7f && c <= 0x9f); }

static int is_bidi_control(unsigned c) { return (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069); }

const char *text_trim(const char *s, size_t *n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + *n;
    size_t len;
    while (p < end && is_space(decode(p, &len)))
        p += len;
    while (end > p) {
        const unsigned char *q = end - 1;
        while (q > p && (*q & 0xc0) == 0x80)
            q--;
        if (!is_space(decode(q, &len)))
            break;
        end = q;
    }
    *n = (size_t)(end - p);
    return (const char *)p;
}

/* 1 if every code point of s[0,n) satisfies pred (true for an empty string). */
static int all(const char *s, size_t n, int (*pred)(unsigned))
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t len;
    for (; p < end; p += len)
        if (!pred(decode(p, &len)))
            return 0;
    return 1;
}

static int is_blank(unsigned c) { return is_space(c) || is_invisible(c) || is_combining(c); }
static int not_control(unsigned c) { return !is_control(c); }
static int not_bidi_control(unsigned c) { return !is_bidi_control(c); }

int text_has_bidi_control(const char *s, size_t n) { return !all(s, n, not_bidi_control); }
int text_is_blank(const char *s, size_t n) { return all(s, n, is_blank); }
int text_is_space(const char *s, size_t n) { return all(s, n, is_space); }
int text_has_control(const char *s, size_t n) { return !all(s, n, not_control); }
