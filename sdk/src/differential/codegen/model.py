"""Service definitions as the generators see them, read from the management API's answers.

Where a function's schema comes from: an operator's schema (`PUT .../service/:name/schema`) wins
where it names the function, else the schema the workers registered (our Python SDK sends one per
function: an object schema of the parameters in positional order with `x-positional`); a service
of the published TypeScript SDK registers names only, so its functions have no schema (`unknown`).

An operator's service schema names its functions under `functions` or `properties`:
`{"functions": {"greet": <function schema>}}`. A function schema may carry `x-returns` (the
result's schema) and `description`s. The control-plane stores operator schemas with sorted keys,
so their parameter order is the registered schema's when the names match, else `x-order`
(a list of names), else as stored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

MAX_SERVICES = 1000
MAX_FUNCTIONS = 1000


@dataclass(frozen=True)
class Parameter:
    name: str
    schema: Any            # a JSON Schema (dict or bool); {} = anything
    required: bool
    variadic: bool = False
    has_default: bool = False
    default: Any = None
    description: Optional[str] = None


@dataclass(frozen=True)
class Function:
    name: str
    parameters: Optional[Tuple[Parameter, ...]]   # None: no schema (any arguments)
    returns: Any = None                           # a JSON Schema, or None: unknown
    description: Optional[str] = None
    root: Any = None                              # the whole function schema ($ref targets)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    functions: Tuple[Function, ...] = field(default_factory=tuple)


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _operator_functions(schema: Any) -> Dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    for key in ("functions", "properties"):
        found = schema.get(key)
        if isinstance(found, dict):
            return {k: v for k, v in found.items() if isinstance(v, (dict, bool))}
    return {}


def _text(value: Any) -> Optional[str]:
    return value.strip() if isinstance(value, str) and value.strip() else None


def function_from_schema(name: str, schema: Any, order: Optional[List[str]] = None) -> Function:
    """One function from its schema (None or unusable: no schema, any arguments)."""
    if not isinstance(schema, dict):
        return Function(name=name, parameters=None)
    description = _text(schema.get("description"))
    returns = schema.get("x-returns")
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict):
        return Function(name=name, parameters=None, returns=returns, description=description, root=schema)
    names = list(props)
    explicit = schema.get("x-order")
    if isinstance(explicit, list) and sorted(map(str, explicit)) == sorted(names):
        names = [str(n) for n in explicit]
    elif order:  # the registered schema's order for the names it has; the others after, as stored
        rank = {n: i for i, n in enumerate(order)}
        names.sort(key=lambda n: rank.get(n, len(rank)))
    required = set(schema.get("required") or [])
    params = []
    for pname in names:
        p = props[pname]
        p_dict = p if isinstance(p, dict) else {}
        params.append(Parameter(
            name=pname, schema=p, required=pname in required, variadic=bool(p_dict.get("x-variadic")),
            has_default="default" in p_dict, default=p_dict.get("default"),
            description=_text(p_dict.get("description"))))
    return Function(name=name, parameters=tuple(params), returns=returns, description=description, root=schema)


def service_spec(definition: Dict[str, Any], operator_schema: Any = None) -> ServiceSpec:
    """A service from its registered definition (`{name, functions: [{name, schema?}]}`) and the
    operator's schema (or None). Functions are sorted by name, so the output does not depend on
    the order workers sent them in."""
    name = definition.get("name")
    registered: Dict[str, Any] = {}
    for f in (definition.get("functions") or [])[:MAX_FUNCTIONS]:
        if isinstance(f, dict) and isinstance(f.get("name"), str):
            registered[f["name"]] = _loads(f.get("schema"))
    operator = _operator_functions(_loads(operator_schema))
    functions = []
    for fname in sorted(set(registered) | set(operator)):
        mine = registered.get(fname)
        order = list(mine["properties"]) if isinstance(mine, dict) and isinstance(mine.get("properties"), dict) else None
        chosen = operator[fname] if fname in operator else mine
        functions.append(function_from_schema(fname, chosen, order))
    return ServiceSpec(name=name, functions=tuple(functions))


def services_from_answers(cluster: Dict[str, Any], details: Dict[str, Dict[str, Any]]) -> List[ServiceSpec]:
    """Services from `GET /clusters/:id` (`definitions`) and, per service, `GET .../service/:name`
    (`definition`, `schema`), sorted by name. Services with no function at all are left out."""
    out = []
    for d in (cluster.get("definitions") or [])[:MAX_SERVICES]:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            continue
        detail = details.get(d["name"]) or {}
        spec = service_spec(detail.get("definition") or d, detail.get("schema"))
        if spec.functions:
            out.append(spec)
    return sorted(out, key=lambda s: s.name)


def resolve_ref(root: Any, ref: str) -> Any:
    """A local `$ref` (`#/definitions/X`, `#/$defs/X`, any JSON pointer into the function's
    schema); None when it does not resolve (the type is then unknown)."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node
