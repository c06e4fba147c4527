"""From the review of the balancer's former read_soon (a read of a backend connection at the end of
the loop iteration that wrote its request, with one worker; removed once TLS read ahead, when it
made p99 worse in every paired round: bench/RESULTS.md, "Reading ahead"). The cases it found stay
true of the balancer without it: no read of a backend before the request is all written, default
workers that follow the CPUs the balancer may use, and pipelined requests answered in order. Each
asserts what the client or the backend saw, or the balancer's own system calls under strace."""

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from agora_test.http import http_request
from agora_test.lb import wait_health_checked
from agora_test.processes import start_process, wait_for
from helpers import LOCALHOST, RawConnection
from test_lb_errors import ScriptBackend

STRACE = shutil.which("strace")


def accepts(port):
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
        return True
    except OSError:
        return False


class Strace:
    """strace attached to every thread of a running process, recording the given system calls
    (recvfrom by default) with the sockets' addresses (-yy); stop() detaches and returns the lines."""

    def __init__(self, pid, path, calls="recvfrom"):
        self.path = path
        self.proc = subprocess.Popen([STRACE, "-f", "-yy", "-e", "trace=" + calls, "-o", path, "-p", str(pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # "strace: Process N attached with K threads" once every thread is traced
        line = self.proc.stderr.readline()
        assert b"attached with %d threads" % len(os.listdir("/proc/%d/task" % pid)) in line, line

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        with open(self.path) as f:
            return f.read().splitlines()


@pytest.mark.skipif(STRACE is None, reason="strace is needed")
def test_a_body_sent_in_pieces_costs_no_read_of_the_backend_before_it_is_all_sent(lb_factory, tmp_path):
    """A request body arriving in 40 pieces, each in its own loop iteration (the next piece is sent
    only once the backend got the last one): the backend cannot answer before the body is all in,
    so a read of its connection after each piece would find nothing (EAGAIN): a system call for
    nothing per piece, which a hostile slow upload could multiply. Expected: no recvfrom on the
    backend connection returns EAGAIN while the body is being sent, and the response is whole."""
    got = []
    cond = threading.Condition()

    def answer(sock):
        # chunked body: count the bytes; the last chunk ends with 0\r\n\r\n
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            if not piece:
                return
            data += piece
            with cond:
                got.append(len(data))
                cond.notify_all()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")

    backend = ScriptBackend(answer)
    try:
        lb = lb_factory([backend.port], workers=1)
        with RawConnection(lb.port) as conn:
            conn.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            tracer = Strace(lb.pid, str(tmp_path / "strace.txt"))
            try:
                piece = b"a" * 100
                sent = 0
                for i in range(40):
                    conn.send(b"64\r\n" + piece + b"\r\n")
                    sent += 1
                    with cond:
                        # the head (and earlier pieces) plus this one have reached the backend
                        assert cond.wait_for(lambda: len(got) > 0 and got[-1] >= sent * 106, 10), got
            finally:
                lines = tracer.stop()
            conn.send(b"0\r\n\r\n")
            status, headers, body = conn.read_response()
            assert (status, body) == (200, b"done")
        to_backend = "->%s:%d]" % (LOCALHOST, backend.port)
        misses = [line for line in lines if to_backend in line and "EAGAIN" in line]
        assert misses == []
        reads = [line for line in lines if to_backend in line]
        assert reads == []  # nothing came from the backend while it was still reading the body
    finally:
        backend.close()


@pytest.mark.skipif(shutil.which("taskset") is None or os.cpu_count() < 2, reason="taskset and two CPUs are needed")
def test_default_workers_follow_the_cpus_the_balancer_may_run_on(agora_bin, testbackend_factory):
    """A balancer confined to one CPU (taskset here; a container's cpuset the same way) runs its
    workers on that CPU only: it must count one CPU and start one worker, not one per CPU of the
    machine, which would put two workers on one core. The one worker answers."""
    backend = testbackend_factory("b0")
    port = socket.socket()
    port.bind((LOCALHOST, 0))
    addr = "%s:%d" % (LOCALHOST, port.getsockname()[1])
    port.close()
    lb = start_process(["taskset", "-c", "0", agora_bin, "lb", "--admin-listen", "off", "--listen", addr,
                        "--backend", "http://%s:%d" % (LOCALHOST, backend.port)], "agora lb: listening on")
    try:
        assert "1 worker(s)" in lb.output(), lb.output()
        # the message comes before the listening socket is bound
        assert wait_for(lambda: accepts(int(addr.split(":")[1])), 10.0), lb.output()
        wait_health_checked(int(addr.split(":")[1]))
        status, _, body = http_request(LOCALHOST, int(addr.split(":")[1]), "GET", "/echo?one=1")
        assert status == 200 and b"/echo?one=1" in body, (status, body)
    finally:
        assert lb.stop(timeout=10.0) == 0, lb.output()


def test_pipelined_requests_each_get_their_own_answer_in_order(testbackend_factory, lb_factory):
    """60 requests pipelined in one write, GET and HEAD in turn, on one client connection: each
    answer read at the end of an iteration ends its exchange, which starts the client's next
    request at once (inside that deferred call) and queues its read on the same pooled backend
    connection. Every response comes in order, for its own request (the echoed target), HEAD
    without a body, and the connection stays usable."""
    backend = testbackend_factory("b0")
    lb = lb_factory([backend], workers=1)
    with RawConnection(lb.port) as conn:
        reqs = b"".join(b"%s /echo?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (b"HEAD" if i % 2 else b"GET", i)
                        for i in range(60))
        conn.send(reqs)
        for i in range(60):
            status, headers, body = conn.read_response(head=bool(i % 2))
            assert status == 200, (i, status)
            if i % 2 == 0:
                assert b"/echo?n=%d" % i in body, (i, body[:120])
        conn.send(b"GET /echo?last=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = conn.read_response()
        assert status == 200 and b"/echo?last=1" in body
        assert not conn.has_data(0.1)  # nothing more than the answers asked for
