"""The cluster's client host: run inside the `client` namespace (ip netns exec NAME-client python3
netclient.py ...), it sends requests to the virtual address and prints what happened as one JSON
document on stdout, so the test (in the root namespace) can count.

  load URL --duration S [--interval S] [--timeout S] [--retry-for S] [--count N] [--clients N]
       [--stop-file F]
      GET URL once every interval (a new connection each time: a dead balancer cannot hide behind
      a kept-alive connection) for duration seconds, or until count logical requests were made or
      the stop file exists; --clients N: that many such clients at once (count is per client).
      Each logical request is tried again, every 0.1 s, until it succeeds or retry-for seconds
      have passed (0: one try). A try succeeds on a 2xx. Output: {"tries": [[t0, t1, logical,
      status, served_by, error], ...]} sorted by t0: times are time.time() (the test's clock),
      status 0 when no response came, logical = client * 1000000 + its request number.
  social BASE
      sign up, log in, post, read back through BASE; output: each step's status and body.
  posts BASE --clients N --count N [--interval S] [--timeout S] [--retry-for S] [--ready-file F]
      N clients, each a new account (signed up and logged in first; then F is created), each
      writes count posts with an Idempotency-Key of its own; a post is tried again with the same
      key and body, every 0.1 s, until it is acknowledged (201, or 200, with the post: the same
      text) or retry-for seconds have passed. Output: {"users": [...], "posts": [[client, n, key, text, id or null,
      t_first, t_ack or null, [status of each try], [error of each failed try]], ...]}.
  ryw BASE --clients N --count N
      read-your-writes: N clients (new accounts), each count times posts and at once reads its
      user page, sending back the Agora-Position the post answered with. Output: {"tries": n,
      "seen": how many reads showed the post first, "positions": how many posts carried one,
      "bad": the first 20 reads that did not, "users": [...]}.
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid


def request(url, method="GET", body=None, headers=None, timeout=2.0):
    """One request on a new connection -> (status, headers dict (lower-case), body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        hdrs = {"Connection": "close"}
        hdrs.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, u.path + ("?" + u.query if u.query else ""), body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def load(args):
    url = args[0]
    opts = {"--duration": 5.0, "--interval": 0.05, "--timeout": 1.0, "--retry-for": 0.0, "--count": 0,
            "--clients": 1}
    stop_file = None
    i = 1
    while i < len(args):
        if args[i] == "--stop-file":
            stop_file = args[i + 1]
        else:
            opts[args[i]] = float(args[i + 1])
        i += 2
    end = time.time() + opts["--duration"]
    results = []

    def client(number):
        tries = []
        logical = 0
        while time.time() < end and not (stop_file and os.path.exists(stop_file)):
            if opts["--count"] and logical >= opts["--count"]:
                break
            logical += 1
            first = time.time()
            while True:
                t0 = time.time()
                status, served, error = 0, "", ""
                try:
                    status, hdrs, _ = request(url, timeout=opts["--timeout"])
                    served = hdrs.get("x-served-by", "")
                except Exception as e:  # noqa: BLE001 - every failure is a data point
                    error = "%s: %s" % (type(e).__name__, e)
                t1 = time.time()
                tries.append([t0, t1, number * 1000000 + logical, status, served, error])
                if 200 <= status < 300 or t1 - first >= opts["--retry-for"]:
                    break
                time.sleep(0.1)
            pause = opts["--interval"] - (time.time() - first)
            if pause > 0:
                time.sleep(pause)
        results.extend(tries)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(int(opts["--clients"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"tries": sorted(results)}, sys.stdout)


def social(args):
    base = args[0].rstrip("/")
    user = "u" + uuid.uuid4().hex[:12]
    password = "correct horse battery"
    steps = {}

    def step(name, method, path, body=None, token=None):
        headers = {"Authorization": "Bearer " + token} if token else {}
        status, hdrs, data = request(base + path, method, body, headers, timeout=10.0)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        steps[name] = {"status": status, "body": parsed, "served_by": hdrs.get("x-served-by", "")}
        return parsed

    step("signup", "POST", "/api/v1/accounts", {"username": user, "password": password})
    session = step("login", "POST", "/api/v1/sessions", {"username": user, "password": password})
    token = session.get("token") if isinstance(session, dict) else None
    text = "hello from the client host " + uuid.uuid4().hex
    post = step("post", "POST", "/api/v1/posts", {"text": text}, token)
    post_id = post.get("id") if isinstance(post, dict) else None
    step("read_post", "GET", "/api/v1/posts/%s" % post_id)
    step("read_user_posts", "GET", "/api/v1/accounts/%s/posts" % user)
    step("home", "GET", "/api/v1/timelines/home", token=token)
    json.dump({"user": user, "text": text, "post_id": post_id, "steps": steps}, sys.stdout)


def options(args, defaults):
    opts = dict(defaults)
    for i in range(0, len(args), 2):
        opts[args[i]] = float(args[i + 1])
    return opts


def account(base, timeout=5.0, retry_for=30.0):
    """A new account, signed up and logged in through base (each step tried again until it
    succeeds or retry_for passes) -> (username, token)."""
    user = "u" + uuid.uuid4().hex[:12]
    password = "correct horse battery"
    end = time.time() + retry_for
    for path, want in (("/api/v1/accounts", (201, 409)), ("/api/v1/sessions", (200, 201))):
        while True:
            status, body = 0, b""
            try:
                status, _, body = request(base + path, "POST", {"username": user, "password": password},
                                          timeout=timeout)
            except Exception:  # noqa: BLE001 - tried again
                pass
            if status in want:
                break
            if time.time() > end:
                raise RuntimeError("cannot %s %s: %s %r" % ("sign up" if "accounts" in path else "log in", user,
                                                          status, body[:200]))
            time.sleep(0.1)
    return user, json.loads(body)["token"]


def posts(args):
    base = args[0].rstrip("/")
    ready = None
    if "--ready-file" in args:
        i = args.index("--ready-file")
        ready = args[i + 1]
        args = args[:i] + args[i + 2:]
    opts = options(args[1:], {"--clients": 1, "--count": 1, "--interval": 0.0, "--timeout": 5.0,
                              "--retry-for": 60.0})
    nclients = int(opts["--clients"])
    users = [None] * nclients
    out = []
    # the accounts first (each client its own, at once), then the ready file, then the posts
    barrier = threading.Barrier(nclients, action=lambda: ready and open(ready, "w").close())

    def client(number):
        users[number] = account(base)
        barrier.wait()
        user, token = users[number]
        for n in range(int(opts["--count"])):
            key = "k-%d-%d-%s" % (number, n, uuid.uuid4().hex[:10])
            text = "idempotent post %s" % key
            first = time.time()
            statuses, errors, post_id, acked = [], [], None, None
            while True:
                status, body, error = 0, None, ""
                try:
                    status, _, data = request(base + "/api/v1/posts", "POST", {"text": text},
                                              {"Authorization": "Bearer " + token, "Idempotency-Key": key},
                                              timeout=opts["--timeout"])
                    body = json.loads(data) if data else None
                except Exception as e:  # noqa: BLE001 - every failure is a data point
                    error = "%s: %s" % (type(e).__name__, e)
                statuses.append(status)
                if status in (200, 201) and isinstance(body, dict) and body.get("text") == text:
                    post_id, acked = body.get("id"), time.time()
                    break
                errors.append(error or "%d %s" % (status, json.dumps(body)[:200]))
                if time.time() - first >= opts["--retry-for"]:
                    break
                time.sleep(0.1)
            out.append([number, n, key, text, post_id, first, acked, statuses, errors])
            pause = opts["--interval"] - (time.time() - first)
            if pause > 0:
                time.sleep(pause)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"users": [u for u, _ in users], "posts": sorted(out)}, sys.stdout)


def ryw(args):
    base = args[0].rstrip("/")
    opts = options(args[1:], {"--clients": 1, "--count": 1})
    users = [None] * int(opts["--clients"])
    lock = threading.Lock()
    res = {"tries": 0, "seen": 0, "positions": 0, "bad": []}

    def client(number):
        try:
            users[number] = account(base)
            for n in range(int(opts["--count"])):
                one(number, n)
        except Exception as e:  # noqa: BLE001 - reported, the test fails on the count
            with lock:
                res["bad"].append(["exception", "%s: %s" % (type(e).__name__, e)])

    def one(number, n):
        user, token = users[number]
        text = "read your writes %d %d %s" % (number, n, uuid.uuid4().hex[:8])
        bad = None
        status, hdrs, data = request(base + "/api/v1/posts", "POST", {"text": text},
                                     {"Authorization": "Bearer " + token}, timeout=10.0)
        pos = hdrs.get("agora-position")
        if status != 201:
            bad = ["post", status, data[:200].decode(errors="replace")]
        else:
            rs, rh, rd = request(base + "/api/v1/accounts/%s/posts" % user, "GET", None,
                                 {"Agora-Position": pos} if pos else {}, timeout=10.0)
            items = json.loads(rd) if rs == 200 else None
            items = items.get("items") if isinstance(items, dict) else items
            first = items[0]["text"] if items else None
            if rs != 200 or first != text:
                bad = ["read", rs, first, text, pos, rh.get("x-served-by")]
        with lock:
            res["tries"] += 1
            res["positions"] += 1 if pos else 0
            if bad:
                if len(res["bad"]) < 20:
                    res["bad"].append(bad)
            else:
                res["seen"] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(users))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["users"] = [u[0] for u in users if u]
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    {"load": load, "social": social, "posts": posts, "ryw": ryw}[sys.argv[1]](sys.argv[2:])
