/* rc.h — the result codes every module returns, and the rule for functions that return an int.
 *
 * One small set, after nginx's NGX_OK/NGX_ERROR/NGX_AGAIN:
 *   RC_OK     0  done.
 *   RC_ERROR -1  failed; the function's comment says where the reason is (an err buffer, errno, an
 *                answer already sent to the client, store_errmsg()).
 *   RC_AGAIN -2  not now, and nothing was done: the same call may succeed later (the process is
 *                short of descriptors for a connection, the database stayed locked) — no verdict
 *                on the input. Callers answer 503 or retry.
 * (nginx's DECLINED, "not mine, try the next handler", has no user here yet: no module chains
 * handlers that way. Codes -3 to -15 are kept for it and any other shared code, so adding one
 * never renumbers a module's codes.)
 * The values of RC_OK and RC_ERROR are fixed, so `return 0;`, `return -1;` and `if (f() < 0)` in a
 * function of the first kind below are this rule written short; names are used where a function
 * returns more than these two.
 *
 * What an int-returning function returns, by kind:
 *  - status: RC_OK, or a negative code above or of its module (below). The common case.
 *  - a wrapper of system calls (net_*, loop_watch/loop_set_mask/loop_run, lb_upstream_get,
 *    lb_admin_read_token): a value >= 0 (a descriptor, a byte count, 0) or -errno; never -1 with
 *    errno set, so the reason travels with the value.
 *  - a count (bytes parsed or consumed, rows, servers): >= 0, or a negative code. The HTTP parser
 *    is one: > 0 bytes of a complete head, HTTP_AGAIN (0: nothing consumed yet, send more) or
 *    HTTP_ERROR (= RC_ERROR); its 0 is a count, which is why it is not RC_AGAIN (parser.h).
 *  - an index (lb_select, a policy's pick, lb_set_find): >= 0, or -1 when there is none.
 *  - a predicate, named as a question (_is, _has, _ok, _usable, _limited): 1 or 0, never negative.
 *    A lookup that can also fail says found/absent/failed as 1, 0 or RC_ERROR (api_string,
 *    auth_request_token, api_auth).
 *  - a subcommand (cmd_*, lb_main, http_daemon_run): the process exit code (0, 1 or 2).
 *  - a callback whose type a library defines (SQLite's VFS and busy handler, inih's handler):
 *    that library's codes.
 * A function returns either -errno or the codes of this file, never both: the values overlap (-1 is
 * also -EPERM, -16 -EBUSY), so a caller must know which it holds. Where an -errno meets a code
 * (px_dispatch turns lb_upstream_get's -errno into RC_ERROR or RC_AGAIN), the conversion is
 * explicit. An -EAGAIN from a wrapper (net_read) is errno's and is not RC_AGAIN.
 * A function that returns a pointer returns NULL only for a failure that is not lack of memory
 * (with a message in err, or errno): out of memory aborts, everywhere (core/alloc.h).
 *
 * Module codes. A module whose callers must tell outcomes apart beyond these (the store: not
 * found, conflict, forbidden, ...) defines them in its header: its codes that mean what a shared
 * one means are aliases of it (STORE_OK, STORE_ERROR, STORE_BUSY = RC_AGAIN), and its own are
 * numbered down from RC_MODULE, so a module code never equals a shared one. A positive code is an
 * outcome that is not a failure (OPTS_HELP: --help was given; HTTP_CLIENT_DONE: the response is
 * complete). */
#ifndef AGORA_CORE_RC_H
#define AGORA_CORE_RC_H

#define RC_OK     0
#define RC_ERROR  (-1)
#define RC_AGAIN  (-2)
#define RC_MODULE (-16) /* a module's first own code; its next ones are RC_MODULE - 1, ... */

#endif
