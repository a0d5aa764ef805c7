"""A small JSON Schema validator for the subset our request schemas use.

The same schema dicts validate requests and are published in /openapi.json, so the description
can never drift from what is enforced. Errors name the field path and what was expected. A valid
value gets the schema's `"default"`s filled in, so a view reads `body["limit"]` and the default
it gets is the one the document publishes.

No input may make the validator (or what runs after it) fail with anything but a 400 naming the
field: numbers are checked against what we can store or compute with (an integer fits 64 bits, a
number fits a double), and no part of a body nests deeper than `MAX_DEPTH`, whether the schema
describes it or not (json.loads itself gives up near 1,000 levels: `nesting_error` names the field
then).
"""
from __future__ import annotations

import copy
import json
import math
import re
import sys
from typing import Any

from ..errors import ValidationFailed

MAX_DEPTH = 32  # levels of objects and arrays in one body; ours use at most 5
_INT64 = (-(2**63), 2**63 - 1)  # every integer we store or compare fits a PostgreSQL bigint
_DOUBLE = sys.float_info.max  # a JSON number beyond a double is not one any other client can send


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: _numeric(v) and (isinstance(v, int) or math.isfinite(v)),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(schema: dict, value: Any, path: str = "", depth: int = 1) -> list[dict]:
    """Every problem of value against schema, as [{"field", "message"}]; `depth` is value's level
    in the body (the body itself is level 1)."""
    where = path or "(body)"
    expected = schema.get("type")
    if expected is not None:
        allowed = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES[t](value) for t in allowed):
            return [{"field": where, "message": f"must be of type {' or '.join(allowed)}"}]
    problems: list[dict] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append({"field": where, "message": f"must be one of {', '.join(map(str, schema['enum']))}"})
    if isinstance(value, str):
        if not storable_text(value):
            problems.append({"field": where, "message": "must not contain NUL characters or unpaired surrogates"})
        if len(value) < schema.get("minLength", 0):
            problems.append({"field": where, "message": f"must be at least {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append({"field": where, "message": f"must be at most {schema['maxLength']} characters"})
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            problems.append({"field": where, "message": _pattern_message(schema)})
    if _TYPES["number"](value):
        problems += _range_problems(schema, value, where)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append({"field": where, "message": f"must have at least {schema['minItems']} items"})
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append({"field": where, "message": f"must have at most {schema['maxItems']} items"})
        if "items" not in schema:
            problems += _nesting(value, path, depth)
        elif not _plain_strings(schema["items"], value):
            for i, item in enumerate(value):
                problems += errors(schema["items"], item, f"{path}[{i}]", depth + 1)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append({"field": _join(path, name), "message": "is required"})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                problems += errors(props[name], item, _join(path, name), depth + 1)
            elif extra is False:
                problems.append({"field": _join(path, name), "message": "is not a known field"})
            elif isinstance(extra, dict):
                problems += errors(extra, item, _join(path, name), depth + 1)
            elif isinstance(item, (dict, list)):  # not described, but stored or echoed all the same
                problems += _nesting(item, _join(path, name), depth + 1)
    return problems


def _range_problems(schema: dict, value: int | float, where: str) -> list[dict]:
    """minimum and maximum, then what we can hold: a huge integer must never reach float() or SQL."""
    if "minimum" in schema and value < schema["minimum"]:
        return [{"field": where, "message": f"must be at least {schema['minimum']}"}]
    if "maximum" in schema and value > schema["maximum"]:
        return [{"field": where, "message": f"must be at most {schema['maximum']}"}]
    if isinstance(value, int):
        allowed = schema.get("type")
        low, high = _INT64 if allowed == "integer" or (isinstance(allowed, list) and "number" not in allowed) else (
            -int(_DOUBLE), int(_DOUBLE))
        if not low <= value <= high:
            bound = f"{low} to {high}" if high == _INT64[1] else "the range of a double (about 1.8e308)"
            return [{"field": where, "message": f"must be within {bound}"}]
    return []


def _nesting(value: Any, path: str, depth: int) -> list[dict]:
    """A problem naming the first container below value that lies deeper than MAX_DEPTH (iterative:
    the check itself must not run out of stack)."""
    todo = [(value, path, depth)]
    while todo:
        item, where, level = todo.pop()
        if level > MAX_DEPTH:
            return [_too_deep(where)]
        if isinstance(item, dict):
            todo += [(v, _join(where, k), level + 1) for k, v in item.items() if isinstance(v, (dict, list))]
        elif isinstance(item, list):
            todo += [(v, f"{where}[{i}]", level + 1) for i, v in enumerate(item) if isinstance(v, (dict, list))]
    return []


def _too_deep(where: str) -> dict:
    shown = where if len(where) <= 200 else where[:200] + "…"
    return {"field": shown or "(body)", "message": f"nests deeper than {MAX_DEPTH} levels"}


_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKENS = re.compile(_STRING + rb"|[{}\[\],:]")


def nesting_error(raw: bytes) -> ValidationFailed:
    """For a body too deep for json.loads (RecursionError): the same 400 as a parsed body nesting
    too deep gets, naming the field. A scan of the raw text, stopping at the first level past
    MAX_DEPTH (strings are skipped by the regex, in C)."""
    stack: list[list] = []  # one [key or index, is_object] per open container
    last_string = None
    for match in _TOKENS.finditer(raw):
        token = match.group()
        first = token[:1]
        if first == b'"':
            last_string = token
        elif first == b":" and stack and last_string is not None:
            stack[-1][0] = _decoded(last_string)
        elif first == b",":
            if stack and not stack[-1][1]:
                stack[-1][0] += 1
        elif first in (b"{", b"["):
            if len(stack) >= MAX_DEPTH:
                return _failed([_too_deep(_path_of(stack))])
            stack.append([None if first == b"{" else 0, first == b"{"])
        elif stack:  # } or ]
            stack.pop()
    return _failed([_too_deep("")])


def _decoded(token: bytes) -> str:
    try:
        return str(json.loads(token))
    except ValueError:
        return token[1:-1].decode("utf-8", "replace")


def _path_of(stack: list[list]) -> str:
    path = ""
    for key, is_object in stack:  # each container's current member
        path = _join(path, str(key)) if is_object else f"{path}[{key}]"
    return path


_PLAIN_STRING_KEYS = frozenset({"type", "minLength", "maxLength", "description"})


def _plain_strings(item_schema: dict, value: list) -> bool:
    """True when every item is a valid string of a schema that checks only type and length.

    The published SDK sends every outstanding call's id in one status poll, thousands of them, many
    times a second; checking them one by one cost milliseconds per poll. This checks the whole list
    with builtins, and anything it cannot vouch for goes through the item-by-item path (which also
    names the bad item)."""
    if item_schema.get("type") != "string" or not item_schema.keys() <= _PLAIN_STRING_KEYS or not value:
        return False
    if not all(type(v) is str for v in value):
        return False
    lengths = list(map(len, value))
    if min(lengths) < item_schema.get("minLength", 0) or max(lengths) > item_schema.get("maxLength", math.inf):
        return False
    return storable_text("".join(value))  # Python never pairs surrogates across the join


def storable_text(value: str) -> bool:
    """PostgreSQL text holds neither NUL nor unpaired surrogates (not UTF-8): such input is a 400, not a 500."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(schema: dict, value: Any, what: str = "request body") -> Any:
    """value with its defaults filled in (in place), or ValidationFailed naming every problem."""
    problems = errors(schema, value)
    if problems:
        raise _failed(problems, what)
    fill_defaults(schema, value)
    return value


def _failed(problems: list[dict], what: str = "request body") -> ValidationFailed:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ValidationFailed(f"invalid {what}: {first['field']} {first['message']}{more}", {"fields": problems})


_PATTERNS: dict[str, re.Pattern] = {}


def _pattern(pattern: str) -> re.Pattern:
    """A schema pattern, with JSON Schema's (ECMA-262) `$`: the end of the text. Python's `$` also
    matches before a final newline, which would let "id\\n" through a pattern forbidding newlines."""
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))
    return compiled


def _pattern_message(schema: dict) -> str:
    rule = schema.get("description")
    return f"must be {rule}" if rule else f"must match {schema['pattern']}"


def fill_defaults(schema: dict, value: Any) -> None:
    """Give each absent property that declares a `"default"` a copy of it, at every depth.

    An absent object gets its properties' defaults only if the object itself declares a default
    (`"default": {}`): then it is filled in, and so are its own defaults. Call on a valid value."""
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                default = prop["default"]
                value[name] = copy.deepcopy(default) if isinstance(default, (dict, list)) else default
            if name in value and _has_defaults(prop):
                fill_defaults(prop, value[name])
    elif isinstance(value, list) and "items" in schema and _has_defaults(schema["items"]):
        for item in value:
            fill_defaults(schema["items"], item)


def _has_defaults(schema: dict) -> bool:
    """Whether anything below schema declares a default (a big id list is not walked for nothing).

    Asked on every request, of schemas that live as long as the process: remembered by identity
    (the entry holds the schema, so its id is never reused for another)."""
    entry = _HAS_DEFAULTS.get(id(schema))
    if entry is None:
        known = any("default" in prop or _has_defaults(prop) for prop in schema.get("properties", {}).values()) or (
            "items" in schema and _has_defaults(schema["items"]))
        entry = _HAS_DEFAULTS[id(schema)] = (schema, known)
    return entry[1]


_HAS_DEFAULTS: dict[int, tuple[dict, bool]] = {}


def coerce_query(schema: dict, args) -> dict:
    """Query strings arrive as text: convert declared integers before validating (and filling
    defaults). `args` is a dict, or a MultiDict whose declared arrays may repeat a parameter; an
    array's values may also be separated by commas."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name, raw in args.items():
        kind = props.get(name, {}).get("type")
        if kind == "array":
            values = args.getlist(name) if hasattr(args, "getlist") else [raw]
            out[name] = [part.strip() for value in values for part in value.split(",") if part.strip()]
        elif kind == "integer":
            try:
                out[name] = int(raw)
            except ValueError:
                raise ValidationFailed(f"invalid query: {name} must be a whole number",
                                       {"fields": [{"field": name, "message": "must be a whole number"}]}) from None
        else:
            out[name] = raw
    return validate(schema, out, "query")
