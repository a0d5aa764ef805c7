"""Long-poll answers that the HTTP worker can hold without a thread while they wait.

A long-poll route hands its poll (a generator of steps, engine/steps.py) to `answer`. When the
worker serving the request can park (server/worker.py says so in the WSGI environ, with how many
polls it can hold), a poll that has to wait becomes a `ParkedResponse`: its status and headers go
through Flask as any answer's do, and its body is a `ParkedPoll` that the worker keeps, with the
connection, in its event loop, stepping it in a pool thread whenever its wait ends. Anywhere else
(a test client, gthread behind TLS) the poll waits in the request's thread, as before, and
`ParkedPoll` is never made.

What runs after the request hooks and wants the final status (the request log line, the HTTP
metrics) registers with `ParkedPoll.when_answered`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import Flask, Response, current_app, jsonify, request

from ..engine import steps
from ..observability.logging_setup import request_id

ENVIRON_KEY = "differential.parking"  # the worker's environ entry: polls it can hold with no thread


def capacity() -> int:
    """How many polls the serving worker parks without threads (0: it cannot park)."""
    return request.environ.get(ENVIRON_KEY, 0)


@dataclass(frozen=True)
class Answer:
    status: int
    status_line: str  # "200 OK"
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # beyond the parked response's (a 202's Location)


_SET_ALREADY = {"content-type", "content-length"}  # the parked response's type; the length the worker's


class ParkedPoll:
    """A long poll waiting for its answer: `wait` is what it waits for now."""

    def __init__(self, poll: steps.Steps, wait: steps.Wait, app: Flask, environ: dict, rid: str | None) -> None:
        self.wait = wait
        self._poll = poll
        self._app = app
        self._environ = environ  # for an error's answer, made by the app's own error handlers
        self._rid = rid
        self._answered: list[Callable[[int, int], None]] = []

    def when_answered(self, callback: Callable[[int, int], None]) -> None:
        """Call `callback(status, body bytes)` once the answer is sent."""
        self._answered.append(callback)

    def step(self, fired: set[str] | None) -> Answer | None:
        """Resume the poll after its wait, with what the wait gave (`wait.outcome()`): None while
        it waits again (`wait` says for what), else its answer. Runs in a pool thread, outside the
        request's context."""
        token = request_id.set(self._rid)
        try:
            with self._app.app_context():
                try:
                    self.wait = self._poll.send(fired)
                    return None
                except StopIteration as done:
                    response = _response(done.value)
                except Exception as exc:  # answered as the route would have, by the app's handlers
                    with self._app.request_context(self._environ):
                        response = self._app.make_response(self._app.handle_user_exception(exc))
                return Answer(response.status_code, response.status, response.get_data(),
                              tuple((k, v) for k, v in response.headers.items() if k.lower() not in _SET_ALREADY))
        finally:
            request_id.reset(token)

    def answered(self, status: int, size: int) -> None:
        for callback in self._answered:
            callback(status, size)

    def close(self) -> None:
        """Give up the poll (its client went away, or the worker stops): its `with` blocks exit."""
        self._poll.close()


class ParkedResponse(Response):
    """An answer whose body is not known yet (no Content-Length: the worker sets it when it is)."""

    def __init__(self, parked: ParkedPoll) -> None:
        super().__init__(parked, status=200, mimetype="application/json", direct_passthrough=True)
        self.parked = parked


def parked_of(response: Response) -> ParkedPoll | None:
    return getattr(response, "parked", None)


def _response(value) -> Response:
    """A poll's answer: what it returned, as a view's return value (JSON, or (JSON, status[, headers]))."""
    return current_app.make_response(value if isinstance(value, tuple) else jsonify(value))


def answer(poll: steps.Steps) -> Response:
    """The JSON answer of a long poll, parked in the worker when it has to wait and the worker can."""
    try:
        wait = next(poll)
    except StopIteration as done:
        return _response(done.value)
    if not capacity():
        return _response(steps.finish(poll, wait))
    return ParkedResponse(ParkedPoll(poll, wait, current_app._get_current_object(), request.environ,
                                     request_id.get()))
