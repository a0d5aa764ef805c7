"""A lean HTTP/1.1 keep-alive client on asyncio protocols, for the harness's hot path.

httpx costs several milliseconds of CPU per request here (its connection pool re-checks every
connection's socket on every request), and on a 2-core machine shared with the control-plane that
CPU is taken from the system under test. This client does only what the wire protocol needs: POST
with a JSON body, Content-Length framed responses (what gunicorn/Flask and the original
control-plane send), keep-alive, TCP_NODELAY, one request at a time per connection.
`bench/harness.py --client httpx` uses httpx.AsyncClient instead, for comparison.
"""
from __future__ import annotations

import asyncio
import json
import socket


class HTTPError(Exception):
    pass


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._parse()

    def _parse(self) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            w.set_exception(HTTPError(f"bad status line {lines[0][:100]!r}"))
            return
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                w.set_exception(HTTPError("chunked responses are not supported by the lean client"))
                return
        if length is None:
            length = 0
        total = end + 4 + length
        if len(self.buf) < total:
            return
        body = bytes(self.buf[end + 4:total])
        del self.buf[:total]
        w.set_result((status, body, close))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPError(f"connection lost ({exc})"))


class RawClient:
    """At most `max_connections` requests at once; idle connections are kept for reuse."""

    def __init__(self, host: str, port: int, max_connections: int, timeout: float = 60.0):
        self.host, self.port, self.timeout = host, port, timeout
        self._sem = asyncio.Semaphore(max_connections)
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port), 10)
        self._all.add(conn)
        return conn

    async def post(self, path: str, obj, headers: dict[str, str]) -> tuple[int, bytes]:
        body = json.dumps(obj, separators=(",", ":")).encode()
        head = [f"POST {path} HTTP/1.1\r\n".encode(), self._host_header,
                b"Content-Type: application/json\r\nContent-Length: ", str(len(body)).encode(), b"\r\n"]
        for k, v in headers.items():
            head.append(f"{k}: {v}\r\n".encode())
        head.append(b"\r\n")
        request = b"".join(head) + body
        async with self._sem:
            conn = None
            while self._idle:
                c = self._idle.pop()
                if not c.closed:
                    conn = c
                    break
                self._all.discard(c)
            if conn is None:
                conn = await self._connect()
            ok = False
            try:
                conn.waiter = asyncio.get_running_loop().create_future()
                conn.transport.write(request)
                status, data, close = await asyncio.wait_for(conn.waiter, self.timeout)
                ok = not close
                return status, data
            finally:
                conn.waiter = None
                if ok and not conn.closed and not conn.buf:
                    self._idle.append(conn)
                else:  # failed, cancelled mid-request, or the server said close
                    conn.transport.close()
                    self._all.discard(conn)

    async def aclose(self) -> None:
        for c in list(self._all):
            if c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
