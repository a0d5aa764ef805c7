"""One retry policy for every path: the delay schedule with an injected clock, and the blocking and
asyncio callers' job creation retrying (or not) the same way against a scripted stand-in server."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from differential import AsyncDifferential, ConnectionFailedError, ControlPlaneError, Differential, retry


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_delays_grow_are_capped_and_jittered_and_end_at_the_budget():
    clock = FakeClock()
    schedule = retry.delays(10.0, (0.1, 1.0), clock=clock)
    got = []
    for delay in schedule:
        got.append(delay)
        clock.now += delay  # the caller sleeps it
    ceilings = [min(1.0, 0.1 * 2 ** i) for i in range(len(got))]
    assert all(c / 2 <= d <= c for d, c in zip(got, ceilings, strict=True)), got
    assert sum(got) <= 10.0 < sum(got) + 1.0  # it stopped when the next delay would pass the deadline
    assert len(got) >= 10


def test_a_zero_budget_gives_no_retry():
    assert list(retry.delays(0.0, clock=FakeClock())) == []


def test_next_delay_only_for_retryable_errors_while_the_schedule_lasts():
    schedule = iter([0.5])
    assert retry.next_delay(ControlPlaneError(400, "bad"), schedule) is None  # not retryable: schedule untouched
    assert retry.next_delay(ControlPlaneError(503, "busy"), schedule) == 0.5
    assert retry.next_delay(ConnectionFailedError("down"), schedule) is None  # schedule used up
    assert retry.is_retryable(httpx.ConnectError("x")) and retry.is_retryable(ControlPlaneError(429, "slow"))
    assert not retry.is_retryable(ValueError("x"))


class ScriptedServer:
    """Answers POST /jobs with the next status of `script` (then the last one for ever)."""

    def __init__(self, script):
        self.script, self.requests = list(script), 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["content-length"]))
                fake.requests += 1
                status = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                body = json.dumps({"id": "job-1"} if status < 400 else {"error": {"code": "x", "message": "no"}})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _create_blocking(url, budget):
    with Differential("sk_x", endpoint=url, create_retry_seconds=budget) as d:
        return d.create_job("svc", "fn", 1)


def _create_async(url, budget):
    async def go():
        async with AsyncDifferential("sk_x", endpoint=url, create_retry_seconds=budget) as d:
            return await d.create_job("svc", "fn", 1)

    return asyncio.run(go())


CREATORS = pytest.mark.parametrize("create", [_create_blocking, _create_async], ids=["blocking", "asyncio"])


@CREATORS
def test_creation_retries_5xx_until_it_succeeds(create):
    server = ScriptedServer([503, 500, 201])
    try:
        assert create(server.url, 30.0) == "job-1"
        assert server.requests == 3
    finally:
        server.close()


@CREATORS
def test_creation_gives_up_when_its_budget_is_spent(create):
    server = ScriptedServer([503])
    try:
        t0 = time.monotonic()
        with pytest.raises(ControlPlaneError) as info:
            create(server.url, 0.8)
        assert info.value.status == 503
        assert time.monotonic() - t0 < 2.0 and server.requests >= 3
    finally:
        server.close()


@CREATORS
def test_creation_does_not_retry_a_refusal(create):
    server = ScriptedServer([400])
    try:
        with pytest.raises(ControlPlaneError):
            create(server.url, 30.0)
        assert server.requests == 1
    finally:
        server.close()
