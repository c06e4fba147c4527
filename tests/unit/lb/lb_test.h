/* lb_test.h — helpers shared by the balancer's unit tests. Include after <cmocka.h> and
 * "lb/servers.h". */
#ifndef AGORA_TESTS_LB_TEST_H
#define AGORA_TESTS_LB_TEST_H

/* A server for spec ("http://host:port"); fails the test if the spec is refused. */
static inline struct lb_server *new_server(const char *spec)
{
    char err[256];
    struct lb_server *s = lb_server_new(spec, err, sizeof(err));
    if (!s)
        fail_msg("lb_server_new(%s): %s", spec, err);
    return s;
}

#endif
