/* lb.h — `agora lb`: wires configuration, server set, workers, health checks and reload. */
#ifndef AGORA_LB_LB_H
#define AGORA_LB_LB_H

/* Runs the balancer with the flags in argv (argv[0] = "lb"). Returns the process exit code. */
int lb_main(int argc, char **argv);

#endif
