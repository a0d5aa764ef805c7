"""Every write of a job's status, as plain SQL, for both databases side by side.

Each transition of app/engine/states.py is one function here: insert_jobs (-> pending, or ->
scheduled with a due time ahead), claim_jobs (pending -> running), store_results (running ->
success, or -> scheduled for a rejection with back-off attempts left), promote_due (scheduled ->
pending), requeue_stalled (running -> pending), fail_stalled (running -> failure), cancel_jobs (in
flight -> cancelled) and expire_waiting (pending | scheduled -> failure). The first four run on
every call; building them with the query
builder cost more CPU than the database spent running them (profiled under load). Creates and
results come in batches (see `batching.py`): one statement writes many rows. On PostgreSQL the
NOTIFY rides in the same statement (RETURNING pg_notify), so it is delivered exactly when the
change commits, at no extra round trip.

The two databases' hot statements are the methods of `PostgresDialect` and `SqliteDialect`, which
extend db.py's dialects; `db.bind(settings, DIALECTS)` picks one, and the module functions below
call through it, so nothing here asks which database it is.

Time is the database's (audit L4): a claim's deadline, a machine's last ping and the maintenance
lease are all judged on the database server's clock, never on a replica's, so clock skew or a
step between replicas cannot time out a healthy attempt or let two replicas hold the lease. The
claim reads that clock inside its own statement (no extra round trip); maintenance reads it once
a tick (`database_now`).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .. import db
from ..models import Job, Machine, Service, Worker
from .signals import CHANNEL, DUE_TOPIC, topic_sql
from .states import RERUNNABLE, JobStatus, MachineStatus, ResultType

# Statuses in the SQL are literals, not parameters: the planner matches the partial indexes of
# migration 1 (`WHERE status = 'pending'`, `'running'`) only against literals.
_PENDING, _RUNNING, _SUCCESS, _FAILURE = (f"'{s}'" for s in (
    JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCESS, JobStatus.FAILURE))
_SCHEDULED, _CANCELLED = (f"'{s}'" for s in (JobStatus.SCHEDULED, JobStatus.CANCELLED))
_REJECTION = f"'{ResultType.REJECTION}'"
_RERUNNABLE = ", ".join(f"'{s}'" for s in RERUNNABLE)
_INACTIVE, _ACTIVE = f"'{MachineStatus.INACTIVE}'", f"'{MachineStatus.ACTIVE}'"

_JOB_COLUMNS = ("cluster_id", "id", "service", "target_fn", "target_args", "status", "cache_key",
                "attempts_allowed", "attempt", "timeout_seconds", "created_at", "deployment_id", "predictive_retries")
_INSERT_HEAD = f"INSERT INTO jobs ({', '.join(_JOB_COLUMNS)}) VALUES "
_ROW = f"({', '.join(['%s'] * len(_JOB_COLUMNS))})"
_QUEUE_TOPIC = topic_sql("q", "cluster_id", "service")
_INSERT_POSTGRES = " ON CONFLICT DO NOTHING RETURNING cluster_id, id, pg_notify(%s, " + _QUEUE_TOPIC + ")"
_INSERT_SQLITE = "INSERT OR IGNORE INTO" + _INSERT_HEAD[len("INSERT INTO"):] + _ROW

# A rejection of a job whose policy (backoff_*) allows another attempt is not final: it becomes
# scheduled, due after the back-off (`_backoff_delay`), keeping the rejection as its last result.
# `{rt}` is the new result's type, `{u}` the row's random draw in [0, 1) for the jitter.
_RETRY_WHEN = f"{{rt}} = {_REJECTION} AND {{j}}attempt < COALESCE({{j}}backoff_attempts, 0)"


def _backoff_delay(least: str, power: str, j: str, u: str) -> str:
    """The back-off before attempt n + 1, after the rejection of attempt n, in ms (its one home):

        min(max, initial * factor ** (n - 1)) * (1 - jitter * u),  u uniform in [0, 1), rounded to a ms

    so the first retry waits `initial`, each next one `factor` times longer up to `max`, and the
    jitter takes a random share of up to `jitter` off each delay (0: exact, 1: anywhere in
    [0, delay)). Computed in the statement that fences the result, from the row's own columns."""
    return (f"CAST(ROUND({least}({j}backoff_max_ms, {j}backoff_initial_ms * {power}({j}backoff_factor, {j}attempt - 1))"
            f" * (1 - {j}backoff_jitter * {u})) AS BIGINT)")


_RESULT_SQLITE = (f"UPDATE jobs SET status = CASE WHEN {_RETRY_WHEN.format(rt='%s', j='')} THEN {_SCHEDULED}"
                  f" ELSE {_SUCCESS} END, result = %s, result_type = %s, resulted_at = %s,"
                  " execution_time_ms = %s, deadline_ms = NULL,"
                  f" run_at_ms = CASE WHEN {_RETRY_WHEN.format(rt='%s', j='')}"
                  f" THEN {{now_ms}} + {_backoff_delay('min', 'differential_pow', '', '%s')} END"
                  f" WHERE cluster_id = %s AND id = %s AND status = {_RUNNING} AND machine_id = %s"
                  " RETURNING status, run_at_ms, {now_ms}, service")
# The casts type the VALUES columns whatever the first row holds (a NULL would make them text).
_RESULT_ROW = "(%s, %s, %s, %s, %s, %s::timestamp, %s::integer, %s::double precision)"
_PG_RETRY = _RETRY_WHEN.format(rt="v.result_type", j="jobs.")
_RESULTS_POSTGRES = f"""
UPDATE jobs SET status = CASE WHEN {_PG_RETRY} THEN {_SCHEDULED} ELSE {_SUCCESS} END,
       result = v.result, result_type = v.result_type, resulted_at = v.resulted_at,
       execution_time_ms = v.execution_time_ms, deadline_ms = NULL,
       run_at_ms = CASE WHEN {_PG_RETRY} THEN {{now_ms}} + {_backoff_delay('LEAST', 'power', 'jobs.', 'v.u')} END
FROM (VALUES {{rows}}) AS v(cluster_id, id, machine_id, result, result_type, resulted_at, execution_time_ms, u)
WHERE jobs.cluster_id = v.cluster_id AND jobs.id = v.id AND jobs.status = {_RUNNING} AND jobs.machine_id = v.machine_id
RETURNING jobs.cluster_id, jobs.id, jobs.status, jobs.run_at_ms, {{now_ms}},
          pg_notify(%s, {topic_sql("j", "jobs.cluster_id", "jobs.id")}),
          CASE WHEN jobs.status = {_SCHEDULED} THEN pg_notify(%s, %s) END, jobs.service
"""

# A create with a delay, a due time or a back-off policy (a "controlled" job) takes this row form,
# next to the plain insert, which stays as it was. The due time is the given epoch ms, or the
# database's clock + the delay; a job not due yet is inserted scheduled (not claimable), one whose
# time has come (a runAt in the past) pending.
_DUE = "COALESCE(%s, {now_ms} + %s)"
_CONTROLLED_COLUMNS = _JOB_COLUMNS + ("run_at_ms", "backoff_attempts", "backoff_initial_ms", "backoff_factor",
                                      "backoff_max_ms", "backoff_jitter")
_CONTROLLED_ROW = "(" + ", ".join(
    f"CASE WHEN {_DUE} > {{now_ms}} THEN {_SCHEDULED} ELSE {_PENDING} END" if c == "status" else "%s"
    for c in _JOB_COLUMNS) + f", CASE WHEN {_DUE} > {{now_ms}} THEN {_DUE} END, %s, %s, %s, %s, %s)"
_CONTROLLED_HEAD = f"INTO jobs ({', '.join(_CONTROLLED_COLUMNS)}) VALUES "
_CONTROLLED_POSTGRES = (" ON CONFLICT DO NOTHING RETURNING cluster_id, id, CASE WHEN status = "
                        f"{_PENDING} THEN pg_notify(%s, {_QUEUE_TOPIC}) ELSE pg_notify(%s, %s) END")
_CONTROLLED_SQLITE = "INSERT OR IGNORE " + _CONTROLLED_HEAD + _CONTROLLED_ROW

# Maintenance: scheduled jobs whose time has come, soonest first (index jobs_scheduled_due), and
# the earliest due time still ahead, with the database's clock (an index-only read).
_DUE_JOBS = f"SELECT seq, cluster_id, id, service FROM jobs WHERE status = {_SCHEDULED} AND run_at_ms <= %s" \
            " ORDER BY run_at_ms LIMIT %s"
_PROMOTE = f"UPDATE jobs SET status = {_PENDING}, run_at_ms = NULL WHERE status = {_SCHEDULED} AND seq IN "
_NEXT_DUE = f"SELECT (SELECT min(run_at_ms) FROM jobs WHERE status = {_SCHEDULED}), {{now_ms}}"

# A claim ends the attempt at its timeout or at the call's deadline, whichever comes first (the
# sweeper then ends the call), and from then on only the call deadline bounds its waits: a job put
# back after a stall was claimed in time, so its queue deadline no longer applies.
_NEVER = 2**62
# What a claim writes, the same for the plain and the limited claim (`{now}`/`{now_ms}` are filled
# in with the dialect's clock when the statement is formatted).
_CLAIM_SET_POSTGRES = f"""UPDATE jobs SET status = {_RUNNING}, attempt = jobs.attempt + 1, machine_id = %s,
       claimed_at = COALESCE(%s::timestamp, {{now}}),
       deadline_ms = LEAST(COALESCE(%s::bigint, {{now_ms}}) + jobs.timeout_seconds * 1000,
                           COALESCE(jobs.call_deadline_ms, {_NEVER})),
       queue_deadline_ms = jobs.call_deadline_ms"""
_CLAIM_SET_SQLITE = f"""UPDATE jobs SET status = {_RUNNING}, attempt = attempt + 1, machine_id = %s,
       claimed_at = COALESCE(%s, {{now}}),
       deadline_ms = min(COALESCE(%s, {{now_ms}}) + timeout_seconds * 1000, COALESCE(call_deadline_ms, {_NEVER})),
       queue_deadline_ms = call_deadline_ms"""

# The pending jobs of one (cluster, service), oldest first, as only the claim index gives them
# (PostgreSQL). Written as `cluster_id = %s AND service = %s ... ORDER BY seq`, the order is
# plain `seq`, which the primary key, jobs_cluster_recent and jobs_cluster_status give too, and
# with a deep backlog the planner walked those (its estimate: most rows are that service's pending
# jobs, spread evenly) past every job already claimed: 236 ms a claim at 200,000 jobs, half of
# them drained, against 1.5 ms on jobs_claim (bench/backlog.py, EXPLAIN ANALYZE). The pair bounds
# below say the same as the equalities, but leave (cluster_id, service, seq) as the order, which
# only jobs_claim (and jobs_service_recent, larger and filtered) can walk, whatever the statistics.
_PENDING_OF_SERVICE = (f"(cluster_id, service) >= (%s, %s) AND (cluster_id, service) <= (%s, %s)"
                       f" AND status = {_PENDING}")
_OLDEST_FIRST = "ORDER BY cluster_id, service, seq"

# One statement claims up to `limit` jobs, oldest first. SKIP LOCKED lets concurrent pollers take
# different rows instead of queueing behind each other, and the status test is repeated in the
# UPDATE so a row that changed after it was picked is never claimed twice.
_CLAIM_POSTGRES = f"""
WITH picked AS (
    SELECT seq FROM jobs
    WHERE {_PENDING_OF_SERVICE}
    {_OLDEST_FIRST} LIMIT %s
    FOR UPDATE SKIP LOCKED
)
{_CLAIM_SET_POSTGRES}
FROM picked
WHERE jobs.seq = picked.seq AND jobs.status = {_PENDING}
RETURNING jobs.seq, jobs.id, jobs.target_fn, jobs.target_args, jobs.attempt, jobs.created_at
"""

# SQLite runs one writing statement at a time, so the plain form cannot claim a row twice.
# In both, `{now}` and `{now_ms}` are the dialect's clock, used when the caller gives no time.
_CLAIM_SQLITE = f"""
{_CLAIM_SET_SQLITE}
WHERE seq IN (
    SELECT seq FROM jobs
    WHERE cluster_id = %s AND service = %s AND status = {_PENDING}
    ORDER BY seq LIMIT %s
) AND status = {_PENDING}
RETURNING seq, id, target_fn, target_args, attempt, created_at
"""

# A claim under concurrency limits (limits.py) runs in a transaction that first serialises the
# limited claims of its (cluster, service) and counts their running jobs (served by the partial
# index jobs_running_function). Its statement is the plain claim's, with the picking made
# per-function aware: `{exclude}` leaves out functions already at their limit, and `{caps}` keeps at
# most `cap` of the oldest candidates of each limited function (`n` is a candidate's rank within its
# function). The SET clause is the plain claim's (_CLAIM_SET_*).
_RUNNING_COUNTS = (f"SELECT target_fn, count(*) FROM jobs WHERE cluster_id = %s AND service = %s"
                   f" AND status = {_RUNNING} GROUP BY target_fn")
_RUNNING_IDS = f"SELECT id FROM jobs WHERE cluster_id = %s AND service = %s AND status = {_RUNNING}"
_STILL_RUNNING = f"SELECT count(*) FROM jobs WHERE cluster_id = %s AND status = {_RUNNING} AND id IN "

_CLAIM_LIMITED_POSTGRES = f"""
WITH candidates AS (
    SELECT seq, target_fn FROM jobs
    WHERE {_PENDING_OF_SERVICE}{{exclude}}
    {_OLDEST_FIRST} LIMIT %s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT seq FROM (SELECT seq, target_fn, row_number() OVER (PARTITION BY target_fn ORDER BY seq) AS n
                     FROM candidates) AS ranked
    WHERE {{caps}}
)
{_CLAIM_SET_POSTGRES}
FROM picked
WHERE jobs.seq = picked.seq AND jobs.status = {_PENDING}
RETURNING jobs.seq, jobs.id, jobs.target_fn, jobs.target_args, jobs.attempt, jobs.created_at
"""

_CLAIM_LIMITED_SQLITE = f"""
{_CLAIM_SET_SQLITE}
WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, target_fn, row_number() OVER (PARTITION BY target_fn ORDER BY seq) AS n FROM (
            SELECT seq, target_fn FROM jobs
            WHERE cluster_id = %s AND service = %s AND status = {_PENDING}{{exclude}}
            ORDER BY seq LIMIT %s
        )
    ) WHERE {{caps}}
) AND status = {_PENDING}
RETURNING seq, id, target_fn, target_args, attempt, created_at
"""


def _limited_parts(exclude: list[str], caps: dict[str, int]) -> tuple[dict, list, list]:
    """The `{exclude}` and `{caps}` SQL of a limited claim, and their parameters."""
    where = f" AND target_fn NOT IN {_in(exclude)}" if exclude else ""
    if caps:
        cap_sql = "n <= CASE target_fn " + " ".join(["WHEN %s THEN %s"] * len(caps)) + " ELSE n END"
    else:
        cap_sql = "1 = 1"
    return {"exclude": where, "caps": cap_sql}, list(exclude), [v for item in caps.items() for v in item]


# A status read gives each result's size, not the result: a caller picks the results an answer
# can carry (a bounded total) and reads those (_RESULTS). octet_length needs no de-TOASTing.
_STATUS = "SELECT id, status, octet_length(result), result_type, service, reason FROM jobs WHERE cluster_id = %s AND "
_STATUS_POSTGRES = _STATUS + "id = ANY(%s)"  # one array parameter instead of thousands of placeholders
# SQLite before 3.43 has no octet_length; results are base64 text, whose characters are bytes.
_STATUS_SQLITE = _STATUS.replace("octet_length(", "length(")
_RESULTS = "SELECT id, result FROM jobs WHERE cluster_id = %s AND "

# Maintenance: running jobs whose attempt timed out or whose machine went silent, oldest first.
# The dialect appends FOR UPDATE SKIP LOCKED on PostgreSQL (nothing on SQLite: BEGIN IMMEDIATE).
_STALLED = f"""
SELECT seq, cluster_id, id, service, attempt, attempts_allowed, machine_id, deadline_ms, call_deadline_ms FROM jobs
WHERE status = {_RUNNING} AND (deadline_ms < %s OR EXISTS (
    SELECT 1 FROM machines WHERE machines.cluster_id = jobs.cluster_id AND machines.id = jobs.machine_id
    AND machines.status = {_INACTIVE}))
ORDER BY seq LIMIT %s"""
# `status = running` is the fence of both maintenance transitions: the rows were read by
# find_stalled in the same transaction, locked FOR UPDATE on PostgreSQL (a result or claim waits,
# then sees the new status and is fenced off) and under BEGIN IMMEDIATE's write lock on SQLite,
# so no other writer can have moved them in between. The attempt needs no fence of its own.
_REQUEUE = (f"UPDATE jobs SET status = {_PENDING}, machine_id = NULL, deadline_ms = NULL, claimed_at = NULL"
            f" WHERE status = {_RUNNING} AND seq IN ")
_FAIL = f"UPDATE jobs SET status = {_FAILURE}, deadline_ms = NULL, resulted_at = %s WHERE status = {_RUNNING} AND seq IN "

# Endings the control-plane writes itself (cancel, a deadline passed): the status, `reason` and a
# packed rejection (payloads.py) per row, in one statement, fenced on the statuses it may leave; a
# row that moved on meanwhile (a result came first) is left alone and missing from the answer.
# The rows were read first (their payloads name the job), by seq: the primary key.
_END_POSTGRES = f"""
UPDATE jobs SET status = %s, reason = v.reason, result = v.result, result_type = {_REJECTION},
       resulted_at = %s::timestamp, deadline_ms = NULL
FROM (VALUES {{rows}}) AS v(seq, reason, result)
WHERE jobs.seq = v.seq AND jobs.status IN {{sources}}
RETURNING jobs.seq"""
_END_ROW = "(%s::bigint, %s, %s)"
_END_SQLITE = (f"UPDATE jobs SET status = %s, reason = %s, result = %s, result_type = {_REJECTION},"
               " resulted_at = %s, deadline_ms = NULL WHERE seq = %s AND status IN {sources}")
_REASON_MAX = 1024  # the column's length
_CANCELLABLE = f"({_SCHEDULED}, {_PENDING}, {_RUNNING})"
_WAITING = f"({_PENDING}, {_SCHEDULED})"

# Maintenance: waiting (pending or scheduled) jobs past their queue deadline, oldest deadline
# first, through the partial index jobs_waiting_deadline; locked as _STALLED is.
_EXPIRED = f"""
SELECT seq, cluster_id, id, service, created_at, queue_deadline_ms, call_deadline_ms FROM jobs
WHERE status IN {_WAITING} AND queue_deadline_ms IS NOT NULL AND queue_deadline_ms < %s
ORDER BY queue_deadline_ms LIMIT %s"""


# Retention of the rows that requests insert as a side effect (audit L5). A machine goes when it has
# been inactive longer than the retention and holds no running attempt; a service when no worker
# has polled for it that long (every poll is a machine's: none of its machines is left) and no job
# of it is left. Both come back with their next request. The outer WHERE repeats the test, so a
# row that a ping or a poll refreshed meanwhile stays (PostgreSQL rechecks it on the new version).
_PRUNE_MACHINES = f"""
DELETE FROM machines WHERE pk IN (
    SELECT pk FROM machines AS m WHERE m.status = {_INACTIVE} AND m.last_ping_at < %s
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster_id = m.cluster_id AND jobs.machine_id = m.id
                    AND jobs.status = {_RUNNING})
    LIMIT %s
) AND status = {_INACTIVE} AND last_ping_at < %s"""
_PRUNE_SERVICES = """
DELETE FROM services WHERE pk IN (
    SELECT pk FROM services AS s WHERE s.updated_at < %s AND s.json_schema IS NULL
    AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.cluster_id = s.cluster_id AND jobs.service = s.name)
    LIMIT %s
) AND updated_at < %s"""

# A worker row goes with its machine: when that machine has not polled the service for the
# retention and is inactive or gone (a live machine's rows stay; a stale one is not counted live).
# Its next poll writes it again.
_PRUNE_WORKERS = f"""
DELETE FROM workers WHERE pk IN (
    SELECT pk FROM workers AS w WHERE w.last_poll_at < %s
    AND NOT EXISTS (SELECT 1 FROM machines WHERE machines.cluster_id = w.cluster_id AND machines.id = w.machine_id
                    AND machines.status = {_ACTIVE})
    LIMIT %s
) AND last_poll_at < %s"""

# An operator's re-run: a failed or cancelled job is pending again, as a new attempt. It gets one
# more attempt than it has used if it used them all (River's JobRetry rule), else keeps what it had
# left; what described the last attempt and its end goes, and so do the deadlines (they were
# absolute times of the first run: kept, they would end the re-run at once).
_RERUN = (f"UPDATE jobs SET status = {_PENDING}, result = NULL, result_type = NULL, reason = NULL,"
          " resulted_at = NULL, machine_id = NULL, deadline_ms = NULL, claimed_at = NULL, execution_time_ms = NULL,"
          " run_at_ms = NULL, queue_deadline_ms = NULL, call_deadline_ms = NULL,"
          " attempts_allowed = CASE WHEN attempt >= attempts_allowed THEN attempt + 1 ELSE attempts_allowed END"
          f" WHERE cluster_id = %s AND id = %s AND status IN ({_RERUNNABLE})"
          " RETURNING service, attempt, attempts_allowed")


@dataclass(frozen=True)
class Backoff:
    """Retries on rejection: attempts in all (the first included), and the delays between them
    (`_backoff_delay`). Stored in the job's backoff_* columns."""

    attempts: int
    initial_ms: int
    factor: float
    max_ms: int
    jitter: float


@dataclass(frozen=True)
class RetryScheduled:
    """A stored rejection that scheduled another attempt (store_results): due at `run_at_ms`."""

    run_at_ms: int
    delay_ms: int


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
    # Call controls (issue 14): a due time (epoch ms) or a delay after the database's clock, and
    # a back-off policy for rejections. A job with none of them takes the plain, batched insert.
    run_at_ms: int | None = None
    delay_ms: int | None = None
    backoff: Backoff | None = None

    @property
    def controlled(self) -> bool:
        return self.run_at_ms is not None or self.delay_ms is not None or self.backoff is not None

    def controlled_values(self) -> tuple:
        due = (self.run_at_ms, self.delay_ms)
        plain = list(self.values())
        at = _JOB_COLUMNS.index("status")
        plain[at:at + 1] = due
        b = self.backoff
        policy = (None,) * 5 if b is None else (b.attempts, b.initial_ms, b.factor, b.max_ms, b.jitter)
        return (*plain, *due, *due, *policy)

    def values(self) -> tuple:
        return (self.cluster_id, self.job_id, self.service, self.target_fn, self.target_args, JobStatus.PENDING,
                self.cache_key, self.attempts_allowed, 0, self.timeout_seconds, Job.created_at.db_value(self.created_at),
                self.deployment_id, Job.predictive_retries.db_value(self.predictive_retries))


@dataclass(frozen=True)
class Result:
    cluster_id: str
    job_id: str
    machine_id: str
    result: str
    result_type: str
    execution_time_ms: int | None
    resulted_at: dt.datetime
    draw: float = 0.0  # uniform in [0, 1): the jitter's share of a back-off (queue.py draws it)


def _stored(row: tuple | None) -> bool | RetryScheduled:
    """False if fenced; else True, or RetryScheduled from (status, run_at_ms, now_ms)."""
    if row is None:
        return False
    status, run_at_ms, now_ms = row
    if status == JobStatus.SCHEDULED:
        return RetryScheduled(run_at_ms=int(run_at_ms), delay_ms=int(run_at_ms) - int(now_ms))
    return True


def _stored_service(row: tuple | None) -> tuple[bool | RetryScheduled, str | None]:
    """_stored of (status, run_at_ms, now_ms, service), and the job's service (None if fenced)."""
    return (False, None) if row is None else (_stored(row[:3]), row[3])


@dataclass(frozen=True)
class Ending:
    """An end the control-plane writes itself: why (`reason`) and the packed rejection (`result`)."""
    seq: int
    reason: str
    result: str


class PostgresDialect(db.PostgresDialect):
    # The database's clock, as SQL: statement_timestamp() is one value for the whole statement and
    # stable, so a comparison against it can still use an index. `now` is a naive UTC timestamp,
    # as the TIMESTAMP columns hold; `now_ms` is epoch milliseconds, as deadline_ms is.
    now = "(statement_timestamp() AT TIME ZONE 'UTC')"
    now_ms = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"

    def __init__(self) -> None:
        self._claim = _CLAIM_POSTGRES.format(now=self.now, now_ms=self.now_ms)
        self._results = _RESULTS_POSTGRES.replace("{now_ms}", self.now_ms)
        self._controlled_row = _CONTROLLED_ROW.replace("{now_ms}", self.now_ms)
        self._next_due = _NEXT_DUE.format(now_ms=self.now_ms)

    def insert_jobs(self, jobs: list[NewJob]) -> list[bool]:
        # One statement inserts them all, and its RETURNING notifies each queue topic (PostgreSQL
        # sends one notification per distinct topic and transaction); controlled jobs, if any,
        # take a second statement of their own row form (a scheduled one notifies DUE_TOPIC).
        if any(job.controlled for job in jobs):
            return _split(jobs, self._insert_plain, self._insert_controlled)
        return self._insert_plain(jobs)

    def _insert_controlled(self, jobs: list[NewJob]) -> list[bool]:
        sql = "INSERT " + _CONTROLLED_HEAD + ", ".join([self._controlled_row] * len(jobs)) + _CONTROLLED_POSTGRES
        params = [v for job in jobs for v in job.controlled_values()] + [CHANNEL, CHANNEL, DUE_TOPIC]
        inserted = {(row[0], row[1]) for row in db.execute(sql, params).fetchall()}
        return [(job.cluster_id, job.job_id) in inserted for job in jobs]

    def _insert_plain(self, jobs: list[NewJob]) -> list[bool]:
        params = [v for job in jobs for v in job.values()]
        params.append(CHANNEL)
        rows = db.execute(_INSERT_HEAD + ", ".join([_ROW] * len(jobs)) + _INSERT_POSTGRES, params).fetchall()
        inserted = {(row[0], row[1]) for row in rows}
        return [(job.cluster_id, job.job_id) in inserted for job in jobs]

    def claim_jobs(self, cluster_id: str, service: str, machine_id: str, limit: int, claimed: object,
                   now_ms: int | None) -> list[tuple]:
        return db.execute(self._claim, (cluster_id, service, cluster_id, service, limit, machine_id, claimed,
                                        now_ms)).fetchall()

    def claim_jobs_limited(self, cluster_id: str, service: str, machine_id: str, limit: int, exclude: list[str],
                           caps: dict[str, int], claimed: object, now_ms: int | None) -> list[tuple]:
        parts, excluded, capped = _limited_parts(exclude, caps)
        sql = _CLAIM_LIMITED_POSTGRES.format(now=self.now, now_ms=self.now_ms, **parts)
        return db.execute(sql, (cluster_id, service, cluster_id, service, *excluded, limit, *capped, machine_id,
                                claimed, now_ms)).fetchall()

    def store_results(self, results: list[Result]) -> list[tuple[bool | RetryScheduled, str | None]]:
        sql = self._results.replace("{rows}", ", ".join([_RESULT_ROW] * len(results)))
        params = [v for r in results for v in (r.cluster_id, r.job_id, r.machine_id, r.result, r.result_type,
                                               Job.resulted_at.db_value(r.resulted_at), r.execution_time_ms, r.draw)]
        params += [CHANNEL, CHANNEL, DUE_TOPIC]
        stored = {(row[0], row[1]): (*row[2:5], row[7]) for row in db.execute(sql, params).fetchall()}
        return [_stored_service(stored.get((r.cluster_id, r.job_id))) for r in results]

    def next_due(self) -> tuple[int | None, int]:
        return db.execute(self._next_due).fetchone()

    def end_jobs(self, target: str, sources: str, endings: list[Ending], resulted_at: object) -> set[int]:
        sql = _END_POSTGRES.format(rows=", ".join([_END_ROW] * len(endings)), sources=sources)
        params = [target, resulted_at, *(v for e in endings for v in (e.seq, e.reason[:_REASON_MAX], e.result))]
        return {row[0] for row in db.execute(sql, params).fetchall()}

    def read_statuses(self, cluster_id: str, job_ids: list[str]) -> list[tuple]:
        return db.execute(_STATUS_POSTGRES, (cluster_id, job_ids)).fetchall()

    def read_results(self, cluster_id: str, job_ids: list[str]) -> list[tuple]:
        return db.execute(_RESULTS + "id = ANY(%s)", (cluster_id, job_ids)).fetchall()


class SqliteDialect(db.SqliteDialect):
    # 'now' is UTC and one value for the whole statement; the text has the form peewee writes
    # DATETIME columns in (so comparisons as text keep their order).
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    now_ms = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

    def __init__(self) -> None:
        self._claim = _CLAIM_SQLITE.format(now=self.now, now_ms=self.now_ms)
        self._result = _RESULT_SQLITE.replace("{now_ms}", self.now_ms)
        self._controlled = _CONTROLLED_SQLITE.replace("{now_ms}", self.now_ms)
        self._next_due = _NEXT_DUE.format(now_ms=self.now_ms)

    def insert_jobs(self, jobs: list[NewJob]) -> list[bool]:
        return [(db.execute(self._controlled, job.controlled_values()) if job.controlled
                 else db.execute(_INSERT_SQLITE, job.values())).rowcount > 0 for job in jobs]

    def claim_jobs(self, cluster_id: str, service: str, machine_id: str, limit: int, claimed: object,
                   now_ms: int | None) -> list[tuple]:
        return db.execute(self._claim, (machine_id, claimed, now_ms, cluster_id, service, limit)).fetchall()

    def claim_jobs_limited(self, cluster_id: str, service: str, machine_id: str, limit: int, exclude: list[str],
                           caps: dict[str, int], claimed: object, now_ms: int | None) -> list[tuple]:
        parts, excluded, capped = _limited_parts(exclude, caps)
        sql = _CLAIM_LIMITED_SQLITE.format(now=self.now, now_ms=self.now_ms, **parts)
        return db.execute(sql, (machine_id, claimed, now_ms, cluster_id, service, *excluded, limit, *capped)).fetchall()

    def store_results(self, results: list[Result]) -> list[tuple[bool | RetryScheduled, str | None]]:
        _register_pow()
        return [_stored_service(db.execute(self._result, (
            r.result_type, r.result, r.result_type, Job.resulted_at.db_value(r.resulted_at), r.execution_time_ms,
            r.result_type, r.draw, r.cluster_id, r.job_id, r.machine_id)).fetchone()) for r in results]

    def next_due(self) -> tuple[int | None, int]:
        return db.execute(self._next_due).fetchone()

    def end_jobs(self, target: str, sources: str, endings: list[Ending], resulted_at: object) -> set[int]:
        sql = _END_SQLITE.format(sources=sources)
        return {e.seq for e in endings
                if db.execute(sql, (target, e.reason[:_REASON_MAX], e.result, resulted_at, e.seq)).rowcount > 0}

    def read_statuses(self, cluster_id: str, job_ids: list[str]) -> list[tuple]:
        placeholders = ", ".join(["%s"] * len(job_ids))
        return db.execute(_STATUS_SQLITE + f"id IN ({placeholders})", (cluster_id, *job_ids)).fetchall()

    def read_results(self, cluster_id: str, job_ids: list[str]) -> list[tuple]:
        placeholders = ", ".join(["%s"] * len(job_ids))
        return db.execute(_RESULTS + f"id IN ({placeholders})", (cluster_id, *job_ids)).fetchall()


def _split(jobs: list[NewJob], plain, controlled) -> list[bool]:
    """Plain jobs in one statement, controlled ones in another; the answers in the jobs' order."""
    answers = {}
    for kind, insert in ((False, plain), (True, controlled)):
        some = [job for job in jobs if job.controlled is kind]
        if some:
            answers[kind] = iter(insert(some))
    return [next(answers[job.controlled]) for job in jobs]


def _register_pow() -> None:
    # SQLite has power() only when built with its math functions: the back-off uses its own.
    database = db.database.obj
    if "differential_pow" not in getattr(database, "_functions", {}):
        database.register_function(lambda x, y: None if x is None or y is None else float(x) ** y,
                                   "differential_pow", 2, deterministic=True)


DIALECTS = {"postgres": PostgresDialect, "sqlite": SqliteDialect}


# --- the transitions ------------------------------------------------------------------------------

def insert_jobs(jobs: list[NewJob]) -> list[bool]:
    """-> pending (-> scheduled with a due time still ahead): insert jobs unless their (cluster,
    id) exists; per job, whether it was inserted."""
    return db.dialect.insert_jobs(jobs)


def claim_jobs(*, cluster_id: str, service: str, machine_id: str, limit: int, claimed_at: dt.datetime | None = None,
               now_ms: int | None = None) -> list[tuple]:
    """pending -> running: up to `limit` jobs, oldest first; rows (seq, id, target_fn, target_args, attempt,
    created_at) (created_at as the driver reads it: a datetime on PostgreSQL, text on SQLite).

    The deadline is the claim time (`now_ms`, default: the database's clock) + the job's timeout."""
    return db.dialect.claim_jobs(cluster_id, service, machine_id, limit, Job.claimed_at.db_value(claimed_at), now_ms)


def claim_jobs_limited(*, cluster_id: str, service: str, machine_id: str, limit: int, exclude: list[str],
                       caps: dict[str, int], claimed_at: dt.datetime | None = None,
                       now_ms: int | None = None) -> list[tuple]:
    """pending -> running under concurrency limits: claim_jobs, but never a job of a function in
    `exclude`, and at most caps[fn] jobs of each function in `caps`. Rows as claim_jobs gives.

    Only limits.py calls it, inside the transaction that holds the (cluster, service)'s limits lock
    and counted its running jobs (`running_counts`): that is what makes the caps hold."""
    return db.dialect.claim_jobs_limited(cluster_id, service, machine_id, limit, exclude, caps,
                                         Job.claimed_at.db_value(claimed_at), now_ms)


def running_counts(cluster_id: str, service: str) -> dict[str, int]:
    """How many jobs of each function of the service are running, on every machine."""
    return dict(db.execute(_RUNNING_COUNTS, (cluster_id, service)).fetchall())


def running_ids(cluster_id: str, service: str, functions: list[str] | None, limit: int) -> list[str]:
    """Ids of up to `limit` running jobs of the service (of those functions only, unless None)."""
    sql, params = _RUNNING_IDS, [cluster_id, service]
    if functions is not None:
        sql += " AND target_fn IN " + _in(functions)
        params += functions
    return [row[0] for row in db.execute(sql + " LIMIT %s", (*params, limit)).fetchall()]


def count_still_running(cluster_id: str, job_ids: list[str]) -> int:
    """How many of these jobs are still running."""
    return db.execute(_STILL_RUNNING + _in(job_ids), (cluster_id, *job_ids)).fetchone()[0]


def database_now() -> dt.datetime:
    """The database's clock, as a naive UTC datetime (as `models.utcnow()` gives): one query."""
    now_ms = db.unit_of_work(lambda: db.execute("SELECT " + db.dialect.now_ms).fetchone()[0], transaction=False)
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(now_ms))


def store_results(results: list[Result]) -> list[bool | RetryScheduled]:
    """running -> success, fenced: only the running attempt's machine can finish a job. Per result,
    whether it was stored. A batch must not name one job twice (the caller keeps them apart).

    running -> scheduled instead, for a rejection while the job's back-off policy allows another
    attempt (attempt < backoff_attempts): the answer is then a RetryScheduled (truthy: stored)."""
    return [stored for stored, _service in db.dialect.store_results(results)]


def store_results_with_services(results: list[Result]) -> list[tuple[bool | RetryScheduled, str | None]]:
    """store_results, each answer with the job's service (None when fenced): what metrics label it by."""
    return db.dialect.store_results(results)


def read_statuses(cluster_id: str, job_ids: list[str]) -> list[tuple]:
    """(id, status, result size in bytes or None, result_type, service, reason) of those ids that
    exist in this cluster."""
    return db.dialect.read_statuses(cluster_id, job_ids)


def read_results(cluster_id: str, job_ids: list[str]) -> list[tuple]:
    """(id, result) of those ids that exist in this cluster."""
    return db.dialect.read_results(cluster_id, job_ids)


@dataclass(frozen=True)
class StalledJob:
    seq: int
    cluster_id: str
    id: str
    service: str
    attempt: int
    attempts_allowed: int
    machine_id: str | None
    deadline_ms: int | None
    call_deadline_ms: int | None = None


def find_stalled(now_ms: int, limit: int) -> list[StalledJob]:
    """Running jobs past their deadline or on an inactive machine, locked for this transaction."""
    return [StalledJob(*row) for row in db.execute(_STALLED + db.dialect.skip_locked, (now_ms, limit)).fetchall()]


def requeue_stalled(seqs: list[int]) -> int:
    """running -> pending (the caller checked attempt < attempts_allowed): claimable again."""
    if not seqs:
        return 0
    return db.execute(_REQUEUE + _in(seqs), seqs).rowcount


def fail_stalled(seqs: list[int], resulted_at: dt.datetime, endings: list[Ending] = ()) -> int:
    """running -> failure: the control-plane gives up. `seqs` spent their attempts (no result, as
    the original: the published SDK sees `failure`); `endings` passed their call deadline (a
    reason and a packed rejection each)."""
    stamp = Job.resulted_at.db_value(resulted_at)
    failed = db.execute(_FAIL + _in(seqs), (stamp, *seqs)).rowcount if seqs else 0
    if endings:
        failed += len(db.dialect.end_jobs(JobStatus.FAILURE, f"({_RUNNING})", list(endings), stamp))
    return failed


def set_deadlines(cluster_id: str, job_id: str, queue_ms: int | None, call_ms: int | None) -> int:
    """A new job's deadlines, `queue_ms`/`call_ms` from now on the database's clock (not a
    transition: the create's transaction writes them right after its insert). The queue deadline
    is the earlier of the two: a call whose own deadline passed unclaimed has waited too long."""
    queue_ms = call_ms if queue_ms is None else queue_ms if call_ms is None else min(queue_ms, call_ms)
    now_ms = db.dialect.now_ms
    return db.execute(
        f"UPDATE jobs SET queue_deadline_ms = {now_ms} + %s, call_deadline_ms = {now_ms} + %s"
        " WHERE cluster_id = %s AND id = %s", (queue_ms, call_ms, cluster_id, job_id)).rowcount


def cancel_jobs(endings: list[Ending], resulted_at: dt.datetime) -> set[int]:
    """scheduled | pending | running -> cancelled, fenced on those statuses: a job that finished
    first is left alone. Returns the seqs cancelled. A running attempt's late result is then
    fenced off by store_results (status = running)."""
    if not endings:
        return set()
    return db.dialect.end_jobs(JobStatus.CANCELLED, _CANCELLABLE, endings, Job.resulted_at.db_value(resulted_at))


@dataclass(frozen=True)
class ExpiredJob:
    seq: int
    cluster_id: str
    id: str
    service: str
    created_at: dt.datetime
    queue_deadline_ms: int
    call_deadline_ms: int | None


def find_expired(now_ms: int, limit: int) -> list[ExpiredJob]:
    """Pending or scheduled jobs past their queue deadline, locked for this transaction."""
    rows = db.execute(_EXPIRED + db.dialect.skip_locked, (now_ms, limit)).fetchall()
    return [ExpiredJob(seq, cluster_id, job_id, service, Job.created_at.python_value(created), queue_ms, call_ms)
            for seq, cluster_id, job_id, service, created, queue_ms, call_ms in rows]


def expire_waiting(endings: list[Ending], resulted_at: dt.datetime) -> set[int]:
    """pending | scheduled -> failure (find_expired read and locked them): no machine claimed the
    call within its queue deadline, or its call deadline passed first. Returns the seqs failed."""
    if not endings:
        return set()
    return db.dialect.end_jobs(JobStatus.FAILURE, _WAITING, endings, Job.resulted_at.db_value(resulted_at))


@dataclass(frozen=True)
class DueJob:
    seq: int
    cluster_id: str
    id: str
    service: str


def promote_due(now_ms: int, limit: int) -> list[DueJob]:
    """scheduled -> pending: up to `limit` jobs due by `now_ms`, soonest first; the ones moved."""
    due = [DueJob(*row) for row in db.execute(_DUE_JOBS + db.dialect.skip_locked, (now_ms, limit)).fetchall()]
    if due:
        db.execute(_PROMOTE + _in(due), [j.seq for j in due])
    return due


def next_due() -> tuple[int | None, int]:
    """(the earliest run_at_ms of a scheduled job or None, the database's clock in epoch ms)."""
    row = db.dialect.next_due()
    return (None if row[0] is None else int(row[0])), int(row[1])


def prune_machines(cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` machines inactive since before `cutoff` that hold no running attempt."""
    stamp = Machine.last_ping_at.db_value(cutoff)
    return db.execute(_PRUNE_MACHINES, (stamp, limit, stamp)).rowcount


def prune_services(cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` services not polled for since before `cutoff` that have no job left and no
    schema an operator put (that one is the operator's to keep)."""
    stamp = Service.updated_at.db_value(cutoff)
    return db.execute(_PRUNE_SERVICES, (stamp, limit, stamp)).rowcount


def prune_workers(cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` worker rows not polled since before `cutoff` whose machine is not active."""
    stamp = Worker.last_poll_at.db_value(cutoff)
    return db.execute(_PRUNE_WORKERS, (stamp, limit, stamp)).rowcount


def rerun_jobs(cluster_id: str, job_id: str) -> tuple | None:
    """failure | cancelled -> pending, fenced on the status: (service, attempt, attempts_allowed)
    of the job put back, or None when it is not in a state a re-run leaves (or does not exist).
    The caller notifies the queue topic in the same transaction."""
    return db.execute(_RERUN, (cluster_id, job_id)).fetchone()


def _in(values: list) -> str:
    return f"({', '.join(['%s'] * len(values))})"
