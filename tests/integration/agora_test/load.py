"""Background load: keep-alive GETs from threads, every outcome recorded.

    Load(port, ...)                     keep-alive GET load from background threads
    percentile(values, pct)             nearest-rank percentile
    Calls(port, requests)               one request per thread and connection, all at once
"""

import http.client
import threading
import time

from .http import http_request
from .processes import LOCALHOST, wait_for


class Load:
    """Keep-alive requests from `threads` background threads until stopped: each thread sends
    `method path` in a loop on one HTTP/1.1 connection (a new one after an error or a close).
    Every outcome is kept in .results as (start, end, status, x_backend), times from
    time.monotonic(); a failed exchange has status "error: ..." instead of a number.
    Usable as a context manager (stops on exit). headers go with every request ({"Connection":
    "close"}: a new connection per request); with body_prefix, a 200 whose body does not start
    with it is a failure ("body: ...")."""

    def __init__(self, port, path="/", threads=3, method="GET", timeout=5.0, pause=0.0, headers=None,
                 body_prefix=None):
        self.port = port
        self.path = path
        self.method = method
        self.timeout = timeout
        self.pause = pause
        self.headers = dict(headers or {})
        self.body_prefix = body_prefix
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=self.timeout)
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    conn.request(self.method, self.path, headers=self.headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    status = resp.status
                    if status == 200 and self.body_prefix is not None and not body.startswith(self.body_prefix):
                        status = "body: %r" % body[:60]
                    outcome = (start, time.monotonic(), status, resp.getheader("X-Backend"))
                except Exception as err:  # kept as a failure
                    outcome = (start, time.monotonic(), "error: %r" % err, None)
                    conn.close()
                    conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=self.timeout)
                with self._lock:
                    self.results.append(outcome)
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            conn.close()

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def count(self):
        with self._lock:
            return len(self.results)

    def wait_count(self, n, timeout=10.0):
        """Waits until at least n results are in; False on timeout."""
        return wait_for(lambda: self.count() >= n, timeout)

    def snapshot(self):
        with self._lock:
            return list(self.results)

    def failures(self):
        """The results whose status is not 200."""
        return [r for r in self.snapshot() if r[2] != 200]

    def latencies_ms(self, since=None, until=None):
        """Latencies (ms) of the successful requests that started in [since, until)."""
        return [(end - start) * 1000.0 for start, end, status, _ in self.snapshot()
                if status == 200 and (since is None or start >= since) and (until is None or start < until)]


def percentile(values, pct):
    """The pct-th percentile (nearest rank) of a non-empty list of numbers."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


class Calls:
    """Requests from threads, each on its own connection: .results[i] = (status, X-Backend,
    seconds taken) once done."""

    def __init__(self, port, requests):
        self.results = [None] * len(requests)
        self.threads = [threading.Thread(target=self._run, args=(port, i, r), daemon=True)
                        for i, r in enumerate(requests)]
        for t in self.threads:
            t.start()

    def _run(self, port, i, req):
        method, path, headers, body = req
        t0 = time.monotonic()
        try:
            status, h, _ = http_request(LOCALHOST, port, method, path, headers=headers, body=body, timeout=40)
            self.results[i] = (status, h.get("x-backend"), time.monotonic() - t0)
        except Exception as err:  # a failure the test reports
            self.results[i] = ("error", repr(err), time.monotonic() - t0)

    def join(self, timeout=45):
        for t in self.threads:
            t.join(timeout)
        return self.results
