/* opts.c — the option table: flags, --help and values by type; see opts.h. */
#include "core/opts.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int opts_parse_duration(const char *s, unsigned *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isdigit((unsigned char)*s))
        return -1; /* also rejects nan, inf and signs */
    while (*end == ' ')
        end++;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else
        return -1;
    double r = v * mult;
    if (r > 86400000.0 * 7)
        return -1;
    *ms = (unsigned)(r + 0.5);
    return 0;
}

int opts_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    while (*end == ' ')
        end++;
    uint64_t mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mult = 1024;
        end++;
        break;
    case 'm':
        mult = 1024 * 1024;
        end++;
        break;
    case 'g':
        mult = 1024ull * 1024 * 1024;
        end++;
        break;
    default:
        return -1;
    }
    if (mult > 1 && (!strcmp(end, "") || !strcasecmp(end, "b") || !strcasecmp(end, "ib")))
        end += strlen(end);
    if (*end)
        return -1;
    if (v > UINT64_MAX / mult)
        return -1;
    *bytes = v * mult;
    return 0;
}

/* Writes ms as a duration the parser takes back: "1h", "2m", "10s" or "500ms". */
static void format_ms(unsigned ms, char *out, size_t size)
{
    if (ms && ms % 3600000 == 0)
        snprintf(out, size, "%uh", ms / 3600000);
    else if (ms && ms % 60000 == 0)
        snprintf(out, size, "%um", ms / 60000);
    else if (ms && ms % 1000 == 0)
        snprintf(out, size, "%us", ms / 1000);
    else
        snprintf(out, size, "%ums", ms);
}

/* Parses a decimal integer for OPTS_UINT / OPTS_LONG into *out. Returns 0 or -1 with err set. */
static int parse_int(const struct opts_def *d, const char *name, const char *val, long *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    if (d->max > 0) {
        long v = strtol(val, &end, 10);
        if (end == val || *end || errno || v < d->min || v > d->max) {
            snprintf(err, errlen, "%s must be %ld..%ld (got '%s')", name, d->min, d->max, val);
            return -1;
        }
        *out = v;
        return 0;
    }
    unsigned long v = strtoul(val, &end, 10);
    if (!isdigit((unsigned char)*val) || *end || errno || v > 1000000000ul) {
        snprintf(err, errlen, "%s: '%s' is not a non-negative integer", name, val);
        return -1;
    }
    *out = (long)v;
    return 0;
}

int opts_set(const struct opts_def *d, void *target, const char *name, const char *val, char *err, size_t errlen)
{
    char *field = (char *)target + d->off;
    long v;
    switch (d->type) {
    case OPTS_STR:
        if (strlen(val) >= d->size) {
            snprintf(err, errlen, "%s: value too long", name);
            return -1;
        }
        strcpy(field, val);
        return 0;
    case OPTS_PTR:
        *(const char **)field = val;
        return 0;
    case OPTS_UINT:
    case OPTS_LONG:
        if (parse_int(d, name, val, &v, err, errlen) < 0)
            return -1;
        if (d->type == OPTS_UINT)
            *(unsigned *)field = (unsigned)v;
        else
            *(long *)field = v;
        return 0;
    case OPTS_DURATION: {
        unsigned ms;
        if (opts_parse_duration(val, &ms) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a duration (e.g. 500ms, 10s, 2m)", name, val);
            return -1;
        }
        if (ms < (unsigned long)d->min || (d->max > 0 && ms > (unsigned long)d->max)) {
            char lo[24], hi[24];
            format_ms((unsigned)d->min, lo, sizeof(lo));
            format_ms((unsigned)d->max, hi, sizeof(hi));
            if (d->max > 0)
                snprintf(err, errlen, "%s must be %s..%s (got '%s')", name, lo, hi, val);
            else
                snprintf(err, errlen, "%s must be at least %s (got '%s')", name, lo, val);
            return -1;
        }
        *(unsigned *)field = ms;
        return 0;
    }
    case OPTS_SIZE:
        if (opts_parse_size(val, (uint64_t *)field) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a size (e.g. 16k, 1m)", name, val);
            return -1;
        }
        return 0;
    case OPTS_BOOL:
        if (!strcmp(val, "on") || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "1")) {
            *(int *)field = 1;
        } else if (!strcmp(val, "off") || !strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "0")) {
            *(int *)field = 0;
        } else {
            snprintf(err, errlen, "%s: '%s' is not on/off", name, val);
            return -1;
        }
        return 0;
    case OPTS_FLAG:
        *(int *)field = 1;
        return 0;
    case OPTS_CALL:
        return d->set(target, d, name, val, err, errlen);
    case OPTS_TEXT:
        break;
    }
    snprintf(err, errlen, "%s: not a setting", name);
    return -1;
}

/* The row whose flag is name[0,len), or NULL. */
static const struct opts_def *find(const struct opts_def *defs, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (defs[i].flag && strlen(defs[i].flag) == len && !strncmp(defs[i].flag, name, len))
            return &defs[i];
    return NULL;
}

/* One walk over argv. pass 0 only looks for --help; pass 1 applies the early rows, pass 2 the
 * others and reports what is wrong (passes 0 and 1 skip what they do not know). */
static int walk(const struct opts_def *defs, size_t n, void *target, int argc, char **argv, int flags, int pass,
                int *next, char *err, size_t errlen)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (pass == 0)
                return OPTS_HELP;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            if (flags & OPTS_STOP_AT_ARG)
                break;
            if (pass < 2)
                continue;
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct opts_def *d = find(defs, n, name, len);
        if (!d) {
            if (pass < 2)
                continue;
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)(len + 2), a);
            return -1;
        }
        const char *val = NULL;
        if (d->type == OPTS_FLAG) {
            if (eq) {
                if (pass < 2)
                    continue;
                snprintf(err, errlen, "option --%s takes no value", d->flag);
                return -1;
            }
        } else {
            val = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (pass == 0 && !eq && val && (!strcmp(val, "--help") || !strcmp(val, "-h")))
                return OPTS_HELP; /* "--name --help": help, not a value */
        }
        int mine = pass == 1 ? d->early : pass == 2 ? !d->early : 0;
        if (!mine)
            continue;
        if (d->type != OPTS_FLAG && !val) {
            if (d->missing)
                snprintf(err, errlen, "%s", d->missing);
            else
                snprintf(err, errlen, "option --%s needs a value", d->flag);
            return -1;
        }
        char shown[80];
        snprintf(shown, sizeof(shown), "--%s", d->flag);
        if (opts_set(d, target, shown, val, err, errlen) < 0)
            return -1;
    }
    if (next)
        *next = i;
    return 0;
}

int opts_parse(const struct opts_def *defs, size_t n, void *target, int argc, char **argv, int flags, int *next,
               char *err, size_t errlen)
{
    for (int pass = 0; pass < 3; pass++) {
        int r = walk(defs, n, target, argc, argv, flags, pass, next, err, errlen);
        if (r != 0)
            return r;
    }
    return 0;
}

static const char *arg_name(const struct opts_def *d)
{
    if (d->arg)
        return d->arg;
    switch (d->type) {
    case OPTS_UINT:
    case OPTS_LONG:
        return "N";
    case OPTS_DURATION:
        return "DURATION";
    case OPTS_SIZE:
        return "SIZE";
    case OPTS_BOOL:
        return "on|off";
    default:
        return "VALUE";
    }
}

/* Prints "  LEFT help" (LEFT padded to width; two spaces after a longer one), continuation lines
 * of help under its first column. */
static void usage_line(FILE *f, int width, const char *left, const char *help)
{
    const char *nl;
    fprintf(f, "  %-*s %s", width, left, (int)strlen(left) > width ? " " : "");
    while ((nl = strchr(help, '\n')) != NULL) {
        fprintf(f, "%.*s\n  %-*s ", (int)(nl - help), help, width, "");
        help = nl + 1;
    }
    fprintf(f, "%s\n", help);
}

void opts_usage(FILE *f, const struct opts_def *defs, size_t n, int width)
{
    for (size_t i = 0; i < n; i++) {
        const struct opts_def *d = &defs[i];
        if (d->type == OPTS_TEXT) {
            fputs(d->help, f);
            continue;
        }
        char left[96];
        if (d->type == OPTS_FLAG)
            snprintf(left, sizeof(left), "--%s", d->flag);
        else
            snprintf(left, sizeof(left), "--%s %s", d->flag, arg_name(d));
        usage_line(f, width, left, d->help);
    }
    usage_line(f, width, "--help", "show this help");
}

void opts_cmd_usage(const struct opts_cmd *c, FILE *f)
{
    fputs(c->head, f);
    opts_usage(f, c->defs, c->n, c->width);
    if (c->tail)
        fputs(c->tail, f);
}

int opts_cmd_parse(const struct opts_cmd *c, void *target, int argc, char **argv, int *next)
{
    char err[512];
    int r = opts_parse(c->defs, c->n, target, argc, argv, c->flags, next, err, sizeof(err));
    if (r == OPTS_HELP) {
        opts_cmd_usage(c, stdout);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", c->name, err);
        return 2;
    }
    return OPTS_CONTINUE;
}
