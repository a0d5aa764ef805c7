"""The metrics answer: per function, calls by outcome, execution and queue time, throughput, as a
summary over the range and as a timeseries of buckets, computed from rollup rows (rollups.py).

Percentiles come from the histograms (rollups.BOUNDS_MS), interpolated linearly inside the
bucket the rank falls in (a bucket's values are taken as spread evenly between its bounds); a
rank in the last, open bucket answers that bucket's lower bound (30 min). Means are exact (sums
over counts). Execution time counts only jobs that ran (with an execution time); queue time counts
every finished job. The range is whole minutes (the rollups' grain): start rounds down and end up
to a minute. Buckets start at `start`, `bucketSeconds` apart; buckets without calls are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import db
from . import clusters, rollups
from .rollups import BOUNDS_MS, BUCKETS, MINUTE_MS, OUTCOMES

MAX_BUCKETS = 1500
PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def percentile(histogram: list[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of the values a histogram over BOUNDS_MS counts, interpolated
    inside its bucket; None for an empty histogram."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(histogram):
        if n > 0 and below + n >= rank:
            if i >= len(BOUNDS_MS):  # the open bucket: all we know is its lower bound
                return float(BOUNDS_MS[-1])
            low = 0 if i == 0 else BOUNDS_MS[i - 1]
            return low + (BOUNDS_MS[i] - low) * (rank - below) / n
        below += n
    return float(BOUNDS_MS[-1])


@dataclass
class _Totals:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    exec_ms_sum: int = 0
    queue_ms_sum: int = 0
    exec_histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    queue_histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, row: rollups.Row) -> None:
        self.calls[row.outcome] = self.calls.get(row.outcome, 0) + row.calls
        self.exec_ms_sum += row.exec_ms_sum
        self.queue_ms_sum += row.queue_ms_sum
        for i, n in enumerate(row.exec_histogram[:BUCKETS]):
            self.exec_histogram[i] += n
        for i, n in enumerate(row.queue_histogram[:BUCKETS]):
            self.queue_histogram[i] += n

    def answer(self, seconds: float) -> dict:
        total = sum(self.calls.values())
        return {"calls": {**self.calls, "total": total},
                "throughputPerSecond": round(total / seconds, 6) if seconds > 0 else None,
                "executionMs": _times(self.exec_histogram, self.exec_ms_sum),
                "queueMs": _times(self.queue_histogram, self.queue_ms_sum)}


def _times(histogram: list[int], total_ms: int) -> dict:
    count = sum(histogram)
    out: dict = {"count": count, "mean": round(total_ms / count, 3) if count else None}
    for name, q in PERCENTILES:
        value = percentile(histogram, q)
        out[name] = None if value is None else round(value, 3)
    return out


def _iso(ms: int) -> str:
    return clusters.iso(rollups.from_ms(ms))


def whole_minutes(start_ms: int, end_ms: int) -> tuple[int, int]:
    """The range rounded out to whole minutes."""
    return start_ms // MINUTE_MS * MINUTE_MS, -(-end_ms // MINUTE_MS) * MINUTE_MS


def default_bucket_seconds(start_ms: int, end_ms: int) -> int:
    """The smallest whole number of minutes that keeps the range within MAX_BUCKETS buckets."""
    minutes = max(1, (end_ms - start_ms) // MINUTE_MS)
    return 60 * max(1, -(-minutes // MAX_BUCKETS))


def metrics(cluster_id: str, service: str | None, start_ms: int, end_ms: int, bucket_seconds: int,
            now_ms: int) -> dict:
    """The answer of GET /clusters/:id/metrics for whole-minute [start_ms, end_ms)."""
    db.unit_of_work(lambda: clusters.get_cluster(cluster_id), transaction=False, idempotent=True)
    rows = rollups.read_rows(cluster_id, service, start_ms, end_ms)
    bucket_ms = bucket_seconds * 1000
    summaries: dict[tuple[str, str], _Totals] = {}
    series: dict[tuple[str, str], dict[int, _Totals]] = {}
    for row in rows:
        key = (row.service, row.function)
        summaries.setdefault(key, _Totals()).add(row)
        bucket = start_ms + (row.minute_ms - start_ms) // bucket_ms * bucket_ms
        series.setdefault(key, {}).setdefault(bucket, _Totals()).add(row)

    def seconds(begin: int, finish: int) -> float:
        return (min(finish, end_ms, max(now_ms, begin)) - begin) / 1000

    functions = []
    for key in sorted(summaries):
        buckets = series[key]
        functions.append({
            "service": key[0], "function": key[1],
            "summary": summaries[key].answer(seconds(start_ms, end_ms)),
            "timeseries": [{"start": _iso(b), **buckets[b].answer(seconds(b, b + bucket_ms))} for b in sorted(buckets)],
        })
    return {"clusterId": cluster_id, "serviceName": service, "start": _iso(start_ms), "end": _iso(end_ms),
            "bucketSeconds": bucket_seconds, "histogramBoundsMs": list(BOUNDS_MS), "functions": functions}
