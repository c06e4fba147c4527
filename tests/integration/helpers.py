"""Shared helpers for agora's integration tests (standard library only).

Processes:
    free_port()                         a TCP port on 127.0.0.1 that is free right now
    start_process(args, ready_text)     start a program, wait until it prints ready_text -> Process
    Process.stop()                      SIGTERM, then SIGKILL if it lingers; returns the exit status
    start_testbackend(build_dir, *args) start build/testbackend on a port of its choosing -> Process

HTTP:
    http_request(host, port, method, path, headers, body, timeout) -> (status, headers, body)
    raw_exchange(port, data, timeout)   send raw bytes, return everything read until close/timeout
    RawConnection                       a raw socket for step-by-step exchanges (100-continue, ...);
                                        read_head() + stream_body(headers, sink) stream big bodies
    parse_responses(data, head=...)     split raw bytes into (status, headers, body) tuples
    pattern_bytes(offset, length)       expected slice of a testbackend /bytes body

agora lb:
    agora_binary(build_dir)             $AGORA_BIN, else build_dir/agora
    start_lb(agora, args)               start `agora lb ARGS` on a free port -> Process (.port)
    backend_url(proc, weight=None)      --backend value for a testbackend Process
    lb_stats(port), lb_server_stats(port), wait_health_checked(port)   GET /stats, decoded

Big bodies and memory:
    send_pattern(conn, total, chunked)  upload `total` pattern bytes without holding them
    PatternChecker()                    stream_body() sink checking the /bytes pattern
    rss_kib(pid), RssSampler(pid)       VmRSS of a process, once or sampled in the background

Misc:
    wait_for(predicate, timeout)        poll until predicate() is true, bounded

Headers come back as a dict with lower-case names; a repeated header's values are joined with
", ". Bodies are bytes, already de-chunked. Every wait is bounded by a timeout.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import http.client

LOCALHOST = "127.0.0.1"


def free_port(host=LOCALHOST):
    """Returns a TCP port that nothing listens on at this moment (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=5.0, interval=0.01):
    """Polls predicate() until it returns a true value, which is returned; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Process:
    """A child process started by start_process(). stdout and stderr are merged and collected by
    a background thread; read them with output(). Usable as a context manager (stops on exit)."""

    def __init__(self, args, popen):
        self.args = list(args)
        self.popen = popen
        self.port = None  # set by helpers that know it (start_testbackend)
        self.name = None
        self._chunks = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self):
        for line in iter(self.popen.stdout.readline, b""):
            with self._lock:
                self._chunks.append(line.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._lock:
            self._chunks.append("")  # marks end of output
            self._changed.notify_all()

    @property
    def pid(self):
        return self.popen.pid

    def output(self):
        """Everything the process has printed so far (stdout and stderr)."""
        with self._lock:
            return "".join(self._chunks)

    def wait_for_output(self, text, timeout=5.0):
        """Waits until the output contains text. Returns False on timeout or when the process
        closed its output without printing it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if text in "".join(self._chunks):
                    return True
                if self._chunks and self._chunks[-1] == "":  # output closed
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))

    def poll(self):
        """The exit status if the process has exited, else None."""
        return self.popen.poll()

    def wait(self, timeout=5.0):
        """Waits for the process to exit and returns its status; raises subprocess.TimeoutExpired."""
        status = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=1.0)
        return status

    def stop(self, timeout=5.0):
        """Sends SIGTERM, waits up to timeout, then SIGKILLs. Returns the exit status (negative
        for death by signal, as subprocess reports it). Safe to call more than once."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        self._reader.join(timeout=1.0)
        return self.popen.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_process(args, ready_text="listening on", timeout=10.0, env=None, cwd=None):
    """Starts args (a list; args[0] is the program) and waits until its output contains
    ready_text (skipped when ready_text is None). Returns a Process. If the process exits or
    stays silent past timeout it is stopped and RuntimeError is raised with its output."""
    popen = subprocess.Popen(
        [str(a) for a in args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    proc = Process(args, popen)
    if ready_text is not None and not proc.wait_for_output(ready_text, timeout):
        status = proc.stop()
        raise RuntimeError(
            "%s did not print %r within %.1fs (exit status %r); output:\n%s"
            % (args[0], ready_text, timeout, status, proc.output())
        )
    return proc


def _header_dict(pairs):
    headers = {}
    for name, value in pairs:
        name = name.lower()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def http_request(host, port, method, path, headers=None, body=None, timeout=5.0):
    """Sends one request on a fresh connection with http.client and returns (status, headers,
    body). http.client adds Host (unless headers has one), Accept-Encoding: identity and, for a
    bytes body, Content-Length; an iterable body is sent chunked."""
    headers = dict(headers or {})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, bytearray, str))
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, _header_dict(resp.getheaders()), data
    finally:
        conn.close()


class _ResponseReader:
    """Buffered reading and response parsing over a byte source; subclasses define _fill()."""

    timeout = 5.0

    def __init__(self):
        self.buf = b""
        self.closed_by_peer = False

    def _fill(self, deadline):
        """Appends more bytes to self.buf. Returns False at end of input; raises TimeoutError."""
        raise NotImplementedError

    def read_until(self, marker, timeout=None):
        """Returns the bytes up to and including marker (consumed from the buffer)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            if not self._fill(deadline):
                raise EOFError("connection closed before %r; got %r" % (marker, self.buf[:200]))
        end = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def read_exact(self, n, timeout=None):
        """Returns exactly n bytes."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until_closed(self, timeout=None):
        """Returns all remaining bytes once the peer closes; raises TimeoutError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def read_response(self, head=False, timeout=None):
        """Reads one final response (skipping 1xx) and returns (status, headers, body). The body
        is framed by chunked encoding, Content-Length or the connection closing; there is none
        for HEAD (head=True), 204 and 304."""
        timeout = timeout or self.timeout
        status, headers = self._read_head(timeout)
        while 100 <= status < 200:
            status, headers = self._read_head(timeout)
        if head or status in (204, 304):
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, self._read_chunked(timeout)
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"]), timeout)
        return status, headers, self.read_until_closed(timeout)

    def _read_head(self, timeout):
        head = self.read_until(b"\r\n\r\n", timeout).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError("malformed status line %r" % lines[0])
        pairs = [line.split(":", 1) for line in lines[1:] if line]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("malformed header in %r" % head)
        return int(parts[1]), _header_dict((n.strip(), v.strip()) for n, v in pairs)

    def _read_chunked(self, timeout):
        parts = []
        while True:
            size = int(self.read_until(b"\r\n", timeout).split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n", timeout) != b"\r\n":  # trailer fields
                    pass
                return b"".join(parts)
            parts.append(self.read_exact(size, timeout))
            if self.read_exact(2, timeout) != b"\r\n":
                raise ValueError("chunk data not followed by CRLF")


class RawConnection(_ResponseReader):
    """A plain TCP connection for tests that need exact bytes on the wire (pipelining,
    100-continue, malformed requests). Reads are buffered, so read_response() can be called once
    per pipelined response. Usable as a context manager."""

    def __init__(self, port, host=LOCALHOST, timeout=5.0):
        super().__init__()
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        """Half-closes: the peer reads EOF, and we can still read its answer."""
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from peer in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from peer in time") from None
        if not data:
            self.closed_by_peer = True
            return False
        self.buf += data
        return True

    def has_data(self, wait=0.0):
        """True if bytes or EOF are readable within `wait` seconds; consumes nothing."""
        if self.buf:
            return True
        self.sock.settimeout(wait if wait > 0 else 0.0)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return True
        except (BlockingIOError, socket.timeout):
            return False
        finally:
            self.sock.settimeout(self.timeout)

    def read_head(self, timeout=None):
        """Reads one final response head (1xx interim responses are skipped): (status, headers)."""
        timeout = timeout or self.timeout
        status, headers = self._read_head(timeout)
        while 100 <= status < 200:
            status, headers = self._read_head(timeout)
        return status, headers


    def stream(self, n, sink, timeout=None):
        """Passes exactly n bytes to sink(bytes) as they arrive, without accumulating them. The
        timeout bounds each wait for data, not the whole transfer."""
        timeout = timeout or self.timeout
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            sink(data)
            n -= len(data)
        while n > 0:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(min(n, 1 << 20))
            except socket.timeout:
                raise TimeoutError("no data from peer in time (%d bytes still expected)" % n) from None
            if not data:
                self.closed_by_peer = True
                raise EOFError("connection closed with %d bytes still expected" % n)
            sink(data)
            n -= len(data)


    def stream_body(self, headers, sink, timeout=None):
        """Streams the body of a response whose head was read with read_head() to sink(bytes):
        de-chunked, or Content-Length bytes, or until the peer closes. Returns the body length.
        (No body for HEAD, 204 or 304: don't call it for those.)"""
        timeout = timeout or self.timeout
        total = 0

        def counting(data):
            nonlocal total
            total += len(data)
            sink(data)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_until(b"\r\n", timeout).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n", timeout) != b"\r\n":
                        pass
                    return total
                self.stream(size, counting, timeout)
                if self.read_exact(2, timeout) != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
        if "content-length" in headers:
            self.stream(int(headers["content-length"]), counting, timeout)
            return total
        if self.buf:
            counting(self.buf)
            self.buf = b""
        while True:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no data from peer in time") from None
            if not data:
                self.closed_by_peer = True
                return total
            counting(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _BytesReader(_ResponseReader):
    def __init__(self, data):
        super().__init__()
        self.buf = bytes(data)

    def _fill(self, deadline):
        self.closed_by_peer = True
        return False


def raw_exchange(port, data, timeout=5.0, host=LOCALHOST):
    """Connects, sends data, and returns every byte received until the peer closes the connection
    or `timeout` seconds pass (whichever comes first). A reset after some data still returns it."""
    with RawConnection(port, host=host, timeout=timeout) as conn:
        conn.send(data)
        deadline = time.monotonic() + timeout
        try:
            while conn._fill(deadline):
                pass
        except (TimeoutError, ConnectionResetError):
            pass
        return conn.buf


def parse_responses(data, head=()):
    """Splits raw bytes holding consecutive responses into a list of (status, headers, body).
    head holds the indexes of responses that answer HEAD requests (no body). 1xx interim
    responses are skipped. Raises ValueError on malformed or truncated input."""
    reader = _BytesReader(data)
    responses = []
    try:
        while reader.buf:
            responses.append(reader.read_response(head=len(responses) in head))
    except EOFError as err:
        raise ValueError("truncated response: %s" % err) from None
    return responses


def pattern_bytes(offset, length):
    """The /bytes body slice [offset, offset+length): byte i is b"0123456789"[i % 10]."""
    start = offset % 10
    reps = (start + length) // 10 + 1
    return (b"0123456789" * reps)[start : start + length]



def start_testbackend(build_dir, *args, name=None, port=0, timeout=10.0):
    """Starts build_dir/testbackend (tests/support/testbackend.c) on 127.0.0.1 and waits until it
    listens. port=0 lets the backend pick a free port itself (no race). Extra args pass through,
    e.g. start_testbackend(build_dir, "--serial", "--delay-ms", "5-10"). Returns the Process with
    .port and .name (its X-Backend value) set."""
    argv = [pathlib.Path(build_dir) / "testbackend", "--port", str(port)]
    if name is not None:
        argv += ["--name", name]
    proc = start_process(argv + list(args), "listening on", timeout)
    line = next(l for l in proc.output().splitlines() if l.startswith("listening on "))
    proc.port = int(line.rsplit(":", 1)[1])
    proc.name = name if name is not None else "127.0.0.1:%d" % proc.port
    return proc


# ---------------------------------------------------------------- agora lb

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


def _listens_on(pid, port):
    """True if process pid holds a TCP socket listening on port (from /proc, so that another
    program that happens to listen on the same port is not mistaken for it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    if not inodes:
        return False
    fd_dir = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


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


def rss_kib(pid):
    """The resident set size of process pid in KiB (VmRSS in /proc/PID/status), or None once the
    process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS in a background thread while used as a context manager:
        with RssSampler(pid) as rss: ...transfer...
        assert rss.peak_kib < limit
    """

    def __init__(self, pid, interval=0.01):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(self.interval):
                return

    @property
    def peak_kib(self):
        return max(self.samples) if self.samples else 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5.0)


_PATTERN_PERIOD = b"0123456789"
_PATTERN_BLOCK = _PATTERN_PERIOD * (1024 * 1024 // 10 + 2)  # > 1 MiB + one period


def send_pattern(conn, total, chunked=False, piece=1024 * 1024):
    """Sends `total` bytes of the /bytes pattern on conn (a RawConnection) as a request body,
    in chunks of `piece` bytes (chunked framing, ended by the last chunk, when chunked), without
    holding more than one piece in memory."""
    piece -= piece % 10
    data = _PATTERN_BLOCK[:piece]
    left = total
    while left > 0:
        k = min(piece, left)
        if chunked:
            conn.send(b"%x\r\n" % k + data[:k] + b"\r\n")
        else:
            conn.send(data[:k])
        left -= k
    if chunked:
        conn.send(b"0\r\n\r\n")


class PatternChecker:
    """A sink for RawConnection.stream_body() that checks the bytes against the /bytes pattern
    as they arrive, holding none of them. .length is the byte count seen, .ok whether every byte
    matched."""

    def __init__(self):
        self.length = 0
        self.ok = True

    def __call__(self, data):
        start = self.length % 10
        if self.ok and _PATTERN_BLOCK[start : start + len(data)] != data:
            self.ok = False
        self.length += len(data)


# ---------------------------------------------------------------- fault tolerance (test_ft_*.py)
#
#   record_lines(path)                  a testbackend --record file as a list of lines
#   admin_request(port, method, path, body)   the balancer's admin API -> (status, decoded JSON),
#                                       with the token from the balancer's token file
#   admin_token_path(port), admin_token(port, token_file)   where the generated token is; read it
#   Load(port, ...)                     keep-alive GET load from background threads
#   CaptureBackend(...)                 a raw Python backend keeping every byte it receives
#   raise_fd_limit(n)                   this process's RLIMIT_NOFILE soft limit to at least n
#   free_port_run(offsets)              a base port P with P+offset free for every offset


def record_lines(path):
    """The lines of a testbackend --record file ([] while it does not exist)."""
    path = pathlib.Path(path)
    return path.read_text().splitlines() if path.exists() else []


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


class Load:
    """Keep-alive requests from `threads` background threads until stopped: each thread sends
    `method path` in a loop on one HTTP/1.1 connection (a new one after an error or a close).
    Every outcome is kept in .results as (start, end, status, x_backend), times from
    time.monotonic(); a failed exchange has status "error: ..." instead of a number.
    Usable as a context manager (stops on exit)."""

    def __init__(self, port, path="/", threads=3, method="GET", timeout=5.0, pause=0.0):
        self.port = port
        self.path = path
        self.method = method
        self.timeout = timeout
        self.pause = pause
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
                    conn.request(self.method, self.path)
                    resp = conn.getresponse()
                    resp.read()
                    outcome = (start, time.monotonic(), resp.status, resp.getheader("X-Backend"))
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


class CaptureBackend:
    """A raw HTTP backend written in Python, for tests that need to see exactly what reached a
    backend or to misbehave in ways testbackend cannot. It listens on 127.0.0.1:.port and keeps
    every byte each connection sent it (.connections(): list of bytes, one per connection, in
    accept order). Health checks (GET /health) get 200 "ok" and are not kept.

    Requests are framed by Content-Length or chunked encoding (a body ends at the first
    "0\\r\\n\\r\\n"); a complete request is answered according to `mode`:
        "answer"       200 "captured\\n" (keep-alive)
        "reset"        no answer: the connection is reset (SO_LINGER 0)
        "drop-second"  the first request on a connection is answered, the second one is read and
                       the connection closed without an answer (a pooled connection going stale)
    `response` (bytes) replaces the answer of mode "answer", for responses testbackend cannot make.
    .requests holds the request line of every complete non-health request, in arrival order.
    Usable as a context manager (stops on exit)."""

    def __init__(self, mode="answer", response=None):
        self.mode = mode
        self.response = response
        self.requests = []
        self._conns = []
        self._lock = threading.Lock()
        self._socks = set()
        self._stopped = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.name = "capture:%d" % self.port
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped:
                    sock.close()
                    return
                self._socks.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _request_end(buf):
        """Length of the first complete request in buf, or None while it is incomplete."""
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = buf[:head_end].decode("latin-1").lower()
        body_start = head_end + 4
        if "\r\ntransfer-encoding:" in head:
            end = buf.find(b"0\r\n\r\n", body_start)
            return None if end < 0 else end + 5
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value.strip())
        return body_start + length if len(buf) >= body_start + length else None

    def _serve(self, sock):
        kept = bytearray()
        record = None  # index in self._conns once we know it is not a health check
        buf = b""
        served = 0
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                kept += data
                if record is None and b"\r\n" in kept and not kept.startswith(b"GET /health "):
                    with self._lock:
                        self._conns.append(kept)
                        record = len(self._conns) - 1
                while True:
                    end = self._request_end(buf)
                    if end is None:
                        break
                    request, buf = buf[:end], buf[end:]
                    line = request.split(b"\r\n", 1)[0].decode("latin-1")
                    if line.startswith("GET /health "):
                        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        return
                    served += 1
                    with self._lock:
                        self.requests.append(line)
                    if self.mode == "reset" or (self.mode == "drop-second" and served == 2):
                        if self.mode == "reset":
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    sock.sendall(self.response or b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Backend: %s\r\n\r\n"
                                 b"captured\n" % self.name.encode())
        except OSError:
            return
        finally:
            with self._lock:
                self._socks.discard(sock)
            sock.close()

    def connections(self):
        """The bytes of every non-health connection so far (a copy), in accept order."""
        with self._lock:
            return [bytes(c) for c in self._conns]

    def stop(self):
        with self._lock:
            self._stopped = True
            socks = list(self._socks)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def raise_fd_limit(n):
    """Raises this process's soft RLIMIT_NOFILE to at least n (up to the hard limit). Returns
    the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOCALHOST, port))
            return True
        except OSError:
            return False


def free_port_run(offsets, low=20000, high=32000, attempts=200):
    """A base port P (in [low, high), below Linux's ephemeral range so the kernel does not hand
    the ports out meanwhile) such that P + k is free on 127.0.0.1 for every k in offsets, for
    programs that take a port and derive others from it (`agora up`)."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(attempts):
        base = rng.randrange(low, high)
        if all(_port_free(base + k) for k in offsets):
            return base
    raise RuntimeError("no free run of ports %r found" % (list(offsets),))


# ---------------------------------------------------------------- JSON API (test_api_*.py)
#
#   start_agora_server(agora, db_path)  `agora server` on a free 127.0.0.1 port -> Process (.port, .name)
#   AgoraCluster.start(agora, dir)      one SQLite file, three servers, `agora lb` in front
#   ApiClient(port, token)              JSON requests -> ApiResponse (.status, .headers, .body, .json)
#   unique_username(prefix)             a fresh valid username (at most 30 of [A-Za-z0-9_])
#   next_link(headers)                  the target of a Link header's rel="next", or None
#   walk_pages(client, path)            every page of a list by following rel="next"
#   check_account(obj), check_post(obj) assert the exact fields and their forms
#   rfc3339_ms(text)                    an RFC 3339 UTC time ("...Z") as ms since the epoch

API_PASSWORD = "correct horse battery staple"


def accepts(port):
    """True if something on LOCALHOST accepts a TCP connection on port (within 0.5 s)."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_agora_server(agora, db_path, workers=1, timeout=15.0, attempts=5, extra_args=()):
    """Starts `agora server --listen 127.0.0.1:PORT --db sqlite:DB_PATH --workers N` (then
    extra_args) on a free port and waits until the port accepts connections. A port taken between
    choosing and binding it is retried with another one. Returns the Process with .port and .name
    (its X-Served-By value, host:port); raises RuntimeError with the server's output on any other
    failure."""
    for attempt in range(attempts):
        port = free_port()
        proc = start_process([agora, "server", "--listen", "%s:%d" % (LOCALHOST, port),
                              "--db", "sqlite:%s" % db_path, "--workers", workers] + list(extra_args),
                             "agora server: listening on", timeout)
        # The message comes before the socket is bound: wait for the port too.
        wait_for(lambda: proc.poll() is not None or _listens_on(proc.pid, port), timeout)
        if proc.poll() is None and _listens_on(proc.pid, port):
            proc.port = port
            proc.name = "%s:%d" % (LOCALHOST, port)
            return proc
        proc.stop()
        if "in use" not in proc.output() or attempt + 1 == attempts:
            raise RuntimeError("agora server on port %d did not start; output:\n%s" % (port, proc.output()))
    raise RuntimeError("agora server: no free port after %d attempts" % attempts)


class ApiResponse:
    """One answer of the JSON API: .status, .headers (lower-case names), .body (bytes) and
    .json (the decoded body; ValueError if it is not JSON)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class ApiClient:
    """Sends requests to the JSON API on 127.0.0.1:port, one fresh connection each.
    `json_body` (any JSON value) is encoded as the body; `data` (bytes) is sent as is instead.
    The token, if any, goes in "Authorization: Bearer" (pass token=None to a call to send none)."""

    _DEFAULT = object()

    def __init__(self, port, token=None, timeout=10.0):
        self.port = port
        self.token = token
        self.timeout = timeout

    def as_user(self, token):
        """A client for the same server that sends token."""
        return ApiClient(self.port, token, self.timeout)

    def request(self, method, path, json_body=_DEFAULT, data=None, headers=None, token=_DEFAULT):
        hdrs = {}
        token = self.token if token is ApiClient._DEFAULT else token
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if json_body is not ApiClient._DEFAULT:
            data = json.dumps(json_body).encode()
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        status, rhdrs, body = http_request(LOCALHOST, self.port, method, path, headers=hdrs,
                                           body=data, timeout=self.timeout)
        return ApiResponse(status, rhdrs, body)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=_DEFAULT, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


_username_lock = threading.Lock()
_username_count = [0]


def unique_username(prefix="u"):
    """A username no other call in this process returns: prefix (cut to 16 characters), a
    counter and random hex, 30 characters at most of [A-Za-z0-9_]."""
    import uuid

    with _username_lock:
        _username_count[0] += 1
        n = _username_count[0]
    name = "%s_%d_%s" % (prefix[:16], n, uuid.uuid4().hex)
    return name[:30]


def next_link(headers):
    """The URL of the rel="next" entry of a Link header, or None when there is none."""
    import re

    m = re.search(r'<([^>]*)>\s*;\s*rel="next"', headers.get("link", ""))
    return m.group(1) if m else None


def walk_pages(client, path, max_pages=200):
    """GETs path and every page after it by following rel="next". Returns (items, pages): every
    item in order, and the list of page sizes. Raises AssertionError on a non-200 answer."""
    items, pages = [], []
    while path is not None:
        if len(pages) >= max_pages:
            raise AssertionError("more than %d pages: a Link loop?" % max_pages)
        resp = client.get(path)
        if resp.status != 200:
            raise AssertionError("GET %s answered %r" % (path, resp))
        page = resp.json
        items += page
        pages.append(len(page))
        path = next_link(resp.headers)
    return items, pages


class ApiUser:
    """An account with a session: .username, .password, .account (as created), .id, .token and
    .api (an ApiClient sending the token)."""

    def __init__(self, username, password, account, token, api):
        self.username = username
        self.password = password
        self.account = account
        self.id = account["id"]
        self.token = token
        self.api = api


class AgoraCluster:
    """Three `agora server` processes sharing one SQLite file, behind `agora lb` (least-conn,
    one worker, no admin API, no slow start). .lb and .servers are the Processes, .names the
    servers' X-Served-By values, .api an anonymous ApiClient for the balancer."""

    def __init__(self):
        self.servers = []
        self.lb = None
        self.db = None
        self.api = None

    # The API suites sign up hundreds of accounts from 127.0.0.1, far past the default sign-up
    # limit per address (5 per 10 minutes); test_ft_login_flood.py tests the limits themselves.
    SERVER_ARGS = ("--signup-limit", "off")

    @classmethod
    def start(cls, agora, directory, servers=3, server_args=SERVER_ARGS, lb_args=()):
        """server_args go to every `agora server`, lb_args to `agora lb` (after the defaults)."""
        cluster = cls()
        cluster.db = pathlib.Path(directory) / "agora.db"
        try:
            # the first server creates the schema alone, then the others open the file
            cluster.servers.append(start_agora_server(agora, cluster.db, extra_args=server_args))
            for _ in range(servers - 1):
                cluster.servers.append(start_agora_server(agora, cluster.db, extra_args=server_args))
            args = ["--admin-listen", "off", "--slow-start", "0", "--workers", "1",
                    "--health-interval", "200ms"] + list(lb_args)
            for s in cluster.servers:
                args += ["--backend", backend_url(s)]
            cluster.lb = start_lb(agora, args)
            wait_health_checked(cluster.lb.port)
            if not wait_for(lambda: all(s["state"] == "up" for s in lb_stats(cluster.lb.port)["servers"]), 10.0):
                raise RuntimeError("not every server is up: %r" % lb_stats(cluster.lb.port))
        except BaseException:
            cluster.stop()
            raise
        cluster.api = ApiClient(cluster.lb.port)
        return cluster

    @property
    def names(self):
        return [s.name for s in self.servers]

    def stop(self):
        """Stops the balancer and the servers. Returns a list of complaints (a process that did
        not exit with status 0), empty when all went well."""
        complaints = []
        for proc in ([self.lb] if self.lb else []) + self.servers:
            status = proc.stop(timeout=10.0)
            if status != 0:
                complaints.append("%s exited with %r; output:\n%s" % (proc.args[:2], status, proc.output()))
        return complaints

    def create_account(self, prefix="u", password=API_PASSWORD, display_name=None):
        """Signs up a fresh account through the balancer. Returns (username, account dict);
        raises AssertionError unless the answer is 201."""
        username = unique_username(prefix)
        body = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        resp = self.api.post("/api/v1/accounts", body)
        if resp.status != 201:
            raise AssertionError("sign-up of %s answered %r" % (username, resp))
        return username, resp.json

    def log_in(self, username, password=API_PASSWORD):
        """Logs in through the balancer; returns the token (AssertionError unless 200)."""
        resp = self.api.post("/api/v1/sessions", {"username": username, "password": password})
        if resp.status != 200:
            raise AssertionError("log-in of %s answered %r" % (username, resp))
        return resp.json["token"]

    def new_user(self, prefix="u", password=API_PASSWORD):
        """Signs up and logs in a fresh account -> ApiUser."""
        username, account = self.create_account(prefix, password)
        token = self.log_in(username, password)
        return ApiUser(username, password, account, token, self.api.as_user(token))

    def new_users(self, n, prefix="u"):
        """n fresh ApiUsers, made concurrently (sign-up and log-in each cost an Argon2 hash)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(n, 6)) as pool:
            return list(pool.map(lambda _: self.new_user(prefix), range(n)))


ACCOUNT_FIELDS = {"id", "username", "display_name", "created_at", "followers_count", "following_count",
                  "posts_count"}
POST_FIELDS = {"id", "author", "text", "created_at", "reply_to", "likes_count", "replies_count", "liked"}
RFC3339_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z"


def rfc3339_ms(text):
    """Milliseconds since the epoch of an RFC 3339 UTC time ("...Z"); ValueError if malformed."""
    import datetime
    import re

    if not re.fullmatch(RFC3339_UTC, text):
        raise ValueError("not an RFC 3339 UTC time: %r" % text)
    base, _, frac = text[:-1].partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 1000 + int((frac + "000")[:3])


def check_account(acc):
    """Asserts that acc has exactly the account fields, with the right types and forms."""
    assert set(acc) == ACCOUNT_FIELDS, acc
    assert isinstance(acc["id"], str) and acc["id"].isdigit() and int(acc["id"]) > 0, acc
    assert isinstance(acc["username"], str) and isinstance(acc["display_name"], str), acc
    rfc3339_ms(acc["created_at"])
    for k in ("followers_count", "following_count", "posts_count"):
        assert type(acc[k]) is int and acc[k] >= 0, acc


def check_post(post):
    """Asserts that post has exactly the post fields, with the right types and forms."""
    assert set(post) == POST_FIELDS, post
    assert isinstance(post["id"], str) and post["id"].isdigit() and int(post["id"]) > 0, post
    check_account(post["author"])
    assert isinstance(post["text"], str), post
    rfc3339_ms(post["created_at"])
    assert post["reply_to"] is None or (isinstance(post["reply_to"], str) and post["reply_to"].isdigit()), post
    assert type(post["likes_count"]) is int and type(post["replies_count"]) is int, post
    assert type(post["liked"]) is bool, post
