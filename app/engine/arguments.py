"""JSON arguments -> `targetArgs`: the one home of the server's encoding of a call's arguments.

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
