"""`agora lb`: start it, read its /stats, call its admin API.

    agora_binary(build_dir)             $AGORA_BIN, else build_dir/agora
    start_lb(agora, args)               start `agora lb ARGS` on a free port -> Process (.port)
    backend_url(proc, weight=None)      --backend value for a testbackend Process
    lb_stats(port), lb_server_stats(port), wait_health_checked(port)   GET /stats, decoded
    admin_request(port, method, path, body)   the balancer's admin API -> (status, decoded JSON),
                                        with the token from the balancer's token file
    admin_token_path(port), admin_token(port, token_file)   where the generated token is; read it
"""

import json
import os
import pathlib

from .http import http_request
from .processes import LOCALHOST, _listens_on, free_port, start_process, wait_for


LB_READY_TEXT = "agora lb: listening on"


def agora_binary(build_dir):
    """The agora binary under test: $AGORA_BIN if set, else build_dir/agora."""
    env = os.environ.get("AGORA_BIN")
    return pathlib.Path(env) if env else pathlib.Path(build_dir) / "agora"


def backend_url(backend, weight=None):
    """The --backend value for a testbackend Process (or a port number), with ",weight=N" when
    weight is given."""
    port = backend if isinstance(backend, int) else backend.port
    url = "http://%s:%d" % (LOCALHOST, port)
    return url if weight is None else "%s,weight=%d" % (url, weight)


def start_lb(agora, args, timeout=10.0, env=None, attempts=5):
    """Starts `agora lb ARGS --listen 127.0.0.1:PORT` on a free port and waits until it prints
    that it listens and its port accepts connections. Returns the Process with .port set. A
    port taken between choosing and binding it is retried with another one, up to `attempts`
    times; any other start-up failure raises RuntimeError with the balancer's output."""
    for attempt in range(attempts):
        port = free_port()
        argv = [agora, "lb"] + [str(a) for a in args] + ["--listen", "%s:%d" % (LOCALHOST, port)]
        try:
            proc = start_process(argv, LB_READY_TEXT, timeout, env=env)
        except RuntimeError as err:
            if "in use" in str(err) and attempt + 1 < attempts:
                continue
            raise
        # The message comes just before the listening socket is bound: wait for the socket too.
        if not wait_for(lambda: proc.poll() is not None or _listens_on(proc.pid, port), timeout):
            proc.stop()
            raise RuntimeError("agora lb does not listen on port %d; output:\n%s" % (port, proc.output()))
        if proc.poll() is not None:
            output = proc.output()
            if "in use" in output and attempt + 1 < attempts:
                continue
            raise RuntimeError("agora lb exited with %r at start-up; output:\n%s" % (proc.poll(), output))
        proc.port = port
        proc.name = "agora lb"
        return proc
    raise RuntimeError("agora lb: no free port after %d attempts" % attempts)


def lb_stats(port, timeout=5.0):
    """GET /stats from the balancer: the decoded JSON document (key order preserved)."""
    status, headers, body = http_request(LOCALHOST, port, "GET", "/stats", timeout=timeout)
    if status != 200:
        raise AssertionError("GET /stats answered %d: %r" % (status, body[:200]))
    return json.loads(body)


def lb_server_stats(port):
    """The /stats "servers" entries keyed by URL."""
    return {s["url"]: s for s in lb_stats(port)["servers"]}


def wait_health_checked(port, timeout=5.0):
    """Waits until every server in the balancer's /stats has had a health check. Returns the
    stats document, or raises AssertionError on timeout."""
    def checked():
        stats = lb_stats(port)
        return stats if all(s["last_check"] != "not checked yet" for s in stats["servers"]) else None

    stats = wait_for(checked, timeout, 0.02)
    if not stats:
        raise AssertionError("health checks did not run within %.1fs: %r" % (timeout, lb_stats(port)))
    return stats


def admin_token_path(admin_port):
    """The file `agora lb` writes its generated admin token to (no --admin-token, no
    --admin-token-file) for an admin API on admin_port: see lb_admin_default_token_path."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return pathlib.Path(xdg) / ("agora-admin-%d.token" % admin_port)
    return pathlib.Path("/tmp/agora-%d" % os.geteuid()) / ("admin-%d.token" % admin_port)


def admin_token(admin_port=None, token_file=None):
    """The admin token in token_file, else in the default token file of admin_port."""
    path = pathlib.Path(token_file) if token_file is not None else admin_token_path(admin_port)
    return path.read_text().strip()


FROM_TOKEN_FILE = object()  # admin_request's default: the token from the balancer's token file


def admin_request(port, method, path, body=None, headers=None, timeout=5.0, token=FROM_TOKEN_FILE,
                  token_file=None):
    """Calls the balancer's admin API on 127.0.0.1:port. body (a dict) is sent as JSON. The
    bearer token is read from token_file, else from the default token file for port (a balancer
    without --admin-token generates it); token=None sends none, a string sends that one.
    Returns (status, decoded JSON body or None when it is not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = dict(headers or {})
    if token is FROM_TOKEN_FILE:
        token = admin_token(port, token_file)
    if token is not None:
        hdrs.setdefault("Authorization", "Bearer " + token)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    status, _, raw = http_request(LOCALHOST, port, method, path, headers=hdrs, body=data, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None
