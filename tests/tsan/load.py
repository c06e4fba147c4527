"""A short concurrent load on agora built with ThreadSanitizer (`make tsan`), so that TSan sees
the threads of the real binaries meet: the balancer's workers, health checker, admin API and
SIGHUP reload, and the web server's workers and hashing pool.

Usage: python3 tests/tsan/load.py BUILD_DIR [SECONDS]

BUILD_DIR holds agora and testbackend built with -fsanitize=thread; TSAN_OPTIONS (set by the
Makefile) sends reports to files, which `make tsan` checks afterwards. This script fails (exit
status 1) when a request gets an unexpected answer or a process does not exit with status 0 (a
TSan report at exit makes it 66). Phases, SECONDS in all (default 6):
  1. `agora lb --workers 2 --policy peak-ewma` in front of two testbackends, under wrk (or
     Python threads without wrk), while a thread reads /stats, drains, re-enables and re-weights a
     server through the admin API, and the config file is reloaded with SIGHUP;
  2. `agora server --workers 2 --hash-threads 2` (SQLite), with threads signing up, logging in
     (hashing pool), posting and reading timelines at the same time.
Loopback only, ephemeral ports; every wait is bounded.
"""

import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))

from helpers import (API_PASSWORD, LOCALHOST, ApiClient, Load, admin_request, backend_url,  # noqa: E402
                     free_port, http_request, lb_stats, start_agora_server, start_lb, start_testbackend,
                     unique_username, wait_health_checked)

ADMIN_TOKEN = "tsan-load-admin-token-0123456789"


def log(msg):
    print("tsan-load: %s" % msg, flush=True)


class Failures:
    """Collects complaints from every thread; the script fails if any."""

    def __init__(self):
        self.items = []
        self._lock = threading.Lock()

    def add(self, msg):
        with self._lock:
            if len(self.items) < 50:
                self.items.append(msg)


def drive_admin(lb, admin_port, backends, stop, failures):
    """/stats and admin calls in a loop until stop: drain (then park) and re-enable a server,
    change its weight, read the dashboard's series and events. Each answer must be the documented
    one."""
    key = "%s:%d" % (LOCALHOST, backends[1].port)
    calls = 0
    while not stop.is_set():
        status, _, _ = http_request(LOCALHOST, lb.port, "GET", "/stats")
        if status != 200:
            failures.add("GET /stats answered %d" % status)
        steps = [("POST", "/servers/%s/drain" % key, {"then": "park"}, 202),
                 ("POST", "/servers/%s/enable" % key, None, 200),
                 ("PUT", "/servers/%s/weight" % key, {"weight": 1 + calls % 3}, 200),
                 ("GET", "/servers", None, 200),
                 ("GET", "/series", None, 200),  # the dashboard's data: the sampler's points, the event log
                 ("GET", "/events", None, 200)]
        for method, path, body, want in steps:
            status, doc = admin_request(admin_port, method, path, body, token=ADMIN_TOKEN)
            if status != want:
                failures.add("admin %s %s answered %d %r, expected %d" % (method, path, status, doc, want))
        calls += 1
        stop.wait(0.05)
    return calls


def lb_phase(build, seconds, failures, workdir):
    agora = build / "agora"
    backends = [start_testbackend(build, "--threads", "1", name="b%d" % i) for i in range(2)]
    lb = None
    try:
        config = workdir / "lb.ini"
        config.write_text("[backends]\n" + "".join("server = %s\n" % backend_url(b) for b in backends))
        admin_port = free_port()
        lb = start_lb(agora, ["--config", config, "--workers", "2", "--policy", "peak-ewma",
                              "--health-interval", "100ms", "--slow-start", "1s",
                              "--admin-listen", "%s:%d" % (LOCALHOST, admin_port), "--admin-token", ADMIN_TOKEN])
        wait_health_checked(lb.port)
        stop = threading.Event()
        admin = threading.Thread(target=lambda: drive_admin(lb, admin_port, backends, stop, failures), daemon=True)
        admin.start()
        reload_at = time.monotonic() + seconds / 2
        reloaded = threading.Timer(seconds / 2, lambda: lb.popen.send_signal(signal.SIGHUP))
        reloaded.start()
        url = "http://%s:%d/" % (LOCALHOST, lb.port)
        if shutil.which("wrk"):
            out = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % max(1, round(seconds)), url],
                                 capture_output=True, text=True, timeout=seconds + 30)
            log("wrk: " + " | ".join(l.strip() for l in out.stdout.splitlines() if "Requests/sec" in l
                                     or "requests in" in l or "Non-2xx" in l or "Socket errors" in l))
            if out.returncode != 0 or "requests in" not in out.stdout:
                failures.add("wrk failed (%d): %s %s" % (out.returncode, out.stdout, out.stderr))
            elif "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
                failures.add("wrk saw errors:\n%s" % out.stdout)
        else:
            with Load(lb.port, threads=8) as load:
                time.sleep(seconds)
            log("python load: %d requests" % load.count())
            bad = load.failures()
            if bad:
                failures.add("%d of %d requests failed, e.g. %r" % (len(bad), load.count(), bad[:3]))
        reloaded.join()
        stop.set()
        admin.join(timeout=15)
        if time.monotonic() < reload_at:
            failures.add("the load ended before the reload")
        if "agora lb: reloaded:" not in lb.output():
            failures.add("agora lb did not log the SIGHUP reload; output:\n%s" % lb.output()[-2000:])
        stats = lb_stats(lb.port)
        log("lb: %d servers in /stats after the run" % len(stats["servers"]))
    finally:
        if lb is not None:
            status = lb.stop(timeout=20)
            if status != 0:
                failures.add("agora lb exited with %r; output:\n%s" % (status, lb.output()[-4000:]))
        for b in backends:
            status = b.stop(timeout=10)
            if status != 0:
                failures.add("testbackend exited with %r; output:\n%s" % (status, b.output()[-4000:]))


def user_loop(api, stop, failures, counts):
    """Sign up, log in, post, read the home timeline and like, until stop."""
    while not stop.is_set():
        name = unique_username("tsan")
        r = api.post("/api/v1/accounts", {"username": name, "password": API_PASSWORD})
        if r.status != 201:
            failures.add("sign-up answered %r" % r)
            return
        r = api.post("/api/v1/sessions", {"username": name, "password": API_PASSWORD})
        if r.status != 200:
            failures.add("log-in answered %r" % r)
            return
        me = api.as_user(r.json["token"])
        for i in range(5):
            r = me.post("/api/v1/posts", {"text": "tsan post %d" % i})
            if r.status != 201:
                failures.add("post answered %r" % r)
                return
            post_id = r.json["id"]
            r = me.get("/api/v1/timelines/home")
            if r.status != 200 or not r.json or r.json[0]["id"] != post_id:  # own newest post first
                failures.add("home timeline answered %r" % r)
                return
            r = me.post("/api/v1/posts/%s/like" % post_id)
            if r.status != 200 or r.json["liked"] is not True:
                failures.add("like answered %r" % r)
                return
        counts.append(1)


def server_phase(build, seconds, failures, workdir):
    server = start_agora_server(build / "agora", workdir / "agora.db", workers=2,
                                extra_args=("--signup-limit", "off", "--hash-threads", "2"))
    try:
        api = ApiClient(server.port, timeout=30.0)
        stop = threading.Event()
        counts = []
        threads = [threading.Thread(target=user_loop, args=(api, stop, failures, counts), daemon=True)
                   for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        log("server: %d users went through sign-up, log-in, 5 posts, timelines and likes" % len(counts))
        if not counts:
            failures.add("no user loop completed")
    finally:
        status = server.stop(timeout=20)
        if status != 0:
            failures.add("agora server exited with %r; output:\n%s" % (status, server.output()[-4000:]))


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build = pathlib.Path(sys.argv[1]).resolve()
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 6.0
    failures = Failures()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agora-tsan-") as tmp:
        lb_phase(build, seconds * 2 / 3, failures, pathlib.Path(tmp))
        server_phase(build, seconds / 3, failures, pathlib.Path(tmp))
    log("done in %.1f s" % (time.monotonic() - started))
    for f in failures.items:
        print("FAILED: %s" % f, file=sys.stderr)
    return 1 if failures.items else 0


if __name__ == "__main__":
    sys.exit(main())
