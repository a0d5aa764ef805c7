"""The SDK's side of the audit's M4 and L9: ids are encoded in paths, and no secret goes over plain
http to another machine unless the caller allows it."""
from __future__ import annotations

import asyncio
import time

import pytest

from differential import AsyncDifferential, ControlPlaneError, Differential, DifferentialError, cli
from differential.transport import Config

ROUND_TRIPPING = ["q?x=1", "h#frag", "pct%2Fx", "100%", "with space", "ünïcødé-✓", "a+b&c=d", "..."]


@pytest.mark.postgres
def test_ids_with_url_characters_run_end_to_end(d, sdk_control_plane, cluster, service_name):
    svc = d.service(service_name, concurrency=4)

    @svc.function
    def twice(value):
        return value * 2

    svc.start()
    try:
        client = d.client(service_name, timeout=30)
        for i, execution_id in enumerate(ROUND_TRIPPING):
            # create, claim and result (the worker posts it to /jobs/<id>/result), then status
            assert client.with_options(execution_id=execution_id).twice(i) == i * 2
            status = d.job(execution_id)
            assert (status.id, status.status, status.outcome()) == (execution_id, "success", i * 2)

        async def read_async():
            async with AsyncDifferential(cluster["apiSecret"], endpoint=sdk_control_plane.url) as ad:
                return [await ad.result(execution_id, timeout=10) for execution_id in ROUND_TRIPPING]

        assert asyncio.run(read_async()) == [i * 2 for i in range(len(ROUND_TRIPPING))]
        assert svc.stats["reported"] == len(ROUND_TRIPPING)  # no result was dropped on a 404 or 405
    finally:
        assert svc.stop(timeout=10)


@pytest.mark.postgres
@pytest.mark.parametrize("execution_id", ["a/b", "..", "line\nbreak"])
def test_ids_that_cannot_round_trip_are_refused_at_create(d, service_name, execution_id):
    started = time.monotonic()
    with pytest.raises(ControlPlaneError) as info:
        d.client(service_name, timeout=30).with_options(execution_id=execution_id).anything()
    assert info.value.status == 400 and "callConfig.executionId" in str(info.value)
    assert time.monotonic() - started < 5  # refused, not retried until the job fails


REMOTE_HTTP = ["http://10.0.0.5:4000", "http://cp.example.org", "HTTP://192.0.2.1:4000/"]
ALLOWED = ["http://127.0.0.1:4000", "http://localhost:4000", "http://[::1]:4000", "https://cp.example.org",
           "https://10.0.0.5"]


@pytest.mark.parametrize("endpoint", REMOTE_HTTP)
def test_a_secret_is_not_sent_over_plain_http_to_another_machine(endpoint, monkeypatch):
    monkeypatch.delenv("DIFFERENTIAL_ALLOW_INSECURE", raising=False)
    started = time.monotonic()
    with Differential("sk_secret", endpoint=endpoint) as d:
        with pytest.raises(DifferentialError) as info:
            d.client("svc").fn()
    assert time.monotonic() - started < 2  # refused before any connection is tried
    assert info.value.code == "INSECURE_ENDPOINT"
    message = str(info.value)
    assert "https://" in message and "allow_insecure=True" in message
    assert "DIFFERENTIAL_ALLOW_INSECURE=1" in message and "--allow-insecure" in message
    with pytest.raises(DifferentialError):
        Config.from_env("sk_secret", endpoint).headers()
    with pytest.raises(DifferentialError):
        _start_a_service(endpoint)


def _start_a_service(endpoint):
    d = Differential("sk_secret", endpoint=endpoint)
    svc = d.service("svc")

    @svc.function
    def fn():
        return 1

    try:
        svc.start()  # refuses before its thread starts
    finally:
        d.close()


@pytest.mark.parametrize("endpoint", REMOTE_HTTP)
def test_allow_insecure_by_argument_or_environment(endpoint, monkeypatch):
    monkeypatch.delenv("DIFFERENTIAL_ALLOW_INSECURE", raising=False)
    assert Config.from_env("sk_secret", endpoint, allow_insecure=True).headers()["authorization"] == "Basic sk_secret"
    monkeypatch.setenv("DIFFERENTIAL_ALLOW_INSECURE", "1")
    assert Config.from_env("sk_secret", endpoint).headers()["authorization"] == "Basic sk_secret"
    monkeypatch.setenv("DIFFERENTIAL_ALLOW_INSECURE", "0")
    with pytest.raises(DifferentialError):
        Config.from_env("sk_secret", endpoint).headers()


@pytest.mark.parametrize("endpoint", ALLOWED)
def test_https_and_this_machine_need_no_permission(endpoint, monkeypatch):
    monkeypatch.delenv("DIFFERENTIAL_ALLOW_INSECURE", raising=False)
    assert Config.from_env("sk_secret", endpoint).headers()["authorization"] == "Basic sk_secret"


def test_the_cli_refuses_plain_http_to_another_machine_unless_allowed(capsys, monkeypatch):
    monkeypatch.delenv("DIFFERENTIAL_ALLOW_INSECURE", raising=False)
    remote = ["--endpoint", "http://0.0.0.0:1", "--api-secret", "sk_secret"]  # 0.0.0.0 is not loopback
    assert cli.main(["jobs", "show", "some-job", *remote]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--allow-insecure" in err and "https://" in err
    assert cli.main(["--management-secret", "sk_management_" + "x" * 40, "clusters", "list",
                     "--endpoint", "http://0.0.0.0:1"]) == cli.EXIT_USAGE
    assert "--allow-insecure" in capsys.readouterr().err
    # Allowed, it is sent: nothing listens there, so the control-plane is unreachable (not refused).
    assert cli.main(["jobs", "show", "some-job", *remote, "--allow-insecure"]) == cli.EXIT_UNAVAILABLE
    assert "cannot reach the control-plane" in capsys.readouterr().err
