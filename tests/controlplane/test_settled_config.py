"""gunicorn's per-request look-ups, answered once per worker (app/server/settled.py)."""
from __future__ import annotations

import io

import pytest
from gunicorn.config import Config
from gunicorn.http import message, parser

from app.server import settled


def _config(**values) -> Config:
    cfg = Config()
    for name, value in values.items():
        cfg.set(name, value)
    return cfg


def test_a_settled_config_answers_every_setting_as_gunicorns_and_cannot_be_changed():
    cfg = _config(forwarded_allow_ips="10.0.0.1", keepalive=7, threads=5)
    view = settled.SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(view, name) == getattr(cfg, name), name
        assert getattr(view, name) == getattr(cfg, name), name  # kept: the same the second time
    assert view.is_ssl == cfg.is_ssl and view.forwarded_allow_networks() == cfg.forwarded_allow_networks()
    with pytest.raises(AttributeError):
        _ = view.no_such_setting
    assert getattr(view, "no_such_setting", "absent") == "absent"
    with pytest.raises(AttributeError):
        view.keepalive = 9


class _Source:
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def recv(self, size: int) -> bytes:
        return self._data.read(size)


@pytest.mark.parametrize("peer", [("10.0.0.1", 5000), ("10.0.0.2", 5000), ("::1", 5000, 0, 0), "unix"])
def test_forwarding_headers_count_from_trusted_peers_only_as_gunicorn_decides(peer):
    raw = (b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n"
           b"X-Forwarded-For: 1.2.3.4\r\n\r\n")
    cfg = settled.SettledConfig(_config(forwarded_allow_ips="10.0.0.1"))
    schemes = []
    for mesg_class in (message.Request, settled.Request):
        for _ in range(2):  # the second time from the cache
            p = parser.RequestParser(cfg, _Source(raw), peer)
            p.mesg_class = mesg_class
            req = next(p)
            schemes.append(req.scheme)
    assert len(set(schemes)) == 1
    assert schemes[0] == ("https" if peer in (("10.0.0.1", 5000), "unix") else "http")
