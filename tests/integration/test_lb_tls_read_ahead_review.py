"""agora lb over TLS: a hostile reviewer's cases for reading ahead (src/http/tls.c, "Reading ahead").

- a TLS 1.3 KeyUpdate from the client among requests, and while the balancer's socket is full
  (OpenSSL 3 answers it with the next write, so a held read never waits on a write);
- a TCP half-close without a close_notify after a request (the BIO must report the socket's end);
- a body paused under backpressure, then a pipelined request and close_notify (nothing stranded).
"""

import ctypes
import socket
import ssl
import threading
import time

import pytest
from test_lb_tls import certs, client_ctx, tls_flags, tls_lb  # noqa: F401 (fixtures)
from test_lb_tls_read_ahead import MemTLS, answered

from helpers import LOCALHOST, free_port


_libssl = ctypes.CDLL("libssl.so.3")
_libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
_libssl.SSL_do_handshake.argtypes = [ctypes.c_void_p]
_libssl.SSL_get_version.argtypes = [ctypes.c_void_p]
_libssl.SSL_get_version.restype = ctypes.c_char_p


def key_update(c):
    """Queues a TLS 1.3 KeyUpdate (update_requested: the balancer must answer with its own) in the
    client's output, by calling OpenSSL on the SSL* of Python's SSLObject (the same libssl)."""
    if ssl.OPENSSL_VERSION_INFO[0] != 3:
        pytest.skip("Python's ssl is not on OpenSSL 3 (the libssl.so.3 this calls)")
    ptr = ctypes.c_void_p.from_address(id(c.obj._sslobj) + 24).value  # PySSLSocket: head, Socket, ssl
    assert _libssl.SSL_get_version(ptr) == b"TLSv1.3"
    assert _libssl.SSL_key_update(ptr, 1) == 1
    assert _libssl.SSL_do_handshake(ptr) == 1


def test_key_update_between_requests_in_one_write(tls_lb, certs):
    """A request, a KeyUpdate asking for the balancer's, two more requests, all in one write: the
    KeyUpdate is met while the read is held (the balancer must write its own then), and the
    records after it are under the new key. All three are answered."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    c.write(b"GET /echo?i=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    key_update(c)
    c.write(b"GET /echo?i=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    c.write(b"GET /echo?i=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    c.flush()
    got = c.read_until(answered(3), timeout=10)
    assert b'"target":"/echo?i=2"' in got
    c.close()


def test_key_update_while_the_socket_is_full_then_a_request(tls_lb, certs):
    """The client asks for a big response and does not read it, so the balancer's socket is
    full; then it sends a KeyUpdate (update_requested) and a second request in one write. Were
    OpenSSL to write its KeyUpdate from the read, that write would fail and the read stop before
    the request, leaving it in OpenSSL's buffer, unseen by the loop (OpenSSL 3 sends it with the
    next write instead). Once the client reads, the second request is answered."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    c.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    n = 32 * 1024 * 1024
    c.write(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    c.flush()
    time.sleep(1.0)
    key_update(c)
    c.write(b"GET /echo?after HTTP/1.1\r\nHost: x\r\n\r\n")
    c.flush()
    time.sleep(0.5)
    tail = read_tail(c, b'"target":"/echo?after"', timeout=30)
    assert b'"target":"/echo?after"' in tail
    c.close()


def read_tail(c, needle, timeout):
    """Reads decrypted bytes until needle appears in the last ones read; returns the last 64 KB."""
    return c.read_until(lambda tail: needle in tail, timeout=timeout, keep=65536)


def test_a_request_then_a_tcp_half_close_without_close_notify_is_answered(tls_lb, certs):
    """A request, then the client shuts its TCP sending side without a close_notify (a ragged end,
    which the balancer accepts: SSL_OP_IGNORE_UNEXPECTED_EOF) while the backend is still
    producing the answer: as over plain HTTP, the answer comes, then the balancer closes. The
    connection's BIO must report the end of the socket (BIO_CTRL_EOF) as OpenSSL's socket BIO
    does, or OpenSSL takes the end for an error and the balancer drops the request."""
    lb = tls_lb(workers=1)
    c = MemTLS(lb.tls_port, client_ctx(certs))
    c.write(b"GET /delay?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
    c.flush()
    time.sleep(0.1)  # the request is with the backend
    c.raw.shutdown(socket.SHUT_WR)
    got = c.read_until(lambda g: False, timeout=10)  # to the end of the stream
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:200]
    c.close()


@pytest.mark.parametrize("notify", [False, True])
@pytest.mark.parametrize("recsize", [16384, 37])
def test_a_paused_body_resumes_with_the_pipelined_request_and_close_notify(lb_factory, testbackend_factory, certs,
                                                                           notify, recsize):
    """A 3 MB body to a --serial backend busy with another request for 1.5 s, so the balancer
    pauses reading it, then a pipelined request and (with notify) the client's close_notify, all
    in one go with the TCP connection left open. Whatever OpenSSL read ahead before the pause is
    decrypted into the connection's buffer, not stranded: the body arrives whole once the backend
    reads, the second request is answered after it."""
    backend = testbackend_factory("S", "--serial")
    port = free_port()
    lb_factory([backend], "--tls-listen", "%s:%d" % (LOCALHOST, port), *tls_flags(certs), workers=1)
    hold = MemTLS(port, client_ctx(certs))
    hold.write(b"GET /delay?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    hold.flush()
    time.sleep(0.2)
    c = MemTLS(port, client_ctx(certs))
    n = 3 * 1024 * 1024 + 7
    c.write(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    body = bytes(n)
    chunks = []
    for off in range(0, n, recsize):
        c.write(body[off:off + recsize])
        if off % (256 * recsize) == 0:
            chunks.append(c.out.read())
    c.write(b"GET /echo?after HTTP/1.1\r\nHost: x\r\n\r\n")
    if notify:
        try:
            c.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # our close_notify is written
    chunks.append(c.out.read())
    sender = threading.Thread(target=c.raw.sendall, args=(b"".join(chunks),))
    sender.start()
    got = c.read_until(lambda g: b'"target":"/echo?after"' in g and g.endswith(b"}\n"), timeout=30)
    sender.join()
    assert b'{"received": %d, "chunked": false}\n' % n in got, got[-300:]
    assert b'"target":"/echo?after"' in got
    assert b"delayed 1500 ms" in hold.read_until(lambda g: b"delayed" in g)
    c.close()
    hold.close()
