"""JSON Schema (draft-07) of a function's parameters, derived from its signature and type hints.

The worker sends it with every `/jobs-request` as `functions[].schema` (a JSON *string*), the
field the TypeScript SDK at HEAD sends from its zod input. The shape is the same as HEAD's: an
object whose properties are the parameters, in signature order, with `required` for those without
a default. Arguments still travel positionally (an array in that order); `x-positional: true`
says so for tools that build calls from the schema.

Only parameters that can be passed positionally are allowed: keyword-only parameters without a
default, and `**kwargs`, cannot be reached through the wire and are refused at registration.
"""
from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as _dt
import enum
import inspect
import json
import sys
import types
import typing
from typing import Any, Callable, Dict

from .errors import DifferentialError

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_NoneType = type(None)
_UnionType = getattr(types, "UnionType", None)  # `X | Y` (3.10+)


def _literal_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def type_schema(tp: Any, _seen: frozenset = frozenset()) -> Dict[str, Any]:
    """JSON Schema of one annotation. Unknown or unannotated types give `{}` (anything)."""
    if tp is inspect.Parameter.empty or tp is Any or tp is object:
        return {}
    if tp is None or tp is _NoneType:
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp in (bytes, bytearray, memoryview):
        return {"type": "string", "contentEncoding": "binary", "x-msgpack": "bin"}
    if tp is _dt.datetime:
        return {"type": "string", "format": "date-time", "x-msgpack": "timestamp"}
    if tp in (list, tuple, cabc.Sequence):
        return {"type": "array"}
    if tp in (dict, cabc.Mapping):
        return {"type": "object"}

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (_UnionType is not None and origin is _UnionType):
        options = [type_schema(a, _seen) for a in args]
        if any(o == {} for o in options):
            return {}
        return {"anyOf": options}
    if origin is typing.Literal:
        kinds = sorted({_literal_type(a) for a in args})
        out: Dict[str, Any] = {"enum": list(args)}
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
        return out
    if sys.version_info >= (3, 9) and origin is typing.Annotated:  # type: ignore[attr-defined]
        inner = type_schema(args[0], _seen)
        for meta in args[1:]:
            if isinstance(meta, str):
                inner = {**inner, "description": meta}
        return inner
    if origin in (list, cabc.Sequence, cabc.MutableSequence, set, frozenset, cabc.Iterable):
        return {"type": "array", "items": type_schema(args[0], _seen)} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0], _seen)}
        if args == ((),):
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array", "items": [type_schema(a, _seen) for a in args],
            "minItems": len(args), "maxItems": len(args),
        }
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        out = {"type": "object"}
        if len(args) == 2 and type_schema(args[1], _seen) != {}:
            out["additionalProperties"] = type_schema(args[1], _seen)
        return out
    if isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and tp not in _seen:
        # TypedDict: a dict with known keys.
        hints = typing.get_type_hints(tp)
        required = sorted(getattr(tp, "__required_keys__", hints.keys()))
        return {
            "type": "object",
            "properties": {k: type_schema(v, _seen | {tp}) for k, v in hints.items()},
            "required": [k for k in hints if k in required],
        }
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return {}
    return {}


def _json_default(value: Any) -> Any:
    raise TypeError


def function_schema(fn: Callable[..., Any]) -> Dict[str, Any]:
    """The parameters of `fn` as a draft-07 object schema; raises DifferentialError for
    signatures that cannot be called positionally."""
    target = inspect.unwrap(fn)
    sig = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    properties: Dict[str, Any] = {}
    required = []
    for name, param in sig.parameters.items():
        annotation = hints.get(name, param.annotation)
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise DifferentialError(
                f"{fn.__qualname__}: **{name} cannot be used; arguments cross the wire positionally"
            )
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            if param.default is inspect.Parameter.empty:
                raise DifferentialError(
                    f"{fn.__qualname__}: keyword-only parameter {name!r} has no default; "
                    "arguments cross the wire positionally"
                )
            continue  # not reachable from the wire: left out of the schema
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            properties[name] = {"type": "array", "items": type_schema(annotation), "x-variadic": True}
            continue
        prop = type_schema(annotation)
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            try:
                json.dumps(param.default, default=_json_default)
                prop = {**prop, "default": param.default}
            except (TypeError, ValueError):
                pass
        properties[name] = prop
    schema: Dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "x-positional": True,
    }
    doc = inspect.getdoc(target)
    if doc:
        schema["description"] = doc.strip().split("\n\n")[0]
    schema["$schema"] = DRAFT_07
    return schema


def return_schema(fn: Callable[..., Any]) -> Any:
    """The result's schema from the return annotation; None when it is absent or unknown."""
    try:
        hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=True)
    except Exception:
        return None
    return (type_schema(hints["return"]) or None) if "return" in hints else None


def function_schema_json(fn: Callable[..., Any]) -> str:
    return json.dumps(function_schema(fn), separators=(",", ":"))


def wire_schema_json(fn: Callable[..., Any]) -> str:
    """What the worker sends: the parameters' schema, plus `x-returns` (the result's schema)
    when the return annotation says it (typed clients use it: `differential client publish`)."""
    schema = function_schema(fn)
    returns = return_schema(fn)
    if returns is not None:
        schema["x-returns"] = returns
    return json.dumps(schema, separators=(",", ":"))
