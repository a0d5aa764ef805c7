"""`differential client publish` and `differential registry-tokens`: the cluster's typed client
packages and the tokens that read them (management secret).

    differential client publish --cluster ID [--increment patch|minor|major]
                                [--language typescript|python|all] [--create-token NAME] [--json]
    differential registry-tokens create NAME --cluster ID [--json]   (prints the token once)
    differential registry-tokens list --cluster ID [--json]
    differential registry-tokens revoke TOKEN_ID --cluster ID [--json]

Publishing reads the service definitions the cluster has registered (and the operators' schemas),
then per language: reserves a version (`POST /clusters/:id/client-libraries`), builds the package
(codegen/: byte-identical for the same definitions), uploads it through the asset flow (`POST
/clusters/:id/assets`, then a PUT with exactly the headers given), and publishes it (`POST
.../client-libraries/:id/publish`: the server checks the object; only then does the version
count). Names (npm package, Python distribution, module and wheel file) come from the server's
reservation. It ends with the `.npmrc` and `pip install` lines that install the packages.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, urljoin, urlsplit

import httpx

from .codegen import model, npm_pack, python_client, typescript_client, wheel
from .errors import ControlPlaneError
from .management_secret import is_local

LANGUAGES = ("typescript", "python")
CLUSTER_ENV = "DIFFERENTIAL_CLUSTER_ID"
TOKEN_ENV = "DIFFERENTIAL_REGISTRY_TOKEN"
SDK_REQUIREMENT = "differential>=0.1"
UPLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0)
EXIT_OK = 0


class _Kit:
    """What cli.py hands in (add_commands): its management connection and its usage error (exit
    2), so that this module never imports cli.py (the package has no import cycle)."""

    management: Callable[[argparse.Namespace], Any]
    usage_error: Callable[[str], Exception] = ValueError


_cli = _Kit()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _table(rows: List[Dict[str, Any]], columns: List[str], headers: List[str]) -> str:
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _cluster(args: argparse.Namespace) -> str:
    cluster = getattr(args, "cluster", None) or os.environ.get(CLUSTER_ENV)
    if not cluster:
        raise _cli.usage_error(f"which cluster? pass --cluster CLUSTER_ID (or set {CLUSTER_ENV})")
    return cluster


def _path(cluster: str, *rest: str) -> str:
    return "/".join([f"/clusters/{quote(cluster, safe='')}", *[quote(r, safe="") for r in rest]])


# -- definitions ---------------------------------------------------------------------------------

def fetch_services(http: Any, cluster: str) -> List[model.ServiceSpec]:
    """The cluster's services as the generators take them: definitions from `GET /clusters/:id`,
    each service's operator schema from `GET .../service/:name`."""
    details = http.request("GET", _path(cluster), params={"limit": model.MAX_SERVICES}) or {}
    per_service: Dict[str, Dict[str, Any]] = {}
    for d in details.get("definitions") or []:
        name = d.get("name") if isinstance(d, dict) else None
        if isinstance(name, str):
            per_service[name] = http.request("GET", _path(cluster, "service", name), params={"limit": 1}) or {}
    return model.services_from_answers(details, per_service)


def _no_services(cluster: str) -> Exception:
    return _cli.usage_error(
        f"cluster {cluster} has no service with functions registered, so there is nothing to publish. "
        "Start a service against it first: in Python, `svc = Differential(api_secret).service(\"name\")`, "
        "`@svc.function` on each function, `svc.start()`; with @differentialhq/core, "
        "`d.service({name, functions}).start()`. Then run `differential client publish` again.")


# -- building ------------------------------------------------------------------------------------

def build_package(language: str, services: List[model.ServiceSpec], reservation: Dict[str, Any],
                  cluster: str) -> Tuple[str, bytes]:
    """(file name, bytes) of one language's package, named as the reservation says."""
    version = reservation["version"]
    if language == "typescript":
        package = reservation["packageName"]
        files = typescript_client.package_files(services, package=package, version=version, cluster_id=cluster)
        return reservation.get("fileName") or f"{package.rsplit('/', 1)[-1]}-{version}.tgz", npm_pack.pack(files)
    for key in ("fileName", "distribution", "module"):
        if not reservation.get(key):
            raise ControlPlaneError(200, f"the control-plane's reservation names no {key!r} for the Python package; "
                                         "upgrade the control-plane")
    source = python_client.render(services, module=reservation["module"], version=version, cluster_id=cluster)
    data = wheel.build(file_name=reservation["fileName"], distribution=reservation["distribution"],
                       module=reservation["module"], version=version, source=source,
                       summary=f"Typed client of Differential cluster {cluster} (generated)",
                       requires=[SDK_REQUIREMENT])
    return reservation["fileName"], data


def upload(http: Any, cluster: str, library_id: str, data: bytes, label: str) -> None:
    """Ask for an upload URL and PUT the bytes with exactly the headers the server gave."""
    ticket = http.request("POST", _path(cluster, "assets"), json={"type": "client_library", "target": library_id})
    url = urljoin(http.config.endpoint.rstrip("/") + "/", ticket["presignedUrl"])
    headers = dict(ticket.get("headers") or {})
    if "contentType" in ticket and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = ticket["contentType"]
    limit = ticket.get("maxBytes")
    if isinstance(limit, int) and len(data) > limit:
        raise _cli.usage_error(f"{label} is {len(data)} bytes, more than the {limit} the control-plane accepts")
    _err(f"{label}: uploading {len(data)} bytes ...")
    try:
        resp = httpx.put(url, content=data, headers=headers, timeout=UPLOAD_TIMEOUT)
    except httpx.TransportError as e:
        where = urlsplit(url)
        raise ControlPlaneError(503, f"{label}: the upload to {where.scheme}://{where.netloc} failed: {e!r}") from e
    if resp.status_code >= 300:  # the URL carries a signature: name its host only
        where = urlsplit(url)
        raise ControlPlaneError(resp.status_code, f"{label}: the upload to {where.scheme}://{where.netloc} answered "
                                                  f"{resp.status_code}: {resp.text[:200]!r}")
    _err(f"{label}: uploaded")


def publish_one(http: Any, cluster: str, language: str, increment: str,
                services: List[model.ServiceSpec]) -> Dict[str, Any]:
    reservation = http.request("POST", _path(cluster, "client-libraries"),
                               json={"increment": increment, "language": language})
    name, data = build_package(language, services, reservation, cluster)
    label = f"{language} {reservation.get('packageName') or reservation.get('distribution')} {reservation['version']}"
    _err(f"{label}: reserved; built {name}")
    upload(http, cluster, reservation["id"], data, label)
    published = http.request("POST", _path(cluster, "client-libraries", reservation["id"], "publish"))
    _err(f"{label}: published")
    return {**published, "distribution": reservation.get("distribution"), "module": reservation.get("module")}


# -- how to install --------------------------------------------------------------------------------

def install_lines(endpoint: str, libraries: List[Dict[str, Any]], token: Optional[str]) -> Dict[str, Any]:
    """The `.npmrc` lines and the `pip install` command for the published packages."""
    parts = urlsplit(endpoint.rstrip("/"))
    host_path = parts.netloc + parts.path
    base = f"{parts.scheme}://{host_path}"
    out: Dict[str, Any] = {}
    npm = [lib for lib in libraries if lib.get("language") == "typescript"]
    py = [lib for lib in libraries if lib.get("language") == "python"]
    if npm:
        scope = npm[0]["packageName"].split("/", 1)[0]
        out["npmrc"] = [f"{scope}:registry={base}/packages/npm/",
                        f"//{host_path}/packages/npm/:_authToken={token or '${' + TOKEN_ENV + '}'}"]
        out["npmInstall"] = f"npm install {npm[0]['packageName']}@{npm[0]['version']}"
    if py:
        secret = token or f"${TOKEN_ENV}"
        trusted = "" if parts.scheme == "https" or is_local(endpoint) else f" --trusted-host {parts.hostname}"
        dist = py[0].get("distribution") or py[0]["packageName"]
        out["pipInstall"] = (f"pip install --index-url {parts.scheme}://__token__:{secret}@{host_path}/packages/pypi/simple/"
                             f"{trusted} {dist}=={py[0]['version']}")
    return out


def _print_publish(args: argparse.Namespace, cluster: str, libraries: List[Dict[str, Any]],
                   made: Optional[Dict[str, Any]]) -> None:
    lines = install_lines(args.endpoint_used, libraries, made.get("token") if made else None)
    if args.json:
        _out(_dump({"cluster": cluster, "libraries": libraries, **lines,
                              **({"token": made} if made else {})}))
        return
    for lib in libraries:
        _out(f"Published {lib.get('packageName')} {lib.get('version')} ({lib.get('language')}, "
                  f"{lib.get('fileName')}, {lib.get('size')} bytes, sha256 {lib.get('sha256')})")
    if made:
        _out(f"Registry token {made.get('name')} ({made.get('id')}): {made.get('token')}")
        _out("The token is shown only now: store it (it reads this cluster's packages and nothing else).")
    else:
        _out(f"Use a registry token: `differential registry-tokens create NAME --cluster {cluster}` "
                  f"prints one; put it in {TOKEN_ENV}.")
    if "npmrc" in lines:
        _out("")
        _out("npm: put these lines in the project's .npmrc, then install:")
        for line in lines["npmrc"]:
            _out(f"  {line}")
        _out(f"  {lines['npmInstall']}")
    if "pipInstall" in lines:
        _out("")
        _out("pip (the Python SDK `differential` must be installable too, e.g. installed first):")
        _out(f"  {lines['pipInstall']}")


def cmd_client_publish(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    languages = LANGUAGES if args.language == "all" else (args.language,)
    with _cli.management(args) as http:
        args.endpoint_used = http.config.endpoint
        services = fetch_services(http, cluster)
        if not services:
            raise _no_services(cluster)
        made = None
        if args.create_token:
            made = http.request("POST", _path(cluster, "registry-tokens"), json={"name": args.create_token})
        libraries = [publish_one(http, cluster, lang, args.increment, services) for lang in languages]
    _print_publish(args, cluster, libraries, made)
    return EXIT_OK


# -- registry tokens -----------------------------------------------------------------------------

def cmd_tokens_create(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    with _cli.management(args) as http:
        made = http.request("POST", _path(cluster, "registry-tokens"), json={"name": args.name})
    if args.json:
        _out(_dump(made))
    else:
        _out(f"Created registry token {made.get('name')} ({made.get('id')})")
        _out(f"Token:       {made.get('token')}")
        _out("The token is shown only now: store it (it reads this cluster's packages and nothing else).")
    return EXIT_OK


def cmd_tokens_list(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    with _cli.management(args) as http:
        listed = http.request("GET", _path(cluster, "registry-tokens")) or {}
    tokens = listed.get("tokens") or []
    if args.json:
        _out(_dump(listed))
    elif not tokens:
        _out(f"No registry tokens in cluster {cluster}.")
    else:
        _out(_table(tokens, ["id", "name", "createdAt", "lastUsedAt"],
                              ["ID", "NAME", "CREATED", "LAST USED"]))
    return EXIT_OK


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    with _cli.management(args) as http:
        http.request("DELETE", _path(cluster, "registry-tokens", args.token_id))
    _out(_dump({"revoked": args.token_id}) if args.json else f"Revoked registry token {args.token_id}")
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------

def add_commands(sub: Any, common: argparse.ArgumentParser, *, management: Callable[[argparse.Namespace], Any],
                 usage_error: Callable[[str], Exception]) -> None:
    """Register `client publish` and `registry-tokens create|list|revoke` on the CLI's parser.
    `management(args)` opens a transport with the management secret; `usage_error(message)` is
    the error the CLI exits 2 with."""
    _cli.management, _cli.usage_error = management, usage_error
    client = sub.add_parser("client", help="the cluster's typed client packages (management secret)")
    csub = client.add_subparsers(dest="action", metavar="ACTION", parser_class=type(client))
    csub.required = True
    p = csub.add_parser("publish", parents=[common], help="build the typed clients from the registered services "
                        "and publish them to the control-plane's npm and Python registries")
    p.add_argument("--cluster", help=f"cluster id (env {CLUSTER_ENV})")
    p.add_argument("--increment", choices=("patch", "minor", "major"), default="patch",
                   help="which part of the version goes up (default patch)")
    p.add_argument("--language", choices=LANGUAGES + ("all",), default="all",
                   help="which package to publish (default all: both)")
    p.add_argument("--create-token", metavar="NAME", help="also create a registry token, printed once in the lines")
    p.set_defaults(func=cmd_client_publish)

    tokens = sub.add_parser("registry-tokens", help="tokens that read one cluster's packages (management secret)")
    tsub = tokens.add_subparsers(dest="action", metavar="ACTION", parser_class=type(tokens))
    tsub.required = True
    p = tsub.add_parser("create", parents=[common], help="create a token; prints it once")
    p.add_argument("name", help="what the token is for (shown in the list)")
    p.add_argument("--cluster", help=f"cluster id (env {CLUSTER_ENV})")
    p.set_defaults(func=cmd_tokens_create)
    p = tsub.add_parser("list", parents=[common], help="list the cluster's registry tokens (never the tokens)")
    p.add_argument("--cluster", help=f"cluster id (env {CLUSTER_ENV})")
    p.set_defaults(func=cmd_tokens_list)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token: it stops working at once")
    p.add_argument("token_id", help="the token's id (from the list)")
    p.add_argument("--cluster", help=f"cluster id (env {CLUSTER_ENV})")
    p.set_defaults(func=cmd_tokens_revoke)


__all__ = ["add_commands", "build_package", "fetch_services", "install_lines"]
