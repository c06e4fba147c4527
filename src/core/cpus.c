/* cpus.c — see cpus.h. */
#include "core/cpus.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

/* The CPUs this process may run on, ascending, into out (n = 0 if the kernel will not say). */
static void allowed_cpus(struct cpus *out)
{
    cpu_set_t set;
    out->n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return;
    for (unsigned c = 0; c < CPUS_MAX && c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            out->cpu[out->n++] = (unsigned short)c;
}

/* One CPU number at *p (digits only, at most CPUS_MAX - 1); advances *p. */
static int cpu_number(const char **p, unsigned *cpu, char *err, size_t errlen)
{
    const char *s = *p;
    size_t len = strspn(s, "0123456789");
    if (len == 0) {
        size_t bad = strcspn(s, ",-");
        if (bad == 0)
            snprintf(err, errlen, "cpu-affinity: a CPU number is missing (off, auto, or a list such as 0,2-3)");
        else
            snprintf(err, errlen, "cpu-affinity: '%.*s' is not a CPU number", (int)(bad > 32 ? 32 : bad), s);
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

static int parse(const char *spec, struct cpus *out, char *err, size_t errlen)
{
    out->n = 0;
    if (!strcmp(spec, "off"))
        return 0;
    struct cpus allowed;
    allowed_cpus(&allowed);
    if (!strcmp(spec, "auto")) {
        if (allowed.n == 0) {
            snprintf(err, errlen, "cpu-affinity: cannot read the CPUs this process may run on: %s", strerror(errno));
            return -1;
        }
        *out = allowed;
        return 0;
    }
    unsigned char seen[CPUS_MAX] = {0}, ok[CPUS_MAX] = {0};
    for (unsigned i = 0; i < allowed.n; i++)
        ok[allowed.cpu[i]] = 1;
    const char *p = spec;
    for (;;) {
        while (*p == ' ')
            p++;
        unsigned lo, hi;
        if (cpu_number(&p, &lo, err, errlen) < 0)
            return -1;
        hi = lo;
        if (*p == '-') {
            p++;
            if (cpu_number(&p, &hi, err, errlen) < 0)
                return -1;
            if (hi < lo) {
                snprintf(err, errlen, "cpu-affinity: range %u-%u is backwards", lo, hi);
                return -1;
            }
        }
        for (unsigned c = lo; c <= hi; c++) {
            if (seen[c]) {
                snprintf(err, errlen, "cpu-affinity: CPU %u is listed twice", c);
                return -1;
            }
            if (!ok[c]) {
                char may[96];
                cpus_format(&allowed, may, sizeof(may));
                snprintf(err, errlen, "cpu-affinity: CPU %u is not one this process may run on (it may run on %s)", c,
                         may);
                return -1;
            }
            seen[c] = 1;
            out->cpu[out->n++] = (unsigned short)c;
        }
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return 0;
        if (*p != ',') {
            snprintf(err, errlen, "cpu-affinity: '%.32s' is not a CPU list (off, auto, or a list such as 0,2-3)", spec);
            return -1;
        }
        p++;
    }
}

/* A failed parse leaves out off. */
int cpus_parse(const char *spec, struct cpus *out, char *err, size_t errlen)
{
    out->n = 0;
    if (parse(spec, out, err, errlen) == 0)
        return 0;
    out->n = 0;
    return -1;
}

int cpus_of(const struct cpus *set, unsigned i) { return set && set->n ? set->cpu[i % set->n] : -1; }

void cpus_format(const struct cpus *set, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (unsigned i = 0; i < set->n && used < len;) {
        unsigned j = i;
        while (j + 1 < set->n && set->cpu[j + 1] == set->cpu[j] + 1)
            j++;
        int w = j > i ? snprintf(buf + used, len - used, "%s%u-%u", i ? "," : "", set->cpu[i], set->cpu[j])
                      : snprintf(buf + used, len - used, "%s%u", i ? "," : "", set->cpu[i]);
        if (w < 0)
            return;
        used += (size_t)w;
        i = j + 1;
    }
}
