"""GET /metrics: the Prometheus exposition, its guard, its counters, gauges and label bounds.

In-process apps share this process's metrics (one registry), so those tests compare a scrape
before and after; the gunicorn test counts a known mix across two workers and two replicas.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import signal
import threading
import time
import uuid

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.engine import statements
from app.engine.maintenance import ExpireDeadlines
from app.engine.states import EventType
from app.observability import prometheus
from cp_helpers import MANAGEMENT_SECRET, Api
from support.server import ControlPlane
from support.waiting import wait_until

TOKEN = "metrics-token-" + "m" * 24
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(text: str) -> dict[str, list]:
    """{sample name: [(labels, value)]} of an exposition (through the official parser)."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


def scrape(client, token=TOKEN) -> dict:
    prometheus.gauges.clear()
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.data
    assert r.headers["Content-Type"].startswith("text/plain")
    return parse(r.get_data(as_text=True))


@pytest.fixture
def app(make_app):
    return make_app(metrics_token=TOKEN)


@pytest.fixture
def api(app):
    return Api(app)


# --- the guard ------------------------------------------------------------------------------------

def test_scrapes_need_the_metrics_token_or_the_management_secret(api):
    client = api.client
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics").json["error"]["code"] == "missing_credential"
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "invalid_credential"
    cluster = api.new_cluster()  # a cluster's own secret is no scrape credential
    assert client.get("/metrics", headers={"Authorization": f"Bearer {cluster['apiSecret']}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {MANAGEMENT_SECRET}"}).status_code == 200


def test_without_token_or_management_secret_the_route_is_off_and_says_why(make_app):
    client = make_app(management_secret=None, metrics_token=None).test_client()
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 503
    assert r.json["error"]["code"] == "metrics_token_not_set" and "METRICS_TOKEN" in r.json["error"]["message"]


def test_the_token_alone_works_without_a_management_secret(make_app):
    client = make_app(management_secret=None, metrics_token=TOKEN).test_client()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "y" * 30}).status_code == 401


def test_the_clients_post_metrics_on_the_same_path_still_works(api):
    c = api.new_cluster()
    r = api.client.post("/metrics", headers=api.headers(c), json={"events": [{"type": "functionInvocation"}]})
    assert r.status_code == 204


def test_a_short_metrics_token_is_refused_at_start():
    from app import settings

    with pytest.raises(settings.SettingsError, match="METRICS_TOKEN"):
        settings.load({"METRICS_TOKEN": "short"})


# --- counters, histograms, gauges -----------------------------------------------------------------

def _finished(samples, cluster, service="svc"):
    return {outcome: value(samples, "differential_jobs_finished_total", cluster=cluster, service=service,
                           outcome=outcome) for outcome in ("resolution", "rejection", "failure", "cancelled")}


def test_the_counters_equal_a_known_mix_of_calls(api):
    c = api.new_cluster()
    before = scrape(api.client)
    jobs = [api.call(c) for _ in range(7)]
    claimed = api.claim(c, limit=5)
    assert len(claimed) == 5
    for job in claimed[:3]:
        api.result(c, job["id"])
    for job in claimed[3:5]:
        api.result(c, job["id"], kind="rejection")
    api.client.post(f"/jobs/{jobs[5]}/cancel", headers=api.headers(c), json={})
    late = api.call(c, queueDeadlineSeconds=1)
    ExpireDeadlines().run_once(statements.database_now() + dt.timedelta(seconds=5))
    api.result(c, claimed[0]["id"])  # a duplicate: fenced, not counted again
    after = scrape(api.client)

    assert value(after, "differential_jobs_created_total", cluster=c["id"], service="svc") == 8
    assert value(after, "differential_jobs_claimed_total", cluster=c["id"], service="svc") == 5
    assert _finished(after, c["id"]) == {"resolution": 3, "rejection": 2, "failure": 1, "cancelled": 1}
    assert _finished(before, c["id"]) == {"resolution": 0, "rejection": 0, "failure": 0, "cancelled": 0}
    # Histograms: every first claim's wait, every stored result's execution time (1 ms each).
    assert value(after, "differential_job_claim_latency_seconds_count", cluster=c["id"], service="svc") == 5
    assert value(after, "differential_job_execution_seconds_count", cluster=c["id"], service="svc") == 5
    assert value(after, "differential_job_execution_seconds_sum", cluster=c["id"], service="svc") == \
        pytest.approx(0.005)
    assert api.status(c, late)["state"] == "failure"


def test_a_rejection_retried_later_is_not_finished_until_its_last_attempt(api):
    c = api.new_cluster()
    job = api.call(c, retryOnRejection={"attempts": 2, "initialDelaySeconds": 0.001})
    api.claim(c)
    api.result(c, job, kind="rejection")
    samples = scrape(api.client)
    assert _finished(samples, c["id"])["rejection"] == 0
    assert api.status(c, job)["state"] in ("scheduled", "pending")


def test_http_requests_are_labelled_by_route_never_by_raw_path(api):
    c = api.new_cluster()
    job = api.call(c)
    api.status(c, job)
    assert api.client.get("/no/such/route-" + job).status_code == 404
    samples = scrape(api.client)
    routes = {labels["route"] for labels, _ in samples["differential_http_requests_total"]}
    assert "/jobs/<job_id>" in routes and "/jobs" in routes and "unmatched" in routes
    assert not any(job in r for r in routes)
    assert value(samples, "differential_http_requests_total", method="POST", route="/jobs", status="201") >= 1
    assert value(samples, "differential_http_request_duration_seconds_count", route="/jobs/<job_id>") >= 1


def test_the_gauges_match_the_queue_and_the_machines(api):
    c = api.new_cluster()
    for _ in range(3):
        api.call(c, service="waiting")
    api.call(c, service="waiting", delaySeconds=3600)  # scheduled: waits too
    api.claim(c, service="served", machine="m1")
    api.claim(c, service="served", machine="m2")
    api.claim(c, service="other", machine="m1")
    samples = scrape(api.client)
    assert value(samples, "differential_queue_depth", cluster=c["id"], service="waiting") == 4
    age = value(samples, "differential_queue_oldest_pending_age_seconds", cluster=c["id"], service="waiting")
    assert 0 <= age < 60
    assert value(samples, "differential_service_live_machines", cluster=c["id"], service="served") == 2
    assert value(samples, "differential_service_live_machines", cluster=c["id"], service="other") == 1
    assert not [s for s in samples.get("differential_queue_depth", []) if s[0]["service"] == "served"]


def test_long_polls_parked_are_a_gauge_that_goes_back_down(api):
    c = api.new_cluster()
    base = value(scrape(api.client), "differential_long_polls_parked")
    done = threading.Event()

    def poll():
        Api(api.app).claim(c, service="idle", ttl=3000)
        done.set()

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        wait_until(lambda: value(scrape(api.client), "differential_long_polls_parked") == base + 1, 5,
                   what="the parked poll counted")
    finally:
        thread.join(10)
    assert done.is_set()
    assert value(scrape(api.client), "differential_long_polls_parked") == base


def test_label_sets_are_capped_and_the_rest_fold_into_other(api, monkeypatch):
    monkeypatch.setitem(prometheus._CAPS, prometheus.JOBS_CREATED, prometheus.LabelCap(3))
    cluster, newcomer = f"cap-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"  # this process counts on
    before = scrape(api.client)
    for n in range(10):
        prometheus.count_event(cluster, EventType.JOB_CREATED, f"svc-{n}", {})
    prometheus.count_event(newcomer, EventType.JOB_CREATED, "svc", {})
    samples = scrape(api.client)
    mine = {(labels["cluster"], labels["service"]): v for labels, v in samples["differential_jobs_created_total"]
            if labels["cluster"] in (cluster, newcomer)}
    assert mine == {(cluster, "svc-0"): 1, (cluster, "svc-1"): 1, (cluster, "svc-2"): 1,
                    (cluster, prometheus.OTHER): 7}  # its further services fold
    other = (prometheus.OTHER, prometheus.OTHER)  # a cluster with no series yet folds whole
    assert value(samples, "differential_jobs_created_total", cluster=other[0], service=other[1]) == \
        value(before, "differential_jobs_created_total", cluster=other[0], service=other[1]) + 1


def test_a_cap_keeps_the_pairs_it_admitted_and_folds_only_new_ones():
    cap = prometheus.LabelCap(2)
    assert cap("a", "x") == ("a", "x") and cap("b", "y") == ("b", "y")
    assert cap("a", "z") == ("a", prometheus.OTHER)
    assert cap("c", "x") == (prometheus.OTHER, prometheus.OTHER)
    assert cap("a", "x") == ("a", "x")


def test_every_job_transition_records_an_event_so_every_one_is_counted():
    # The counters live in EventLog.record: each transition of the state machine must record one.
    from app.engine.states import TRANSITIONS

    assert all(t.events for t in TRANSITIONS)


# --- the alert rules ------------------------------------------------------------------------------

def test_the_alert_rules_parse_and_name_metrics_that_exist(api):
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        doc = yaml.safe_load(f)
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    names = set()  # every family and sample name exposed (a family without samples included)
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    names.update(f"{family}_total" for family in list(names))  # a counter family without samples yet
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 3 and all(group["name"] for group in doc["groups"])
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
        assert isinstance(rule.get("for", "0s"), str)
        named = set(re.findall(r"\bdifferential_[a-z_]+", rule["expr"]))
        assert named and named <= names, (rule["alert"], named - names)


# --- two gunicorn workers, two replicas ----------------------------------------------------------

def _scrape_url(cp: ControlPlane) -> dict:
    r = httpx.get(cp.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    return parse(r.text)


def _workers(cp: ControlPlane) -> set[int]:
    return {p.pid for p in psutil.Process(cp.pid).children()}


def test_counters_add_up_across_two_workers_and_two_replicas_and_survive_a_worker_restart(fresh_pg_url):
    env = {"WEB_CONCURRENCY": "2", "METRICS_TOKEN": TOKEN, "SWEEP_INTERVAL_SECONDS": "0.2"}
    with ControlPlane(fresh_pg_url, env=env) as a, ControlPlane(fresh_pg_url, env=env) as b:
        r = httpx.post(a.url + "/clusters", headers=a.management_headers, timeout=10)
        cluster = r.json()
        secret = {"Authorization": f"Basic {cluster['apiSecret']}"}

        def post(cp, path, body, machine=None):
            headers = {**secret, **({"x-machine-id": machine} if machine else {})}
            with httpx.Client(timeout=30) as client:  # a new connection each: the workers share them out
                return client.post(cp.url + path, headers=headers, json=body)

        def call(cp, **config):
            body = {"service": "svc", "targetFn": "fn", "targetArgs": "kA==", "callConfig": config}
            r = post(cp, "/jobs", body)
            assert r.status_code == 201, r.text
            return r.json()["id"]

        jobs = [call(a if n % 2 else b) for n in range(10)]
        claimed = []
        for n, cp in enumerate((a, b, a, b, a, b)):
            got = post(cp, "/jobs-request", {"service": "svc", "limit": 2, "ttl": 0}, machine=f"m{n % 2}").json()
            claimed += [(cp, f"m{n % 2}", job["id"]) for job in got]
            if len(claimed) >= 8:
                break
        assert len(claimed) == 8
        for n, (cp, machine, job) in enumerate(claimed):
            kind = "resolution" if n < 5 else "rejection"
            body = {"result": "oA==", "resultType": kind, "functionExecutionTime": 2}
            assert post(b if cp is a else a, f"/jobs/{job}/result", body, machine=machine).status_code == 204
        unclaimed = [j for j in jobs if j not in {job for _, _, job in claimed}]
        assert post(a, f"/jobs/{unclaimed[0]}/cancel", {}).status_code == 200
        call(b, queueDeadlineSeconds=0.2)  # fails: nobody claims it
        waiting = [post(cp, "/jobs", {"service": "queued", "targetFn": "fn", "targetArgs": "kA=="}) for cp in (a, b, a)]
        assert all(r.status_code == 201 for r in waiting)

        want = {"resolution": 5, "rejection": 3, "failure": 1, "cancelled": 1}

        def totals() -> dict:
            both = [_scrape_url(a), _scrape_url(b)]
            return {"created": sum(value(s, "differential_jobs_created_total", cluster=cluster["id"]) for s in both),
                    "claimed": sum(value(s, "differential_jobs_claimed_total", cluster=cluster["id"]) for s in both),
                    **{o: sum(value(s, "differential_jobs_finished_total", cluster=cluster["id"], outcome=o)
                              for s in both) for o in want}}

        expected = {"created": 14, "claimed": 8, **want}
        wait_until(lambda: totals() == expected, 15, what=f"the summed counters equal {expected}",
                   tolerate=(httpx.HTTPError,))
        # Gauges come from the database: every replica reports the same (once its cached read,
        # at most GAUGE_CACHE_SECONDS old, has caught up with the expired call).
        def gauges(cp) -> tuple:
            samples = _scrape_url(cp)
            return tuple(value(samples, name, cluster=cluster["id"], service=service) for name, service in (
                ("differential_queue_depth", "queued"), ("differential_queue_depth", "svc"),
                ("differential_service_live_machines", "svc")))

        for cp in (a, b):
            wait_until(lambda cp=cp: gauges(cp) == (3, 1, 2), 10, what="queued 3, svc 1, 2 live machines")

        # A parked poll shows in its replica's gauge (summed over its live workers).
        def park():
            try:
                post(a, "/jobs-request", {"service": "idle", "limit": 1, "ttl": 8000}, machine="m9")
            except httpx.HTTPError:
                pass  # its worker is killed below

        poll = threading.Thread(target=park)
        poll.start()
        wait_until(lambda: value(_scrape_url(a), "differential_long_polls_parked") == 1, 10, what="a parked poll")

        # Every worker of replica a goes (SIGKILL), gunicorn starts new ones: the counts stay, and
        # the dead workers' parked polls leave the gauge (child_exit marks them dead).
        old = _workers(a)
        assert len(old) == 2
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len(_workers(a) - old) == 2, 30, what="two new workers")
        wait_until(lambda: _ready(a), 30, what="replica a serving again")
        poll.join(30)
        assert totals() == expected
        assert value(_scrape_url(a), "differential_long_polls_parked") == 0


def _ready(cp: ControlPlane) -> bool:
    try:
        return httpx.get(cp.url + "/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False


def test_the_readme_shows_the_rules_of_the_alerts_file():
    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split("### Prometheus", 1)[1].split("\n## ", 1)[0]
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "- alert:" in b]
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        rules = [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]

    def short(rule):
        return rule["alert"], re.sub(r"\s+", "", rule["expr"]), rule["for"]

    assert [short(r) for r in yaml.safe_load(block)] == [short(r) for r in rules]
