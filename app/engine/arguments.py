"""JSON arguments -> `targetArgs`, and a result back to JSON: the one home of the server's mapping
between JSON and the SDKs' MessagePack.

A schedule (and later a synchronous execute route) gets a function's positional arguments as
JSON; a worker expects them as both SDKs send them: base64 of the argument array in MessagePack
as msgpackr writes it (every map with a map16 header, never fixmap; ints in their smallest form;
floats as float64). The server image does not install the Python SDK (and app/ shares no code with
it), so this is a small packer of its own for what JSON holds (null, bool, int, float, str, list,
dict), byte for byte the SDK's `pack_args` of the same Python values (tests check both it and the
published SDK's msgpackr).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
import struct

MAX_DEPTH = 64  # what json.loads gave us is bounded already; this keeps the recursion shallow


class ArgumentsError(ValueError):
    """The value cannot become call arguments; the message names the part (e.g. `arguments[0].x`)."""


def pack_arguments(args: list) -> str:
    """base64(MessagePack(args)) for a JSON array of positional arguments."""
    if not isinstance(args, list):
        raise ArgumentsError(f"arguments must be a JSON array of positional arguments, not {_kind(args)}")
    out = bytearray()
    _pack(args, out, "arguments", 0)
    return base64.b64encode(bytes(out)).decode("ascii")


def _kind(value) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _pack(value, out: bytearray, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ArgumentsError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(0xC0)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, int):
        _int(value, out, where)
    elif isinstance(value, float):
        if not math.isfinite(value):  # json.loads accepts NaN and Infinity; JSON does not
            raise ArgumentsError(f"{where}: {value} is not a JSON number")
        out.append(0xCB)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        _str(value, out, where)
    elif isinstance(value, list):
        n = len(value)
        out += bytes((0x90 | n,)) if n < 16 else (b"\xdc" + struct.pack(">H", n) if n < 0x10000
                                                   else b"\xdd" + struct.pack(">I", n))
        for i, item in enumerate(value):
            _pack(item, out, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        n = len(value)
        out += b"\xde" + struct.pack(">H", n) if n < 0x10000 else b"\xdf" + struct.pack(">I", n)
        for key, item in value.items():
            _str(key, out, where)
            _pack(item, out, f"{where}.{key}", depth + 1)
    else:
        raise ArgumentsError(f"{where}: a {type(value).__name__} is not a JSON value")


def _int(n: int, out: bytearray, where: str) -> None:
    if not -0x8000000000000000 <= n < 0x10000000000000000:
        raise ArgumentsError(f"{where}: integer {n} does not fit in 64 bits")
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
    elif n >= 0:
        out += b"\xcf" + struct.pack(">Q", n)
    elif -0x80 <= n:
        out += b"\xd0" + struct.pack(">b", n)
    elif -0x8000 <= n:
        out += b"\xd1" + struct.pack(">h", n)
    elif -0x80000000 <= n:
        out += b"\xd2" + struct.pack(">i", n)
    else:
        out += b"\xd3" + struct.pack(">q", n)


def _str(s: str, out: bytearray, where: str) -> None:
    try:
        data = s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (json.loads lets "\ud800" through)
        raise ArgumentsError(f"{where}: string is not valid Unicode (a lone surrogate)") from None
    n = len(data)
    if n < 0x20:
        out.append(0xA0 | n)
    elif n < 0x100:
        out += bytes((0xD9, n))
    elif n < 0x10000:
        out += b"\xda" + struct.pack(">H", n)
    else:
        out += b"\xdb" + struct.pack(">I", n)
    out += data


# --- MessagePack -> JSON (a call's result, for POST /clusters/:id/execute) -----------------------
#
# The reverse mapping, for what both SDKs write (msgpackr's defaults; the Python SDK's serialize.py):
#   nil, bool, str, array, map         -> the same JSON value
#   int (any width, up to 2^64 - 1)    -> a JSON number, written exactly (past 2^53, JavaScript's
#                                         JSON.parse rounds it; Python's json does not)
#   float32/64                         -> a number; NaN, Infinity, -Infinity -> null (as JSON.stringify);
#                                         a whole one up to 2^53 -> an integer (3.0 -> 3, as JSON.stringify:
#                                         msgpackr writes every JS number past 32 bits as a float64)
#   bin (a Buffer, bytes)              -> base64 text
#   timestamp (ext -1: a JS Date,      -> ISO 8601 UTC text, "2024-01-02T03:04:05.678Z" (3, 6 or 9
#     a Python aware datetime)            fraction digits, as few as exact); an Invalid Date -> null
#   ext 0 (msgpackr's undefined)       -> null
#   any other extension                -> {"$ext": <type>, "base64": <its data>}
#   a map key that is not text         -> its JSON text (1 -> "1", true -> "true")
#   text that is not UTF-8             -> decoded with U+FFFD for the bad bytes

MAX_DECODE_DEPTH = 200  # a result nested deeper is refused (clearly), not a RecursionError


def unpack_value(text: str | None):
    """The JSON value of base64(MessagePack) `text` (None or "" -> null); ArgumentsError if it is
    not base64 of exactly one MessagePack value."""
    if not text:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise ArgumentsError("the payload is not base64") from None
    reader = _Reader(data)
    value = reader.value(0)
    if reader.pos != len(data):
        raise ArgumentsError(f"the payload has {len(data) - reader.pos} bytes after its MessagePack value")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ArgumentsError("the payload's MessagePack is cut short")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self, depth: int):
        if depth > MAX_DECODE_DEPTH:
            raise ArgumentsError(f"the payload is nested deeper than {MAX_DECODE_DEPTH} levels")
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.text(b & 0x1F)
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        sized = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
        if b in sized:
            return base64.b64encode(self.take(self.unpack(sized[b]))).decode("ascii")
        if b in (0xC7, 0xC8, 0xC9):
            n = self.unpack({0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}[b])
            return self.ext(self.unpack(">b"), n)
        if b in (0xCA, 0xCB):
            x = self.unpack(">f" if b == 0xCA else ">d")
            if not math.isfinite(x):
                return None
            return int(x) if x.is_integer() and abs(x) <= _SAFE_INTEGER else x
        ints = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in ints:
            return self.unpack(ints[b])
        if 0xD4 <= b <= 0xD8:
            return self.ext(self.unpack(">b"), 1 << (b - 0xD4))
        if b in (0xD9, 0xDA, 0xDB):
            return self.text(self.unpack({0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}[b]))
        if b in (0xDC, 0xDD):
            return self.array(self.unpack(">H" if b == 0xDC else ">I"), depth)
        if b in (0xDE, 0xDF):
            return self.map(self.unpack(">H" if b == 0xDE else ">I"), depth)
        raise ArgumentsError(f"the payload holds byte 0x{b:02x}, which starts no MessagePack value")

    def text(self, n: int) -> str:
        return self.take(n).decode("utf-8", errors="replace")

    def room(self, n: int) -> None:  # every item takes a byte at least: a bogus length fails before a big list
        if n > len(self.data) - self.pos:
            raise ArgumentsError("the payload's MessagePack is cut short")

    def array(self, n: int, depth: int) -> list:
        self.room(n)
        return [self.value(depth + 1) for _ in range(n)]

    def map(self, n: int, depth: int) -> dict:
        self.room(n)
        out = {}
        for _ in range(n):
            key = self.value(depth + 1)
            out[key if isinstance(key, str) else json.dumps(key, sort_keys=True)] = self.value(depth + 1)
        return out

    def ext(self, code: int, n: int):
        data = self.take(n)
        if code == 0:  # msgpackr's undefined
            return None
        if code == -1:
            return _timestamp(data)
        return {"$ext": code, "base64": base64.b64encode(data).decode("ascii")}


def _timestamp(data: bytes):
    if len(data) == 4:
        seconds, nanos = struct.unpack(">I", data)[0], 0
    elif len(data) == 8:
        both = struct.unpack(">Q", data)[0]
        seconds, nanos = both & 0x3_FFFF_FFFF, both >> 34
    elif len(data) == 12:
        nanos, seconds = struct.unpack(">Iq", data)
    elif len(data) == 1:  # msgpackr's Invalid Date
        return None
    else:
        return {"$ext": -1, "base64": base64.b64encode(data).decode("ascii")}
    try:
        when = _EPOCH + dt.timedelta(seconds=seconds)
    except OverflowError:  # beyond years 1..9999: no ISO text for it
        return {"$timestamp": {"seconds": seconds, "nanoseconds": nanos}}
    fraction = f"{nanos:09d}"
    digits = 3 if fraction.endswith("000000") else 6 if fraction.endswith("000") else 9
    return when.isoformat(timespec="seconds") + "." + fraction[:digits] + "Z"


_EPOCH = dt.datetime(1970, 1, 1)
_SAFE_INTEGER = 2**53
