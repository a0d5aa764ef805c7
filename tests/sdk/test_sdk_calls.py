"""Python caller -> control-plane (real gunicorn on PostgreSQL) -> Python worker, and back."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import threading
import time

import httpx
import pytest

from differential import (
    AsyncDifferential, CallTimeoutError, Differential, JobFailedError, NotFoundError, RemoteError,
    SerializationError,
)

UTC = dt.timezone.utc
pytestmark = pytest.mark.postgres


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()

    def hit(self, key):
        with self.lock:
            self.counts[key] += 1


class InsufficientFunds(Exception):
    def __init__(self, message, balance):
        super().__init__(message)
        self.code = "E_FUNDS"
        self.balance = balance


@pytest.fixture
def running(d, service_name):
    """A started service `echo`-style on its own name; stopped (and checked clean) after the test."""
    calls = Counter()
    svc = d.service(service_name, concurrency=8)

    @svc.function
    def echo(*values):
        calls.hit("echo")
        return list(values)

    @svc.function
    def identity(value):
        calls.hit(("identity", json.dumps(value, default=str)))
        return value

    @svc.function
    def withdraw(amount: int) -> int:
        raise InsufficientFunds(f"cannot withdraw {amount}", balance=12)

    @svc.function
    def count(tag: str) -> int:
        calls.hit(tag)
        return calls.counts[tag]

    @svc.function
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @svc.function
    async def add_async(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    @svc.function
    def returns_set():
        return {1, 2}

    svc.start()
    yield svc, calls
    assert svc.stop(timeout=10)


ALL_TYPES = [
    None, True, False, 0, 1, -1, 127, 255, 65536, 2**31, -(2**31), 2**40, -(2**40), 2**63 - 1, -(2**63), 2**64 - 1,
    0.5, -1.25, 1e300, float("inf"), float("-inf"), "", "hello", "é日本🎉", "x" * 100_000,
    b"", b"\x00\x01\xff", bytes(range(256)) * 100, [], [1, [2, [3, []]]], {}, {"a": {"b": [None, True]}},
    dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    dt.datetime(1900, 1, 1, tzinfo=UTC), dt.datetime(2500, 1, 1, tzinfo=UTC),
    {"mixed": [1, 2.5, "s", b"b", None, dt.datetime(2020, 2, 2, tzinfo=UTC), {"deep": [[[]]]}]},
    {"iv": "not an encryption envelope", "encrypted": "just data"},  # kills the published SDK's poller
]


def test_every_supported_type_round_trips(d, running, service_name):
    client = d.client(service_name, timeout=30)
    for value in ALL_TYPES:
        got = client.identity(value)
        assert got == value and type(got) is type(value), value
    assert client.echo(*ALL_TYPES) == ALL_TYPES  # and all of them at once, positionally
    nan = client.identity(float("nan"))
    assert nan != nan


def test_exception_round_trips_with_name_message_code_stack_and_props(d, running, service_name):
    with pytest.raises(RemoteError) as info:
        d.client(service_name, timeout=30).withdraw(50)
    err = info.value
    assert err.name == "InsufficientFunds" and err.message == "cannot withdraw 50" and err.code == "E_FUNDS"
    assert err.details["balance"] == 12
    assert "Traceback (most recent call last)" in err.stack and "InsufficientFunds: cannot withdraw 50" in err.stack
    assert "in withdraw" in err.stack and "differential/worker.py" not in err.stack
    assert err.job_id and d.job(err.job_id).status == "success"  # a raised function is a finished job


def test_unserializable_return_value_is_a_rejection_not_a_dead_worker(d, running, service_name):
    client = d.client(service_name, timeout=30)
    with pytest.raises(RemoteError) as info:
        client.returns_set()
    assert info.value.name == "SerializationError" and "set cannot cross the wire" in info.value.message
    assert client.add_async(2, 3) == 5  # the worker is still serving


def test_unknown_function_is_rejected_by_the_worker(d, running, service_name):
    with pytest.raises(RemoteError, match="Function was not registered. name='nope'"):
        d.client(service_name, timeout=30).nope()


def test_unsendable_argument_is_refused_before_anything_is_sent(d, running, service_name, sdk_control_plane, cluster):
    with pytest.raises(SerializationError, match=r"args\[1\]\['k'\]"):
        d.client(service_name).identity(1, {"k": object()})
    with pytest.raises(SerializationError, match="naive datetime"):
        d.client(service_name).identity(dt.datetime(2024, 1, 1))
    details = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}",
                        headers=sdk_control_plane.management_headers, timeout=10).json()
    assert details["jobs"] == []


def test_schema_is_sent_with_the_function_list(running, service_name, sdk_control_plane, cluster):
    r = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}/service/{service_name}",
                  headers=sdk_control_plane.management_headers, timeout=10)
    assert r.status_code == 200
    functions = {f["name"]: f for f in r.json()["definition"]["functions"]}
    assert set(functions) >= {"echo", "identity", "withdraw", "count", "sleep", "add_async"}
    schema = json.loads(functions["add_async"]["schema"])
    assert schema["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
    assert schema["required"] == ["a", "b"]


def test_same_execution_id_runs_the_function_once(d, running, service_name):
    svc, calls = running
    client = d.client(service_name, timeout=30)
    first = client.with_options(execution_id="pay-order-42").count("idem")
    second = client.with_options(execution_id="pay-order-42").count("idem")
    assert first == second == 1
    assert calls.counts["idem"] == 1
    assert client.with_options(execution_id="pay-order-43").count("idem") == 2  # a new id runs again


def test_concurrent_duplicate_execution_ids_run_once(d, running, service_name):
    svc, calls = running
    client = d.client(service_name, timeout=30, execution_id="same-everywhere")
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.count("dup"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [1] * 8 and calls.counts["dup"] == 1


def test_cached_call_is_not_run_again_within_its_ttl(d, running, service_name):
    svc, calls = running
    client = d.client(service_name, timeout=30)
    cached = client.with_options(cache_key="report-2024", cache_ttl=60)
    assert cached.count("cache") == 1
    assert cached.count("cache") == 1
    assert client.with_options(cache=("report-2024", 60)).count("cache") == 1
    assert calls.counts["cache"] == 1
    assert client.with_options(cache_key="other-key", cache_ttl=60).count("cache") == 2  # another key runs
    assert client.count("cache") == 3  # no cache: runs


def test_cache_expires_after_its_ttl(d, running, service_name):
    svc, calls = running
    cached = d.client(service_name, timeout=30, cache_key="short", cache_ttl=1)
    assert cached.count("ttl") == 1
    time.sleep(2.2)
    assert cached.count("ttl") == 2


def test_background_call_returns_the_id_and_the_result_comes_later(d, running, service_name):
    job_id = d.client(service_name, background=True).sleep(0.3)
    assert isinstance(job_id, str) and job_id
    assert d.job(job_id).status in ("pending", "running")
    assert d.result(job_id, timeout=30) == 0.3
    st = d.job(job_id)
    assert (st.status, st.result_type, st.service, st.done) == ("success", "resolution", service_name, True)
    assert st.outcome() == 0.3


def test_job_for_unknown_id_is_not_found(d, running):
    with pytest.raises(NotFoundError):
        d.job("does-not-exist")


def test_caller_timeout_raises_a_timeout_error_with_the_job_id(d, running, service_name):
    started = time.monotonic()
    with pytest.raises(CallTimeoutError) as info:
        d.client(service_name, timeout=1).sleep(3)
    assert isinstance(info.value, TimeoutError)
    assert 0.9 < time.monotonic() - started < 3
    assert info.value.job_id
    assert d.result(info.value.job_id, timeout=30) == 3  # it still finished, and can be fetched


def test_many_concurrent_calls(d, running, service_name):
    client = d.client(service_name, timeout=60)
    results = {}

    def one(i):
        results[i] = client.add_async(i, i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: 2 * i for i in range(40)}


def test_job_failure_when_the_only_attempt_times_out(d, service_name):
    # One attempt of 1 s on a worker that hangs: the control-plane gives up -> JobFailedError.
    svc = d.service(service_name)
    release = threading.Event()

    @svc.function
    def hang():
        release.wait(30)
        return "late"

    svc.start()
    try:
        job_id = d.client(service_name, background=True, timeout=1, retry_count_on_stall=0).hang()
        with pytest.raises(JobFailedError) as info:
            d.result(job_id, timeout=20)
        assert info.value.job_id == job_id
    finally:
        release.set()
        svc.stop(timeout=10)


def test_asyncio_caller(sdk_control_plane, cluster, running, service_name):
    async def main():
        async with AsyncDifferential(cluster["apiSecret"], endpoint=sdk_control_plane.url) as ad:
            client = ad.client(service_name, timeout=30)
            results = await asyncio.gather(*(client.add_async(i, 1) for i in range(20)))
            assert results == [i + 1 for i in range(20)]
            assert await client.identity({"at": dt.datetime(2024, 1, 1, tzinfo=UTC)}) == {
                "at": dt.datetime(2024, 1, 1, tzinfo=UTC)}
            with pytest.raises(RemoteError) as info:
                await client.withdraw(1)
            assert info.value.code == "E_FUNDS"
            job_id = await ad.client(service_name, background=True).add_async(40, 2)
            assert await ad.result(job_id, timeout=30) == 42
            assert (await ad.job(job_id)).status == "success"
            with pytest.raises(CallTimeoutError):
                await client.with_options(timeout=0.5).sleep(2)

    asyncio.run(asyncio.wait_for(main(), 90))


def test_wrong_secret_is_an_authentication_error(sdk_control_plane):
    from differential import AuthenticationError

    with Differential("sk_wrong", endpoint=sdk_control_plane.url) as bad:
        with pytest.raises(AuthenticationError):
            bad.client("any").fn()
