"""GET /clusters/:id/metrics: per function, calls by outcome, execution and queue time and
throughput over a range, as a summary and a timeseries (engine/cluster_metrics.py), read from the
rollups plus the few jobs finished since the last fold, never from a scan of the jobs table."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, jsonify

from ..engine import cluster_metrics
from ..engine.rollups import epoch_ms
from ..errors import ValidationFailed
from ..models import utcnow
from . import management, schemas as s
from .routing import route

bp = Blueprint("cluster_metrics", __name__)

_DEFAULT_RANGE = dt.timedelta(hours=1)


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"invalid query: {name} {message}", {"fields": [{"field": name, "message": message}]})


def _epoch_time(query: dict, name: str) -> dt.datetime | None:
    """An ISO 8601 query time as naive UTC (management's parser, the one home of that rule), within
    the range epoch milliseconds hold; 400 naming the field."""
    value = management.query_time(query, name)
    if value is not None and not dt.datetime(1970, 1, 1) <= value < dt.datetime(9999, 1, 1):
        raise _invalid(name, "must be after 1970 and before 9999")
    return value


@route(bp, "GET", "/clusters/<cluster_id>/metrics",
       summary="Per function: calls by outcome, execution and queue time, throughput (summary and timeseries)",
       auth_kind="management", tag="management", query=s.CLUSTER_METRICS_QUERY,
       responses={200: s.CLUSTER_METRICS, 400: s.ERROR, 401: s.ERROR, 404: s.ERROR})
def metrics(cluster_id, query):
    now = utcnow()
    end = _epoch_time(query, "end") or now
    start = _epoch_time(query, "start") or end - _DEFAULT_RANGE
    if end <= start:
        raise _invalid("end", "must be after start")
    start_ms, end_ms = cluster_metrics.whole_minutes(epoch_ms(start), epoch_ms(end))
    if query.get("bucketSeconds", 60) % 60:  # the rollups' grain (validation.py has no multipleOf)
        raise _invalid("bucketSeconds", "must be a multiple of 60")
    bucket = query.get("bucketSeconds") or cluster_metrics.default_bucket_seconds(start_ms, end_ms)
    buckets = -(-(end_ms - start_ms) // (bucket * 1000))
    if buckets > cluster_metrics.MAX_BUCKETS:
        least = cluster_metrics.default_bucket_seconds(start_ms, end_ms)
        raise _invalid("bucketSeconds", f"makes {buckets} buckets in this range, more than the "
                                        f"{cluster_metrics.MAX_BUCKETS} allowed: use {least} or more")
    return jsonify(cluster_metrics.metrics(cluster_id, query.get("serviceName"), start_ms, end_ms, bucket,
                                           epoch_ms(now))), 200
