"""The deployment flow end to end: the real control-plane under gunicorn (two replicas on one
database) against moto on 127.0.0.1 (S3, SNS, CloudFormation, Lambda, IAM).

moto's CloudFormation makes the stack and the function from the template bucket and posts the
stack events through SNS to /events/sns inside the CreateStack/UpdateStack call (its signatures
differ from AWS's, so SNS_VERIFY_SIGNATURES is off; its ClientRequestToken is 'None', which
exercises the fallback). A failure cannot be produced on moto: the rollback is a synthetic
message. The function is played here only as far as the control-plane sees it: its environment
(read back from moto) polls with the deployment token and answers the waiting call; the bundle's
own handlers, per runtime, are the CLI's tests (tests/sdk)."""
from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from support import moto
from support.server import ControlPlane

ASSETS, TEMPLATES = "flow-assets", "flow-templates"
TEMPLATE = Path(__file__).resolve().parents[2] / "deployment-templates" / "lambda-cfn.yaml"
WAKE_INTERVAL = 1.5


def _zip(text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("differential-index.js", text)
    return out.getvalue()


def _wait(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def cloud(moto_clean, tmp_path):
    s3, iam, sns = moto.client("s3"), moto.client("iam"), moto.client("sns")
    for bucket in (ASSETS, TEMPLATES):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=TEMPLATES, Key="lambda-cfn.yaml", Body=TEMPLATE.read_bytes())
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                                "Principal": {"Service": "lambda.amazonaws.com"}}]})
    runtime_role = iam.create_role(RoleName="lambda-runtime", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    service_role = iam.create_role(RoleName="cfn-service", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    topic = sns.create_topic(Name="deployments")["TopicArn"]
    database = f"sqlite:///{tmp_path}/shared.db"
    first = ControlPlane(database_url=database)
    env = {**moto.env(), "ASSET_UPLOAD_BUCKET": ASSETS, "DEPLOYMENT_TEMPLATE_BUCKET": TEMPLATES,
           "DEPLOYMENT_SNS_TOPIC": topic, "DEPLOYMENT_DEFAULT_SERVICE_ROLE": service_role,
           "DEPLOYMENT_RUNTIME_ROLE": runtime_role, "SNS_VERIFY_SIGNATURES": "false", "PUBLIC_URL": first.url,
           "SWEEP_INTERVAL_SECONDS": "0.2", "DEPLOYMENT_WAKE_INTERVAL_SECONDS": str(WAKE_INTERVAL),
           "DEPLOYMENT_MAX_WAKEUPS": "1000"}
    first.extra_env.update(env)
    first.start()
    second = ControlPlane(database_url=database, management_secret=first.management_secret, env=env)
    second.start()
    subscription = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=f"{first.url}/events/sns",
                                 ReturnSubscriptionArn=True)["SubscriptionArn"]
    try:
        yield {"cp": first, "replica": second, "topic": topic, "subscription": subscription, "db": database,
               "runtime_role": runtime_role}
    finally:
        second.stop()
        first.stop()


class Client:
    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.http = httpx.Client(base_url=cp.url, headers=cp.management_headers, timeout=30)

    def deploy(self, cluster_id: str, service: str, body: dict | None, bundle: bytes) -> dict:
        r = self.http.post(f"/clusters/{cluster_id}/service/{service}/deployments", json=body)
        assert r.status_code == 201, r.text
        deployment = r.json()
        r = self.http.post(f"/clusters/{cluster_id}/assets", json={"type": "service_bundle", "target": deployment["id"]})
        assert r.status_code == 201, r.text
        upload = r.json()
        put = httpx.put(upload["presignedUrl"], content=bundle, headers=upload["headers"], timeout=30)
        assert put.status_code == 200, put.text
        return deployment

    def release(self, cluster_id, service, deployment_id, action="release") -> dict:
        r = self.http.post(f"/clusters/{cluster_id}/service/{service}/deployments/{deployment_id}/{action}")
        assert r.status_code == 200, r.text
        return r.json()

    def get(self, cluster_id, service, deployment_id) -> dict:
        r = self.http.get(f"/clusters/{cluster_id}/service/{service}/deployments/{deployment_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def activity(self, cluster_id) -> list[dict]:
        r = self.http.get(f"/clusters/{cluster_id}/activity?limit=1000")
        assert r.status_code == 200, r.text
        return r.json()["events"]


def _notified(client: Client, cluster_id: str, deployment_id: str) -> list[dict]:
    return [e for e in client.activity(cluster_id)
            if e["type"] == "deploymentNotified" and e["deploymentId"] == deployment_id]


def _rollback_message(topic: str, stack: str) -> dict:
    lines = {"StackId": f"arn:aws:cloudformation:us-east-1:123456789012:stack/{stack}/x", "StackName": stack,
             "LogicalResourceId": stack, "ResourceType": "AWS::CloudFormation::Stack",
             "ResourceStatus": "UPDATE_ROLLBACK_COMPLETE", "ResourceStatusReason": "None", "ClientRequestToken": "None"}
    return {"Type": "Notification", "MessageId": "synthetic-rollback", "TopicArn": topic,
            "Subject": "AWS CloudFormation Notification", "Message": "\n".join(f"{k}='{v}'" for k, v in lines.items()),
            "Timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "SignatureVersion": "2", "Signature": "x",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem"}


def test_the_deployment_flow_on_moto(cloud):
    cp, replica, topic = cloud["cp"], cloud["replica"], cloud["topic"]
    client = Client(cp)
    cluster = client.http.post("/clusters").json()
    cid, secret = cluster["id"], cluster["apiSecret"]
    caller = {"Authorization": f"Basic {secret}"}
    cfn, lam, s3 = moto.client("cloudformation"), moto.client("lambda"), moto.client("s3")

    # Create, upload through the presigned URL, release: moto makes the stack, SNS makes it active.
    first = client.deploy(cid, "orders", {"runtime": "nodejs22.x"}, _zip("first"))
    released = client.release(cid, "orders", first["id"])
    assert released["releasedAt"] and released["bundle"]["size"] > 0
    first = _wait(lambda: (d := client.get(cid, "orders", first["id"]))["status"] == "active" and d, "active")
    stack = cfn.describe_stacks(StackName=first["stackName"])["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert secret not in json.dumps(stack["Parameters"])  # the cluster secret is no stack parameter
    config = lam.get_function(FunctionName=first["functionName"])["Configuration"]
    env = config["Environment"]["Variables"]
    assert config["Runtime"] == "nodejs22.x" and config["Handler"] == "differential-index.handler"
    assert env["DIFFERENTIAL_DEPLOYMENT_ID"] == first["id"] and env["DIFFERENTIAL_ENDPOINT"] == cp.url
    assert env["DIFFERENTIAL_API_SECRET"].startswith("dpl_sk_") and env["DIFFERENTIAL_API_SECRET"] != secret

    # A call to the service carries the deployment; the leader (of four processes) wakes the function
    # once an interval, no more.
    r = httpx.post(f"{cp.url}/jobs", headers=caller, json={"service": "orders", "targetFn": "f", "targetArgs": "kA=="})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with sqlite3.connect(cloud["db"].removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT deployment_id FROM jobs WHERE id = ?", (job_id,)).fetchone() == (first["id"],)
    _wait(lambda: len(_notified(client, cid, first["id"])) >= 3, "three wake-ups", timeout=30)
    notified = _notified(client, cid, first["id"])
    times = sorted(dt.datetime.fromisoformat(e["meta"]["wokenAt"]) for e in notified)  # the leader's clock
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= WAKE_INTERVAL for gap in gaps), gaps  # two replicas, one invoke per interval
    assert all(e["meta"]["statusCode"] == 202 and e["meta"]["pendingJobs"] == 1 for e in notified)

    # The function, as moto configured it, polls with its token and answers the call.
    worker = {"Authorization": f"Basic {env['DIFFERENTIAL_API_SECRET']}", "x-machine-id": "lambda-1",
              "x-deployment-id": env["DIFFERENTIAL_DEPLOYMENT_ID"]}
    claimed = httpx.post(f"{replica.url}/jobs-request", headers=worker, json={"service": "orders", "ttl": 0}).json()
    assert [j["id"] for j in claimed] == [job_id]
    r = httpx.post(f"{cp.url}/jobs/{job_id}/result", headers=worker, json={"result": "oA==", "resultType": "resolution"})
    assert r.status_code == 204
    assert httpx.get(f"{cp.url}/jobs/{job_id}?ttl=0", headers=caller).json()["status"] == "success"
    assert httpx.post(f"{cp.url}/jobs", headers=worker, json={"service": "orders", "targetFn": "f",
                                                              "targetArgs": "kA=="}).status_code == 403

    # A second deployment: the stack is updated, the first turns inactive.
    second = client.deploy(cid, "orders", None, _zip("second"))
    client.release(cid, "orders", second["id"])
    _wait(lambda: client.get(cid, "orders", second["id"])["status"] == "active", "second active")
    assert client.get(cid, "orders", first["id"])["status"] == "inactive"
    env = lam.get_function(FunctionName=first["functionName"])["Configuration"]["Environment"]["Variables"]
    assert env["DIFFERENTIAL_DEPLOYMENT_ID"] == second["id"]

    # A failed update (synthetic: moto cannot fail one) leaves the second active.
    moto.client("sns").unsubscribe(SubscriptionArn=cloud["subscription"])
    third = client.deploy(cid, "orders", None, _zip("third"))
    assert client.release(cid, "orders", third["id"])["status"] == "deploying"
    conflict = client.http.post(f"/clusters/{cid}/service/orders/deployments/{first['id']}/rollback")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "deployment_in_progress"
    r = httpx.post(f"{cp.url}/events/sns", content=json.dumps(_rollback_message(topic, first["stackName"])),
                   headers={"Content-Type": "text/plain; charset=UTF-8"})
    assert r.status_code == 200 and r.json()["outcome"] == "failed", r.text
    assert client.get(cid, "orders", third["id"])["status"] == "failed"
    assert "UPDATE_ROLLBACK_COMPLETE" in client.get(cid, "orders", third["id"])["reason"]
    assert client.get(cid, "orders", second["id"])["status"] == "active"
    moto.client("sns").subscribe(TopicArn=topic, Protocol="http", Endpoint=f"{replica.url}/events/sns")

    # Roll back to the first: released again, active once its update succeeds.
    assert client.release(cid, "orders", first["id"], "rollback")["status"] == "deploying"
    _wait(lambda: client.get(cid, "orders", first["id"])["status"] == "active", "rolled back")
    assert client.get(cid, "orders", second["id"])["status"] == "inactive"
    env = lam.get_function(FunctionName=first["functionName"])["Configuration"]["Environment"]["Variables"]
    assert env["DIFFERENTIAL_DEPLOYMENT_ID"] == first["id"]
    listed = client.http.get(f"/clusters/{cid}/service/orders/deployments").json()["deployments"]
    assert [d["id"] for d in listed] == [third["id"], second["id"], first["id"]]
    assert {d["id"] for d in client.http.get(f"/clusters/{cid}").json()["deployments"]} == \
        {first["id"], second["id"], third["id"]}

    # Delete: the stack, the function and every bundle go; the deployments stay listed, inactive.
    r = client.http.delete(f"/clusters/{cid}/service/orders/deployments")
    assert r.status_code == 200, r.text
    assert set(r.json()["deleted"]) == {first["id"], second["id"], third["id"]}
    assert r.json()["stackName"] == first["stackName"]
    stacks = cfn.list_stacks()["StackSummaries"]
    assert {s["StackStatus"] for s in stacks if s["StackName"] == first["stackName"]} <= {"DELETE_COMPLETE"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=first["functionName"])
    assert s3.list_objects_v2(Bucket=ASSETS, Prefix="service_bundle/").get("KeyCount", 0) == 0
    statuses = {d["id"]: d["status"] for d in client.http.get(f"/clusters/{cid}/service/orders/deployments")
                .json()["deployments"]}
    assert statuses == {first["id"]: "inactive", second["id"]: "inactive", third["id"]: "failed"}
    # Its token went with it (within the per-process cache's few seconds).
    _wait(lambda: httpx.post(f"{cp.url}/jobs-request", headers=worker, json={"service": "orders", "ttl": 0})
          .status_code == 401, "the token refused", timeout=10)

    expected = {"deploymentCreated", "deploymentUploaded", "deploymentInitiated", "deploymentResulted",
                "deploymentInactivated", "deploymentNotified", "deploymentDeleted"}
    # Each process writes its activity events in batches, every half second.
    _wait(lambda: expected <= {e["type"] for e in client.activity(cid)}, "every step's activity event", timeout=10)
