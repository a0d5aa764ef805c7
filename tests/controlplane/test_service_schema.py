"""PUT /clusters/:id/service/:service/schema, as the original, without its defect (R10, R11): a
service created this way does not break the cluster or service views, the schema is served back
(GET of the same path, and the service view), and the definition workers send stays apart from it."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from app.engine import clusters
from app.engine.maintenance import Prune
from app.models import utcnow

from cp_helpers import MANAGEMENT_SECRET

SCHEMA = {"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}


def put(api, cluster_id: str, service: str, schema, headers=None):
    return api.client.put(f"/clusters/{cluster_id}/service/{service}/schema",
                          headers=api.mgmt if headers is None else headers, json={"schema": schema})


def get(api, cluster_id: str, service: str):
    return api.client.get(f"/clusters/{cluster_id}/service/{service}/schema", headers=api.mgmt)


@pytest.mark.parametrize("given", [json.dumps(SCHEMA), SCHEMA], ids=["as-text", "as-json"])
def test_put_then_read_with_a_schema_only_service_in_both_views(api, given):
    cluster = api.new_cluster()
    r = put(api, cluster["id"], "billing", given)
    assert r.status_code == 204 and r.data == b""
    r = get(api, cluster["id"], "billing")
    assert r.status_code == 200 and r.json == {"service": "billing", "schema": SCHEMA}
    details = api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt)
    assert details.status_code == 200, details.json
    assert details.json["definitions"] == [{"name": "billing", "functions": []}]
    service = api.client.get(f"/clusters/{cluster['id']}/service/billing", headers=api.mgmt)
    assert service.status_code == 200, service.json
    assert service.json == {"definition": {"name": "billing", "functions": []}, "jobs": [], "schema": SCHEMA}


def test_the_workers_definition_and_the_schema_stay_apart(api):
    cluster = api.new_cluster()
    assert put(api, cluster["id"], "svc", SCHEMA).status_code == 204
    api.claim(cluster, service="svc")  # a poll with its function list
    view = api.client.get(f"/clusters/{cluster['id']}/service/svc", headers=api.mgmt).json
    assert view["definition"]["functions"] == [{"name": "fn"}] and view["schema"] == SCHEMA
    r = api.client.post("/jobs-request", headers=api.headers(cluster, "m2"), json={"service": "svc", "ttl": 0})
    assert r.status_code == 200  # a poll without functions
    assert put(api, cluster["id"], "svc", {"type": "null"}).status_code == 204  # replaced
    view = api.client.get(f"/clusters/{cluster['id']}/service/svc", headers=api.mgmt).json
    assert view["definition"]["functions"] == [{"name": "fn"}] and view["schema"] == {"type": "null"}
    # a service no one put a schema for shows none
    api.claim(cluster, service="plain")
    assert api.client.get(f"/clusters/{cluster['id']}/service/plain", headers=api.mgmt).json["schema"] is None
    r = get(api, cluster["id"], "plain")
    assert r.status_code == 200 and r.json == {"service": "plain", "schema": None}
    r = get(api, cluster["id"], "never-seen")
    assert r.status_code == 404 and r.json["error"]["code"] == "service_not_found"


@pytest.mark.parametrize("body, field", [
    ({"schema": "{not json"}, "schema"),
    ({"schema": "[1, 2]"}, "schema"),
    ({"schema": [1, 2]}, "schema"),
    ({"schema": 3}, "schema"),
    ({"schema": None}, "schema"),
    ({}, "schema"),
    ({"schema": "{}", "extra": 1}, "extra"),
    ({"schema": json.dumps({"description": "x" * clusters.MAX_SCHEMA_BYTES})}, "schema"),
])
def test_bad_input_is_400_naming_the_field_and_stores_nothing(api, body, field):
    cluster = api.new_cluster()
    r = api.client.put(f"/clusters/{cluster['id']}/service/svc/schema", headers=api.mgmt, json=body)
    assert r.status_code == 400, r.json
    assert field in json.dumps(r.json["error"]["details"])
    assert get(api, cluster["id"], "svc").status_code == 404  # no service was created
    assert api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt).json["definitions"] == []


def test_a_body_over_the_routes_limit_is_413_and_a_bad_service_name_400(api):
    cluster = api.new_cluster()
    huge = json.dumps({"schema": {"description": "x" * (3 * clusters.MAX_SCHEMA_BYTES)}})
    r = api.client.put(f"/clusters/{cluster['id']}/service/svc/schema", headers={**api.mgmt, "Content-Type":
                       "application/json"}, data=huge)
    assert r.status_code == 413
    r = put(api, cluster["id"], "bad\x01name", SCHEMA)
    assert r.status_code == 400 and "service_name" in r.json["error"]["message"]


def test_unknown_cluster_404_wrong_credentials_401_and_each_cluster_its_own(api):
    a, b = api.new_cluster(), api.new_cluster()
    r = put(api, "cluster-none-0000000000", "svc", SCHEMA)
    assert r.status_code == 404 and r.json["error"]["code"] == "cluster_not_found"
    assert get(api, "cluster-none-0000000000", "svc").status_code == 404
    for header in ({}, {"Authorization": f"Basic {a['apiSecret']}"}, {"Authorization": f"Basic {MANAGEMENT_SECRET}x"}):
        assert put(api, a["id"], "svc", SCHEMA, headers=header).status_code == 401
        assert api.client.get(f"/clusters/{a['id']}/service/svc/schema", headers=header).status_code == 401
    assert put(api, a["id"], "svc", SCHEMA).status_code == 204
    assert get(api, b["id"], "svc").status_code == 404  # another cluster's same-named service has none
    assert api.client.get(f"/clusters/{b['id']}", headers=api.mgmt).json["definitions"] == []


def test_prune_keeps_a_service_whose_schema_an_operator_put(api):
    cluster = api.new_cluster()
    assert put(api, cluster["id"], "kept", SCHEMA).status_code == 204
    api.claim(cluster, service="unheard")  # polled once, then never again: pruned after the retention
    Prune(retention_days=1).run_once(utcnow() + dt.timedelta(days=2))
    names = [d["name"] for d in api.client.get(f"/clusters/{cluster['id']}", headers=api.mgmt).json["definitions"]]
    assert names == ["kept"]
    assert get(api, cluster["id"], "kept").json["schema"] == SCHEMA
