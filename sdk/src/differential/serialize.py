"""MessagePack encoding that matches msgpackr as `@differentialhq/core` uses it, plus the
serialize-error shape for exceptions.

Why a hand-written packer: msgpackr writes every map with a map16 header (`de 00 NN`), even
small ones, and writes dates with its own choice among the timestamp forms. The C packer of
`msgpack` cannot be told to do either, so the bytes would differ from what a TypeScript peer writes.
Reading uses `msgpack.unpackb` (fast, strict) with hooks for msgpackr's extensions.

What crosses the wire (anything else is refused with SerializationError before sending):

    None -> nil          bool -> true/false      int (-2**63 .. 2**64-1) -> smallest int form
    float -> float64     str -> str              bytes/bytearray/memoryview -> bin
    list/tuple -> array  dict (str keys) -> map16 (map32 above 65535 keys)
    datetime (timezone-aware) -> timestamp extension -1, as msgpackr writes a JS Date

Read side: msgpackr's `undefined` (ext 0) -> None; timestamp -> aware UTC datetime.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import os
import struct
import traceback
from typing import Any, List, Mapping, Optional

import msgpack

from .errors import RemoteError, SerializationError

_MAX_DEPTH = 256  # deeper nesting is almost certainly a cycle; msgpackr would overflow its stack
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _where(path: List[str]) -> str:
    return "".join(path)


class _Packer:
    def __init__(self) -> None:
        self.out = bytearray()

    def pack(self, obj: Any, path: List[str], depth: int) -> None:
        out = self.out
        if depth > _MAX_DEPTH:
            raise SerializationError(f"{_where(path)}: nested deeper than {_MAX_DEPTH} levels (a cycle?)")
        if obj is None:
            out.append(0xC0)
        elif obj is True:
            out.append(0xC3)
        elif obj is False:
            out.append(0xC2)
        elif isinstance(obj, int):
            self._int(int(obj), path)
        elif isinstance(obj, float):
            out.append(0xCB)
            out += struct.pack(">d", obj)
        elif isinstance(obj, str):
            self._str(obj, path)
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            data = bytes(obj)
            n = len(data)
            if n < 0x100:
                out += bytes((0xC4, n))
            elif n < 0x10000:
                out += b"\xc5" + struct.pack(">H", n)
            elif n < 0x100000000:
                out += b"\xc6" + struct.pack(">I", n)
            else:
                raise SerializationError(f"{_where(path)}: bytes longer than 4 GiB")
            out += data
        elif isinstance(obj, _dt.datetime):
            self._datetime(obj, path)
        elif isinstance(obj, (list, tuple)):
            n = len(obj)
            if n < 16:
                out.append(0x90 | n)
            elif n < 0x10000:
                out += b"\xdc" + struct.pack(">H", n)
            else:
                out += b"\xdd" + struct.pack(">I", n)
            for i, item in enumerate(obj):
                path.append(f"[{i}]")
                self.pack(item, path, depth + 1)
                path.pop()
        elif isinstance(obj, dict):
            n = len(obj)
            # msgpackr: always map16, never fixmap. It cannot write more than 65535 keys itself,
            # but reads map32, so that is what we write for larger maps.
            if n < 0x10000:
                out += b"\xde" + struct.pack(">H", n)
            else:
                out += b"\xdf" + struct.pack(">I", n)
            for key, value in obj.items():
                if not isinstance(key, str):
                    raise SerializationError(
                        f"{_where(path)}: dict key {key!r} is a {type(key).__name__}; only str keys "
                        "can cross the wire (JavaScript object keys are strings)"
                    )
                self._str(key, path)
                path.append(f"[{key!r}]")
                self.pack(value, path, depth + 1)
                path.pop()
        else:
            raise SerializationError(
                f"{_where(path)}: a {type(obj).__module__}.{type(obj).__qualname__} cannot cross the wire; "
                "supported: None, bool, int, float, str, bytes, list, tuple, dict with str keys, "
                "timezone-aware datetime"
            )

    def _int(self, n: int, path: List[str]) -> None:
        out = self.out
        if 0 <= n < 0x80:
            out.append(n)
        elif -0x20 <= n < 0:
            out.append(n & 0xFF)
        elif 0 <= n < 0x100:
            out += bytes((0xCC, n))
        elif 0 <= n < 0x10000:
            out += b"\xcd" + struct.pack(">H", n)
        elif 0 <= n < 0x100000000:
            out += b"\xce" + struct.pack(">I", n)
        elif 0 <= n < 0x10000000000000000:
            out += b"\xcf" + struct.pack(">Q", n)
        elif -0x80 <= n < 0:
            out += b"\xd0" + struct.pack(">b", n)
        elif -0x8000 <= n < 0:
            out += b"\xd1" + struct.pack(">h", n)
        elif -0x80000000 <= n < 0:
            out += b"\xd2" + struct.pack(">i", n)
        elif -0x8000000000000000 <= n < 0:
            out += b"\xd3" + struct.pack(">q", n)
        else:
            raise SerializationError(
                f"{_where(path)}: integer {n} does not fit in 64 bits (range -2**63 .. 2**64-1)"
            )

    def _str(self, s: str, path: List[str]) -> None:
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates
            raise SerializationError(f"{_where(path)}: string is not valid Unicode ({e.reason})") from None
        n = len(data)
        out = self.out
        if n < 0x20:
            out.append(0xA0 | n)
        elif n < 0x100:
            out += bytes((0xD9, n))
        elif n < 0x10000:
            out += b"\xda" + struct.pack(">H", n)
        elif n < 0x100000000:
            out += b"\xdb" + struct.pack(">I", n)
        else:
            raise SerializationError(f"{_where(path)}: string longer than 4 GiB")
        out += data

    def _datetime(self, d: _dt.datetime, path: List[str]) -> None:
        if d.tzinfo is None or d.utcoffset() is None:
            raise SerializationError(
                f"{_where(path)}: naive datetime {d.isoformat()} has no timezone; attach one "
                "(e.g. datetime.now(timezone.utc)) so both sides agree on the instant"
            )
        delta = d - _EPOCH
        seconds = delta.days * 86400 + delta.seconds
        nanos = delta.microseconds * 1000
        out = self.out
        # msgpackr's choice: seconds in uint32 -> ts32 (no fraction) or ts64; otherwise ts96.
        if 0 <= seconds < 0x100000000:
            if nanos == 0:
                out += b"\xd6\xff" + struct.pack(">I", seconds)
            else:
                out += b"\xd7\xff" + struct.pack(">Q", (nanos << 34) | seconds)
        else:
            out += b"\xc7\x0c\xff" + struct.pack(">Iq", nanos, seconds)


def to_msgpack(value: Any, root: str = "value") -> bytes:
    """Encode one value as msgpackr would; raises SerializationError naming the bad part."""
    p = _Packer()
    p.pack(value, [root], 0)
    return bytes(p.out)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0:  # msgpackr's `undefined` (d4 00 00)
        return None
    raise SerializationError(f"unsupported MessagePack extension type {code} in received data")


def from_msgpack(data: bytes) -> Any:
    """Decode MessagePack written by msgpackr (or by us)."""
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False, timestamp=3, ext_hook=_ext_hook,
            use_list=True,
        )
    except SerializationError:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as e:
        raise SerializationError(f"received data is not valid MessagePack: {e}") from None


def pack(value: Any, root: str = "value") -> str:
    """base64(msgpack(value)): the format of `targetArgs` and `result` on the wire."""
    return base64.b64encode(to_msgpack(value, root)).decode("ascii")


def unpack(text: Optional[str]) -> Any:
    if text is None or text == "":
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SerializationError(f"received data is not valid base64: {e}") from None
    return from_msgpack(raw)


def pack_args(args: Any) -> str:
    """Positional arguments always travel as one array."""
    return pack(list(args), "args")


def unpack_args(text: Optional[str]) -> list:
    value = unpack(text)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SerializationError(f"targetArgs must be an array of positional arguments, got {type(value).__name__}")
    return value


# -- errors -------------------------------------------------------------------------------------

_ERROR_SKIP = {"args", "with_traceback", "add_note"}


def _wire_safe(value: Any) -> bool:
    try:
        to_msgpack(value)
        return True
    except SerializationError:
        return False


_PACKAGE_DIR = os.path.dirname(__file__) + os.sep


def _format_stack(exc: BaseException) -> str:
    """The traceback without this SDK's own frames (the worker loop is noise to the caller)."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    frames = [f for f in te.stack if not f.filename.startswith(_PACKAGE_DIR)]
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format()).rstrip("\n")


def serialize_error(exc: BaseException, _depth: int = 0) -> dict:
    """An exception as the serialize-error map the TypeScript SDK writes and reads:
    `name`, `message`, `stack`, `code` (if any), `cause` (if any), plus public attributes."""
    if isinstance(exc, RemoteError):
        out: dict = {"name": exc.name, "message": exc.message}
        if exc.stack is not None:
            out["stack"] = exc.stack
        for key, value in exc.details.items():
            if key not in out and key not in ("code", "cause") and _wire_safe(value):
                out[key] = value
    else:
        out = {"name": type(exc).__name__, "message": str(exc)}
        out["stack"] = _format_stack(exc)
        for key, value in vars(exc).items() if hasattr(exc, "__dict__") else ():
            if key.startswith("_") or key in out or key in _ERROR_SKIP or key in ("code", "cause"):
                continue
            if _wire_safe(value):
                out[key] = value
    code = getattr(exc, "code", None)
    if code is not None and _wire_safe(code):
        out["code"] = code
    cause = exc.__cause__
    if cause is not None and _depth < 8:
        out["cause"] = serialize_error(cause, _depth + 1)
    return out


def deserialize_error(value: Any, job_id: Optional[str] = None, _depth: int = 0) -> RemoteError:
    """Rebuild a RemoteError from a rejection payload (a serialize-error map, or the
    `[name, message, cause]` array msgpackr writes for a bare JS Error)."""
    if isinstance(value, Mapping):
        name = str(value.get("name") or "Error")
        message = value.get("message")
        message = "" if message is None else str(message)
        stack = value.get("stack")
        cause_val = value.get("cause")
        cause = (
            deserialize_error(cause_val, None, _depth + 1)
            if isinstance(cause_val, (Mapping, list)) and _depth < 8 else None
        )
        details = {k: v for k, v in value.items() if k not in ("name", "message", "stack", "cause")}
        return RemoteError(
            name, message, code=value.get("code"), stack=stack if isinstance(stack, str) else None,
            cause=cause, details=details, job_id=job_id,
        )
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) or v is None for v in value[:2]):
        return RemoteError(str(value[0] or "Error"), str(value[1] or ""), job_id=job_id)
    if isinstance(value, str):
        return RemoteError("Error", value, job_id=job_id)
    return RemoteError("NonError", repr(value), details={"value": value}, job_id=job_id)
