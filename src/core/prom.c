/* prom.c — the Prometheus text format's pieces; see prom.h. */
#include "core/prom.h"

#include <stdio.h>
#include <string.h>

unsigned prom_bucket(uint64_t us)
{
    static const uint64_t bounds[] = PROM_BOUNDS_US;
    unsigned b = 0;
    while (b < PROM_BUCKETS - 1 && us > bounds[b])
        b++;
    return b;
}

void prom_family(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One append when nothing needs escaping, the usual case: a scrape writes thousands of samples. */
void prom_label_value(struct buf *out, const char *v)
{
    size_t n = strcspn(v, "\\\"\n");
    buf_append(out, v, n);
    for (v += n; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append(out, (char[]){'\\', *v}, 2);
        else if (*v == '\n')
            buf_append(out, "\\n", 2);
        else
            buf_append(out, v, 1);
    }
}

static void name_labels(struct buf *out, const char *name, const char *labels, const char *more)
{
    int l = labels && *labels, m = more && *more;
    buf_puts(out, name);
    if (l || m) {
        buf_append(out, "{", 1);
        if (l)
            buf_puts(out, labels);
        if (l && m)
            buf_append(out, ",", 1);
        if (m)
            buf_puts(out, more);
        buf_append(out, "}", 1);
    }
    buf_append(out, " ", 1);
}

void prom_sample2(struct buf *out, const char *name, const char *labels, const char *more, uint64_t v)
{
    name_labels(out, name, labels, more);
    buf_put_u64(out, (unsigned long long)v);
    buf_append(out, "\n", 1);
}

void prom_sample(struct buf *out, const char *name, const char *labels, uint64_t v)
{
    prom_sample2(out, name, labels, NULL, v);
}

void prom_sample_seconds(struct buf *out, const char *name, const char *labels, uint64_t us)
{
    char frac[8];
    name_labels(out, name, labels, NULL);
    buf_put_u64(out, (unsigned long long)(us / 1000000));
    snprintf(frac, sizeof(frac), ".%06u", (unsigned)(us % 1000000));
    buf_append(out, frac, 7);
    buf_append(out, "\n", 1);
}

void prom_histogram(struct buf *out, const char *name, const char *labels, const uint64_t counts[PROM_BUCKETS],
                    uint64_t sum_us)
{
    /* PROM_BOUNDS_US in seconds, as %g writes them */
    static const char *const le[PROM_BUCKETS] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                                 "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf"};
    int has = labels && *labels;
    uint64_t cum = 0;
    for (unsigned b = 0; b < PROM_BUCKETS; b++) {
        cum += counts[b];
        buf_puts(out, name);
        buf_append(out, "_bucket{", 8);
        if (has) {
            buf_puts(out, labels);
            buf_append(out, ",", 1);
        }
        buf_append(out, "le=\"", 4);
        buf_puts(out, le[b]);
        buf_append(out, "\"} ", 3);
        buf_put_u64(out, (unsigned long long)cum);
        buf_append(out, "\n", 1);
    }
    char n[128];
    snprintf(n, sizeof(n), "%s_sum", name);
    prom_sample_seconds(out, n, labels, sum_us);
    snprintf(n, sizeof(n), "%s_count", name);
    prom_sample(out, n, labels, cum);
}
