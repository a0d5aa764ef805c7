"""Cron schedules: each tick of a schedule makes one call, exactly once across replicas.

A schedule names a target (service, function, JSON arguments, optional callConfig), a 5-field
cron expression read in an IANA time zone (croniter walks it, DST included), and a catch-up
policy. `next_fire_ms` (epoch ms UTC) is the next tick; the maintenance leader fires the due ones
(`fire_due`). A tick's call has the executionId `schedule:<name>:<tick, ISO UTC>`, so a tick is
idempotent by schedule and time: two firers of one tick make one job. Advancing `next_fire_ms`
happens in the transaction that creates the calls, fenced on the row as it was read
(next_fire_ms and updated_at), so a tick fired, paused, replaced or deleted meanwhile is not fired
again, and a firer that dies mid-way leaves the tick due for the next leader.

Catch-up, for ticks that passed while nobody maintained (downtime, a paused leader):
  latest (default)  fire the most recent passed tick once; older ones are skipped
  none              fire a passed tick only if it is at most `on_time_seconds` late (an ordinary
                    maintenance delay); anything older is skipped
  all               fire every passed tick in order, at most MAX_CATCH_UP ticks a schedule per run
                    (the next run goes on)
A paused schedule has no next tick; resuming starts at the next tick after now.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from .. import db
from ..errors import ApiError, BadRequest, Conflict, NotFound, TooLarge
from ..models import Schedule, utcnow
from ..observability.events import events
from . import call_config, clusters, jobs, statements
from .arguments import ArgumentsError, pack_arguments
from .signals import hub, queue_topic
from .states import EventType

log = logging.getLogger(__name__)

CATCH_UP = ("latest", "none", "all")
DEFAULT_CATCH_UP = "latest"
MAX_CATCH_UP = 100  # ticks one schedule fires in one maintenance run under `all`
MAX_ARGUMENTS_BYTES = 64 * 1024  # of the encoded targetArgs: a schedule is no way to ship big payloads
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
EXECUTION_PREFIX = "schedule:"


# --- cron and time zones ------------------------------------------------------------------------

def check_cron(expression: str) -> None:
    """Raise BadRequest unless `expression` is a valid 5-field cron expression; the message names
    the bad cron field (each is tried alone, the others `*`)."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise BadRequest(f"cron must have 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}",
                         {"field": "cron"}, code="invalid_cron")
    for i, name in enumerate(CRON_FIELDS):
        alone = ["*"] * len(CRON_FIELDS)
        alone[i] = fields[i]
        if not _valid(" ".join(alone)):
            raise BadRequest(f"cron's {name} field {fields[i]!r} is not valid", {"field": "cron", "cronField": name},
                             code="invalid_cron")
    if not _valid(expression):  # each field is fine alone, but not together (e.g. 30 February)
        raise BadRequest(f"cron {expression!r} is not valid", {"field": "cron"}, code="invalid_cron")
    try:
        croniter(expression, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)).get_next(float)
    except CroniterError:
        raise BadRequest(f"cron {expression!r} never fires", {"field": "cron"}, code="invalid_cron") from None


def _valid(expression: str) -> bool:
    try:
        croniter(expression)
    except (CroniterError, ValueError, KeyError):
        return False
    return True


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or BadRequest."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"timezone {name!r} is not an IANA time zone name (e.g. Europe/Paris, UTC)",
                         {"field": "timezone"}, code="invalid_timezone") from None


def _ticks(cron: str, timezone: str, after_ms: int) -> croniter:
    start = dt.datetime.fromtimestamp(after_ms / 1000, tz=dt.timezone.utc).astimezone(zone(timezone))
    return croniter(cron, start)


def next_tick_ms(cron: str, timezone: str, after_ms: int) -> int:
    """The first tick strictly after `after_ms`."""
    return round(_ticks(cron, timezone, after_ms).get_next(float) * 1000)


def latest_tick_ms(cron: str, timezone: str, at_ms: int) -> int:
    """The last tick at or before `at_ms`."""
    return round(_ticks(cron, timezone, at_ms + 1).get_prev(float) * 1000)


@dataclass(frozen=True)
class Plan:
    ticks: list[int]  # to fire now, oldest first
    next_ms: int  # the next tick after them


def plan(cron: str, timezone: str, catch_up: str, due_ms: int, now_ms: int, on_time_ms: int) -> Plan:
    """What a run at `now_ms` fires of a schedule whose next tick `due_ms` has come."""
    if catch_up == "all":
        ticks, it = [due_ms], _ticks(cron, timezone, due_ms)
        while True:
            t = round(it.get_next(float) * 1000)
            if t > now_ms or len(ticks) == MAX_CATCH_UP:
                return Plan(ticks, t)
            ticks.append(t)
    latest = max(due_ms, latest_tick_ms(cron, timezone, now_ms))
    fire = catch_up == "latest" or now_ms - latest <= on_time_ms
    return Plan([latest] if fire else [], next_tick_ms(cron, timezone, now_ms))


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def execution_id(name: str, tick_ms: int) -> str:
    """The id of a tick's call: the same tick of the same schedule is the same call."""
    tick = dt.datetime.fromtimestamp(tick_ms / 1000, tz=dt.timezone.utc)
    return f"{EXECUTION_PREFIX}{name}:{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"


# --- the management API's operations ------------------------------------------------------------

FIELDS = ("service", "function", "arguments", "cron", "timezone", "catchUp", "callConfig", "paused")


def public(row: Schedule) -> dict:
    return {
        "name": row.name, "service": row.service, "function": row.target_fn, "arguments": json.loads(row.arguments),
        "cron": row.cron, "timezone": row.timezone, "catchUp": row.catch_up,
        "callConfig": json.loads(row.call_config) if row.call_config else None, "paused": bool(row.paused),
        "nextFireAt": iso(row.next_fire_ms), "lastFiredAt": iso(row.last_fired_ms),
        "createdAt": clusters.iso(row.created_at), "updatedAt": clusters.iso(row.updated_at),
    }


def _columns(spec: dict, now_ms: int) -> dict:
    """A full schedule (the API's validated fields) as its row's columns, checked beyond the schema."""
    check_cron(spec["cron"])
    zone(spec["timezone"])
    config = spec.get("callConfig")
    if config and "executionId" in config:
        raise BadRequest("a schedule's callConfig cannot name an executionId: each tick's call has its own "
                         f"({EXECUTION_PREFIX}<name>:<tick>)", {"field": "callConfig.executionId"})
    if config and "runAt" in config:
        raise BadRequest("a schedule's callConfig cannot name a runAt: each tick's call runs at its tick "
                         "(delaySeconds may delay it)", {"field": "callConfig.runAt"})
    try:
        target_args = pack_arguments(spec["arguments"])
    except ArgumentsError as exc:
        raise BadRequest(str(exc), {"field": "arguments"}, code="invalid_arguments") from None
    if len(target_args) > MAX_ARGUMENTS_BYTES:
        raise TooLarge(f"arguments encode to {len(target_args)} bytes, more than the {MAX_ARGUMENTS_BYTES} a "
                       "schedule may carry", {"field": "arguments", "limitBytes": MAX_ARGUMENTS_BYTES})
    paused = bool(spec.get("paused", False))
    return {
        "service": spec["service"], "target_fn": spec["function"], "arguments": json.dumps(spec["arguments"]),
        "target_args": target_args, "cron": spec["cron"], "timezone": spec["timezone"],
        "catch_up": spec.get("catchUp") or DEFAULT_CATCH_UP,
        "call_config": json.dumps(config) if config else None, "paused": paused,
        "next_fire_ms": None if paused else next_tick_ms(spec["cron"], spec["timezone"], now_ms),
    }


def _find(cluster_id: str, name: str) -> Schedule | None:
    return Schedule.get_or_none((Schedule.cluster_id == cluster_id) & (Schedule.name == name))


def _get(cluster_id: str, name: str) -> Schedule:
    clusters.get_cluster(cluster_id)
    row = _find(cluster_id, name)
    if row is None:
        raise NotFound(f"schedule {name!r} does not exist in cluster {cluster_id!r}",
                       {"clusterId": cluster_id, "name": name}, code="schedule_not_found")
    return row


def _now_ms(now: dt.datetime | None) -> int:
    now = now or statements.database_now()  # the clock maintenance fires by
    return int(now.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def create(cluster_id: str, name: str, spec: dict, *, replace: bool = False,
           now: dt.datetime | None = None) -> tuple[dict, bool]:
    """Create the schedule (Conflict if the name is taken, unless `replace`); (schedule, created)."""
    columns = _columns(spec, _now_ms(now))

    def tx() -> tuple[Schedule, bool]:
        clusters.get_cluster(cluster_id)
        existing = _find(cluster_id, name)
        if existing is not None and not replace:
            raise Conflict(f"schedule {name!r} already exists in this cluster; PUT replaces it",
                           {"name": name}, code="schedule_exists")
        stamp = utcnow()
        if existing is None:
            inserted = (Schedule.insert(cluster_id=cluster_id, name=name, created_at=stamp, updated_at=stamp,
                                        **columns).on_conflict_ignore().execute())
            if not inserted:  # a concurrent create of the same name won
                raise Conflict(f"schedule {name!r} already exists in this cluster; PUT replaces it",
                               {"name": name}, code="schedule_exists")
        else:
            Schedule.update(updated_at=stamp, **columns).where(Schedule.pk == existing.pk).execute()
        return _find(cluster_id, name), existing is None

    row, created = db.unit_of_work(tx)
    return public(row), created


def update(cluster_id: str, name: str, changes: dict, *, now: dt.datetime | None = None) -> dict:
    """Change some fields (e.g. {"paused": true}). The next tick is worked out again when the
    timing changes (cron, timezone) or the schedule resumes; pausing clears it."""
    now_ms = _now_ms(now)

    def tx() -> Schedule:
        row = _get(cluster_id, name)
        current = public(row)
        merged = {**{k: current[k] for k in FIELDS}, **changes}
        columns = _columns(merged, now_ms)
        timing_kept = (not merged["paused"] and not row.paused and merged["cron"] == row.cron
                       and merged["timezone"] == row.timezone)
        if timing_kept:
            columns["next_fire_ms"] = row.next_fire_ms
        Schedule.update(updated_at=utcnow(), **columns).where(Schedule.pk == row.pk).execute()
        return _find(cluster_id, name)

    return public(db.unit_of_work(tx))


def get(cluster_id: str, name: str) -> dict:
    return public(db.unit_of_work(lambda: _get(cluster_id, name), transaction=False))


def list_schedules(cluster_id: str, limit: int, after: str | None = None) -> dict:
    """A page of the cluster's schedules by name; `next` is the `after` of the next page."""

    def read() -> list[Schedule]:
        clusters.get_cluster(cluster_id)
        query = Schedule.select().where(Schedule.cluster_id == cluster_id)
        if after is not None:
            query = query.where(Schedule.name > after)
        return list(query.order_by(Schedule.name).limit(limit + 1))

    rows = db.unit_of_work(read, transaction=False)
    page = rows[:limit]
    return {"schedules": [public(r) for r in page], "next": page[-1].name if len(rows) > limit else None}


def delete(cluster_id: str, name: str) -> None:
    def tx() -> None:
        row = _get(cluster_id, name)
        Schedule.delete().where(Schedule.pk == row.pk).execute()

    db.unit_of_work(tx)


# --- firing (the maintenance task FireSchedules) ------------------------------------------------

def fire_due(now: dt.datetime, *, batch: int = 100, on_time_seconds: float = 60.0) -> dict[str, int]:
    """Fire the schedules due at `now` (at most `batch` of them; the next run goes on)."""
    now_ms = int(now.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    due = db.unit_of_work(lambda: list(
        Schedule.select().where((Schedule.next_fire_ms <= now_ms) & (Schedule.paused == False))  # noqa: E712
        .order_by(Schedule.next_fire_ms).limit(batch)), transaction=False)
    counts = {"fired": 0, "failed": 0}
    for row in due:
        try:
            fired, failed = _fire(row, now_ms, round(on_time_seconds * 1000))
        except Exception:  # one broken schedule must not hold up the others
            log.warning("schedule %s of cluster %s could not fire", row.name, row.cluster_id, exc_info=True)
            continue
        counts["fired"] += fired
        counts["failed"] += failed
    return counts


def _fire(row: Schedule, now_ms: int, on_time_ms: int) -> tuple[int, int]:
    todo = plan(row.cron, row.timezone, row.catch_up, row.next_fire_ms, now_ms, on_time_ms)
    last = todo.ticks[-1] if todo.ticks else row.last_fired_ms

    def tx() -> list[tuple[int, str, bool]] | None:
        # The fence first: on PostgreSQL it also locks the row, so a second firer waits here and
        # then finds it advanced.
        moved = (Schedule.update(next_fire_ms=todo.next_ms, last_fired_ms=last)
                 .where((Schedule.pk == row.pk) & (Schedule.next_fire_ms == row.next_fire_ms)
                        & (Schedule.updated_at == row.updated_at) & (Schedule.paused == False))  # noqa: E712
                 .execute())
        if moved != 1:
            return None  # fired, changed or deleted since it was read
        made = []
        for tick in todo.ticks:
            execution = execution_id(row.name, tick)
            try:
                job_id, created = jobs.create_job(row.cluster_id, row.service, row.target_fn, row.target_args,
                                                  call_config.from_wire(json.loads(row.call_config) if row.call_config else {},
                                                                        execution_id=execution))
            except ApiError as exc:  # e.g. that id names another function's call: skip the tick
                log.warning("schedule %s: tick %s not fired: %s", row.name, iso(tick), exc)
                continue
            made.append((tick, job_id, created))
        return made

    made = db.unit_of_work(tx)
    if made is None:
        return 0, 0
    if made:
        hub.wake([queue_topic(row.cluster_id, row.service)])  # this process's waiting workers, after the commit
    for tick, job_id, created in made:
        events.record(row.cluster_id, EventType.SCHEDULE_FIRED, job_id=job_id, service=row.service,
                      schedule=row.name, tick=iso(tick), targetFn=row.target_fn, created=created)
    return len(made), len(todo.ticks) - len(made)
