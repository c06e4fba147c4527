/* opts.h — the one option table: command-line flags, their --help lines and (where a command
 * has a file) its INI keys, all from one array of struct opts_def per command.
 *
 * A row names a flag (--name VALUE or --name=VALUE), the type and place of the field it sets in
 * the command's options struct (offsetof), and its --help text. Values are checked by type, with
 * the same messages in every command (err, without a program name; the caller prefixes it):
 *   OPTS_STR       copied into char[size]               "--x: value too long"
 *   OPTS_PTR       the argv string itself (const char *)
 *   OPTS_UINT      unsigned; OPTS_LONG long. With max > 0 the range is min..max:
 *                  "--x must be MIN..MAX (got 'v')"; without (max = 0, UINT only), 0..10^9:
 *                  "--x: 'v' is not a non-negative integer"
 *   OPTS_DURATION  unsigned ms, "250ms", "10s", "2m", "1h" or seconds (opts_parse_duration):
 *                  "--x: 'v' is not a duration (e.g. 500ms, 10s, 2m)"; at least min and, with
 *                  max > 0, at most max: "--x must be at least 1ms (got '0')", "--x must be
 *                  1ms..1h (got '2h')"
 *   OPTS_SIZE      uint64_t bytes, "512", "16k", "64KiB", "1m", "2g" (opts_parse_size)
 *   OPTS_BOOL      int, on/true/yes/1 or off/false/no/0
 *   OPTS_FLAG      int set to 1; takes no value
 *   OPTS_CALL      set(target, row, name, value, err, errlen) does it (repeatable or composite values)
 *   OPTS_TEXT      not an option: a paragraph printed in --help where the row stands
 * A row marked early is applied in a first pass, before every other flag wherever it stands on
 * the line (a config file that the other flags override). --help and -h anywhere win, even where
 * a value was expected.
 * Nothing here allocates; the table is const and the target is the caller's struct. */
#ifndef AGORA_CORE_OPTS_H
#define AGORA_CORE_OPTS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum opts_type {
    OPTS_STR,
    OPTS_PTR,
    OPTS_UINT,
    OPTS_LONG,
    OPTS_DURATION,
    OPTS_SIZE,
    OPTS_BOOL,
    OPTS_FLAG,
    OPTS_CALL,
    OPTS_TEXT,
};

struct opts_def;
/* Sets d's field(s) in target from val; name is how the setting is shown in messages. Returns 0
 * or -1 with err set. */
typedef int opts_set_fn(void *target, const struct opts_def *d, const char *name, const char *val, char *err,
                        size_t errlen);

/* A row. Tables are written with designated initialisers: OPTS_ROW below for the usual row, and
 * lb/config.c's own ROW, which adds the INI section and key. */
struct opts_def {
    const char *section; /* INI section and key, or NULL: not in a file */
    const char *key;
    const char *flag; /* "listen" for --listen; NULL: no flag (OPTS_TEXT) */
    enum opts_type type;
    size_t off;          /* the field in the target struct */
    size_t size;         /* OPTS_STR: the buffer's size */
    const char *help;    /* --help text; each '\n' starts an indented continuation line */
    const char *arg;     /* the value's name in --help; NULL: from the type (VALUE, N, DURATION...) */
    long min, max;       /* see the types above */
    opts_set_fn *set;    /* OPTS_CALL */
    int early;           /* applied in the first pass */
    const char *missing; /* message when the value is missing; NULL: "option --x needs a value" */
};

/* A row for the field f of struct type T, the usual case (set: NULL unless type is OPTS_CALL). */
#define OPTS_ROW(T, fl, t, f, lo, hi, a, fn, h)                                                                        \
    {                                                                                                                  \
        .flag = fl, .type = t, .off = offsetof(T, f), .size = sizeof(((T *)0)->f), .min = lo, .max = hi, .arg = a,     \
        .set = fn, .help = h                                                                                           \
    }

#define OPTS_HELP 1
/* opts_parse flags: stop at the first argument that is not an option (it and the rest are the
 * caller's, from *next) instead of refusing it. */
#define OPTS_STOP_AT_ARG 1

/* Applies argv[1..argc) to target by the table defs[0..n). Returns 0 (with *next, if not NULL,
 * the index of the first argument not consumed: argc unless OPTS_STOP_AT_ARG stopped earlier),
 * OPTS_HELP when --help or -h was given (nothing else is applied or printed), or -1 with err
 * set: "unknown option '--x' (see --help)", "unexpected argument 'x' (see --help)", a missing
 * value, or a bad value as listed above. */
int opts_parse(const struct opts_def *defs, size_t n, void *target, int argc, char **argv, int flags, int *next,
               char *err, size_t errlen);
/* Sets one row's field from text (used by opts_parse, and by a command's file reader). name is
 * how the setting is shown in messages ("--workers", "workers"). Returns 0 or -1 with err set. */
int opts_set(const struct opts_def *d, void *target, const char *name, const char *val, char *err, size_t errlen);
/* Prints one line per flag, "  --flag ARG" padded to width, then its help (continuation lines
 * under it), OPTS_TEXT rows as they are, and a last line for --help. */
void opts_usage(FILE *f, const struct opts_def *defs, size_t n, int width);

/* A command: its name for messages, its --help text around the option lines, and its table. */
struct opts_cmd {
    const char *name; /* "agora server": errors are printed as "agora server: ..." */
    const char *head; /* --help text before the option lines */
    const char *tail; /* --help text after them, or NULL */
    const struct opts_def *defs;
    size_t n;
    int width; /* of the option column in --help */
    int flags; /* opts_parse's */
};

/* The table member of a struct opts_cmd initialiser: .defs and .n from the array d. */
#define OPTS_TABLE(d) .defs = (d), .n = sizeof(d) / sizeof((d)[0])

#define OPTS_CONTINUE (-1)
/* Prints the command's --help to f: head, the option lines, tail. */
void opts_cmd_usage(const struct opts_cmd *c, FILE *f);
/* A command's argument parsing: opts_parse into target, then on --help the usage on stdout and 0,
 * on an error "NAME: message" on stderr and 2 (the exit codes), otherwise OPTS_CONTINUE (with
 * *next, if not NULL, as opts_parse sets it). */
int opts_cmd_parse(const struct opts_cmd *c, void *target, int argc, char **argv, int *next);

/* Parses a duration ("250ms", "10s", "2m", "1h", "5" = seconds; at most a week) into ms.
 * Returns 0, or -1 leaving *ms untouched. */
int opts_parse_duration(const char *s, unsigned *ms);
/* Parses a size ("512", "16k", "64KiB", "1m", "2g") into bytes. Returns 0, or -1 leaving
 * *bytes untouched. */
int opts_parse_size(const char *s, uint64_t *bytes);

#endif
