"""What the event loop needs to know of a request head before the request gets a thread.

The loop only decides when a request is complete enough to run and on which queue; the thread's
parser (plain.py, or gunicorn's for anything not plain) still parses (and refuses) every request,
from the same bytes. So this reading is lenient: whatever it cannot make sense of is handed to
that parser at once, which answers the error.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Head:
    size: int  # bytes of the head, the blank line included
    method: bytes
    path: bytes  # the target without its query
    body_length: int | None  # None: not known from the head alone (chunked, Expect, malformed)
    queue: bytes | None  # the credential's hash; None for requests without one

    @property
    def is_live(self) -> bool:
        return self.method in (b"GET", b"HEAD") and self.path == b"/live"


def find_end(buf: bytes | bytearray, start: int = 0) -> int:
    """The size of the head in `buf` (through its blank line), or -1 while it is incomplete.
    `start`: how far earlier calls already looked, so a trickled head is scanned once."""
    at = buf.find(HEAD_END, max(0, start - len(HEAD_END) + 1))
    return -1 if at < 0 else at + len(HEAD_END)


def malformed_so_far(buf: bytes | bytearray) -> bool:
    """A bare LF: gunicorn refuses it as soon as it sees it, so the head need not be waited for."""
    return buf.count(b"\n") != buf.count(b"\r\n")


def credential_queue(value: bytes) -> bytes | None:
    """The queue of an Authorization value: a hash of its token (the scheme word is ignored by the
    app, so `Basic x` and `Bearer x` are one credential). The hash keeps secrets out of the keys."""
    parts = value.split()
    if not parts:
        return None
    return hashlib.blake2b(parts[-1], digest_size=16).digest()


def parse(head: bytes) -> Head:
    """Read the request line and the framing and credential headers of a complete head."""
    lines = head[: -len(HEAD_END)].split(b"\r\n")
    if lines and lines[0] == b"":  # one empty line before the request line is allowed
        lines = lines[1:]
    words = lines[0].split(b" ") if lines else []
    method = words[0] if len(words) == 3 else b""
    path = words[1].split(b"?", 1)[0] if len(words) == 3 else b""
    lengths: list[bytes] = []
    framed_otherwise = False
    queue = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            framed_otherwise = True  # not a header line: let the parser say so
            continue
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name in (b"transfer-encoding", b"expect"):
            # A chunked body has no length up front; a client that expects 100-continue sends its
            # body only after gunicorn answers it, in the thread.
            framed_otherwise = True
        elif name == b"authorization":
            queue = credential_queue(value)
    body_length: int | None = 0
    if framed_otherwise or len(lengths) > 1:
        body_length = None
    elif lengths:
        digits = lengths[0]
        body_length = int(digits) if digits.isdigit() and len(digits) <= 18 else None
    return Head(len(head), method, path, body_length, queue)
