"""Processes and ports: start the programs under test, wait for them, stop them.

    LOCALHOST                           "127.0.0.1": the tests talk over loopback only
    free_port()                         a TCP port on 127.0.0.1 that is free right now
    wait_for(predicate, timeout)        poll until predicate() is true, bounded
    start_process(args, ready_text)     start a program, wait until it prints ready_text -> Process
    Process.stop()                      SIGTERM, then SIGKILL if it lingers; returns the exit status
    accepts(port)                       whether something on 127.0.0.1 accepts a connection on port
    rss_kib(pid), RssSampler(pid)       VmRSS of a process, once or sampled in the background
    raise_fd_limit(n)                   this process's RLIMIT_NOFILE soft limit to at least n
    free_port_run(offsets)              a base port P with P+offset free for every offset
    stop_all(procs)                     stop them; complaints for those not exiting 0
    up_port_run(servers)                the same for `agora up --servers N` (balancer, servers,
                                        admin at +404, the servers' metrics at +1001...)
    own_outside_address()               this host's non-loopback address (no packet sent), or None
"""

import os
import signal
import socket
import subprocess
import threading
import time


LOCALHOST = "127.0.0.1"


def own_outside_address():
    """This host's address for an outside route (no packet is sent), or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))  # TEST-NET-2: only the routing decision matters
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


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


def stop_all(procs, timeout=10.0):
    """Stops every process (Process.stop) and returns a complaint, with its output, for each
    that did not exit with status 0: empty when all went well. For fixtures that must fail a
    test whose processes crashed or hung."""
    complaints = []
    for proc in procs:
        status = proc.stop(timeout=timeout)
        if status != 0:
            complaints.append("%s exited with %r; output:\n%s" % (" ".join(str(a) for a in proc.args[:2]), status,
                                                                    proc.output()))
    return complaints


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


def up_port_run(servers=3, spare=0):
    """A base port for `agora up --listen 127.0.0.1:P --servers N`: P (the balancer), P+1..P+N and
    spare more (servers added later), P+404 (admin API), P+443 (HTTPS) and each server's metrics port
    (its port + 1000) are free."""
    n = servers + spare
    return free_port_run([0] + [k for k in range(1, n + 1)] + [404, 443] + [1000 + k for k in range(1, n + 1)])


def accepts(port):
    """True if something on LOCALHOST accepts a TCP connection on port (within 0.5 s)."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False
