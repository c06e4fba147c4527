/* cpus.h — which CPU each worker thread runs on (--cpu-affinity).
 *
 * The spelling is the one operators know from nginx's worker_cpu_affinity and taskset -c:
 *   off        the workers are not pinned: the kernel places them (the default)
 *   auto       every CPU this process may run on (sched_getaffinity: taskset, a container's
 *              cpuset), in ascending order
 *   LIST       CPUs and ranges, in the order given: "0,2", "4-7", "1, 3-4"; each must be one
 *              this process may run on, none listed twice
 * Worker i runs on cpus_of(set, i): the list's entry i modulo its length, so more workers than
 * CPUs share them in turn. A pinned worker is never moved off its CPU: two workers each on their
 * own core stop competing for one, and the threads they wake (a backend, a client on the same
 * machine) find them where they left them; but a busy neighbour on that CPU slows that worker
 * alone. HAProxy (cpu-map) and nginx pin nothing by default either.
 *
 * Errors (err, without a program name) name the value: "cpu-affinity: 'x' is not a CPU number
 * (off, auto, or a list such as 0,2-3)", "cpu-affinity: range 3-1 is backwards", "cpu-affinity:
 * CPU 0 is listed twice", "cpu-affinity: CPU 9 is not one this process may run on (it may run on
 * 0-1)". Nothing here allocates. */
#ifndef AGORA_CORE_CPUS_H
#define AGORA_CORE_CPUS_H
#include <stddef.h>

#define CPUS_MAX 1024 /* CPU_SETSIZE: CPU numbers are 0..1023 */

struct cpus {
    unsigned n; /* 0 = off: not pinned */
    unsigned short cpu[CPUS_MAX];
};

/* Parses spec into *out: a list's CPUs must be ones this process may run on now, and auto is
 * those. Blanks around the value and its parts are allowed. Returns 0, or -1 with a message in
 * err and out off. */
int cpus_parse(const char *spec, struct cpus *out, char *err, size_t errlen);

/* The spelling alone, whatever CPUs the process may run on now (a reload checks a value that
 * only a restart would apply). Returns 0 or -1 with a message in err. */
int cpus_check(const char *spec, char *err, size_t errlen);

/* Do a and b pin the same way (the same CPUs in the same order)? */
int cpus_same(const struct cpus *a, const struct cpus *b);

/* The CPU of worker i; -1 when set is NULL or off. */
int cpus_of(const struct cpus *set, unsigned i);

/* Writes the list as ranges ("0-3,6") into buf; one that does not fit in len ends with ",...". */
void cpus_format(const struct cpus *set, char *buf, size_t len);

#endif
