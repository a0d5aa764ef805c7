"""Monitoring: throughput by outcome, execution and queue time percentiles, and outcomes over a
range, for the cluster or one service, drawn on the server as SVG (charts.py) from the metric
rollups (engine/console_overview.monitoring), each chart with its numbers as a table beside it."""
from __future__ import annotations

import datetime as dt

from flask import render_template, request

from ..engine import clusters, console_overview
from ..engine.rollups import MINUTE_MS, epoch_ms
from ..models import utcnow
from . import bp, charts
from .overview import settings
from .present import duration

# range -> (span, bucket): a few dozen to a hundred buckets each.
RANGES = {"1h": (60 * MINUTE_MS, MINUTE_MS), "6h": (360 * MINUTE_MS, 5 * MINUTE_MS),
          "24h": (1440 * MINUTE_MS, 15 * MINUTE_MS), "7d": (7 * 1440 * MINUTE_MS, 120 * MINUTE_MS)}
DEFAULT_RANGE = "1h"
OUTCOME_LABELS = (("resolution", "succeeded"), ("rejection", "rejected (the function raised)"),
                  ("failure", "failed (no attempt left)"), ("cancelled", "cancelled"))
PERCENTILE_NAMES = tuple(name for name, _ in console_overview.PERCENTILES)


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _charts(data: dict) -> list[dict]:
    start, end, step = data["start"], data["end"], data["bucketMs"]
    by_start = {b["start"]: b for b in data["buckets"]}
    grid = list(range(start, end, step))
    throughput = [charts.Series(label, [(t, by_start[t]["calls"][key] if t in by_start else 0) for t in grid],
                                f"o-{key}") for key, label in OUTCOME_LABELS]

    def percentiles(kind: str) -> list[charts.Series]:
        return [charts.Series(name, [(t + step / 2, by_start[t][kind][name] if t in by_start else None)
                                     for t in grid], f"k{i}") for i, name in enumerate(PERCENTILE_NAMES)]

    def share(keys: tuple[str, ...], t: int) -> float | None:
        bucket = by_start.get(t)
        if not bucket or not bucket["calls"]["total"]:
            return None
        return 100 * sum(bucket["calls"][k] for k in keys) / bucket["calls"]["total"]

    outcomes = [charts.Series("succeeded", [(t + step / 2, share(("resolution",), t)) for t in grid], "o-resolution"),
                charts.Series("rejected or failed", [(t + step / 2, share(("rejection", "failure"), t)) for t in grid],
                              "o-failure"),
                charts.Series("cancelled", [(t + step / 2, share(("cancelled",), t)) for t in grid], "o-cancelled")]
    per = f"per {duration(step)}"
    return [
        {"id": "throughput", "title": f"Throughput: finished calls {per}, by outcome",
         "svg": charts.bars("throughput", f"Finished calls {per}, by outcome", throughput, start, end, step)},
        {"id": "execution", "title": "Execution time (p50, p95, p99)",
         "svg": charts.lines("execution", "Execution time percentiles", percentiles("executionMs"), start, end,
                             y_format=duration)},
        {"id": "queue", "title": "Queue time (p50, p95, p99): from the call to its claim",
         "svg": charts.lines("queue", "Queue time percentiles", percentiles("queueMs"), start, end,
                             y_format=duration)},
        {"id": "outcomes", "title": "Outcomes: share of the finished calls",
         "svg": charts.lines("outcomes", "Share of finished calls by outcome, percent", outcomes, start, end,
                             y_format=_percent)},
    ]


def _refuse(cluster: dict, services: list[str], field: str, message: str):
    return render_template("console/monitoring.html", cluster=cluster, services=services, ranges=RANGES,
                           chosen_range=request.args.get("range", ""), chosen_service=request.args.get("service", ""),
                           error={"field": field, "message": message}), 400


@bp.route("/clusters/<cluster_id>/monitoring", endpoint="monitoring")
def monitoring(cluster_id: str):
    cluster = clusters.describe_cluster(cluster_id)
    listed = console_overview.services(cluster_id, settings().machine_timeout_seconds)["services"]
    services = [s["name"] for s in listed]
    chosen = request.args.get("range") or DEFAULT_RANGE
    if chosen not in RANGES:
        return _refuse(cluster, services, "range", f"must be one of {', '.join(RANGES)}")
    service = request.args.get("service") or None
    if service is not None:
        clusters.get_service_schema(cluster_id, service)  # NotFound (404) for a service never seen
    span, step = RANGES[chosen]
    now_ms = epoch_ms(utcnow())
    end = now_ms // MINUTE_MS * MINUTE_MS + MINUTE_MS
    data = console_overview.monitoring(cluster_id, service, end - span, end, step)
    start_dt = dt.datetime.fromtimestamp((end - span) / 1000, dt.timezone.utc)
    end_dt = dt.datetime.fromtimestamp(end / 1000, dt.timezone.utc)
    return render_template("console/monitoring.html", cluster=cluster, services=services, ranges=RANGES,
                           chosen_range=chosen, chosen_service=service or "", data=data, charts=_charts(data),
                           outcomes=OUTCOME_LABELS, percentiles=PERCENTILE_NAMES, start=start_dt, end=end_dt,
                           step=duration(step))
