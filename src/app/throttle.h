/* throttle.h — limits on password guessing and sign-ups (internal to src/app).
 *
 * Counted in the database (store_throttle_take), so the limits hold across every server sharing
 * it: a balancer spreading an attacker's guesses over three servers does not triple them, and a
 * restart does not reset them. The counters are charged BEFORE the password is hashed, so a
 * throttled request costs no Argon2 hash and concurrent requests cannot overshoot a limit
 * (exactly `count` attempts get through per window, however many arrive at once):
 *   log-in   one event on the account (by username, existing or not: unknown and real accounts
 *            behave alike) and one on the client address; a successful log-in forgets the
 *            account's window and gives the address its event back
 *   sign-up  one event on the client address, for each sign-up that reaches the hash
 * A full window answers 429 with Retry-After (seconds until the window ends) and a JSON error.
 * The client address is client_addr() of the request (X-Forwarded-For only from trusted proxies),
 * counted by client_addr_key() (IPv6 by /64). Limits come from the app's config (app.h). */
#ifndef AGORA_APP_THROTTLE_H
#define AGORA_APP_THROTTLE_H
#include <stddef.h>

#include "app/api.h"

/* Charges a log-in attempt for user (user_n bytes; valid = it is a well-formed username, else only
 * the address is charged). Returns 0 to go on, or -1 after answering 429 (or 503/500). */
int throttle_login_take(struct api *a, const char *user, size_t user_n, int valid);
/* A log-in succeeded: forgets the account's failures and gives the address its event back.
 * Failures are logged, not answered (the log-in itself succeeded). */
void throttle_login_ok(struct api *a, const char *user, size_t user_n);
/* Charges a sign-up. Returns 0 to go on, or -1 after answering 429 (or 503/500). */
int throttle_signup_take(struct api *a);

#endif
