"""One tenant cannot lose another's activity events (audit M2), on both databases.

The activity log is written in shared batches from a shared buffer: a bad row of cluster A in B's
batch, or A's flood of `/metrics`, once cost B its events. Each test holds the writer back while
both clusters record, so that their events land in one flush, as they do under load.
"""
from __future__ import annotations

import contextlib
import logging

from app.observability.events import events


@contextlib.contextmanager
def one_flush():
    """Everything recorded inside goes out in one flush (the background writer waits meanwhile)."""
    with events._flush_lock:
        yield
    events.flush()


def created_by(api, cluster) -> int:
    return sum(1 for e in api.activity(cluster) if e["type"] == "jobCreated")


def test_poisoned_metrics_and_rows_lose_no_other_clusters_events(api):
    a, b = api.new_cluster(), api.new_cluster()
    with one_flush():
        for i in range(20):
            api.call(b)
            if i % 4 == 0:  # A's poison, among B's events, through every way the audit found
                r = api.client.post("/metrics", headers=api.headers(a), json={"events": [
                    {"type": "functionInvocation", "tags": {"service": "s" * 300}}]})
                assert r.status_code == 400
                r = api.client.post("/jobs/" + "j" * 300 + "/result", headers=api.headers(a),
                                    json={"result": "oA==", "resultType": "resolution"})
                assert r.status_code == 404
                r = api.client.post("/jobs-request", headers={**api.headers(a), "x-deployment-id": "d" * 300},
                                    json={"service": "svc", "ttl": 0})
                assert r.status_code == 400
        # What gets past the API anyway: a field longer than its column is cut to it, and a row
        # that no database takes (no cluster) loses only itself.
        events.record(a["id"], "jobResulted", job_id="j" * 300, service="s" * 300, machine_id="m" * 300,
                      deployment_id="d" * 300)
        events.record(None, "jobCreated", job_id="orphan")
    assert created_by(api, b) == 20
    [cut] = [e for e in api.activity(a) if e["type"] == "jobResulted"]
    assert (cut["jobId"], cut["service"], cut["machineId"], cut["deploymentId"]) == (
        "j" * 200, "s" * 200, "m" * 200, "d" * 200)


def test_a_metrics_flood_drops_only_the_flooding_clusters_events(make_app, caplog):
    from cp_helpers import Api

    api = Api(make_app(event_buffer_rows=3000, event_buffer_cluster_rows=1000))
    a, b = api.new_cluster(), api.new_cluster()
    flood = {"events": [{"type": "functionInvocation", "tags": {"service": "svc"}, "intFields": {"n": 1}}] * 2500}
    dropped_before = events.dropped
    with caplog.at_level(logging.WARNING, logger="app.observability.events"), one_flush():
        for i in range(30):
            if i % 10 == 0:  # 7,500 events from A: more than the whole buffer holds
                r = api.client.post("/metrics", headers=api.headers(a), json=flood)
                assert r.status_code == 204
            api.call(b)
    assert created_by(api, b) == 30
    invocations = sum(1 for e in api.activity(a) if e["type"] == "functionInvocation")
    assert invocations == 1000  # A's share of the buffer
    assert events.dropped - dropped_before == 7500 - invocations
    lines = [r.getMessage() for r in caplog.records if "activity events of cluster" in r.getMessage()]
    assert len(lines) == 1 and a["id"] in lines[0], lines  # logged, naming A, and not 6,500 times


def test_drops_are_logged_once_a_minute_per_cluster_with_their_count(app, caplog):
    from app.observability.events import EventLog

    now = [1000.0]
    log = EventLog(max_rows=100, cluster_rows=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="app.observability.events"):
        assert [log.record("cluster-a", "x") for _ in range(5)] == [True, True, False, False, False]
        assert log.record("cluster-b", "x")  # B still has room
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "cluster-a (1 since" in lines[0], lines
        log.flush()
        assert len(caplog.records) == 1  # the two later drops wait for the minute to pass
        now[0] += 61
        log.flush()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2 and "cluster-a (2 since" in lines[1], lines
    assert log.dropped == 3
