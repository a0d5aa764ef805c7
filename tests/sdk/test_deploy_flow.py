"""The whole deploy flow, both runtimes, through `differential deploy` run as a subprocess: moto
(S3, CloudFormation, Lambda, SNS, Logs) on 127.0.0.1 and a real control-plane under gunicorn whose
cloud settings point at it. CloudFormation makes the stack and function from the template bucket
and SNS posts the stack events to /events/sns, so the deployment turns active; a call to the
service carries it; the leader invokes the function (moto accepts the invoke: the activity log
records it). moto runs nothing, so the test plays the Lambda runtime: it fetches the function's
code and environment from moto and runs the bundle's handler with them, and the waiting call
completes. Then list/status/logs/rollback/delete with their exit codes."""
from __future__ import annotations

import json
import re
import shutil
import signal
import time
import uuid

import httpx
import pytest

from deploy_helpers import (
    function_code_and_env,
    popen_cli,
    provision_cloud,
    run_cli,
    run_handler,
    subscribe,
    write_node_service,
    write_python_service,
)
from differential import Differential
from support import moto, postgres
from support.server import ControlPlane

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud(moto_endpoint, pg_admin_url):
    """moto emptied and provisioned once for this module, and a control-plane pointed at it."""
    moto.reset()
    settings = provision_cloud()
    database = postgres.create_database("deploy")
    cp = ControlPlane(database_url=database, env={
        **settings, "SWEEP_INTERVAL_SECONDS": "0.5", "DEPLOYMENT_WAKE_INTERVAL_SECONDS": "1",
        "DEPLOYMENT_MAX_WAKEUPS": "100"})
    cp.extra_env["PUBLIC_URL"] = cp.url  # what the deployed function is told to poll
    subscribe(settings["DEPLOYMENT_SNS_TOPIC"], cp.url)
    cp.start()
    yield cp
    cp.stop()
    try:
        postgres.drop_database(database)
    except Exception:
        pass


@pytest.fixture
def cluster(cloud):
    return cloud.create_cluster(f"deploy-{uuid.uuid4().hex[:8]}")


def management(cp, method, path, **kw):
    r = httpx.request(method, cp.url + path, headers=cp.management_headers, timeout=30, **kw)
    assert r.status_code < 400, r.text
    return r.json()


def wait_for_event(cp, cluster_id, kind, deployment_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = management(cp, "GET", f"/clusters/{cluster_id}/activity", params={"limit": 200})
        found = [e for e in page["events"] if e["type"] == kind and e.get("deploymentId") == deployment_id]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no {kind} event for {deployment_id} within {timeout:g} s:\n{cp.log_tail()}")


def deploy_and_serve(cp, cluster, service, source, tmp_path, runtime_prefix):
    """`deploy create` -> active; a call carries the deployment; the leader invokes the function;
    its code and environment from moto, run as Lambda would, complete the call."""
    r = run_cli(cp, cluster["id"], "deploy", "create", service, str(source))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "is active" in r.stdout
    assert "Uploading" in r.stderr  # stderr is not a terminal: a plain line, not a bar
    digest = re.search(r"sha256 ([0-9a-f]{12})", r.stderr).group(1)

    status = json.loads(run_cli(cp, cluster["id"], "deploy", "status", service, "--json").stdout)
    assert status["status"] == "active" and status["runtime"].startswith(runtime_prefix)
    assert status["bundle"]["sha256"].startswith(digest)  # the bytes the CLI built are what the store holds
    dep_id = status["id"]

    with Differential(cluster["apiSecret"], endpoint=cp.url) as d:
        job_id = d.client(service, background=True).greet("Ada")
        job = management(cp, "GET", f"/clusters/{cluster['id']}/jobs/{job_id}")
        assert job["deploymentId"] == dep_id
        wait_for_event(cp, cluster["id"], "deploymentNotified", dep_id)  # the leader invoked it

        env = function_code_and_env(status["functionName"], tmp_path / "task")
        assert env["DIFFERENTIAL_ENDPOINT"] == cp.url and env["DIFFERENTIAL_DEPLOYMENT_ID"] == dep_id
        assert env["DIFFERENTIAL_API_SECRET"] != cluster["apiSecret"]  # a deployment token, not the secret
        out = run_handler(status["runtime"], tmp_path / "task", env)
        assert out["service"] == service and out["stoppedBy"] == "idle"
        return dep_id, d.result(job_id, timeout=30)


def test_python_service_deploys_and_serves_its_calls(cloud, cluster, tmp_path):
    service = f"py{uuid.uuid4().hex[:8]}"
    source = write_python_service(tmp_path / "src", name=service)
    dep_id, result = deploy_and_serve(cloud, cluster, service, source, tmp_path, "python")
    assert result == "Hello, Ada"
    machines = management(cloud, "GET", f"/clusters/{cluster['id']}")["machines"]
    assert dep_id in {m["deploymentId"] for m in machines}


@pytest.mark.node
@pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")
def test_node_service_deploys_and_serves_its_calls(cloud, cluster, tmp_path):
    service = f"node{uuid.uuid4().hex[:8]}"
    source = write_node_service(tmp_path / "src", name=service)
    _, result = deploy_and_serve(cloud, cluster, service, source, tmp_path, "nodejs")
    assert result == "Hello, Ada!"  # the published @differentialhq/core@3.18.0, inside the bundle


def put_function_logs(function_name: str, lines: list[str]) -> None:
    """What the function's runs would have written to CloudWatch Logs (moto runs nothing)."""
    logs = moto.client("logs")
    group = f"/aws/lambda/{function_name}"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"2026/12/02/[$LATEST]{uuid.uuid4().hex}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])


def test_list_status_logs_rollback_delete(cloud, cluster, tmp_path):
    service = f"mg{uuid.uuid4().hex[:8]}"
    cli = lambda *argv: run_cli(cloud, cluster["id"], *argv)  # noqa: E731
    source = write_python_service(tmp_path / "src", name=service, requirements="")
    first = cli("deploy", "create", service, str(source), "--json")
    assert first.returncode == 0, first.stderr
    (source / "greeter" / "app.py").write_text((source / "greeter" / "app.py").read_text().replace("Hello", "Hi"))
    second = cli("deploy", "create", service, str(source), "--json")
    assert second.returncode == 0, second.stderr
    d1, d2 = json.loads(first.stdout), json.loads(second.stdout)
    assert d1["bundle"]["sha256"] != d2["bundle"]["sha256"]

    listed = json.loads(cli("deploy", "list", service, "--json").stdout)["deployments"]
    assert [(d["id"], d["status"]) for d in listed] == [(d2["id"], "active"), (d1["id"], "inactive")]
    text = cli("deploy", "list", service)
    assert text.returncode == 0 and d1["id"] in text.stdout and d2["id"] in text.stdout
    status = cli("deploy", "status", service)
    assert status.returncode == 0 and d2["id"] in status.stdout and "active" in status.stdout
    assert json.loads(cli("deploy", "status", service, d1["id"], "--json").stdout)["status"] == "inactive"
    missing = cli("deploy", "status", service, "no-such-deployment")
    assert missing.returncode == 4 and "no-such-deployment" in missing.stderr

    put_function_logs(d2["functionName"], [
        "INIT_START Runtime Version: python:3.13.v1", "START RequestId: 1 Version: $LATEST",
        "serving greet", "ERROR boom in greet", "END RequestId: 1", "REPORT RequestId: 1 Duration: 3.1 ms"])
    logs = json.loads(cli("deploy", "logs", service, "--json").stdout)
    assert logs["deploymentId"] == d2["id"]
    assert [e["message"] for e in logs["events"]] == ["serving greet", "ERROR boom in greet"]  # no runtime noise
    paged = cli("deploy", "logs", service, d2["id"], "--limit", "1")  # one line a page: follows `next`
    assert paged.returncode == 0 and [line.split("  ", 1)[1] for line in paged.stdout.splitlines()] == \
        ["serving greet", "ERROR boom in greet"]
    filtered = json.loads(cli("deploy", "logs", service, "--filter", "ERROR", "--json").stdout)
    assert [e["message"] for e in filtered["events"]] == ["ERROR boom in greet"]
    follow = popen_cli(cloud, cluster["id"], "deploy", "logs", service, "--follow", "--json", "--interval", "0.3")
    try:
        seen = [json.loads(follow.stdout.readline())["message"] for _ in range(2)]  # what is there already
        put_function_logs(d2["functionName"], ["a later line"])
        seen.append(json.loads(follow.stdout.readline())["message"])  # then what comes
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C
        assert follow.wait(timeout=20) == 0
    assert seen == ["serving greet", "ERROR boom in greet", "a later line"]

    back = cli("deploy", "rollback", service)  # default: the inactive one before the active one
    assert back.returncode == 0, back.stderr
    assert f"Deployment {d1['id']} of {service} is active" in back.stdout
    listed = json.loads(cli("deploy", "list", service, "--json").stdout)["deployments"]
    assert [(d["id"], d["status"]) for d in listed] == [(d2["id"], "inactive"), (d1["id"], "active")]
    again = cli("deploy", "rollback", service, d1["id"])  # it is the active one: the server says no
    assert again.returncode == 7 and d1["id"] in again.stderr

    refused = cli("deploy", "delete", service)  # no terminal to confirm on
    assert refused.returncode == 2 and "--yes" in refused.stderr
    stack = d1["stackName"]
    assert moto.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    deleted = cli("deploy", "delete", service, "--yes", "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert sorted(json.loads(deleted.stdout)["deleted"]) == sorted([d1["id"], d2["id"]])
    cfn, lam = moto.client("cloudformation"), moto.client("lambda")
    with pytest.raises(cfn.exceptions.ClientError, match="does not exist"):
        cfn.describe_stacks(StackName=stack)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=d1["functionName"])
    assert all(d["status"] != "active" for d in json.loads(cli("deploy", "list", service, "--json").stdout)
               ["deployments"])


def test_a_control_plane_without_cloud_settings_says_so(sdk_control_plane):
    cluster = sdk_control_plane.create_cluster("no-cloud")
    r = run_cli(sdk_control_plane, cluster["id"], "deploy", "delete", "svc", "--yes")
    assert r.returncode == 7 and "cloud deployments are off" in r.stderr and "ASSET_UPLOAD_BUCKET" in r.stderr
