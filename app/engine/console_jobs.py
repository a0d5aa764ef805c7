"""Reads the console's job pages need that job admin (admin.py) has no call for.

The explorer's search by id asks only whether a job exists in a cluster, so it reads one indexed
row (cluster_id, id) instead of the job in full with its activity; its filter form suggests the
services and functions workers registered.
"""
from __future__ import annotations

import json

from .. import db
from ..models import Job, Service
from . import clusters


def job_exists(cluster_id: str, job_id: str) -> bool:
    """Whether the cluster has a job with this id (NotFound if the cluster does not exist)."""

    def read() -> bool:
        clusters.get_cluster(cluster_id)
        return Job.select(Job.seq).where((Job.cluster_id == cluster_id) & (Job.id == job_id)).exists()

    return db.unit_of_work(read, transaction=False, idempotent=True)


MAX_SERVICES = 200  # the explorer suggests at most this many services (a cluster rarely has more)


def known_functions(cluster_id: str, limit: int = MAX_SERVICES) -> dict[str, list[str]]:
    """{service: [function, ...]} of the services workers registered (by name, at most `limit`),
    for the explorer's suggestions; a service known only by its schema lists no functions."""

    def read():
        clusters.get_cluster(cluster_id)
        return list(Service.select(Service.name, Service.definition).where(Service.cluster_id == cluster_id)
                    .order_by(Service.name).limit(limit).tuples())

    out: dict[str, list[str]] = {}
    for name, definition in db.unit_of_work(read, transaction=False, idempotent=True):
        try:
            functions = (json.loads(definition).get("functions") or []) if definition else []
            out[name] = sorted({f["name"] for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)})
        except (ValueError, AttributeError, TypeError):
            out[name] = []
    return out
