"""JSON Schema derived from signatures and type hints (sent as functions[].schema)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Dict, List, Literal, Optional, Tuple, TypedDict, Union

import pytest

from differential import Differential, DifferentialError, Service
from differential.schema import DRAFT_07, function_schema, function_schema_json


class Address(TypedDict):
    street: str
    number: int


def greet(name: str, times: int = 1, loud: bool = False) -> str:
    """Greets someone.

    Longer text that is not part of the description."""
    return name


def test_basic_signature():
    s = function_schema(greet)
    assert s == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "times": {"type": "integer", "default": 1},
            "loud": {"type": "boolean", "default": False},
        },
        "required": ["name"],
        "additionalProperties": False,
        "x-positional": True,
        "description": "Greets someone.",
        "$schema": DRAFT_07,
    }
    assert list(s["properties"]) == ["name", "times", "loud"]  # positional order is kept


def test_rich_types():
    def f(a: Optional[int], b: List[str], c: Dict[str, float], d: Tuple[int, str], e: Literal["x", "y"],
          f: Union[int, str], g: bytes, h: dt.datetime, i: Address, j: Any, k, l: "list[int] | None" = None,
          *rest: int):
        pass

    p = function_schema(f)["properties"]
    assert p["a"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert p["b"] == {"type": "array", "items": {"type": "string"}}
    assert p["c"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert p["d"] == {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2}
    assert p["e"] == {"enum": ["x", "y"], "type": "string"}
    assert p["f"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert p["g"]["type"] == "string" and p["g"]["x-msgpack"] == "bin"
    assert p["h"] == {"type": "string", "format": "date-time", "x-msgpack": "timestamp"}
    assert p["i"] == {"type": "object", "properties": {"street": {"type": "string"}, "number": {"type": "integer"}},
                      "required": ["street", "number"]}
    assert p["j"] == {} and p["k"] == {}
    assert p["l"] == {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}], "default": None}
    assert p["rest"] == {"type": "array", "items": {"type": "integer"}, "x-variadic": True}


def test_schema_is_a_compact_json_string():
    text = function_schema_json(greet)
    assert json.loads(text) == function_schema(greet) and " " not in text.replace("Greets someone.", "")


def test_signatures_the_wire_cannot_call_are_refused_at_registration():
    svc = Service("s")

    def kw(**options):
        pass

    def kwonly(a, *, b):
        pass

    with pytest.raises(DifferentialError, match=r"\*\*options"):
        svc.register(kw)
    with pytest.raises(DifferentialError, match="keyword-only parameter 'b'"):
        svc.register(kwonly)

    def fine(a, *, b=2):
        pass

    svc.register(fine)
    assert "b" not in function_schema(fine)["properties"]


def test_decorator_and_explicit_forms_build_the_definition():
    d = Differential("sk_x", endpoint="http://127.0.0.1:1")
    svc = d.service("maths")

    @svc.function
    def add(a: int, b: int) -> int:
        return a + b

    @svc.function(name="mul-tiply")
    def mul(a: float, b: float) -> float:
        return a * b

    def neg(a: int) -> int:
        return -a

    assert svc.register(neg) is neg and add(1, 2) == 3  # decorators return the function unchanged
    names = [f["name"] for f in svc.definition()]
    assert names == ["add", "mul-tiply", "neg"]
    assert json.loads(svc.definition()[0]["schema"])["required"] == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        svc.register(lambda a: a, name="add")
    d.close()
