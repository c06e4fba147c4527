/* auth.h — passwords and session tokens (libsodium).
 *
 * Passwords are hashed with Argon2id (crypto_pwhash_str, OPSLIMIT/MEMLIMIT_INTERACTIVE: about
 * 64 MiB and tens of milliseconds per hash, so it is only done at sign-up and log-in). A session
 * token is 256 random bits given to the client as 43 characters of unpadded base64url; the
 * database keeps only its BLAKE2b hash (crypto_generichash, 32 bytes), so a leaked database does
 * not reveal usable tokens. Tokens are looked up by that hash; since the hash of a
 * high-entropy secret is compared, lookup timing reveals nothing useful.
 * A request carries its token in "Authorization: Bearer <token>" or, failing that, in the
 * agora_token cookie. */
#ifndef AGORA_APP_AUTH_H
#define AGORA_APP_AUTH_H
#include <stddef.h>

#include "app/store.h"
#include "http/parser.h"

#define AUTH_TOKEN_CHARS 43 /* base64url of 32 bytes, no padding */
#define AUTH_COOKIE      "agora_token"

/* Initialises libsodium (idempotent, thread-safe). Returns 0, or -1 if it cannot be used. */
int auth_init(void);
/* Hashes a password into out (NUL-terminated). Returns 0, or -1 on failure (out of memory). */
int auth_hash_password(const char *pw, size_t n, char out[STORE_HASH_MAX]);
/* Returns 1 if pw matches the hash string, else 0 (constant time in the password). */
int auth_verify_password(const char *hash, const char *pw, size_t n);
/* Makes a new random token (NUL-terminated, AUTH_TOKEN_CHARS characters) and its hash. */
void auth_new_token(char token[AUTH_TOKEN_CHARS + 1], unsigned char hash[STORE_TOKEN_HASH_LEN]);
/* Computes the hash of a token given by a client. Returns 0, or -1 if it is not well-formed. */
int auth_token_hash(const char *token, size_t n, unsigned char hash[STORE_TOKEN_HASH_LEN]);
/* Finds the token a request presents (Bearer header first, then the cookie). Returns 1 and sets
 * *tok, 0 if the request carries none, -1 if an Authorization header is present but is not a
 * Bearer token. */
int auth_request_token(const struct http_head *h, struct http_str *tok);

#endif
