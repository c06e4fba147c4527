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


if __name__ == "__main__":
    {"load": load, "social": social}[sys.argv[1]](sys.argv[2:])
