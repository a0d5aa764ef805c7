"""Plain requests read in one pass (app/server/plain.py) read exactly as gunicorn's parser reads them.

Every head is read both ways: whenever plain.read takes a request, gunicorn's parser takes it too,
with the same request line, fields, scheme, body, keep-alive and environ, and leaves the same
bytes after it. What plain.read does not take goes to gunicorn's parser unchanged, so a request
it refuses is refused as before. The heads real clients send must be taken (else the fast path
would silently never run).
"""
from __future__ import annotations

import io

import pytest
from gunicorn.config import Config
from gunicorn.http import parser, wsgi
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from app.server import plain, settled
from app.server.source import RequestSource

PEER, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 4000)
_IDENTITY_KEYS = ("wsgi.input", "wsgi.errors", "wsgi.early_hints", "gunicorn.socket")


def _config(**values):
    cfg = Config()
    for name, value in values.items():
        cfg.set(name, value)
    return settled.SettledConfig(cfg)


CONFIGS = {
    "default": _config(),
    "trust-all": _config(forwarded_allow_ips="*"),
    "trust-none": _config(forwarded_allow_ips=""),
    "small-limits": _config(limit_request_line=60, limit_request_fields=4, limit_request_field_size=40),
}


class _Bytes:
    """A client's bytes, as a socket gives them to a parser."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def recv(self, size: int) -> bytes:
        return self._data.read(size)

    def rest(self) -> bytes:
        return self._data.read()

    def settimeout(self, _value) -> None:
        pass


def _gunicorn(raw: bytes, cfg, peer):
    """(request, body, bytes left after it) as gunicorn reads them, or None when it refuses."""
    source = _Bytes(raw)
    p = parser.RequestParser(cfg, source, peer)
    p.mesg_class = settled.Request
    try:
        req = next(p)
        body = req.body.read()
    except Exception:  # noqa: BLE001 - any refusal: the plain reading must not take it either
        return None
    return req, body, p.unreader.take_buffered() + source.rest()


def _environ(req, cfg, peer) -> dict:
    _resp, environ = wsgi.create(req, None, peer, SERVER, cfg)
    return {k: v for k, v in environ.items() if k not in _IDENTITY_KEYS}


def _same_reading(raw: bytes, cfg, peer=PEER) -> bool:
    """Assert both readings agree; whether plain.read took the request."""
    got = plain.read(raw, cfg, peer, 1)
    if got is None:
        return False
    theirs = _gunicorn(raw, cfg, peer)
    assert theirs is not None, f"plain took a request gunicorn refuses: {raw!r}"
    req, body, left = theirs
    ours, size = got
    for name in ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme",
                 "_expected_100_continue", "proxy_protocol_info"):
        assert getattr(ours, name) == getattr(req, name), (name, raw)
    assert ours.should_close() == req.should_close(), raw
    assert ours.body.read() == body, raw
    assert raw[size:] == left, raw
    assert _environ(ours, cfg, peer) == _environ(req, cfg, peer), raw
    return True


# What the clients of this server send (the published SDK's undici, our SDK's httpx, curl, a
# browser, a proxy in front), each of which must be read in one pass.
_BODY = b'{"targetFn":"echo","targetArgs":"kQE=","service":"s"}'
CLIENT_HEADS = [
    b"POST /jobs HTTP/1.1\r\nhost: 127.0.0.1:4000\r\nconnection: keep-alive\r\ncontent-type: application/json\r\n"
    b"authorization: Basic sk_abc\r\nx-machine-id: m-1\r\naccept: */*\r\naccept-language: *\r\n"
    b"sec-fetch-mode: cors\r\nuser-agent: node\r\naccept-encoding: gzip, deflate\r\ncontent-length: %d\r\n\r\n"
    % len(_BODY) + _BODY,
    b"POST /jobs/01J9ZK/result HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nUser-Agent: python-httpx/0.27.0\r\nAuthorization: Basic sk_abc\r\n"
    b"X-Machine-Id: py-1\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
    b"GET /live HTTP/1.1\r\nHost: localhost:4000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    b"GET /clusters/c1/jobs?status=pending&limit=20 HTTP/1.1\r\nHost: h\r\nCookie: s=abc; t=1\r\n"
    b"Accept: text/html,application/xhtml+xml\r\nSec-Ch-Ua: \"Chromium\";v=\"131\"\r\n\r\n",
    b"POST /batch-jobs-status-request HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Ssl: on\r\nFly-Client-IP: 1.2.3.4\r\nVia: 1.1 fly.io\r\nContent-Length: 13\r\n\r\n{\"jobIds\":[]}",
    b"GET /%7Euser/a%20b?q=%20 HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    b"POST /jobs HTTP/1.1\r\nContent-Length: 0\r\nX-Empty:\r\nX-Spaces:   a b\t \r\n\r\n",
]


@pytest.mark.parametrize("raw", CLIENT_HEADS, ids=range(len(CLIENT_HEADS)))
@pytest.mark.parametrize("cfg", ["default", "trust-all", "trust-none"])
def test_what_clients_send_is_read_in_one_pass_and_as_gunicorn_reads_it(raw, cfg):
    assert _same_reading(raw, CONFIGS[cfg])


# Heads that are not plain: gunicorn reads them (or refuses them), never plain.read.
NOT_PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # repeated singleton: gunicorn refuses
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
    b"GET / HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",  # gunicorn drops underscored fields
    b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"\r\nGET / HTTP/1.1\r\n\r\n",
    b"get / HTTP/1.1\r\n\r\n",
    b"GET //x HTTP/1.1\r\n\r\n",
    b"GET /x#f HTTP/1.1\r\n\r\n",
    b"GET * HTTP/1.1\r\n\r\n",
    b"GET http://h/x HTTP/1.1\r\n\r\n",
    b"CONNECT /x HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A : 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nonly-part",  # body not all there yet
    b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",  # conflicting, trusted
    b"GET / HTTP/1.1\r\nHost: h\r\n",  # head not finished
]


@pytest.mark.parametrize("raw", NOT_PLAIN, ids=range(len(NOT_PLAIN)))
def test_what_is_not_plain_is_left_to_gunicorn(raw):
    assert plain.read(raw, CONFIGS["default"], PEER, 1) is None


def test_a_head_at_gunicorns_limits_is_left_to_it():
    cfg = CONFIGS["small-limits"]
    assert _same_reading(b"GET /short HTTP/1.1\r\nA: 1\r\n\r\n", cfg)
    assert plain.read(b"GET /" + b"x" * 60 + b" HTTP/1.1\r\n\r\n", cfg, PEER, 1) is None
    assert plain.read(b"GET / HTTP/1.1\r\n" + b"A: 1\r\n" * 4 + b"\r\n", cfg, PEER, 1) is None
    assert plain.read(b"GET / HTTP/1.1\r\nA: " + b"v" * 40 + b"\r\n\r\n", cfg, PEER, 1) is None
    # A field padded with blanks is as long as gunicorn counts it, not as its value.
    assert plain.read(b"GET / HTTP/1.1\r\nA:" + b" " * 40 + b"v\r\n\r\n", cfg, PEER, 1) is None


def test_scheme_headers_count_only_from_trusted_peers():
    raw = b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert plain.read(raw, CONFIGS["default"], PEER, 1)[0].scheme == "https"
    assert plain.read(raw, CONFIGS["default"], ("10.9.9.9", 1), 1)[0].scheme == "http"
    assert plain.read(raw, CONFIGS["trust-none"], PEER, 1)[0].scheme == "http"
    for cfg in ("default", "trust-none"):
        for peer in (PEER, ("10.9.9.9", 1), "unix"):
            assert _same_reading(raw, CONFIGS[cfg], peer)


# Generated heads: the plain form and near-misses of it, each read both ways.
def _mostly(good: list, bad: list):
    """Mostly one of `good`, now and then one of `bad`: most generated heads stay near plain."""
    return st.sampled_from(good * (1 + 10 * len(bad) // max(1, len(good))) + bad)


_NAMES = (["Host", "Content-Length", "content-type", "Connection", "X-Forwarded-Proto", "X-Forwarded-Ssl",
           "X-A", "Cookie", "Accept", "authorization", "x-machine-id"],
          ["Transfer-Encoding", "Expect", "X_Forwarded_For", "x a", "X-A ", "", "Upgrade", "TE", "Trailer",
           "SCRIPT_NAME", "X-\xe9", "X-Forwarded-Protocol"])
_VALUES = (["", "1", "2", "0", "01", "close", "keep-alive", "Keep-Alive", "https", "on", "http", "a\tb", "h",
            "h:80", "a, b", "  ", "x" * 30],
           ["+1", "1 ", " 1", "a\x01b", "\xe9", "chunked", "100-continue", "\x7f", "x" * 50, "\u00b2"])
_TARGETS = (["/", "/jobs", "/jobs/a%2Fb/result", "/a?b=c", "/a?", "/a?b?c", "/%zz", "/a;b", "/:", "/?%"],
            ["//a", "/a#b", "*", "/a b", "/caf\xe9", "http://h/a", "/" + "y" * 70])


@st.composite
def _heads(draw) -> bytes:
    method = draw(_mostly(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"],
                          ["CONNECT", "get", "GE", "GETX-LONG-METHOD-NAME", "G#T"]))
    target = draw(_mostly(*_TARGETS))
    version = draw(_mostly(["HTTP/1.1", "HTTP/1.0"], ["HTTP/2.0", "HTTP/1.10", "http/1.1", "HTTP/0.9"]))
    eol = draw(_mostly(["\r\n"], ["\n", "\r"]))
    fields = draw(st.lists(st.tuples(_mostly(*_NAMES), _mostly([":", ": "], [":\t", " :"]), _mostly(*_VALUES)),
                           max_size=6))
    body = draw(st.sampled_from(["", "ab", "abcdef"]))
    lead = draw(_mostly([""], ["\r\n"]))
    head = lead + f"{method} {target} {version}\r\n" + "".join(f"{n}{c}{v}{eol}" for n, c, v in fields) + "\r\n"
    tail = draw(st.sampled_from(["", "GET / HTTP/1.1\r\n\r\n"]))
    return (head + body + tail).encode("latin-1")


@hsettings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_heads(), cfg=st.sampled_from(sorted(CONFIGS)), peer=st.sampled_from([PEER, ("10.9.9.9", 1), "unix"]))
def test_generated_heads_read_the_same_both_ways(raw, cfg, peer):
    _same_reading(raw, CONFIGS[cfg], peer)


def test_the_connections_parser_takes_plain_requests_from_the_buffer_and_others_from_gunicorn():
    chunked = b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    first, third = CLIENT_HEADS[1], b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
    stream = first + chunked + third
    cfg = CONFIGS["default"]
    source = RequestSource(_Bytes(stream[len(first) + 5:]))  # the loop buffered a little of the second
    source.start(stream[:len(first) + 5], deadline=None, seconds=1.0)
    p = plain.Parser(cfg, source, PEER)
    seen = []
    for _ in range(3):
        req = next(p)
        seen.append((type(req), req.path, req.body.read()))
    assert seen == [(plain.Plain, "/jobs/01J9ZK/result", b"{}"), (settled.Request, "/b", b"abc"),
                    (settled.Request, "/c", b"")]
    assert p.req_count == 3
