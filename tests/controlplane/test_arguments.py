"""app/engine/arguments.py: JSON arguments become exactly the targetArgs the SDKs send: byte for
byte the Python SDK's `pack_args`, and the published SDK's own `pack` (msgpackr) under Node."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings, strategies as st

from app.engine.arguments import ArgumentsError, pack_arguments
from differential.serialize import pack_args, unpack_args

# What json.loads can give: the SDK's packer and ours must agree on every one of them.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=10), inner, max_size=8),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON, max_size=8))
def test_the_same_bytes_as_the_python_sdk(args):
    assert pack_arguments(args) == pack_args(args)
    assert unpack_args(pack_arguments(args)) == args


EDGES = [
    [], [None, True, False], [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1],
    [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)],
    [0.5, -0.0, 1e300, 3.0], ["", "a" * 31, "a" * 32, "b" * 255, "c" * 256, "d" * 65536, "é日本🎉"],
    [list(range(15)), list(range(16)), list(range(65536))], [{}, {"a": 1}, {str(i): i for i in range(20)}],
    [{"nested": {"list": [1, {"b": [True]}]}}],
]


@pytest.mark.parametrize("args", EDGES, ids=range(len(EDGES)))
def test_the_same_bytes_at_every_size_boundary(args):
    assert pack_arguments(args) == pack_args(args)


def test_maps_are_map16_as_msgpackr_writes_them():
    assert base64.b64decode(pack_arguments([{"a": 1}])) == b"\x91\xde\x00\x01\xa1a\x01"


@pytest.mark.parametrize(("value", "where"), [
    ({"a": 1}, "array"), ("[1]", "array"), (None, "array"), ([2**64], "arguments[0]"), ([-(2**63) - 1], "arguments[0]"),
    ([float("nan")], "arguments[0]"), ([{"k": [float("inf")]}], "arguments[0].k[0]"), (["\ud800"], "arguments[0]"),
    ([{1, 2}], "arguments[0]"),
])
def test_what_json_cannot_hold_is_refused_naming_the_part(value, where):
    with pytest.raises(ArgumentsError, match=r"^" + where.replace("[", r"\[").replace("]", r"\]")
                       if where != "array" else "JSON array"):
        pack_arguments(value)


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ArgumentsError, match="nested deeper"):
        pack_arguments(deep)


# The published SDK reads JSON as JavaScript does: a number is a double, so an integral one
# (3.0) is an integer to it, and msgpackr writes integers beyond 32 bits as float64. Arguments
# like those get the Python SDK's bytes (above, lossless), which msgpackr reads as the same
# values (an integer beyond 32 bits as a BigInt, as from a Python caller); everything else is the
# published SDK's bytes exactly.
NODE_PACK = r"""
import { pack, unpack } from "@differentialhq/core/bin/serialize.js";
import { readFileSync } from "node:fs";
const input = JSON.parse(readFileSync(0, "utf8"));
const out = {
  packed: input.exact.map((text) => pack(JSON.parse(text))),
  read: input.ours.map((b64) => JSON.stringify(unpack(b64), (k, v) => typeof v === "bigint" ? { bigint: String(v) } : v)),
};
process.stdout.write(JSON.stringify(out));
"""

NODE_EXACT = [
    [], [None, True, False], [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1],
    [-1, -32, -33, -128, -129, -32768, -32769, -(2**31)], [0.5, -1.25, 1e300, 1.5e-7],
    ["", "a" * 31, "a" * 32, "b" * 255, "c" * 256, "d" * 65536, "é日本🎉", "quote\"back\\slash\n"],
    [list(range(15)), list(range(16)), list(range(300))], [{}, {"a": 1}, {str(i): i for i in range(20)}],
    [{"nested": {"list": [1, {"b": [True]}]}}, "Ada", 3],
]
NODE_VALUE_ONLY = [[3.0, 2**40, -(2**40), 2**53]]


@pytest.mark.node
def test_the_same_bytes_as_the_published_sdk(node_sdk):
    from support.node import run_node

    stdin = json.dumps({"exact": [json.dumps(a) for a in NODE_EXACT],
                        "ours": [pack_arguments(a) for a in NODE_EXACT + NODE_VALUE_ONLY]})
    r = run_node(NODE_PACK, input=stdin, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for args, theirs in zip(NODE_EXACT, out["packed"], strict=True):
        assert pack_arguments(args) == theirs, args
    for args, read in zip(NODE_EXACT + NODE_VALUE_ONLY, out["read"], strict=True):
        assert json.loads(read, object_hook=lambda o: int(o["bigint"]) if o.keys() == {"bigint"} else o) == args
    assert json.loads(out["read"][-1])[1:] == [{"bigint": str(2**40)}, {"bigint": str(-(2**40))}, {"bigint": str(2**53)}]
