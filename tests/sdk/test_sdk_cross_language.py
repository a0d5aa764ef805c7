"""Python and the real TypeScript SDK (@differentialhq/core 3.18.0 under Node) calling each other
through one control-plane: values and errors arrive intact both ways."""
from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
from pathlib import Path

import httpx
import pytest

from differential import RemoteError

from support.waiting import wait_until

UTC = dt.timezone.utc
pytestmark = [pytest.mark.postgres, pytest.mark.node, pytest.mark.slow]

TS_SERVICE = r"""
import { Differential } from "@differentialhq/core";
const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
class GreetingError extends Error {
  constructor(m) { super(m); this.name = "GreetingError"; this.code = "E_GREET"; this.status = 418; }
}
const svc = d.service({
  name: process.env.SERVICE,
  functions: {
    greet: async (name, times) => ({ message: `Hello, ${name}!`, times, at: new Date(1704164645678) }),
    echo: async (...args) => args,
    fail: async (reason) => { throw new GreetingError(`cannot greet: ${reason}`); },
    types: async () => ({ undef: undefined, big: 2n ** 40n, num: 2 ** 40, nan: NaN, buf: Buffer.from([1, 2, 3]) }),
    kinds: async (...args) => args.map((a) => a === null ? "null" : a instanceof Date ? "Date"
                                  : Buffer.isBuffer(a) ? "Buffer" : Array.isArray(a) ? "Array" : typeof a),
  },
});
await svc.start();
console.log("ready");
"""

TS_CALLER = r"""
import { Differential } from "@differentialhq/core";
const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, { endpoint: process.env.DIFFERENTIAL_ENDPOINT });
const client = d.client(process.env.SERVICE);
function describe(v) {
  if (v === undefined) return { t: "undefined" };
  if (v === null) return { t: "null" };
  if (typeof v === "bigint") return { t: "bigint", v: v.toString() };
  if (typeof v === "number") return { t: "number", v: Number.isFinite(v) ? v : String(v) };
  if (typeof v === "string" || typeof v === "boolean") return { t: typeof v, v };
  if (v instanceof Date) return { t: "date", v: v.getTime() };
  if (v instanceof Uint8Array) return { t: "bytes", v: Buffer.from(v).toString("base64") };
  if (Array.isArray(v)) return { t: "array", v: v.map(describe) };
  return { t: "object", v: Object.entries(v).map(([k, x]) => [k, describe(x)]) };
}
const out = {};
const greeting = await client.greet("Ada", 3);
out.greet = { message: greeting.message, times: greeting.times, atIsDate: greeting.at instanceof Date,
              at: greeting.at.getTime() };
out.echo = describe(await client.echo("s", 1, 1.5, true, null, Buffer.from([1, 2]), new Date(0), { a: { b: [1] } },
                                      [], {}, undefined, 2 ** 40, -7, "日本🎉"));
out.big = describe(await client.big());
try {
  await client.fail("no reason");
  out.fail = "did not throw";
} catch (e) {
  out.fail = { isError: e instanceof Error, name: e.name, message: e.message, code: e.code, balance: e.balance,
               stack: e.stack };
}
out.background = await d.background(process.env.SERVICE, "greet", "Bob", 1);
process.stdout.write(JSON.stringify(out));
process.exit(0);
"""


def _env(cp, cluster, service):
    return {"DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url, "SERVICE": service}


def test_python_calls_typescript_service(node_sdk, sdk_control_plane, cluster, d, service_name):
    from support.node import start_node

    proc = start_node(TS_SERVICE, env=_env(sdk_control_plane, cluster, service_name))
    try:
        def registered():
            assert proc.poll() is None, Path(proc.log_path).read_text()
            r = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}/service/{service_name}",
                          headers=sdk_control_plane.management_headers, timeout=10)
            return r.status_code == 200

        wait_until(registered, timeout=30, interval=0.2, what="the TypeScript service to poll")
        client = d.client(service_name, timeout=60)

        assert client.greet("Ada", 3) == {
            "message": "Hello, Ada!", "times": 3, "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}

        values = [None, True, False, 0, -1, 255, 65536, 2**32 - 1, -(2**31), 2**40, -(2**63), 2**64 - 1, 1.5,
                  float("inf"), "", "é日本🎉", "x" * 10_000, b"", b"\x00\xff" * 1000, [], [1, [2, []]], {},
                  {"a": {"b": [None, "c"]}}, dt.datetime(2024, 5, 6, 7, 8, 9, 10000, tzinfo=UTC),
                  dt.datetime(1969, 7, 20, 20, 17, tzinfo=UTC)]
        got = client.echo(*values)
        assert got == values and [type(v) for v in got] == [type(v) for v in values]
        # How the TypeScript function saw them (Buffers, Dates, BigInts, nulls).
        assert client.kinds(None, b"x", dt.datetime(2024, 1, 1, tzinfo=UTC), 5, 2**40, "s", [1], {"a": 1}) == [
            "null", "Buffer", "Date", "number", "bigint", "string", "Array", "object"]

        types = client.types()
        assert types["undef"] is None and types["big"] == 2**40 and isinstance(types["big"], int)
        assert types["num"] == float(2**40) and isinstance(types["num"], float)
        assert math.isnan(types["nan"]) and types["buf"] == b"\x01\x02\x03"

        with pytest.raises(RemoteError) as info:
            client.fail("no reason")
        err = info.value
        assert (err.name, err.message, err.code) == ("GreetingError", "cannot greet: no reason", "E_GREET")
        assert err.details["status"] == 418
        assert err.stack.startswith("GreetingError: cannot greet: no reason\n    at ")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Overdrawn(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.code = "E_OVERDRAWN"
        self.balance = -5


def test_typescript_calls_python_service(node_sdk, sdk_control_plane, cluster, d, service_name):
    from support.node import run_node

    svc = d.service(service_name)

    @svc.function
    def greet(name: str, times: int) -> dict:
        return {"message": f"Hello, {name}!", "times": times, "at": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)}

    @svc.function
    def echo(*values):
        return list(values)

    @svc.function
    def big() -> int:
        return 2**40

    @svc.function
    def fail(reason: str):
        raise Overdrawn(f"cannot pay: {reason}")

    svc.start()
    try:
        r = run_node(TS_CALLER, env=_env(sdk_control_plane, cluster, service_name), timeout=120)
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
    finally:
        assert svc.stop(timeout=10)

    assert out["greet"] == {"message": "Hello, Ada!", "times": 3, "atIsDate": True, "at": 1704164645678}
    n = lambda v: {"t": "number", "v": v}  # noqa: E731
    assert out["echo"] == {"t": "array", "v": [
        {"t": "string", "v": "s"}, n(1), n(1.5), {"t": "boolean", "v": True}, {"t": "null"},
        {"t": "bytes", "v": "AQI="}, {"t": "date", "v": 0},
        {"t": "object", "v": [["a", {"t": "object", "v": [["b", {"t": "array", "v": [n(1)]}]]}]]},
        {"t": "array", "v": []}, {"t": "object", "v": []},
        {"t": "null"},  # undefined arrives in Python as None and goes back as null
        n(2**40), n(-7), {"t": "string", "v": "日本🎉"},
    ]}
    assert out["big"] == {"t": "bigint", "v": str(2**40)}
    failed = out["fail"]
    assert failed["isError"] and failed["name"] == "Overdrawn" and failed["message"] == "cannot pay: no reason"
    assert failed["code"] == "E_OVERDRAWN" and failed["balance"] == -5
    assert "Traceback (most recent call last)" in failed["stack"] and "in fail" in failed["stack"]
    # A background job created by TypeScript, whose result Python fetches by id.
    job_id = out["background"]["id"]
    svc = d.service(service_name)  # the first one is stopped: serve greet again
    svc.register(greet)
    svc.start()
    try:
        assert d.result(job_id, timeout=30)["message"] == "Hello, Bob!"
    finally:
        svc.stop(timeout=10)
