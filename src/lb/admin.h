/* admin.h — the balancer's admin API: list, add, remove, re-weight and drain servers at runtime.
 *
 * An HTTP/JSON listener (default 127.0.0.1:8404) served on the main thread's loop with the same
 * HTTP stack as everything else (buffered handler). Clients on loopback may use it freely;
 * others must send "Authorization: Bearer <token>" (from the config or AGORA_ADMIN_TOKEN) and
 * are refused (403) when no token is configured. Routes (JSON bodies, errors {"error": "..."}):
 *   GET    /servers                      the /stats document
 *   POST   /servers        {"url", "weight"?}   add (checked at once; 409 if present) → 201
 *   DELETE /servers/{addr}               remove now (in-flight requests finish) → 200
 *   PUT    /servers/{addr}/weight {"weight": N}  → 200
 *   POST   /servers/{addr}/drain  {"then": "remove"|"park"}?  no new requests; when the last
 *                                        in-flight one ends: removed (default) or parked → 202
 *   POST   /servers/{addr}/enable        back to active from draining/parked (slow start) → 200
 * {addr} is the server's "host:port" as shown in /stats. */
#ifndef AGORA_LB_ADMIN_H
#define AGORA_LB_ADMIN_H
#include <stddef.h>

#include "core/loop.h"
#include "lb/health.h"
#include "lb/proxy.h"

struct lb_admin;

/* Starts the admin listener on loop. Returns NULL with err set on failure. */
struct lb_admin *lb_admin_start(struct loop *loop, struct lb_shared *sh, struct lb_health *health, char *err,
                                size_t errlen);
/* Drained servers are finished by a timer of the admin; stops it and frees everything. */
void lb_admin_stop(struct lb_admin *a);

#endif
