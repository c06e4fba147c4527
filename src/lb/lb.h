/* lb.h — `agora lb`: wires configuration, server set, workers, health checks and reload. */
#ifndef AGORA_LB_LB_H
#define AGORA_LB_LB_H

/* Descriptors the balancer needs for 10,000 client connections (C10k) with the automatic
 * --max-connections: two per client (its own and its backend connection) and 1024 in reserve. */
#define LB_C10K_FDS (2 * 10000 + 1024)

/* Client connections per worker when --max-connections is 0 (auto, the default): the descriptor
 * limit less a reserve (a quarter of it, at most 1024: pooled backend connections, health checks,
 * the admin API, logs), halved, shared by the workers; at least 1. */
unsigned lb_auto_max_connections(unsigned long fd_limit, unsigned workers);

/* Runs the balancer with the flags in argv (argv[0] = "lb"). Returns the process exit code. */
int lb_main(int argc, char **argv);

#endif
