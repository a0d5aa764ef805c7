"""Cloud deployments in process: names, the template, the cloud gate, bad input, isolation, stack
events, calls that carry the active deployment, deployment tokens, wake-ups, expiry, logs.

The whole flow against moto and the real control-plane under gunicorn is test_deployments_flow.py;
here the rules are pinned one by one, with the stack's fate fed in as SNS would."""
from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from app import db, models
from app.cloud import cloudformation, logs as cloud_logs
from app.engine import deployment_tokens, deployment_wakeups, deployments, ids, machines
from app.engine.states import DeploymentEventType as E, DeploymentStatus as S
from app.models import Deployment, Job, utcnow

from cp_helpers import Api

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deployment-templates" / "lambda-cfn.yaml"
TOPIC = "arn:aws:sns:us-east-1:123456789012:deployments"
CLOUD = {"asset_upload_bucket": "assets", "deployment_template_bucket": "templates", "deployment_sns_topic": TOPIC,
         "deployment_default_service_role": "arn:aws:iam::123456789012:role/cfn-service",
         "deployment_runtime_role": "arn:aws:iam::123456789012:role/lambda-runtime",
         "public_url": "https://cp.example.test", "sns_verify_signatures": False}


@pytest.fixture
def cloud_api(make_app):
    return Api(make_app(**CLOUD))


@pytest.fixture
def sqlite_cloud_api(tmp_path):
    """SQLite only, for the rules that do not depend on the database."""
    from app import create_app, settings as settings_module

    from cp_helpers import MANAGEMENT_SECRET

    app = create_app(settings_module.load({"MANAGEMENT_SECRET": MANAGEMENT_SECRET, "SWEEPER_ENABLED": "false",
                                           "DIFFERENTIAL_DATA_DIR": str(tmp_path / "data")}, **CLOUD))
    yield Api(app)
    app.extensions["differential"].close()


def _path(cluster_id, service="svc", tail=""):
    return f"/clusters/{cluster_id}/service/{service}/deployments{tail}"


def _create(api, cluster, service="svc", **body):
    r = api.client.post(_path(cluster["id"], service), headers=api.mgmt, json=body or None)
    assert r.status_code == 201, r.json
    return r.json


def _set(deployment_id, **changes):
    db.unit_of_work(lambda: Deployment.update(**changes).where(Deployment.id == deployment_id).execute())


def _row(deployment_id) -> Deployment:
    return db.unit_of_work(lambda: Deployment.get_by_id(deployment_id), transaction=False)


def _stack_fields(stack, status, token="None", resource="AWS::CloudFormation::Stack", reason="None"):
    return {"StackName": stack, "ResourceStatus": status, "ResourceType": resource, "ClientRequestToken": token,
            "ResourceStatusReason": reason, "LogicalResourceId": stack}


def _deploying(deployment_id, release=1):
    meta = {"releases": release, "requestToken": f"{deployment_id}-{release}"}
    _set(deployment_id, status=S.DEPLOYING, released_at=utcnow(), meta=json.dumps(meta))


# --- names and the template -------------------------------------------------------------------------


@pytest.mark.parametrize("cluster_id, service", [
    ("cluster-quick-falcon-0123456789", "svc"),
    ("cluster-lucid-lantern-abcdef0123", "a" * 200),
    ("c", "billing_service.v2"),
    ("cluster-x", "ümlaut service/with spaces"),
    ("cluster-x", "---"),
])
def test_names_fit_aws_limits(cluster_id, service):
    name = cloudformation.resource_name(cluster_id, service)
    assert len(name) <= 64
    assert re.fullmatch(r"differential-deployment-[A-Za-z0-9]+(-[A-Za-z0-9]+)*", name), name


def test_services_that_shorten_alike_get_different_names():
    cluster = "cluster-lucid-lantern-abcdef0123"
    names = {cloudformation.resource_name(cluster, s) for s in ("a_b", "a.b", "a-b", "x" * 80 + "1", "x" * 80 + "2")}
    assert len(names) == 5
    assert cloudformation.resource_name(cluster, "a_b") == cloudformation.resource_name(cluster, "a_b")


def _template() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(TEMPLATE.read_text(), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def test_template_passes_cfn_lint():
    lint = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                          text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_template_takes_exactly_the_parameters_a_release_sends():
    template = _template()
    params = template["Parameters"]
    assert params["Runtime"]["AllowedValues"] == list(cloudformation.RUNTIMES)
    # The original's parameter name, carrying the deployment token: never the cluster secret.
    assert params["APISecret"]["NoEcho"] is True
    assert not re.fullmatch(params["APISecret"]["AllowedPattern"], "sk_" + "0" * 64)
    row = Deployment(id="dpl-X", cluster_id="c1", service="svc", runtime="python3.13", service_module="m:svc",
                     stack_name="differential-deployment-c1-svc-00000000",
                     function_name="differential-deployment-c1-svc-00000000")
    from app import settings as settings_module

    settings = settings_module.load({}, **CLOUD)
    sent = deployments._stack_request(row, settings, bucket="assets", key="service_bundle/dpl-X",
                                      token=deployments.TOKEN_PREFIX + "0" * 64, request_token="dpl-X-1").parameters
    defaulted = {name for name, p in params.items() if "Default" in p}
    assert set(params) - defaulted <= set(sent) <= set(params)
    for name, value in sent.items():  # every value passes the template's own constraints
        pattern = params[name].get("AllowedPattern")
        assert pattern is None or re.fullmatch(pattern, value), (name, value)
    assert sent["Handler"] == "differential.lambda_handler.handler"
    assert sent["ControlPlaneEndpoint"] == "https://cp.example.test"
    assert sent["ExecutionRole"] == CLOUD["deployment_runtime_role"]
    assert cloudformation.handler_for("nodejs22.x") == "differential-index.handler"
    env = template["Resources"]["DifferentialService"]["Properties"]["Environment"]["Variables"]
    assert {"DIFFERENTIAL_ENDPOINT", "DIFFERENTIAL_API_SECRET", "DIFFERENTIAL_DEPLOYMENT_ID"} <= set(env)


# --- the gate, bad input, isolation -----------------------------------------------------------------


def test_without_cloud_settings_the_cloud_routes_answer_501_naming_what_is_missing(api):
    cluster = api.new_cluster()
    cid = cluster["id"]
    for method, path in [("post", _path(cid)), ("post", _path(cid, tail="/dpl-1/release")),
                         ("post", _path(cid, tail="/dpl-1/rollback")), ("get", _path(cid, tail="/dpl-1/logs")),
                         ("delete", _path(cid))]:
        r = getattr(api.client, method)(path, headers=api.mgmt)
        assert r.status_code == 501, (path, r.json)
        assert r.json["error"]["code"] == "cloud_not_configured"
        for name in ("ASSET_UPLOAD_BUCKET", "DEPLOYMENT_TEMPLATE_BUCKET", "DEPLOYMENT_SNS_TOPIC",
                     "DEPLOYMENT_DEFAULT_SERVICE_ROLE", "DEPLOYMENT_RUNTIME_ROLE"):
            assert name in r.json["error"]["message"]
    r = api.client.get(_path(cid), headers=api.mgmt)  # reading needs no AWS
    assert r.status_code == 200 and r.json == {"deployments": []}


def test_create_answers_the_contract_shape(sqlite_cloud_api):
    api = sqlite_cloud_api
    cluster = api.new_cluster()
    node = _create(api, cluster)
    assert node["status"] == "uploading" and node["runtime"] == "nodejs22.x" and node["provider"] == "lambda"
    assert node["stackName"] == node["functionName"] == cloudformation.resource_name(cluster["id"], "svc")
    assert node["bundle"] is None and node["releasedAt"] is None and node["expiresAt"] > node["createdAt"]
    py = _create(api, cluster, runtime="python3.13", serviceModule="shop.orders:service")
    assert py["serviceModule"] == "shop.orders:service"
    listed = api.client.get(_path(cluster["id"]), headers=api.mgmt).json["deployments"]
    assert [d["id"] for d in listed] == [py["id"], node["id"]]  # newest first
    assert api.client.get(_path(cluster["id"], tail=f"/{node['id']}"), headers=api.mgmt).json == node
    details = api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt).json
    assert {d["id"] for d in details["deployments"]} == {py["id"], node["id"]}
    types = [e["type"] for e in api.activity(cluster)]
    assert types.count(E.CREATED) == 2


@pytest.mark.parametrize("body, field", [
    ({"runtime": "nodejs20.x"}, "runtime"),
    ({"runtime": "python3.13"}, "serviceModule"),
    ({"runtime": "python3.13", "serviceModule": "not a module"}, "serviceModule"),
    ({"runtime": "python3.13", "serviceModule": "m:" + "a" * 400}, "serviceModule"),
    ({"colour": "blue"}, "colour"),
    ([], None),
])
def test_create_refuses_bad_bodies_naming_the_field(sqlite_cloud_api, body, field):
    api = sqlite_cloud_api
    cluster = api.new_cluster()
    r = api.client.post(_path(cluster["id"]), headers=api.mgmt, json=body)
    assert r.status_code == 400, r.json
    if field:
        assert field in json.dumps(r.json["error"])


def test_routes_refuse_bad_input(sqlite_cloud_api):
    api = sqlite_cloud_api
    cluster = api.new_cluster()
    cid = cluster["id"]
    d = _create(api, cluster)
    assert api.client.post(_path(cid), json={}).status_code == 401
    assert api.client.get(_path(cid), headers={"Authorization": "Basic " + cluster["apiSecret"]}).status_code == 401
    assert api.client.post(_path(cid, "a\x01b"), headers=api.mgmt).status_code == 400
    assert api.client.post(_path(cid), headers=api.mgmt, data="{", content_type="application/json").status_code == 400
    for query, field in [("start=x", "start"), ("limit=0", "limit"), ("limit=5000", "limit"), ("colour=1", "colour"),
                         ("start=10&end=5", "start"), ("filter=" + "a" * 2000, "filter")]:
        r = api.client.get(_path(cid, tail=f"/{d['id']}/logs?{query}"), headers=api.mgmt)
        assert r.status_code == 400, (query, r.json)
        assert field in json.dumps(r.json["error"]), (query, r.json)
    r = api.client.get(_path(cid, tail="?limit=0"), headers=api.mgmt)
    assert r.status_code == 400
    # Releasing twice, or rolling back to what was never active, is a conflict naming the status.
    _set(d["id"], status=S.ACTIVE)
    r = api.client.post(_path(cid, tail=f"/{d['id']}/release"), headers=api.mgmt)
    assert r.status_code == 409 and r.json["error"]["code"] == "deployment_not_releasable"
    r = api.client.post(_path(cid, tail=f"/{d['id']}/rollback"), headers=api.mgmt)
    assert r.status_code == 409 and r.json["error"]["code"] == "deployment_not_inactive"


def test_another_clusters_or_services_deployments_are_not_found(sqlite_cloud_api):
    api = sqlite_cloud_api
    mine, theirs = api.new_cluster(), api.new_cluster()
    d = _create(api, theirs)
    for method, tail in [("get", f"/{d['id']}"), ("post", f"/{d['id']}/release"), ("post", f"/{d['id']}/rollback"),
                         ("get", f"/{d['id']}/logs")]:
        r = getattr(api.client, method)(_path(mine["id"], tail=tail), headers=api.mgmt)
        assert r.status_code == 404, (tail, r.json)
        assert r.json["error"]["code"] == "deployment_not_found"
        r = getattr(api.client, method)(_path(theirs["id"], "other", tail=tail), headers=api.mgmt)
        assert r.status_code == 404, (tail, r.json)
    assert api.client.delete(_path(mine["id"]), headers=api.mgmt).status_code == 404
    assert api.client.post(_path("cluster-nope"), headers=api.mgmt).status_code == 404
    assert api.client.get(_path(mine["id"]), headers=api.mgmt).json == {"deployments": []}
    assert api.client.get(f"/clusters/{mine['id']}", headers=api.mgmt).json["deployments"] == []


def test_release_needs_a_public_url(make_app):
    api = Api(make_app(**{**CLOUD, "public_url": ""}))
    cluster = api.new_cluster()
    d = _create(api, cluster)
    r = api.client.post(_path(cluster["id"], tail=f"/{d['id']}/release"), headers=api.mgmt)
    assert r.status_code == 409 and r.json["error"]["code"] == "public_url_not_set", r.json
    assert "PUBLIC_URL" in r.json["error"]["message"]
    assert api.client.get(_path(cluster["id"], tail=f"/{d['id']}"), headers=api.mgmt).json["status"] == "uploading"


# --- stack events -------------------------------------------------------------------------------------


def test_stack_events_drive_the_deployments(cloud_api):
    api = cloud_api
    cluster = api.new_cluster()
    first, second = _create(api, cluster), _create(api, cluster)
    stack = first["stackName"]
    _deploying(first["id"])
    assert deployments.on_stack_event(_stack_fields(stack, "CREATE_IN_PROGRESS"), "in progress")["result"] == \
        "in progress"
    # A resource's CREATE_COMPLETE is not the stack's.
    fields = _stack_fields(stack, "CREATE_COMPLETE", resource="AWS::Lambda::Function")
    from app.cloud import sns

    assert deployments.on_stack_event(fields, sns.stack_outcome(fields))["result"] == "ignored"
    assert _row(first["id"]).status == S.DEPLOYING
    done = deployments.on_stack_event(_stack_fields(stack, "CREATE_COMPLETE"), "succeeded")
    assert done == {"deploymentId": first["id"], "result": "activated"}
    assert _row(first["id"]).activated_at is not None

    # An update that rolls back: the released one fails, the one active before stays active.
    _deploying(second["id"])
    fields = _stack_fields(stack, "UPDATE_COMPLETE", resource="AWS::Lambda::Function")  # during the rollback
    assert deployments.on_stack_event(fields, sns.stack_outcome(fields))["result"] == "ignored"
    rolled = _stack_fields(stack, "UPDATE_ROLLBACK_COMPLETE", reason="Resource update cancelled")
    assert deployments.on_stack_event(rolled, sns.stack_outcome(rolled))["result"] == "failed"
    assert _row(first["id"]).status == S.ACTIVE
    failed = _row(second["id"])
    assert failed.status == S.FAILED and "UPDATE_ROLLBACK_COMPLETE" in failed.reason and failed.token_hash is None
    # A late event about a finished deployment changes nothing.
    assert deployments.on_stack_event(_stack_fields(stack, "UPDATE_COMPLETE"), "succeeded")["result"] == "ignored"
    assert _row(second["id"]).status == S.FAILED

    # With a real ClientRequestToken, only the release it names counts: an earlier release's is stale.
    third = _create(api, cluster)
    _deploying(third["id"], release=2)
    stale = _stack_fields(stack, "UPDATE_COMPLETE", token=f"{third['id']}-1")
    assert deployments.on_stack_event(stale, "succeeded")["result"] == "ignored"
    other = _stack_fields(stack, "UPDATE_COMPLETE", token=f"{first['id']}-1")
    assert deployments.on_stack_event(other, "succeeded")["result"] == "ignored"
    good = _stack_fields(stack, "UPDATE_COMPLETE", token=f"{third['id']}-2")
    assert deployments.on_stack_event(good, "succeeded") == {"deploymentId": third["id"], "result": "activated"}
    assert _row(first["id"]).status == S.INACTIVE
    # Another stack's events never touch this service.
    fourth = _create(api, cluster)
    _deploying(fourth["id"])
    assert deployments.on_stack_event(_stack_fields("differential-deployment-x-y-00000000", "UPDATE_COMPLETE"),
                                      "succeeded")["result"] == "ignored"
    assert _row(fourth["id"]).status == S.DEPLOYING

    activity = api.activity(cluster)
    resulted = [e for e in activity if e["type"] == E.RESULTED]
    assert {(e["deploymentId"], e["meta"]["status"]) for e in resulted} == {
        (first["id"], "active"), (second["id"], "failed"), (third["id"], "active")}
    assert [e["deploymentId"] for e in activity if e["type"] == E.INACTIVATED] == [first["id"]]


def test_sns_route_applies_stack_events(sqlite_cloud_api):
    api = sqlite_cloud_api
    cluster = api.new_cluster()
    d = _create(api, cluster)
    _deploying(d["id"])
    message = "\n".join(f"{k}='{v}'" for k, v in _stack_fields(d["stackName"], "CREATE_COMPLETE").items())
    body = {"Type": "Notification", "MessageId": "m1", "TopicArn": TOPIC, "Subject": "AWS CloudFormation Notification",
            "Message": message, "Timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "SignatureVersion": "2",
            "Signature": "x", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem"}
    r = api.client.post("/events/sns", data=json.dumps(body), content_type="text/plain; charset=UTF-8")
    assert r.status_code == 200 and r.json["outcome"] == "succeeded", r.json
    assert api.client.get(_path(cluster["id"], tail=f"/{d['id']}"), headers=api.mgmt).json["status"] == "active"


# --- calls carry the active deployment; deployment tokens ------------------------------------------------


def test_calls_to_a_service_with_an_active_deployment_carry_its_id(cloud_api):
    api = cloud_api
    cluster = api.new_cluster()
    before = api.call(cluster, service="svc")
    d = _create(api, cluster)
    _deploying(d["id"])
    deployments.on_stack_event(_stack_fields(d["stackName"], "CREATE_COMPLETE"), "succeeded")
    after = api.call(cluster, service="svc")
    elsewhere = api.call(cluster, service="other")
    rows = db.unit_of_work(lambda: {j.id: j.deployment_id for j in Job.select(Job.id, Job.deployment_id)})
    assert rows[before] is None and rows[after] == d["id"] and rows[elsewhere] is None


def test_a_deployment_token_polls_only_its_service(cloud_api, monkeypatch):
    monkeypatch.setattr(deployment_tokens, "TOKEN_TTL_SECONDS", 0.0)
    api = cloud_api
    cluster = api.new_cluster()
    d = _create(api, cluster)
    token = deployments.TOKEN_PREFIX + secrets.token_hex(32)
    _deploying(d["id"])
    _set(d["id"], token_hash=ids.secret_hash(token), status=S.ACTIVE)
    job = api.call(cluster, service="svc")
    worker = {"Authorization": f"Basic {token}", "x-machine-id": "lambda-1"}
    r = api.client.post("/jobs-request", headers=worker, json={"service": "svc", "limit": 5, "ttl": 0})
    assert r.status_code == 200 and [j["id"] for j in r.json] == [job]
    r = api.client.post(f"/jobs/{job}/result", headers=worker, json={"result": "oA==", "resultType": "resolution"})
    assert r.status_code == 204
    assert api.status(cluster, job)["status"] == "success"
    machines.flush()
    machine = db.unit_of_work(lambda: models.Machine.get(models.Machine.cluster_id == cluster["id"]))
    assert machine.deployment_id == d["id"] and machine.id == f"{d['id']}:lambda-1"
    # Not another service, not the caller routes, not once the deployment failed.
    r = api.client.post("/jobs-request", headers=worker, json={"service": "other", "limit": 5, "ttl": 0})
    assert r.status_code == 403 and r.json["error"]["code"] == "deployment_token_scope"
    r = api.client.post("/jobs", headers=worker, json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
    assert r.status_code == 403
    assert api.client.get(f"/jobs/{job}", headers=worker).status_code == 403
    _set(d["id"], status=S.FAILED)
    r = api.client.post("/jobs-request", headers=worker, json={"service": "svc", "limit": 5, "ttl": 0})
    assert r.status_code == 401
    wrong = {"Authorization": "Basic " + deployments.TOKEN_PREFIX + "cd" * 32, "x-machine-id": "m"}
    assert api.client.post("/jobs-request", headers=wrong, json={"service": "svc", "ttl": 0}).status_code == 401


# --- wake-ups and expiry ----------------------------------------------------------------------------------


def test_wakeups_invoke_at_most_once_an_interval_reset_on_a_poll_and_stall(cloud_api):
    api = cloud_api
    cluster = api.new_cluster()
    d = _create(api, cluster)
    _deploying(d["id"])
    deployments.on_stack_event(_stack_fields(d["stackName"], "CREATE_COMPLETE"), "succeeded")
    settings = api.app.extensions["differential"].settings
    invoked = []

    def invoke(_settings, name):
        invoked.append(name)
        return 202

    def wake(now, max_wakeups=3):
        return deployment_wakeups.wake(now, settings, interval=10, max_wakeups=max_wakeups, invoke=invoke,
                                       describe=lambda _s, name: {"State": "Failed", "StateReason": "bad zip"})

    t0 = utcnow()
    assert wake(t0)["woken"] == 0  # nothing waits
    api.call(cluster, service="svc")
    assert wake(t0)["woken"] == 1 and invoked == [d["functionName"]]
    assert wake(t0 + dt.timedelta(seconds=5))["woken"] == 0  # within the interval
    assert wake(t0 + dt.timedelta(seconds=11))["woken"] == 1
    assert _row(d["id"]).wakeups == 2
    # A machine of the deployment polls: alive, the count resets, nobody is invoked.
    token = deployments.TOKEN_PREFIX + secrets.token_hex(32)  # the token cache is per process
    _set(d["id"], token_hash=ids.secret_hash(token))
    api.client.post("/jobs-request", headers={"Authorization": f"Basic {token}", "x-machine-id": "l1"},
                    json={"service": "svc", "limit": 5, "ttl": 0})  # takes the waiting call
    assert wake(utcnow() + dt.timedelta(seconds=1))["alive"] == 1
    row = _row(d["id"])
    assert row.wakeups == 0 and row.polled_at is not None and len(invoked) == 2

    # A second deployment whose function never polls fails after max_wakeups.
    other = _create(api, cluster, service="quiet")
    _deploying(other["id"])
    deployments.on_stack_event(_stack_fields(other["stackName"], "CREATE_COMPLETE"), "succeeded")
    api.call(cluster, service="quiet")
    later = utcnow() + dt.timedelta(minutes=5)
    for i in range(3):
        wake(later + dt.timedelta(seconds=11 * i), max_wakeups=3)
    assert _row(other["id"]).status == S.ACTIVE
    assert wake(later + dt.timedelta(seconds=40), max_wakeups=3)["stalledDeployments"] == 1
    stalled = _row(other["id"])
    assert stalled.status == S.FAILED and "ever polled" in stalled.reason
    assert "Lambda says it is Failed (bad zip)" in stalled.reason  # GetFunction's view
    activity = api.activity(cluster)
    assert [e["deploymentId"] for e in activity if e["type"] == E.STALLED] == [other["id"]]
    notified = [e for e in activity if e["type"] == E.NOTIFIED]
    assert len(notified) == len(invoked) == 5
    assert all(e["meta"]["pendingJobs"] >= 1 for e in notified)


def test_wakeups_reach_every_active_deployment_past_one_page(cloud_api):
    """More active deployments than a page holds: every one with waiting calls is woken."""
    api = cloud_api
    cluster = api.new_cluster()
    made = []
    for service in ("p1", "p2", "p3"):
        d = _create(api, cluster, service=service)
        _deploying(d["id"])
        deployments.on_stack_event(_stack_fields(d["stackName"], "CREATE_COMPLETE"), "succeeded")
        api.call(cluster, service=service)
        made.append(d["functionName"])
    invoked = []
    settings = api.app.extensions["differential"].settings
    done = deployment_wakeups.wake(utcnow(), settings, interval=10, max_wakeups=10, batch=2,
                                   invoke=lambda _s, name: invoked.append(name) or 202)
    assert done["woken"] == 3 and sorted(invoked) == sorted(made)


def test_uploads_never_released_expire(cloud_api):
    api = cloud_api
    cluster = api.new_cluster()
    late, fresh = _create(api, cluster), _create(api, cluster)
    _set(late["id"], expires_at=utcnow() - dt.timedelta(seconds=1))
    assert deployment_wakeups.expire_uploads(utcnow()) == 1
    assert _row(late["id"]).status == S.FAILED
    assert _row(fresh["id"]).status == S.UPLOADING
    r = api.client.post(_path(cluster["id"], tail=f"/{late['id']}/release"), headers=api.mgmt)
    assert r.status_code == 409
    assert [e["deploymentId"] for e in api.activity(cluster) if e["type"] == E.EXPIRED] == [late["id"]]


def test_the_wakeups_are_a_maintenance_task_of_the_leader(app):
    from app.engine.maintenance import Maintainer

    settings = app.extensions["differential"].settings
    names = [t.name for t in Maintainer.for_settings(interval=1, machine_timeout=90, retention_days=7,
                                                     deployments=settings).tasks]
    assert "wake_deployments" in names


# --- logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # AWS calls: the database plays no part
def test_logs_are_paged_filtered_and_without_lambda_noise(moto_clean, make_app):
    from support import moto

    api = Api(make_app(**CLOUD, aws_endpoint_url=moto_clean, aws_access_key_id=moto.ACCESS_KEY_ID,
                       aws_secret_access_key=moto.SECRET_ACCESS_KEY, aws_region=moto.REGION))
    cluster = api.new_cluster()
    d = _create(api, cluster)
    released = utcnow() - dt.timedelta(minutes=10)
    _set(d["id"], status=S.ACTIVE, released_at=released)
    logs = moto.client("logs")
    group = cloud_logs.group_name(d["functionName"])
    path = _path(cluster["id"], tail=f"/{d['id']}/logs")
    assert api.client.get(path, headers=api.mgmt).json == {"events": [], "next": None}  # no group yet
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="2026/12/02/[$LATEST]abc")
    now_ms = int(time.time() * 1000)
    lines = ["START RequestId: 1 Version: $LATEST\n", "INIT_START Runtime Version: python:3.13\n",
             "polling svc\n", "ERROR boom\n", "handled 3 calls\n", "END RequestId: 1\n",
             "REPORT RequestId: 1 Duration: 2.0 ms\n", "Task timed out after 60.00 seconds\n", "ERROR again\n"]
    logs.put_log_events(logGroupName=group, logStreamName="2026/12/02/[$LATEST]abc",
                        logEvents=[{"timestamp": now_ms - 60_000 + i, "message": m} for i, m in enumerate(lines)])
    # Before the release: not this deployment's.
    logs.put_log_events(logGroupName=group, logStreamName="2026/12/02/[$LATEST]abc",
                        logEvents=[{"timestamp": now_ms - 3_600_000 * 2, "message": "older deployment\n"}])
    start = now_ms - 3_600_000 * 3
    everything = api.client.get(f"{path}?start={start}", headers=api.mgmt).json
    assert [e["message"] for e in everything["events"]] == ["polling svc", "ERROR boom", "handled 3 calls",
                                                            "ERROR again"]
    assert everything["next"] is None
    errors = api.client.get(f"{path}?filter=ERROR", headers=api.mgmt).json
    assert [e["message"] for e in errors["events"]] == ["ERROR boom", "ERROR again"]
    # Paging: limit 3 per page (noise lines count against a page and are then dropped).
    seen, token, pages = [], None, 0
    while True:
        r = api.client.get(f"{path}?limit=3" + (f"&next={token}" if token else ""), headers=api.mgmt)
        assert r.status_code == 200, r.json
        seen += [e["message"] for e in r.json["events"]]
        pages += 1
        token = r.json["next"]
        if token is None:
            break
        assert pages < 10
    assert pages >= 3 and seen == ["polling svc", "ERROR boom", "handled 3 calls", "ERROR again"]
    assert all(isinstance(e["timestamp"], int) for e in everything["events"])


@pytest.mark.parametrize("backend", ["sqlite"])  # AWS calls: the database plays no part
def test_a_stack_whose_events_were_lost_is_read_back(moto_clean, make_app):
    """SNS lost the events: the leader reads the stack (DescribeStacks) after a while and applies it."""
    from support import moto

    api = Api(make_app(**{**CLOUD, "aws_endpoint_url": moto_clean, "aws_access_key_id": moto.ACCESS_KEY_ID,
                          "aws_secret_access_key": moto.SECRET_ACCESS_KEY, "aws_region": moto.REGION}))
    settings = api.app.extensions["differential"].settings
    cluster = api.new_cluster()
    done, gone, fresh = _create(api, cluster, "done"), _create(api, cluster, "gone"), _create(api, cluster, "fresh")
    body = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"
    moto.client("cloudformation").create_stack(StackName=done["stackName"], TemplateBody=body)
    for d in (done, gone, fresh):
        _deploying(d["id"])
    old = utcnow() - dt.timedelta(minutes=5)
    _set(done["id"], released_at=old)
    _set(gone["id"], released_at=old)
    assert deployment_wakeups.check_stacks(utcnow(), settings) == {"stacksApplied": 2}
    assert _row(done["id"]).status == S.ACTIVE
    assert _row(gone["id"]).status == S.FAILED and "no longer exists" in _row(gone["id"]).reason
    assert _row(fresh["id"]).status == S.DEPLOYING  # released just now: its events may still come
    assert deployment_wakeups.check_stacks(utcnow(), settings) == {"stacksApplied": 0}


def test_deleting_the_cluster_deletes_its_stacks_and_deployments(moto_clean, make_app):
    """DELETE /clusters/:id: the released deployments' stacks (hence their functions) go, then the rows."""
    from support import moto

    api = Api(make_app(**{**CLOUD, "aws_endpoint_url": moto_clean, "aws_access_key_id": moto.ACCESS_KEY_ID,
                          "aws_secret_access_key": moto.SECRET_ACCESS_KEY, "aws_region": moto.REGION}))
    cluster, other = api.new_cluster(), api.new_cluster()
    released, unreleased, kept = _create(api, cluster, "a"), _create(api, cluster, "b"), _create(api, other, "a")
    body = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"
    cfn = moto.client("cloudformation")
    for d in (released, kept):
        cfn.create_stack(StackName=d["stackName"], TemplateBody=body)
        _deploying(d["id"])
    r = api.client.delete(f"/clusters/{cluster['id']}", headers=api.mgmt)
    assert r.status_code == 202 and r.json["finished"] is True, r.json
    live = {s["StackName"] for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"}
    assert released["stackName"] not in live and kept["stackName"] in live
    remaining = db.unit_of_work(lambda: {d.id for d in Deployment.select(Deployment.id)}, transaction=False)
    assert released["id"] not in remaining and unreleased["id"] not in remaining and kept["id"] in remaining
