/* seed.c — `agora seed`: fills an empty database with a deterministic synthetic social graph.
 *
 * Accounts user1..userN (display name "User N") all share one password, hashed once. Each user
 * follows between 15 and 45 others (median 30), drawn from a Zipf distribution over the user
 * number (P(user r) ∝ 1/r), so follower counts follow a power law: user1, user2, ... are followed
 * by a large share of everyone. Each user then writes M posts; posts are interleaved (round j
 * holds the j-th post of every user) with timestamps one second apart from a fixed origin, so ids
 * and times increase together. All randomness comes from a seeded generator, so the same
 * command on an empty database produces the same graph. Everything goes through the store's
 * bulk interface in one transaction; the store then derives counters and home timelines with
 * the same fan-out rule it uses for live writes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/auth.h"
#include "app/store.h"
#include "cli/commands.h"
#include "core/alloc.h"
#include "core/opts.h"

#define MAX_USERS          10000000
#define MAX_POSTS_PER_USER 10000
#define STR(x)             #x
#define XSTR(x)            STR(x) /* the value of a macro as a string */
#define FOLLOW_MIN         15
#define FOLLOW_MAX         45
#define ORIGIN_MS          1767225600000LL /* 2026-01-01T00:00:00Z: first post */

struct seed_opts {
    long users, posts;
    const char *db, *password;
    long seed;
    int force;
};

struct rng {
    uint64_t s;
};

/* splitmix64: small, fast, and good enough for synthetic data. */
static uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(struct rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

#define ROW(fl, t, f, lo, hi, a, h) OPTS_ROW(struct seed_opts, fl, t, f, lo, hi, a, NULL, h)
static const struct opts_def flags[] = {
    ROW("users", OPTS_LONG, users, 1, MAX_USERS, NULL, "accounts user1..userN (1-" XSTR(MAX_USERS) ")"),
    ROW("posts-per-user", OPTS_LONG, posts, 0, MAX_POSTS_PER_USER, "M",
        "posts written by each user (0-" XSTR(MAX_POSTS_PER_USER) ", default 10)"),
    ROW("db", OPTS_PTR, db, 0, 0, "URL", "database, e.g. sqlite:agora.db or\npostgres://user@host/dbname"),
    ROW("password", OPTS_PTR, password, 0, 0, "P", "password of every account (default password123)"),
    ROW("seed", OPTS_LONG, seed, 0, 0x7fffffffL, "S", "random seed (default 1); same seed, same graph"),
    ROW("force", OPTS_FLAG, force, 0, 0, NULL,
        "delete all existing data first (otherwise a non-empty\ndatabase is refused)"),
};
#undef ROW

static const struct opts_cmd command = {
    .name = "agora seed",
    .head = "usage: agora seed --users N --db URL [--posts-per-user M] [--password P] [--seed S] [--force]\n"
            "\n"
            "Fills an empty database with a deterministic synthetic social graph:\n",
    OPTS_TABLE(flags),
    .width = 19,
};

/* Parses argv into o. Returns OPTS_CONTINUE to go on, or the exit code (0 after --help, 2 after an
 * error), as opts_cmd_parse does. */
static int parse_args(int argc, char **argv, struct seed_opts *o)
{
    *o = (struct seed_opts){.users = -1, .posts = 10, .password = "password123", .seed = 1};
    int r = opts_cmd_parse(&command, o, argc, argv, NULL);
    if (r != OPTS_CONTINUE)
        return r;
    if (o->users < 0 || o->db == NULL) {
        fprintf(stderr, "agora seed: --users and --db are required\n");
        opts_cmd_usage(&command, stderr);
        return 2;
    }
    size_t pl = strlen(o->password);
    if (pl < 8 || pl > 128) {
        fprintf(stderr, "agora seed: --password must be 8-128 bytes (the sign-up rule)\n");
        return 2;
    }
    return OPTS_CONTINUE;
}

/* Cumulative Zipf weights: cdf[r-1] = sum_{i<=r} 1/i. */
static double *zipf_cdf(long n)
{
    double *cdf = alloc_malloc((size_t)n * sizeof *cdf), sum = 0;
    for (long r = 1; r <= n; r++)
        cdf[r - 1] = (sum += 1.0 / (double)r);
    return cdf;
}

/* Draws a user number 1..n with probability proportional to 1/number. */
static long zipf_draw(const double *cdf, long n, struct rng *r)
{
    double x = rng_unit(r) * cdf[n - 1];
    long lo = 0, hi = n - 1;
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (cdf[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo + 1;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static int chosen(const long *set, int n, long v)
{
    for (int i = 0; i < n; i++)
        if (set[i] == v)
            return 1;
    return 0;
}

/* Picks the accounts user u follows into out (sorted); returns how many. */
static int pick_followees(long u, long n, const double *cdf, struct rng *r, long out[FOLLOW_MAX])
{
    int k = FOLLOW_MIN + (int)(rng_next(r) % (FOLLOW_MAX - FOLLOW_MIN + 1)), got = 0;
    if (k > n - 1)
        k = (int)(n - 1);
    for (int tries = 0; got < k && tries < 64 * k; tries++) {
        long t = zipf_draw(cdf, n, r);
        if (t != u && !chosen(out, got, t))
            out[got++] = t;
    }
    for (long t = 1; got < k && t <= n; t++) /* tiny graphs: fill deterministically */
        if (t != u && !chosen(out, got, t))
            out[got++] = t;
    qsort(out, (size_t)got, sizeof out[0], cmp_long);
    return got;
}

static const char *const words[] = {
    "agora",  "balance", "coffee",  "river",  "signal", "garden", "window", "morning", "quiet",  "thread",
    "packet", "socket",  "lantern", "harbor", "meadow", "orbit",  "pixel",  "rhythm",  "summit", "tide",
    "ember",  "field",   "glacier", "hollow", "island", "jazz",   "kernel", "ladder",  "marble", "north",
};

static void post_text(char *out, size_t len, long u, long j, struct rng *r)
{
    int n = snprintf(out, len, "Post %ld by user%ld:", j + 1, u);
    int nw = 3 + (int)(rng_next(r) % 10);
    for (int i = 0; i < nw && n > 0 && (size_t)n < len; i++)
        n += snprintf(out + n, len - (size_t)n, " %s", words[rng_next(r) % (sizeof words / sizeof words[0])]);
}

static double elapsed(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Inserts the graph inside the bulk transaction; *median gets the median followee count. */
static int load(struct store *st, const struct seed_opts *o, const char *hash, long *median)
{
    struct rng rng = {o->seed * 0x2545f4914f6cdd1dull + 1};
    char name[32], display[48], text[256];
    long followees[FOLLOW_MAX];
    int64_t id;
    int rc = STORE_OK;
    double *cdf = zipf_cdf(o->users);
    int *hist = alloc_calloc(FOLLOW_MAX + 1, sizeof *hist);
    /* ids[u] = the store's id of user u: ids come from the store, whatever it held before */
    int64_t *ids = alloc_calloc((size_t)o->users + 1, sizeof *ids);
    for (long u = 1; u <= o->users; u++) {
        snprintf(name, sizeof name, "user%ld", u);
        snprintf(display, sizeof display, "User %ld", u);
        if ((rc = store_bulk_account(st, name, display, hash, ORIGIN_MS - (o->users - u + 1) * 1000, &ids[u])) !=
            STORE_OK)
            goto out;
    }
    for (long u = 1; u <= o->users; u++) {
        int k = pick_followees(u, o->users, cdf, &rng, followees);
        hist[k]++;
        for (int i = 0; i < k; i++)
            if ((rc = store_bulk_follow(st, ids[u], ids[followees[i]], ORIGIN_MS - 1000)) != STORE_OK)
                goto out;
    }
    for (long j = 0, t = 0; j < o->posts; j++) {
        for (long u = 1; u <= o->users; u++, t++) {
            post_text(text, sizeof text, u, j, &rng);
            if ((rc = store_bulk_post(st, ids[u], text, ORIGIN_MS + t * 1000, &id)) != STORE_OK)
                goto out;
        }
    }
    long seen = 0;
    for (int k = 0; k <= FOLLOW_MAX; k++)
        if ((seen += hist[k]) * 2 >= o->users) {
            *median = k;
            break;
        }
out:
    free(ids);
    free(cdf);
    free(hist);
    return rc;
}

int cmd_seed(int argc, char **argv)
{
    struct seed_opts o;
    struct store_bulk_stats stats;
    struct timespec t0;
    char err[512], hash[STORE_HASH_MAX], db_shown[1024];
    int64_t existing = 0;
    long median = 0;
    int rc, status = 1;
    struct store *st = NULL;

    if ((rc = parse_args(argc, argv, &o)) != OPTS_CONTINUE)
        return rc;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (auth_init() != 0) {
        fprintf(stderr, "agora seed: cannot initialise libsodium\n");
        return 1;
    }
    snprintf(db_shown, sizeof db_shown, "%s", o.db); /* never the password */
    store_redact(o.db, db_shown, sizeof db_shown);
    if ((st = store_open(o.db, NULL, err, sizeof err)) == NULL) {
        fprintf(stderr, "agora seed: %s\n", err);
        return 1;
    }
    if (store_count_accounts(st, &existing) != STORE_OK) {
        fprintf(stderr, "agora seed: %s\n", store_errmsg(st));
        goto out;
    }
    if (existing > 0 && !o.force) {
        fprintf(stderr,
                "agora seed: %s already holds %lld accounts; seed only fills an empty database "
                "(use --force to delete everything first)\n",
                db_shown, (long long)existing);
        goto out;
    }
    if (auth_hash_password(o.password, strlen(o.password), hash) != 0) {
        fprintf(stderr, "agora seed: cannot hash the password (out of memory?)\n");
        goto out;
    }
    if (store_bulk_begin(st, o.force) != STORE_OK) {
        fprintf(stderr, "agora seed: %s\n", store_errmsg(st));
        goto out;
    }
    rc = load(st, &o, hash, &median);
    if (rc != STORE_OK) {
        fprintf(stderr, "agora seed: %s\n", store_errmsg(st));
        store_bulk_end(st, 0, NULL);
        goto out;
    }
    if (store_bulk_end(st, 1, &stats) != STORE_OK) {
        fprintf(stderr, "agora seed: %s\n", store_errmsg(st));
        goto out;
    }
    printf("seeded %s in %.1f s: %lld accounts (password \"%s\"), %lld follows (median %ld followees per user, "
           "max %lld followers, %lld accounts with >= %d followers), %lld posts (%lld fanned out on write), "
           "%lld home-timeline rows\n",
           db_shown, elapsed(&t0), (long long)stats.accounts, o.password, (long long)stats.follows, median,
           (long long)stats.max_followers, (long long)stats.big_accounts, st->fanout_limit, (long long)stats.posts,
           (long long)stats.fanout_posts, (long long)stats.home_rows);
    status = 0;
out:
    store_close(st);
    return status;
}
