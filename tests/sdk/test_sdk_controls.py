"""Retries on rejection with back-off, and delayed calls, through the Python SDK and CLI against a
real control-plane (gunicorn on PostgreSQL, SWEEP_INTERVAL_SECONDS 0.5)."""
from __future__ import annotations

import datetime as dt
import sys
import itertools
import threading
import time

import httpx
import pytest

from differential import Backoff, CallOptions, RemoteError
from sdk_helpers import subprocess_env
from support.waiting import wait_until

pytestmark = pytest.mark.postgres
UTC = dt.timezone.utc


class Flaky:
    """A function body that raises until its `succeed_on`-th invocation, stamping each one."""

    def __init__(self, succeed_on: int | None):
        self.succeed_on = succeed_on
        self.stamps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, tag: str) -> str:
        with self.lock:
            self.stamps.append(time.monotonic())
            n = len(self.stamps)
        if self.succeed_on is not None and n >= self.succeed_on:
            return f"{tag} on attempt {n}"
        raise ValueError(f"{tag} failed on attempt {n}")

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.stamps)]


def wait_for_definition(cp, cluster, service_name, function):
    """A function's default applies to calls made once its worker's definition is stored."""
    def stored():
        r = httpx.get(f"{cp.url}/clusters/{cluster['id']}/service/{service_name}", headers=cp.management_headers)
        return r.status_code == 200 and any(f["name"] == function for f in r.json()["definition"]["functions"])

    wait_until(stored, timeout=15, what=f"{service_name}'s definition")


@pytest.fixture
def worker(d, service_name, sdk_control_plane, cluster):
    """A service with `flaky` (no default policy), `defaulted` (a function default) and `stamp`."""
    flaky, defaulted, stamps = Flaky(succeed_on=3), Flaky(succeed_on=None), []
    svc = d.service(service_name, concurrency=4)
    svc.register(flaky, name="flaky")
    svc.register(defaulted, name="defaulted", retry=Backoff(3, initial_delay=0.2, factor=1))

    @svc.function
    def stamp() -> float:
        stamps.append(time.monotonic())
        return time.time()

    svc.start()
    wait_for_definition(sdk_control_plane, cluster, service_name, "defaulted")
    yield {"flaky": flaky, "defaulted": defaulted, "stamps": stamps}
    assert svc.stop(timeout=10)


def test_the_attempts_follow_the_back_off_and_the_third_resolves(d, worker, service_name):
    policy = Backoff(3, initial_delay=0.3, factor=2, max_delay=5)
    assert d.call(service_name, "flaky", "t", retry=policy, timeout=30) == "t on attempt 3"
    gaps = worker["flaky"].gaps()
    # 0.3 s then 0.6 s after each rejection, plus the trip; the sweeper's tick (0.5 s) is no excuse.
    assert 0.28 <= gaps[0] < 0.3 + 1.0, gaps
    assert 0.58 <= gaps[1] < 0.6 + 1.0, gaps


def test_the_last_rejection_reaches_the_caller_when_attempts_run_out(d, worker, service_name):
    with pytest.raises(RemoteError) as info:
        d.call(service_name, "defaulted", "x", timeout=30)  # the function's default: 3 attempts
    assert info.value.name == "ValueError" and info.value.message == "x failed on attempt 3"
    assert len(worker["defaulted"].stamps) == 3


def test_a_calls_own_policy_overrides_its_functions_default(d, worker, service_name):
    with pytest.raises(RemoteError) as info:
        d.call(service_name, "defaulted", "once", retry=Backoff(1), timeout=30)
    assert info.value.message == "once failed on attempt 1"
    assert len(worker["defaulted"].stamps) == 1


def test_a_delayed_call_runs_no_earlier_than_its_delay(d, worker, service_name):
    started = time.monotonic()
    d.call(service_name, "stamp", delay=1.0, timeout=30)
    # Its lower bound is the point; the upper one only says it ran (a loaded CI host ran it 5 s late).
    assert 1.0 <= worker["stamps"][0] - started < 1.0 + 10.0


def test_run_at_in_the_past_runs_at_once_and_ahead_waits(d, worker, service_name):
    started = time.monotonic()
    d.call(service_name, "stamp", run_at=dt.datetime.now(UTC) - dt.timedelta(hours=1), timeout=30)
    assert worker["stamps"][0] - started < 1.0
    ahead = dt.datetime.now(UTC) + dt.timedelta(seconds=1.2)
    ran_at = d.call(service_name, "stamp", run_at=ahead, timeout=30)
    assert ran_at >= ahead.timestamp() - 0.05  # (the worker's clock is this machine's)


def test_call_options_put_the_controls_on_the_wire():
    cfg = CallOptions(retry=Backoff(4, initial_delay=0.5, factor=3, max_delay=10, jitter=0.2), delay=2.5).call_config()
    assert cfg["retryOnRejection"] == {"attempts": 4, "initialDelaySeconds": 0.5, "factor": 3, "maxDelaySeconds": 10,
                                       "jitter": 0.2}
    assert cfg["delaySeconds"] == 2.5 and "runAt" not in cfg
    at = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert CallOptions(run_at=at).call_config()["runAt"] == "2026-12-01T17:00:00.000Z"
    plain = CallOptions().call_config()
    assert not {"retryOnRejection", "delaySeconds", "runAt"} & set(plain)  # nothing new unless asked


@pytest.mark.parametrize("make, words", [
    (lambda: Backoff(0), "attempts"), (lambda: Backoff(101), "attempts"), (lambda: Backoff(2, factor=0.5), "factor"),
    (lambda: Backoff(2, jitter=2), "jitter"), (lambda: Backoff(2, initial_delay=-1), "initial_delay"),
    (lambda: CallOptions(delay=-1).call_config(), "delay"),
    (lambda: CallOptions(run_at=dt.datetime(2026, 1, 1)).call_config(), "timezone-aware"),
    (lambda: CallOptions(delay=1, run_at=dt.datetime.now(UTC)).call_config(), "not both"),
])
def test_bad_controls_fail_before_anything_is_sent(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_a_function_default_is_sent_in_the_definition(d, service_name):
    svc = d.service(service_name)
    svc.register(lambda: None, name="f", retry=Backoff(2, initial_delay=0.1))
    svc.register(lambda: None, name="g")
    by_name = {f["name"]: f for f in svc.definition()}
    assert by_name["f"]["retryOnRejection"]["attempts"] == 2 and "retryOnRejection" not in by_name["g"]
    with pytest.raises(TypeError):
        svc.register(lambda: None, name="h", retry={"attempts": 2})


# -- the CLI -------------------------------------------------------------------------------------

def cli(*args, secret, endpoint):
    import subprocess

    env = subprocess_env(DIFFERENTIAL_API_SECRET=secret, DIFFERENTIAL_ENDPOINT=endpoint)
    return subprocess.run([sys.executable, "-m", "differential.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_cli_retries_with_a_back_off_and_delays(worker, cluster, sdk_control_plane, service_name):
    r = cli("call", service_name, "flaky", '"cli"', "--retry-attempts", "3", "--retry-initial", "0.2",
            "--retry-factor", "1.5", "--retry-max", "1", "--retry-jitter", "0.1", "--timeout", "30",
            secret=cluster["apiSecret"], endpoint=sdk_control_plane.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '"cli on attempt 3"'
    started = time.monotonic()
    r = cli("call", service_name, "stamp", "--delay", "1", "--timeout", "30",
            secret=cluster["apiSecret"], endpoint=sdk_control_plane.url)
    assert r.returncode == 0, r.stderr
    assert worker["stamps"][0] - started >= 1.0


@pytest.mark.parametrize("args, words", [
    (["--retry-factor", "2"], "need --retry-attempts"),
    (["--retry-attempts", "0"], "--retry-attempts must be"),
    (["--retry-attempts", "2", "--retry-jitter", "3"], "--retry-jitter must be"),
    (["--delay", "1", "--run-at", "2026-01-01T00:00:00Z"], "not both"),
    (["--run-at", "2026-01-01T00:00:00"], "needs an offset"),
    (["--run-at", "noon"], "not an ISO 8601"),
    (["--delay", "-1"], "delay must be"),
])
def test_bad_cli_controls_are_usage_errors(args, words):
    r = cli("call", "svc", "fn", *args, secret="x", endpoint="http://127.0.0.1:9")
    assert r.returncode == 2 and words in r.stderr, r.stderr
