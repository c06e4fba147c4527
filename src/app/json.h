/* json.h — the web app's JSON shapes (accounts, posts, ids, timestamps, errors).
 *
 * Requests are parsed with jansson; responses are written with the one JSON writer (core/jsonw.h,
 * compact layout), which does the escaping and the commas: each json_put_* below writes one
 * complete JSON value through a struct jsonw (a member's value after jsonw_key, or an array
 * element); json_kv_* write a whole member. UTF-8 checks are jsonw_utf8_valid. Timestamps are RFC 3339 UTC with
 * milliseconds, e.g. "2026-11-24T10:00:00.000Z"; ids are decimal strings. */
#ifndef AGORA_APP_JSON_H
#define AGORA_APP_JSON_H
#include <stddef.h>
#include <stdint.h>

#include "app/store.h"
#include "core/buf.h"
#include "core/jsonw.h"

/* Writes the member key: an id as a JSON string ("42"). */
void json_kv_id(struct jsonw *w, const char *key, int64_t id);
/* Writes the member key: a timestamp (ms since the epoch) as a JSON string in RFC 3339 UTC with
 * milliseconds. */
void json_kv_time(struct jsonw *w, const char *key, int64_t ms);
/* Formats ms as RFC 3339 UTC with milliseconds into out (at least 32 bytes); returns the length. */
size_t json_format_time(char *out, int64_t ms);
/* Writes {"id","username","display_name","created_at","followers_count","following_count",
 * "posts_count"}. */
void json_put_account(struct jsonw *w, const struct store_account *a);
/* Writes {"id","author":{account},"text","created_at","reply_to","likes_count","replies_count",
 * "liked"}. */
void json_put_post(struct jsonw *w, const struct store_post *p);
/* Appends the whole document {"error":msg} (compact) to b. */
void json_put_error(struct buf *b, const char *msg);

#endif
