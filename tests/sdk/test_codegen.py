"""Generation of the typed client packages (sdk/src/differential/codegen): JSON Schema -> Python
and TypeScript types, the module's call plumbing, and reproducible wheels and tarballs. Pure and
quick: no server (the real npm, pip and tsc run in test_registry_clients.py)."""
from __future__ import annotations

import base64
import csv
import datetime
import gzip
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
import typing
import zipfile
from typing import Dict, List, Literal, Optional, Tuple, TypedDict

import pytest

from differential.codegen import model, npm_pack, python_client, typescript_client, wheel
from differential.schema import wire_schema_json


class Address(TypedDict):
    street: str
    number: int


def greet(name: str, times: int = 1, loud: bool = False) -> str:
    """Greets someone.

    Only the first paragraph is the description."""
    return name


def shapes(items: List[Address], when: Optional[datetime.datetime] = None, mode: Literal["x", "y"] = "x",
           raw: bytes = b"", pair: Tuple[int, str] = (1, "a"), *rest: int) -> Dict[str, float]:
    return {}


def anything(a, b=None):
    return a


def definition(name="greeter", functions=(greet, shapes, anything)):
    return {"name": name, "functions": [{"name": f.__name__, "schema": wire_schema_json(f)} for f in functions]}


def specs(extra_schema=None):
    node_service = {"name": "node-svc", "functions": [{"name": "hello"}, {"name": "class"}]}
    defs = [definition(), node_service]
    details = {"greeter": {"definition": defs[0], "schema": extra_schema}}
    return model.services_from_answers({"definitions": defs}, details)


def load(source: str, name: str):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


@pytest.fixture(scope="module")
def generated():
    source = python_client.render(specs(), module="cg_client_a", version="1.2.3", cluster_id="cluster-test")
    yield load(source, "cg_client_a"), source
    sys.modules.pop("cg_client_a", None)


def test_model_keeps_positional_order_and_reads_names_only_services():
    greeter, node_svc = sorted(specs(), key=lambda s: s.name)
    fns = {f.name: f for f in greeter.functions}
    assert [p.name for p in fns["shapes"].parameters] == ["items", "when", "mode", "raw", "pair", "rest"]
    assert fns["shapes"].parameters[-1].variadic and fns["greet"].description == "Greets someone."
    assert fns["greet"].returns == {"type": "string"}
    assert [f.name for f in node_svc.functions] == ["class", "hello"]
    assert all(f.parameters is None and f.returns is None for f in node_svc.functions)


def test_operator_schema_wins_and_keeps_the_registered_order():
    operator = {"functions": {"greet": {"type": "object", "description": "Operator's words.",
                                        "properties": {"times": {"type": "integer"}, "name": {"type": "string"}},
                                        "required": ["name", "times"], "x-returns": {"type": "integer"}},
                              "extra": {"type": "object", "properties": {"z": {"type": "number"}, "a": {"type": "null"}},
                                        "required": ["z", "a"], "x-order": ["z", "a"]}}}
    greeter = next(s for s in specs(operator) if s.name == "greeter")
    fns = {f.name: f for f in greeter.functions}
    assert [p.name for p in fns["greet"].parameters] == ["name", "times"]  # the worker's order, not sorted
    assert fns["greet"].returns == {"type": "integer"} and fns["greet"].description == "Operator's words."
    assert [p.name for p in fns["extra"].parameters] == ["z", "a"]
    assert "shapes" in fns  # functions the operator does not name keep the registered schema


def test_python_types_from_json_schema(generated):
    module, _ = generated
    hints = typing.get_type_hints(module.GreeterClient.shapes)
    assert hints["when"] == Optional[datetime.datetime]
    assert hints["mode"] == Literal["x", "y"] and hints["raw"] is bytes and hints["pair"] == Tuple[int, str]
    assert hints["rest"] is int and hints["return"] == Dict[str, float]
    item = typing.get_args(hints["items"])[0]
    assert typing.get_origin(hints["items"]) is list and typing.get_type_hints(item) == {"street": str, "number": int}
    assert typing.get_type_hints(module.GreeterClient.greet) == {"name": str, "times": int, "loud": bool,
                                                                  "return": str}
    assert typing.get_type_hints(module.GreeterClient.anything)["a"] is typing.Any
    assert module.GreeterClient.greet.__doc__ == "Greets someone."
    assert module.NodeSvcClient.class_.__doc__.endswith("any arguments.")  # a keyword: `class_`, calls "class"


@pytest.mark.parametrize("schema, expected", [
    ({"type": "string"}, "str"), ({"type": "integer"}, "int"), ({"type": "number"}, "float"),
    ({"type": "boolean"}, "bool"), ({"type": "null"}, "None"), ({}, "Any"), (True, "Any"),
    ({"type": ["string", "null"]}, "Union[str, None]"), ({"enum": ["a", 1, None]}, "Literal['a', 1, None]"),
    ({"enum": [1.5]}, "Any"), ({"anyOf": [{"type": "integer"}, {}]}, "Any"),
    ({"type": "array"}, "List[Any]"), ({"type": "object"}, "Dict[str, Any]"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, "Dict[str, int]"),
    ({"$ref": "#/definitions/N"}, "int"), ({"$ref": "#/nowhere"}, "Any"), ({"type": "wat"}, "Any"),
])
def test_python_type_expressions(schema, expected):
    root = {"definitions": {"N": {"type": "integer"}}}
    assert python_client._Types().expr(schema, "T", root) == expected


def test_python_recursive_refs_end_in_any():
    root = {"definitions": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Node"}}}}}
    types = python_client._Types()
    assert types.expr({"$ref": "#/definitions/Node"}, "T", root) == "Node"
    assert "next: Any" in types.defs[0]


class Recorder:
    """Stands in for Differential: records what the generated client would send."""

    def __init__(self):
        self.calls = []

    def client(self, service, **options):
        rec = self

        class Service:
            def function(self, name):
                return lambda *args: rec.calls.append((service, name, args, options)) or "ok"

            def with_options(self, **more):
                return rec.client(service, **{**options, **more})

        return Service()


def test_python_calls_send_positional_arguments(generated):
    module, _ = generated
    rec = Recorder()
    client = module.GreeterClient(rec, timeout=5)
    assert client.greet("Ada") == "ok"
    client.greet("Ada", 2, True)
    client.shapes([], None, "y")
    client.shapes([], mode="y")                # a left-out argument before a given one: its default
    client.shapes([], None, "x", b"", (1, "a"), 7, 8)
    client.with_options(timeout=9).anything(1, 2)
    module.NodeSvcClient(rec).class_("x")
    assert rec.calls == [
        ("greeter", "greet", ("Ada", 1, False), {"timeout": 5}),  # literal defaults are sent
        ("greeter", "greet", ("Ada", 2, True), {"timeout": 5}),
        ("greeter", "shapes", ([], None, "y"), {"timeout": 5}),
        ("greeter", "shapes", ([], None, "y"), {"timeout": 5}),
        ("greeter", "shapes", ([], None, "x", b"", (1, "a"), 7, 8), {"timeout": 5}),
        ("greeter", "anything", (1, 2), {"timeout": 9}),
        ("node-svc", "class", ("x",), {}),
    ]


@pytest.mark.parametrize("schema, expected", [
    ({"type": "string"}, "string"), ({"type": "integer"}, "number"), ({"type": "boolean"}, "boolean"),
    ({"type": "null"}, "null"), ({}, "unknown"), ({"type": ["string", "null"]}, "(string | null)"),
    ({"enum": ["a", 2]}, '("a" | 2)'), ({"const": "k"}, '"k"'), ({"type": "array", "items": {"type": "string"}},
                                                                   "Array<string>"),
    ({"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}, "[number, string]"),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b-c": {}}, "required": ["a"]},
     '{ a: number; "b-c"?: unknown }'),
    ({"type": "object", "additionalProperties": {"type": "number"}}, "Record<string, number>"),
    ({"type": "string", "format": "date-time", "x-msgpack": "timestamp"}, "Date"),
    ({"type": "string", "contentEncoding": "binary", "x-msgpack": "bin"}, "Uint8Array"),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "(number | string)"), ({"$ref": "#/x"}, "unknown"),
])
def test_typescript_type_expressions(schema, expected):
    assert typescript_client.ts_type(schema, {}) == expected


def test_typescript_declarations_type_the_client_generic():
    text = typescript_client.declarations(specs(), package="@differential.dev/cluster-test", version="1.2.3")
    assert "greet: (name: string, times?: number, loud?: boolean) => Promise<string>;" in text
    assert "...rest: Array<number>) => Promise<Record<string, number>>;" in text
    assert "anything: (a: unknown, b?: unknown) => Promise<unknown>;" in text
    assert '"class": (...args: unknown[]) => Promise<unknown>;' in text
    assert 'definition: { name: "greeter"; functions: GreeterFunctions };' in text
    assert "export declare const nodeSvc: NodeSvcService;" in text
    manifest = json.loads(typescript_client.package_json(package="@differential.dev/c", version="1.2.3", cluster_id="c"))
    assert manifest["types"] == "index.d.ts" and manifest["main"] == "index.js" and manifest["version"] == "1.2.3"
    assert "@differentialhq/core" in manifest["peerDependencies"]


def _wheel(services, version="1.2.3"):
    source = python_client.render(services, module="cg_mod", version=version, cluster_id="cluster-test")
    return wheel.build(file_name=f"cg_dist-{version}-py3-none-any.whl", distribution="cg-dist", module="cg_mod",
                       version=version, source=source, summary="test", requires=["differential>=0.1"])


def _tarball(services, version="1.2.3"):
    return npm_pack.pack(typescript_client.package_files(services, package="@differential.dev/cluster-test",
                                                         version=version, cluster_id="cluster-test"))


def test_wheel_is_reproducible_and_its_record_is_right():
    first, second = _wheel(specs()), _wheel(specs())
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    assert _wheel(specs({"functions": {"greet": {"type": "object", "properties": {}}}})) != first
    assert _wheel(specs(), version="1.2.4") != first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        names = zf.namelist()
        assert names[-1] == "cg_dist-1.2.3.dist-info/RECORD" and names[:-1] == sorted(names[:-1])
        assert {"cg_mod/__init__.py", "cg_mod/py.typed", "cg_dist-1.2.3.dist-info/METADATA",
                "cg_dist-1.2.3.dist-info/WHEEL"} <= set(names)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        rows = list(csv.reader(io.StringIO(zf.read(names[-1]).decode())))
        for path, digest, size in rows[:-1]:
            data = zf.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
        meta = zf.read("cg_dist-1.2.3.dist-info/METADATA").decode()
        assert "Name: cg-dist\n" in meta and "Version: 1.2.3\n" in meta and "Requires-Dist: differential>=0.1" in meta
        assert "Tag: py3-none-any" in zf.read("cg_dist-1.2.3.dist-info/WHEEL").decode()


def test_tarball_is_reproducible_like_npm_pack():
    first, second = _tarball(specs()), _tarball(specs())
    assert hashlib.sha512(first).digest() == hashlib.sha512(second).digest()
    assert _tarball(specs(), version="2.0.0") != first
    assert first[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["package/index.d.ts", "package/index.js", "package/package.json"]
        assert all(m.mtime == npm_pack.NPM_FIXED_MTIME and m.mode == 0o644 and m.uid == 0 and m.isfile()
                   for m in members)
        assert json.load(tar.extractfile("package/package.json"))["name"] == "@differential.dev/cluster-test"


def test_generated_module_is_python39_syntax(generated):
    import ast
    _, source = generated
    ast.parse(source, feature_version=(3, 9))
    assert "from __future__" not in source and "|" not in "".join(
        line for line in source.splitlines() if "def " in line)


def test_python_left_out_argument_without_default_is_refused(generated):
    module, _ = generated
    with pytest.raises(TypeError, match="'raw' must be given"):
        module.GreeterClient(Recorder()).shapes([], pair=(2, "b"))  # raw has no JSON default to send


def test_names_that_clash_with_the_generated_code_are_renamed():
    schema = {"type": "object", "properties": {"self": {"type": "integer"}, "args": {"type": "string"},
                                               "_positional": {"type": "boolean"}}, "required": ["self", "args", "_positional"],
              "x-positional": True}
    defs = [{"name": "odd names", "functions": [{"name": "with_options", "schema": json.dumps(schema)},
                                                {"name": "_service", "schema": json.dumps(schema)}]}]
    source = python_client.render(model.services_from_answers({"definitions": defs}, {}), module="cg_odd",
                                  version="0.0.1", cluster_id="c")
    module = load(source, "cg_odd")
    rec = Recorder()
    client = module.OddNamesClient(rec)
    client.with_options2(1, "a", True)
    client._service2(2, "b", False)
    assert rec.calls == [("odd names", "with_options", (1, "a", True), {}), ("odd names", "_service", (2, "b", False), {})]
    assert list(typing.get_type_hints(module.OddNamesClient.with_options2)) == ["self2", "args2", "_positional2", "return"]


def test_the_asyncio_client_awaits_the_same_calls(generated):
    import asyncio
    import inspect

    module, _ = generated
    calls = []

    class AsyncRecorder:
        def client(self, service, **options):
            class Service:
                def function(self, name):
                    async def call(*args):
                        calls.append((service, name, args, options))
                        return "ok"
                    return call
            return Service()

    client = module.AsyncGreeterClient(AsyncRecorder(), timeout=5)
    assert inspect.iscoroutinefunction(module.AsyncGreeterClient.greet)
    assert typing.get_type_hints(module.AsyncGreeterClient.greet) == typing.get_type_hints(module.GreeterClient.greet)
    assert asyncio.run(client.greet("Ada")) == "ok"
    assert calls == [("greeter", "greet", ("Ada", 1, False), {"timeout": 5})]
    assert "AsyncGreeterClient" in module.__all__ and module.SERVICES["greeter"] is module.GreeterClient
