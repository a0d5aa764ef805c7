"""Serialisation: exact bytes for the captured wire samples, Python round trips, refusals, and
byte-compatibility with the real msgpackr/serialize-error of @differentialhq/core 3.18.0 under Node."""
from __future__ import annotations

import base64
import datetime as dt
import json
import math

import pytest

from differential import RemoteError, SerializationError
from differential.serialize import (
    deserialize_error, from_msgpack, pack, pack_args, serialize_error, to_msgpack, unpack,
)

UTC = dt.timezone.utc


# -- captured bytes (as the published SDK's msgpackr writes them) -----------------------

def test_positional_args_match_capture():
    assert pack_args(("Ada", 3)) == "kqNBZGED"  # 92 a3 41 64 61 03
    assert to_msgpack(["no reason"]).hex() == "91a96e6f20726561736f6e"


def test_result_map_matches_capture_byte_for_byte():
    value = {"message": "Hello, Ada!", "times": 3, "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}
    assert pack(value) == "3gADp21lc3NhZ2WrSGVsbG8sIEFkYSGldGltZXMDomF01/+hpdYAZZN9JQ=="


def test_captured_rejection_decodes_to_remote_error():
    payload = ("3gAEpG5hbWWtR3JlZXRpbmdFcnJvcqRjb2Rlp0VfR1JFRVSnbWVzc2FnZbdjYW5ub3QgZ3JlZXQ6IG5vIHJlYXNvbqVzdGFja9km"
               "R3JlZXRpbmdFcnJvcjogY2Fubm90IGdyZWV0OiBubyByZWFzb24=")
    err = deserialize_error(unpack(payload))
    assert isinstance(err, RemoteError)
    assert (err.name, err.message, err.code) == ("GreetingError", "cannot greet: no reason", "E_GREET")
    assert err.stack == "GreetingError: cannot greet: no reason"
    assert str(err) == "GreetingError: cannot greet: no reason"


def test_small_maps_use_map16_like_msgpackr():
    assert to_msgpack({}).hex() == "de0000"
    assert to_msgpack({"a": {}}).hex() == "de0001a161de0000"


def test_msgpackr_undefined_reads_as_none():
    assert from_msgpack(bytes.fromhex("d40000")) is None
    assert from_msgpack(bytes.fromhex("92d40000c0")) == [None, None]
    assert from_msgpack(bytes.fromhex("de0001a161d40000")) == {"a": None}


@pytest.mark.parametrize("value,hexbytes", [
    (dt.datetime(1970, 1, 1, tzinfo=UTC), "d6ff00000000"),
    (dt.datetime.fromtimestamp(-1, UTC), "c70cff00000000ffffffffffffffff"),
    (dt.datetime(2500, 1, 1, tzinfo=UTC), "c70cff0000000000000003e4e6b080"),  # msgpackr never uses ts64 above 2**32 s
])
def test_dates_encode_as_msgpackr_does(value, hexbytes):
    assert to_msgpack(value).hex() == hexbytes
    assert from_msgpack(bytes.fromhex(hexbytes)) == value


@pytest.mark.parametrize("n,hexbytes", [
    (0, "00"), (127, "7f"), (128, "cc80"), (65535, "cdffff"), (2**32 - 1, "ceffffffff"),
    (-1, "ff"), (-32, "e0"), (-33, "d0df"), (-200, "d1ff38"), (-40000, "d2ffff63c0"),
    (2**40, "cf0000010000000000"), (-(2**40), "d3ffffff0000000000"), (2**64 - 1, "cfffffffffffffffff"),
])
def test_ints_use_smallest_form(n, hexbytes):
    assert to_msgpack(n).hex() == hexbytes
    assert from_msgpack(bytes.fromhex(hexbytes)) == n


# -- Python round trips ------------------------------------------------------------------------

ROUND_TRIP = [
    None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e300, float("inf"), float("-inf"),
    "", "a", "é" * 20, "x" * 70000, "日本語 🎉", b"", b"\x00\xff", bytes(range(256)) * 300,
    [], [1, "a", None, [2, [3]]], {}, {"a": 1, "b": {"c": [True, None]}},
    dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    dt.datetime(1900, 1, 1, tzinfo=UTC), {str(i): i for i in range(70000)}, list(range(70000)),
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=lambda v: type(v).__name__ + str(len(v) if hasattr(v, "__len__") else v)[:20])
def test_round_trip(value):
    assert unpack(pack(value)) == value


def test_nan_round_trips_as_float64():
    assert to_msgpack(float("nan")).hex() == "cb7ff8000000000000"
    assert math.isnan(unpack(pack(float("nan"))))


def test_tuple_travels_as_list_and_other_timezones_become_utc():
    assert unpack(pack((1, 2))) == [1, 2]
    paris = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    back = unpack(pack(paris))
    assert back == paris and back.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value,fragment", [
    (2**64, "does not fit in 64 bits"),
    (-(2**63) - 1, "does not fit in 64 bits"),
    ({"a": [1, 2**70]}, "value['a'][1]"),
    (dt.datetime(2024, 1, 1), "naive datetime"),
    ({1: "a"}, "only str keys"),
    ({1, 2}, "builtins.set cannot cross the wire"),
    (object(), "builtins.object cannot cross the wire"),
    (dt.date(2024, 1, 1), "datetime.date cannot cross the wire"),
    ("\ud800", "not valid Unicode"),
])
def test_unsupported_values_are_refused_with_a_clear_error(value, fragment):
    with pytest.raises(SerializationError) as info:
        pack(value)
    assert fragment in str(info.value)


def test_cycles_are_refused_not_overflowing():
    a: list = []
    a.append(a)
    with pytest.raises(SerializationError, match="nested deeper"):
        pack(a)


def test_garbage_input_is_a_serialization_error():
    with pytest.raises(SerializationError):
        unpack("not base64!")
    with pytest.raises(SerializationError):
        unpack(base64.b64encode(b"\xc1").decode())
    with pytest.raises(SerializationError, match="extension type 5"):
        from_msgpack(bytes.fromhex("d40500"))


def test_python_exception_serializes_like_serialize_error():
    class GreetingError(Exception):
        def __init__(self, msg):
            super().__init__(msg)
            self.code = "E_GREET"
            self.retry_after = 3
            self.opaque = object()  # cannot cross: dropped, not fatal

    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise GreetingError("cannot greet") from inner
    except GreetingError as e:
        data = serialize_error(e)
    assert data["name"] == "GreetingError" and data["message"] == "cannot greet" and data["code"] == "E_GREET"
    assert data["retry_after"] == 3 and "opaque" not in data
    assert "Traceback" in data["stack"] and "GreetingError: cannot greet" in data["stack"]
    assert data["cause"]["name"] == "KeyError"
    err = deserialize_error(unpack(pack(data)))
    assert (err.name, err.message, err.code, err.details["retry_after"]) == ("GreetingError", "cannot greet", "E_GREET", 3)
    assert isinstance(err.__cause__, RemoteError) and err.__cause__.name == "KeyError"
    # A RemoteError re-raised by a worker keeps the original identity.
    again = deserialize_error(unpack(pack(serialize_error(err))))
    assert (again.name, again.code, again.stack) == ("GreetingError", "E_GREET", err.stack)


def test_bare_js_error_array_is_understood():
    err = deserialize_error(["Error", "Differential encountered an unexpected error type", None])
    assert err.name == "Error" and "unexpected error type" in err.message


# -- against the real msgpackr / serialize-error under Node ------------------------------------

NODE_DESCRIBE = r"""
import { pack, unpack } from "@differentialhq/core/bin/serialize.js";
import { serializeError, deserializeError } from "@differentialhq/core/bin/serialize-error.js";
import { readFileSync } from "node:fs";

function describe(v) {
  if (v === undefined) return { t: "undefined" };
  if (v === null) return { t: "null" };
  if (typeof v === "bigint") return { t: "bigint", v: v.toString() };
  if (typeof v === "number") return { t: "number", v: Number.isFinite(v) ? v : String(v), neg0: Object.is(v, -0) };
  if (typeof v === "string" || typeof v === "boolean") return { t: typeof v, v };
  if (v instanceof Date) return { t: "date", v: v.getTime() };
  if (v instanceof Uint8Array) return { t: "bytes", v: Buffer.from(v).toString("base64") };
  if (Array.isArray(v)) return { t: "array", v: v.map(describe) };
  return { t: "object", v: Object.entries(v).map(([k, x]) => [k, describe(x)]) };
}
"""

PY_TO_NODE = NODE_DESCRIBE + r"""
const input = JSON.parse(readFileSync(0, "utf8"));
const out = input.values.map((b64) => {
  const value = unpack(b64);
  let repacked = null, error = null;
  try { repacked = pack(value, true); } catch (e) { error = String(e.message || e); }  // the SDK's own validation
  return { describe: describe(value), repacked, error };
});
const e = deserializeError(unpack(input.error));
out.push({ error: { name: e.name, message: e.message, code: e.code, stack: e.stack, isError: e instanceof Error,
                    retryAfter: e.retry_after, cause: e.cause && e.cause.name } });
process.stdout.write(JSON.stringify(out));
"""


def py_describe(v):
    """What msgpackr should make of a Python value (mirror of `describe` above)."""
    if v is None:
        return {"t": "null"}
    if isinstance(v, bool):
        return {"t": "boolean", "v": v}
    if isinstance(v, int):
        if -(2**31) <= v < 2**32:
            return {"t": "number", "v": v, "neg0": False}
        return {"t": "bigint", "v": str(v)}
    if isinstance(v, float):
        return {"t": "number", "v": v if math.isfinite(v) else {"inf": "Infinity", "-inf": "-Infinity"}.get(str(v), "NaN"),
                "neg0": v == 0 and math.copysign(1, v) < 0}
    if isinstance(v, str):
        return {"t": "string", "v": v}
    if isinstance(v, bytes):
        return {"t": "bytes", "v": base64.b64encode(v).decode()}
    if isinstance(v, dt.datetime):
        return {"t": "date", "v": int(v.timestamp() * 1000)}
    if isinstance(v, list):
        return {"t": "array", "v": [py_describe(x) for x in v]}
    return {"t": "object", "v": [[k, py_describe(x)] for k, x in v.items()]}


# Values whose bytes msgpackr reproduces exactly when it re-packs what it read.
EXACT = [
    None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, -1, -32, -33, -128, -129, -32768, -32769,
    -(2**31), 1.5, -0.25, 1e300, float("inf"), float("-inf"), float("nan"), "", "a", "a" * 31, "a" * 32, "é" * 20,
    "x" * 300, "y" * 70000, "日本語 🎉", b"", b"\x00\x01", bytes(300), [], [1, "a", None], list(range(20)), {},
    {"a": 1}, {"nested": {"list": [1, {"b": [True]}]}}, {f"k{i}": i for i in range(20)},
    dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(2500, 1, 1, tzinfo=UTC),
    ["Ada", 3], {"message": "Hello", "at": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), "tags": ["x"]},
]
# Same value on both sides, but msgpackr writes it differently when it re-packs.
VALUE_ONLY = [2**40, -(2**40), 2**63 - 1, 2**64 - 1, 3.0]


@pytest.mark.node
def test_python_packed_values_read_by_real_msgpackr(node_sdk):
    from support.node import run_node

    values = EXACT + VALUE_ONLY
    try:
        raise ValueError("bad input")
    except ValueError as inner:
        try:
            err = LookupError("cannot find it")
            err.code = "E_LOOKUP"
            err.retry_after = 5
            raise err from inner
        except LookupError as e:
            error_payload = pack(serialize_error(e))
    stdin = json.dumps({"values": [pack(v) for v in values], "error": error_payload})
    r = run_node(PY_TO_NODE, input=stdin, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for value, got in zip(values, out, strict=False):  # out ends with the error's entry
        want = py_describe(value)
        if value == 3.0 and isinstance(value, float):
            want = {"t": "number", "v": 3, "neg0": False}
        assert got["describe"] == want, value
        if value in VALUE_ONLY and not (isinstance(value, float) and math.isnan(value)):
            continue
        assert got["error"] is None, (value, got["error"])  # passes the SDK's own pack validation
        assert got["repacked"] == pack(value), f"msgpackr re-packs {value!r} differently"
    e = out[-1]["error"]
    assert e["isError"] and e["name"] == "LookupError" and e["message"] == "cannot find it"
    assert e["code"] == "E_LOOKUP" and e["retryAfter"] == 5 and e["cause"] == "ValueError"
    assert "LookupError: cannot find it" in e["stack"]


NODE_TO_PY = r"""
import { pack } from "@differentialhq/core/bin/serialize.js";
import { serializeError } from "@differentialhq/core/bin/serialize-error.js";
class GreetingError extends Error {
  constructor(m) { super(m); this.name = "GreetingError"; this.code = "E_GREET"; this.status = 418; }
}
const err = new GreetingError("cannot greet");
err.cause = new TypeError("root cause");
const values = {
  greet: { message: "Hello, Ada!", times: 3, at: new Date(1704164645678) },
  args: ["Ada", 3],
  undef: [undefined, null, { a: undefined }],
  numbers: [0, -1, 255, 65536, 4294967295, -2147483648, 1.5, 2 ** 40, 2 ** 53, -0.5, NaN, Infinity, -Infinity],
  bigint: [2n ** 40n, -(2n ** 63n), 2n ** 64n - 1n],
  bytes: Buffer.from([0, 1, 2, 255]),
  strings: ["", "é".repeat(20), "x".repeat(300), "日本語 🎉"],
  nested: { a: [1, { b: [true, false] }], c: {} },
  dates: [new Date(0), new Date(-1000), new Date(Date.UTC(2500, 0, 1))],
  error: serializeError(err),
};
const out = {};
for (const [k, v] of Object.entries(values)) out[k] = pack(v, false);
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.node
def test_values_packed_by_real_sdk_read_in_python(node_sdk):
    from support.node import run_node

    r = run_node(NODE_TO_PY, timeout=60)
    assert r.returncode == 0, r.stderr
    packed = json.loads(r.stdout)
    got = {k: unpack(v) for k, v in packed.items()}
    assert got["greet"] == {"message": "Hello, Ada!", "times": 3,
                            "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}
    assert got["args"] == ["Ada", 3]
    assert got["undef"] == [None, None, {"a": None}]
    nums = got["numbers"]
    assert nums[:7] == [0, -1, 255, 65536, 4294967295, -2147483648, 1.5]
    assert nums[7] == float(2**40) and isinstance(nums[7], float)  # a JS number beyond 32 bits is a float64
    assert nums[8] == float(2**53) and nums[9] == -0.5 and math.isnan(nums[10]) and nums[11:] == [math.inf, -math.inf]
    assert got["bigint"] == [2**40, -(2**63), 2**64 - 1]
    assert got["bytes"] == b"\x00\x01\x02\xff"
    assert got["strings"] == ["", "é" * 20, "x" * 300, "日本語 🎉"]
    assert got["nested"] == {"a": [1, {"b": [True, False]}], "c": {}}
    assert got["dates"] == [dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime.fromtimestamp(-1, UTC),
                            dt.datetime(2500, 1, 1, tzinfo=UTC)]
    # What we write for the same values is byte-identical to what the SDK wrote (no undefined here).
    for key in ("greet", "args", "bytes", "strings", "nested", "dates"):
        assert pack(got[key]) == packed[key], key
    err = deserialize_error(got["error"])
    assert (err.name, err.message, err.code, err.details["status"]) == ("GreetingError", "cannot greet", "E_GREET", 418)
    assert err.stack.startswith("GreetingError: cannot greet\n    at ")
    assert isinstance(err.__cause__, RemoteError) and err.__cause__.name == "TypeError"
