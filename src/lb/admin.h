/* admin.h — the balancer's admin API: list, add, remove, re-weight and drain servers at runtime.
 *
 * An HTTP/JSON listener (default 127.0.0.1:8404) served on the main thread's loop with the same
 * HTTP stack as everything else (buffered handler). Every request, from any address, is checked
 * in this order:
 *   1. Host must be localhost, a loopback IP (127.x.x.x, [::1]) or the admin address (any IP
 *      literal when that is a wildcard), and the target must be origin-form → else 403 (a DNS
 *      rebinding page sends its own name as Host);
 *   2. an address that sent FAIL_LIMIT wrong tokens in the last minute → 429 + Retry-After;
 *   3. "Authorization: Bearer <token>", compared in constant time → else 401 with
 *      WWW-Authenticate: Bearer (every refusal is logged with the client address);
 *   4. a request with a body must say Content-Type: application/json → else 415.
 * The token is the configured one (--admin-token, [admin] token, AGORA_ADMIN_TOKEN), else 256
 * random bits in hex generated at start and written, mode 0600, to the token file (--admin-token-
 * file, default lb_admin_default_token_path), which is removed again at a clean stop. An admin
 * address that is not loopback needs a configured token (lb/config.c refuses to start without).
 * Exception: the dashboard's page (GET/HEAD /dashboard, /dashboard/, /dashboard/FILE; dashboard.h)
 * holds no data and is served after the Host check alone, with a strict Content-Security-Policy.
 * Routes (JSON bodies, errors {"error": "..."}):
 *   GET    /metrics                      the counters in the Prometheus text format (metrics.h)
 *   GET    /series[?since=N]             the dashboard's per-second series (dashboard.h)
 *   GET    /events[?since=ID]            the event log (events.h)
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
#include "http/gate.h"
#include "lb/health.h"
#include "lb/proxy.h"

struct lb_admin;

#define LB_ADMIN_TOKEN_MAX HTTP_GATE_TOKEN_MAX /* longest token + 1 (as lb_config.admin_token) */

/* The default token file of an admin API on port: "$XDG_RUNTIME_DIR/agora-admin-PORT.token" when
 * XDG_RUNTIME_DIR is an absolute path, else "/tmp/agora-UID/admin-PORT.token"; that directory is
 * created (mode 0700) when make_dir, and refused unless it is a directory of this user with no
 * access for others. Returns 0 with the path in out, or -1 with err set. */
int lb_admin_default_token_path(unsigned port, int make_dir, char *out, size_t outlen, char *err, size_t errlen);
/* Reads a token file (one line of printable ASCII, no spaces). Returns 0 with the token in out,
 * -errno if it cannot be read, -EINVAL if it holds no token or one of outlen bytes or more. */
int lb_admin_read_token(const char *path, char *out, size_t outlen);

/* Starts the admin listener on loop. Returns NULL with err set on failure. */
struct lb_admin *lb_admin_start(struct loop *loop, struct lb_shared *sh, struct lb_health *health, char *err,
                                size_t errlen);
/* Drained servers are finished by a timer of the admin; stops it and frees everything. */
void lb_admin_stop(struct lb_admin *a);

#endif
