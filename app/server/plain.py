"""Requests in the plain form every client of this server sends, read in one pass; any other to gunicorn.

gunicorn's parser reads a head line by line in Python and applies its header policy field by
field: 8.6 % of the 10,000 burst's GIL samples (bench/README.md, "Plain requests read in one pass").
Almost every request here is plain: an HTTP/1.x request line with an origin-form target, fields of
printable ASCII with no underscore in a name, and a body of known length already buffered by the
event loop. Such a head is checked by one regular expression and split by another; everything
else about the request (its environ, keep-alive, its body's drain) is gunicorn's own, on a
gunicorn `Request` with the fields gunicorn's parser would have given it.

Only what is certain to read the same is read here. Whatever is not plain goes to gunicorn's
parser from the same bytes, which reads it or refuses it as it always did: obsolete folding, bare
LF, bytes outside ASCII, underscores (gunicorn drops or refuses those fields), a repeated Host,
Content-Type or Content-Length, Transfer-Encoding, Expect, Upgrade, CONNECT, a `//` or `#` in the
target, a head at any of the size limits. tests/controlplane/test_plain_requests.py holds both
readings equal over a corpus and generated heads.
"""
from __future__ import annotations

import io
import re
from functools import lru_cache

from gunicorn.http import message, parser

from . import settled

# A request line and fields, in the strict subset read here. Field values are printable ASCII,
# spaces and tabs; a name is a token without `_`.
_TOKEN = rb"[!#$%&'*+\-.^`|~0-9A-Za-z]+"
_HEAD = re.compile(rb"([A-Z]{3,20}) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n((?:" + _TOKEN + rb":[\t\x20-\x7e]*\r\n)*)\r\n")
_FIELD = re.compile("(" + _TOKEN.decode() + "):[ \t]*([^\r]*?)[ \t]*\r\n")  # over the fields as text
_END = b"\r\n\r\n"

# Fields whose reading is more than copying them (gunicorn's policy, message.HeaderPolicy and
# Message.set_body_reader): a request with one of these goes to gunicorn's parser.
_NOT_PLAIN_FIELDS = frozenset(("TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "TE", "TRAILER"))
_SINGLETONS = frozenset(("HOST", "CONTENT-TYPE", "CONTENT-LENGTH"))
_SPECIAL = _NOT_PLAIN_FIELDS | _SINGLETONS
_LENGTH_DIGITS = 18


class Plain(settled.Request):
    """A gunicorn request whose head was read here: the attributes gunicorn's parser sets, and
    its methods (should_close, force_close) unchanged."""

    def __init__(self, cfg, peer_addr, req_number: int, method: str, uri: str, version: tuple[int, int],
                 headers: list[tuple[str, str]], scheme: str, body: bytes) -> None:
        # gunicorn's Message and Request __init__ would parse; these are the fields they set.
        self.cfg, self.unreader = cfg, None
        self.peer_addr = self.remote_addr = peer_addr
        self.req_number, self.proxy_protocol_info = req_number, None
        self.method, self.uri, self.version, self.headers, self.trailers = method, uri, version, headers, []
        path, _, query = uri.partition("?")
        self.path, self.query, self.fragment = path, query, ""
        self.scheme, self.must_close, self._expected_100_continue = scheme, False, False
        self.body = io.BytesIO(body)  # all of it is here: nothing to read from the socket


@lru_cache(maxsize=8)  # per worker config: settled for the worker's life
def _limits(cfg) -> tuple[int, int, int]:
    """gunicorn's limits on the request line, the number of fields and a field's line, as its
    Request applies them (0 for "unlimited" is taken as gunicorn's maximum: such a head goes to
    gunicorn). A head at or past any of them is not read here."""
    line = cfg.limit_request_line
    line = message.MAX_REQUEST_LINE if line <= 0 or line > message.MAX_REQUEST_LINE else line
    fields = cfg.limit_request_fields
    fields = message.MAX_HEADERS if fields <= 0 or fields > message.MAX_HEADERS else fields
    size = cfg.limit_request_field_size
    size = message.DEFAULT_MAX_HEADERFIELD_SIZE if size <= 0 else size
    return line, fields, size


def read(buffered: bytes, cfg, peer_addr, req_number: int) -> tuple[Plain, int] | None:
    """The request at the start of `buffered` and its size in bytes, head and body; None when it is
    not plain or not all there (gunicorn's parser then reads it)."""
    end = buffered.find(_END)
    if end < 0:
        return None
    head_size = end + 4
    found = _HEAD.fullmatch(buffered, 0, head_size)
    if found is None:
        return None
    method, target, minor, block = found.groups()
    line_limit, fields_limit, field_size_limit = _limits(cfg)
    if (len(method) + len(target) + 10 >= line_limit or len(block) >= field_size_limit
            or method == b"CONNECT" or target.startswith(b"//") or b"#" in target):
        return None  # (all the fields together under one field's limit: none of them is near it)
    fields = _FIELD.findall(block.decode("ascii"))
    if len(fields) >= fields_limit:
        return None
    secure_scheme_headers = cfg.secure_scheme_headers
    scheme, scheme_set, trusted = "http", False, None  # plain HTTP only: the worker reads ahead only without TLS
    seen: set[str] = set()
    headers: list[tuple[str, str]] = []
    length = 0
    for name, value in fields:
        name = name.upper()
        headers.append((name, value))
        if name not in _SPECIAL and name not in secure_scheme_headers:
            continue
        if name in _SINGLETONS:
            if name in seen:
                return None
            seen.add(name)
            if name == "CONTENT-LENGTH":
                if not value.isdigit() or len(value) > _LENGTH_DIGITS:  # the head is ASCII
                    return None
                length = int(value)
        elif name in _NOT_PLAIN_FIELDS:
            return None
        if name in secure_scheme_headers:
            if trusted is None:  # asked only when a scheme header is there
                trusted = settled.may_forward(peer_addr, cfg)
            if trusted:
                this = "https" if value == secure_scheme_headers[name] else "http"
                if scheme_set and this != scheme:
                    return None  # gunicorn refuses conflicting scheme headers
                scheme, scheme_set = this, True
    size = head_size + length
    if len(buffered) < size:
        return None
    return Plain(cfg, peer_addr, req_number, method.decode("ascii"), target.decode("ascii"), (1, int(minor)),
                 headers, scheme, buffered[head_size:size]), size


class Parser(parser.RequestParser):
    """gunicorn's request parser over a connection's RequestSource, reading a plain request that the
    loop buffered whole here, and any other with gunicorn's own request class."""

    mesg_class = settled.Request

    def __next__(self):
        if self.mesg and self.mesg.should_close():
            raise StopIteration()
        if not self.finish_body():
            raise StopIteration()
        source, unreader = self.unreader.sock, self.unreader
        got = None
        if not unreader.buf.seek(0, io.SEEK_END):  # no read-ahead of gunicorn's own: the source has it all
            got = read(source.buffered(), self.cfg, self.source_addr, self.req_count + 1)
        if got is None:
            return super().__next__()
        self.req_count += 1
        self.mesg, size = got
        source.consume(size)
        return self.mesg

    next = __next__
