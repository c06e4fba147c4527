/* throttle.c — log-in and sign-up limits; see throttle.h. */
#include "app/throttle.h"

#include <stdio.h>
#include <string.h>

#include "app/client_addr.h"

static void address_key(struct api *a, const char *what, char out[STORE_THROTTLE_KEY_MAX])
{
    char ip[CLIENT_ADDR_CHARS], key[CLIENT_ADDR_CHARS];
    client_addr(&a->app->trust, a->req->remote_addr ? a->req->remote_addr : "", a->head, ip);
    client_addr_key(ip, key);
    snprintf(out, STORE_THROTTLE_KEY_MAX, "%s/address/%s", what, key);
}

static void account_key(const char *user, size_t n, char out[STORE_THROTTLE_KEY_MAX])
{
    int len = snprintf(out, STORE_THROTTLE_KEY_MAX, "login/account/");
    for (size_t i = 0; i < n && (size_t)len + 1 < STORE_THROTTLE_KEY_MAX; i++) {
        char c = user[i];
        out[len++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; /* usernames ignore ASCII case */
    }
    out[len] = '\0';
}

/* Charges the n counters; answers and returns -1 when one is full or the store fails. */
static int take(struct api *a, const struct store_throttle *t, int n, const char *what)
{
    int64_t retry_ms = 0;
    int rc = store_throttle_take(a->app->store, t, n, a->now, &retry_ms);
    if (rc == STORE_OK)
        return 0;
    if (rc != STORE_LIMITED) {
        api_store_error(a, rc, "");
        return -1;
    }
    long secs = (long)((retry_ms + 999) / 1000);
    if (secs < 1)
        secs = 1;
    api_error(a, 429, "%s: try again in %ld seconds", what, secs);
    http_response_header(a->resp, "Retry-After", "%ld", secs);
    return -1;
}

int throttle_login_take(struct api *a, const char *user, size_t user_n, int valid)
{
    const struct app_limits *l = &a->app->limits;
    char acct[STORE_THROTTLE_KEY_MAX], addr[STORE_THROTTLE_KEY_MAX];
    struct store_throttle t[2];
    int n = 0;
    address_key(a, "login", addr);
    if (valid) {
        account_key(user, user_n, acct);
        t[n++] = (struct store_throttle){acct, l->login_account.count, l->login_account.window_ms};
    }
    t[n++] = (struct store_throttle){addr, l->login_address.count, l->login_address.window_ms};
    return take(a, t, n, "too many failed log-ins for this account or from your address");
}

void throttle_login_ok(struct api *a, const char *user, size_t user_n)
{
    char acct[STORE_THROTTLE_KEY_MAX], addr[STORE_THROTTLE_KEY_MAX];
    int rc;
    account_key(user, user_n, acct);
    address_key(a, "login", addr);
    if ((a->app->limits.login_account.count > 0 && (rc = store_throttle_give(a->app->store, acct, 1)) != STORE_OK) ||
        (a->app->limits.login_address.count > 0 && (rc = store_throttle_give(a->app->store, addr, 0)) != STORE_OK))
        fprintf(stderr, "agora: [%s] cannot reset a log-in throttle: %s\n", a->request_id, store_errmsg(a->app->store));
}

int throttle_signup_take(struct api *a)
{
    const struct app_limits *l = &a->app->limits;
    char addr[STORE_THROTTLE_KEY_MAX];
    address_key(a, "signup", addr);
    struct store_throttle t = {addr, l->signup_address.count, l->signup_address.window_ms};
    return take(a, &t, 1, "too many sign-ups from your address");
}
