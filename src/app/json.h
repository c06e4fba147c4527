/* json.h — writing JSON responses straight into a struct buf, and UTF-8 helpers.
 *
 * Requests are parsed with jansson; responses are built here without an intermediate tree: each
 * json_put_* appends one complete JSON value. Strings are escaped per RFC 8259 (quote, backslash
 * and control characters); input must be valid UTF-8, which is copied through unchanged.
 * Timestamps are RFC 3339 UTC with milliseconds, e.g. "2026-11-24T10:00:00.000Z"; ids are
 * decimal strings. */
#ifndef AGORA_APP_JSON_H
#define AGORA_APP_JSON_H
#include <stddef.h>
#include <stdint.h>

#include "app/store.h"
#include "core/buf.h"

/* Appends s[0,n) as a quoted, escaped JSON string. */
void json_put_str(struct buf *b, const char *s, size_t n);
/* Appends an id as a JSON string ("42"). */
void json_put_id(struct buf *b, int64_t id);
/* Appends a timestamp (ms since the epoch) as a JSON string in RFC 3339 UTC with milliseconds. */
void json_put_time(struct buf *b, int64_t ms);
/* Formats ms as RFC 3339 UTC with milliseconds into out (at least 32 bytes); returns the length. */
size_t json_format_time(char *out, int64_t ms);
/* Appends {"id","username","display_name","created_at","followers_count","following_count",
 * "posts_count"}. */
void json_put_account(struct buf *b, const struct store_account *a);
/* Appends {"id","author":{account},"text","created_at","reply_to","likes_count","replies_count",
 * "liked"}. */
void json_put_post(struct buf *b, const struct store_post *p);
/* Appends {"error": msg}. */
void json_put_error(struct buf *b, const char *msg);

/* Returns 1 if s[0,n) is valid UTF-8 (no overlongs, surrogates or values above U+10FFFF), and
 * stores the number of code points in *count (may be NULL); returns 0 otherwise. */
int json_utf8_valid(const char *s, size_t n, size_t *count);

#endif
