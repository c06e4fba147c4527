"""agora lb: TLS termination on --tls-listen (issue 14 item 1).

Real clients: curl --http1.1 over TLS, `openssl s_client` (protocol versions, SNI, ALPN,
resumption with -sess_out/-sess_in) and Python's ssl module. Certificates are made here with the
`openssl` command (the expired one with python3-cryptography: `openssl req` cannot back-date).
Hostile clients: plain HTTP on the TLS port, a TLS hello on the plain port, garbage, a stalled
handshake (also 1,000 at once), a ClientHello and then nothing or a hang-up. SIGHUP reloads the
certificates under a loop of requests without one failure; a bad new pair is refused.
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from helpers import (API_PASSWORD, LOCALHOST, AgoraCluster, admin_token, free_port, http_request, metric,
                     parse_metrics, raise_fd_limit, start_agora_server, start_process, up_port_run, wait_for)
from helpers import OP_BINARY, OP_TEXT, WsClient, read_to_close, start_ws_backend, ws_accept

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60, **kw)


def make_cert(d, name, cn, sans, serial, key_type="ec"):
    """A self-signed certificate d/name.crt with key d/name.key (PEM). Returns (crt, key)."""
    crt, key = d / (name + ".crt"), d / (name + ".key")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" else ["-newkey", "rsa:2048"]
    run("openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj",
        "/CN=" + cn, "-set_serial", serial, "-addext", "subjectAltName=" + ",".join(sans))
    return crt, key


def make_dated_cert(d, name, not_before, not_after):
    """A certificate valid only between the two datetimes (python3-cryptography)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(7).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    crt, keyf = d / (name + ".crt"), d / (name + ".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return crt, keyf


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    c = {
        "a": make_cert(d, "a", "localhost", ["DNS:localhost", "DNS:a.test", "IP:127.0.0.1"], "0xA1"),
        "b": make_cert(d, "b", "b.test", ["DNS:b.test", "DNS:*.wild.test"], "0xB2", key_type="rsa"),
        "new": make_cert(d, "new", "localhost", ["DNS:localhost", "IP:127.0.0.1"], "0xC3"),
    }
    c["dir"] = d
    return c


def tls_flags(certs, *names):
    flags = []
    for n in names or ("a", "b"):
        flags += ["--tls-cert", certs[n][0], "--tls-key", certs[n][1]]
    return flags


@pytest.fixture
def tls_lb(lb_factory, testbackend_factory, certs):
    """start(*flags, names=("a", "b"), workers=2) -> balancer with .tls_port in front of backend A."""
    backend = testbackend_factory("A")

    def start(*flags, names=("a", "b"), workers=2):
        port = free_port()
        lb = lb_factory([backend], "--tls-listen", "%s:%d" % (LOCALHOST, port), *tls_flags(certs, *names),
                        *flags, workers=workers)
        lb.tls_port = port
        lb.backend = backend
        return lb

    return start


def client_ctx(certs, name="a", alpn=None):
    ctx = ssl.create_default_context(cafile=str(certs[name][0]))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_get(port, path, ctx, server_hostname="localhost", headers=None, timeout=5.0, method="GET", body=b""):
    """One request on a new TLS connection -> (status, headers dict (lower-case), body bytes)."""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            req = "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, path)
            if body:
                req += "Content-Length: %d\r\n" % len(body)
            req += "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
            s.sendall((req + "\r\n").encode() + body)
            data = read_to_close(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


def curl(*args):
    p = subprocess.run(["curl", "--http1.1", "-sS", "--max-time", "10"] + [str(a) for a in args],
                       capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def s_client(port, *args, stdin=b""):
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (LOCALHOST, port)] + [str(a) for a in args],
                       input=stdin, capture_output=True, timeout=20)
    return p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


def cert_serial(port, servername="localhost"):
    out = s_client(port, "-servername", servername, "-showcerts")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert m, out
    p = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0).encode(), capture_output=True,
                       timeout=10)
    return p.stdout.decode().strip()


def client_hello():
    """The bytes of a real TLS ClientHello (from Python's ssl over a memory BIO)."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def still_serves(lb, certs):
    assert curl("--cacert", certs["a"][0], "--resolve", "localhost:%d:127.0.0.1" % lb.tls_port,
                "https://localhost:%d/" % lb.tls_port) == (0, "hello from A\n", "")
    status, _, body = http_request(LOCALHOST, lb.port, "GET", "/")
    assert (status, body) == (200, b"hello from A\n")


# ---------------------------------------------------------------- answers

def test_curl_over_tls_gets_exact_answers(tls_lb, certs):
    lb = tls_lb()
    resolve = ["--cacert", certs["a"][0], "--resolve", "localhost:%d:127.0.0.1" % lb.tls_port]
    base = "https://localhost:%d" % lb.tls_port
    assert curl(*resolve, base + "/anything") == (0, "hello from A\n", "")
    rc, out, err = curl(*resolve, "-i", base + "/status?code=404")
    assert rc == 0 and out.startswith("HTTP/1.1 404 "), (out, err)
    # A POST body over TLS reaches the backend whole.
    rc, out, err = curl(*resolve, "--data-binary", "x" * 100000, base + "/echo")
    assert rc == 0, err
    assert json.loads(out)["body_length"] == 100000
    # A large response comes back whole.
    rc, out, err = curl(*resolve, base + "/bytes?n=3000000")
    assert rc == 0 and len(out) == 3000000, (len(out), err)
    # Keep-alive: two requests on one connection.
    rc, out, err = curl(*resolve, "-v", base + "/one", base + "/two")
    assert rc == 0 and out == "hello from A\nhello from A\n", (out, err)
    assert "Re-using existing connection" in err or "Reusing existing connection" in err, err
    # The balancer's own /health over TLS.
    assert curl(*resolve, base + "/health") == (0, "OK", "")
    still_serves(lb, certs)


def test_large_bodies_and_pipelining_over_tls(tls_lb, certs):
    """A 40 MB upload (the balancer pauses reading while the backend is behind: reads stop at
    their limits mid-record) and 50 pipelined requests in one TLS write, answered in order."""
    lb = tls_lb()
    ctx = client_ctx(certs)
    with socket.create_connection((LOCALHOST, lb.tls_port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            n = 40 * 1024 * 1024
            s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
            block = os.urandom(1 << 20)
            for _ in range(40):
                s.sendall(block)
            data = b""
            while not data.endswith(b"}\n"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:100]
            assert data.endswith(b'{"received": %d, "chunked": false}\n' % n), data[-100:]
            s.sendall(b"".join(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(49)) +
                      b"GET /echo?i=49 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_to_close(s)
    targets = re.findall(rb'"target":"(/echo\?i=\d+)"', data)
    assert targets == [b"/echo?i=%d" % i for i in range(50)], targets[:5]


def test_x_forwarded_proto_is_set_and_a_spoofed_one_replaced(tls_lb, certs):
    lb = tls_lb()
    ctx = client_ctx(certs)
    for spoof in (None, "http", "https"):
        hdrs = {"X-Forwarded-Proto": spoof} if spoof else {}
        status, _, body = https_get(lb.tls_port, "/echo", ctx, headers=hdrs)
        assert status == 200
        seen = [v for k, v in json.loads(body)["headers"] if k.lower() == "x-forwarded-proto"]
        assert seen == ["https"], (spoof, seen)
        status, _, body = http_request(LOCALHOST, lb.port, "GET", "/echo", headers=hdrs)
        seen = [v for k, v in json.loads(body)["headers"] if k.lower() == "x-forwarded-proto"]
        assert (status, seen) == (200, ["http"]), (spoof, seen)


# ---------------------------------------------------------------- protocol, SNI, ALPN, resumption

@pytest.mark.parametrize("version,accepted", [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True),
                                              ("-tls1_3", True)])
def test_protocol_versions(tls_lb, certs, version, accepted):
    lb = tls_lb()
    out = s_client(lb.tls_port, version, "-servername", "localhost",
                   "-CAfile", certs["a"][0], "-cipher", "DEFAULT:@SECLEVEL=0")
    if accepted:
        want = "New, TLSv1.3, Cipher is TLS_" if version == "-tls1_3" else "New, TLSv1.2, Cipher is ECDHE-"
        assert want in out and "Verify return code: 0 (ok)" in out, out
    else:
        # The server's alert 70 (protocol_version), no session.
        assert "New, (NONE), Cipher is (NONE)" in out and "alert protocol version" in out, out
    still_serves(lb, certs)


@pytest.mark.parametrize("servername,subject", [("localhost", "CN = localhost"), ("a.test", "CN = localhost"),
                                                ("b.test", "CN = b.test"), ("x.wild.test", "CN = b.test"),
                                                ("B.TEST", "CN = b.test"), ("deep.x.wild.test", "CN = localhost"),
                                                ("unknown.test", "CN = localhost")])
def test_sni_chooses_the_certificate(tls_lb, certs, servername, subject):
    lb = tls_lb()
    out = s_client(lb.tls_port, "-servername", servername)
    assert "subject=" + subject in out, out


def test_no_sni_gets_the_default_certificate(tls_lb, certs):
    lb = tls_lb()
    out = s_client(lb.tls_port, "-noservername")
    assert "subject=CN = localhost" in out, out


def test_alpn_http11(tls_lb, certs):
    # HTTP/2 is on by default (test_lb_h2.py): h2 when offered, http/1.1 otherwise.
    assert "ALPN protocol: h2" in s_client(tls_lb().tls_port, "-alpn", "http/1.1,h2")
    lb = tls_lb("--http2", "off")
    assert "ALPN protocol: http/1.1" in s_client(lb.tls_port, "-alpn", "h2,http/1.1")
    # --http2 off and only h2 offered: no protocol agreed (not an error), and HTTP/1.1 is spoken.
    out = s_client(lb.tls_port, "-alpn", "h2")
    assert "No ALPN negotiated" in out, out
    ctx = client_ctx(certs, alpn=["http/1.1"])
    with socket.create_connection((LOCALHOST, lb.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize("version,ticket", [("-tls1_2", True), ("-tls1_2", False), ("-tls1_3", True)])
def test_session_resumption(tls_lb, certs, tmp_path, version, ticket):
    """TLS 1.2 with tickets, TLS 1.2 without (the server's session cache) and TLS 1.3: the second
    connection resumes. Several resumptions with two workers: the tickets' keys and the cache are
    the process's, whichever worker accepts."""
    lb = tls_lb(workers=2)
    sess = tmp_path / "sess.pem"
    extra = [] if ticket else ["-no_ticket"]
    req = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = s_client(lb.tls_port, version, *extra, "-sess_out", sess, "-ign_eof", stdin=req)
    assert "New, TLSv1." in out and "HTTP/1.1 200 OK" in out, out
    # A ticket (lifetime = the key rotation period) exactly when the client takes tickets.
    assert ("TLS session ticket lifetime hint: 3600 (seconds)" in out) == ticket, out
    for _ in range(4):
        out = s_client(lb.tls_port, version, *extra, "-sess_in", sess, "-ign_eof", stdin=req)
        assert "Reused, TLSv1." in out and "HTTP/1.1 200 OK" in out, out


# ---------------------------------------------------------------- hostile clients

def test_plain_http_on_the_tls_port_is_closed(tls_lb, certs):
    lb = tls_lb()
    with socket.create_connection((LOCALHOST, lb.tls_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096) == b""  # a clean close (FIN), no answer in plain text
    still_serves(lb, certs)


def test_tls_hello_on_the_plain_port_is_answered_400(tls_lb, certs):
    lb = tls_lb()
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        s.sendall(client_hello())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data[:200]
    assert b"Connection: close\r\n" in data
    still_serves(lb, certs)


def test_garbage_on_the_tls_port(tls_lb, certs):
    lb = tls_lb()
    for blob in (os.urandom(4096), b"\x16\x03\x01\xff\xff" + os.urandom(100), b"\x00" * 10000):
        with socket.create_connection((LOCALHOST, lb.tls_port), timeout=5) as s:
            s.sendall(blob)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            # At most a TLS alert record (content type 21), then the close.
            assert data == b"" or data[0] == 21, data[:20]
    still_serves(lb, certs)


def test_stalled_handshake_is_closed_at_the_deadline(tls_lb, certs):
    lb = tls_lb("--tls-handshake-timeout", "1s")
    for send in (b"", client_hello()[:20], client_hello()):
        with socket.create_connection((LOCALHOST, lb.tls_port), timeout=10) as s:
            s.sendall(send)
            t0 = time.monotonic()
            data = read_to_close(s)
            took = time.monotonic() - t0
            assert 0.8 <= took <= 3.0, (send[:10], took)
            if len(send) < 30:
                assert data == b""  # nothing was said to a client that said nothing whole
    still_serves(lb, certs)


def test_client_hello_then_hang_up(tls_lb, certs):
    lb = tls_lb()
    for _ in range(20):
        s = socket.create_connection((LOCALHOST, lb.tls_port), timeout=5)
        s.sendall(client_hello())
        s.close()
    for _ in range(5):  # and one that resets
        s = socket.create_connection((LOCALHOST, lb.tls_port), timeout=5)
        s.sendall(client_hello())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    still_serves(lb, certs)
    # None of them lingers: the balancer has closed them all.
    assert wait_for(lambda: _lb_client_conns(lb) == 0, 5), _lb_client_conns(lb)


def _lb_client_conns(lb):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( sport = :%d )" % lb.tls_port],
                         capture_output=True, timeout=10).stdout.decode()
    return len([line for line in out.splitlines() if line.strip()])


def test_failed_handshakes_are_counted(tls_lb, certs):
    admin = free_port()
    lb = tls_lb("--tls-handshake-timeout", "1s", "--admin-listen", "%s:%d" % (LOCALHOST, admin))

    def failures():
        _, _, body = http_request(LOCALHOST, admin, "GET", "/metrics",
                                  headers={"Authorization": "Bearer " + admin_token(admin)})
        return metric(parse_metrics(body.decode()), "agora_lb_tls_handshake_failures_total")

    assert failures() == 0
    https_get(lb.tls_port, "/", client_ctx(certs))  # a good one: not counted
    for blob in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(600)):
        with socket.create_connection((LOCALHOST, lb.tls_port), timeout=5) as s:
            s.sendall(blob)
            try:
                s.recv(100)
            except ConnectionResetError:
                pass
    out = s_client(lb.tls_port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")  # no common protocol
    assert "alert protocol version" in out
    with socket.create_connection((LOCALHOST, lb.tls_port), timeout=5) as s:  # the deadline
        assert s.recv(100) == b""
    assert wait_for(lambda: failures() == 4, 5), failures()


def test_a_thousand_stalled_handshakes_do_not_stop_others(tls_lb, certs):
    raise_fd_limit(4096)
    lb = tls_lb("--tls-handshake-timeout", "3s", "--max-conns-per-ip", "0", workers=2)
    stalled = []
    try:
        for i in range(1000):
            s = socket.create_connection((LOCALHOST, lb.tls_port), timeout=5)
            if i % 2:
                s.sendall(client_hello()[:50])  # half of them mid-hello
            stalled.append(s)
        # Others are served meanwhile, promptly.
        ctx = client_ctx(certs)
        t0 = time.monotonic()
        for _ in range(20):
            assert https_get(lb.tls_port, "/", ctx)[::2] == (200, b"hello from A\n")
        assert time.monotonic() - t0 < 5.0
        still_serves(lb, certs)
        # At the deadline every stalled one is closed by the balancer.
        deadline = time.monotonic() + 10
        for s in stalled:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert s.recv(100) == b""
    finally:
        for s in stalled:
            s.close()
    still_serves(lb, certs)


# ---------------------------------------------------------------- redirect, HSTS

def test_redirect_https_and_hsts(tls_lb, certs):
    lb = tls_lb("--redirect-https", "on", "--hsts", "31536000")
    status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/a/b?c=1&d=2",
                                         headers={"Host": "example.test:8000"})
    assert (status, headers["location"], body) == (308, "https://example.test:%d/a/b?c=1&d=2" % lb.tls_port, b"")
    status, headers, _ = http_request(LOCALHOST, lb.port, "POST", "/form", headers={"Host": "[::1]:80"},
                                      body=b"x=1")
    assert (status, headers["location"]) == (308, "https://[::1]:%d/form" % lb.tls_port)
    assert "strict-transport-security" not in headers
    # Keep-alive survives a redirect with a body: two answers on one connection.
    with socket.create_connection((LOCALHOST, lb.port), timeout=5) as s:
        s.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /q HTTP/1.1\r\nHost: h\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 308 Permanent Redirect\r\n") == 2, data
    assert b"Location: https://h:%d/p\r\n" % lb.tls_port in data
    assert b"Location: https://h:%d/q\r\n" % lb.tls_port in data
    # The balancer's own /health stays on plain HTTP (monitors), without HSTS.
    status, headers, body = http_request(LOCALHOST, lb.port, "GET", "/health")
    assert (status, body, "strict-transport-security" in headers) == (200, b"OK", False)
    # Over TLS: proxied, with HSTS.
    status, headers, body = https_get(lb.tls_port, "/x", client_ctx(certs))
    assert (status, body, headers["strict-transport-security"]) == (200, b"hello from A\n", "max-age=31536000")


# ---------------------------------------------------------------- start errors

def start_error(agora_bin, *flags):
    port, tport = free_port(), free_port()
    p = subprocess.run([str(agora_bin), "lb", "--listen", "%s:%d" % (LOCALHOST, port), "--admin-listen", "off",
                        "--tls-listen", "%s:%d" % (LOCALHOST, tport)] + [str(f) for f in flags],
                       capture_output=True, timeout=20)
    return p.returncode, p.stderr.decode()


def test_start_errors(agora_bin, certs, tmp_path):
    a_crt, a_key = certs["a"]
    b_crt, b_key = certs["b"]
    missing = tmp_path / "missing.crt"
    rc, err = start_error(agora_bin, "--tls-cert", missing, "--tls-key", a_key)
    assert rc == 1 and "agora lb: TLS certificate %s: cannot read: No such file or directory\n" % missing in err, err
    rc, err = start_error(agora_bin, "--tls-cert", a_crt, "--tls-key", missing)
    assert rc == 1 and "agora lb: TLS key %s: cannot read: No such file or directory\n" % missing in err, err
    rc, err = start_error(agora_bin, "--tls-cert", a_crt, "--tls-key", b_key)
    assert rc == 1 and "agora lb: TLS key %s does not match certificate %s\n" % (b_key, a_crt) in err, err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    rc, err = start_error(agora_bin, "--tls-cert", garbage, "--tls-key", a_key)
    assert rc == 1 and "agora lb: TLS certificate %s: not a PEM certificate (" % garbage in err, err
    rc, err = start_error(agora_bin, "--tls-cert", a_crt, "--tls-key", garbage)
    assert rc == 1 and "agora lb: TLS key %s: not a PEM private key without a passphrase (" % garbage in err, err
    utc = datetime.timezone.utc
    exp_crt, exp_key = make_dated_cert(tmp_path, "expired", datetime.datetime(2020, 1, 1, tzinfo=utc),
                                       datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=utc))
    rc, err = start_error(agora_bin, "--tls-cert", exp_crt, "--tls-key", exp_key)
    assert rc == 1 and "agora lb: TLS certificate %s expired on 2020-01-02 03:04:05 UTC\n" % exp_crt in err, err
    fut_crt, fut_key = make_dated_cert(tmp_path, "future", datetime.datetime(2090, 1, 1, tzinfo=utc),
                                       datetime.datetime(2091, 1, 1, tzinfo=utc))
    rc, err = start_error(agora_bin, "--tls-cert", fut_crt, "--tls-key", fut_key)
    assert rc == 1 and "agora lb: TLS certificate %s is not valid before 2090-01-01 00:00:00 UTC\n" % fut_crt in err
    rc, err = start_error(agora_bin, "--tls-cert", a_crt)
    assert rc == 1 and "agora lb: tls-cert and tls-key come in pairs: 1 certificate(s), 0 key(s)\n" in err, err
    rc, err = start_error(agora_bin)
    assert rc == 1 and "agora lb: tls-listen needs a certificate and its key (--tls-cert FILE --tls-key FILE)\n" in err
    # Expired as the second certificate too: every pair is checked.
    rc, err = start_error(agora_bin, "--tls-cert", a_crt, "--tls-key", a_key, "--tls-cert", exp_crt, "--tls-key",
                          exp_key)
    assert rc == 1 and "expired on 2020-01-02 03:04:05 UTC" in err, err
    p = subprocess.run([str(agora_bin), "lb", "--listen", "%s:%d" % (LOCALHOST, free_port()), "--admin-listen", "off",
                        "--hsts", "60"], capture_output=True, timeout=20)
    assert p.returncode == 1
    assert "agora lb: tls-cert, tls-key, redirect-https and hsts need tls-listen\n" in p.stderr.decode()


# ---------------------------------------------------------------- SIGHUP reload

@pytest.fixture
def live_lb(lb_factory, testbackend_factory, certs, tmp_path):
    backend = testbackend_factory("A")
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(certs["a"][0], crt)
    shutil.copy(certs["a"][1], key)
    port = free_port()
    lb = lb_factory([backend], "--tls-listen", "%s:%d" % (LOCALHOST, port), "--tls-cert", crt, "--tls-key", key,
                    workers=2)
    lb.tls_port = port
    lb.crt, lb.key = crt, key
    return lb


def sighup(lb, text, count):
    lb.popen.send_signal(signal.SIGHUP)
    assert wait_for(lambda: lb.output().count(text) >= count, 5), lb.output()


def test_certificates_reload_on_sighup_without_a_failed_request(live_lb, certs):
    lb = live_lb
    assert cert_serial(lb.tls_port) == "serial=A1"
    # An open keep-alive connection made with the old certificate keeps working after the reload.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    kept = ctx.wrap_socket(socket.create_connection((LOCALHOST, lb.tls_port), timeout=5), server_hostname="localhost")
    kept.sendall(b"GET /k1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).endswith(b"hello from A\n")

    stop = threading.Event()
    results = {"ok": 0, "failed": []}

    def loop():
        while not stop.is_set():
            try:
                status, _, body = https_get(lb.tls_port, "/", ctx)
                if (status, body) == (200, b"hello from A\n"):
                    results["ok"] += 1
                else:
                    results["failed"].append((status, body[:100]))
            except Exception as err:  # noqa: BLE001 - every failure counts
                results["failed"].append(repr(err))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        before = results["ok"]
        # A good new pair: loaded.
        shutil.copy(certs["new"][0], lb.crt)
        shutil.copy(certs["new"][1], lb.key)
        sighup(lb, "agora lb: reload: TLS certificates loaded (1)", 1)
        time.sleep(0.5)
        # A bad one (the key of another certificate): refused with a log line, the good one stays.
        shutil.copy(certs["b"][1], lb.key)
        sighup(lb, "agora lb: reload: keeping the running TLS certificates: TLS key %s does not match certificate "
               "%s" % (lb.key, lb.crt), 1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert results["failed"] == [], results["failed"][:5]
    assert results["ok"] > before > 10, results
    assert cert_serial(lb.tls_port) == "serial=C3"
    kept.sendall(b"GET /k2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).endswith(b"hello from A\n")
    kept.close()


# ---------------------------------------------------------------- the web server's Secure cookie

def test_session_cookie_is_secure_over_tls_only(agora_bin, certs, tmp_path):
    port = free_port()
    cluster = AgoraCluster.start(agora_bin, tmp_path, servers=1,
                                 lb_args=["--tls-listen", "%s:%d" % (LOCALHOST, port)] + tls_flags(certs, "a"))
    direct = None
    try:
        username, _ = cluster.create_account("tlscookie")
        login = json.dumps({"username": username, "password": API_PASSWORD}).encode()
        json_type = {"Content-Type": "application/json"}
        # Through the TLS listener: Secure.
        status, headers, _ = https_get(port, "/api/v1/sessions", client_ctx(certs), method="POST", body=login,
                                       headers=json_type)
        assert status == 200
        assert re.fullmatch(r"agora_token=[^;]+; HttpOnly; SameSite=Strict; Path=/; Secure", headers["set-cookie"])
        # Through the plain listener, even with a spoofed X-Forwarded-Proto: not Secure.
        for extra in ({}, {"X-Forwarded-Proto": "https"}):
            status, headers, _ = http_request(LOCALHOST, cluster.lb.port, "POST", "/api/v1/sessions", body=login,
                                              headers=dict(json_type, **extra))
            assert status == 200
            assert re.fullmatch(r"agora_token=[^;]+; HttpOnly; SameSite=Strict; Path=/", headers["set-cookie"])
        # Straight to a server that does not trust this peer: a client's X-Forwarded-Proto is ignored.
        direct = start_agora_server(agora_bin, cluster.db, extra_args=AgoraCluster.SERVER_ARGS +
                                    ("--trusted-proxy", "10.9.9.9"))
        status, headers, _ = http_request(LOCALHOST, direct.port, "POST", "/api/v1/sessions", body=login,
                                          headers=dict(json_type, **{"X-Forwarded-Proto": "https"}))
        assert status == 200
        assert re.fullmatch(r"agora_token=[^;]+; HttpOnly; SameSite=Strict; Path=/", headers["set-cookie"])
    finally:
        complaints = cluster.stop()
        if direct:
            direct.stop()
    assert complaints == []


# ---------------------------------------------------------------- agora up serves HTTPS too

def test_agora_up_makes_a_self_signed_certificate_and_serves_https(agora_bin, tmp_path):
    data = tmp_path / "data"
    base = up_port_run(1)
    argv = [agora_bin, "up", "--listen", "%s:%d" % (LOCALHOST, base), "--data", data, "--servers", "1",
            "--lb-workers", "1"]
    up = start_process(argv, ready_text="agora is up", timeout=30)
    try:
        crt, key = data / "tls-cert.pem", data / "tls-key.pem"
        assert "agora up: made a self-signed certificate for localhost: %s (key %s, mode 0600)" % (crt, key) \
            in up.output()
        assert wait_for(lambda: "https: https://localhost:%d/  (self-signed)" % (base + 443) in up.output(), 5), \
            up.output()
        assert os.stat(key).st_mode & 0o777 == 0o600
        text = run("openssl", "x509", "-in", crt, "-noout", "-subject", "-ext", "subjectAltName").stdout.decode()
        assert "subject=CN = localhost" in text and "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" \
            in text, text
        serial = run("openssl", "x509", "-in", crt, "-noout", "-serial").stdout
        # The UI over HTTPS, verified against the certificate made, and the same over HTTP.
        resolve = ["--cacert", crt, "--resolve", "localhost:%d:127.0.0.1" % (base + 443)]
        assert wait_for(lambda: curl(*resolve, "-o", "/dev/null", "-w", "%{http_code}",
                                     "https://localhost:%d/" % (base + 443))[1] == "200", 15)
        rc, page, err = curl(*resolve, "https://localhost:%d/" % (base + 443))
        status, _, plain = http_request(LOCALHOST, base, "GET", "/")
        assert rc == 0 and status == 200 and page.encode() == plain and b"<html" in plain.lower(), err
    finally:
        assert up.stop(timeout=20) == 0, up.output()
    # A second run keeps the certificate (browsers that accepted it keep working).
    up = start_process(argv, ready_text="agora is up", timeout=30)
    try:
        assert "made a self-signed certificate" not in up.output()
        assert run("openssl", "x509", "-in", crt, "-noout", "-serial").stdout == serial
    finally:
        assert up.stop(timeout=20) == 0, up.output()
    # --tls-listen off: plain HTTP only.
    up = start_process(argv + ["--tls-listen", "off"], ready_text="agora is up", timeout=30)
    try:
        assert "https:" not in up.output()
        assert curl("-k", "https://127.0.0.1:%d/" % (base + 443))[0] != 0
    finally:
        assert up.stop(timeout=20) == 0, up.output()


# ---------------------------------------------------------------- upgrades pass both listeners

def test_upgrade_passes_the_tls_listener_too(agora_bin, testbackend_factory, certs, tmp_path):
    backend = testbackend_factory("A")
    sock = tmp_path / "upgrade.sock"
    port, tport = free_port(), free_port()
    args = [agora_bin, "lb", "--admin-listen", "off", "--workers", "2", "--backend", "http://%s:%d" % (LOCALHOST,
            backend.port), "--listen", "%s:%d" % (LOCALHOST, port), "--tls-listen", "%s:%d" % (LOCALHOST, tport),
            "--upgrade-socket", sock] + tls_flags(certs, "a")
    old = start_process(args, "agora lb: listening on", 10)
    new = None
    try:
        assert wait_for(lambda: sock.exists(), 5)
        ctx = client_ctx(certs)
        assert https_get(tport, "/", ctx)[::2] == (200, b"hello from A\n")
        new = start_process(args + ["--upgrade-from", sock], "agora lb: ", 10)
        assert new.wait_for_output("serving the listening sockets of the previous process", 10), new.output()
        # The old process says so after the new one has taken the sockets: wait for it.
        assert old.wait_for_output("upgrade: passed 4 listening socket(s) to a new process", 10), old.output()
        assert old.wait(timeout=15) == 0, old.output()
        for _ in range(10):  # both listeners are the new process's now
            assert https_get(tport, "/", ctx)[::2] == (200, b"hello from A\n")
            assert http_request(LOCALHOST, port, "GET", "/")[::2] == (200, b"hello from A\n")
        # A successor whose listeners differ (no TLS) is refused and the running one goes on.
        plain = [a for a in args if a not in ("--tls-listen", "%s:%d" % (LOCALHOST, tport))]
        plain = plain[:plain.index("--tls-cert")]
        sock2 = tmp_path / "upgrade2.sock"
        p = subprocess.run([str(a) for a in plain] + ["--upgrade-socket", sock2, "--upgrade-from", sock],
                           capture_output=True, timeout=20)
        assert p.returncode == 1
        assert ("agora lb: upgrade: the listening sockets taken are not those of this configuration (%s:%d); the "
                "running process goes on\n" % (LOCALHOST, port)) in p.stderr.decode(), p.stderr.decode()
        assert new.poll() is None
        assert https_get(tport, "/", ctx)[::2] == (200, b"hello from A\n")
    finally:
        old.stop()
        if new:
            assert new.stop() == 0, new.output()


def test_websocket_over_tls(certs, lb_factory, tmp_path):
    """A WebSocket tunnel through the TLS listener: the 101, frames both ways (1 MiB each way),
    and the backend's close ends the client's side with a TLS close_notify, not a bare FIN."""
    backend = start_ws_backend("--record", tmp_path / "ws.jsonl")
    try:
        port = free_port()
        lb = lb_factory([backend], "--tls-listen", "%s:%d" % (LOCALHOST, port), *tls_flags(certs, "a"))
        with WsClient(port, "/ws", ssl_ctx=client_ctx(certs)) as c:
            status, headers = c.handshake()
            assert status == 101
            assert [v for k, v in headers if k.lower() == "sec-websocket-accept"] == [ws_accept(c.key)]
            c.send(OP_TEXT, b"hello over tls")
            assert c.recv() == (OP_TEXT, b"hello over tls")
            big = os.urandom(1024 * 1024)
            c.send(OP_BINARY, big)
            assert c.recv() == (OP_BINARY, big)
            c.send(OP_TEXT, b"bye")  # the echo backend closes
            assert c.ends(5) == "eof"
        assert lb.poll() is None
    finally:
        backend.stop()
