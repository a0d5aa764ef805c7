"""The hot statements (create, claim, result, status) as plain SQL, for both databases.

A call runs these on every create, result and status poll; building them with the query builder
cost more CPU than the database spent running them (profiled under load). Creates and results come
in batches (see `batching.py`): one statement writes many rows. On PostgreSQL the NOTIFY rides in
the same statement (RETURNING pg_notify), so it is delivered exactly when the change commits, at no
extra round trip.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .. import db
from ..models import Job
from .signals import CHANNEL, topic_sql

_JOB_COLUMNS = ("cluster_id", "id", "service", "target_fn", "target_args", "status", "cache_key",
                "attempts_allowed", "attempt", "timeout_seconds", "created_at", "deployment_id", "predictive_retries")
_INSERT_HEAD = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES "
_ROW = f"({', '.join(['%s'] * len(_JOB_COLUMNS))})"
_QUEUE_TOPIC = topic_sql("q", "cluster_id", "service")
_INSERT_SQLITE = "INSERT OR IGNORE INTO" + _INSERT_HEAD[len("INSERT INTO"):] + _ROW

_RESULT_SQLITE = ("UPDATE jobs SET status = 'success', result = %s, result_type = %s, resulted_at = %s,"
                  " execution_time_ms = %s, deadline_ms = NULL"
                  " WHERE cluster_id = %s AND id = %s AND status = 'running' AND machine_id = %s")
# The casts type the VALUES columns whatever the first row holds (a NULL would make them text).
_RESULT_ROW = "(%s, %s, %s, %s, %s, %s::timestamp, %s::integer)"
_RESULTS_POSTGRES = """
UPDATE jobs SET status = 'success', result = v.result, result_type = v.result_type, resulted_at = v.resulted_at,
       execution_time_ms = v.execution_time_ms, deadline_ms = NULL
FROM (VALUES {rows}) AS v(cluster_id, id, machine_id, result, result_type, resulted_at, execution_time_ms)
WHERE jobs.cluster_id = v.cluster_id AND jobs.id = v.id AND jobs.status = 'running' AND jobs.machine_id = v.machine_id
RETURNING jobs.cluster_id, jobs.id, pg_notify(%s, {topic})
""".replace("{topic}", topic_sql("j", "jobs.cluster_id", "jobs.id"))

# One statement claims up to `limit` jobs, oldest first. SKIP LOCKED lets concurrent pollers take
# different rows instead of queueing behind each other, and the status test is repeated in the
# UPDATE so a row that changed after it was picked is never claimed twice.
_CLAIM_POSTGRES = """
WITH picked AS (
    SELECT seq FROM jobs
    WHERE cluster_id = %s AND service = %s AND status = 'pending'
    ORDER BY seq LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'running', attempt = jobs.attempt + 1, machine_id = %s,
       claimed_at = %s, deadline_ms = %s + jobs.timeout_seconds * 1000
FROM picked
WHERE jobs.seq = picked.seq AND jobs.status = 'pending'
RETURNING jobs.seq, jobs.id, jobs.target_fn, jobs.target_args, jobs.attempt
"""

# SQLite runs one writing statement at a time, so the plain form cannot claim a row twice.
_CLAIM_SQLITE = """
UPDATE jobs SET status = 'running', attempt = attempt + 1, machine_id = %s,
       claimed_at = %s, deadline_ms = %s + timeout_seconds * 1000
WHERE seq IN (
    SELECT seq FROM jobs
    WHERE cluster_id = %s AND service = %s AND status = 'pending'
    ORDER BY seq LIMIT %s
) AND status = 'pending'
RETURNING seq, id, target_fn, target_args, attempt
"""

_STATUS = "SELECT id, status, result, result_type, service FROM jobs WHERE cluster_id = %s AND "


@dataclass(frozen=True)
class NewJob:
    cluster_id: str
    job_id: str
    service: str
    target_fn: str
    target_args: str
    cache_key: str | None
    attempts_allowed: int
    timeout_seconds: int
    created_at: dt.datetime
    deployment_id: str | None
    predictive_retries: bool

    def values(self) -> tuple:
        return (self.cluster_id, self.job_id, self.service, self.target_fn, self.target_args, "pending",
                self.cache_key, self.attempts_allowed, 0, self.timeout_seconds, Job.created_at.db_value(self.created_at),
                self.deployment_id, Job.predictive_retries.db_value(self.predictive_retries))


def insert_jobs(jobs: list[NewJob]) -> list[bool]:
    """Insert pending jobs unless their (cluster, id) exists; per job, whether it was inserted.

    On PostgreSQL one statement inserts them all, and its RETURNING notifies each queue topic
    (PostgreSQL sends one notification per distinct topic and transaction)."""
    if db.is_postgres():
        sql = (_INSERT_HEAD + ", ".join([_ROW] * len(jobs))
               + f" ON CONFLICT DO NOTHING RETURNING cluster_id, id, pg_notify(%s, {_QUEUE_TOPIC})")
        params = [v for job in jobs for v in job.values()]
        params.append(CHANNEL)
        inserted = {(row[0], row[1]) for row in db.execute(sql, params).fetchall()}
        return [(job.cluster_id, job.job_id) in inserted for job in jobs]
    return [db.execute(_INSERT_SQLITE, job.values()).rowcount > 0 for job in jobs]


def claim_jobs(*, cluster_id: str, service: str, machine_id: str, limit: int, claimed_at: dt.datetime,
               now_ms: int) -> list[tuple]:
    """Move up to `limit` pending jobs to running; rows (seq, id, target_fn, target_args, attempt)."""
    claimed = Job.claimed_at.db_value(claimed_at)
    if db.is_postgres():
        return db.execute(_CLAIM_POSTGRES, (cluster_id, service, limit, machine_id, claimed, now_ms)).fetchall()
    return db.execute(_CLAIM_SQLITE, (machine_id, claimed, now_ms, cluster_id, service, limit)).fetchall()


@dataclass(frozen=True)
class Result:
    cluster_id: str
    job_id: str
    machine_id: str
    result: str
    result_type: str
    execution_time_ms: int | None
    resulted_at: dt.datetime


def store_results(results: list[Result]) -> list[bool]:
    """The fenced result writes: only the running attempt's machine can finish a job. Per result,
    whether it was stored. A batch must not name one job twice (the caller keeps them apart)."""
    if db.is_postgres():
        sql = _RESULTS_POSTGRES.format(rows=", ".join([_RESULT_ROW] * len(results)))
        params = [v for r in results for v in (r.cluster_id, r.job_id, r.machine_id, r.result, r.result_type,
                                               Job.resulted_at.db_value(r.resulted_at), r.execution_time_ms)]
        params.append(CHANNEL)
        stored = {(row[0], row[1]) for row in db.execute(sql, params).fetchall()}
        return [(r.cluster_id, r.job_id) in stored for r in results]
    return [db.execute(_RESULT_SQLITE, (r.result, r.result_type, Job.resulted_at.db_value(r.resulted_at),
                                        r.execution_time_ms, r.cluster_id, r.job_id, r.machine_id)).rowcount > 0
            for r in results]


def read_statuses(cluster_id: str, job_ids: list[str]) -> list[tuple]:
    """(id, status, result, result_type, service) of those ids that exist in this cluster."""
    if db.is_postgres():  # one array parameter instead of thousands of placeholders
        return db.execute(_STATUS + "id = ANY(%s)", (cluster_id, job_ids)).fetchall()
    placeholders = ", ".join(["%s"] * len(job_ids))
    return db.execute(_STATUS + f"id IN ({placeholders})", (cluster_id, *job_ids)).fetchall()
