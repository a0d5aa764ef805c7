"""gunicorn's per-request look-ups, answered once per worker: its settings and its trusted peers.

A worker's settings do not change while it lives (a reload starts new workers), yet gunicorn
reads each one through `Config.__getattr__` and the setting's `get()` every time: about 20 reads a
request (parser, environ, response). And whether the peer may set forwarding headers is worked
out per request by parsing its address with `ipaddress`. Both were a few per cent of a cheap
request's CPU (bench/README.md, "Per request").
"""
from __future__ import annotations

from functools import lru_cache

from gunicorn.http import message


class SettledConfig:
    """A worker's gunicorn Config, each setting read once and then kept as a plain attribute."""

    def __init__(self, cfg) -> None:
        object.__setattr__(self, "_cfg", cfg)

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)  # unknown names raise as the Config does
        object.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a worker's settings are fixed (tried to set {name!r})")


@lru_cache(maxsize=4096)
def _trusted(ip: str, allowed: tuple[str, ...], cfg) -> bool:
    return message._ip_in_allow_list(ip, list(allowed), cfg.forwarded_allow_networks())


def may_forward(peer, cfg) -> bool:
    """Whether `peer` may set forwarding and scheme headers, as gunicorn decides."""
    if not isinstance(peer, tuple):
        return True  # a Unix socket
    return _trusted(peer[0], tuple(cfg.forwarded_allow_ips), cfg)


class Request(message.Request):
    """gunicorn's request, asking whether its peer is a trusted proxy once per address."""

    def _peer_is_trusted_proxy(self):
        return may_forward(self.peer_addr, self.cfg)
