"""Cluster authentication: a refused secret is remembered briefly, so retrying it costs no
database lookup each time (audit L5), and a new cluster's secret works at once."""
from __future__ import annotations

import secrets

import pytest

from app.api import auth
from app.engine import clusters, ids


@pytest.fixture(autouse=True)
def no_failures_remembered():
    auth.forget_failures()
    yield
    auth.forget_failures()


@pytest.fixture
def lookups(monkeypatch):
    """The secrets that reached the database lookup."""
    seen = []
    real = clusters.cluster_for_secret
    monkeypatch.setattr(clusters, "cluster_for_secret", lambda secret: seen.append(secret) or real(secret))
    return seen


def test_a_wrong_secret_retried_is_looked_up_once(api, lookups):
    c = api.new_cluster()
    wrong = {"Authorization": "Basic sk_" + "0" * 64}
    for _ in range(20):
        r = api.client.get("/jobs/x?ttl=0", headers=wrong)
        assert r.status_code == 401 and r.json["error"]["code"] == "invalid_credential"
    assert lookups == ["sk_" + "0" * 64]
    assert api.client.get("/jobs/x?ttl=0", headers=api.headers(c)).status_code == 404  # the right one still works


def test_a_refused_secret_is_looked_up_again_after_the_ttl():
    now = [100.0]
    failures = auth._RecentFailures(ttl=10, size=8, clock=lambda: now[0])
    failures.add(b"k")
    assert b"k" in failures
    now[0] += 10.5
    assert b"k" not in failures and len(failures) == 0


def test_the_remembered_failures_are_bounded():
    failures = auth._RecentFailures(ttl=60, size=auth.FAILURE_CACHE_SIZE)
    for n in range(auth.FAILURE_CACHE_SIZE + 500):
        failures.add(n.to_bytes(4, "big"))
    assert len(failures) == auth.FAILURE_CACHE_SIZE == 4096
    assert (0).to_bytes(4, "big") not in failures  # the oldest went first
    assert (auth.FAILURE_CACHE_SIZE + 499).to_bytes(4, "big") in failures


def test_creating_a_cluster_forgets_the_failures(api, monkeypatch):
    secret = "sk_" + secrets.token_hex(32)  # the positive cache outlives an app: a new one each run
    headers = {"Authorization": f"Basic {secret}"}
    assert api.client.get("/jobs/x?ttl=0", headers=headers).status_code == 401  # refused, remembered
    monkeypatch.setattr(ids, "api_secret", lambda: secret)  # the next cluster gets exactly that secret
    api.new_cluster()
    assert api.client.get("/jobs/x?ttl=0", headers=headers).status_code == 404  # known now, at once


def test_a_wrong_token_retried_on_execute_is_looked_up_once_of_each_kind(api, lookups, monkeypatch):
    """Audit L5 on the caller route: a refused token costs no database lookup per request, and its
    refusal as an access point is remembered apart from the cluster secrets' (S3)."""
    from app.engine import access_points

    grants = []
    real = access_points.grant_for_token
    monkeypatch.setattr(access_points, "grant_for_token", lambda token: grants.append(token) or real(token))
    c = api.new_cluster()
    wrong = {"Authorization": "Bearer sk_ap_" + "0" * 64}
    for _ in range(20):
        r = api.client.post(f"/clusters/{c['id']}/execute", headers=wrong, json={"service": "s", "function": "f"})
        assert r.status_code == 401 and r.json["error"]["code"] == "invalid_credential"
    assert grants == ["sk_ap_" + "0" * 64] and lookups == ["sk_ap_" + "0" * 64]
    r = api.client.post(f"/clusters/{c['id']}/execute", headers=api.headers(c),
                        json={"service": "s", "function": "f", "waitSeconds": 0})
    assert r.status_code == 202  # the cluster's own secret still works
