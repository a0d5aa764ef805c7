"""The worker loop's epoll (app/server/poller.py): connections one-shot, listeners level-triggered."""
from __future__ import annotations

import selectors
import socket

import pytest

from app.server.poller import Poller


@pytest.fixture
def poller():
    p = Poller()
    try:
        yield p
    finally:
        p.close()


def _pair():
    near, far = socket.socketpair()
    return near, far


def _ready(poller: Poller, timeout: float = 0.05) -> list:
    return [key.fileobj for key, _events in poller.select(timeout)]


def test_an_armed_connection_is_reported_once_until_armed_again(poller):
    near, far = _pair()
    with near, far:
        owner = object()
        poller.arm(owner, near.fileno(), near, "callback")
        assert _ready(poller) == []  # nothing sent yet
        far.sendall(b"x")
        [(key, _)] = poller.select(1)
        assert key.fileobj is near and key.data == "callback"
        assert _ready(poller) == []  # still readable, but held back
        poller.arm(owner, near.fileno(), near, "again")
        [(key, _)] = poller.select(1)
        assert key.data == "again"


def test_a_disarmed_connection_is_not_reported_and_forget_takes_it_out(poller):
    near, far = _pair()
    with near, far:
        owner = object()
        poller.arm(owner, near.fileno(), near, "callback")
        poller.disarm(owner, near.fileno())
        far.sendall(b"x")
        assert _ready(poller) == []
        poller.forget(owner, near.fileno())
        poller.arm(owner, near.fileno(), near, "callback")  # added anew
        assert _ready(poller, 1) == [near]


def test_a_closed_connections_number_reused_by_a_new_one_is_the_new_ones(poller):
    first, first_far = _pair()
    old_owner, fd = object(), first.fileno()
    poller.arm(old_owner, fd, first, "old")
    first.close()  # in a thread, behind the loop's back: the socket leaves the epoll set
    first_far.close()
    reused = None
    others = []
    for _ in range(50):  # the lowest free number is the one just freed
        near, far = _pair()
        if near.fileno() == fd:
            reused = (near, far)
            break
        others.append((near, far))
    try:
        assert reused is not None, "the closed socket's number was not reused"
        near, far = reused
        new_owner = object()
        poller.arm(new_owner, fd, near, "new")
        poller.forget(old_owner, fd)  # the old connection's late clean-up must not touch the new one
        far.sendall(b"x")
        [(key, _)] = poller.select(1)
        assert key.fileobj is near and key.data == "new"
    finally:
        for pair in others + ([reused] if reused else []):
            for s in pair:
                s.close()


def test_listeners_are_reported_while_readable(poller):
    near, far = _pair()
    with near, far:
        poller.register(near, selectors.EVENT_READ, "listener")
        far.sendall(b"x")
        assert _ready(poller, 1) == [near]
        assert _ready(poller, 1) == [near]  # level-triggered: again while unread
        with pytest.raises(KeyError):
            poller.register(near, selectors.EVENT_READ, "twice")
        poller.unregister(near)
        assert _ready(poller) == []
        with pytest.raises(ValueError):
            poller.register(near, selectors.EVENT_WRITE, "write")
