"""Schedules: the management routes, bad input on every field, isolation between clusters, and
firing driven by an injected `now` (FireSchedules.run_once), on both databases."""
from __future__ import annotations

import base64
import datetime as dt

import pytest

from app import db
from app.engine import schedules
from app.engine.maintenance import FireSchedules, Maintainer
from app.engine.states import EventType, JobStatus
from app.models import Job, Schedule
from cp_helpers import Api
from differential.serialize import pack_args

ARGS = [1, "two", {"three": [3.5, None, True]}, [], {}]


def spec(**overrides) -> dict:
    body = {"name": "nightly", "service": "svc", "function": "fn", "arguments": ARGS, "cron": "* * * * *",
            "timezone": "Europe/Paris"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def path(cluster, name=None) -> str:
    base = f"/clusters/{cluster['id']}/schedules"
    return base if name is None else f"{base}/{name}"


def create(api: Api, cluster, **overrides):
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(**overrides))
    assert r.status_code == 201, r.json
    return r.json


def row(cluster, name="nightly") -> Schedule:
    return db.unit_of_work(lambda: Schedule.get((Schedule.cluster_id == cluster["id"]) & (Schedule.name == name)))


def jobs_of(cluster) -> list[Job]:
    return db.unit_of_work(lambda: list(Job.select().where(Job.cluster_id == cluster["id"]).order_by(Job.id)))


def ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)


def set_due(cluster, due_ms: int, name="nightly") -> None:
    db.unit_of_work(lambda: Schedule.update(next_fire_ms=due_ms).where(
        (Schedule.cluster_id == cluster["id"]) & (Schedule.name == name)).execute())


def tick_id(name: str, ms: int) -> str:
    return schedules.execution_id(name, ms)


MINUTE = 60_000


# --- the routes ----------------------------------------------------------------------------------

def test_create_show_list_pause_resume_delete(api):
    cluster = api.new_cluster()
    made = create(api, cluster)
    assert made["name"] == "nightly" and made["function"] == "fn" and made["arguments"] == ARGS
    assert made["catchUp"] == "latest" and made["paused"] is False and made["lastFiredAt"] is None
    assert made["nextFireAt"].endswith(":00.000Z")  # the next minute, in UTC

    shown = api.client.get(path(cluster, "nightly"), headers=api.mgmt)
    assert shown.status_code == 200 and shown.json == made

    create(api, cluster, name="b-other")
    listed = api.client.get(path(cluster), headers=api.mgmt).json
    assert [s["name"] for s in listed["schedules"]] == ["b-other", "nightly"] and listed["next"] is None
    page = api.client.get(path(cluster) + "?limit=1", headers=api.mgmt).json
    assert [s["name"] for s in page["schedules"]] == ["b-other"] and page["next"] == "b-other"
    rest = api.client.get(path(cluster) + f"?limit=1&after={page['next']}", headers=api.mgmt).json
    assert [s["name"] for s in rest["schedules"]] == ["nightly"] and rest["next"] is None

    paused = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"paused": True})
    assert paused.status_code == 200 and paused.json["paused"] is True and paused.json["nextFireAt"] is None
    resumed = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"paused": False})
    assert resumed.status_code == 200 and resumed.json["paused"] is False and resumed.json["nextFireAt"]

    gone = api.client.delete(path(cluster, "nightly"), headers=api.mgmt)
    assert gone.status_code == 204
    assert api.client.get(path(cluster, "nightly"), headers=api.mgmt).status_code == 404
    assert api.client.delete(path(cluster, "nightly"), headers=api.mgmt).status_code == 404


def test_a_taken_name_is_409_and_put_creates_or_replaces(api):
    cluster = api.new_cluster()
    create(api, cluster)
    again = api.client.post(path(cluster), headers=api.mgmt, json=spec())
    assert again.status_code == 409 and again.json["error"]["code"] == "schedule_exists"

    body = spec(cron="0 9 * * 1-5", arguments=["replaced"])
    del body["name"]
    replaced = api.client.put(path(cluster, "nightly"), headers=api.mgmt, json=body)
    assert replaced.status_code == 200 and replaced.json["cron"] == "0 9 * * 1-5"
    assert replaced.json["arguments"] == ["replaced"]
    nine = dt.datetime.fromisoformat(replaced.json["nextFireAt"].replace("Z", "+00:00"))
    local = nine.astimezone(schedules.zone("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0) and local.isoweekday() <= 5

    fresh = api.client.put(path(cluster, "weekly"), headers=api.mgmt, json=body)
    assert fresh.status_code == 201 and fresh.json["name"] == "weekly"


def test_patch_changes_other_fields_and_keeps_the_next_tick_unless_the_timing_changes(api):
    cluster = api.new_cluster()
    made = create(api, cluster, cron="0 0 1 1 *")
    patched = api.client.patch(path(cluster, "nightly"), headers=api.mgmt,
                               json={"arguments": [42], "catchUp": "all", "callConfig": {"timeoutSeconds": 7}})
    assert patched.status_code == 200, patched.json
    assert patched.json["arguments"] == [42] and patched.json["catchUp"] == "all"
    assert patched.json["callConfig"]["timeoutSeconds"] == 7
    assert patched.json["nextFireAt"] == made["nextFireAt"]
    assert row(cluster).target_args == pack_args([42])
    retimed = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"timezone": "Asia/Tokyo"})
    assert retimed.json["nextFireAt"] != made["nextFireAt"]
    assert retimed.json["nextFireAt"].endswith("T15:00:00.000Z")  # midnight in Tokyo is 15:00 UTC


@pytest.mark.parametrize(("cron", "cron_field"), [
    ("61 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * 0 * *", "day of month"), ("* * 32 * *", "day of month"),
    ("* * * 13 *", "month"), ("* * * * 8", "day of week"), ("*/0 * * * *", "minute"), ("x * * * *", "minute"),
    ("* * * * * *", None), ("* * * *", None), ("@hourly", None), ("0 0 30 2 *", None),
])
def test_a_bad_cron_is_400_naming_the_field(api, cron, cron_field):
    cluster = api.new_cluster()
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(cron=cron))
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "invalid_cron" and r.json["error"]["details"]["field"] == "cron"
    assert r.json["error"]["details"].get("cronField") == cron_field
    assert api.client.get(path(cluster), headers=api.mgmt).json["schedules"] == []


@pytest.mark.parametrize(("field", "value", "code"), [
    ("timezone", "Mars/Olympus_Mons", "invalid_timezone"),
    ("timezone", "../../etc/passwd", "invalid_timezone"),
    ("timezone", "x" * 65, "validation_failed"),
    ("arguments", {"a": 1}, "validation_failed"),
    ("arguments", "[1, 2]", "validation_failed"),
    ("arguments", list(range(1001)), "validation_failed"),
    ("catchUp", "sometimes", "validation_failed"),
    ("name", "has/slash", "validation_failed"),
    ("name", "has space", "validation_failed"),
    ("name", "-leading", "validation_failed"),
    ("name", "n" * 129, "validation_failed"),
    ("name", "", "validation_failed"),
    ("service", "", "validation_failed"),
    ("service", "s\n", "validation_failed"),
    ("function", 5, "validation_failed"),
    ("cron", "", "validation_failed"),
    ("paused", "yes", "validation_failed"),
    ("callConfig", {"timeoutSeconds": 0}, "validation_failed"),
    ("callConfig", {"retryCountOnStall": "3"}, "validation_failed"),
    ("callConfig", [], "validation_failed"),
])
def test_bad_input_on_every_field_is_400(api, field, value, code):
    cluster = api.new_cluster()
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(**{field: value}))
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code
    assert field in str(r.json["error"]["details"]) or field in r.json["error"]["message"]


def test_more_bad_input(api):
    cluster = api.new_cluster()
    for missing in ("name", "service", "function", "arguments", "cron"):
        body = spec()
        del body[missing]
        r = api.client.post(path(cluster), headers=api.mgmt, json=body)
        assert r.status_code == 400 and missing in str(r.json["error"]), (missing, r.json)
    r = api.client.post(path(cluster), headers=api.mgmt, json={**spec(), "unknown": 1})
    assert r.status_code == 400
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(callConfig={"executionId": "mine"}))
    assert r.status_code == 400 and r.json["error"]["details"]["field"] == "callConfig.executionId"
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(arguments=["\ud800"]))
    assert r.status_code == 400
    # Size: the encoded arguments, and the body itself.
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(arguments=["x" * 70_000]))
    assert r.status_code == 413 and r.json["error"]["details"]["field"] == "arguments"
    r = api.client.post(path(cluster), headers=api.mgmt, json=spec(arguments=["x" * 200_000]))
    assert r.status_code == 413
    # The path's name is held to the same pattern, and must agree with the body's.
    assert api.client.get(path(cluster, "bad name"), headers=api.mgmt).status_code == 400
    body = spec()
    r = api.client.put(path(cluster, "other"), headers=api.mgmt, json=body)
    assert r.status_code == 400 and r.json["error"]["details"]["field"] == "name"
    create(api, cluster)
    r = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"cron": "* * * * 9"})
    assert r.status_code == 400 and r.json["error"]["details"]["cronField"] == "day of week"
    r = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"name": "renamed"})
    assert r.status_code == 400
    assert api.client.get(path(cluster, "nightly"), headers=api.mgmt).json["cron"] == "* * * * *"
    r = api.client.get(path(cluster) + "?limit=0", headers=api.mgmt)
    assert r.status_code == 400


def test_the_routes_need_the_management_secret_and_an_existing_cluster(api):
    cluster = api.new_cluster()
    create(api, cluster)
    for method, url in (("get", path(cluster)), ("get", path(cluster, "nightly")), ("delete", path(cluster, "nightly")),
                        ("patch", path(cluster, "nightly")), ("post", path(cluster))):
        r = getattr(api.client, method)(url, headers=api.headers(cluster), json={"paused": True})
        assert r.status_code == 401, (method, url)
    ghost = {"id": "no-such-cluster"}
    assert api.client.get(path(ghost), headers=api.mgmt).json["error"]["code"] == "cluster_not_found"
    r = api.client.post(path(ghost), headers=api.mgmt, json=spec())
    assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found"


def test_clusters_are_isolated(api):
    a, b = api.new_cluster(), api.new_cluster()
    create(api, a)
    assert api.client.get(path(b), headers=api.mgmt).json["schedules"] == []
    assert api.client.get(path(b, "nightly"), headers=api.mgmt).status_code == 404
    assert api.client.patch(path(b, "nightly"), headers=api.mgmt, json={"paused": True}).status_code == 404
    assert api.client.delete(path(b, "nightly"), headers=api.mgmt).status_code == 404
    create(api, b, function="other")  # the same name in another cluster is another schedule
    assert api.client.get(path(a, "nightly"), headers=api.mgmt).json["function"] == "fn"

    for cluster in (a, b):
        set_due(cluster, 0)  # due long ago, in both
    FireSchedules().run_once(ms_to_dt(MINUTE * 10))
    assert [j.target_fn for j in jobs_of(a)] == ["fn"] and [j.target_fn for j in jobs_of(b)] == ["other"]
    assert jobs_of(a)[0].id == jobs_of(b)[0].id  # the same tick id, each in its own cluster


# --- firing ---------------------------------------------------------------------------------------

def test_each_tick_fires_once_with_the_arguments_the_sdk_would_send(api):
    cluster = api.new_cluster()
    create(api, cluster, callConfig={"timeoutSeconds": 9, "retryCountOnStall": 0})
    due = row(cluster).next_fire_ms
    assert due % MINUTE == 0
    task = FireSchedules()
    assert task.run_once(ms_to_dt(due - 1)) == {"fired": 0, "failed": 0}
    assert task.run_once(ms_to_dt(due)) == {"fired": 1, "failed": 0}
    assert task.run_once(ms_to_dt(due + 30_000)) == {"fired": 0, "failed": 0}  # the same minute again
    assert task.run_once(ms_to_dt(due + MINUTE)) == {"fired": 1, "failed": 0}

    made = jobs_of(cluster)
    assert [j.id for j in made] == [tick_id("nightly", due), tick_id("nightly", due + MINUTE)]
    first = made[0]
    assert first.target_args == pack_args(ARGS) == schedules.pack_arguments(ARGS)
    assert (first.service, first.target_fn, first.status) == ("svc", "fn", JobStatus.PENDING)
    assert (first.timeout_seconds, first.attempts_allowed) == (9, 1)
    after = row(cluster)
    assert after.last_fired_ms == due + MINUTE and after.next_fire_ms == due + 2 * MINUTE
    shown = api.client.get(path(cluster, "nightly"), headers=api.mgmt).json
    assert shown["lastFiredAt"] == schedules.iso(due + MINUTE)

    claimed = api.claim(cluster)
    assert [c["targetArgs"] for c in claimed] == [pack_args(ARGS)] * 2
    fired = [e for e in api.activity(cluster) if e["type"] == EventType.SCHEDULE_FIRED]
    assert sorted(e["jobId"] for e in fired) == [j.id for j in made]
    assert fired[0]["meta"]["schedule"] == "nightly"


def test_a_tick_is_idempotent_by_schedule_and_time(api):
    """A second firer holding the same stale read fires nothing; and a tick whose call exists
    already (the row put back by hand) joins that call instead of making a second one."""
    cluster = api.new_cluster()
    create(api, cluster)
    due = row(cluster).next_fire_ms
    stale = row(cluster)
    now = due + 1000
    assert schedules._fire(stale, now, 60_000) == (1, 0)
    assert schedules._fire(stale, now, 60_000) == (0, 0)  # fenced: the row moved on
    set_due(cluster, due)
    assert schedules.fire_due(ms_to_dt(now)) == {"fired": 1, "failed": 0}
    assert [j.id for j in jobs_of(cluster)] == [tick_id("nightly", due)]
    joined = [e for e in api.activity(cluster) if e["type"] == EventType.SCHEDULE_FIRED]
    assert sorted(e["meta"]["created"] for e in joined) == [False, True]


def test_a_paused_schedule_does_not_fire_and_resumes_at_the_next_tick(api):
    cluster = api.new_cluster()
    create(api, cluster)
    due = row(cluster).next_fire_ms
    api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"paused": True})
    task = FireSchedules()
    for minutes in range(0, 5):
        assert task.run_once(ms_to_dt(due + minutes * MINUTE))["fired"] == 0
    assert jobs_of(cluster) == []
    resumed = api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"paused": False}).json
    assert resumed["nextFireAt"]
    nxt = row(cluster).next_fire_ms
    assert task.run_once(ms_to_dt(nxt))["fired"] == 1


def test_pausing_or_deleting_between_read_and_fire_fires_nothing(api):
    cluster = api.new_cluster()
    create(api, cluster)
    create(api, cluster, name="second")
    stale, stale2 = row(cluster), row(cluster, "second")
    api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"paused": True})
    api.client.delete(path(cluster, "second"), headers=api.mgmt)
    assert schedules._fire(stale, stale.next_fire_ms, 60_000) == (0, 0)
    assert schedules._fire(stale2, stale2.next_fire_ms, 60_000) == (0, 0)
    assert jobs_of(cluster) == []


def test_a_changed_schedule_fires_its_new_arguments(api):
    cluster = api.new_cluster()
    create(api, cluster)
    stale = row(cluster)
    api.client.patch(path(cluster, "nightly"), headers=api.mgmt, json={"arguments": ["new"]})
    assert schedules._fire(stale, stale.next_fire_ms, 60_000) == (0, 0)  # fenced on updated_at too
    assert schedules.fire_due(ms_to_dt(stale.next_fire_ms))["fired"] == 1
    assert jobs_of(cluster)[0].target_args == pack_args(["new"])


def test_dst_ticks_follow_the_time_zone():
    # Europe/Paris springs forward at 02:00 on 2026-03-29: 02:30 does not exist that day.
    start = int(dt.datetime(2026, 3, 28, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)
    first = schedules.next_tick_ms("30 2 * * *", "Europe/Paris", start)
    second = schedules.next_tick_ms("30 2 * * *", "Europe/Paris", first)
    third = schedules.next_tick_ms("30 2 * * *", "Europe/Paris", second)
    assert [schedules.iso(t) for t in (first, second, third)] == [
        "2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z", "2026-03-31T00:30:00.000Z"]
    # In the autumn 02:00 comes twice (CEST then CET): an hourly schedule fires at both.
    autumn = int(dt.datetime(2026, 10, 24, 23, 30, tzinfo=dt.timezone.utc).timestamp() * 1000)
    ticks = [autumn]
    for _ in range(3):
        ticks.append(schedules.next_tick_ms("0 * * * *", "Europe/Paris", ticks[-1]))
    assert [schedules.iso(t)[11:16] for t in ticks[1:]] == ["00:00", "01:00", "02:00"]


HOUR = 60 * MINUTE


@pytest.mark.parametrize(("policy", "fired_ticks"), [
    ("latest", [10]),  # the most recent missed tick, once
    ("none", []),  # all missed (the latest is half an hour late): resume at the next one
    ("all", list(range(0, 11))),  # every missed tick
])
def test_catch_up_after_downtime_follows_the_policy(api, policy, fired_ticks):
    cluster = api.new_cluster()
    create(api, cluster, catchUp=policy, cron="0 * * * *")
    due = row(cluster).next_fire_ms
    now = due + 10 * HOUR + 30 * MINUTE  # ten hours and a half of nobody maintaining
    FireSchedules().run_once(ms_to_dt(now))
    assert [j.id for j in jobs_of(cluster)] == sorted(tick_id("nightly", due + h * HOUR) for h in fired_ticks)
    assert row(cluster).next_fire_ms == due + 11 * HOUR
    # From then on it fires on time, whatever the policy.
    assert FireSchedules().run_once(ms_to_dt(due + 11 * HOUR + 2000))["fired"] == 1


def test_none_still_fires_a_tick_that_is_only_a_little_late(api):
    cluster = api.new_cluster()
    create(api, cluster, catchUp="none")
    due = row(cluster).next_fire_ms
    assert FireSchedules(on_time_seconds=60).run_once(ms_to_dt(due + 59_000))["fired"] == 1
    assert [j.id for j in jobs_of(cluster)] == [tick_id("nightly", due)]


def test_catch_up_all_is_bounded_per_run_and_continues(api):
    cluster = api.new_cluster()
    create(api, cluster, catchUp="all")
    due = row(cluster).next_fire_ms
    now = ms_to_dt(due + 149 * MINUTE + 1)  # 150 missed ticks
    task = FireSchedules()
    assert task.run_once(now)["fired"] == schedules.MAX_CATCH_UP == 100
    assert row(cluster).next_fire_ms == due + 100 * MINUTE
    assert task.run_once(now)["fired"] == 50
    assert len({j.id for j in jobs_of(cluster)}) == 150
    assert row(cluster).next_fire_ms == due + 150 * MINUTE


def test_the_maintainer_runs_fire_schedules(api, app):
    cluster = api.new_cluster()
    create(api, cluster)
    maintainer = Maintainer.for_settings(interval=1.0, machine_timeout=90.0, retention_days=7.0)
    assert any(isinstance(t, FireSchedules) for t in maintainer.tasks)
    due = row(cluster).next_fire_ms
    done = maintainer.tick(ms_to_dt(due))
    assert done["fire_schedules"] == {"fired": 1, "failed": 0}


def test_a_tick_whose_id_names_another_call_is_skipped_and_the_schedule_goes_on(api):
    cluster = api.new_cluster()
    create(api, cluster)
    due = row(cluster).next_fire_ms
    api.call(cluster, fn="somethingElse", executionId=tick_id("nightly", due))
    assert FireSchedules().run_once(ms_to_dt(due)) == {"fired": 0, "failed": 1}
    assert row(cluster).next_fire_ms == due + MINUTE
    assert FireSchedules().run_once(ms_to_dt(due + MINUTE))["fired"] == 1


def test_the_tick_id_fits_an_execution_id():
    from app.api import schemas, validation

    longest = schedules.execution_id("n" * 128, 253402300799000)  # 9999-12-31T23:59:59Z
    assert validation.errors(schemas.NEW_ID, longest) == []
    assert base64.b64decode(schedules.pack_arguments([]))  == b"\x90"
