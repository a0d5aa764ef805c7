"""app/server/response.py: a response's head goes out with its first body bytes, in one write,
and still first and alone where gunicorn needs it so (no body, sendfile, chunks)."""
from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.http import wsgi

from app.server.response import CoalescedResponse


class _Socket:
    def __init__(self):
        self.writes: list[bytes] = []

    def sendall(self, data):
        self.writes.append(bytes(data))

    def sendfile(self, file, offset=0, count=None):
        file.seek(offset)
        self.writes.append(b"<file>" + file.read(count))


def _response(method="POST"):
    req = SimpleNamespace(version=(1, 1), method=method, should_close=lambda: False)
    return CoalescedResponse(req, _Socket(), Config())


def _start(resp, status, headers):
    resp.start_response(status, headers)
    return resp


def test_a_small_answer_is_one_write_of_head_and_body():
    resp = _start(_response(), "201 CREATED", [("Content-Type", "application/json"), ("Content-Length", "9")])
    resp.write(b'{"id":"a"}'[:9])
    resp.close()
    assert len(resp.sock.writes) == 1
    head, _, body = resp.sock.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 CREATED\r\n") and b"Content-Length: 9" in head
    assert body == b'{"id":"a"'


def test_an_answer_without_a_body_sends_its_head_at_close():
    resp = _start(_response(), "204 NO CONTENT", [])
    resp.write(b"")
    assert resp.sock.writes == []  # held until there is a body or the close
    resp.close()
    assert len(resp.sock.writes) == 1 and resp.sock.writes[0].startswith(b"HTTP/1.1 204 NO CONTENT\r\n")
    assert resp.sock.writes[0].endswith(b"\r\n\r\n")


def test_later_body_writes_go_as_they_come():
    resp = _start(_response(), "200 OK", [("Content-Length", "6")])
    resp.write(b"abc")
    resp.write(b"def")
    resp.close()
    assert len(resp.sock.writes) == 2 and resp.sock.writes[0].endswith(b"\r\n\r\nabc") and resp.sock.writes[1] == b"def"


def test_a_chunked_answer_sends_its_head_first_then_framed_chunks():
    resp = _start(_response(), "200 OK", [("Content-Type", "text/plain")])  # no length: chunked
    assert resp.chunked
    resp.write(b"hello")
    resp.close()
    assert resp.sock.writes[0].startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in resp.sock.writes[0]
    assert b"".join(resp.sock.writes[1:]) == b"5\r\nhello\r\n0\r\n\r\n"


def test_a_file_sent_by_sendfile_has_its_head_before_it():
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(b"console.css")
    try:
        with open(f.name, "rb") as fh:
            resp = _start(_response("GET"), "200 OK", [("Content-Length", "11")])
            assert resp.sendfile(SimpleNamespace(filelike=fh)) is True
            resp.close()
    finally:
        os.unlink(f.name)
    assert resp.sock.writes[0].startswith(b"HTTP/1.1 200 OK") and resp.sock.writes[0].endswith(b"\r\n\r\n")
    assert resp.sock.writes[1] == b"<file>console.css"


def test_the_server_process_uses_it():
    import app.server.worker  # noqa: F401  (installs it, as gunicorn's worker import does)

    assert wsgi.Response is CoalescedResponse  # what wsgi.create() builds every response with


def test_an_unknown_transfer_coding_is_the_clients_error_and_says_what_to_send():
    """gunicorn answers 501 (a server error) to a Transfer-Encoding it does not know; the fault
    is the request's header (the OpenAPI fuzzer sent `+pKPIa`), so the worker answers 400 (as
    gunicorn itself does for a known coding that is not chunked)."""
    import json
    import socket

    from support.server import ControlPlane

    with ControlPlane() as cp:
        for coding, length in ((b"+pKPIa", b"Content-Length: 2\r\n"), (b"br", b""), (b"gzip", b"")):
            with socket.create_connection(("127.0.0.1", cp.port), timeout=10) as s:
                s.sendall(b"PUT /clusters/c/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          + length + b"Transfer-Encoding: " + coding + b"\r\n\r\n{}")
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), answer
            error = json.loads(body)["error"]
            assert error["code"] == "bad_request", error
            if coding != b"gzip":  # a coding gunicorn does not know (its 501): told what to send instead
                assert f"Transfer-Encoding {coding.decode()!r} is not supported" in error["message"], error
                assert "Content-Length" in error["message"] and "chunked" in error["message"]
