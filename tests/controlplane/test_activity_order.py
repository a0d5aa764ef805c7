"""The activity log lists events in the order they happened, not the order their rows were written,
on both databases.

Each server process buffers its events for up to half a second (observability/events.py), so a
job's jobCreated, buffered by the process that created it, was often written after the
jobCancelled that another process wrote before answering: the job's activity then said it was
cancelled before it was created (the console test of cancel and re-run failed on it in CI; against
a real two-worker server, 27 of 40 create-then-cancel pairs came out in that order).
"""
from __future__ import annotations

import datetime as dt

from app import db
from app.models import Event, utcnow
from app.observability.events import EventLog


def activity(api, cluster, **query) -> dict:
    r = api.client.get(f"/clusters/{cluster['id']}/activity", headers=api.mgmt, query_string=query)
    assert r.status_code == 200, r.json
    return r.json


def written_order(job_id: str) -> list[str]:
    return db.unit_of_work(lambda: [e.type for e in Event.select().where(Event.job_id == job_id).order_by(Event.seq)])


def test_a_jobs_events_written_late_by_another_process_still_come_in_the_order_they_happened(api):
    c = api.new_cluster()
    creator, canceller = EventLog(interval=3600), EventLog(interval=3600)  # two processes' buffers
    try:
        creator.record(c["id"], "jobCreated", job_id="job-1")
        canceller.record(c["id"], "jobCancelled", job_id="job-1")
        canceller.flush()  # the canceller writes before answering; the creator's buffer waits
        creator.flush()
    finally:
        creator.close()
        canceller.close()
    assert written_order("job-1") == ["jobCancelled", "jobCreated"]  # the race, as it was
    page = activity(api, c, jobId="job-1")
    assert [e["type"] for e in page["events"]] == ["jobCancelled", "jobCreated"]  # newest first
    assert page["events"][0]["timestamp"] >= page["events"][1]["timestamp"]


def test_pages_follow_the_order_things_happened_through_late_writes_and_equal_times(api):
    c = api.new_cluster()
    t0 = utcnow().replace(microsecond=0)
    # (type, seconds after t0), in the order the rows are written; e2 and e2b happened at once.
    written = [("e3", 3), ("e1", 1), ("e2", 2), ("e2b", 2), ("e0", 0), ("e4", 4)]
    db.unit_of_work(lambda: Event.insert_many(
        [{"cluster_id": c["id"], "type": kind, "created_at": t0 + dt.timedelta(seconds=s)} for kind, s in written]
    ).execute())
    seen, pages, cursor = [], [], None
    for _ in range(len(written)):  # bounded: one event a page at worst
        page = activity(api, c, limit=2, **({"before": cursor} if cursor else {}))
        pages.append([e["type"] for e in page["events"]])
        seen += pages[-1]
        cursor = page["next"]
        if cursor is None:
            break
    # Equal times: the later written first, as the log's newest-first order has always had it.
    assert pages == [["e4", "e3"], ["e2b", "e2"], ["e1", "e0"]]
    assert seen == [e["type"] for e in activity(api, c, limit=100)["events"]]


def test_a_cursor_whose_event_was_pruned_goes_on_from_its_place_in_the_log(api):
    c = api.new_cluster()
    t0 = utcnow()
    seqs = db.unit_of_work(lambda: [
        Event.insert(cluster_id=c["id"], type=f"e{i}", created_at=t0 + dt.timedelta(seconds=i)).execute()
        for i in range(4)])
    first = activity(api, c, limit=2)
    assert [e["type"] for e in first["events"]] == ["e3", "e2"] and first["next"] == seqs[2]
    db.unit_of_work(lambda: Event.delete().where(Event.seq == seqs[2]).execute())  # retention took it
    rest = activity(api, c, limit=2, before=first["next"])
    assert [e["type"] for e in rest["events"]] == ["e1", "e0"] and rest["next"] is None
