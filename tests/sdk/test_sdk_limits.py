"""Concurrency limits from the Python SDK: `@svc.function(concurrency=N)` and
`d.service(name, cluster_concurrency=N)`, enforced by the control-plane across every worker."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest

from differential import Differential


class Overlap:
    """How many calls of a function ran at once, measured inside it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = self.most = self.calls = 0

    def __enter__(self):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.most = max(self.most, self.active)

    def __exit__(self, *exc):
        with self.lock:
            self.active -= 1


def _call_all(client, fn: str, args: list, timeout: float = 60) -> list:
    with concurrent.futures.ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(lambda a: getattr(client, fn)(a), args, timeout=timeout))


@pytest.mark.postgres
def test_a_function_with_concurrency_1_runs_one_call_at_a_time_across_workers(d, service_name):
    serial, free = Overlap(), Overlap()
    workers = []
    for _ in range(2):  # two machines, each with room for eight at once
        svc = d.service(service_name, concurrency=8, poll_ttl_ms=5000)

        @svc.function(concurrency=1)
        def one_at_a_time(i: int) -> int:
            with serial:
                time.sleep(0.2)
            return i

        @svc.function
        def unlimited(i: int) -> int:
            with free:
                time.sleep(0.5)
            return i

        workers.append(svc.start())
    try:
        client = d.client(service_name, timeout=60)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            limited = pool.submit(_call_all, client, "one_at_a_time", list(range(6)))
            others = pool.submit(_call_all, client, "unlimited", list(range(6)))
            assert limited.result(90) == list(range(6))
            assert others.result(90) == list(range(6))
        assert serial.calls == 6 and serial.most == 1, f"{serial.most} calls of a concurrency=1 function overlapped"
        assert free.most > 1, "the function without a limit still runs in parallel"
    finally:
        for svc in workers:
            assert svc.stop(timeout=10)


@pytest.mark.postgres
def test_a_service_limit_holds_across_its_functions_and_shows_in_the_cluster_view(d, service_name,
                                                                                  sdk_control_plane, cluster):
    overlap = Overlap()
    svc = d.service(service_name, concurrency=8, poll_ttl_ms=5000, cluster_concurrency=2)

    @svc.function
    def a(i: int) -> int:
        with overlap:
            time.sleep(0.2)
        return i

    @svc.function(concurrency=1)
    def b(i: int) -> int:
        with overlap:
            time.sleep(0.2)
        return i

    svc.start()
    try:
        client = d.client(service_name, timeout=60)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            got_a = pool.submit(_call_all, client, "a", list(range(4)))
            got_b = pool.submit(_call_all, client, "b", list(range(4)))
            assert got_a.result(90) == list(range(4)) and got_b.result(90) == list(range(4))
        assert overlap.most == 2, f"{overlap.most} calls ran at once on a service limited to 2"
        r = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}/service/{service_name}",
                      headers=sdk_control_plane.management_headers)
        assert r.status_code == 200, r.text
        definition = r.json()["definition"]
        assert definition["concurrency"] == 2
        assert {f["name"]: f.get("concurrency") for f in definition["functions"]} == {"a": None, "b": 1}
    finally:
        assert svc.stop(timeout=10)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 10**7])
def test_bad_limits_are_refused_when_declared(bad):
    d = Differential("sk_test_secret", endpoint="http://127.0.0.1:9")
    svc = d.service("limits")
    with pytest.raises(ValueError, match="concurrency"):
        svc.register(lambda: None, name="fn", concurrency=bad)
    with pytest.raises(ValueError, match="cluster_concurrency"):
        d.service("limits", cluster_concurrency=bad)


def test_the_definition_carries_function_limits():
    svc = Differential("sk_test_secret", endpoint="http://127.0.0.1:9").service("limits")

    @svc.function(concurrency=3)
    def limited() -> None:
        pass

    @svc.function
    def free() -> None:
        pass

    assert [(f["name"], f.get("concurrency")) for f in svc.definition()] == [("limited", 3), ("free", None)]


def test_the_cli_lists_the_limits_with_the_functions():
    from differential.cli import _services_table

    table = _services_table([
        {"name": "billing", "concurrency": 4, "functions": [{"name": "charge", "concurrency": 1}, {"name": "refund"}]},
        {"name": "plain", "functions": [{"name": "a"}, {"name": "b"}]},
    ])
    assert table.splitlines()[0].split() == ["SERVICE", "FUNCTIONS"]
    assert "billing  charge (max 1), refund; service max 4" in table
    assert "plain    a, b" in table
