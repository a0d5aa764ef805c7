"""One cluster's secret never reaches another cluster's jobs."""
from __future__ import annotations


def test_a_cluster_secret_cannot_read_claim_complete_or_list_another_clusters_jobs(api):
    a, b = api.new_cluster(), api.new_cluster()
    job_b = api.call(b, service="svc", args="c2VjcmV0")
    # read
    r = api.client.get(f"/jobs/{job_b}?ttl=0", headers=api.headers(a))
    assert r.status_code == 404
    r = api.client.post("/batch-jobs-status-request", headers=api.headers(a), json={"jobIds": [job_b], "ttl": 0})
    assert r.status_code == 200 and r.json == []
    # claim: same service name, other cluster
    assert api.claim(a, service="svc") == []
    # complete: even a machine id that b's worker uses
    api.claim(b, machine="shared-name")
    api.result(a, job_b, machine="shared-name", value="forged")
    assert api.status(b, job_b)["status"] == "running"
    # the same execution id in two clusters names two jobs
    assert api.call(a, executionId=job_b) == job_b
    assert api.status(a, job_b)["status"] == "pending"
    assert api.status(b, job_b)["status"] == "running"
    # list: management views are per cluster
    details_a = api.client.get(f"/clusters/{a['id']}", headers=api.mgmt).json
    assert [(j["id"], j["status"]) for j in details_a["jobs"]] == [(job_b, "pending")]
    details_b = api.client.get(f"/clusters/{b['id']}", headers=api.mgmt).json
    assert [(j["id"], j["status"]) for j in details_b["jobs"]] == [(job_b, "running")]
    # and b's job still completes normally
    api.result(b, job_b, machine="shared-name", value="real")
    assert api.status(b, job_b)["result"] == "real"


def test_cluster_ids_and_secrets_are_unguessable(api):
    clusters = [api.new_cluster() for _ in range(5)]
    secrets_ = {c["apiSecret"] for c in clusters}
    assert len(secrets_) == 5 and all(s.startswith("sk_") and len(s) >= 64 for s in secrets_)
    assert len({c["id"] for c in clusters}) == 5
    assert all(len(c["id"].rsplit("-", 1)[1]) == 10 for c in clusters)
