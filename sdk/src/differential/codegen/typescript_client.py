"""The npm package's files: `index.d.ts` typing the published SDK's `client<typeof service>()`,
a minimal `index.js`, and `package.json` (name and version from the server's reservation).

`@differentialhq/core@3.18.0` declares `client<T extends RegisteredService<any>>(name:
T["definition"]["name"])`, where a RegisteredService is `{definition: {name, functions}, start,
stop}`. Each service here is declared as such a value, so that

    import type { greeter } from "@differential.dev/<clusterId>";
    const client = d.client<typeof greeter>("greeter");
    await client.greet("Ada", 2);      // checked against the service's schema

type-checks correct calls and rejects a wrong argument type. Functions without a schema take any
arguments; results without a schema are `unknown`.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from .model import Function, ServiceSpec, resolve_ref
from .names import ts_identifier, unique

MAX_DEPTH = 16
PEER_SDK = "@differentialhq/core"
PEER_RANGE = "^3.18.0"


def _key(name: str) -> str:
    return name if ts_identifier(name) == name else json.dumps(name)


def ts_type(schema: Any, root: Any = None, depth: int = 0, seen: Tuple[str, ...] = ()) -> str:
    """A TypeScript type expression for a JSON Schema; `unknown` for what it cannot say."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return "unknown"
    if "$ref" in schema:
        ref = schema["$ref"]
        target = resolve_ref(root, ref)
        return "unknown" if target is None or ref in seen else ts_type(target, root, depth + 1, seen + (ref,))
    if "const" in schema:
        return json.dumps(schema["const"]) if _literal(schema["const"]) else "unknown"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        if all(_literal(v) for v in schema["enum"]):
            return _union([json.dumps(v) for v in schema["enum"]])
        return "unknown"
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _union([ts_type(s, root, depth + 1, seen) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([ts_type({**schema, "type": k}, root, depth + 1, seen) for k in kind])
    if kind == "string":
        if schema.get("x-msgpack") == "timestamp":
            return "Date"
        if schema.get("x-msgpack") == "bin" or schema.get("contentEncoding") == "binary":
            return "Uint8Array"
        return "string"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "null":
        return "null"
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, list):
            return f"[{', '.join(ts_type(s, root, depth + 1, seen) for s in items)}]"
        inner = ts_type(items, root, depth + 1, seen)
        return f"Array<{inner}>"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            required = set(schema.get("required") or [])
            fields = [f"{_key(k)}{'' if k in required else '?'}: {ts_type(v, root, depth + 1, seen)}"
                      for k, v in props.items()]
            return "{ " + "; ".join(fields) + " }"
        extra = schema.get("additionalProperties")
        return f"Record<string, {ts_type(extra, root, depth + 1, seen)}>"
    return "unknown"


def _literal(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _union(options: List[str]) -> str:
    unique_options = list(dict.fromkeys(options))
    if "unknown" in unique_options:
        return "unknown"
    return unique_options[0] if len(unique_options) == 1 else "(" + " | ".join(unique_options) + ")"


def _comment(text: str, indent: str) -> List[str]:
    body = text.replace("*/", "*\\/").splitlines()
    return [f"{indent}/**"] + [f"{indent} * {line}".rstrip() for line in body] + [f"{indent} */"]


def _signature(fn: Function) -> str:
    returns = ts_type(fn.returns, fn.root) if fn.returns is not None else "unknown"
    if fn.parameters is None:
        return f"(...args: unknown[]) => Promise<{returns}>"
    parts = []
    taken: set = set()
    # A parameter may be left out only when every later one may be too (TypeScript's rule).
    optional_from = len(fn.parameters)
    for i in range(len(fn.parameters) - 1, -1, -1):
        p = fn.parameters[i]
        if p.required and not p.variadic:
            break
        optional_from = i
    for i, p in enumerate(fn.parameters):
        name = unique(ts_identifier(p.name), taken)
        t = ts_type(p.schema, fn.root)
        if p.variadic:
            items = p.schema.get("items") if isinstance(p.schema, dict) else None
            parts.append(f"...{name}: Array<{ts_type(items, fn.root)}>")
        elif i >= optional_from:
            parts.append(f"{name}?: {t}")
        elif not p.required:
            parts.append(f"{name}: {t} | undefined")
        else:
            parts.append(f"{name}: {t}")
    return f"({', '.join(parts)}) => Promise<{returns}>"


def _names(services: List[ServiceSpec]) -> List[Tuple[ServiceSpec, str, str]]:
    taken: set = {"services", "default"}
    out = []
    for svc in services:
        value = unique(ts_identifier(svc.name), taken)
        out.append((svc, value, value[:1].upper() + value[1:]))
    return out


def declarations(services: List[ServiceSpec], *, package: str, version: str) -> str:
    lines = [f"// {package}@{version}: generated by `differential client publish`; do not edit.",
             f"// Types for {PEER_SDK}: `d.client<typeof <service>>(\"<service name>\")`.", ""]
    for svc, value, type_name in _names(services):
        lines.append(f"export type {type_name}Functions = {{")
        for fn in svc.functions:
            doc = [fn.description] if fn.description else []
            doc += [f"@param {p.name} {p.description}" for p in (fn.parameters or ()) if p.description]
            if doc:
                lines += _comment("\n".join(doc), "  ")
            lines.append(f"  {_key(fn.name)}: {_signature(fn)};")
        lines += ["};", "",
                  f"/** Service {json.dumps(svc.name)}: use as `d.client<typeof {value}>({json.dumps(svc.name)})`. */",
                  f"export type {type_name}Service = {{",
                  f"  definition: {{ name: {json.dumps(svc.name)}; functions: {type_name}Functions }};",
                  "  start: () => Promise<void>;",
                  "  stop: () => Promise<void>;",
                  "};", "",
                  f"export declare const {value}: {type_name}Service;", ""]
    entries = "; ".join(f"{json.dumps(svc.name)}: {type_name}Service" for svc, _, type_name in _names(services))
    lines += [f"export type Services = {{ {entries} }};", "",
              "/** Every service's name. */",
              "export declare const services: ReadonlyArray<keyof Services>;", ""]
    return "\n".join(lines)


def javascript(services: List[ServiceSpec], *, package: str, version: str) -> str:
    """Minimal runtime: each service's name (the types are the product)."""
    lines = [f"// {package}@{version}: generated by `differential client publish`; do not edit.",
             '"use strict";', 'Object.defineProperty(exports, "__esModule", { value: true });']
    for svc, value, _ in _names(services):
        lines.append(f"exports.{value} = Object.freeze({{ definition: Object.freeze({{ name: {json.dumps(svc.name)}, "
                     "functions: Object.freeze({}) }) });")
    lines.append(f"exports.services = Object.freeze({json.dumps([s.name for s in services])});")
    return "\n".join(lines) + "\n"


def package_json(*, package: str, version: str, cluster_id: str) -> str:
    manifest: Dict[str, Any] = {
        "name": package,
        "version": version,
        "description": f"Typed client of Differential cluster {cluster_id} (generated)",
        "main": "index.js",
        "types": "index.d.ts",
        "files": ["index.js", "index.d.ts"],
        "peerDependencies": {PEER_SDK: PEER_RANGE},
        "license": "UNLICENSED",
    }
    return json.dumps(manifest, indent=2) + "\n"


def package_files(services: List[ServiceSpec], *, package: str, version: str, cluster_id: str) -> Dict[str, bytes]:
    """The package's files by path (inside `package/`)."""
    return {
        "package.json": package_json(package=package, version=version, cluster_id=cluster_id).encode(),
        "index.d.ts": declarations(services, package=package, version=version).encode(),
        "index.js": javascript(services, package=package, version=version).encode(),
    }
