/* jsonw.h — the one JSON writer: appends a JSON document to a struct buf, without a tree.
 *
 * A struct jsonw wraps a buf. Containers are opened and closed explicitly (jsonw_object,
 * jsonw_array, jsonw_end); inside an object every value is preceded by jsonw_key. Commas are
 * written by the writer from a small nesting stack, so callers never track "first member".
 * Two layouts, chosen at jsonw_init: JSONW_COMPACT ({"a":1,"b":2}, the web app's answers) and
 * JSONW_SPACED ({"a": 1, "b": 2}, the balancer's and the command line's, as jansson writes them).
 *
 * Strings are escaped per RFC 8259: quote, backslash, \n \r \t by name and other control
 * characters as \u00xx. Valid UTF-8 (the rules of jsonw_utf8_valid) is copied through unchanged;
 * a byte that does not begin a valid sequence is written as U+FFFD, so the output is always
 * valid UTF-8 and valid JSON whatever the input.
 *
 * Misuse (a value in an object without a key, closing more than was opened, nesting deeper than
 * JSONW_MAX_DEPTH) is a programming error: it aborts. Appending never fails (buf aborts on out
 * of memory). */
#ifndef AGORA_JSONW_H
#define AGORA_JSONW_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define JSONW_COMPACT 0
#define JSONW_SPACED  1

#define JSONW_MAX_DEPTH 32

struct jsonw {
    struct buf *b;
    int spaced;
    unsigned depth;    /* open containers */
    uint32_t objects;  /* bit d-1: the container at depth d is an object */
    uint32_t nonempty; /* bit d-1: the container at depth d has a member already */
    int keyed;         /* a key was written; its value comes next */
};

/* Starts writing into b (appending to what is there) in the given layout. */
void jsonw_init(struct jsonw *w, struct buf *b, int layout);

void jsonw_object(struct jsonw *w);
void jsonw_array(struct jsonw *w);
/* Closes the innermost open object or array. */
void jsonw_end(struct jsonw *w);

/* Writes an object member's key (a NUL-terminated string, escaped like any string). */
void jsonw_key(struct jsonw *w, const char *key);

void jsonw_str(struct jsonw *w, const char *s, size_t n);
void jsonw_cstr(struct jsonw *w, const char *s);
void jsonw_int(struct jsonw *w, int64_t v);
void jsonw_uint(struct jsonw *w, uint64_t v);
/* Writes v with exactly `decimals` digits after the point ("%.*f"); NaN and infinities as null. */
void jsonw_double(struct jsonw *w, double v, int decimals);
void jsonw_bool(struct jsonw *w, int v);
void jsonw_null(struct jsonw *w);
/* Writes n bytes that already are one complete JSON value (the caller vouches for them). */
void jsonw_raw(struct jsonw *w, const char *json, size_t n);

/* An object member in one call: jsonw_key then the value. */
void jsonw_kv_str(struct jsonw *w, const char *key, const char *s);
void jsonw_kv_int(struct jsonw *w, const char *key, int64_t v);
void jsonw_kv_uint(struct jsonw *w, const char *key, uint64_t v);
void jsonw_kv_bool(struct jsonw *w, const char *key, int v);

/* Appends a whole one-member document to b, {"key": "s"} or {"key": v} in the given layout (the
 * error bodies {"error": "..."}, {"revoked": 3}...). */
void jsonw_doc_str(struct buf *b, int layout, const char *key, const char *s);
void jsonw_doc_int(struct buf *b, int layout, const char *key, int64_t v);

/* Appends s[0,n) to b as a quoted, escaped JSON string (the escaping jsonw_str uses). */
void jsonw_put_str(struct buf *b, const char *s, size_t n);
/* Writes v in decimal to out (at least 21 bytes); returns the length. */
size_t jsonw_format_int(char *out, int64_t v);

/* Returns 1 if s[0,n) is valid UTF-8 (no overlongs, surrogates or values above U+10FFFF), and
 * stores the number of code points in *count (may be NULL); returns 0 otherwise. */
int jsonw_utf8_valid(const char *s, size_t n, size_t *count);

#endif
