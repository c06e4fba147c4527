"""review12: --response-timeout bounds the wait for the response head, not the client's upload.

A client whose request body takes longer to arrive than --response-timeout (a large upload on a
slow link) was answered 504 "Backend server timed out" in the middle of its upload, by a backend
that had not even been given the whole request yet: the head deadline was counted from the
request head's arrival. It now counts from the moment the request is all in (as the try timer
does), and a body still arriving pushes it on.
"""

import socket
import time

from helpers import LOCALHOST, record_lines


def test_an_upload_longer_than_the_response_timeout_is_not_a_504(testbackend_factory, lb_factory, tmp_path):
    rec = tmp_path / "b.txt"
    good = testbackend_factory("B", "--record", str(rec))
    lb = lb_factory([good], "--response-timeout", "1s")
    sock = socket.create_connection((LOCALHOST, lb.port), timeout=10)
    sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
    for piece in (b"a", b"b", b"c", b"d", b"e"):
        time.sleep(0.4)  # 2 s in all, twice the response timeout; each gap well under it
        try:
            sock.sendall(piece)
        except OSError:
            break
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert [l for l in record_lines(rec) if not l.startswith("GET /health")] == ["PUT /upload"]
