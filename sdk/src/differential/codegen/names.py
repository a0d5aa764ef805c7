"""Identifiers for generated code from service, function and field names (which may be any text)."""
from __future__ import annotations

import keyword
import re

_WORD = re.compile(r"[A-Za-z0-9]+")

TS_RESERVED = frozenset("""break case catch class const continue debugger default delete do else enum export extends
false finally for function if import in instanceof new null return super switch this throw true try typeof var void
while with as implements interface let package private protected public static yield any boolean constructor declare
get module require number set string symbol type from of unknown never object""".split())


def pascal(text: str, fallback: str = "X") -> str:
    words = _WORD.findall(text)
    out = "".join(w[:1].upper() + w[1:] for w in words) or fallback
    return out if not out[0].isdigit() else fallback + out


def camel(text: str, fallback: str = "x") -> str:
    p = pascal(text, fallback.capitalize())
    return p[:1].lower() + p[1:]


def python_identifier(text: str) -> str:
    """`text` itself when it is a usable Python name, else a close one (keywords get a `_`)."""
    out = text if text.isidentifier() else re.sub(r"\W", "_", text)
    if not out or not out.isidentifier():
        out = "_" + out
    if keyword.iskeyword(out):
        out += "_"
    return out


def ts_identifier(text: str) -> str:
    out = text if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", text) else camel(text)
    return out + "_" if out in TS_RESERVED else out


def unique(name: str, taken: set) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}{n}", n + 1
    taken.add(out)
    return out
