/* auth.c — password hashing and session tokens; see auth.h. */
#include "app/auth.h"

#include <sodium.h>
#include <string.h>

#include "app/req.h"

int auth_init(void) { return sodium_init() < 0 ? -1 : 0; }

int auth_hash_password(const char *pw, size_t n, char out[STORE_HASH_MAX])
{
    _Static_assert(crypto_pwhash_STRBYTES <= STORE_HASH_MAX, "hash buffer too small");
    return crypto_pwhash_str(out, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0
               ? 0
               : -1;
}

int auth_verify_password(const char *hash, const char *pw, size_t n)
{
    return crypto_pwhash_str_verify(hash, pw, n) == 0;
}

void auth_new_token(char token[AUTH_TOKEN_CHARS + 1], unsigned char hash[STORE_TOKEN_HASH_LEN])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, AUTH_TOKEN_CHARS + 1, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_generichash(hash, STORE_TOKEN_HASH_LEN, raw, sizeof raw, NULL, 0);
    sodium_memzero(raw, sizeof raw);
}

int auth_token_hash(const char *token, size_t n, unsigned char hash[STORE_TOKEN_HASH_LEN])
{
    unsigned char raw[32];
    size_t len = 0;
    const char *end = NULL;
    if (n != AUTH_TOKEN_CHARS)
        return -1;
    if (sodium_base642bin(raw, sizeof raw, token, n, NULL, &len, &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len != sizeof raw || end != token + n)
        return -1;
    crypto_generichash(hash, STORE_TOKEN_HASH_LEN, raw, sizeof raw, NULL, 0);
    sodium_memzero(raw, sizeof raw);
    return 0;
}

int auth_request_token(const struct http_head *h, struct http_str *tok)
{
    const struct http_str *v = req_header(h, "authorization");
    if (v != NULL) {
        if (v->n < 7 || !req_ieq(v->p, 7, "bearer "))
            return -1;
        size_t i = 7;
        while (i < v->n && (v->p[i] == ' ' || v->p[i] == '\t'))
            i++;
        tok->p = v->p + i;
        tok->n = v->n - i;
        return 1;
    }
    return req_cookie(h, AUTH_COOKIE, tok);
}
