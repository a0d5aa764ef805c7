"""GET /clusters/:id/metrics (issue 15) and the rollups behind it, on SQLite and on PostgreSQL.

A known mix of finished calls (resolutions, rejections, failures by spent attempts, cancellations,
with known execution and queue times) must read the same before the fold ran (the tail only),
half-way (rollups and tail, nothing twice), after it (rollups only), while another replica folds,
and after the jobs themselves were pruned."""
from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from app import db
from app.engine import cluster_metrics, rollups
from app.engine.maintenance import Prune, RecoverStalledJobs
from app.engine.cluster_metrics import percentile
from app.engine.rollups import BOUNDS_MS, BUCKETS
from app.models import Job, MetricRollup, RollupMark, utcnow
from cp_helpers import Api

MINUTE = dt.timedelta(minutes=1)


def metrics(api, cluster_id, expect=200, **query):
    r = api.client.get(f"/clusters/{cluster_id}/metrics", headers=api.mgmt, query_string=query)
    assert r.status_code == expect, r.json
    return r.json


def set_job(job_id, **fields):
    db.unit_of_work(lambda: Job.update(**fields).where(Job.id == job_id).execute())


def at(base, job_id, *, minute, second, queue_ms):
    """Give a finished job known times: created, claimed queue_ms later (if it was), ended at
    base + minute:second."""
    ended = base + minute * MINUTE + dt.timedelta(seconds=second)
    created = ended - dt.timedelta(milliseconds=queue_ms + 1000)
    job = db.unit_of_work(lambda: Job.get(Job.id == job_id))
    if job.claimed_at is None:  # never claimed: its queue time is its wait until it ended
        created = ended - dt.timedelta(milliseconds=queue_ms)
        set_job(job_id, created_at=created, resulted_at=ended)
    else:
        set_job(job_id, created_at=created, claimed_at=created + dt.timedelta(milliseconds=queue_ms),
                resulted_at=ended)


# The mix: (function, outcome, execution ms or None, queue ms, minute, second) of each call.
MIX = [
    ("f", "resolution", 10, 3, 0, 5), ("f", "resolution", 20, 7, 0, 40), ("f", "resolution", 30, 40, 1, 10),
    ("f", "resolution", 400, 2500, 2, 50), ("f", "rejection", 5, 1, 1, 30), ("f", "rejection", 8, 1, 1, 45),
    ("g", "failure", None, 15, 0, 20), ("g", "failure", None, 15, 1, 20),
    ("g", "cancelled", None, 90_000, 2, 10),
    ("g", "resolution", 1500, 1, 2, 20),
]


def make_mix(api, cluster, base):
    """Run the mix through the engine: calls, claims, results, a stall sweep with no attempts
    left, an operator's cancel; then pin each job's times."""
    cid = cluster["id"]
    ids = []
    for fn, outcome, exec_ms, _, _, _ in MIX:
        job_id = api.call(cluster, service="svc", fn=fn)
        ids.append(job_id)
        if outcome == "cancelled":
            r = api.client.post(f"/clusters/{cid}/jobs/{job_id}/cancel", headers=api.mgmt, json={})
            assert r.status_code == 200, r.json
            continue
        claimed = api.claim(cluster, service="svc", limit=1)
        assert [j["id"] for j in claimed] == [job_id]
        if outcome == "failure":  # its one attempt timed out: the sweeper gives up on it
            set_job(job_id, attempts_allowed=1, deadline_ms=1)
            continue
        r = api.client.post(f"/jobs/{job_id}/result", headers=api.headers(cluster),
                            json={"result": "oA==", "resultType": outcome, "functionExecutionTime": exec_ms})
        assert r.status_code == 204, r.data
    assert RecoverStalledJobs().run_once(utcnow())["failed"] == 2
    for job_id, (_, _, _, queue_ms, minute, second) in zip(ids, MIX, strict=True):
        at(base, job_id, minute=minute, second=second, queue_ms=queue_ms)
    return ids


def expected_summary(rows):
    """rows: (outcome, execution ms, queue ms, minute, second) of the mix."""
    calls = {o: sum(1 for r in rows if r[0] == o) for o in rollups.OUTCOMES}
    ran = [r[1] for r in rows if r[1] is not None]
    return calls, ran, [r[2] for r in rows]


def check_function(answer, fn, rows, *, seconds):
    calls, ran, queued = expected_summary(rows)
    assert answer["summary"]["calls"] == {**calls, "total": len(rows)}
    ex, qu = answer["summary"]["executionMs"], answer["summary"]["queueMs"]
    assert ex["count"] == len(ran)
    assert ex["mean"] == (pytest.approx(sum(ran) / len(ran), abs=1e-3) if ran else None)
    assert qu["count"] == len(queued) and qu["mean"] == pytest.approx(sum(queued) / len(queued), abs=1e-3)
    assert answer["summary"]["throughputPerSecond"] == pytest.approx(len(rows) / seconds, rel=1e-3)
    for times, values in ((ex, ran), (qu, queued)):
        for name, q in cluster_metrics.PERCENTILES:
            if not values:
                assert times[name] is None
                continue
            # the true value's bucket bounds the interpolated estimate
            true = sorted(values)[max(0, -(-int(q * len(values) * 1000) // 1000) - 1)]
            i = next((k for k, b in enumerate(BOUNDS_MS) if true <= b), len(BOUNDS_MS))
            low = 0 if i == 0 else BOUNDS_MS[i - 1]
            high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
            assert low <= times[name] <= high, (fn, name, times, values)


def check_answer(answer, base, *, bucket_minutes):
    assert [(f["service"], f["function"]) for f in answer["functions"]] == [("svc", "f"), ("svc", "g")]
    seconds = (dt.datetime.fromisoformat(answer["end"][:-1]) - dt.datetime.fromisoformat(answer["start"][:-1])).total_seconds()
    for got in answer["functions"]:
        rows = [m[1:] for m in MIX if m[0] == got["function"]]
        check_function(got, got["function"], rows, seconds=seconds)
        # the timeseries: buckets with calls, oldest first, each equal to its share of the mix
        by_bucket: dict[int, list] = {}
        for row in rows:
            by_bucket.setdefault(row[3] // bucket_minutes, []).append(row)
        starts = [base + k * bucket_minutes * MINUTE for k in sorted(by_bucket)]
        assert [b["start"] for b in got["timeseries"]] == [s.isoformat() + "Z" for s in starts]
        for k, bucket in zip(sorted(by_bucket), got["timeseries"], strict=True):
            calls, ran, queued = expected_summary(by_bucket[k])
            assert bucket["calls"] == {**calls, "total": len(by_bucket[k])}
            assert bucket["executionMs"]["count"] == len(ran) and bucket["queueMs"]["count"] == len(queued)
            if ran:
                assert bucket["executionMs"]["mean"] == pytest.approx(sum(ran) / len(ran), abs=1e-3)
            assert bucket["queueMs"]["mean"] == pytest.approx(sum(queued) / len(queued), abs=1e-3)


def mark():
    return rollups.mark_ms()


@pytest.fixture
def mix(api):
    cluster = api.new_cluster()
    base = (utcnow() - dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    make_mix(api, cluster, base)
    return cluster, base


def window(base, minutes=5):
    return {"start": base.isoformat() + "Z", "end": (base + minutes * MINUTE).isoformat() + "Z"}


def fold_until(moment, **kwargs):
    """Fold everything finished before `moment` (now = moment + the lag)."""
    kwargs.setdefault("budget_seconds", 600)  # a loaded host must not stop a test's fold early
    return rollups.fold(moment + dt.timedelta(seconds=rollups.LAG_SECONDS), **kwargs)


def test_the_summary_and_timeseries_equal_the_mix_before_half_way_and_after_the_fold(api, mix):
    cluster, base = mix
    query = {**window(base), "bucketSeconds": 60}
    before = metrics(api, cluster["id"], **query)
    assert mark() is None  # no fold yet: the tail alone
    check_answer(before, base, bucket_minutes=1)

    # Half-way, with the mark inside minute 1 (rejections of f in that minute on both sides of it)
    # and in one-minute chunks: rollups up to the mark, the tail after it, nothing counted twice.
    fold_until(base + MINUTE + dt.timedelta(seconds=35), chunk_ms=60_000)
    assert mark() == rollups.epoch_ms(base + MINUTE + dt.timedelta(seconds=35))
    assert db.unit_of_work(lambda: MetricRollup.select().count()) > 0
    half = metrics(api, cluster["id"], **query)
    assert half == before

    fold_until(base + 3 * MINUTE + dt.timedelta(seconds=7), chunk_ms=60_000)  # the row of f's rejections in minute 1 is added to
    after = metrics(api, cluster["id"], **query)
    assert after == before
    stored = db.unit_of_work(lambda: sum(r.calls for r in MetricRollup.select()))
    assert stored == len(MIX)  # every job folded exactly once

    # Five-minute buckets: one bucket with the whole mix.
    five = metrics(api, cluster["id"], **window(base), bucketSeconds=300)
    check_answer(five, base, bucket_minutes=5)
    assert [f["timeseries"][0]["calls"] for f in five["functions"]] == [f["summary"]["calls"] for f in five["functions"]]


def test_a_fold_is_idempotent_and_moves_the_mark_with_its_rows(api, mix):
    cluster, base = mix
    fold_until(base + 10 * MINUTE)
    rows = db.unit_of_work(lambda: [(r.target_fn, r.minute_ms, r.outcome, r.calls, r.exec_histogram)
                                    for r in MetricRollup.select().order_by(MetricRollup.pk)])
    assert fold_until(base + 10 * MINUTE) == {"rollupChunks": 0, "rollupRows": 0}  # nothing new: nothing again
    assert db.unit_of_work(lambda: [(r.target_fn, r.minute_ms, r.outcome, r.calls, r.exec_histogram)
                                    for r in MetricRollup.select().order_by(MetricRollup.pk)]) == rows
    # A fold that fails after writing its rows leaves neither its rows nor its mark behind.
    api.call(cluster, service="svc", fn="late")
    [job] = api.claim(cluster, service="svc", limit=1)
    api.result(cluster, job["id"])
    set_job(job["id"], resulted_at=base + 11 * MINUTE)
    before_mark = mark()

    def broken_update(sql, params=()):
        if sql.startswith("UPDATE rollup_marks"):
            raise RuntimeError("the leader died here")
        return real(sql, params)

    real = db.execute
    db.execute = broken_update
    try:
        with pytest.raises(RuntimeError):
            fold_until(base + 12 * MINUTE)
    finally:
        db.execute = real
    assert mark() == before_mark
    assert db.unit_of_work(lambda: sum(r.calls for r in MetricRollup.select())) == len(MIX)
    fold_until(base + 12 * MINUTE)
    assert db.unit_of_work(lambda: sum(r.calls for r in MetricRollup.select())) == len(MIX) + 1


def test_a_backlog_is_folded_a_bounded_chunk_at_a_time(api, mix):
    cluster, base = mix
    query = {**window(base), "bucketSeconds": 60}
    before = metrics(api, cluster["id"], **query)
    first = fold_until(base + 10 * MINUTE, chunk_ms=60_000, budget_seconds=0)
    assert first["rollupChunks"] == 1  # the time budget is spent after one chunk: the next run goes on
    marks = [mark()]
    while (done := fold_until(base + 10 * MINUTE, chunk_ms=60_000, max_chunks=2))["rollupChunks"]:
        assert done["rollupChunks"] <= 2
        marks.append(mark())
        assert metrics(api, cluster["id"], **query) == before
    assert marks == sorted(marks) and len(marks) >= 3 and marks[-1] == rollups.epoch_ms(base + 10 * MINUTE)


def test_jobs_pruned_after_the_fold_still_count(api, mix):
    cluster, base = mix
    query = {**window(base), "bucketSeconds": 60}
    before = metrics(api, cluster["id"], **query)
    fold_until(base + 10 * MINUTE)
    assert Prune(retention_days=0.001).run_once(utcnow())["pruned"] >= len(MIX)
    assert db.unit_of_work(lambda: Job.select().where(Job.cluster_id == cluster["id"]).count()) == 0
    assert metrics(api, cluster["id"], **query) == before


@pytest.mark.parametrize("folds", ["after the failure", "before the failure", "never"])
def test_a_rerun_job_that_finishes_again_counts_again(api, folds):
    """Both finishes count, whether the fold passed the failure before the re-run erased it or not
    (an operator re-runs within the lag), and whether a fold had ever run."""
    cluster = api.new_cluster()
    job_id = api.call(cluster, service="svc", fn="f")
    api.claim(cluster, service="svc", limit=1)
    if folds == "before the failure":
        fold_until(utcnow() - dt.timedelta(seconds=5))  # a mark, behind the failure to come
    set_job(job_id, attempts_allowed=1, deadline_ms=1)
    failed_at = utcnow()
    assert RecoverStalledJobs().run_once(failed_at)["failed"] == 1
    if folds == "after the failure":
        fold_until(failed_at + dt.timedelta(milliseconds=1))
        assert mark() > rollups.epoch_ms(failed_at)
    r = api.client.post(f"/clusters/{cluster['id']}/jobs/{job_id}/rerun", headers=api.mgmt)
    assert r.status_code == 200, r.json
    api.claim(cluster, service="svc", limit=1)
    api.result(cluster, job_id)

    def counts():
        calls = metrics(api, cluster["id"])["functions"][0]["summary"]["calls"]
        return calls["failure"], calls["resolution"], calls["total"]

    assert counts() == (1, 1, 2)
    fold_until(utcnow() + dt.timedelta(seconds=1))  # the second finish folded too: still once each
    assert counts() == (1, 1, 2)


def test_a_mark_moved_by_another_replicas_fold_while_this_one_reads(make_app, api, mix):
    cluster, base = mix
    other = Api(make_app())  # a second replica on the same database
    query = {**window(base), "bucketSeconds": 60}
    expected = metrics(api, cluster["id"], **query)
    answers, errors = [], []
    done = threading.Event()

    def read():
        try:
            while not done.is_set():
                answers.append(metrics(other, cluster["id"], **query))
        except Exception as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        moment = base
        while moment < base + 4 * MINUTE:  # the mark moves 7 s at a time, through every minute
            moment += dt.timedelta(seconds=7)
            fold_until(moment, chunk_ms=60_000)
    finally:
        done.set()
        reader.join(timeout=60)
    assert not errors
    assert answers and all(a == expected for a in answers), len(answers)


def test_the_first_fold_committing_while_a_read_runs_is_not_counted_twice(api, mix, monkeypatch):
    """Before any fold there is no mark row for a read to lock: a first fold committing between the
    read's look at the mark and its look at the rollups must not add its rows to the tail's
    (PostgreSQL reads each statement afresh; CI caught it once under load)."""
    cluster, base = mix
    query = {**window(base), "bucketSeconds": 60}
    assert mark() is None
    expected = metrics(api, cluster["id"], **query)
    services = rollups._services

    def fold_first(cluster_id):  # runs inside the read, after its look at the mark
        folder = threading.Thread(target=fold_until, args=(base + 5 * MINUTE,), kwargs={"chunk_ms": 600_000})
        folder.start()
        folder.join(timeout=60)
        return services(cluster_id)

    monkeypatch.setattr(rollups, "_services", fold_first)
    during = metrics(api, cluster["id"], **query)
    monkeypatch.setattr(rollups, "_services", services)
    assert mark() is not None  # the fold did commit during the read
    assert during == expected
    assert metrics(api, cluster["id"], **query) == expected  # and after it, from the rollups


def test_a_fold_committing_in_the_middle_of_a_read_is_seen_wholly_or_not_at_all(make_app, api, mix):
    cluster, base = mix
    other = Api(make_app())
    query = {**window(base), "bucketSeconds": 60}
    fold_until(base + MINUTE + dt.timedelta(seconds=35))
    expected = metrics(api, cluster["id"], **query)
    real = db.execute
    folds = []

    def fold_between_the_mark_and_the_rollups(sql, params=()):
        if not folds and "FROM metric_rollups WHERE cluster_id" in sql:
            # The read has its mark: another process's fold moves it now (and may wait for the read).
            folder = threading.Thread(target=lambda: folds.append(fold_until(base + 4 * MINUTE)))
            folds.append(folder)
            folder.start()
            folder.join(timeout=2)
        return real(sql, params)

    db.execute = fold_between_the_mark_and_the_rollups
    try:
        during = metrics(other, cluster["id"], **query)
    finally:
        db.execute = real
        folds[0].join(timeout=30)
    assert folds[1]["rollupChunks"] >= 1  # the fold did move the mark, past the rest of the mix
    assert during == expected
    assert metrics(api, cluster["id"], **query) == expected


def test_cluster_isolation_and_unknown_clusters(api, mix):
    cluster, base = mix
    other = api.new_cluster()
    job_id = api.call(other, service="svc", fn="f")
    api.claim(other, service="svc", limit=1)
    api.result(other, job_id)
    set_job(job_id, resulted_at=base + MINUTE)
    for phase in ("tail", "folded"):
        answer = metrics(api, other["id"], **window(base))
        assert [(f["function"], f["summary"]["calls"]["total"]) for f in answer["functions"]] == [("f", 1)], phase
        mine = metrics(api, cluster["id"], **window(base))
        assert sum(f["summary"]["calls"]["total"] for f in mine["functions"]) == len(MIX), phase
        fold_until(base + 10 * MINUTE)
    assert metrics(api, "no-such-cluster", expect=404)["error"]["code"] == "cluster_not_found"
    # A cluster's own secret is not the management secret.
    r = api.client.get(f"/clusters/{cluster['id']}/metrics", headers={"Authorization": f"Basic {cluster['apiSecret']}"})
    assert r.status_code == 401
    assert api.client.get(f"/clusters/{cluster['id']}/metrics").status_code == 401


def test_service_filter_and_defaults(api, mix):
    cluster, base = mix
    api.call(cluster, service="other", fn="h")
    [job] = api.claim(cluster, service="other", limit=1)
    api.result(cluster, job["id"])
    everything = metrics(api, cluster["id"])  # the last hour, every service
    assert [(f["service"], f["function"]) for f in everything["functions"]] == [("other", "h"), ("svc", "f"), ("svc", "g")]
    assert everything["bucketSeconds"] == 60 and everything["serviceName"] is None
    only = metrics(api, cluster["id"], serviceName="other")
    assert [(f["service"], f["function"]) for f in only["functions"]] == [("other", "h")]
    assert only["functions"][0]["summary"]["calls"]["resolution"] == 1
    assert metrics(api, cluster["id"], serviceName="nobody")["functions"] == []
    week = metrics(api, cluster["id"], start=(base - dt.timedelta(days=7)).isoformat())
    assert week["bucketSeconds"] == 420  # the smallest whole minutes keeping 1500 buckets at most


@pytest.mark.parametrize("query, field", [
    ({"start": "yesterday"}, "start"),
    ({"end": "2026-13-01T00:00:00Z"}, "end"),
    ({"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T09:00:00Z"}, "end"),
    ({"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T10:00:00Z"}, "end"),
    ({"bucketSeconds": "90"}, "bucketSeconds"),
    ({"bucketSeconds": "0"}, "bucketSeconds"),
    ({"bucketSeconds": "ten"}, "bucketSeconds"),
    ({"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z", "bucketSeconds": "60"}, "bucketSeconds"),
    ({"serviceName": "x" * 201}, "serviceName"),
    ({"serviceName": "a\nb"}, "serviceName"),
    ({"start": "0001-01-01T00:00:00"}, "start"),
    ({"limit": "5"}, None),
])
def test_bad_input_answers_400_naming_the_field(api, query, field):
    cluster = api.new_cluster()
    body = metrics(api, cluster["id"], expect=400, **query)
    if field is not None:
        assert field in body["error"]["message"]
        assert [f["field"] for f in body["error"]["details"]["fields"]] == [field]


def test_rollups_older_than_their_retention_are_pruned(api, mix):
    from app.engine.maintenance import RollUpMetrics

    cluster, base = mix
    fold_until(base + 10 * MINUTE)
    task = RollUpMetrics(retention_days=1)
    assert task.run_once(utcnow() + dt.timedelta(hours=23))["rollupsPruned"] == 0
    task = RollUpMetrics(retention_days=1)
    assert task.run_once(utcnow() + dt.timedelta(days=1, hours=1))["rollupsPruned"] > 0
    assert db.unit_of_work(lambda: MetricRollup.select().count()) == 0
    assert db.unit_of_work(lambda: RollupMark.select().count()) == 1


def test_the_rollup_is_a_standard_task_with_its_retention(app):
    from app.engine.maintenance import Maintainer, RollUpMetrics

    tasks = Maintainer.for_settings(interval=1, machine_timeout=90, retention_days=7, metrics_retention_days=12).tasks
    [task] = [t for t in tasks if isinstance(t, RollUpMetrics)]
    assert task.retention_days == 12


# --- percentiles from histograms ------------------------------------------------------------------

def histogram(values):
    h = [0] * BUCKETS
    for v in values:
        h[next((i for i, b in enumerate(BOUNDS_MS) if v <= b), len(BOUNDS_MS))] += 1
    return h


def test_percentile_of_an_empty_histogram_is_none():
    assert percentile([0] * BUCKETS, 0.5) is None


def test_percentile_interpolates_inside_the_bucket():
    # 100 values in (50, 100]: the median is taken half-way, the p90 at 90% of the bucket.
    h = histogram([100] * 100)
    assert percentile(h, 0.5) == pytest.approx(75)
    assert percentile(h, 0.9) == pytest.approx(95)
    assert percentile(h, 1.0) == pytest.approx(100)


def test_percentile_walks_the_buckets_in_order():
    h = histogram([1] * 50 + [7] * 40 + [1500] * 10)  # buckets (0,1], (5,10], (1000,2000]
    assert percentile(h, 0.5) == pytest.approx(1)
    assert 5 < percentile(h, 0.6) <= 10
    assert percentile(h, 0.9) == pytest.approx(10)
    assert 1000 < percentile(h, 0.95) <= 2000
    assert percentile(h, 0.99) == pytest.approx(1900)


def test_percentile_in_the_open_bucket_is_its_lower_bound():
    assert percentile(histogram([10 ** 9] * 3), 0.5) == BOUNDS_MS[-1]


@pytest.mark.parametrize("values", [[3], [0, 0, 4000], list(range(0, 100_000, 997)), [60_000] * 5 + [2]])
def test_percentile_estimates_fall_in_the_true_values_bucket(values):
    h = histogram(values)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        true = ordered[max(0, -(-int(q * len(values) * 1000) // 1000) - 1)]
        i = next((k for k, b in enumerate(BOUNDS_MS) if true <= b), len(BOUNDS_MS))
        low = 0 if i == 0 else BOUNDS_MS[i - 1]
        high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
        assert low <= percentile(h, q) <= high


# --- the read does not scan the jobs table (PostgreSQL plans) ---------------------------------------

def bulk_finished(cluster_id, n, start, spread_seconds):
    """n finished jobs of one cluster, ended evenly over spread_seconds from start (one statement)."""
    db.unit_of_work(lambda: db.execute(
        "INSERT INTO jobs (cluster_id, id, service, target_fn, target_args, status, result_type, attempts_allowed,"
        " attempt, timeout_seconds, created_at, claimed_at, resulted_at, execution_time_ms, predictive_retries)"
        " SELECT %s, 'bulk-' || i, 'svc', 'f' || mod(i, 5), '', 'success', 'resolution', 1, 1, 60,"
        " %s + (i * %s) * interval '1 millisecond', %s + (i * %s + 5) * interval '1 millisecond',"
        " %s + (i * %s + 20) * interval '1 millisecond', mod(i, 300), false FROM generate_series(1, %s) AS i",
        (cluster_id, start, spread_seconds * 1000 / n, start, spread_seconds * 1000 / n, start,
         spread_seconds * 1000 / n, n)))


def test_the_read_uses_the_rollups_index_and_the_finished_index_for_the_tail(api, backend):
    if backend != "postgres":
        pytest.skip("PostgreSQL plans")
    clusters = [api.new_cluster()["id"] for _ in range(4)]
    start = utcnow().replace(second=0, microsecond=0) - dt.timedelta(hours=6)
    for cid in clusters:  # 6 hours of history in 4 clusters, folded but for the last minutes
        bulk_finished(cid, 20_000, start, 6 * 3600)
    fold_until(start + dt.timedelta(hours=5, minutes=55), chunk_ms=3_600_000, max_chunks=100)
    # and 3 days of older rollups of 10 other clusters, as a retention's worth of history looks
    db.unit_of_work(lambda: db.execute(
        "INSERT INTO metric_rollups (cluster_id, service, target_fn, minute_ms, outcome, calls, exec_ms_sum,"
        " queue_ms_sum, exec_histogram, queue_histogram) SELECT 'old-' || mod(i, 10), 'svc', 'f', %s - i / 10 * 60000,"
        " 'resolution', 1, 1, 1, %s, %s FROM generate_series(1, 43200) AS i",
        (rollups.epoch_ms(start), json.dumps([1] + [0] * (BUCKETS - 1)), json.dumps([1] + [0] * (BUCKETS - 1)))))
    db.unit_of_work(lambda: [db.execute(f"ANALYZE {t}") for t in ("jobs", "metric_rollups", "rollup_marks")],
                    transaction=False)
    seen = []
    real = db.execute

    def record(sql, params=()):
        seen.append((sql, params))
        return real(sql, params)

    db.execute = record
    try:
        answer = metrics(api, clusters[0], start=(start + dt.timedelta(hours=5)).isoformat())
    finally:
        db.execute = real
    assert sum(f["summary"]["calls"]["total"] for f in answer["functions"]) == pytest.approx(20_000 / 6, abs=2)
    reads = [(sql, params) for sql, params in seen if sql.lstrip().startswith("SELECT")]
    plans = db.unit_of_work(lambda: ["\n".join(r[0] for r in real("EXPLAIN " + sql, params).fetchall())
                                     for sql, params in reads])
    rollup_plan = next(p for (sql, _), p in zip(reads, plans, strict=True) if "FROM metric_rollups" in sql)
    tail_plan = next(p for (sql, _), p in zip(reads, plans, strict=True) if "FROM jobs" in sql)
    # by either of its indexes: (cluster, service, minute) or, for a recent range, minute (the
    # planner's choice): what it reads grows with the range and the functions, not with jobs
    assert "Index Scan using metric_rollups_" in rollup_plan, rollup_plan
    assert not any("Seq Scan on jobs" in p or "Seq Scan on metric_rollups" in p for p in plans), plans
    assert "jobs_finished" in tail_plan and "Seq Scan on jobs" not in tail_plan, tail_plan
