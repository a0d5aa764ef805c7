"""The deployments page, in process: every service's deployments with status, reason, bundle size
and times; live while one deploys; a deployment's log lines (moto's CloudWatch Logs); escaped
values; another cluster's deployment is not shown."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from app import db
from app.cloud import logs as cloud_logs
from app.engine.states import DeploymentStatus as S
from app.models import Asset, Deployment, utcnow

from console_helpers import MANAGEMENT_SECRET, Console

MGMT = {"Authorization": f"Basic {MANAGEMENT_SECRET}"}

CLOUD = {"ASSET_UPLOAD_BUCKET": "assets", "DEPLOYMENT_TEMPLATE_BUCKET": "templates",
         "DEPLOYMENT_SNS_TOPIC": "arn:aws:sns:us-east-1:123456789012:deployments",
         "DEPLOYMENT_DEFAULT_SERVICE_ROLE": "arn:aws:iam::123456789012:role/cfn-service",
         "DEPLOYMENT_RUNTIME_ROLE": "arn:aws:iam::123456789012:role/lambda-runtime"}


def _cluster(console) -> str:
    r = console.client.post("/clusters", headers=MGMT)
    assert r.status_code == 201, r.json
    return r.json["id"]


def _create(console, cluster_id, service, **body):
    r = console.client.post(f"/clusters/{cluster_id}/service/{service}/deployments", json=body or None,
                            headers=MGMT)
    assert r.status_code == 201, r.json
    return r.json


def _set(deployment_id, **changes):
    db.unit_of_work(lambda: Deployment.update(**changes).where(Deployment.id == deployment_id).execute())


def test_the_page_lists_every_services_deployments(make_app):
    console = Console(make_app(**CLOUD))
    cluster = _cluster(console)
    orders = _create(console, cluster, "orders")
    mail = _create(console, cluster, "<mail>", runtime="python3.13", serviceModule="mail.svc:service")
    _set(orders["id"], status=S.ACTIVE, released_at=utcnow(), activated_at=utcnow())
    _set(mail["id"], status=S.FAILED, reason="the stack ended UPDATE_ROLLBACK_COMPLETE: <b>boom</b>")
    db.unit_of_work(lambda: Asset.insert(id=orders["id"], cluster_id=cluster, kind="service_bundle",
                                         target_id=orders["id"], key=f"service_bundle/{orders['id']}",
                                         content_type="application/zip", status="uploaded", size=3 * 1024 * 1024,
                                         sha256="0" * 64).execute())
    other = _cluster(console)
    hidden = _create(console, other, "orders")
    page = console.get(f"/console/clusters/{cluster}/deployments")
    assert page.status_code == 200
    text = page.text
    assert orders["id"] in text and mail["id"] in text and hidden["id"] not in text
    assert "3.0 MB" in text and "python3.13" in text and "nodejs22.x" in text
    assert "&lt;mail&gt;" in text and "&lt;b&gt;boom&lt;/b&gt;" in text and "<b>boom" not in text
    assert 'status-active' in text and 'status-failed' in text
    assert 'data-live=' not in text  # nothing under way
    assert f'href="/console/clusters/{cluster}/deployments"' in text  # the tab
    _create(console, cluster, "orders")  # uploading: the list refreshes itself
    assert 'id="deployments-live" data-live="3"' in console.get(f"/console/clusters/{cluster}/deployments").text
    missing = console.get(f"/console/clusters/{cluster}/deployments?deployment={hidden['id']}", status=404)
    assert "has no deployment" in missing.text  # another cluster's is named, not shown


def test_the_page_says_when_cloud_deployments_are_off(console):
    cluster = _cluster(console)
    text = console.get(f"/console/clusters/{cluster}/deployments").text
    assert "Cloud deployments are off" in text and "DEPLOYMENT_RUNTIME_ROLE" in text
    assert "No deployment yet" in text


@pytest.mark.parametrize("backend", ["sqlite"])  # AWS calls: the database plays no part
def test_a_deployments_recent_log_lines(moto_clean, make_app):
    from support import moto

    console = Console(make_app(**CLOUD, AWS_ENDPOINT_URL=moto_clean, AWS_ACCESS_KEY_ID=moto.ACCESS_KEY_ID,
                               AWS_SECRET_ACCESS_KEY=moto.SECRET_ACCESS_KEY, AWS_REGION=moto.REGION))
    cluster = _cluster(console)
    d = _create(console, cluster, "orders")
    _set(d["id"], status=S.ACTIVE, released_at=utcnow() - dt.timedelta(minutes=5))
    logs = moto.client("logs")
    group = cloud_logs.group_name(d["functionName"])
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now_ms = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": now_ms - 2000, "message": "START RequestId: 1\n"},
        {"timestamp": now_ms - 1000, "message": "charged <card> 42\n"}])
    text = console.get(f"/console/clusters/{cluster}/deployments?deployment={d['id']}").text
    assert "charged &lt;card&gt; 42" in text and "START RequestId" not in text
    assert d["functionName"] in text
