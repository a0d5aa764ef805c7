"""The SDK's lean HTTP/1.1 client (differential/http11.py) against a scripted server: framing
(Content-Length, chunked, none for 204, the connection's end), keep-alive reuse, a stale
kept-alive connection, Connection: close, and a server that never answers."""
from __future__ import annotations

import asyncio
import json

import pytest

from differential.http11 import BlockingClient, HTTPTransportError, LeanClient


class _Blocking:
    """The blocking client behind the async client's interface (its requests run on a thread)."""

    def __init__(self, endpoint: str) -> None:
        self.c = BlockingClient(endpoint)

    async def request(self, *args, **kwargs):
        return await asyncio.to_thread(self.c.request, *args, **kwargs)

    async def aclose(self):
        self.c.close()


CLIENTS = [LeanClient, _Blocking]


async def _serve(script):
    """A server that answers each request by `script(path, body) -> (bytes, close_after)`;
    returns (server, stats) where stats counts connections and requests."""
    stats = {"connections": 0, "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                stats["requests"] += 1
                answer, close = script(path, body)
                if answer is None:  # never answer
                    await asyncio.sleep(3600)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, stats


def _json(obj, extra=b"") -> bytes:
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def _script(path: str, body: bytes):
    if path.startswith("/echo"):
        return _json({"path": path, "got": json.loads(body) if body else None}), False
    if path == "/chunked":
        return (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\n[1, 2\r\n4\r\n, 3]\r\n0\r\n\r\n"), False
    if path == "/empty":
        return b"HTTP/1.1 204 No Content\r\n\r\n", False
    if path == "/close":
        return _json({"closing": True}, b"connection: close\r\n"), True
    if path == "/drop":  # answers, then drops the kept-alive connection without saying so
        return _json({"dropped": True}), True
    if path == "/until-eof":
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n[\"eof\"]", True
    if path == "/never":
        return None, False
    return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", False


def _run(coro_fn, kind=LeanClient):
    async def main():
        server, stats = await _serve(_script)
        port = server.sockets[0].getsockname()[1]
        client = kind(f"http://127.0.0.1:{port}")
        try:
            return await coro_fn(client, stats)
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
    return asyncio.run(main())


@pytest.mark.parametrize("kind", CLIENTS)
def test_keep_alive_reuses_one_connection_and_frames_each_answer(kind):
    async def go(c, stats):
        out = []
        for i in range(5):
            status, _, body = await c.request("POST", "/echo", headers={"x-n": str(i)},
                                              body=json.dumps({"i": i}).encode())
            out.append((status, json.loads(body)))
        status, _, body = await c.request("GET", "/echo", headers={}, params={"ttl": 0, "all": True})
        out.append((status, json.loads(body)))
        return out, stats["connections"]

    out, connections = _run(go, kind)
    assert out[:5] == [(200, {"path": "/echo", "got": {"i": i}}) for i in range(5)]
    assert out[5] == (200, {"path": "/echo?ttl=0&all=true", "got": None})
    assert connections == 1


@pytest.mark.parametrize("kind", CLIENTS)
def test_chunked_empty_and_eof_framed_answers(kind):
    async def go(c, stats):
        chunked = await c.request("GET", "/chunked", headers={})
        empty = await c.request("POST", "/empty", headers={})
        after = await c.request("POST", "/echo", headers={}, body=b"{}")
        eof = await c.request("GET", "/until-eof", headers={})
        return chunked, empty, after, eof

    chunked, empty, after, eof = _run(go, kind)
    assert chunked[0] == 200 and json.loads(chunked[2]) == [1, 2, 3]
    assert empty[0] == 204 and empty[2] == b""
    assert json.loads(after[2])["got"] == {}
    assert eof[2] == b'["eof"]'


@pytest.mark.parametrize("kind", CLIENTS)
def test_connection_close_and_a_stale_connection_are_replaced(kind):
    async def go(c, stats):
        first = await c.request("POST", "/close", headers={}, body=b"{}")
        second = await c.request("POST", "/drop", headers={}, body=b"{}")
        await asyncio.sleep(0.2)  # the server's close reaches us while the connection is idle
        third = await c.request("POST", "/echo", headers={}, body=b"{}")
        return first, second, third, stats

    first, second, third, stats = _run(go, kind)
    assert json.loads(first[2]) == {"closing": True}
    assert json.loads(second[2]) == {"dropped": True}
    assert third[0] == 200
    assert stats["connections"] == 3
    assert stats["requests"] == 3  # no request was sent twice


@pytest.mark.parametrize("kind", CLIENTS)
def test_no_answer_is_a_transport_error_and_refused_connections_too(kind):
    async def go(c, stats):
        with pytest.raises(HTTPTransportError):
            await c.request("POST", "/never", headers={}, body=b"{}", timeout=0.5)
        status, _, _ = await c.request("POST", "/echo", headers={}, body=b"{}")  # a fresh connection works
        return status

    assert _run(go, kind) == 200

    async def refused():
        c = kind("http://127.0.0.1:9")
        try:
            with pytest.raises(HTTPTransportError):
                await c.request("GET", "/", headers={})
        finally:
            await c.aclose()

    asyncio.run(refused())


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 signed by itself: (cert path, key path)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_https_verifies_the_server_certificate_and_speaks_over_tls(tmp_path, blocking):
    """An https endpoint is spoken to over TLS, and a certificate nobody vouches for is refused:
    the default context verifies (a self-signed server fails), a context that trusts it works."""
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main():
        handled = []

        async def handle(reader, writer):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                handled.append(head.split(b" ")[1])
                writer.write(_json({"tls": True}, b"connection: close\r\n"))
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            outcomes = []
            for ctx in (None, trusting):
                client = BlockingClient(url, ssl_context=ctx) if blocking else LeanClient(url, ssl_context=ctx)
                try:
                    if blocking:
                        answer = await asyncio.to_thread(client.request, "GET", "/tls", headers={})
                    else:
                        answer = await client.request("GET", "/tls", headers={})
                    outcomes.append(answer)
                except HTTPTransportError as exc:
                    outcomes.append(exc)
                finally:
                    client.close() if blocking else await client.aclose()
            return outcomes, handled
        finally:
            server.close()
            await server.wait_closed()

    (refused, answered), handled = asyncio.run(main())
    assert isinstance(refused, HTTPTransportError) and "certificate" in str(refused).lower(), refused
    assert handled == [b"/tls"]  # only the trusting client's request reached the server
    status, _headers, body = answered
    assert status == 200 and json.loads(body) == {"tls": True}
