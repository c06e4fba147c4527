"""A raw HTTP/2 client for hostile-input tests: frames made by hand (struct.pack), header blocks
with python3-hpack, so a test can send what a polite library never would (floods, bombs, bad
pseudo-headers, resets) and read back exactly what the server answered, frame by frame."""

import socket
import ssl
import struct
import time

from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def tls_socket(port, ca, alpn=("h2",), timeout=10.0, source=None):
    """source: the client's address (e.g. 127.0.0.2), default the kernel's choice (127.0.0.1)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(source, 0) if source else None)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall between small frames
    return ctx.wrap_socket(raw, server_hostname="localhost")


class H2:
    """One HTTP/2 connection over TLS. Frames read are kept in .frames as (type, flags, sid,
    payload); responses are decoded per stream in .streams[sid] = {"headers": [...], "data": b"",
    "ended": bool, "reset": code or None}; .goaway = (last_sid, code) once a GOAWAY came; .closed
    once the server closed the connection."""

    def __init__(self, port, ca, settings=b"", timeout=10.0, preface=True, source=None):
        self.sock = tls_socket(port, ca, timeout=timeout, source=source)
        assert self.sock.selected_alpn_protocol() == "h2"
        self.enc, self.dec = Encoder(), Decoder()
        self.dec.max_allowed_table_size = 65536
        self.buf = b""
        self.frames = []
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.next_id = 1
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def block(self, headers):
        return self.enc.encode(headers)

    def request(self, path="/", method="GET", body=None, extra=(), end=True, sid=None):
        """Sends a request (HEADERS, then DATA when body is not None). Returns its stream id."""
        if sid is None:
            sid = self.next_id
        self.next_id = max(self.next_id, sid + 2)
        hdrs = [(":method", method), (":scheme", "https"), (":path", path), (":authority", "localhost")] + list(extra)
        blk = self.block(hdrs)
        es = END_STREAM if end and body is None else 0
        parts = [blk[i:i + 16384] for i in range(0, max(len(blk), 1), 16384)]
        out = frame(HEADERS, es | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0])
        for i, part in enumerate(parts[1:]):
            out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 2 else 0, sid, part)
        if body is not None:
            for i in range(0, max(len(body), 1), 16384):
                last = i + 16384 >= len(body)
                out += frame(DATA, END_STREAM if (last and end) else 0, sid, body[i:i + 16384])
        self.send(out)
        return sid

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            d = b""
        if not d:
            self.closed = True
            return False
        self.buf += d
        while len(self.buf) >= 9:
            n = struct.unpack(">I", b"\0" + self.buf[:3])[0]
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
            payload = self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]
            self._on_frame(ftype, flags, sid, payload)
        return True

    def _on_frame(self, ftype, flags, sid, payload):
        self.frames.append((ftype, flags, sid, payload))
        st = self.streams.setdefault(sid, {"headers": [], "data": b"", "ended": False, "reset": None}) if sid else None
        if ftype == SETTINGS and not flags & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            self.goaway = struct.unpack(">II", payload[:8])
            self.goaway = (self.goaway[0] & 0x7FFFFFFF, self.goaway[1])
        elif ftype == HEADERS:
            st["headers"] += self.dec.decode(payload)  # no padding or priority from this server
            st["ended"] = st["ended"] or bool(flags & END_STREAM)
        elif ftype == DATA:
            st["data"] += payload
            st["ended"] = st["ended"] or bool(flags & END_STREAM)
            if payload:  # give the window back at once
                self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(payload))) +
                          frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(payload))))
        elif ftype == RST_STREAM:
            st["reset"] = struct.unpack(">I", payload)[0]

    def wait(self, pred, timeout=10.0):
        """Reads frames until pred(self) is true, the connection closes or timeout. Returns pred(self)."""
        end = time.monotonic() + timeout
        while not pred(self) and not self.closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            self._read(min(left, 1.0))
        return pred(self)

    def wait_stream(self, sid, timeout=10.0):
        """Waits for stream sid to end or be reset -> (status or None, data, reset code or None)."""
        self.wait(lambda c: sid in c.streams and (c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None),
                  timeout)
        st = self.streams.get(sid, {"headers": [], "data": b"", "reset": None})
        status = dict(st["headers"]).get(":status")
        return (int(status) if status else None), st["data"], st["reset"]

    def wait_goaway(self, timeout=10.0):
        """Waits for a GOAWAY and then the close -> (last stream id, error code) or None."""
        self.wait(lambda c: c.goaway is not None, timeout)
        self.wait(lambda c: False, 2.0) if self.goaway else None
        return self.goaway
