"""`differential deploy ...`: put a service on AWS Lambda through the control-plane (issue 12).

    differential deploy create SERVICE PATH [--runtime R] [--module pkg.mod:attr] [--requirements FILE]
                               [--entrypoint FILE] [--no-wait] [--timeout SECONDS]
    differential deploy list SERVICE
    differential deploy status SERVICE [DEPLOYMENT_ID]          (default: the newest)
    differential deploy logs SERVICE [DEPLOYMENT_ID] [--filter F] [--start T] [--end T] [--follow]
    differential deploy rollback SERVICE [DEPLOYMENT_ID]        (default: the newest inactive one
                                                                 before the active one)
    differential deploy delete SERVICE [--yes]

Every command takes --cluster (env DIFFERENTIAL_CLUSTER_ID), --json, and the management secret and
endpoint as the other management commands do. `create` packages PATH (bundles/), asks for a
deployment, uploads the zip to the presigned URL the control-plane hands out (a progress bar on a
terminal), releases it and waits for the stack: exit 0 once the deployment is active.

Exit codes: those of `differential` (cli.py), and for deployments
    1  the deployment failed (its reason is printed)
    6  it was still deploying when --timeout ran out (it goes on; `deploy status` follows it)
    7  the control-plane refused (e.g. 409: the bundle is missing or the status does not allow it;
       501: the control-plane has no cloud settings)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import functools
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import quote

import httpx

from .bundles import Bundle, BundleError, node, python
from .bundles.zipping import LAMBDA_DIRECT_ZIP_LIMIT
from .errors import ControlPlaneError
from .transport import SyncTransport

# The `differential` command line (cli.py) that registered these commands: its exit codes, output
# helpers, errors and management connection. Given to add_commands rather than imported, since
# cli.py imports this module (the package has no import cycle).
cli: Any = None
POLL_SECONDS = 1.0
DEFAULT_TIMEOUT = 600.0
_CHUNK = 256 * 1024
_TERMINAL = ("active", "failed", "inactive")
_RUNTIME = re.compile(r"^(python3\.\d+|nodejs\d+\.x)$")


# -- paths and small helpers --------------------------------------------------------------------

def _cluster(args: argparse.Namespace) -> str:
    cluster = args.cluster or os.environ.get("DIFFERENTIAL_CLUSTER_ID")
    if not cluster:
        raise cli.UsageError("which cluster? pass --cluster CLUSTER_ID or set DIFFERENTIAL_CLUSTER_ID")
    return cluster


def _deployments_path(args: argparse.Namespace, *rest: str) -> str:
    base = f"/clusters/{quote(_cluster(args), safe='')}/service/{quote(args.service, safe='')}/deployments"
    return "/".join([base, *(quote(r, safe="") for r in rest)])


def _progress_line(text: str, final: bool = False) -> None:
    """A status line rewritten in place on a terminal; printed once per change elsewhere."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _describe(dep: Dict[str, Any]) -> str:
    reason = f": {dep['reason']}" if dep.get("reason") else ""
    return f"deployment {dep.get('id')} of {dep.get('service')} is {dep.get('status')}{reason}"


def _not_configured_is_refused(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """501 (the control-plane has no cloud settings) exits 7, not 5: asking again will not help."""

    @functools.wraps(func)
    def command(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ControlPlaneError as e:
            if e.status != 501:
                raise
            cli._err(f"differential: {e}")
            return cli.EXIT_REFUSED

    return command


def _list(http: SyncTransport, args: argparse.Namespace) -> List[Dict[str, Any]]:
    return (http.request("GET", _deployments_path(args)) or {}).get("deployments") or []


# -- create: bundle, upload, release, wait ----------------------------------------------------------

def _runtime(args: argparse.Namespace, source: Path) -> str:
    if args.runtime:
        if not _RUNTIME.match(args.runtime):
            raise cli.UsageError(f"--runtime {args.runtime!r}: use a Lambda runtime such as python3.13 or nodejs22.x")
        return args.runtime
    is_node, is_python = node.looks_like_node(source), python.looks_like_python(source)
    if is_node and is_python:
        raise cli.UsageError(f"{source} looks like a Node service (package.json) and a Python one: pass --runtime "
                         "python3.13 or --runtime nodejs22.x")
    if is_node:
        return "nodejs22.x"
    if is_python:
        return "python3.13"
    raise cli.UsageError(f"{source} has neither package.json nor .py files, pyproject.toml or requirements.txt: "
                     "PATH is the service's folder")


def build_bundle(args: argparse.Namespace, dest: Path) -> Bundle:
    source = Path(args.path)
    if not source.is_dir():
        raise cli.UsageError(f"{args.path} is not a folder: PATH is the service's folder")
    runtime = _runtime(args, source)
    say = (lambda line: None) if args.json else cli._err
    try:
        if runtime.startswith("python"):
            if args.entrypoint:
                raise cli.UsageError("--entrypoint is for Node services; a Python service takes --module")
            return python.build(source, dest, service=args.service, module=args.module,
                                requirements=Path(args.requirements) if args.requirements else None,
                                runtime=runtime, log=say)
        if args.module or args.requirements:
            raise cli.UsageError("--module and --requirements are for Python services; a Node service takes "
                             "--entrypoint (default: package.json \"main\")")
        return node.build(source, dest, entrypoint=args.entrypoint, runtime=runtime, log=say)
    except BundleError as e:
        raise cli.UsageError(str(e)) from None


class _UploadBody:
    """The zip as an httpx body: read in chunks, reporting progress; tell/seek let httpx send a
    Content-Length (S3's presigned PUT refuses chunked bodies)."""

    def __init__(self, path: Path, report: Callable[[int, int], None]) -> None:
        self._file = path.open("rb")
        self._total = path.stat().st_size
        self._report = report

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def __iter__(self) -> Iterator[bytes]:
        self._file.seek(0)
        sent = 0
        while True:
            chunk = self._file.read(_CHUNK)
            if not chunk:
                break
            sent += len(chunk)
            self._report(sent, self._total)
            yield chunk

    def close(self) -> None:
        self._file.close()


def upload(bundle: Bundle, answer: Dict[str, Any], *, quiet: bool) -> None:
    """PUT the zip to the presigned URL with exactly the headers the control-plane named."""
    max_bytes = answer.get("maxBytes")
    if isinstance(max_bytes, int) and bundle.size > max_bytes:
        raise cli.UsageError(f"the bundle is {_size(bundle.size)}; the control-plane takes at most {_size(max_bytes)} "
                         "(its asset limit): leave out large files or dependencies")
    tty = sys.stderr.isatty() and not quiet
    last = [-1.0]

    def report(sent: int, total: int) -> None:
        if not tty:
            return
        now = time.monotonic()
        if sent < total and now - last[0] < 0.1:
            return
        last[0] = now
        width = 30
        filled = int(width * sent / total) if total else width
        _progress_line(f"Uploading [{'#' * filled}{'.' * (width - filled)}] {_size(sent)}/{_size(total)}",
                       final=sent >= total)

    if bundle.size > LAMBDA_DIRECT_ZIP_LIMIT and not quiet:
        cli._err(f"note: the bundle is over the {_size(LAMBDA_DIRECT_ZIP_LIMIT)} the Lambda API takes directly; it goes "
             "through S3, where Lambda's limit is 250 MB unzipped")
    if not quiet and not tty:
        cli._err(f"Uploading {_size(bundle.size)}")
    body = _UploadBody(bundle.path, report)
    headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
    headers.setdefault("Content-Type", answer.get("contentType") or "application/zip")
    try:
        resp = httpx.put(answer["presignedUrl"], content=body, headers=headers,
                         timeout=httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0))
    except httpx.TransportError as e:
        raise UploadFailed(f"the upload to the asset store failed: {e!r}; run the command again",
                           cli.EXIT_UNAVAILABLE) from None
    finally:
        body.close()
    if resp.status_code != 200:
        raise UploadFailed(f"the asset store answered {resp.status_code} to the upload "
                           f"({resp.text.strip()[:300]!r}); run the command again",
                           cli.EXIT_UNAVAILABLE if resp.status_code >= 500 else cli.EXIT_REFUSED)


class UploadFailed(Exception):
    """The PUT to the presigned URL did not answer 200 (exit 5 on a server error, else 7)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def wait_for(http: SyncTransport, args: argparse.Namespace, dep_id: str, timeout: float,
             quiet: bool) -> Dict[str, Any]:
    """Poll the deployment every second until it is active, failed or inactive, or `timeout`."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    shown = None
    while True:
        dep = http.request("GET", _deployments_path(args, dep_id))
        status = dep.get("status")
        if not quiet:
            line = f"Deployment {dep_id}: {status} ({time.monotonic() - started:.0f} s)"
            if sys.stderr.isatty() or status != shown:
                _progress_line(line, final=status in _TERMINAL)
            shown = status
        if status in _TERMINAL or time.monotonic() >= deadline:
            return dep
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _finish(dep: Dict[str, Any], args: argparse.Namespace, waited: bool) -> int:
    status = dep.get("status")
    if args.json:
        cli._out(cli._dump(dep))
    if not waited:
        if not args.json:
            cli._out(f"Released: {_describe(dep)}; follow it with `differential deploy status {dep.get('service')} "
                 f"{dep.get('id')}`")
        return cli.EXIT_OK
    if status == "active":
        if not args.json:
            cli._out(f"Deployment {dep.get('id')} of {dep.get('service')} is active (function {dep.get('functionName')}, "
                 f"stack {dep.get('stackName')})")
        return cli.EXIT_OK
    if status in ("failed", "inactive"):
        cli._err(f"differential: {_describe(dep)}" + ("" if dep.get("reason") else " (no reason recorded; "
             "see `differential deploy logs`)"))
        return cli.EXIT_REMOTE  # the deployment failed: the code of a failed call
    cli._err(f"differential: {_describe(dep)} after {args.timeout:g} s; it goes on: `differential deploy status "
         f"{dep.get('service')} {dep.get('id')}`")
    return cli.EXIT_TIMEOUT


def cmd_create(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise cli.UsageError("--timeout must be a positive number of seconds")
    with tempfile.TemporaryDirectory(prefix="differential-deploy-") as tmp:
        bundle = build_bundle(args, Path(tmp) / "bundle.zip")
        if not args.json:
            cli._err(f"Bundle: {bundle.files} files, {_size(bundle.size)} zipped ({_size(bundle.unzipped)} unzipped), "
                 f"sha256 {bundle.sha256[:12]}, runtime {bundle.runtime}"
                 + (f", module {bundle.service_module}" if bundle.service_module else ""))
        body: Dict[str, Any] = {"runtime": bundle.runtime}
        if bundle.service_module:
            body["serviceModule"] = bundle.service_module
        with cli._management(args) as http:
            dep = http.request("POST", _deployments_path(args), json=body)
            if not args.json:
                cli._err(f"Created deployment {dep['id']} (stack {dep.get('stackName')})")
            answer = http.request("POST", f"/clusters/{quote(_cluster(args), safe='')}/assets",
                                  json={"type": "service_bundle", "target": dep["id"]})
            try:
                upload(bundle, answer, quiet=args.json)
            except UploadFailed as e:
                cli._err(f"differential: {e}")
                return e.code
            dep = http.request("POST", _deployments_path(args, dep["id"], "release"))
            if not args.json:
                cli._err(f"Released deployment {dep['id']}: {dep.get('status')}")
            if args.no_wait:
                return _finish(dep, args, waited=False)
            dep = wait_for(http, args, dep["id"], args.timeout, quiet=args.json)
    return _finish(dep, args, waited=True)


# -- list, status ------------------------------------------------------------------------------------

_COLUMNS = ["id", "status", "runtime", "createdAt", "activatedAt", "reason"]


def cmd_list(args: argparse.Namespace) -> int:
    with cli._management(args) as http:
        deployments = _list(http, args)
    if args.json:
        cli._out(cli._dump({"deployments": deployments}))
    elif not deployments:
        cli._out(f"No deployments of {args.service}.")
    else:
        cli._out(cli._table(deployments, _COLUMNS, ["ID", "STATUS", "RUNTIME", "CREATED", "ACTIVATED", "REASON"]))
    return cli.EXIT_OK


def _newest(http: SyncTransport, args: argparse.Namespace) -> Dict[str, Any]:
    deployments = _list(http, args)
    if not deployments:
        raise _NoDeployment(f"{args.service} has no deployments in cluster {_cluster(args)}")
    return deployments[0]


class _NoDeployment(Exception):
    pass


def cmd_status(args: argparse.Namespace) -> int:
    with cli._management(args) as http:
        dep = (http.request("GET", _deployments_path(args, args.deployment_id)) if args.deployment_id
               else _newest(http, args))
    if args.json:
        cli._out(cli._dump(dep))
        return cli.EXIT_OK
    for key in ("id", "service", "status", "reason", "runtime", "serviceModule", "provider", "stackName",
                "functionName", "createdAt", "releasedAt", "activatedAt", "expiresAt"):
        if dep.get(key) is not None:
            cli._out(f"{key + ':':15} {dep[key]}")
    bundle = dep.get("bundle")
    if bundle:
        cli._out(f"{'bundle:':15} {_size(bundle.get('size') or 0)}, sha256 {bundle.get('sha256')}")
    return cli.EXIT_OK


# -- logs ----------------------------------------------------------------------------------------

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, flag: str, now_ms: Optional[int] = None) -> int:
    """Epoch milliseconds, an ISO 8601 time with an offset, or a duration ago (30s, 15m, 2h, 1d)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = _AGO.match(text)
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT[m.group(2)] * 1000)
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise cli.UsageError(f"{flag} {text!r}: give epoch milliseconds, an ISO 8601 time with an offset "
                         "(2026-12-01T17:00:00Z) or a duration ago (15m, 2h)")
    return int(when.timestamp() * 1000)


def _stamp(ms: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(int(ms) / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError):
        return str(ms)


def _pages(http: SyncTransport, path: str, params: Dict[str, Any], max_pages: int) -> Iterator[Dict[str, Any]]:
    token = None
    for _ in range(max_pages):
        page = http.request("GET", path, params=dict(params, **({"next": token} if token else {}))) or {}
        yield from page.get("events") or []
        token = page.get("next")
        if not token:
            return


def cmd_logs(args: argparse.Namespace) -> int:
    params: Dict[str, Any] = {"limit": args.limit}
    if args.filter:
        params["filter"] = args.filter
    start = parse_time(args.start, "--start") if args.start else None
    end = parse_time(args.end, "--end") if args.end else None
    if start is not None and end is not None and start >= end:
        raise cli.UsageError("--start must be before --end")
    if args.follow and end is not None:
        raise cli.UsageError("--follow reads new lines as they come: leave out --end")

    def show(event: Dict[str, Any]) -> None:
        if args.json and args.follow:
            cli._out(cli._dump(event, pretty=False))
        elif not args.json:
            cli._out(f"{_stamp(event.get('timestamp'))}  {event.get('message', '')}")
        sys.stdout.flush()

    with cli._management(args) as http:
        dep_id = args.deployment_id or _newest(http, args)["id"]
        path = _deployments_path(args, dep_id, "logs")
        window = dict(params, **({"start": start} if start is not None else {}),
                      **({"end": end} if end is not None else {}))
        collected: List[Dict[str, Any]] = []
        seen: set = set()
        last = start
        for event in _pages(http, path, window, args.max_pages):
            collected.append(event)
            seen.add((event.get("timestamp"), event.get("message")))
            last = max(last or 0, int(event.get("timestamp") or 0))
            if args.follow or not args.json:
                show(event)
        if args.json and not args.follow:
            cli._out(cli._dump({"deploymentId": dep_id, "events": collected}))
            return cli.EXIT_OK
        if not args.follow:
            if not collected:
                cli._err(f"No log lines for deployment {dep_id} in that window.")
            return cli.EXIT_OK
        try:  # --follow: poll from the newest line seen; Ctrl-C ends it (exit 0)
            last = last or int(time.time() * 1000) - 3600_000
            while True:
                time.sleep(args.interval)
                for event in _pages(http, path, dict(params, start=last), args.max_pages):
                    key = (event.get("timestamp"), event.get("message"))
                    if key in seen:
                        continue
                    seen.add(key)
                    last = max(last, int(event.get("timestamp") or 0))
                    show(event)
        except KeyboardInterrupt:
            return cli.EXIT_OK


# -- rollback, delete ----------------------------------------------------------------------------------

def rollback_target(deployments: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The newest inactive deployment older than the active one (newest first), else the newest
    inactive one when none is active."""
    active = next((i for i, d in enumerate(deployments) if d.get("status") == "active"), None)
    older = deployments[active + 1:] if active is not None else deployments
    return next((d for d in older if d.get("status") == "inactive"), None)


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise cli.UsageError("--timeout must be a positive number of seconds")
    with cli._management(args) as http:
        target_id = args.deployment_id
        if not target_id:
            target = rollback_target(_list(http, args))
            if target is None:
                raise _NoDeployment(f"{args.service} has no inactive deployment before the active one to roll "
                                    "back to; pass DEPLOYMENT_ID (see `differential deploy list`)")
            target_id = target["id"]
        dep = http.request("POST", _deployments_path(args, target_id, "rollback"))
        if not args.json:
            cli._err(f"Rolling back {args.service} to deployment {dep['id']}: {dep.get('status')}")
        if args.no_wait:
            return _finish(dep, args, waited=False)
        dep = wait_for(http, args, dep["id"], args.timeout, quiet=args.json)
    return _finish(dep, args, waited=True)


def cmd_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise cli.UsageError("deleting a service's deployments needs a confirmation: pass --yes, or run it in a "
                             "terminal")
        cli._err(f"This removes {args.service}'s stack and Lambda function and every bundle of it; calls to it wait "
             "for a machine again.")
        sys.stderr.write("Type the service's name to confirm: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != args.service:
            cli._err("Not deleted.")
            return cli.EXIT_USAGE
    with cli._management(args) as http:
        answer = http.request("DELETE", _deployments_path(args)) or {}
    if args.json:
        cli._out(cli._dump(answer))
    else:
        deleted = answer.get("deleted") or []
        cli._out(f"Deleted {args.service}'s stack {answer.get('stackName')} and {len(deleted)} deployment(s)")
    return cli.EXIT_OK


# -- parser ----------------------------------------------------------------------------------------

def add_commands(sub: Any, common: argparse.ArgumentParser, host: Any) -> None:
    """Register `deploy` (aliases `deployments`, `deployment`) and its actions; `host` is the CLI
    module doing it (cli.py), whose helpers and exit codes the commands use."""
    global cli
    cli = host
    cli.FAILURES.setdefault(_NoDeployment, (cli.EXIT_NOT_FOUND, "differential: {e}"))
    deploy = sub.add_parser("deploy", aliases=["deployments", "deployment"], parents=[],
                            help="deploy a service to AWS Lambda through the control-plane (management secret)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = deploy.add_subparsers(dest="action", metavar="ACTION", parser_class=cli._Parser)
    dsub.required = True

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                deployment: bool = False) -> argparse.ArgumentParser:
        p = dsub.add_parser(name, parents=[common], help=help, epilog=_EXITS,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("service", help="the service's name")
        if deployment:
            p.add_argument("deployment_id", nargs="?", help="a deployment id (see `deploy list`)")
        p.add_argument("--cluster", help="cluster id (env DIFFERENTIAL_CLUSTER_ID)")
        p.set_defaults(func=_not_configured_is_refused(func))
        return p

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-wait", action="store_true", help="return once released; do not wait for the stack")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help=f"seconds to wait for active or failed (default {DEFAULT_TIMEOUT:g}); then exit 6")

    p = command("create", cmd_create, "package PATH, upload it, release it and wait until it is active")
    p.add_argument("path", help="the service's folder")
    p.add_argument("--runtime", help="Lambda runtime: python3.13 (default for Python sources) or nodejs22.x "
                   "(default with package.json), or another the template allows")
    p.add_argument("--module", help="Python: package.module:attribute of the differential.Service (default: the "
                   "one `Service(\"SERVICE\")` found in PATH)")
    p.add_argument("--requirements", help="Python: requirements file (default PATH/requirements.txt, else "
                   "pyproject.toml's dependencies)")
    p.add_argument("--entrypoint", help="Node: the module exporting the service (default package.json \"main\")")
    waiting(p)
    command("list", cmd_list, "list the service's deployments, newest first")
    command("status", cmd_status, "show a deployment (default: the newest)", deployment=True)
    p = command("logs", cmd_logs, "print a deployment's function logs (default: the newest deployment)",
                deployment=True)
    p.add_argument("--filter", help="CloudWatch Logs filter pattern, e.g. ERROR or '\"exact phrase\"'")
    p.add_argument("--start", help="from: epoch ms, ISO 8601 time, or a duration ago (15m, 2h; default 1h ago)")
    p.add_argument("--end", help="until: epoch ms, ISO 8601 time, or a duration ago (default now)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines; Ctrl-C ends it (exit 0)")
    p.add_argument("--limit", type=int, default=500, help="lines per page (1-1000, default 500)")
    p.add_argument("--max-pages", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    p = command("rollback", cmd_rollback, "release an earlier deployment again (default: the newest inactive "
                "one before the active one) and wait until it is active", deployment=True)
    waiting(p)
    p = command("delete", cmd_delete, "remove the service's stack, function and bundles")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


_EXITS = """Exit codes: 0 done (create/rollback: the deployment is active); 1 the deployment failed (its
reason is printed); 2 usage (bad options, a folder that cannot be packaged, no secret); 3 the
management secret was refused; 4 no such cluster, service or deployment; 5 control-plane
unreachable or a server error; 6 still deploying when --timeout ran out; 7 the control-plane
refused (409: the status does not allow it; 501: no cloud settings)."""
