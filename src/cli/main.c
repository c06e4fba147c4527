/* main.c — the agora executable: dispatches to a subcommand. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/alloc.h"
#include "lb/lb.h"

#define AGORA_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f, "usage: agora <command> [options]\n\n"
               "commands:\n"
               "  up       run the whole platform on this machine: balancer + web servers\n"
               "  lb       the load balancer (reverse proxy)\n"
               "  server   a web server of the social network\n"
               "  seed     fill a database with a synthetic social graph\n"
               "  ctl      change a running balancer or `agora up` (add, drain, remove servers)\n\n"
               "  agora <command> --help   options of a command\n"
               "  agora --version          print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    /* jansson allocates like the rest of agora (core/alloc.h): out of memory aborts, so a NULL
     * from json_loadb() means malformed input only, never a 400 for a lack of memory. Process-wide
     * library setup, done once here before any thread starts. */
    json_set_alloc_funcs(alloc_malloc, free);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("agora %s\n", AGORA_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "lb"))
        return lb_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "server"))
        return cmd_server(argc - 1, argv + 1);
    if (!strcmp(cmd, "up"))
        return cmd_up(argc - 1, argv + 1);
    if (!strcmp(cmd, "ctl"))
        return cmd_ctl(argc - 1, argv + 1);
    if (!strcmp(cmd, "seed"))
        return cmd_seed(argc - 1, argv + 1);
    fprintf(stderr, "agora: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
