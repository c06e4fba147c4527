"""agora lb + agora server: exactly-once posts with Idempotency-Key across a server crash.

Three real web servers share one database (SQLite, or PostgreSQL with AGORA_TEST_STORE=postgres)
behind the balancer. Client threads create
posts with POST /api/v1/posts and a per-post Idempotency-Key, each retried by the client with the
same key until it is acknowledged (201). Meanwhile one server is killed with SIGKILL and started
again on the same port. A post whose server died after committing it but before answering is
retried (by the balancer, which replays requests carrying an Idempotency-Key, or by the client)
and the store answers the retry with the post it already has. Afterwards the database holds every
acknowledged post exactly once, and nothing else; each acknowledgement named the stored post.
"""

import json
import threading
import time

from helpers import LOCALHOST, free_port, http_request, sql, wait_for

POSTS = 200
THREADS = 4
ATTEMPTS = 60  # per post, 50 ms apart at most after a failure: a bounded wait for recovery
USER, PASSWORD = "ft_idem", "correct horse battery staple"


def api(port, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    status, _, raw = http_request(LOCALHOST, port, method, path, headers=hdrs, body=data, timeout=10)
    return status, raw


def test_posts_with_idempotency_keys_exist_exactly_once_after_a_crash(agora_server_factory, lb_factory, store_db):
    db = store_db  # SQLite, or PostgreSQL with AGORA_TEST_STORE=postgres
    ports = [free_port() for _ in range(3)]
    servers = [agora_server_factory(ports[0], db)]  # the first one creates the schema alone
    servers += [agora_server_factory(p, db) for p in ports[1:]]
    lb = lb_factory(ports, "--health-interval", "200ms", "--health-rise", "2", "--eject-time", "500ms")

    status, raw = api(lb.port, "POST", "/api/v1/accounts", {"username": USER, "password": PASSWORD})
    assert status == 201, raw
    status, raw = api(lb.port, "POST", "/api/v1/sessions", {"username": USER, "password": PASSWORD})
    assert status == 200, raw
    token = json.loads(raw)["token"]

    acked = {}  # k -> post id from the 201 answer
    acked_at = {}
    lock = threading.Lock()

    def writer(first):
        for k in range(first, POSTS, THREADS):
            for _ in range(ATTEMPTS):
                try:
                    status, raw = api(lb.port, "POST", "/api/v1/posts", {"text": "post %d" % k},
                                      {"Idempotency-Key": "key-%d" % k, "Authorization": "Bearer " + token})
                except OSError:
                    status, raw = None, b""
                if status == 201:
                    with lock:
                        acked[k] = json.loads(raw)["id"]
                        acked_at[k] = time.monotonic()
                    break
                time.sleep(0.05)
            time.sleep(0.05)  # spread the posts (about 3 s in all) over the crash and the restart

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(acked) >= POSTS // 4, 20.0)
        victim = servers[1]
        victim.popen.kill()
        victim.popen.wait(timeout=5)
        killed_at_count = len(acked)
        assert wait_for(lambda: len(acked) >= killed_at_count + 10, 20.0)
        agora_server_factory(ports[1], db)  # the same address again
        restarted_at = time.monotonic()
    finally:
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert sum(1 for t in acked_at.values() if t > restarted_at) >= 20  # the crash was mid-way

    # Every post was acknowledged in the end (bounded retries).
    assert sorted(acked) == list(range(POSTS)), "not acknowledged: %r" % sorted(set(range(POSTS)) - set(acked))
    # The database holds exactly the acknowledged posts, once each, with the acknowledged ids.
    rows = sql(db, "SELECT p.id, p.text, p.idem_key FROM posts p JOIN accounts a ON a.id = p.author "
                   "WHERE a.username = ?", USER)
    texts = [text for _, text, _ in rows]
    assert len(texts) == len(set(texts)), "duplicates: %r" % sorted(t for t in texts if texts.count(t) > 1)
    assert sorted(texts) == sorted("post %d" % k for k in acked)
    assert {text: str(pid) for pid, text, _ in rows} == {"post %d" % k: pid for k, pid in acked.items()}
    assert {key for _, _, key in rows} == {"key-%d" % k for k in range(POSTS)}
    # The same through the API: the account's post count and its posts, page by page.
    status, raw = api(lb.port, "GET", "/api/v1/accounts/%s" % USER)
    assert status == 200 and json.loads(raw)["posts_count"] == POSTS
    assert sorted(listed_posts(lb.port)) == sorted(("post %d" % k, pid) for k, pid in acked.items())


def listed_posts(port):
    """(text, id) of every post GET /api/v1/accounts/USER/posts lists, following rel="next"."""
    path, posts = "/api/v1/accounts/%s/posts?limit=100" % USER, []
    for _ in range(POSTS // 100 + 3):  # bounded: a page or two more than needed
        status, headers, raw = http_request(LOCALHOST, port, "GET", path, timeout=10)
        assert status == 200, raw
        posts += [(p["text"], p["id"]) for p in json.loads(raw)]
        link = headers.get("link")
        if not link:
            return posts
        path = link[link.index("<") + 1:link.index(">")]
    raise AssertionError("pagination did not end")
