"""WebSocket (RFC 6455) for the balancer's tunnel tests: a client over a raw socket, and an echo
backend run as a process of its own (this file is also that program).

    ws_accept(key)                        the Sec-WebSocket-Accept value for a Sec-WebSocket-Key
    frame(opcode, payload, mask=True)     one frame's bytes (masked as a client must)
    WsClient(port, path, headers)         connect, send the upgrade request; .handshake() reads the
                                          101; .send(op, data), .recv() -> (op, data), .close_frame()
    start_ws_backend(*args)               this file as a backend process -> Process with .port

The backend (python3 websocket.py --port 0 [--record FILE]): asyncio, so a thousand idle tunnels
cost it nothing. Each request head is recorded (--record: one JSON line per request: method,
target, the Upgrade and Connection values, body length) so that tests can see exactly what
reached it. Answers:
    GET /health                      200 "ok"
    an upgrade to websocket on /ws   101 with the right Sec-WebSocket-Accept, then echo: each
                                     data frame comes back with its opcode and payload (unmasked);
                                     ping -> pong; close -> close echoed, then the connection ends.
                                     A text message "bye" makes it close the TCP connection without
                                     a close frame; at the client's end of stream it sends a text
                                     frame "eof", then ends its side.
        ?greet=1                     a text frame "hello" right after the 101 (same write)
        ?status=N                    no upgrade: an ordinary N response, body "no upgrade: N\\n"
        ?protocol=P                  101 naming protocol P instead of websocket
        ?pause_ms=N                  reads nothing of the tunnel for N ms after the 101 (a slow reader)
        ?halfclose=1                 ends its side right after the 101 and reads nothing for
                                     pause_ms; then reads to the end and records {"drained": bytes}
        ?flood=N                     at the client's end of stream, sends one binary frame of N
                                     bytes instead of "eof", then ends
    anything else                    200 "plain METHOD TARGET\\n" (keep-alive)
Every HTTP answer has X-Backend: ws:PORT.
Standard library only.
"""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def ws_accept(key):
    """Sec-WebSocket-Accept for the client's key (RFC 6455 §4.2.2)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def _xor(data, mask):
    if not data:
        return b""
    n = len(data)
    reps = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(reps, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", mask=True, fin=True):
    """One frame: FIN (or not), opcode, length, and the payload masked with a random key when mask."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return head + key + _xor(payload, key)
    return head + payload


def _parse_head(raw):
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return first, headers


def _get(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


class WsClient:
    """A WebSocket client over a raw socket: WsClient(port, "/ws") sends the upgrade request
    (extra headers may replace or add fields; headers=None values drop one); .handshake() reads the
    response head -> (status, headers as a list of (name, value)). Then send/recv frames. With
    ssl_ctx (an ssl.SSLContext) it talks TLS, and ends() says "eof" only after a close_notify."""

    def __init__(self, port, path="/ws", headers=None, host="127.0.0.1", timeout=10.0, send=True, ssl_ctx=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_ctx is not None:  # over TLS; an end of stream without close_notify raises
            self.sock = ssl_ctx.wrap_socket(self.sock, server_hostname="localhost", suppress_ragged_eofs=False)
        self.sock.settimeout(timeout)
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.buf = b""
        fields = {"Host": "t", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": self.key,
                  "Sec-WebSocket-Version": "13"}
        for k, v in (headers or {}).items():
            fields[k] = v
        self.request = ("GET %s HTTP/1.1\r\n" % path + "".join(
            "%s: %s\r\n" % (k, v) for k, v in fields.items() if v is not None) + "\r\n").encode()
        if send:
            self.sock.sendall(self.request)

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        first, headers = _parse_head(raw)
        return int(first.split()[1]), headers

    def read_body(self, headers):
        n = int(_get(headers, "content-length") or 0)
        return self._take(n)

    def send(self, opcode, payload=b"", fin=True):
        self.sock.sendall(frame(opcode, payload, mask=True, fin=fin))

    def recv(self):
        """The next frame -> (opcode, payload); EOFError when the connection ends."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        key = self._take(4) if b1 & 0x80 else None
        data = self._take(n)
        return b0 & 0x0F, _xor(data, key) if key else data

    def ends(self, timeout=5.0):
        """How the connection goes on within timeout, with nothing buffered before: "eof" (an
        orderly end), "reset", "open" (still open, nothing came) or "data" (bytes came)."""
        if self.buf:
            return "data"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "open"
        return "eof" if data == b"" else "data"

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_ws_backend(*args, timeout=10.0):
    """Starts this file as a backend process on 127.0.0.1 (a port of its choosing) -> Process with
    .port and .name."""
    from .processes import start_process

    proc = start_process([sys.executable, os.path.abspath(__file__), "--port", "0", *map(str, args)],
                         "listening on", timeout)
    line = next(l for l in proc.output().splitlines() if l.startswith("listening on "))
    proc.port = int(line.rsplit(":", 1)[1])
    proc.name = "ws:%d" % proc.port
    return proc


# ---------------------------------------------------------------- the backend


class _Backend:
    def __init__(self, record):
        self.record = open(record, "a", buffering=1) if record else None
        self.name = b"ws:0"

    def log(self, doc):
        if self.record:
            self.record.write(json.dumps(doc) + "\n")

    async def body(self, reader, headers):
        if (_get(headers, "transfer-encoding") or "").lower() == "chunked":
            total = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return total
                total += await reader.readexactly(size)
                await reader.readexactly(2)
        n = int(_get(headers, "content-length") or 0)
        return await reader.readexactly(n) if n else b""

    async def serve(self, reader, writer):
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                first, headers = _parse_head(raw[:-4])
                method, target, _ = first.split(" ", 2)
                body = await self.body(reader, headers)
                upgrade, connection = _get(headers, "upgrade"), _get(headers, "connection")
                if target != "/health":
                    self.log({"method": method, "target": target, "upgrade": upgrade, "connection": connection,
                              "body": len(body), "headers": headers})
                path, _, query = target.partition("?")
                params = dict(p.partition("=")[::2] for p in query.split("&") if p)
                if path == "/health":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                elif path == "/ws" and upgrade and "status" not in params:
                    key = _get(headers, "sec-websocket-key") or ""
                    proto = params.get("protocol", "websocket")
                    out = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\n\r\n" % (proto, ws_accept(key))).encode()
                    if params.get("greet"):
                        out += frame(OP_TEXT, b"hello", mask=False)
                    writer.write(out)
                    await writer.drain()
                    if params.get("halfclose"):
                        writer.write_eof()
                        writer.transport.pause_reading()  # nothing into asyncio's buffer meanwhile
                    if params.get("pause_ms"):
                        await asyncio.sleep(int(params["pause_ms"]) / 1000.0)
                    if params.get("halfclose"):
                        writer.transport.resume_reading()
                    if params.get("halfclose"):
                        n = 0
                        while True:
                            data = await reader.read(1 << 16)
                            if not data:
                                break
                            n += len(data)
                        self.log({"drained": n})
                        return
                    await self.echo(reader, writer, int(params.get("flood", 0)))
                    return
                elif path == "/ws" and "status" in params:
                    status = int(params["status"])
                    text = b"no upgrade: %d\n" % status
                    writer.write(b"HTTP/1.1 %d Whatever\r\nX-Backend: %s\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, self.name, len(text), text))
                else:
                    text = ("plain %s %s\n" % (method, target)).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: %d\r\n\r\n%s"
                                 % (self.name, len(text), text))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def echo(self, reader, writer, flood=0):
        while True:
            try:
                b0, b1 = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                # The client ended its stream: one last frame, then end ours.
                writer.write(frame(OP_BINARY, b"\x5a" * flood, mask=False) if flood else frame(OP_TEXT, b"eof", mask=False))
                await writer.drain()
                writer.write_eof()
                await asyncio.sleep(0.5)
                return
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            key = await reader.readexactly(4) if b1 & 0x80 else None
            data = await reader.readexactly(n)
            if key:
                data = _xor(data, key)
            op = b0 & 0x0F
            if op == OP_PING:
                writer.write(frame(OP_PONG, data, mask=False))
            elif op == OP_CLOSE:
                writer.write(frame(OP_CLOSE, data, mask=False))
                await writer.drain()
                return
            elif op == OP_TEXT and data == b"bye":
                writer.close()  # no close frame: the TCP connection just ends
                return
            else:
                writer.write(bytes([b0 & 0x8F]) + frame(op, data, mask=False)[1:])
            await writer.drain()


async def _main(port, record):
    backend = _Backend(record)
    server = await asyncio.start_server(backend.serve, "127.0.0.1", port, limit=1 << 16, backlog=2048)
    backend.name = b"ws:%d" % server.sockets[0].getsockname()[1]
    print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record")
    a = ap.parse_args()
    try:
        asyncio.run(_main(a.port, a.record))
    except KeyboardInterrupt:
        pass
