"""The job explorer, a job's page, and its Cancel and Re-run buttons.

The explorer reads job admin's keyset pages (admin.list_jobs: newest first, by index, never an
offset or a count), filtered by a plain GET form, so it works without scripts and a filtered page
is a link. Its first page refreshes itself; an older page stays still, as its cursor would. A
job's page refreshes itself until the job is terminal. Input is checked here as the management
API checks it, with messages naming the form's field; a refusal re-renders the page with its
status (400 bad input, 404 no such job, 409 an action the job's state refuses) and changes nothing.
"""
from __future__ import annotations

import datetime as dt

from flask import redirect, render_template, request, url_for

from ..api.validation import storable_text
from ..engine import admin, cancel, clusters, console_jobs
from ..engine.arguments import ArgumentsError, unpack_value
from ..engine.states import ALL, IN_FLIGHT, RERUNNABLE, TERMINAL, ResultType
from ..errors import BadRequest, Conflict
from . import bp
from .present import pretty

PAGE_SIZE = 50
TIMELINE_EVENTS = 200  # a job's page shows its newest events up to this; the activity log has the rest
EXPLORER_LIVE_SECONDS = 5
JOB_LIVE_SECONDS = 3
MAX_NAME = 200  # service, function and job id: what the API accepts (schemas.NAME, ID)
MAX_TIME_TEXT = 64


class FormError(BadRequest):
    """Bad input in one of a page's fields: shown on the page, naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", {"field": field}, code="bad_input")
        self.field = field


# --- the explorer ---------------------------------------------------------------------------


def text_field(args, field: str, limit: int = MAX_NAME) -> str | None:
    value = args.get(field, "").strip()
    if not value:
        return None
    if len(value) > limit:
        raise FormError(field, f"at most {limit} characters")
    if not storable_text(value) or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise FormError(field, "must not hold control characters")
    return value


def _time(args, field: str) -> dt.datetime | None:
    """A datetime-local value (or any ISO 8601 time) as naive UTC; a time without an offset is UTC."""
    text = text_field(args, field, MAX_TIME_TEXT)
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it out of years 1..9999
        raise FormError(field, f"{text!r} is not a time (expected e.g. 2026-12-01T16:00, UTC)") from None
    return value


def _statuses(args) -> list[str]:
    wanted = [part.strip() for value in args.getlist("status") for part in value.split(",") if part.strip()]
    for status in wanted:
        if status not in ALL:
            raise FormError("status", f"{status[:MAX_NAME]!r} is not a job state (one of {', '.join(ALL)})")
    return list(dict.fromkeys(wanted))


def filters_of(args) -> dict:
    """The explorer's query as admin.list_jobs's arguments; FormError naming the first bad field."""
    found = {"statuses": _statuses(args), "service": text_field(args, "service"),
             "function": text_field(args, "function"), "created_after": _time(args, "from"),
             "created_before": _time(args, "to")}
    if found["created_after"] and found["created_before"] and found["created_before"] <= found["created_after"]:
        raise FormError("to", "must be after from")
    cursor = text_field(args, "cursor", 100)
    if cursor is not None:
        try:
            admin.decode_cursor(cursor)
        except BadRequest:
            raise FormError("cursor", "is not a link of this explorer (start again from the newest jobs)") from None
    found["cursor"] = cursor
    return found


def _elapsed_ms(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    moments = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end)]
    return max(0.0, (moments[1] - moments[0]).total_seconds() * 1000)


def _with_duration(job: dict) -> dict:
    return {**job, "durationMs": _elapsed_ms(job.get("createdAt"), job.get("resultedAt"))}


def _explorer(cluster_id: str, status: int = 200, notice: str | None = None):
    cluster = clusters.describe_cluster(cluster_id)
    args = request.args
    error, page, live = None, {"jobs": [], "next": None}, False
    try:
        filters = filters_of(args)
    except FormError as exc:
        error, status, filters = exc.message, 400, None
    if filters is not None:
        page = admin.list_jobs(cluster_id, limit=PAGE_SIZE, **{k: v or None for k, v in filters.items()})
        # Only the first page of a plain answer refreshes: a refresh of a 404 search would fail.
        live = filters["cursor"] is None and status == 200
    functions = console_jobs.known_functions(cluster_id)
    filtered = any(args.get(name) for name in ("status", "service", "function", "from", "to"))
    return render_template(
        "console/jobs.html", cluster=cluster, jobs=[_with_duration(j) for j in page["jobs"]], next=page["next"],
        live=live, live_seconds=EXPLORER_LIVE_SECONDS, error=error, notice=notice, filtered=filtered,
        cursor=args.get("cursor"), chosen=set(filters["statuses"] if filters else ()), states=ALL, form=args,
        services=sorted(functions), functions=sorted({f for fns in functions.values() for f in fns})), status


@bp.route("/clusters/<cluster_id>/jobs", endpoint="jobs")
def explorer(cluster_id: str):
    wanted = request.args.get("id", "").strip()
    if not wanted:
        return _explorer(cluster_id)
    if len(wanted) <= MAX_NAME and storable_text(wanted) and console_jobs.job_exists(cluster_id, wanted):
        return redirect(url_for("console.job", cluster_id=cluster_id, job_id=wanted), 303)
    return _explorer(cluster_id, 404, f"No job with id {wanted[:MAX_NAME]!r} in this cluster.")


def shown(event: dict) -> dict:
    """An activity event with its function apart and its other meta fields as `fields`."""
    meta = event["meta"] if isinstance(event["meta"], dict) else {"meta": event["meta"]}
    return {**event, "function": meta.get("targetFn"), "fields": {k: v for k, v in meta.items() if k != "targetFn"}}


# --- a job's page -------------------------------------------------------------------------------


def _decoded(text: str | None):
    """(value, ok) of a base64 MessagePack payload."""
    try:
        return unpack_value(text), True
    except ArgumentsError:
        return None, False


def error_of(job: dict) -> dict | None:
    """A rejection's error as the SDKs write it (a serialize-error map, or msgpackr's
    [name, message] of a bare JS Error): name, message, code, stack, cause, the other fields."""
    if job.get("resultType") != ResultType.REJECTION or not job.get("result"):
        return None
    value, ok = _decoded(job["result"])
    if not ok:
        return None
    if isinstance(value, list) and len(value) >= 2 and all(v is None or isinstance(v, str) for v in value[:2]):
        return {"name": value[0] or "Error", "message": value[1] or "", "code": None, "stack": None, "cause": None,
                "fields": {}}
    if not isinstance(value, dict):
        return {"name": "Error", "message": value if isinstance(value, str) else None, "code": None, "stack": None,
                "cause": None, "fields": {}}
    named = ("name", "message", "code", "stack", "cause")
    stack, message = value.get("stack"), value.get("message")
    if message is not None and not isinstance(message, str):
        message = pretty(message)
    return {"name": str(value.get("name") or "Error"), "message": message, "code": value.get("code"),
            "stack": stack if isinstance(stack, str) else None, "cause": value.get("cause"),
            "fields": {k: v for k, v in value.items() if k not in named}}


def _job_page(cluster_id: str, job_id: str, status: int = 200, error: str | None = None):
    cluster = clusters.describe_cluster(cluster_id)
    job = admin.job_detail(cluster_id, job_id, event_limit=TIMELINE_EVENTS)
    activity = job["activity"]
    return render_template(
        "console/job.html", cluster=cluster, job=_with_duration(job), error=error, failure=error_of(job),
        timeline=[shown(e) for e in reversed(activity["events"])], more_events=activity["next"] is not None,
        live=job["status"] not in TERMINAL, live_seconds=JOB_LIVE_SECONDS,
        can_cancel=job["status"] in IN_FLIGHT, can_rerun=job["status"] in RERUNNABLE,
        reason_limit=cancel.MAX_REASON, reason=request.form.get("reason", "")), status


@bp.route("/clusters/<cluster_id>/jobs/<job_id>", endpoint="job")
def job_page(cluster_id: str, job_id: str):
    return _job_page(cluster_id, job_id)


@bp.route("/clusters/<cluster_id>/jobs/<job_id>/cancel", methods=["POST"], endpoint="cancel_job")
def cancel_job(cluster_id: str, job_id: str):
    try:
        reason = text_field(request.form, "reason", cancel.MAX_REASON)
    except FormError as exc:
        return _job_page(cluster_id, job_id, 400, exc.message)
    try:
        cancel.cancel_as_operator(cluster_id, job_id, reason)
    except Conflict as exc:
        return _job_page(cluster_id, job_id, 409, exc.message)
    return redirect(url_for("console.job", cluster_id=cluster_id, job_id=job_id), 303)


@bp.route("/clusters/<cluster_id>/jobs/<job_id>/rerun", methods=["POST"], endpoint="rerun_job")
def rerun_job(cluster_id: str, job_id: str):
    try:
        admin.rerun(cluster_id, job_id)
    except Conflict as exc:
        return _job_page(cluster_id, job_id, 409, exc.message)
    return redirect(url_for("console.job", cluster_id=cluster_id, job_id=job_id), 303)

