"""The reads behind the console's overview, services and monitoring pages that no API needed:
queue depth per service, the services with their workers, a service's live machines, and calls
over recent minutes or over a range, merged across functions.

Each stays cheap with 100,000 jobs in a cluster: queue depth counts only waiting or running jobs,
by the queue's own indexes and at most QUEUE_COUNT_CAP of each state; calls come from the metric
rollups (rollups.read_rows: the folded minutes plus the short tail since the mark), never from a
scan of the jobs table; lists are bounded.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import peewee

from .. import db
from ..models import Machine, Service, Worker
from . import clusters, cluster_metrics, machines, rollups, statements
from .rollups import BUCKETS, MINUTE_MS, OUTCOMES
from .states import JobStatus, ResultType

QUEUE_COUNT_CAP = 100_000  # per state: past it the page says "100,000+" rather than count on
QUEUE_STATES = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
FAILED = (ResultType.REJECTION, JobStatus.FAILURE)  # the outcomes the overview calls failures


def queue_depth(cluster_id: str, cap: int | None = None) -> dict:
    """{"services": {service: {pending, scheduled, running}}, "capped": [states]}: jobs waiting or
    running per service. A state with more than `cap` jobs in the cluster is counted up to the cap
    only (named in "capped"), so a huge backlog costs a bounded read."""
    cap = QUEUE_COUNT_CAP if cap is None else cap
    sql = ("SELECT service, COUNT(*) FROM (SELECT service FROM jobs WHERE cluster_id = %s AND status = %s"
           " LIMIT %s) AS t GROUP BY service")

    def read() -> dict:
        services: dict[str, dict[str, int]] = {}
        capped = []
        for state in QUEUE_STATES:
            total = 0
            for service, n in db.execute(sql, (cluster_id, state, cap + 1)).fetchall():
                services.setdefault(service, dict.fromkeys(QUEUE_STATES, 0))[state] = int(n)
                total += int(n)
            if total > cap:
                capped.append(state)
        return {"services": services, "capped": capped}

    return db.unit_of_work(read, transaction=False, idempotent=True)


def _workers_by_service(cluster_id: str, machine_timeout_seconds: float) -> dict[str, dict]:
    cutoff = statements.database_now() - dt.timedelta(seconds=machine_timeout_seconds)
    live = peewee.fn.COALESCE(peewee.fn.SUM(peewee.Case(None, [(Worker.last_poll_at >= cutoff, 1)], 0)), 0)
    query = (Worker.select(Worker.service, live.alias("live"), peewee.fn.MAX(Worker.last_poll_at).alias("last"))
             .where(Worker.cluster_id == cluster_id).group_by(Worker.service).tuples())
    return {service: {"liveWorkers": int(n or 0), "lastPollAt": _iso(last)} for service, n, last in query}


def services(cluster_id: str, machine_timeout_seconds: float, limit: int = 200) -> dict:
    """The cluster's services by name (at most `limit`; "total" says how many there are): each
    with its function names, declared concurrency, when its definition was last written, its live
    workers and when one last polled."""
    machines.flush()  # this process's latest polls count (written before the read borrows a connection)

    def read() -> dict:
        clusters.get_cluster(cluster_id)
        known = Service.select().where(Service.cluster_id == cluster_id)
        rows = list(known.order_by(Service.name).limit(limit))
        workers = _workers_by_service(cluster_id, machine_timeout_seconds)
        listed = []
        for row in rows:
            definition = clusters._definition(row)
            seen = workers.get(row.name, {"liveWorkers": 0, "lastPollAt": None})
            listed.append({"name": row.name, "functions": [f.get("name") for f in definition.get("functions", [])],
                           "concurrency": definition.get("concurrency"), "updatedAt": clusters.iso(row.updated_at),
                           **seen})
        return {"services": listed, "total": known.count() if len(rows) >= limit else len(rows)}

    return db.unit_of_work(read, transaction=False, idempotent=True)


def live_machines(cluster_id: str, service: str, machine_timeout_seconds: float, limit: int = 100) -> list[dict]:
    """The machines that polled `service` within the machine timeout, latest poll first: id, ip
    (when known), first and last poll."""
    machines.flush()
    cutoff = statements.database_now() - dt.timedelta(seconds=machine_timeout_seconds)

    def read() -> list[dict]:
        query = (Worker.select(Worker.machine_id, Worker.first_poll_at, Worker.last_poll_at, Machine.ip)
                 .join(Machine, peewee.JOIN.LEFT_OUTER,
                       on=(Machine.cluster_id == Worker.cluster_id) & (Machine.id == Worker.machine_id))
                 .where((Worker.cluster_id == cluster_id) & (Worker.service == service)
                        & (Worker.last_poll_at >= cutoff))
                 .order_by(Worker.last_poll_at.desc(), Worker.machine_id).limit(limit).tuples())
        return [{"id": machine, "ip": ip, "firstPollAt": _iso(first), "lastPollAt": _iso(last)}
                for machine, first, last, ip in query]

    return db.unit_of_work(read, transaction=False, idempotent=True)


def recent_calls(cluster_id: str, now_ms: int, minutes: int = 15) -> dict:
    """Per service, the calls that finished in the last `minutes` whole minutes up to now (the
    current minute included): {"minutes", "services": {service: {calls, failed, perMinute}}}."""
    end_ms = now_ms // MINUTE_MS * MINUTE_MS + MINUTE_MS
    start_ms = end_ms - minutes * MINUTE_MS
    out: dict[str, dict] = {}
    for row in rollups.read_rows(cluster_id, None, start_ms, end_ms):
        seen = out.setdefault(row.service, {"calls": 0, "failed": 0})
        seen["calls"] += row.calls
        if row.outcome in FAILED:
            seen["failed"] += row.calls
    for seen in out.values():
        seen["perMinute"] = seen["calls"] / minutes
    return {"minutes": minutes, "services": out}


# --- monitoring: one series over a range, every function (or one service's) merged -------------

@dataclass
class _Bucket:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    exec_histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    queue_histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, row: rollups.Row) -> None:
        self.calls[row.outcome] = self.calls.get(row.outcome, 0) + row.calls
        for mine, theirs in ((self.exec_histogram, row.exec_histogram), (self.queue_histogram, row.queue_histogram)):
            for i, n in enumerate(theirs[:BUCKETS]):
                mine[i] += n

    def answer(self) -> dict:
        return {"calls": {**self.calls, "total": sum(self.calls.values())},
                "executionMs": _percentiles(self.exec_histogram), "queueMs": _percentiles(self.queue_histogram)}


def _percentiles(histogram: list[int]) -> dict:
    out = {"count": sum(histogram)}
    for name, q in PERCENTILES:
        out[name] = cluster_metrics.percentile(histogram, q)
    return out


def monitoring(cluster_id: str, service: str | None, start_ms: int, end_ms: int, bucket_ms: int) -> dict:
    """Calls over whole-minute [start_ms, end_ms) in buckets of `bucket_ms` (a multiple of a
    minute), every function of the cluster (or of `service`) merged: per bucket start (epoch ms,
    buckets without calls left out), calls by outcome and p50/p95/p99 of execution and queue time
    from the merged histograms; and the same per function and for the whole range."""
    series: dict[int, _Bucket] = {}
    functions: dict[tuple[str, str], _Bucket] = {}
    whole = _Bucket()
    for row in rollups.read_rows(cluster_id, service, start_ms, end_ms):
        bucket = start_ms + (row.minute_ms - start_ms) // bucket_ms * bucket_ms
        series.setdefault(bucket, _Bucket()).add(row)
        functions.setdefault((row.service, row.function), _Bucket()).add(row)
        whole.add(row)
    return {"start": start_ms, "end": end_ms, "bucketMs": bucket_ms,
            "buckets": [{"start": b, **series[b].answer()} for b in sorted(series)],
            "functions": [{"service": k[0], "function": k[1], **functions[k].answer()} for k in sorted(functions)],
            "summary": whole.answer()}


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands MAX() of a DATETIME back as its text
        value = dt.datetime.fromisoformat(value)
    return clusters.iso(value)
