"""The hot statements (create, claim, result, status) as plain SQL, for both databases.

A call runs these on every create, result and status poll; building them with the query builder
cost more CPU than the database spent running them (profiled under load). On PostgreSQL the NOTIFY
rides in the same statement (RETURNING pg_notify), so it is delivered exactly when the change
commits, at no extra round trip.
"""
from __future__ import annotations

import datetime as dt

from .. import db
from ..models import Job
from .signals import CHANNEL

_JOB_COLUMNS = ("cluster_id", "id", "service", "target_fn", "target_args", "status", "cache_key",
                "attempts_allowed", "attempt", "timeout_seconds", "created_at", "deployment_id", "predictive_retries")
_INSERT = (f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_JOB_COLUMNS))})")
_INSERT_POSTGRES = _INSERT + " ON CONFLICT DO NOTHING RETURNING pg_notify(%s, %s)"
_INSERT_SQLITE = _INSERT.replace("INSERT INTO", "INSERT OR IGNORE INTO")

_RESULT = ("UPDATE jobs SET status = 'success', result = %s, result_type = %s, resulted_at = %s,"
           " execution_time_ms = %s, deadline_ms = NULL"
           " WHERE cluster_id = %s AND id = %s AND status = 'running' AND machine_id = %s")
_RESULT_POSTGRES = _RESULT + " RETURNING pg_notify(%s, %s)"

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


def insert_job(*, cluster_id: str, job_id: str, service: str, target_fn: str, target_args: str,
               cache_key: str | None, attempts_allowed: int, timeout_seconds: int, created_at: dt.datetime,
               deployment_id: str | None, predictive_retries: bool, notify_topic: str) -> bool:
    """Insert a pending job unless (cluster, id) exists; True if it was inserted."""
    values = (cluster_id, job_id, service, target_fn, target_args, "pending", cache_key, attempts_allowed, 0,
              timeout_seconds, Job.created_at.db_value(created_at), deployment_id,
              Job.predictive_retries.db_value(predictive_retries))
    if db.is_postgres():
        return len(db.execute(_INSERT_POSTGRES, values + (CHANNEL, notify_topic)).fetchall()) > 0
    return db.execute(_INSERT_SQLITE, values).rowcount > 0


def claim_jobs(*, cluster_id: str, service: str, machine_id: str, limit: int, claimed_at: dt.datetime,
               now_ms: int) -> list[tuple]:
    """Move up to `limit` pending jobs to running; rows (seq, id, target_fn, target_args, attempt)."""
    claimed = Job.claimed_at.db_value(claimed_at)
    if db.is_postgres():
        return db.execute(_CLAIM_POSTGRES, (cluster_id, service, limit, machine_id, claimed, now_ms)).fetchall()
    return db.execute(_CLAIM_SQLITE, (machine_id, claimed, now_ms, cluster_id, service, limit)).fetchall()


def store_result(*, cluster_id: str, job_id: str, machine_id: str, result: str, result_type: str,
                 execution_time_ms: int | None, resulted_at: dt.datetime, notify_topic: str) -> bool:
    """The fenced result write: only the running attempt's machine can finish the job."""
    values = (result, result_type, Job.resulted_at.db_value(resulted_at), execution_time_ms, cluster_id, job_id,
              machine_id)
    if db.is_postgres():
        return len(db.execute(_RESULT_POSTGRES, values + (CHANNEL, notify_topic)).fetchall()) > 0
    return db.execute(_RESULT, values).rowcount > 0


def read_statuses(cluster_id: str, job_ids: list[str]) -> list[tuple]:
    """(id, status, result, result_type, service) of those ids that exist in this cluster."""
    if db.is_postgres():  # one array parameter instead of thousands of placeholders
        return db.execute(_STATUS + "id = ANY(%s)", (cluster_id, job_ids)).fetchall()
    placeholders = ", ".join(["%s"] * len(job_ids))
    return db.execute(_STATUS + f"id IN ({placeholders})", (cluster_id, *job_ids)).fetchall()
