/* policy.c — looks a balancing policy up by its configuration name; see policy.h. */
#include "lb/policy.h"

#include <string.h>

static const struct lb_policy_ops *const policies[] = {
    &lb_policy_least_conn, &lb_policy_round_robin, &lb_policy_random_two, &lb_policy_peak_ewma, &lb_policy_hash,
};

const struct lb_policy_ops *lb_policy_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
        if (strcmp(policies[i]->name, name) == 0)
            return policies[i];
    return NULL;
}

/* Returns the index of the k-th (from 0) target with a non-zero weight, skipping index `skip`. */
static size_t nth_selectable(const struct lb_target *t, size_t k, size_t skip)
{
    size_t i = 0;
    for (;; i++)
        if (t[i].weight != 0 && i != skip && k-- == 0)
            break;
    return i;
}

size_t lb_draw_two(const struct lb_target *t, size_t n, uint64_t rnd, size_t *a, size_t *b)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += t[i].weight != 0;
    if (m >= 1)
        *a = nth_selectable(t, (rnd & 0xffffffffu) % m, n);
    if (m >= 2)
        *b = nth_selectable(t, (rnd >> 32) % (m - 1), *a);
    return m;
}
