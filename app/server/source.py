"""What gunicorn's parser reads a request from: the bytes the event loop already read, then the
socket, but never past the request's read deadline.

The deadline bounds reading the request, not serving it: a long poll reads nothing while it waits,
so it is not cut, and a body that arrives too slowly ends with 408 instead of holding a thread.
The WSGI app still gets the real socket as `gunicorn.socket` (app/api/jobs.py peeks it to see
whether a polling client has gone).
"""
from __future__ import annotations

import time

from werkzeug.exceptions import RequestTimeout


class ReadDeadline(RequestTimeout):
    """The request was not read in time. An HTTP error on purpose: raised while the app reads the
    body, it becomes the app's JSON 408 (werkzeug turns an OSError there into a vague 400)."""

    def __init__(self, seconds: float):
        super().__init__(f"the request was not received within {seconds:g} s; send it faster, or through "
                         "a buffering proxy")


class RequestSource:
    def __init__(self, sock, clock=time.monotonic):
        self.sock = sock
        self._clock = clock
        self._replay, self._at = b"", 0  # what the loop buffered, and how far it has been read
        self.deadline: float | None = None
        self.seconds = 0.0  # the deadline's length, for the message
        self.expired = False
        self._queued_at = 0.0
        self._timeout: float | None = None  # what gunicorn set through settimeout

    def start(self, buffered: bytes, deadline: float, seconds: float) -> None:
        """The next request: `buffered` bytes first, then the socket until `deadline`."""
        self._replay, self._at = buffered, 0
        self.deadline, self.seconds, self.expired = deadline, seconds, False
        self._queued_at = self._clock()

    def resume(self) -> None:
        """A thread takes the request up: the time it waited in the server's own queue is the
        server's, not the client's, so the deadline moves by it. (Under the published SDK's
        10,000-call storm, big status polls queued past the deadline and were cut: the SDK dies
        on that.)"""
        if self.deadline is not None:
            self.deadline += self._clock() - self._queued_at

    def take_unread(self) -> bytes:
        """What was buffered and not read (a pipelined next request), handed back to the loop."""
        rest = self.buffered()
        self._replay, self._at = b"", 0
        return rest

    def buffered(self) -> bytes:
        """What the loop buffered that has not been read yet (plain.Parser reads a request from it)."""
        return self._replay[self._at:] if self._at else self._replay

    def consume(self, size: int) -> None:
        """`size` bytes of buffered() were read by other means than recv."""
        self._at += size

    def recv(self, size: int) -> bytes:
        if self._at < len(self._replay):
            data = self._replay[self._at:self._at + size]
            self._at += len(data)
            return data
        timeout = self._timeout
        if self.deadline is not None:
            remaining = self.deadline - self._clock()
            if remaining <= 0:
                self.expired = True
                raise ReadDeadline(self.seconds)
            timeout = remaining if timeout is None else min(timeout, remaining)
        if timeout is None:
            return self.sock.recv(size)
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            if self.deadline is not None and self._clock() >= self.deadline:
                self.expired = True
                raise ReadDeadline(self.seconds) from None
            raise
        finally:
            self.sock.settimeout(None)  # the connection's socket stays blocking (worker.Conn)

    # gunicorn's parser bounds its drain of an unread body through these. The timeout applies to
    # the reads above only: setting the socket's at each call cost two system calls a request,
    # each a hand-off of the GIL, for a drain that almost always reads nothing from the socket.
    def gettimeout(self):
        return self._timeout

    def settimeout(self, value) -> None:
        self._timeout = value
