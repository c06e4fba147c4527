/* cpus.c — see cpus.h. */
#include "core/cpus.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#define HINT "(off, auto, or a list such as 0,2-3)"

/* The CPUs this process may run on, ascending, into out. Returns -1 with a message when the
 * kernel will not say or none is below CPUS_MAX. */
static int allowed_cpus(struct cpus *out, char *err, size_t errlen)
{
    cpu_set_t set;
    out->n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        snprintf(err, errlen, "cpu-affinity: cannot read the CPUs this process may run on: %s", strerror(errno));
        return -1;
    }
    for (unsigned c = 0; c < CPUS_MAX && c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            out->cpu[out->n++] = (unsigned short)c;
    if (out->n == 0) {
        snprintf(err, errlen, "cpu-affinity: none of the CPUs this process may run on is below %d", CPUS_MAX);
        return -1;
    }
    return 0;
}

static const char *skip_blanks(const char *p) { return p + strspn(p, " \t"); }

/* One CPU number at *p (digits only, below CPUS_MAX); advances *p. */
static int cpu_number(const char **p, unsigned *cpu, char *err, size_t errlen)
{
    const char *s = *p;
    size_t len = strspn(s, "0123456789");
    if (len == 0) {
        size_t bad = strcspn(s, ",- \t");
        if (bad == 0)
            snprintf(err, errlen, "cpu-affinity: a CPU number is missing " HINT);
        else
            snprintf(err, errlen, "cpu-affinity: '%.*s' is not a CPU number " HINT, (int)(bad > 32 ? 32 : bad), s);
        return -1;
    }
    unsigned long v = 0;
    for (size_t i = 0; i < len && v < CPUS_MAX; i++)
        v = v * 10 + (unsigned long)(s[i] - '0');
    if (v >= CPUS_MAX) {
        snprintf(err, errlen, "cpu-affinity: CPU %.*s is out of range (0-%d)", (int)(len > 32 ? 32 : len), s,
                 CPUS_MAX - 1);
        return -1;
    }
    *cpu = (unsigned)v;
    *p = s + len;
    return 0;
}

/* Is the trimmed value at p (len bytes) the word w? */
static int is_word(const char *p, size_t len, const char *w) { return len == strlen(w) && !memcmp(p, w, len); }

/* With out, each CPU must be one the process may run on and "auto" is expanded into out; with
 * out NULL only the spelling is checked. */
static int parse(const char *spec, struct cpus *out, char *err, size_t errlen)
{
    struct cpus allowed;
    allowed.n = 0;
    if (out)
        out->n = 0;
    const char *p = skip_blanks(spec);
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len == 0) {
        snprintf(err, errlen, "cpu-affinity: no value " HINT);
        return -1;
    }
    if (is_word(p, len, "off"))
        return 0;
    if (out && allowed_cpus(&allowed, err, errlen) < 0)
        return -1;
    if (is_word(p, len, "auto")) {
        if (out)
            *out = allowed;
        return 0;
    }
    unsigned char seen[CPUS_MAX] = {0}, ok[CPUS_MAX] = {0};
    for (unsigned i = 0; i < allowed.n; i++)
        ok[allowed.cpu[i]] = 1;
    for (;;) {
        unsigned lo, hi;
        p = skip_blanks(p);
        if (cpu_number(&p, &lo, err, errlen) < 0)
            return -1;
        hi = lo;
        p = skip_blanks(p);
        if (*p == '-') {
            p = skip_blanks(p + 1);
            if (cpu_number(&p, &hi, err, errlen) < 0)
                return -1;
            if (hi < lo) {
                snprintf(err, errlen, "cpu-affinity: range %u-%u is backwards", lo, hi);
                return -1;
            }
            p = skip_blanks(p);
        }
        for (unsigned c = lo; c <= hi; c++) {
            if (seen[c]) {
                snprintf(err, errlen, "cpu-affinity: CPU %u is listed twice", c);
                return -1;
            }
            if (out && !ok[c]) {
                char may[96];
                cpus_format(&allowed, may, sizeof(may));
                snprintf(err, errlen, "cpu-affinity: CPU %u is not one this process may run on (it may run on %s)", c,
                         may);
                return -1;
            }
            seen[c] = 1;
            if (out)
                out->cpu[out->n++] = (unsigned short)c;
        }
        if (*p == '\0')
            return 0;
        if (*p != ',') {
            snprintf(err, errlen, "cpu-affinity: '%.32s' is not part of a CPU list " HINT, p);
            return -1;
        }
        p++;
    }
}

/* A failed parse leaves out off. */
int cpus_parse(const char *spec, struct cpus *out, char *err, size_t errlen)
{
    if (parse(spec, out, err, errlen) == 0)
        return 0;
    out->n = 0;
    return -1;
}

int cpus_check(const char *spec, char *err, size_t errlen) { return parse(spec, NULL, err, errlen); }

int cpus_same(const struct cpus *a, const struct cpus *b)
{
    return a->n == b->n && !memcmp(a->cpu, b->cpu, a->n * sizeof(a->cpu[0]));
}

int cpus_of(const struct cpus *set, unsigned i) { return set && set->n ? set->cpu[i % set->n] : -1; }

void cpus_format(const struct cpus *set, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (unsigned i = 0; i < set->n;) {
        unsigned j = i;
        while (j + 1 < set->n && set->cpu[j + 1] == set->cpu[j] + 1)
            j++;
        char one[16];
        int w = j > i ? snprintf(one, sizeof(one), "%s%u-%u", i ? "," : "", set->cpu[i], set->cpu[j])
                      : snprintf(one, sizeof(one), "%s%u", i ? "," : "", set->cpu[i]);
        size_t need = (size_t)w + (j + 1 < set->n ? 4 : 0); /* this piece, and room for ",..." after */
        if (used + need + 1 > len) {
            const char *more = used ? ",..." : "...";
            if (used + strlen(more) + 1 <= len)
                memcpy(buf + used, more, strlen(more) + 1);
            return;
        }
        memcpy(buf + used, one, (size_t)w + 1);
        used += (size_t)w;
        i = j + 1;
    }
}
