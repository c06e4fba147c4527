/* commands.h — the subcommands of the agora executable. Each takes argv with argv[0] set to the
 * subcommand's name, prints its own --help, and returns the process exit code. */
#ifndef AGORA_CLI_COMMANDS_H
#define AGORA_CLI_COMMANDS_H
#include <stddef.h>

int cmd_server(int argc, char **argv); /* cli/server.c */
int cmd_up(int argc, char **argv);     /* cli/up.c */
int cmd_seed(int argc, char **argv);   /* cli/seed.c */
int cmd_ctl(int argc, char **argv);    /* cli/ctl.c */

/* Directory of the web UI: $AGORA_WEB, else <dir of executable>/../web, else ./web. Writes into
 * out (outlen bytes) and returns it. */
const char *cli_default_web_dir(char *out, size_t outlen);

#endif
