/* prom.h — the Prometheus text exposition format (version 0.0.4): the pieces every /metrics of
 * agora writes with (the balancer's, lb/metrics.c, and the web server's, app/metrics.c).
 *
 * A family is a "# HELP" and a "# TYPE" line followed by its samples; a sample is
 * name{labels} value. Labels are passed pre-formatted (`server="10.0.0.1:80",code="2xx"`), their
 * values escaped by prom_label_value. Times are seconds (base units), counted in µs by the
 * callers: every histogram of agora has the same buckets, 0.5 ms to 10 s (a request answered
 * from memory on loopback to one near a response timeout), the upper bounds PROM_BOUNDS_US
 * and +Inf. See prometheus.io/docs/instrumenting/exposition_formats and /practices/naming.
 *
 * Nothing here allocates but the output buffer; no state: safe on any thread. */
#ifndef AGORA_CORE_PROM_H
#define AGORA_CORE_PROM_H
#include <stdint.h>

#include "core/buf.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Upper bounds (µs) of the histogram buckets; +Inf follows. */
#define PROM_BOUNDS_US                                                                                                 \
    {                                                                                                                  \
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000        \
    }
#define PROM_BUCKETS 15 /* the bounds above and +Inf */

/* The bucket (0 .. PROM_BUCKETS - 1) a duration of us microseconds is counted in. */
unsigned prom_bucket(uint64_t us);

/* Writes the HELP and TYPE lines of a family (type: "counter", "gauge", "histogram"). help is a
 * constant sentence without backslashes or line breaks. */
void prom_family(struct buf *out, const char *name, const char *type, const char *help);
/* Appends v escaped as a label value (backslash, double quote and line feed). */
void prom_label_value(struct buf *out, const char *v);
/* name{labels} v (labels NULL or "": no braces), without printf. */
void prom_sample(struct buf *out, const char *name, const char *labels, uint64_t v);
/* name{labels,more} v: labels written once per series and more per sample (more may be NULL). */
void prom_sample2(struct buf *out, const char *name, const char *labels, const char *more, uint64_t v);
/* The same with a value in µs written as seconds (six decimals). */
void prom_sample_seconds(struct buf *out, const char *name, const char *labels, uint64_t us);
/* The samples of one histogram (no HELP/TYPE): name_bucket{labels,le="..."} cumulative counts,
 * name_sum (seconds) and name_count. counts[b] is the number of observations in bucket b alone
 * (not cumulative); sum_us their sum. labels may be NULL. */
void prom_histogram(struct buf *out, const char *name, const char *labels, const uint64_t counts[PROM_BUCKETS],
                    uint64_t sum_us);

#endif
