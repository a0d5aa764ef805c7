"""Metric rollups: finished jobs folded into one row per (cluster, service, function, minute,
outcome), so the metrics API reads a table that stays small instead of scanning jobs (audit U2).

The fold (a maintenance task, so one process across replicas) reads the jobs table through the
`jobs_finished` partial index by resulted_at, from the mark (`rollup_marks`, everything finished
before it is folded in) to the database's now minus LAG_SECONDS, which covers results still
committing (their resulted_at is stamped before their transaction commits). Each chunk is one
transaction: one INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE that adds the chunk's
counts, sums and histograms to the rows already there (a minute cut by an earlier chunk), and the
mark's move, fenced on its old value. A leader that dies mid-way rolls back both, so every
finished job is counted exactly once. A job an operator re-runs and that finishes again has a new
resulted_at, so it counts again: each finish is an outcome of the call (the re-run folds the
finish it erases when the fold has not passed it yet: count_before_rerun).

What a row holds, per finished job:
- outcome: success + resolution -> resolution, success + rejection -> rejection, failure, cancelled;
- execution time: `execution_time_ms` as the worker reported it; jobs that never ran (expired,
  cancelled while waiting) have none: they count in `calls`, not in the execution histogram;
- queue time: claimed_at - created_at (claimed_at is the latest claim, so a retried job's wait
  includes its earlier attempts); a job never claimed waited until it ended: resulted_at -
  created_at. Clamped at 0 (created_at is a replica's clock, claimed_at the database's).

Both histograms count over BOUNDS_MS (one constant, below). The read (`read_rows`) takes the
rollups up to the mark plus the jobs finished after it (the tail, small by construction: the lag
and a tick), in one transaction (PostgreSQL: under a share lock of the mark row, which a fold
updates; SQLite: one snapshot), so a fold committing meanwhile is seen wholly or not at all:
nothing is missed or counted twice.

resulted_at is stamped by the replica that stored the result (the sweeper's endings by the
database's clock): a replica whose clock is behind the database's by more than the lag would
stamp results the fold has already passed, and those would be missed. NTP keeps skew to
milliseconds; the lag is 30 s.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

from .. import db
from ..models import Job
from .states import JobStatus, ResultType

# Upper bounds (ms, inclusive) of the histogram buckets, log-spaced 1-2-5 up to 30 minutes, the
# same for execution and queue time. Bucket i counts values v with BOUNDS_MS[i-1] < v <= BOUNDS_MS[i]
# (bucket 0: v <= 1); the last bucket, one past the bounds, counts v > 30 min. Stored rows hold
# counts by position: changing the bounds means emptying metric_rollups and rollup_marks.
BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 300_000, 1_800_000)
BUCKETS = len(BOUNDS_MS) + 1

# A finished job's outcome: its result type when it succeeded, else its status.
OUTCOMES = (ResultType.RESOLUTION, ResultType.REJECTION, JobStatus.FAILURE, JobStatus.CANCELLED)
MARK = "jobs"
LAG_SECONDS = 30.0  # a result is stamped before it commits; batches commit within ms, 30 s is generous
CHUNK_MS = 5 * 60_000  # at most this much resulted_at per statement
MINUTE_MS = 60_000
_EPOCH = dt.datetime(1970, 1, 1)

_TERMINAL = ", ".join(f"'{s}'" for s in (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELLED))
_OUTCOME = (f"CASE WHEN status IN ('{JobStatus.FAILURE}', '{JobStatus.CANCELLED}') THEN status"
            f" WHEN result_type = '{ResultType.REJECTION}' THEN '{ResultType.REJECTION}'"
            f" ELSE '{ResultType.RESOLUTION}' END")
_KEY = "cluster_id, service, target_fn, minute_ms, outcome"
_COLUMNS = _KEY + ", calls, exec_ms_sum, queue_ms_sum, exec_histogram, queue_histogram"


def _histogram(v: str) -> str:
    """SQL: the bucket counts of column `v` as a JSON array text, e.g. '[0,3,1,...]'."""
    lows, highs = (None, *BOUNDS_MS), (*BOUNDS_MS, None)
    tests = [" AND ".join(([f"{v} > {lo}"] if lo is not None else []) + ([f"{v} <= {hi}"] if hi is not None else []))
             for lo, hi in zip(lows, highs, strict=True)]
    parts = [f"SUM(CASE WHEN {t} THEN 1 ELSE 0 END)" for t in tests]
    return "'[' || " + " || ',' || ".join(f"CAST({p} AS TEXT)" for p in parts) + " || ']'"


@dataclass(frozen=True)
class _Sql:
    """What differs between the databases: epoch ms of a timestamp, the larger of two values, the
    merge of two JSON count arrays, and the share lock the read takes on the mark."""
    ms: str  # format with x=a TIMESTAMP column
    greatest: str
    merge: str  # format with old=, new=: JSON array texts, elementwise sums
    for_share: str
    for_update: str

    def aggregate(self, where: str) -> str:
        """SELECT the rollup rows (_COLUMNS) of the finished jobs matching `where` (on resulted_at)."""
        minute = f"({self.ms.format(x='resulted_at')} / {MINUTE_MS}) * {MINUTE_MS}"
        queue = (f"{self.greatest}(0, {self.ms.format(x='COALESCE(claimed_at, resulted_at)')}"
                 f" - {self.ms.format(x='created_at')})")
        inner = (f"SELECT cluster_id, service, target_fn, {minute} AS minute_ms, {_OUTCOME} AS outcome,"
                 f" execution_time_ms AS e, {queue} AS q"
                 f" FROM jobs WHERE status IN ({_TERMINAL}) AND {where}")
        return (f"SELECT {_KEY}, COUNT(*), COALESCE(SUM(e), 0), COALESCE(SUM(q), 0), {_histogram('e')},"
                f" {_histogram('q')} FROM ({inner}) AS t GROUP BY {_KEY}")

    def upsert(self, where: str = "resulted_at >= %s AND resulted_at < %s") -> str:
        """Fold the finished jobs matching `where` (by default: finished in [%s, %s)) into the
        rollups, adding to rows already there."""
        new, old = "excluded.", "metric_rollups."
        return (f"INSERT INTO metric_rollups ({_COLUMNS}) "
                + self.aggregate(where)
                + f" ON CONFLICT (cluster_id, service, minute_ms, target_fn, outcome) DO UPDATE SET"
                f" calls = {old}calls + {new}calls, exec_ms_sum = {old}exec_ms_sum + {new}exec_ms_sum,"
                f" queue_ms_sum = {old}queue_ms_sum + {new}queue_ms_sum,"
                f" exec_histogram = {self.merge.format(old=old + 'exec_histogram', new=new + 'exec_histogram')},"
                f" queue_histogram = {self.merge.format(old=old + 'queue_histogram', new=new + 'queue_histogram')}")


_POSTGRES = _Sql(
    ms="CAST(FLOOR(EXTRACT(EPOCH FROM {x}) * 1000) AS BIGINT)",
    greatest="GREATEST",
    merge=("(SELECT '[' || string_agg(CAST(CAST(a.n AS BIGINT) + CAST(b.n AS BIGINT) AS TEXT), ',' ORDER BY a.i)"
           " || ']' FROM json_array_elements_text(CAST({old} AS json)) WITH ORDINALITY AS a(n, i)"
           " JOIN json_array_elements_text(CAST({new} AS json)) WITH ORDINALITY AS b(n, i) ON a.i = b.i)"),
    for_share=" FOR SHARE",
    for_update=" FOR UPDATE",
)
# SQLite keeps timestamps as text ('YYYY-MM-DD HH:MM:SS[.ffffff]'): whole seconds from the first 19
# characters (rounded: exact) and the milliseconds from the digits after the point, so no sub-ms
# rounding moves a job across a minute. The fold's BEGIN IMMEDIATE (one writer at a time) stands in
# for the mark's row lock, and a read is one WAL snapshot.
_SQLITE = _Sql(
    ms=("(CAST(ROUND((julianday(substr({x}, 1, 19)) - 2440587.5) * 86400) AS INTEGER) * 1000"
        " + CAST(substr({x}, 21, 3) AS INTEGER))"),
    greatest="max",
    merge=("(SELECT '[' || group_concat(n, ',') || ']' FROM (SELECT a.value + b.value AS n"
           " FROM json_each({old}) AS a JOIN json_each({new}) AS b ON a.key = b.key ORDER BY a.key))"),
    for_share="",
    for_update="",
)
_BY_DIALECT = {"postgres": _POSTGRES, "sqlite": _SQLITE}


def _sql() -> _Sql:
    return _BY_DIALECT[db.dialect.name]


def from_ms(ms: int) -> dt.datetime:
    """Epoch ms as a naive UTC datetime (as the TIMESTAMP columns hold)."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def stamp(ms: int):
    """Epoch ms as the value a jobs TIMESTAMP column compares with (each database's own form)."""
    return Job.resulted_at.db_value(from_ms(ms))


def epoch_ms(value: dt.datetime) -> int:
    return int((value - _EPOCH) / dt.timedelta(milliseconds=1))


# --- the fold -------------------------------------------------------------------------------------

@dataclass
class Folded:
    through_ms: int  # the mark after the chunk
    rows: int  # rollup rows written


def _read_mark(lock: str) -> int | None:
    row = db.execute("SELECT through_ms FROM rollup_marks WHERE name = %s" + lock, (MARK,)).fetchone()
    return None if row is None else int(row[0])


def _lock_mark(sql: "_Sql", start_ms) -> int:
    """The mark, locked for this transaction; created at `start_ms()` when there is none yet."""
    mark = _read_mark(sql.for_update)
    if mark is None:
        db.execute("INSERT INTO rollup_marks (name, through_ms) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                   (MARK, start_ms()))
        mark = _read_mark(sql.for_update)
    return mark


def _first_finished(since_ms: int | None, until_ms: int) -> int | None:
    """Epoch ms of the earliest finished job in [since, until) (one probe of jobs_finished)."""
    where, params = "resulted_at < %s", [stamp(until_ms)]
    if since_ms is not None:
        where, params = "resulted_at >= %s AND " + where, [stamp(since_ms), *params]
    row = db.execute(f"SELECT MIN(resulted_at) FROM jobs WHERE status IN ({_TERMINAL}) AND {where}", params).fetchone()
    if row is None or row[0] is None:
        return None
    value = row[0]
    if isinstance(value, str):  # SQLite
        value = dt.datetime.fromisoformat(value)
    return epoch_ms(value)


def fold_chunk(until_ms: int, chunk_ms: int = CHUNK_MS) -> Folded | None:
    """One transaction: fold the next chunk of finished jobs before `until_ms` and move the mark;
    None when the mark is already there."""

    def tx() -> Folded | None:
        sql = _sql()

        def start() -> int:  # the first fold starts at the oldest finished job (or now, when none)
            first = _first_finished(None, until_ms)
            return until_ms if first is None else first

        mark = _lock_mark(sql, start)
        if mark >= until_ms:
            return None
        first = _first_finished(mark, until_ms)  # skip a quiet stretch in one step
        end = until_ms if first is None else min(until_ms, first + chunk_ms)
        rows = 0
        if first is not None:
            rows = db.execute(sql.upsert(), (stamp(mark), stamp(end))).rowcount
        moved = db.execute("UPDATE rollup_marks SET through_ms = %s WHERE name = %s AND through_ms = %s",
                         (end, MARK, mark)).rowcount
        if moved != 1:  # another folder moved it meanwhile: undo ours (the lock makes this unreachable)
            raise RuntimeError("the rollup mark moved during a fold")
        return Folded(end, max(rows, 0))

    return db.unit_of_work(tx)


def count_before_rerun(cluster_id: str, job_id: str) -> int:
    """In a re-run's transaction, before the job is reset: fold the finish the reset erases when
    the fold has not passed it yet (an operator re-runs a failure within seconds, inside the lag),
    else that outcome would never be counted. Under the mark's exclusive lock, as a fold chunk: a
    fold has counted it already (resulted_at < mark) or will find it reset, and a read sees it in
    the rollups or in the tail. With no mark yet, the mark starts at 0 (nothing before 1970 is
    unfolded), so reads take the rollups from now on. Returns the rollup rows written (0 or 1)."""
    sql = _sql()
    mark = _lock_mark(sql, lambda: 0)
    where = "cluster_id = %s AND id = %s AND resulted_at >= %s"
    return max(db.execute(sql.upsert(where), (cluster_id, job_id, stamp(mark))).rowcount, 0)


def fold(now: dt.datetime, *, lag_seconds: float = LAG_SECONDS, chunk_ms: int = CHUNK_MS,
         max_chunks: int = 12, budget_seconds: float = 1.0) -> dict[str, int]:
    """Fold finished jobs up to now - lag: at most `max_chunks` chunks, and no chunk begun after
    `budget_seconds` (a backlog is caught up over several runs, each keeping the tick short;
    100,000 jobs fold in about 4 s on PostgreSQL on a loaded 2-core host)."""
    until = epoch_ms(now) - int(lag_seconds * 1000)
    chunks = rows = 0
    started = time.monotonic()
    for _ in range(max_chunks):
        done = fold_chunk(until, chunk_ms)
        if done is None:
            break
        chunks += 1
        rows += done.rows
        if time.monotonic() - started > budget_seconds:
            break
    return {"rollupChunks": chunks, "rollupRows": rows}


def prune(cutoff_ms: int, batch: int = 1000, rounds: int = 20) -> int:
    """Delete rollup rows of minutes before `cutoff_ms` (index on minute_ms), in bounded batches."""
    total = 0
    for _ in range(rounds):
        n = db.unit_of_work(lambda: db.execute(
            "DELETE FROM metric_rollups WHERE pk IN (SELECT pk FROM metric_rollups WHERE minute_ms < %s LIMIT %s)",
            (cutoff_ms, batch)).rowcount)
        total += n
        if n < batch:
            break
    return total


# --- the read -------------------------------------------------------------------------------------

@dataclass
class Row:
    service: str
    function: str
    minute_ms: int
    outcome: str
    calls: int
    exec_ms_sum: int
    queue_ms_sum: int
    exec_histogram: list[int]
    queue_histogram: list[int]


def _row(values) -> Row:
    _cluster, service, fn, minute, outcome, calls, exec_sum, queue_sum, eh, qh = values
    return Row(service, fn, int(minute), outcome, int(calls), int(exec_sum), int(queue_sum),
               [int(n) for n in json.loads(eh)], [int(n) for n in json.loads(qh)])


# The distinct services of a cluster's rollups, one index probe each (a loose index scan).
_SERVICES = ("WITH RECURSIVE s(service) AS ("
             " SELECT (SELECT MIN(service) FROM metric_rollups WHERE cluster_id = %s)"
             " UNION ALL SELECT (SELECT MIN(service) FROM metric_rollups WHERE cluster_id = %s AND service > s.service)"
             " FROM s WHERE s.service IS NOT NULL)"
             " SELECT service FROM s WHERE service IS NOT NULL")


def _services(cluster_id: str) -> list[str]:
    return [r[0] for r in db.execute(_SERVICES, (cluster_id, cluster_id)).fetchall()]


def read_rows(cluster_id: str, service: str | None, start_ms: int, end_ms: int) -> list[Row]:
    """Rollup rows of minutes in [start_ms, end_ms) (both whole minutes) folded up to the mark,
    plus rows aggregated from the jobs finished since the mark (the tail), in one transaction
    holding the mark still: each finished job is in exactly one of them."""

    def tx() -> list[Row]:
        sql = _sql()
        locked = _read_mark(sql.for_share)
        # No mark yet: nothing is locked, and the first fold may commit while this reads (PostgreSQL
        # reads each statement afresh). So read no rollups then: the tail alone counts every job.
        mark = locked or 0
        # By the unique index (cluster, service, minute): each service's minutes are one range of it.
        services = [service] if service is not None else _services(cluster_id)
        rows = []
        if services and locked is not None:
            folded = db.execute(f"SELECT {_COLUMNS} FROM metric_rollups WHERE cluster_id = %s AND service IN "
                                f"({', '.join(['%s'] * len(services))}) AND minute_ms >= %s AND minute_ms < %s",
                                (cluster_id, *services, start_ms, end_ms)).fetchall()
            rows = [_row(r) for r in folded]
        if mark < end_ms:
            by_service, params = ("AND service = %s", [service]) if service is not None else ("", [])
            tail = db.execute(sql.aggregate(f"resulted_at >= %s AND resulted_at < %s AND cluster_id = %s {by_service}"),
                              (stamp(max(mark, start_ms)), stamp(end_ms), cluster_id, *params)).fetchall()
            rows += [_row(r) for r in tail]
        return rows

    def read_only():
        # Not the dialect's writing transaction (BEGIN IMMEDIATE on SQLite would hold every writer
        # back while it reads): a deferred one, which on SQLite reads one WAL snapshot throughout.
        with db.database.obj.atomic():
            return tx()

    return db.unit_of_work(read_only, transaction=False, idempotent=True)


def mark_ms() -> int | None:
    """How far the fold has come (None before its first run)."""
    return db.unit_of_work(lambda: _read_mark(""), transaction=False, idempotent=True)
