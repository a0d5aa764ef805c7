"""The worker loop's epoll, with connections registered once, in one-shot mode.

gthread's selector takes a connection out (epoll_ctl DEL) when its request goes to a thread and
puts it back (ADD) when the answer is out: two system calls a request, each a hand-off of the GIL
to the 24 request threads, and a new SelectorKey and callback each time. Here a connection is
added once, with EPOLLONESHOT: epoll reports it once and then holds it back, which is what taking
it out did, and `arm` lets it report again with one epoll_ctl MOD. Listeners and the wake-up pipe
are registered as with a selector (level-triggered); that part of the selector API is what
gthread's own code uses (`register`, `unregister`, `select`, `close`).
"""
from __future__ import annotations

import errno
import select
import selectors
from typing import Callable

_ONCE = select.EPOLLIN | select.EPOLLONESHOT


class Key:
    """What `select` gives back for a ready descriptor: its object and its callback."""

    __slots__ = ("fileobj", "data", "owner")

    def __init__(self, fileobj, data, owner=None) -> None:
        self.fileobj, self.data, self.owner = fileobj, data, owner


class Poller:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._keys: dict[int, Key] = {}

    # -- as a selector: listeners and the wake-up pipe ------------------------------------------

    def register(self, fileobj, events: int, data=None) -> Key:
        if events != selectors.EVENT_READ:
            raise ValueError("the loop only waits to read")
        fd = _fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} is already registered")
        self._epoll.register(fd, select.EPOLLIN)
        key = self._keys[fd] = Key(fileobj, data)
        return key

    def unregister(self, fileobj) -> Key:
        fd = _fd(fileobj)
        key = self._keys.pop(fd)
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        return key

    # -- connections: one-shot ----------------------------------------------------------------

    def arm(self, owner, fd: int, fileobj, callback: Callable) -> None:
        """Report `fd` once when it is readable, to `callback(fileobj)`. `owner` (the connection)
        tells its key from that of an earlier connection on the same descriptor number: a socket
        closed in a thread has left the epoll set, and its number may already be reused."""
        key = self._keys.get(fd)
        if key is not None and key.owner is owner:
            key.data = callback
            try:
                self._epoll.modify(fd, _ONCE)
                return
            except FileNotFoundError:  # not in the set any more: add it again
                pass
        # New, or the number of a connection closed since (its socket left the set as it closed).
        try:
            self._epoll.register(fd, _ONCE)
        except FileExistsError:
            self._epoll.modify(fd, _ONCE)
        self._keys[fd] = Key(fileobj, callback, owner)

    def disarm(self, owner, fd: int) -> None:
        """Hold back a connection armed and not yet reported (its request is dispatched another way)."""
        key = self._keys.get(fd)
        if key is not None and key.owner is owner:
            try:
                self._epoll.modify(fd, select.EPOLLONESHOT)  # no event asked for; the next `arm` asks again
            except OSError:
                pass

    def forget(self, owner, fd: int) -> None:
        """The connection closes (call before closing its socket)."""
        key = self._keys.get(fd)
        if key is None or key.owner is not owner:
            return
        del self._keys[fd]
        try:
            self._epoll.unregister(fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EBADF):
                raise

    # -- waiting ------------------------------------------------------------------------------

    def select(self, timeout: float | None = None) -> list[tuple[Key, int]]:
        timeout = -1 if timeout is None else max(timeout, 0.0)
        ready = []
        keys = self._keys
        for fd, events in self._epoll.poll(timeout, max(len(keys), 1)):
            key = keys.get(fd)
            if key is not None:
                ready.append((key, events))
        return ready

    def close(self) -> None:
        self._epoll.close()
        self._keys.clear()


def _fd(fileobj) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()
