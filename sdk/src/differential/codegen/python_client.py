"""A typed Python client module from service definitions: one class per service, one method per
function, parameters and return types from the JSON Schemas, calls through our SDK.

    from <module> import GreeterClient
    greeter = GreeterClient(Differential(api_secret, endpoint=...))
    greeter.greet("Ada", 2)     # -> str, type-checked against the service's schema

Arguments cross the wire positionally, so an optional parameter left out is dropped from the end;
one left out before another that is given gets its schema default (or the call is refused). The
module runs on Python 3.9+ (the SDK's floor): typing's List/Dict/Union/Literal/TypedDict only.
Nested objects become TypedDicts; unknown or unsupported schemas become `Any`.
"""
from __future__ import annotations

import json
import keyword
from typing import Any, Dict, List, Optional, Tuple

from .model import Function, Parameter, ServiceSpec, resolve_ref
from .names import pascal, python_identifier, unique

MAX_DEPTH = 16
_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}


def _literal(value: Any) -> Optional[str]:
    if value is None or isinstance(value, (bool, int, str)) and not isinstance(value, float):
        return repr(value)
    return None


class _Types:
    """Type expressions for JSON Schemas; nested objects are emitted as TypedDicts in `defs`."""

    def __init__(self) -> None:
        self.defs: List[str] = []
        self.names: set = set()
        self.uses: set = set()

    def expr(self, schema: Any, hint: str, root: Any, depth: int = 0, seen: Tuple[str, ...] = ()) -> str:
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return "Any"
        if "$ref" in schema:
            ref = schema["$ref"]
            target = resolve_ref(root, ref)
            if target is None or ref in seen:
                return "Any"
            return self.expr(target, pascal(ref.rsplit("/", 1)[-1], hint), root, depth + 1, seen + (ref,))
        if "const" in schema and _literal(schema["const"]) is not None:
            return f"Literal[{_literal(schema['const'])}]"
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            values = [_literal(v) for v in schema["enum"]]
            if all(v is not None for v in values):
                return f"Literal[{', '.join(values)}]"
            return "Any"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self._union([self.expr(s, f"{hint}{i + 1}" if i else hint, root, depth + 1, seen)
                                    for i, s in enumerate(schema[key])])
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._union([self.expr({**schema, "type": k}, hint, root, depth + 1, seen) for k in kind])
        if kind == "string":
            if schema.get("x-msgpack") == "timestamp":
                self.uses.add("datetime")
                return "datetime.datetime"
            if schema.get("x-msgpack") == "bin" or schema.get("contentEncoding") == "binary":
                return "bytes"
            return "str"
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "array":
            items = schema.get("items")
            if isinstance(items, list):
                if not items:
                    return "Tuple[()]"
                return f"Tuple[{', '.join(self.expr(s, hint + 'Item', root, depth + 1, seen) for s in items)}]"
            return f"List[{self.expr(items, hint + 'Item', root, depth + 1, seen)}]"
        if kind == "object" or "properties" in schema:
            props = schema.get("properties")
            if isinstance(props, dict) and props:
                return self._typed_dict(props, set(schema.get("required") or []), hint, root, depth, seen)
            extra = schema.get("additionalProperties")
            return f"Dict[str, {self.expr(extra, hint + 'Value', root, depth + 1, seen)}]"
        return "Any"

    @staticmethod
    def _union(options: List[str]) -> str:
        unique_options = list(dict.fromkeys(options))
        if "Any" in unique_options:
            return "Any"
        if len(unique_options) == 1:
            return unique_options[0]
        return f"Union[{', '.join(unique_options)}]"

    def _typed_dict(self, props: Dict[str, Any], required: set, hint: str, root: Any, depth: int,
                    seen: Tuple[str, ...]) -> str:
        name = unique(pascal(hint, "Object"), self.names)
        fields = [(k, self.expr(v, hint + pascal(k, "Field"), root, depth + 1, seen), k in required)
                  for k, v in props.items()]
        plain = all(k.isidentifier() and not _is_keyword(k) for k, _, _ in fields)
        lines: List[str] = []
        must = [f for f in fields if f[2]]
        may = [f for f in fields if not f[2]]
        if plain and must and may:
            lines.append(f"class _{name}Required(TypedDict):")
            lines += [f"    {k}: {t}" for k, t, _ in must]
            lines += ["", "", f"class {name}(_{name}Required, total=False):"]
            lines += [f"    {k}: {t}" for k, t, _ in may]
        elif plain:
            lines.append(f"class {name}(TypedDict{'' if must else ', total=False'}):")
            lines += [f"    {k}: {t}" for k, t, _ in fields]
        else:  # keys that are not identifiers: the functional form (all required, or all optional)
            body = ", ".join(f"{json.dumps(k)}: {t}" for k, t, _ in fields)
            lines.append(f"{name} = TypedDict({name!r}, {{{body}}}, total={bool(must) and not may})")
        self.defs.append("\n".join(lines))
        return name


def _is_keyword(name: str) -> bool:
    return keyword.iskeyword(name)


def _doc(text: Optional[str], indent: str) -> List[str]:
    if not text:
        return []
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = body.splitlines() or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}'] + [f"{indent}{line}" if line else "" for line in lines[1:]] + [f'{indent}"""']


def _default_literal(p: Parameter) -> Optional[str]:
    """The schema default as a Python literal when it is immutable, else None (the sentinel)."""
    if p.has_default and (p.default is None or isinstance(p.default, (bool, int, float, str))):
        return repr(p.default)
    return None


def _method(fn: Function, service: str, types: _Types, taken: set) -> List[str]:
    method = unique(python_identifier(fn.name), taken)
    hint = pascal(service) + pascal(fn.name, "Function")
    returns = types.expr(fn.returns, hint + "Result", fn.root) if fn.returns is not None else "Any"
    doc = [fn.description] if fn.description else []
    if fn.parameters is None:
        lines = [f"    def {method}(self, *args: Any) -> {returns}:"]
        lines += _doc("\n\n".join(doc + ["The service registered no schema: any arguments."]), "        ")
        lines.append(f"        return self._service.function({fn.name!r})(*args)  # type: ignore[no-any-return]")
        return lines
    params: List[str] = []
    names: List[Tuple[str, Parameter]] = []
    pnames: set = {"self", "args", "_positional", "_UNSET", "json"}  # names the method body uses
    optional_seen = False
    arg_docs = []
    for p in fn.parameters:
        pname = unique(python_identifier(p.name), pnames)
        t = types.expr(p.schema, hint + pascal(p.name, "Arg"), fn.root)
        if p.description:
            arg_docs.append(f"{pname}: {p.description}")
        if p.variadic:
            params.append(f"*{pname}: {t[5:-1] if t.startswith('List[') else 'Any'}")
            names.append((pname, p))
            continue
        if p.required and not optional_seen:
            params.append(f"{pname}: {t}")
        else:
            optional_seen = True
            default = _default_literal(p)
            params.append(f"{pname}: {t} = {default if default is not None else '_UNSET'}")
        names.append((pname, p))
    if arg_docs:
        doc.append("Args:\n" + "\n".join("    " + a for a in arg_docs))
    lines = [f"    def {method}(self, {', '.join(params)}) -> {returns}:"]
    lines += _doc("\n\n".join(doc), "        ")
    fixed = [n for n, p in names if not p.variadic]
    variadic = next((n for n, p in names if p.variadic), None)
    defaults = {n: json.dumps(p.default) for n, p in names if p.has_default and not p.variadic}
    lines.append(f"        args = _positional(({', '.join(fixed)}{',' if len(fixed) == 1 else ''}), "
                 f"{json.dumps([n for n in fixed])}, {{{', '.join(f'{n!r}: {d!r}' for n, d in defaults.items())}}}"
                 f"{', ' + variadic if variadic else ''})")
    lines.append(f"        return self._service.function({fn.name!r})(*args)  # type: ignore[no-any-return]")
    return lines


_PRELUDE = '''

class _Unset:
    """An optional argument left out (arguments travel positionally: trailing ones are dropped)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()  # typed Any: a default for a parameter of any type


def _positional(values: Tuple[Any, ...], names: List[str], defaults: Dict[str, str],
                more: Tuple[Any, ...] = ()) -> List[Any]:
    out = list(values)
    while out and out[-1] is _UNSET and not more:
        out.pop()
    for i, value in enumerate(out):
        if value is _UNSET:
            if names[i] not in defaults:
                raise TypeError(f"argument {names[i]!r} must be given when a later one is")
            out[i] = json.loads(defaults[names[i]])
    return out + list(more)
'''


def _asynchronous(line: str) -> str:
    """A line of a generated method, for the asyncio client: the same signature and body, awaited."""
    if line.startswith("    def "):
        return "    async def " + line[len("    def "):]
    if line.startswith("        return self._service."):
        return "        return await self._service." + line[len("        return self._service."):]
    return line


def render(services: List[ServiceSpec], *, module: str, version: str, cluster_id: str) -> str:
    """The module's source text. The same services give the same text."""
    types = _Types()
    classes: List[str] = []
    class_names: set = set()
    exported: List[Tuple[str, str]] = []
    exported_async: List[str] = []
    for svc in services:
        cls = unique(pascal(svc.name, "Service") + "Client", class_names)
        async_cls = unique("Async" + cls, class_names)
        exported.append((svc.name, cls))
        taken = {"with_options", "service_name", "_service"}  # the class's own attributes
        methods = []
        for fn in svc.functions:
            methods.append(_method(fn, svc.name, types, taken))
        for name, caller, asynchronous in ((cls, "Differential", False), (async_cls, "AsyncDifferential", True)):
            body = [f"class {name}:",
                    *_doc(f"Calls the functions of service {svc.name!r} of cluster {cluster_id}"
                          + (" from asyncio (`await`)." if asynchronous else "."), "    "),
                    "",
                    f"    service_name = {svc.name!r}",
                    "",
                    f"    def __init__(self, differential: {caller}, **options: Any) -> None:",
                    f"        self._service = differential.client({svc.name!r}, **options)",
                    "",
                    f"    def with_options(self, **options: Any) -> {name!r}:",
                    "        \"\"\"The same client with other call options (timeout, cache, retries, ...).\"\"\"",
                    "        other = object.__new__(type(self))",
                    "        other._service = self._service.with_options(**options)",
                    "        return other",
                    ]
            for lines in methods:
                body.append("")
                body += [_asynchronous(line) for line in lines] if asynchronous else lines
            classes.append("\n".join(body))
        exported_async.append(async_cls)
    header = [
        f'"""Typed client of cluster {cluster_id}, version {version}: generated by `differential client publish`.',
        "",
        "    from differential import Differential",
        f"    from {module} import {exported[0][1] if exported else 'SERVICES'}",
        f"    client = {exported[0][1] if exported else 'SERVICES[name]'}(Differential(api_secret, endpoint=...))",
        "",
        "Do not edit: publish again to regenerate it from the services' schemas.",
        '"""',
        "import json",
    ]
    if "datetime" in types.uses:
        header.append("import datetime")
    header += ["from typing import Any, Dict, List, Literal, Tuple, TypedDict, Union", "",
               "from differential import AsyncDifferential, Differential", "",
               f"__version__ = {version!r}", f"CLUSTER_ID = {cluster_id!r}"]
    services_map = ", ".join(f"{name!r}: {cls}" for name, cls in exported)
    all_names = sorted([cls for _, cls in exported] + exported_async + ["SERVICES", "CLUSTER_ID"])
    parts = ["\n".join(header), _PRELUDE.strip("\n")] + types.defs + classes
    parts.append(f"SERVICES: Dict[str, Any] = {{{services_map}}}\n__all__ = {all_names!r}")
    return "\n\n\n".join(parts) + "\n"
