"""The SDK's transports keep at most 64 short requests in flight (through the lean client, or,
when a proxy is configured, through small httpx pools that httpcore never has to queue for: its
queue scan costs O(queued x connections) per request) and do not count long polls against them,
so a thousand concurrent calls neither fail on a pool timeout nor wait behind polls.

Each test runs on both paths. A local HTTP server counts the requests it holds at once; no timing
is asserted."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from differential import transport
from differential.transport import AsyncTransport, Config, SyncTransport

SLOTS = transport._SHARDS * transport._SHARD_CONNECTIONS


class _Counting(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the listen backlog: 5 by default, and every pool connects at once

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0
        self.peers: set = set()
        self.hold_until = 0  # hold each request until this many are held at once (10 s at most)
        self.changed = threading.Condition(self.lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with srv.lock:
            srv.now += 1
            srv.total += 1
            srv.peak = max(srv.peak, srv.now)
            srv.peers.add(self.client_address)
            srv.changed.notify_all()
            srv.changed.wait_for(lambda: srv.now >= srv.hold_until, timeout=10)
        time.sleep(0.005)  # hold the request a little, so that concurrent ones overlap at the server
        with srv.lock:
            srv.now -= 1
        out = json.dumps({"echo": body["i"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture(params=["lean", "httpx"], autouse=True)
def path(request, monkeypatch):
    """The lean clients, or httpx as when the environment names a proxy."""
    monkeypatch.setattr(transport, "_proxied", lambda: request.param == "httpx")
    return request.param


@pytest.fixture
def server():
    srv = _Counting()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _config(srv) -> Config:
    return Config(api_secret="sk_test", endpoint=f"http://127.0.0.1:{srv.server_address[1]}")


def test_async_short_requests_stay_within_the_pools(server):
    n = SLOTS * 4

    async def main():
        http = AsyncTransport(_config(server))
        try:
            return await asyncio.gather(*(http.request("POST", "/x", json={"i": i}) for i in range(n)))
        finally:
            await http.aclose()

    answers = asyncio.run(main())
    assert [a["echo"] for a in answers] == list(range(n))
    assert server.total == n
    assert server.peak <= SLOTS
    assert len(server.peers) <= SLOTS


def test_sync_short_requests_stay_within_the_pools(server):
    n = SLOTS * 3
    http = SyncTransport(_config(server))
    answers: dict = {}

    def one(i):
        answers[i] = http.request("POST", "/x", json={"i": i})["echo"]

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        http.close()
    assert answers == {i: i for i in range(n)}
    assert server.peak <= SLOTS
    assert len(server.peers) <= SLOTS


def test_long_polls_do_not_take_short_request_slots(server):
    n = SLOTS + 16  # more long polls at once than there are short-request slots
    server.hold_until = n  # answered only once all of them are in

    async def main():
        http = AsyncTransport(_config(server))
        try:
            return await asyncio.gather(*(http.request("POST", "/x", json={"i": i}, long_poll_ms=1000)
                                          for i in range(n)))
        finally:
            await http.aclose()

    answers = asyncio.run(main())
    assert len(answers) == n
    assert server.peak == n  # they were all in at once, not let through the slots
