/* policy.c — looks a balancing policy up by its configuration name; see policy.h. */
#include "lb/policy.h"

#include <string.h>

static const struct lb_policy_ops *const policies[] = {
    &lb_policy_least_conn, &lb_policy_round_robin, &lb_policy_random_two,
    &lb_policy_peak_ewma,  &lb_policy_hash,
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
