"""The Lambda entry point: starts the user's service from DIFFERENTIAL_SERVICE_MODULE, serves the
pending jobs, sends x-deployment-id, and stops by itself after running idle."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from sdk_helpers import subprocess_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USER_MODULE = '''
from differential import Service

service = Service("lambdasvc")

@service.function
def hello(name: str) -> str:
    return "hi " + name
'''


def test_lambda_handler_serves_pending_jobs_then_stops_when_idle(sdk_control_plane, cluster, d, tmp_path):
    (tmp_path / "user_service.py").write_text(USER_MODULE)
    job_ids = [d.client("lambdasvc", background=True).hello(n) for n in ("a", "b", "c")]
    env = subprocess_env(
        DIFFERENTIAL_ENDPOINT=sdk_control_plane.url, DIFFERENTIAL_API_SECRET=cluster["apiSecret"],
        DIFFERENTIAL_DEPLOYMENT_ID="dep-lambda-1", DIFFERENTIAL_DEPLOYMENT_PROVIDER="lambda",
        DIFFERENTIAL_SERVICE_MODULE="user_service:service",
    )
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    code = "import json; from differential.lambda_handler import handler; print(json.dumps(handler({}, None)))"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"service": "lambdasvc", "stoppedBy": "idle", "claimed": 3, "reported": 3}
    assert elapsed < 25  # two empty 5 s polls after the work, not 2 x 20 s
    assert [d.result(j, timeout=10) for j in job_ids] == ["hi a", "hi b", "hi c"]
    details = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}",
                        headers=sdk_control_plane.management_headers, timeout=10).json()
    assert "dep-lambda-1" in {m["deploymentId"] for m in details["machines"]}


class FakeContext:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self):
        return int((self.end - time.monotonic()) * 1000)


def test_lambda_handler_stops_before_the_invocation_deadline(sdk_control_plane, cluster, tmp_path, monkeypatch):
    from differential import lambda_handler

    (tmp_path / "deadline_service.py").write_text(USER_MODULE.replace("lambdasvc", "deadlinesvc"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DIFFERENTIAL_ENDPOINT", sdk_control_plane.url)
    monkeypatch.setenv("DIFFERENTIAL_API_SECRET", cluster["apiSecret"])
    monkeypatch.setenv("DIFFERENTIAL_SERVICE_MODULE", "deadline_service:service")
    monkeypatch.setenv("DIFFERENTIAL_MAX_IDLE_CYCLES", "100")
    t0 = time.monotonic()
    out = lambda_handler.handler({}, FakeContext(12))
    assert out["stoppedBy"] == "deadline"
    assert 1.5 < time.monotonic() - t0 < 6  # stops ~10 s before the end, promptly


def test_lambda_handler_needs_the_module_setting(monkeypatch):
    from differential import DifferentialError, lambda_handler

    monkeypatch.delenv("DIFFERENTIAL_SERVICE_MODULE", raising=False)
    with pytest.raises(DifferentialError, match="DIFFERENTIAL_SERVICE_MODULE"):
        lambda_handler.handler({}, None)
    with pytest.raises(DifferentialError, match="not a differential.Service"):
        lambda_handler.load_service("json:dumps")
