"""The `differential` command line.

    differential clusters create [--description TEXT]     (management secret)
    differential clusters list                             (management secret)
    differential clusters show CLUSTER_ID                  (management secret)
    differential clusters rotate-secret CLUSTER_ID [--grace 1h]   (management secret)
    differential clusters delete CLUSTER_ID [--yes]        (management secret)
    differential services list --cluster CLUSTER_ID        (management secret)
    differential services schema put|show --cluster CLUSTER_ID SERVICE [SCHEMA_JSON | --file PATH]
                                                           (management secret)
    differential call SERVICE FUNCTION [JSON_ARG ...]      (cluster API secret; --delay, --run-at, --retry-*)
    differential jobs show JOB_ID                          (cluster API secret)
    differential jobs show JOB_ID --cluster CLUSTER_ID     (management secret: the job in full, its activity)
    differential jobs list --cluster CLUSTER_ID [--status S ...] [--service S] [--function F]
                           [--created-after T] [--created-before T] [--limit N] [--cursor TOKEN]
                                                           (management secret)
    differential jobs rerun JOB_ID --cluster CLUSTER_ID    (management secret)
    differential jobs cancel JOB_ID [--reason TEXT]        (cluster API secret)
    differential schedules create|list|show|pause|resume|delete --cluster CLUSTER_ID ...
                                                           (management secret)
    differential metrics --cluster CLUSTER_ID [--service S] [--since 1h] [--bucket 5m]
                                                           (management secret)
    differential access-points create|list|rotate|delete --cluster CLUSTER_ID ...
                                                           (management secret; create/rotate print the token once)
    differential execute SERVICE FUNCTION [JSON_ARG ...] --cluster CLUSTER_ID [--token T] [--wait S]
                                                           (access point token or cluster API secret)
    differential console [--cluster CLUSTER_ID] [--open]   (no secret: prints the console's URL)
    differential deploy create|list|status|logs|rollback|delete SERVICE ... --cluster CLUSTER_ID
                                                           (management secret; AWS Lambda, see cli_deploy.py)
    differential client publish --cluster CLUSTER_ID [--increment patch] [--language all]
                                                           (management secret; typed npm and pip clients)
    differential registry-tokens create|list|revoke ... --cluster CLUSTER_ID
                                                           (management secret; create prints the token once)

Options (before or after the command): --endpoint (DIFFERENTIAL_ENDPOINT), --api-secret
(DIFFERENTIAL_API_SECRET), --management-secret (DIFFERENTIAL_MANAGEMENT_SECRET) or
--management-secret-file (DIFFERENTIAL_MANAGEMENT_SECRET_FILE), --allow-insecure
(DIFFERENTIAL_ALLOW_INSECURE), --json, --version. Without a management secret, a command for a
local endpoint reads the local server's .differential/management-secret.txt (see
management_secret.py). Prefer the environment or a file to a secret on the command line, which
other users can see in `ps` and which stays in shell history. A secret is not sent over plain
http:// to another machine without --allow-insecure.

Exit codes (stable, for scripts):
    0  success
    1  the remote function raised, or the job failed (the control-plane gave up on it)
    2  usage error: bad options, an argument that is not JSON, a missing secret
    3  authentication failed (401)
    4  not found (404)
    5  control-plane unreachable, or it answered with a server error
    6  timed out waiting for the call (--wait / --timeout)
    7  the control-plane refused the request (400, 413, other 4xx)
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union
from urllib.parse import quote, urlsplit, urlunsplit

from . import __version__, management_secret
from .client import CallOptions, Differential, JobStatus
from .controls import Backoff, due_fields
from .errors import (
    AuthenticationError,
    CallTimeoutError,
    ConnectionFailedError,
    ControlPlaneError,
    DifferentialError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    RemoteError,
    SerializationError,
)
from .transport import Config, SyncTransport

EXIT_OK, EXIT_REMOTE, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_TIMEOUT, EXIT_REFUSED = range(8)


CLI_RETRY_SECONDS = 5.0


class UsageError(Exception):
    pass


# -- output helpers ------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """Values from the wire as JSON: bytes -> {"$bytes": base64}, datetime -> ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def _dump(value: Any, pretty: bool = True) -> str:
    return json.dumps(_jsonable(value), indent=2 if pretty else None, ensure_ascii=False)


def _table(rows: List[Dict[str, Any]], columns: List[str], headers: Optional[List[str]] = None) -> str:
    headers = headers or [c.upper() for c in columns]
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# -- secrets and connections ---------------------------------------------------------------------

def _endpoint(args: argparse.Namespace) -> Optional[str]:
    return getattr(args, "endpoint", None)


def _allow_insecure(args: argparse.Namespace) -> Optional[bool]:
    """True with --allow-insecure; otherwise None: the environment decides (Config.from_env)."""
    return True if getattr(args, "allow_insecure", False) else None


def _management(args: argparse.Namespace) -> SyncTransport:
    """A transport with the management secret; the command closes it (`with`)."""
    config = Config.from_env(endpoint=_endpoint(args), allow_insecure=_allow_insecure(args))
    secret = management_secret.find(config.endpoint, getattr(args, "management_secret", None),
                                    getattr(args, "management_secret_file", None))
    return SyncTransport(config, secret=secret)


def _differential(args: argparse.Namespace) -> Differential:
    secret = getattr(args, "api_secret", None) or os.environ.get("DIFFERENTIAL_API_SECRET")
    if not secret:
        raise UsageError("no API secret: pass --api-secret or set DIFFERENTIAL_API_SECRET")
    # A command line should not sit for a minute when the control-plane is down.
    return Differential(secret, endpoint=_endpoint(args), create_retry_seconds=CLI_RETRY_SECONDS,
                        allow_insecure=_allow_insecure(args))


# -- commands ------------------------------------------------------------------------------------

def cmd_clusters_create(args: argparse.Namespace) -> int:
    body = {"description": args.description} if args.description is not None else {}
    with _management(args) as http:
        cluster = http.request("POST", "/clusters", json=body)
    if args.json:
        _out(_dump(cluster))
    else:
        _out(f"Created cluster {cluster.get('id')}")
        _out(f"API secret: {cluster.get('apiSecret')}")
        if cluster.get("description"):
            _out(f"Description: {cluster.get('description')}")
    return EXIT_OK


def _mask(secret: Optional[str]) -> str:
    if not secret:
        return ""
    return secret[:7] + "…" if len(secret) > 10 else "…"


def cmd_clusters_list(args: argparse.Namespace) -> int:
    with _management(args) as http:
        clusters = http.request("GET", "/clusters") or []
    if args.json:
        _out(_dump(clusters))
        return EXIT_OK
    if not clusters:
        _out("No clusters.")
        return EXIT_OK
    rows = [dict(c, apiSecret=_mask(c.get("apiSecret"))) for c in clusters]
    _out(_table(rows, ["id", "createdAt", "description", "apiSecret"], ["ID", "CREATED", "DESCRIPTION", "API SECRET"]))
    return EXIT_OK


def _services_table(defs: List[Dict[str, Any]]) -> str:
    rows = [{"name": d.get("name"), "functions": _functions_cell(d)} for d in defs]
    return _table(rows, ["name", "functions"], ["SERVICE", "FUNCTIONS"])


def _functions_cell(definition: Dict[str, Any]) -> str:
    """Function names, each with its concurrency limit (and the service's) when its workers declare one."""
    names = [f.get("name", "") + (f" (max {f['concurrency']})" if f.get("concurrency") else "")
             for f in definition.get("functions") or []]
    cell = ", ".join(names)
    if definition.get("concurrency"):
        cell += f"; service max {definition['concurrency']}"
    return cell


def cmd_clusters_show(args: argparse.Namespace) -> int:
    with _management(args) as http:
        c = http.request("GET", f"/clusters/{quote(args.cluster_id, safe='')}")
    if args.json:
        _out(_dump(c))
        return EXIT_OK
    _out(f"Cluster:     {c.get('id')}")
    _out(f"Created:     {c.get('createdAt')}")
    _out(f"Description: {c.get('description') or ''}")
    _out(f"API secret:  {c.get('apiSecret')}")
    defs = c.get("definitions") or []
    _out(f"\nServices ({len(defs)}):")
    if defs:
        _out(_services_table(defs))
    workers = c.get("workers") or []
    _out(f"\nLive workers per service ({len(workers)}):")
    if workers:
        _out(_table(workers, ["service", "liveWorkers", "lastPollAt"], ["SERVICE", "LIVE WORKERS", "LAST POLL"]))
    machines = c.get("machines") or []
    _out(f"\nMachines ({len(machines)}):")
    if machines:
        _out(_table(machines, ["id", "lastPingAt", "ip", "deploymentId"], ["ID", "LAST PING", "IP", "DEPLOYMENT"]))
    jobs = c.get("jobs") or []
    _out(f"\nRecent jobs ({len(jobs)}):")
    if jobs:
        _out(_table(jobs[:20], ["id", "service", "targetFn", "status", "resultType", "createdAt"],
                    ["ID", "SERVICE", "FUNCTION", "STATUS", "RESULT", "CREATED"]))
    return EXIT_OK


def cmd_services_list(args: argparse.Namespace) -> int:
    with _management(args) as http:
        c = http.request("GET", f"/clusters/{quote(args.cluster, safe='')}")
    defs = c.get("definitions") or []
    if args.json:
        _out(_dump(defs))
        return EXIT_OK
    if not defs:
        _out("No services.")
        return EXIT_OK
    _out(_services_table(defs))
    return EXIT_OK


def _parse_args(raw: Sequence[str]) -> List[Any]:
    values = []
    for i, text in enumerate(raw, 1):
        try:
            values.append(json.loads(text))
        except ValueError:
            raise UsageError(
                f"argument {i} ({text!r}) is not JSON; quote strings, e.g. '\"Ada\"'"
            ) from None
    return values


def _error_json(e: RemoteError) -> Dict[str, Any]:
    return {"name": e.name, "message": e.message, "code": e.code, "stack": e.stack, "details": e.details}


def _warnings_to_stderr() -> None:
    """The SDK's warnings (e.g. no machine polls the service called) on stderr, once."""
    logger = logging.getLogger("differential.client")
    if not any(getattr(h, "_differential_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("differential: warning: %(message)s"))
        handler._differential_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def _call_options(args: argparse.Namespace) -> CallOptions:
    """`--timeout` is how long the command waits (as `--wait`): giving up does not make the
    function run again; the per-attempt limit is `--attempt-timeout` (default 300 s)."""
    wait = args.wait if args.wait is not None else args.timeout
    try:
        options = CallOptions(
            wait=wait, attempt_timeout=args.attempt_timeout, retry_count_on_stall=args.retries,
            execution_id=args.execution_id, background=args.background, queue_deadline=args.queue_deadline,
            call_deadline=args.call_deadline, cancel_on_timeout=args.cancel_on_timeout,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.cache_key is not None:
        options = options.merged(cache_key=args.cache_key, cache_ttl=args.cache_ttl or 60)
    return options.merged(**_call_controls(args))


def cmd_call(args: argparse.Namespace) -> int:
    values = _parse_args(args.args)
    _warnings_to_stderr()
    options = _call_options(args)
    if options.cancel_on_timeout and options.caller_wait is None:
        raise UsageError("--cancel-on-timeout needs --wait (or --timeout): how long to wait before cancelling")
    with _differential(args) as d:
        job_id = d.create_job(args.service, args.function, *values, options=options)
        if args.background:
            _out(_dump({"jobId": job_id}) if args.json else job_id)
            return EXIT_OK
        try:
            try:
                status = d.wait(job_id, timeout=options.caller_wait, service=args.service)
            except CallTimeoutError:
                if options.cancel_on_timeout:
                    _cancel_quietly(d, job_id, f"the caller stopped waiting after {options.caller_wait:g} s")
                raise
            value = status.outcome()
        except RemoteError as e:
            if args.json:
                _out(_dump({"jobId": job_id, "resultType": "rejection", "error": _error_json(e)}))
            else:
                code = f" (code {e.code})" if e.code is not None else ""
                _err(f"{e}{code}")
            return EXIT_REMOTE
    if args.json:
        _out(_dump({"jobId": job_id, "resultType": "resolution", "result": value}))
    else:
        _out(_dump(value))
    return EXIT_OK


_RETRY_FLAGS = {"retry_initial": "initial_delay", "retry_factor": "factor", "retry_max": "max_delay",
                "retry_jitter": "jitter"}


def _call_controls(args: argparse.Namespace) -> Dict[str, Any]:
    """CallOptions' retry, delay and run_at from --retry-*, --delay and --run-at (checked here,
    so a bad value is a usage error before anything is sent)."""
    out: Dict[str, Any] = {}
    policy = {field: getattr(args, flag) for flag, field in _RETRY_FLAGS.items() if getattr(args, flag) is not None}
    if policy and args.retry_attempts is None:
        raise UsageError("--retry-initial/--retry-factor/--retry-max/--retry-jitter need --retry-attempts N")
    try:
        if args.retry_attempts is not None:
            out["retry"] = Backoff(args.retry_attempts, **policy)
        if args.run_at is not None:
            try:
                run_at = _dt.datetime.fromisoformat(args.run_at.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise UsageError(f"--run-at {args.run_at!r} is not an ISO 8601 date-time "
                                 "(e.g. 2026-12-01T17:00:00Z)") from None
            if run_at.tzinfo is None:
                raise UsageError(f"--run-at {args.run_at!r} needs an offset, e.g. Z or +01:00")
            out["run_at"] = run_at
        if args.delay is not None:
            out["delay"] = args.delay
        due_fields(out.get("delay"), out.get("run_at"))  # the same checks the call makes
    except ValueError as e:
        raise UsageError(str(e).replace("Backoff.", "--retry-").replace("run_at", "--run-at")
                         .replace("delay or", "--delay or")) from None
    return out
def _cancel_quietly(d: Differential, job_id: str, reason: str) -> None:
    try:
        d.cancel(job_id, reason=reason)
        _err(f"differential: cancelled job {job_id} ({reason})")
    except DifferentialError as e:  # it finished meanwhile: the timeout is still what happened
        _err(f"differential: could not cancel job {job_id}: {e}")


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _differential(args) as d:
        st: JobStatus = d.cancel(args.job_id, reason=args.reason)
    if args.json:
        _out(_dump({"id": st.id, "service": st.service, "state": st.state, "reason": st.reason}))
    else:
        _out(f"Cancelled job {st.id}: {st.reason}")
    return EXIT_OK


def _job_path(args: argparse.Namespace, *rest: str) -> str:
    return "/".join([f"/clusters/{quote(args.cluster, safe='')}/jobs", *(quote(r, safe="") for r in rest)])


def cmd_jobs_list(args: argparse.Namespace) -> int:
    params: Dict[str, Any] = {"limit": args.limit}
    for key, value in (("status", ",".join(args.status or []) or None), ("service", args.service),
                       ("function", args.function), ("createdAfter", args.created_after),
                       ("createdBefore", args.created_before), ("cursor", args.cursor)):
        if value is not None:
            params[key] = value
    with _management(args) as http:
        page = http.request("GET", _job_path(args), params=params) or {}
    if args.json:
        _out(_dump(page))
        return EXIT_OK
    jobs = page.get("jobs") or []
    if not jobs:
        _out("No jobs.")
    else:
        _out(_table(jobs, ["id", "service", "targetFn", "status", "attempt", "createdAt", "reason"],
                    ["ID", "SERVICE", "FUNCTION", "STATUS", "ATTEMPT", "CREATED", "REASON"]))
    if page.get("next"):
        _out(f"\nMore: add --cursor {page['next']}")
    return EXIT_OK


def _print_job_detail(job: Dict[str, Any]) -> None:
    for key in ("id", "service", "targetFn", "status", "wireStatus", "resultType", "reason", "attempt",
                "attemptsAllowed", "machineId", "createdAt", "claimedAt", "resultedAt", "runAt", "queueDeadline",
                "callDeadline", "attemptDeadline"):
        if job.get(key) is not None:
            _out(f"{key + ':':17} {job[key]}")
    events = (job.get("activity") or {}).get("events") or []
    _out(f"\nActivity ({len(events)}, newest first):")
    if events:
        _out(_table(events, ["timestamp", "type", "machineId"], ["TIME", "EVENT", "MACHINE"]))


def cmd_jobs_rerun(args: argparse.Namespace) -> int:
    with _management(args) as http:
        job = http.request("POST", _job_path(args, args.job_id, "rerun"))
    if args.json:
        _out(_dump(job))
    else:
        _out(f"Re-running job {job.get('id')}: {job.get('status')}, {job.get('attempt')} of "
             f"{job.get('attemptsAllowed')} attempts used")
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    if args.cluster:  # the operator's view, with the management secret
        with _management(args) as http:
            job = http.request("GET", _job_path(args, args.job_id))
        if args.json:
            _out(_dump(job))
        else:
            _print_job_detail(job)
        return EXIT_OK
    with _differential(args) as d:
        st: JobStatus = d.job(args.job_id, wait=args.wait)
    out: Dict[str, Any] = {"id": st.id, "service": st.service, "status": st.status, "resultType": st.result_type}
    if st.done and st.status == "success":
        try:
            value = st.outcome()
            out["result"] = value
        except RemoteError as e:
            out["error"] = _error_json(e)
        except SerializationError as e:
            out["result"] = None
            out["decodeError"] = str(e)
    if args.json:
        _out(_dump(out))
        return EXIT_OK
    for key in ("id", "service", "status", "resultType"):
        _out(f"{key + ':':12} {'' if out.get(key) is None else out[key]}")
    if "result" in out:
        _out("result:      " + _dump(out["result"]).replace("\n", "\n             "))
    if "error" in out:
        e = out["error"]
        _out(f"error:       {e['name']}: {e['message']}" + (f" (code {e['code']})" if e.get("code") is not None else ""))
    return EXIT_OK


# -- schedules (management secret) -----------------------------------------------------------------

def _schedules_path(args: argparse.Namespace, name: Optional[str] = None) -> str:
    path = f"/clusters/{quote(args.cluster, safe='')}/schedules"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _json_option(text: Optional[str], option: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise UsageError(f"{option} is not JSON: {text!r}") from None
    if not isinstance(value, kind):
        example = "'[1, \"two\"]'" if kind is list else "'{\"timeoutSeconds\": 60}'"
        raise UsageError(f"{option} must be a JSON {'array' if kind is list else 'object'}, e.g. {example}")
    return value


def _show_schedule(args: argparse.Namespace, s: Dict[str, Any], verb: Optional[str] = None) -> None:
    if args.json:
        _out(_dump(s))
        return
    if verb:
        _out(f"{verb} schedule {s.get('name')}")
    _out(f"Name:        {s.get('name')}")
    _out(f"Target:      {s.get('service')}.{s.get('function')}({json.dumps(s.get('arguments'))[1:-1]})")
    _out(f"Cron:        {s.get('cron')} ({s.get('timezone')})")
    _out(f"Catch-up:    {s.get('catchUp')}")
    _out(f"Paused:      {'yes' if s.get('paused') else 'no'}")
    _out(f"Next fire:   {s.get('nextFireAt') or '-'}")
    _out(f"Last fired:  {s.get('lastFiredAt') or '-'}")
    if s.get("callConfig"):
        _out(f"Call config: {json.dumps(s['callConfig'])}")


def cmd_schedules_create(args: argparse.Namespace) -> int:
    body: Dict[str, Any] = {"name": args.name, "service": args.service, "function": args.function,
                            "arguments": _json_option(args.args, "--args", list) or [], "cron": args.cron,
                            "timezone": args.timezone, "catchUp": args.catch_up, "paused": args.paused}
    config = _json_option(args.call_config, "--call-config", dict)
    if config is not None:
        body["callConfig"] = config
    with _management(args) as http:
        if args.replace:
            body.pop("name")
            s = http.request("PUT", _schedules_path(args, args.name), json=body)
        else:
            s = http.request("POST", _schedules_path(args), json=body)
    _show_schedule(args, s, "Saved" if args.replace else "Created")
    return EXIT_OK


def cmd_schedules_list(args: argparse.Namespace) -> int:
    found: List[Dict[str, Any]] = []
    after: Optional[str] = None
    with _management(args) as http:
        while True:  # every page
            query = "?limit=1000" + (f"&after={quote(after, safe='')}" if after else "")
            page = http.request("GET", _schedules_path(args) + query) or {}
            found += page.get("schedules") or []
            after = page.get("next")
            if not after:
                break
    if args.json:
        _out(_dump(found))
        return EXIT_OK
    if not found:
        _out("No schedules.")
        return EXIT_OK
    rows = [dict(s, target=f"{s.get('service')}.{s.get('function')}", state="paused" if s.get("paused") else "active",
                 cronTz=f"{s.get('cron')} ({s.get('timezone')})") for s in found]
    _out(_table(rows, ["name", "target", "cronTz", "state", "nextFireAt", "lastFiredAt"],
                ["NAME", "TARGET", "CRON", "STATE", "NEXT FIRE", "LAST FIRED"]))
    return EXIT_OK


def cmd_schedules_show(args: argparse.Namespace) -> int:
    with _management(args) as http:
        s = http.request("GET", _schedules_path(args, args.name))
    _show_schedule(args, s)
    return EXIT_OK


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    with _management(args) as http:
        s = http.request("PATCH", _schedules_path(args, args.name), json={"paused": paused})
    _show_schedule(args, s, "Paused" if paused else "Resumed")
    return EXIT_OK


def cmd_schedules_pause(args: argparse.Namespace) -> int:
    return _set_paused(args, True)


def cmd_schedules_resume(args: argparse.Namespace) -> int:
    return _set_paused(args, False)


def cmd_schedules_delete(args: argparse.Namespace) -> int:
    with _management(args) as http:
        http.request("DELETE", _schedules_path(args, args.name))
    if args.json:
        _out(_dump({"deleted": args.name}))
    else:
        _out(f"Deleted schedule {args.name}")
    return EXIT_OK


def _named_commands(subparsers: Any, common: argparse.ArgumentParser,
                    thing: str) -> Callable[..., argparse.ArgumentParser]:
    """`command(name, func, help)` adds an ACTION of a cluster's named things (schedules, access
    points): each takes --cluster, and all but `list` the thing's name."""

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[common], help=help)
        p.add_argument("--cluster", required=True, help="cluster id")
        if name != "list":
            p.add_argument("name", help=f"{thing} name (letters, digits, '_', '.', '-')")
        p.set_defaults(func=func)
        return p

    return command


def _add_schedules(sub: Any, common: argparse.ArgumentParser) -> None:
    schedules = sub.add_parser("schedules", help="cron schedules of a cluster (management secret)")
    ssub = schedules.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    ssub.required = True

    command = _named_commands(ssub, common, "schedule")

    p = command("create", cmd_schedules_create, "create a schedule: call SERVICE.FUNCTION(ARGS) at each cron tick")
    p.add_argument("--service", required=True)
    p.add_argument("--function", required=True)
    p.add_argument("--args", help="the positional arguments as one JSON array (default [])")
    p.add_argument("--cron", required=True, help="5 fields: minute hour day-of-month month day-of-week")
    p.add_argument("--timezone", default="UTC", help="IANA time zone the cron is read in (default UTC)")
    p.add_argument("--catch-up", choices=("latest", "none", "all"), default="latest",
                   help="ticks missed during downtime: fire the latest once (default), none, or all")
    p.add_argument("--call-config", help="each call's callConfig as a JSON object, e.g. '{\"timeoutSeconds\": 60}'")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.add_argument("--replace", action="store_true", help="replace a schedule of that name instead of refusing")
    command("list", cmd_schedules_list, "list a cluster's schedules")
    command("show", cmd_schedules_show, "show a schedule, with its next and last tick")
    command("pause", cmd_schedules_pause, "pause a schedule (its ticks are skipped until it resumes)")
    command("resume", cmd_schedules_resume, "resume a schedule at its next tick")
    command("delete", cmd_schedules_delete, "delete a schedule (the calls it made are kept)")


# -- cluster lifecycle, service schemas and metrics ----------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """Seconds from '90', '90s', '15m', '2h' or '7d' (argparse type)."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:])
    number = raw[:-1] if unit else raw
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 0, 90, 15m, 2h, 7d)") from None
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}")
    return int(value)


def _cluster_path(cluster_id: str, *rest: str) -> str:
    return "/".join([f"/clusters/{quote(cluster_id, safe='')}", *(quote(r, safe="") for r in rest)])


def cmd_clusters_rotate_secret(args: argparse.Namespace) -> int:
    with _management(args) as http:
        rotated = http.request("POST", _cluster_path(args.cluster_id, "secret", "rotate"),
                               json={"graceSeconds": args.grace})
    if args.json:
        _out(_dump(rotated))
        return EXIT_OK
    _out(f"New API secret: {rotated.get('apiSecret')}")
    if args.grace:
        _out(f"The previous secret keeps working until {rotated.get('previousSecretExpiresAt')}: "
             "switch workers and callers to the new one before then.")
    else:
        _out("The previous secret stopped working now.")
    return EXIT_OK


def cmd_clusters_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("deleting a cluster needs a confirmation: pass --yes, or run it in a terminal")
        _err(f"This deletes cluster {args.cluster_id} and every job, event, machine, service and schedule of it; "
             "its API secret stops working at once.")
        sys.stderr.write("Type the cluster id to confirm: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip() != args.cluster_id:
            _err("Not deleted.")
            return EXIT_USAGE
    with _management(args) as http:
        deleted = http.request("DELETE", _cluster_path(args.cluster_id))
    if args.json:
        _out(_dump(deleted))
    else:
        _out(f"Deleted cluster {args.cluster_id}" + ("" if deleted.get("finished") else
                                                     " (its remaining rows go in the background)"))
    return EXIT_OK


def _schema_text(args: argparse.Namespace) -> str:
    if (args.schema is None) == (args.file is None):
        raise UsageError("give the schema as one JSON argument or with --file PATH ('-' for stdin), not both")
    if args.file is None:
        return args.schema
    if args.file == "-":
        return sys.stdin.read()
    try:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None


def cmd_services_schema_put(args: argparse.Namespace) -> int:
    text = _schema_text(args)
    with _management(args) as http:
        http.request("PUT", _cluster_path(args.cluster, "service", args.service, "schema"), json={"schema": text})
    if args.json:
        _out(_dump({"service": args.service, "stored": True}))
    else:
        _out(f"Stored the schema of service {args.service}")
    return EXIT_OK


def cmd_services_schema_show(args: argparse.Namespace) -> int:
    with _management(args) as http:
        shown = http.request("GET", _cluster_path(args.cluster, "service", args.service, "schema"))
    _out(_dump(shown if args.json else shown.get("schema")))
    return EXIT_OK


def _add_cluster_lifecycle(csub: Any, common: argparse.ArgumentParser) -> None:
    p = csub.add_parser("rotate-secret", parents=[common],
                        help="give a cluster a new API secret; prints it once (the old one works for --grace)")
    p.add_argument("cluster_id")
    p.add_argument("--grace", type=_duration, default=3600, metavar="DURATION",
                   help="how long the old secret keeps working: 0 (stops at once), 90, 15m, 2h, up to 7d "
                        "(default 1h)")
    p.set_defaults(func=cmd_clusters_rotate_secret)
    p = csub.add_parser("delete", parents=[common],
                        help="delete a cluster and everything of it (asks for the cluster id unless --yes)")
    p.add_argument("cluster_id")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_clusters_delete)


def _add_service_schemas(ssub: Any, common: argparse.ArgumentParser) -> None:
    schema = ssub.add_parser("schema", help="a service's JSON Schema, as an operator stores it")
    schema_sub = schema.add_subparsers(dest="schema_action", metavar="ACTION", parser_class=_Parser)
    schema_sub.required = True
    p = schema_sub.add_parser("put", parents=[common], help="store a service's schema (creates the service if new)")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.add_argument("service")
    p.add_argument("schema", nargs="?", help="the schema as JSON text (or use --file)")
    p.add_argument("--file", help="read the schema from this file ('-': stdin)")
    p.set_defaults(func=cmd_services_schema_put)
    p = schema_sub.add_parser("show", parents=[common], help="print a service's schema")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.add_argument("service")
    p.set_defaults(func=cmd_services_schema_show)
def _ms(value: Optional[float]) -> str:
    return "" if value is None else f"{value:g}"


def _metrics_rows(functions: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for f in functions:
        s = f["summary"]
        calls, ex, qu = s["calls"], s["executionMs"], s["queueMs"]
        rows.append({"service": f["service"], "function": f["function"], "calls": calls["total"],
                     "ok": calls["resolution"], "rejected": calls["rejection"], "failed": calls["failure"],
                     "cancelled": calls["cancelled"], "rate": _ms(s["throughputPerSecond"]),
                     "p50": _ms(ex["p50"]), "p90": _ms(ex["p90"]), "p99": _ms(ex["p99"]), "mean": _ms(ex["mean"]),
                     "queue50": _ms(qu["p50"]), "queue99": _ms(qu["p99"])})
    return rows


def cmd_metrics(args: argparse.Namespace) -> int:
    since = args.since
    if since <= 0:
        raise UsageError("--since must be more than 0")
    start = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=since)
    params: Dict[str, Any] = {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if args.service:
        params["serviceName"] = args.service
    if args.bucket:
        params["bucketSeconds"] = args.bucket
    with _management(args) as http:
        answer = http.request("GET", f"/clusters/{quote(args.cluster, safe='')}/metrics", params=params) or {}
    if args.json:
        _out(_dump(answer))
        return EXIT_OK
    functions = answer.get("functions") or []
    _out(f"Cluster {answer.get('clusterId')}, {answer.get('start')} to {answer.get('end')}")
    if not functions:
        _out("No finished calls in this range.")
        return EXIT_OK
    _out(_table(_metrics_rows(functions),
                ["service", "function", "calls", "ok", "rejected", "failed", "cancelled", "rate", "p50", "p90",
                 "p99", "mean", "queue50", "queue99"],
                ["SERVICE", "FUNCTION", "CALLS", "OK", "REJECTED", "FAILED", "CANCELLED", "PER S", "EXEC P50",
                 "EXEC P90", "EXEC P99", "EXEC MEAN", "QUEUE P50", "QUEUE P99"]))
    _out("Times in ms (percentiles interpolated in histogram buckets); --json adds the timeseries "
         f"({answer.get('bucketSeconds')} s buckets).")
    return EXIT_OK


def _add_metrics(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("metrics", parents=[common], help="calls, outcomes and latencies per function (management secret)")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.add_argument("--service", help="only this service (default every service)")
    p.add_argument("--since", type=_duration, default="1h", help="how far back: 90s, 15m, 1h, 7d (default 1h)")
    p.add_argument("--bucket", type=_duration, help="timeseries bucket (--json), a whole number of minutes: 1m, 5m, 1h")
    p.set_defaults(func=cmd_metrics)


# -- access points (management secret) and synchronous calls (access point or API secret) -------

def _access_point_path(args: argparse.Namespace, name: Optional[str] = None) -> str:
    cluster = f"/clusters/{quote(args.cluster, safe='')}"
    return f"{cluster}/access-points" if name is None else f"{cluster}/access-point/{quote(name, safe='')}"


def _find_access_point(http: SyncTransport, args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    listed = http.request("GET", _access_point_path(args)) or {}
    return next((a for a in listed.get("accessPoints") or [] if a.get("name") == args.name), None)


def _show_token(args: argparse.Namespace, made: Dict[str, Any], verb: str) -> None:
    if args.json:
        _out(_dump(made))
        return
    _out(f"{verb} access point {made.get('name')} (services: {', '.join(made.get('allowedServices') or [])})")
    _out(f"Token:       {made.get('token')}")
    _out("The token is shown only now: store it (the control-plane keeps only its hash).")


def cmd_access_points_create(args: argparse.Namespace) -> int:
    with _management(args) as http:
        if not args.replace and _find_access_point(http, args) is not None:
            raise UsageError(f"access point {args.name!r} exists; `access-points rotate` gives it a new token, "
                             "--replace replaces it")
        made = http.request("PUT", _access_point_path(args, args.name), json={"allowedServices": args.services})
    _show_token(args, made, "Created")
    return EXIT_OK


def cmd_access_points_rotate(args: argparse.Namespace) -> int:
    with _management(args) as http:
        services = args.services
        if services is None:  # keep its services
            found = _find_access_point(http, args)
            if found is None:
                raise NotFoundError(404, f"access point {args.name!r} does not exist in cluster {args.cluster!r}")
            services = found.get("allowedServices") or []
        made = http.request("PUT", _access_point_path(args, args.name), json={"allowedServices": services})
    _show_token(args, made, "Rotated (the old token no longer works)")
    return EXIT_OK


def cmd_access_points_list(args: argparse.Namespace) -> int:
    with _management(args) as http:
        found = (http.request("GET", _access_point_path(args)) or {}).get("accessPoints") or []
    if args.json:
        _out(_dump(found))
    elif not found:
        _out("No access points.")
    else:
        rows = [dict(a, services=", ".join(a.get("allowedServices") or [])) for a in found]
        _out(_table(rows, ["name", "services", "createdAt", "rotatedAt", "lastUsedAt"],
                    ["NAME", "SERVICES", "CREATED", "ROTATED", "LAST USED"]))
    return EXIT_OK


def cmd_access_points_delete(args: argparse.Namespace) -> int:
    with _management(args) as http:
        http.request("DELETE", _access_point_path(args, args.name))
    _out(_dump({"deleted": args.name}) if args.json else f"Deleted access point {args.name} (its token no longer works)")
    return EXIT_OK


EXECUTE_WAIT_STEP = 20  # seconds: the most one execute request (or poll) waits on the server


def cmd_execute(args: argparse.Namespace) -> int:
    """POST /clusters/:id/execute, then its poll route until the answer or --wait runs out."""
    token = args.token or os.environ.get("DIFFERENTIAL_ACCESS_POINT_TOKEN") or getattr(args, "api_secret", None) \
        or os.environ.get("DIFFERENTIAL_API_SECRET")
    if not token:
        raise UsageError("no credential: pass --token (an access point's) or set DIFFERENTIAL_ACCESS_POINT_TOKEN, "
                         "or use the cluster's API secret (--api-secret, DIFFERENTIAL_API_SECRET)")
    if args.wait is not None and args.wait < 0:
        raise UsageError("--wait must be 0 or more seconds")
    body: Dict[str, Any] = {"service": args.service, "function": args.function, "args": _parse_args(args.args)}
    config = _json_option(args.call_config, "--call-config", dict)
    if config is not None:
        body["callConfig"] = config
    budget = 60.0 if args.wait is None else args.wait
    deadline = time.monotonic() + budget
    config_ = Config.from_env(endpoint=_endpoint(args), allow_insecure=_allow_insecure(args))
    with SyncTransport(config_, secret=token) as http:
        step = min(EXECUTE_WAIT_STEP, budget)
        answer = http.request("POST", f"/clusters/{quote(args.cluster, safe='')}/execute",
                              json={**body, "waitSeconds": step}, long_poll_ms=int(step * 1000))
        poll = f"/clusters/{quote(args.cluster, safe='')}/execute/{quote(answer['jobId'], safe='')}"
        while "outcome" not in answer:
            left = deadline - time.monotonic()
            if left <= 0:
                if args.json:
                    _out(_dump(answer))
                _err(f"differential: call {answer['jobId']} is still {answer.get('state')} after {budget:g} s; "
                     f"it goes on (differential jobs show {answer['jobId']})")
                return EXIT_TIMEOUT
            step = int(min(EXECUTE_WAIT_STEP, max(1, left)))
            answer = http.request("GET", poll, params={"waitSeconds": step}, long_poll_ms=step * 1000)
    if args.json:
        _out(_dump(answer))
    elif answer["outcome"] == "resolution":
        _out(_dump(answer.get("result")))
    else:
        e = answer.get("error") or {}
        code = f" (code {e['code']})" if e.get("code") is not None else ""
        _err(f"{e.get('name', 'Error')}: {e.get('message', '')}{code}")
    return EXIT_OK if answer["outcome"] == "resolution" else EXIT_REMOTE


def _add_access_points(sub: Any, common: argparse.ArgumentParser) -> None:
    points = sub.add_parser("access-points", help="access points: tokens that may call some services of a cluster "
                            "(management secret)")
    asub = points.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    asub.required = True

    command = _named_commands(asub, common, "access point")

    p = command("create", cmd_access_points_create, "create an access point; prints its token (once)")
    p.add_argument("--services", required=True, help="services it may call, comma-separated ('*': every service)")
    p.add_argument("--replace", action="store_true", help="replace an access point of that name (new token)")
    p = command("rotate", cmd_access_points_rotate, "give an access point a new token (the old one stops at once); "
                "prints it (once)")
    p.add_argument("--services", help="also change its services (default: keep them)")
    command("list", cmd_access_points_list, "list a cluster's access points (never their tokens)")
    command("delete", cmd_access_points_delete, "delete an access point (its token stops working at once)")

    p = sub.add_parser("execute", parents=[common], help="call a function through POST /clusters/:id/execute (an "
                       "access point's token or the API secret); prints its result as JSON")
    p.add_argument("service")
    p.add_argument("function")
    p.add_argument("args", nargs="*", help="positional arguments, each a JSON value ('\"text\"', 3, '[1,2]')")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.add_argument("--token", help="access point token (prefer env DIFFERENTIAL_ACCESS_POINT_TOKEN); default: the "
                   "API secret")
    p.add_argument("--wait", type=float, help="seconds to wait for the result (default 60); then exit 6, and the "
                   "call goes on")
    p.add_argument("--call-config", help="callConfig as a JSON object, e.g. '{\"timeoutSeconds\": 60}'")
    p.set_defaults(func=cmd_execute)


# -- console ---------------------------------------------------------------------------------------

def console_url(endpoint: str, cluster: Optional[str] = None) -> str:
    """The console of the control-plane at `endpoint` (a cluster's page with `cluster`); whatever
    user or password the endpoint carries is left out, and so is any query."""
    try:
        parts = urlsplit(endpoint.strip())
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise UsageError(f"the endpoint {endpoint!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"the endpoint {endpoint!r} is not an http:// or https:// URL")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    path = parts.path.rstrip("/") + "/console/"
    if cluster:
        path += f"clusters/{quote(cluster, safe='')}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def cmd_console(args: argparse.Namespace) -> int:
    """Print (and with --open, open) the console's URL. Reads and prints no secret: the console
    asks for the management secret itself; stderr says where the local server keeps it."""
    import webbrowser

    endpoint = Config.from_env(endpoint=_endpoint(args)).endpoint
    url = console_url(endpoint, args.cluster)
    opened = webbrowser.open(url) if args.open else None
    if args.json:
        _out(_dump({"url": url, **({"opened": opened} if args.open else {})}))
    else:
        _out(url)
        where = None
        if management_secret.is_local(endpoint):
            where, _ = management_secret.local_secret_file(os.environ, Path.cwd())
        _err(f"Sign in with the management secret (in {where})." if where else
             "Sign in with the control-plane's management secret (its MANAGEMENT_SECRET).")
    if args.open and not opened:
        _err("differential: no browser could be opened here; open the URL above yourself")
    return EXIT_OK


def _add_console(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("console", parents=[common], help="print the URL of the control-plane's console (the "
                       "endpoint's /console); --open opens it in a browser")
    p.add_argument("--cluster", help="a cluster's pages rather than the list of clusters")
    p.add_argument("--open", action="store_true", help="also open it in the default web browser")
    p.set_defaults(func=cmd_console)


# -- parser --------------------------------------------------------------------------------------

def _common(suppress: bool) -> argparse.ArgumentParser:
    """Global options, accepted before or after the command (SUPPRESS keeps the sub-parser
    from overwriting a value given before the command)."""
    d = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--endpoint", default=d, help="control-plane URL (env DIFFERENTIAL_ENDPOINT; default http://127.0.0.1:4000)")
    p.add_argument("--api-secret", default=d, help="cluster API secret (prefer env DIFFERENTIAL_API_SECRET: "
                   "argv shows in ps and shell history)")
    p.add_argument("--management-secret", default=d, help="management secret (prefer env "
                   "DIFFERENTIAL_MANAGEMENT_SECRET or --management-secret-file)")
    p.add_argument("--management-secret-file", default=d, help="file holding the management secret (env DIFFERENTIAL_MANAGEMENT_SECRET_FILE)")
    p.add_argument("--allow-insecure", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="send secrets over plain http:// to another machine (env DIFFERENTIAL_ALLOW_INSECURE=1)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False, help="machine-readable JSON output")
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 as well; keep its message format
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    parser = _Parser(prog="differential", description="Differential control-plane command line.",
                     parents=[_common(suppress=False)], epilog=__doc__.split("Exit codes", 1)[1].join(["Exit codes", ""]),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"differential {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    clusters = sub.add_parser("clusters", help="manage clusters (management secret)")
    csub = clusters.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    p = csub.add_parser("create", parents=[common], help="create a cluster; prints its id and API secret")
    p.add_argument("--description")
    p.set_defaults(func=cmd_clusters_create)
    p = csub.add_parser("list", parents=[common], help="list clusters")
    p.set_defaults(func=cmd_clusters_list)
    p = csub.add_parser("show", parents=[common], help="show a cluster: services, machines, recent jobs")
    p.add_argument("cluster_id")
    p.set_defaults(func=cmd_clusters_show)
    _add_cluster_lifecycle(csub, common)

    services = sub.add_parser("services", help="services of a cluster (management secret)")
    ssub = services.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    ssub.required = True
    p = ssub.add_parser("list", parents=[common], help="list the services registered in a cluster")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.set_defaults(func=cmd_services_list)
    _add_service_schemas(ssub, common)

    p = sub.add_parser("call", parents=[common], help="call a function; arguments are JSON values")
    p.add_argument("service")
    p.add_argument("function")
    p.add_argument("args", nargs="*", help="positional arguments, each a JSON value ('\"text\"', 3, '[1,2]')")
    p.add_argument("--timeout", type=float, help="seconds to wait (as --wait)")
    p.add_argument("--wait", type=float, help="seconds to wait for the result; then exit 6, and the call goes on "
                   "(unless --cancel-on-timeout); giving up never makes the function run again")
    p.add_argument("--attempt-timeout", type=float, help="seconds one attempt may take before it is re-run "
                   "(default 300)")
    p.add_argument("--queue-deadline", type=float, help="fail the call unless a machine claims it within these seconds")
    p.add_argument("--call-deadline", type=float, help="fail the whole call, across attempts, unless it finishes "
                   "within these seconds")
    p.add_argument("--cancel-on-timeout", action="store_true", help="cancel the call when the wait runs out")
    p.add_argument("--retries", type=int, default=3, help="re-runs after a stall (default 3)")
    p.add_argument("--execution-id", help="idempotency key: the same id runs the function once")
    p.add_argument("--cache-key", help="reuse a recent successful result with this key")
    p.add_argument("--cache-ttl", type=float, help="cache lifetime in seconds (default 60)")
    p.add_argument("--background", action="store_true", help="print the job id and return at once")
    p.add_argument("--delay", type=float, metavar="S", help="run no earlier than S seconds from now")
    p.add_argument("--run-at", metavar="ISO", help="run no earlier than this time (ISO 8601 with an offset)")
    p.add_argument("--retry-attempts", type=int, metavar="N",
                   help="retry a rejection (the function raised) until N attempts in all")
    p.add_argument("--retry-initial", type=float, metavar="S", help="first back-off in seconds (default 1)")
    p.add_argument("--retry-factor", type=float, metavar="F", help="each back-off times F (default 2)")
    p.add_argument("--retry-max", type=float, metavar="S", help="longest back-off in seconds (default 300)")
    p.add_argument("--retry-jitter", type=float, metavar="J", help="share of each back-off drawn at random, 0..1")
    p.set_defaults(func=cmd_call)

    jobs = sub.add_parser("jobs", help="jobs (cluster API secret; with --cluster, the management secret)")
    jsub = jobs.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    jsub.required = True
    p = jsub.add_parser("show", parents=[common], help="show a job's status and result")
    p.add_argument("job_id")
    p.add_argument("--wait", type=float, default=0.0,
                   help="seconds to wait for an unfinished job to finish (0-20, default 0: answer at once)")
    p.add_argument("--cluster", help="cluster id: show the job in full with its activity (management secret)")
    p.set_defaults(func=cmd_jobs_show)
    _add_schedules(sub, common)
    _add_metrics(sub, common)
    _add_access_points(sub, common)
    _add_console(sub, common)
    # Sub-command families in modules of their own (they take what they need from here: no import cycle).
    from .cli_client import add_commands as add_client_commands  # client publish, registry-tokens
    from .cli_deploy import add_commands as add_deploy_commands  # deploy create, list, status, logs, rollback, delete

    add_deploy_commands(sub, common, sys.modules[__name__])
    add_client_commands(sub, common, management=_management, usage_error=UsageError)
    p = jsub.add_parser("cancel", parents=[common], help="cancel a call in flight")
    p.add_argument("job_id")
    p.add_argument("--reason", help="why (recorded with the job; at most 500 characters)")
    p.set_defaults(func=cmd_jobs_cancel)
    p = jsub.add_parser("list", parents=[common], help="list a cluster's jobs, newest first (management secret)")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.add_argument("--status", action="append", help="a state (pending, scheduled, running, success, failure, "
                   "cancelled); repeat for several")
    p.add_argument("--service", help="only this service's jobs")
    p.add_argument("--function", help="only calls of this function")
    p.add_argument("--created-after", help="ISO 8601 time")
    p.add_argument("--created-before", help="ISO 8601 time")
    p.add_argument("--limit", type=int, default=50, help="jobs per page (1-500, default 50)")
    p.add_argument("--cursor", help="the token a previous page printed, for the next page")
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("rerun", parents=[common], help="re-run a failed or cancelled job (management secret)")
    p.add_argument("job_id")
    p.add_argument("--cluster", required=True, help="cluster id")
    p.set_defaults(func=cmd_jobs_rerun)
    return parser


_Exit = Union[int, Callable[[Any], int]]

# How main() ends on each error: (exit code, or a function of the error; message). Looked up along
# the error's MRO, so the most specific class listed wins.
FAILURES: Dict[Type[BaseException], Tuple[_Exit, Optional[str]]] = {
    UsageError: (EXIT_USAGE, "differential: {e}"),
    management_secret.SecretNotFound: (EXIT_USAGE, "differential: {e}"),
    SerializationError: (EXIT_USAGE, "differential: {e}"),
    CallTimeoutError: (EXIT_TIMEOUT, "differential: {e}"),
    JobFailedError: (EXIT_REMOTE, "differential: {e}"),
    JobCancelledError: (EXIT_REMOTE, "differential: {e}"),
    AuthenticationError: (EXIT_AUTH, "differential: authentication failed: {e.message}"),
    NotFoundError: (EXIT_NOT_FOUND, "differential: not found: {e.message}"),
    ControlPlaneError: (lambda e: EXIT_UNAVAILABLE if e.status >= 500 else EXIT_REFUSED, "differential: {e}"),
    ConnectionFailedError: (EXIT_UNAVAILABLE, "differential: {e}"),
    DifferentialError: (lambda e: EXIT_USAGE if e.code in ("UNAUTHORISED", "INSECURE_ENDPOINT") else EXIT_UNAVAILABLE,
                        "differential: {e}"),
    KeyboardInterrupt: (130, None),
}


def _failure(e: BaseException) -> Optional[Tuple[int, Optional[str]]]:
    for cls in type(e).__mro__:
        if cls in FAILURES:
            code, message = FAILURES[cls]
            return (code if isinstance(code, int) else code(e)), (message and message.format(e=e))
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BaseException as e:  # noqa: B902 - looked up in FAILURES; anything else propagates
        failure = _failure(e)
        if failure is None:
            raise
        code, message = failure
        if message is not None:
            _err(message)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
