"""Time and statements of the metric rollup's fold over N finished jobs, and of a metrics read.

    .venv/bin/python bench/rollup_fold.py [postgres|sqlite] [--jobs 100000]

Inserts N finished jobs spread over an hour (10 clusters, 3 services, 5 functions, 5% failures)
into a throwaway database (PostgreSQL: the test server of tests/support), folds them with no time
budget, then folds again (nothing new) and reads one cluster's two hours.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app import create_app, db, settings  # noqa: E402
from app.engine import rollups  # noqa: E402
from app.models import utcnow  # noqa: E402

_COLUMNS = ("cluster_id, id, service, target_fn, target_args, status, result_type, attempts_allowed, attempt,"
            " timeout_seconds, created_at, claimed_at, resulted_at, execution_time_ms, predictive_retries")


def insert(n: int, start: dt.datetime) -> None:
    step = 3_600_000 / n
    rows = []
    for i in range(1, n + 1):
        t = start + dt.timedelta(milliseconds=i * step)
        rows.append((f"c{i % 10}", f"j{i}", f"s{i % 3}", f"f{i % 5}", "", "failure" if i % 20 == 0 else "success",
                     "resolution", 1, 1, 60, t, t + dt.timedelta(milliseconds=5), t + dt.timedelta(milliseconds=20),
                     i % 300, False))
    sql = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join(['%s'] * 15)})"
    for k in range(0, n, 5000):
        db.unit_of_work(lambda k=k: [db.execute(sql, row) for row in rows[k:k + 5000]])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=("postgres", "sqlite"))
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    env = {"MANAGEMENT_SECRET": settings.MANAGEMENT_SECRET_PREFIX + "b" * 40,
           "DIFFERENTIAL_DATA_DIR": tempfile.mkdtemp(), "SWEEPER_ENABLED": "false"}
    if args.backend == "postgres":
        from support import postgres

        postgres.ensure_server()
        env["DATABASE_URL"] = postgres.create_database("bench")
    app = create_app(settings.load(env))
    start = utcnow().replace(second=0, microsecond=0) - dt.timedelta(hours=1, minutes=5)
    insert(args.jobs, start)
    if args.backend == "postgres":
        db.unit_of_work(lambda: db.execute("ANALYZE jobs"), transaction=False)

    count = [0]
    real = db.execute

    def counted(sql, params=()):
        count[0] += 1
        return real(sql, params)

    db.execute = counted
    now = start + dt.timedelta(hours=1, minutes=2)
    for label, run in (("fold", lambda: rollups.fold(now, max_chunks=1000, budget_seconds=1e9)),
                       ("fold again", lambda: rollups.fold(now)),
                       ("read c1, 2 h", lambda: len(rollups.read_rows(
                           "c1", None, rollups.epoch_ms(start), rollups.epoch_ms(start) + 7_200_000)))):
        count[0] = 0
        t0 = time.perf_counter()
        result = run()
        print(f"{args.backend} {label}: {result} in {time.perf_counter() - t0:.3f} s, {count[0]} statements")
    db.execute = real
    app.extensions["differential"].close()


if __name__ == "__main__":
    main()
