"""Handlers off the event loop (issue 11, item 1).

`agora server`'s event loops do only network I/O and HTTP; every API request runs on a bounded
pool of handler threads (--threads, --queue, --queue-wait), each with its own SQLite connection,
and /health is answered on the loop from a cached readiness state (a pinging thread: the
database answered within the last 3 s). Real servers on real SQLite files, no mocks:

  - the issue's proof: this test holds SQLite's write lock itself (BEGIN IMMEDIATE from Python)
    for 2 s while a POST is in flight: the POST's handler waits on the lock, and meanwhile GETs
    (WAL readers) and /health on other connections of the same one-worker server are answered;
    the POST then succeeds (the store waits up to 5 s per attempt for the lock) and is stored;
  - every handler busy and the queue full: 503, Retry-After: 1, a JSON error, at once; a request
    that waited longer than --queue-wait: the same; an acknowledged 201 is in the database and a
    503'd write is not;
  - /health stays prompt while every handler is busy; it answers 503 once the database file is
    removed from under the server (renamed away), and 200 again by itself once it is back;
  - pipelined requests through the pool keep their order; a client that resets its connection
    while its job waits withdraws it (its write never happens); an orderly close after a complete
    request is a half-close to the HTTP layer, so that request is run and answered.
"""

import json
import os
import socket
import sqlite3
import threading
import time

import pytest

from helpers import API_PASSWORD, ApiClient, RawConnection, start_agora_server, stop_all, unique_username, wait_for


@pytest.fixture
def server_factory(agora_bin, tmp_path):
    """start(*args) -> (server, db_path): one `agora server` (1 worker) on a database of its own."""
    started = []

    def start(*args):
        db = tmp_path / ("h%d.db" % len(started))
        proc = start_agora_server(agora_bin, db, extra_args=("--signup-limit", "off") + args)
        started.append(proc)
        return proc, db

    complaints = []
    try:
        yield start
    finally:
        complaints = stop_all(started, timeout=15.0)
    if complaints:
        pytest.fail("\n".join(complaints))


def make_user(port):
    api = ApiClient(port, timeout=30.0)
    name = unique_username("h")
    assert api.post("/api/v1/accounts", {"username": name, "password": API_PASSWORD}).status == 201
    resp = api.post("/api/v1/sessions", {"username": name, "password": API_PASSWORD})
    assert resp.status == 200, resp
    return name, api.as_user(resp.json["token"])


class WriteLock:
    """Holds SQLite's write lock on db (BEGIN IMMEDIATE on a connection of this process) until
    release(); every writer of the server then waits in its busy handler."""

    def __init__(self, db):
        self.conn = sqlite3.connect(str(db), isolation_level=None, timeout=10.0)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()


def post_texts(db):
    conn = sqlite3.connect(str(db), timeout=10.0)
    try:
        return {row[0] for row in conn.execute("SELECT text FROM posts")}
    finally:
        conn.close()


class InFlight:
    """Sends one request from a thread; .done is set when its answer came, .resp holds it and
    events (a shared list) gets (name, "done") appended at that moment."""

    def __init__(self, events, name, fn, *args, **kw):
        self.events = events
        self.name = name
        self.resp = None
        self.error = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kw):
        try:
            self.resp = fn(*args, **kw)
        except Exception as e:  # reported by the test
            self.error = e
        self.events.append((self.name, "done"))
        self.done.set()

    def wait(self, timeout=30.0):
        assert self.done.wait(timeout), "%s: no answer within %s s" % (self.name, timeout)
        assert self.error is None, self.error
        return self.resp


def test_a_handler_waiting_2s_on_the_database_delays_no_other_connection(server_factory):
    # Defaults: one worker (event loop), the default number of handler threads.
    server, db = server_factory()
    name, me = make_user(server.port)
    first = me.post("/api/v1/posts", {"text": "before the lock"})
    assert first.status == 201, first
    events = []
    lock = WriteLock(db)
    events.append(("lock", "taken"))
    writer = InFlight(events, "post", me.post, "/api/v1/posts", {"text": "written behind the lock"})
    # While the POST's handler waits for the lock: reads and /health on other connections.
    reads = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        got = [me.get("/api/v1/posts/%s" % first.json["id"]), me.get("/api/v1/accounts/%s/posts" % name),
               ApiClient(server.port).get("/health")]
        reads.append((got, time.monotonic() - t0, writer.done.is_set()))
    events.append(("reads", "done"))
    time.sleep(max(0.0, 2.0 - 1.5))
    events.append(("lock", "released"))
    lock.release()
    created = writer.wait()
    assert created.status == 201, created
    assert created.json["text"] == "written behind the lock"
    # The order of events: every read answered while the POST was still waiting on the lock,
    # and the POST answered only after the lock was released.
    assert events.index(("post", "done")) > events.index(("lock", "released")), events
    assert len(reads) >= 5, reads
    for got, seconds, post_done in reads:
        assert not post_done, (got, seconds)
        assert [r.status for r in got] == [200, 200, 200], got
        assert got[2].json == {"status": "ok"}
        assert seconds < 1.0, reads  # far below the 2 s a stalled loop takes
    assert got[1].json[0]["text"] == "before the lock"  # the reader's snapshot: not the pending write
    assert "written behind the lock" in post_texts(db)


def test_health_stays_prompt_while_every_handler_is_busy(server_factory):
    server, db = server_factory("--threads", "1", "--queue-wait", "10s")
    name, me = make_user(server.port)
    events = []
    lock = WriteLock(db)
    writer = InFlight(events, "post", me.post, "/api/v1/posts", {"text": "holds the only handler"})
    time.sleep(0.3)  # the POST has reached the one handler thread and waits for the lock
    reader = InFlight(events, "get", me.get, "/api/v1/accounts/%s" % name)  # queued behind it
    health = [ApiClient(server.port).get("/health") for _ in range(5)]
    events.append(("health", "done"))
    assert [h.status for h in health] == [200] * 5, health
    assert not writer.done.is_set() and not reader.done.is_set(), events
    lock.release()
    assert writer.wait().status == 201
    assert reader.wait().status == 200
    assert events[0] == ("health", "done"), events


def test_full_queue_answers_503_retry_after_and_loses_no_acknowledged_write(server_factory):
    server, db = server_factory("--threads", "1", "--queue", "1", "--queue-wait", "10s")
    _, me = make_user(server.port)
    events = []
    lock = WriteLock(db)
    running = InFlight(events, "running", me.post, "/api/v1/posts", {"text": "ran first"})
    time.sleep(0.3)  # taken by the one thread, which waits for the lock
    queued = InFlight(events, "queued", me.post, "/api/v1/posts", {"text": "waited in the queue"})
    time.sleep(0.3)  # in the queue's one place
    refused = me.post("/api/v1/posts", {"text": "refused at the door"})
    events.append(("refused", "done"))
    assert refused.status == 503, refused
    assert refused.headers.get("retry-after") == "1", refused.headers
    assert refused.headers.get("content-type", "").startswith("application/json"), refused.headers
    assert refused.json == {"error": "server busy: too many requests waiting for a worker, try again shortly"}
    assert not running.done.is_set() and not queued.done.is_set(), events  # answered at once
    lock.release()
    assert running.wait().status == 201
    assert queued.wait().status == 201
    texts = post_texts(db)
    assert {"ran first", "waited in the queue"} <= texts, texts
    assert "refused at the door" not in texts


def test_request_waiting_longer_than_queue_wait_answers_503_and_is_not_run(server_factory):
    server, db = server_factory("--threads", "1", "--queue-wait", "300ms")
    _, me = make_user(server.port)
    events = []
    lock = WriteLock(db)
    running = InFlight(events, "running", me.post, "/api/v1/posts", {"text": "ran"})
    time.sleep(0.2)
    late = me.post("/api/v1/posts", {"text": "waited too long"})
    events.append(("late", "done"))
    assert late.status == 503, late
    assert late.headers.get("retry-after") == "1", late.headers
    assert late.json == {"error": "server busy: no worker was free in time, try again shortly"}
    lock.release()
    assert running.wait().status == 201
    assert events[0] == ("late", "done"), events
    texts = post_texts(db)
    assert "ran" in texts and "waited too long" not in texts, texts


def test_health_503_when_the_database_file_is_gone_and_200_when_it_is_back(server_factory):
    server, db = server_factory()
    api = ApiClient(server.port)
    assert api.get("/health").status == 200
    away = str(db) + ".away"
    os.rename(str(db), away)
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: api.get("/health").status == 503, timeout=8.0), "health never went 503"
        resp = api.get("/health")
        assert resp.status == 503 and resp.json == {"error": "database unavailable"}, resp
        assert resp.headers.get("cache-control") == "no-store"
        assert time.monotonic() - t0 < 6.0  # a ping a second, unready 3 s after the last good one
    finally:
        os.rename(away, str(db))
    assert wait_for(lambda: api.get("/health").status == 200, timeout=5.0), "health never came back"
    assert api.get("/health").json == {"status": "ok"}
    assert "the database file" in server.output() and "removed or replaced" in server.output()
    # ready.c marks the database ready before it logs so: the line may come a moment after /health
    assert wait_for(lambda: "the database answers again" in server.output(), timeout=5.0), server.output()


def raw(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (method, path, token)
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    return head.encode() + b"\r\n" + data


def test_pipelined_requests_through_the_pool_keep_their_order(server_factory):
    server, db = server_factory("--threads", "3")
    name, me = make_user(server.port)
    ids = [me.post("/api/v1/posts", {"text": "post %d" % i}).json["id"] for i in range(3)]
    token = me.token
    with RawConnection(server.port, timeout=10.0) as conn:
        conn.send(raw("GET", "/api/v1/posts/%s" % ids[2], token)
                  + raw("POST", "/api/v1/posts", token, {"text": "pipelined"})
                  + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  + raw("GET", "/api/v1/posts/%s" % ids[0], token)
                  + raw("GET", "/api/v1/accounts/%s/posts" % name, token)
                  + raw("GET", "/api/v1/posts/%s" % ids[1], token))
        answers = [conn.read_response() for _ in range(6)]
        # and the connection is kept alive for more
        conn.send(raw("GET", "/api/v1/posts/%s" % ids[0], token))
        again = conn.read_response()
    statuses = [a[0] for a in answers]
    assert statuses == [200, 201, 200, 200, 200, 200], answers
    bodies = [json.loads(a[2]) for a in answers]
    assert bodies[0]["text"] == "post 2"
    assert bodies[1]["text"] == "pipelined"
    assert bodies[2] == {"status": "ok"}
    assert bodies[3]["text"] == "post 0"
    assert bodies[4][0]["text"] == "pipelined"  # the page read after the write: sees it
    assert bodies[5]["text"] == "post 1"
    assert again[0] == 200 and json.loads(again[2])["text"] == "post 0"


def test_client_hanging_up_while_its_job_waits_withdraws_it(server_factory):
    # A reset (or any error) withdraws a queued job: its write never happens. An orderly close
    # after a complete request is not a hang-up to the HTTP layer but a half-close (the client
    # may still be reading): that request is run and answered, then the connection is closed.
    server, db = server_factory("--threads", "1", "--queue-wait", "10s")
    _, me = make_user(server.port)
    events = []
    lock = WriteLock(db)
    running = InFlight(events, "running", me.post, "/api/v1/posts", {"text": "kept"})
    time.sleep(0.3)  # the one thread waits for the lock; what comes next is queued
    socks = []
    for i in range(4):
        s = RawConnection(server.port, timeout=10.0)
        kind = "reset" if i % 2 == 0 else "half-closed"
        s.send(raw("POST", "/api/v1/posts", me.token, {"text": "%s %d" % (kind, i)}))
        socks.append((kind, s))
    time.sleep(0.2)
    for kind, s in socks:
        if kind == "reset":
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        else:
            s.shutdown_write()
    time.sleep(0.3)  # the server sees them go while their jobs still wait
    lock.release()
    assert running.wait().status == 201
    for kind, s in socks:
        if kind == "half-closed":
            with s:
                status, headers, body = s.read_response()
                assert status == 201 and headers.get("connection") == "close", (status, headers)
                assert s.has_data(5.0) and s.sock.recv(1) == b""  # then closed
    after = me.post("/api/v1/posts", {"text": "after"})
    assert after.status == 201, after
    texts = post_texts(db)
    assert texts == {"kept", "half-closed 1", "half-closed 3", "after"}, texts
    assert ApiClient(server.port).get("/health").status == 200
