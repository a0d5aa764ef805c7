"""A lean HTTP/1.1 keep-alive client on asyncio protocols: the async transport's requests.

Why not httpx here: per request httpx and httpcore build request and response models, run
their pool's bookkeeping (every connection checked on every request) and go through anyio; on
the SDK's hot path (a worker's claims and results, the result poller, the asyncio caller) that
was most of the SDK's CPU per call. This client does what the control-plane's routes need and no
more: one request at a time per connection, a JSON or empty body, responses framed by
Content-Length, chunked, or the connection's end; keep-alive, TCP_NODELAY, TLS with the
transport's context. The caller bounds how many requests run at once (transport.py).

Errors are `HTTPTransportError` (the transport maps it as it maps httpx's network errors). A
request on a kept-alive connection that the server closed before answering anything is sent once
more on a new connection: the server never read it (what httpx's pool does for a stale
connection).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

_MAX_IDLE = 100  # kept-alive connections kept for reuse; more are closed when they go idle
_MAX_HEAD = 64 * 1024  # a response head longer than this is refused


class HTTPTransportError(Exception):
    """The request did not get an answer: could not connect, the connection broke, or timed out."""


class _Parser:
    """One connection's answers, parsed as bytes arrive (shared by the async and blocking clients)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.head: Optional[Tuple[int, Dict[str, str], int]] = None  # status, headers, body start
        self.no_body = False  # the answer to a HEAD request has no body

    def reset(self, method: str) -> None:
        self.head = None
        self.no_body = method == "HEAD"

    def answer(self, eof: bool) -> Optional[Tuple[int, Dict[str, str], bytes, bool]]:
        """(status, headers, body, keep-alive) once the answer is complete, else None; raises
        HTTPTransportError for an answer that cannot be read."""
        buf = self.buf
        while self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise HTTPTransportError("response head too long")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                raise HTTPTransportError(f"bad status line {lines[0][:100]!r}") from None
            headers: Dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                del buf[:end + 4]
                continue
            self.head = (status, headers, end + 4)
        status, headers, start = self.head
        keep = headers.get("connection", "").lower() != "close"
        if status in (204, 304) or self.no_body:
            body, used = b"", start
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _dechunk(buf, start)
            if parsed is None:
                if eof:
                    raise HTTPTransportError("connection closed inside a chunked answer")
                return None
            body, used = parsed
        elif "content-length" in headers:
            try:
                used = start + int(headers["content-length"])
            except ValueError:
                raise HTTPTransportError("bad Content-Length") from None
            if len(buf) < used:
                if eof:
                    raise HTTPTransportError("connection closed before the answer was complete")
                return None
            body = bytes(buf[start:used])
        else:  # framed by the connection's end
            if not eof:
                return None
            body, used, keep = bytes(buf[start:]), len(buf), False
        del buf[:used]
        self.head = None
        return status, headers, body, keep


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.parser = _Parser()
        self.waiter: Optional[asyncio.Future] = None
        self.closed = False
        self.got_bytes = False  # some of the current request's answer arrived

    @property
    def buf(self) -> bytearray:
        return self.parser.buf

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _nodelay(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        self.parser.buf += data
        self.got_bytes = True
        self._parse(eof=False)

    def eof_received(self) -> Optional[bool]:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self._parse(eof=True)
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(HTTPTransportError(f"connection closed before the answer was complete ({exc or 'eof'})"))

    def start(self, method: str) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.got_bytes = False
        self.parser.reset(method)
        return self.waiter

    def _parse(self, eof: bool) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        try:
            done = self.parser.answer(eof)
        except HTTPTransportError as e:
            w.set_exception(e)
            if self.transport is not None:
                self.transport.close()
            return
        if done is not None:
            w.set_result(done)


def _param(v: Any) -> str:
    """A query value as httpx writes it: true / false, "" for None."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    return "" if v is None else str(v)


def _nodelay(sock: Any) -> None:
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _dechunk(buf: bytearray, pos: int) -> Optional[Tuple[bytes, int]]:
    """(body, end offset) of a complete chunked body starting at `pos`, or None if incomplete."""
    out = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # trailers (if any) end with an empty line
            return (bytes(out), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        out += buf[pos:pos + size]
        pos += size + 2


class _Endpoint:
    """Where requests go, and how a request is written."""

    def __init__(self, endpoint: str, ssl_context: Optional[ssl.SSLContext], connect_timeout: float) -> None:
        u = urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        default_port = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.connect_timeout = connect_timeout
        self.closed = False

    def _encode(self, method: str, path: str, params: Optional[Dict[str, Any]], headers: Dict[str, str],
                body: Optional[bytes]) -> bytes:
        target = self.prefix + path
        if params:
            target += ("&" if "?" in target else "?") + urlencode(
                {k: [_param(x) for x in v] if isinstance(v, (list, tuple)) else _param(v) for k, v in params.items()},
                doseq=True)
        lines = [f"{method} {target} HTTP/1.1", f"host: {self.host_header}"]
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        if body is not None:
            lines.append("content-type: application/json")
            lines.append(f"content-length: {len(body)}")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("content-length: 0")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head


class LeanClient(_Endpoint):
    """Requests to one endpoint (`http://` or `https://host[:port][/prefix]`) from one event loop."""

    def __init__(self, endpoint: str, *, ssl_context: Optional[ssl.SSLContext] = None,
                 connect_timeout: float = 5.0) -> None:
        super().__init__(endpoint, ssl_context, connect_timeout)
        self._idle: List[_Conn] = []
        self._all: set = set()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, self.host, self.port, ssl=self.ssl_context,
                                       server_hostname=self.host if self.tls else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise HTTPTransportError(f"connecting to {self.host}:{self.port} timed out") from None
        except (OSError, ssl.SSLError) as e:
            raise HTTPTransportError(f"cannot connect to {self.host}:{self.port}: {e}") from None
        self._all.add(conn)
        return conn

    async def request(self, method: str, path: str, *, headers: Dict[str, str], body: Optional[bytes] = None,
                      params: Optional[Dict[str, Any]] = None,
                      timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers with lower-case names, body). Raises HTTPTransportError."""
        if self.closed:
            raise HTTPTransportError("the client is closed")
        data = self._encode(method, path, params, headers, body)
        for attempt in (0, 1):
            conn, reused = None, False
            while self._idle:
                c = self._idle.pop()
                if not c.closed:
                    conn, reused = c, True
                    break
                self._all.discard(c)
            if conn is None:
                conn = await self._connect()
            keep = False
            try:
                waiter = conn.start(method)
                conn.transport.write(data)
                timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter, timeout)
                try:
                    status, rheaders, rbody, keep = await waiter
                finally:
                    timer.cancel()
                return status, rheaders, rbody
            except HTTPTransportError:
                if attempt == 0 and reused and conn.closed and not conn.got_bytes:
                    continue  # a stale kept-alive connection: the server never read the request
                raise
            finally:
                conn.waiter = None
                if keep and not conn.closed and not conn.buf and not self.closed and len(self._idle) < _MAX_IDLE:
                    self._idle.append(conn)
                else:  # failed, cancelled mid-request, the server said close, or too many idle
                    conn.transport.close()
                    self._all.discard(conn)
        raise HTTPTransportError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self.closed = True
        for c in list(self._all):
            if c.transport is not None:
                c.transport.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing on this loop


def _expire(waiter: asyncio.Future, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(HTTPTransportError(f"no answer within {timeout:g} s"))


class _SyncConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = _Parser()


class BlockingClient(_Endpoint):
    """The same requests from threads (thread-safe): kept-alive sockets, one request at a time
    each. The caller bounds how many run at once: each runs on its own connection."""

    def __init__(self, endpoint: str, *, ssl_context: Optional[ssl.SSLContext] = None,
                 connect_timeout: float = 5.0) -> None:
        super().__init__(endpoint, ssl_context, connect_timeout)
        self._idle: List[_SyncConn] = []
        self._lock = threading.Lock()

    def _connect(self) -> _SyncConn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            _nodelay(sock)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except (OSError, ssl.SSLError) as e:
            raise HTTPTransportError(f"cannot connect to {self.host}:{self.port}: {e}") from None
        return _SyncConn(sock)

    def request(self, method: str, path: str, *, headers: Dict[str, str], body: Optional[bytes] = None,
                params: Optional[Dict[str, Any]] = None,
                timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers with lower-case names, body). Raises HTTPTransportError."""
        if self.closed:
            raise HTTPTransportError("the client is closed")
        data = self._encode(method, path, params, headers, body)
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect()
            keep, got, stale = False, False, False
            try:
                deadline = time.monotonic() + timeout
                conn.parser.reset(method)
                conn.sock.settimeout(timeout)
                try:
                    conn.sock.sendall(data)
                    done = None
                    while done is None:
                        done = conn.parser.answer(eof=False)
                        if done is not None:
                            break
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise HTTPTransportError(f"no answer within {timeout:g} s")
                        conn.sock.settimeout(left)
                        chunk = conn.sock.recv(65536)
                        if not chunk:
                            stale = not got
                            done = conn.parser.answer(eof=True)
                            if done is None:
                                raise HTTPTransportError("connection closed before the answer was complete")
                            break
                        got = True
                        conn.parser.buf += chunk
                except socket.timeout:
                    raise HTTPTransportError(f"no answer within {timeout:g} s") from None
                except (ConnectionResetError, BrokenPipeError) as e:
                    stale = not got
                    raise HTTPTransportError(f"the connection failed: {e}") from None
                except OSError as e:
                    raise HTTPTransportError(f"the connection failed: {e}") from None
                status, rheaders, rbody, keep = done
                return status, rheaders, rbody
            except HTTPTransportError:
                if attempt == 0 and reused and stale:
                    continue  # a stale kept-alive connection: the server never read the request
                raise
            finally:
                if keep and not conn.parser.buf and not self.closed:
                    with self._lock:
                        if len(self._idle) < _MAX_IDLE:
                            self._idle.append(conn)
                            conn = None
                if conn is not None:
                    _close(conn.sock)
        raise HTTPTransportError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            _close(c.sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
