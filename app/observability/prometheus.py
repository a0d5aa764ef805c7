"""Prometheus metrics: the job counters, latencies, HTTP requests and parked polls, and the exposition.

Counters and histograms are the official client's. Under gunicorn (gunicorn.conf.py sets
PROMETHEUS_MULTIPROC_DIR before the workers start) each worker writes its values to files of its
own there and a scrape sums every worker's files, a dead worker's included, so a restart loses
nothing (`python -m app` runs gunicorn too). Without that directory (an app built in-process, as
the tests do) they live in this process's registry. Each replica is its own scrape target;
Prometheus sums them.

The job counters have one home: `count_event`, called by the activity log's `record` for every
transition, before its buffer may drop the row, so each transition is counted once, in the process
where it happened. Labels stay bounded (audit U8): cluster and service at most, never a job or
machine id, and at most MAX_LABEL_SETS (cluster, service) pairs per metric and process; the rest
fold into service="_other" (cluster="_other" too for a cluster past the cap with no series yet).

Queue depth, oldest pending age and live machines are read from the database at scrape time
(grouped reads on partial indexes, cached for a moment): every replica reports the same value.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import Iterable

import peewee
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from .. import db
from ..engine.states import EventType, JobStatus, ResultType
from ..models import Job, Worker, utcnow

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_LABEL_SETS = 2000
OTHER = "_other"
GAUGE_CACHE_SECONDS = 1.5
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRICS = CollectorRegistry()  # this process's own values (single-process mode)
# No `_created` series beside each counter and histogram: they double the series, and multiprocess
# mode (production) has none, so both modes expose the same.
disable_created_metrics()

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)

JOBS_CREATED = Counter("differential_jobs_created", "Calls that created a job", ["cluster", "service"],
                       registry=_METRICS)
JOBS_CLAIMED = Counter("differential_jobs_claimed", "Attempts started: jobs claimed by a machine",
                       ["cluster", "service"], registry=_METRICS)
JOBS_FINISHED = Counter("differential_jobs_finished", "Jobs that reached a terminal state, by outcome "
                        "(resolution, rejection, failure, cancelled)", ["cluster", "service", "outcome"],
                        registry=_METRICS)
JOBS_STALLED = Counter("differential_jobs_stalled", "Attempts that timed out or lost their machine",
                       ["cluster", "service"], registry=_METRICS)
JOBS_RERUN = Counter("differential_jobs_rerun", "Failed or cancelled jobs an operator put back",
                     ["cluster", "service"], registry=_METRICS)
CLAIM_LATENCY = Histogram("differential_job_claim_latency_seconds", "From a job's creation to its first claim "
                          "(a delayed call's delay included)", ["cluster", "service"], buckets=_LATENCY_BUCKETS,
                          registry=_METRICS)
EXECUTION = Histogram("differential_job_execution_seconds", "A stored result's execution time, as its worker "
                      "measured it", ["cluster", "service"], buckets=_LATENCY_BUCKETS, registry=_METRICS)
HTTP_REQUESTS = Counter("differential_http_requests", "HTTP requests answered, by route (the URL rule) and status",
                        ["method", "route", "status"], registry=_METRICS)
HTTP_DURATION = Histogram("differential_http_request_duration_seconds", "HTTP request duration, by route",
                          ["method", "route"], buckets=_HTTP_BUCKETS, registry=_METRICS)
LONG_POLLS_PARKED = Gauge("differential_long_polls_parked", "Long polls waiting now (of live workers)",
                          registry=_METRICS, multiprocess_mode="livesum")

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class LabelCap:
    """At most `limit` distinct (cluster, service) pairs; past it a new pair folds into _other."""

    def __init__(self, limit: int = MAX_LABEL_SETS) -> None:
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._clusters: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, cluster: str | None, service: str | None) -> tuple[str, str]:
        key = (cluster or "", service or "")
        if key in self._seen:  # the hot path: no lock (a set lookup is atomic)
            return key
        with self._lock:
            if key in self._seen:
                return key
            if len(self._seen) < self.limit:
                self._seen.add(key)
                self._clusters.add(key[0])
                return key
            return (key[0], OTHER) if key[0] in self._clusters else (OTHER, OTHER)


_CAPS = {metric: LabelCap() for metric in (JOBS_CREATED, JOBS_CLAIMED, JOBS_FINISHED, JOBS_STALLED, JOBS_RERUN,
                                           CLAIM_LATENCY, EXECUTION)}

# Transitions that end a job, by event type (a result's outcome is its resultType).
_FAILED = (EventType.JOB_STALLED_TOO_MANY_TIMES, EventType.JOB_DEADLINE_EXCEEDED)
_COUNTED = {EventType.JOB_CREATED: JOBS_CREATED, EventType.JOB_RECEIVED: JOBS_CLAIMED,
            EventType.JOB_STALLED: JOBS_STALLED, EventType.JOB_RERUN: JOBS_RERUN}


# Children by their label values: the client's own `labels()` costs a few microseconds a call.
# Only admitted pairs are kept (folded ones are looked up each time), so this stays bounded too.
_children: dict[tuple, object] = {}


def _labels(metric, cluster_id: str, service: str | None, *extra: str):
    key = (metric, cluster_id, service, extra)
    child = _children.get(key)
    if child is None:
        labels = _CAPS[metric](cluster_id, service)
        child = metric.labels(*labels, *extra)
        if labels == (cluster_id, service):
            _children[key] = child
    return child


def count_event(cluster_id: str, type: str, service: str | None, fields: dict) -> None:
    """Count one transition the activity log records (EventLog.record calls this for every event)."""
    counter = _COUNTED.get(type)
    if counter is not None:
        _labels(counter, cluster_id, service).inc()
    elif type == EventType.JOB_RESULTED:
        elapsed = fields.get("functionExecutionTime")
        if elapsed is not None:
            _labels(EXECUTION, cluster_id, service).observe(max(0.0, elapsed / 1000))
        if not fields.get("retryScheduled"):  # a rejection retried later has not finished
            outcome = ResultType.REJECTION if fields.get("resultType") == ResultType.REJECTION else ResultType.RESOLUTION
            _labels(JOBS_FINISHED, cluster_id, service, outcome).inc()
    elif type in _FAILED:
        _labels(JOBS_FINISHED, cluster_id, service, JobStatus.FAILURE).inc()
    elif type == EventType.JOB_CANCELLED:
        _labels(JOBS_FINISHED, cluster_id, service, JobStatus.CANCELLED).inc()


def claimed(cluster_id: str, service: str, rows: Iterable[tuple]) -> None:
    """Claim latency of a batch of claimed rows (seq, id, target_fn, target_args, attempt, created_at):
    first attempts only (a retry's wait is its back-off or its stall, not the queue)."""
    now = None
    for row in rows:
        if row[4] != 1 or row[5] is None:
            continue
        if now is None:
            now, histogram = utcnow(), _labels(CLAIM_LATENCY, cluster_id, service)
        created = Job.created_at.python_value(row[5])
        histogram.observe(max(0.0, (now - created).total_seconds()))


def http_request(method: str, rule: str | None, status: int, seconds: float) -> None:
    """One answered request. Bounded: the methods below, the app's URL rules, 3-digit statuses."""
    method = method if method in _METHODS else "other"
    route = rule or "unmatched"  # the URL rule, never the raw path (a 404's path is anyone's text)
    key = (method, route, status)
    children = _http.get(key)
    if children is None:
        children = _http[key] = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_DURATION.labels(method, route))
    children[0].inc()
    children[1].observe(seconds)


_http: dict[tuple, tuple] = {}


# --- the database gauges ------------------------------------------------------------------------

class _Gauges:
    """Per (cluster, service): jobs waiting, the oldest pending one's age, live machines; read at
    most once per GAUGE_CACHE_SECONDS per process, bounded to MAX_LABEL_SETS pairs each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read_at = -1e9
        self._timeout = None
        self._values: tuple = ({}, {}, {})

    def read(self, machine_timeout_seconds: float) -> tuple[dict, dict, dict]:
        with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at >= GAUGE_CACHE_SECONDS or self._timeout != machine_timeout_seconds:
                self._values = db.unit_of_work(lambda: _read_gauges(machine_timeout_seconds), transaction=False,
                                               idempotent=True)
                self._read_at, self._timeout = time.monotonic(), machine_timeout_seconds
            return self._values

    def clear(self) -> None:
        with self._lock:
            self._read_at = -1e9


gauges = _Gauges()


def _fold(rows: Iterable[tuple], combine) -> dict:
    out: dict = {}
    cap = LabelCap()
    for cluster, service, value in rows:
        key = cap(cluster, service)
        out[key] = combine(out[key], value) if key in out else value
    return out


def _read_gauges(machine_timeout_seconds: float) -> tuple[dict, dict, dict]:
    limit = 4 * MAX_LABEL_SETS  # groups past the cap fold into _other; past this many they are left out
    pending = list(Job.select(Job.cluster_id, Job.service, peewee.fn.COUNT(Job.seq), peewee.fn.MIN(Job.seq))
                   .where(Job.status == JobStatus.PENDING)  # partial index jobs_claim
                   .group_by(Job.cluster_id, Job.service).order_by(peewee.fn.COUNT(Job.seq).desc())
                   .limit(limit).tuples())
    scheduled = list(Job.select(Job.cluster_id, Job.service, peewee.fn.COUNT(Job.seq))
                     .where(Job.status == JobStatus.SCHEDULED)  # partial index jobs_scheduled_due
                     .group_by(Job.cluster_id, Job.service).order_by(peewee.fn.COUNT(Job.seq).desc())
                     .limit(limit).tuples())
    oldest_seqs = {seq: (cluster, service) for cluster, service, _n, seq in pending}
    created = {}
    seqs = list(oldest_seqs)
    for start in range(0, len(seqs), 500):
        for seq, at in Job.select(Job.seq, Job.created_at).where(Job.seq.in_(seqs[start:start + 500])).tuples():
            created[oldest_seqs[seq]] = at
    now_ms = db.execute("SELECT " + db.dialect.now_ms).fetchone()[0]
    cutoff = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(now_ms) - machine_timeout_seconds * 1000)
    live = list(Worker.select(Worker.cluster_id, Worker.service, peewee.fn.COUNT(Worker.pk))
                .where(Worker.last_poll_at >= cutoff)  # index workers_last_poll_at; the database's clock
                .group_by(Worker.cluster_id, Worker.service).order_by(peewee.fn.COUNT(Worker.pk).desc())
                .limit(limit).tuples())
    now = utcnow()
    depth = _fold([(c, s, n) for c, s, n, _seq in pending] + scheduled, lambda a, b: a + b)
    ages = _fold([(c, s, max(0.0, (now - at).total_seconds())) for (c, s), at in created.items()], max)
    return depth, ages, _fold(live, lambda a, b: a + b)


class _DatabaseCollector:
    def __init__(self, machine_timeout_seconds: float) -> None:
        self.machine_timeout_seconds = machine_timeout_seconds

    def collect(self):
        depth, ages, live = gauges.read(self.machine_timeout_seconds)
        for name, doc, values in (
                ("differential_queue_depth", "Jobs waiting: pending and scheduled (the same on every replica)", depth),
                ("differential_queue_oldest_pending_age_seconds", "Age of the oldest pending job (the same on "
                 "every replica)", ages),
                ("differential_service_live_machines", "Machines that polled the service within "
                 "MACHINE_TIMEOUT_SECONDS (the same on every replica)", live)):
            family = GaugeMetricFamily(name, doc, labels=["cluster", "service"])
            for (cluster, service), value in sorted(values.items()):
                family.add_metric([cluster, service], value)
            yield family


class _Own:
    """This process's metrics, forwarded into a scrape's registry (single-process mode)."""

    def collect(self):
        return _METRICS.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def exposition(machine_timeout_seconds: float) -> bytes:
    """The text a scrape gets: every worker's counters (or this process's) and the database gauges."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_Own())
    registry.register(_DatabaseCollector(machine_timeout_seconds))
    return generate_latest(registry)
