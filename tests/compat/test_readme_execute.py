"""README.md's access-point and execute example (`<!-- example: execute.sh -->`), run as written
against a live control-plane (SQLite, as `make run`) with the local loop's greeter.py serving.

The block is read from README.md itself; the one change made to it is the local endpoint, which
becomes this test's control-plane URL. Each command's output must match the `# =>` line under it,
where `<id>` is a job id, `<time>` an ISO 8601 time and `<cluster>` the cluster's id."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from support.server import ControlPlane
from test_readme_examples import LOCAL_ENDPOINT, README, _clean_env, examples

pytestmark = [pytest.mark.slow]

PLACEHOLDERS = {"<id>": r"[0-9A-Z]{26}", "<time>": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"}


def expected_lines(script: str, cluster_id: str) -> list[re.Pattern]:
    out = []
    for line in script.splitlines():
        if line.startswith("# => "):
            pattern = re.escape(line[len("# => "):])
            for name, regex in {**PLACEHOLDERS, "<cluster>": re.escape(cluster_id)}.items():
                pattern = pattern.replace(re.escape(name), regex)
            out.append(re.compile(f"^{pattern}$"))
    return out


def test_the_execute_example_as_written():
    found = examples(README.read_text())
    script, greeter = found["execute.sh"], found["greeter.py"]
    assert "sk_" not in script and LOCAL_ENDPOINT in script
    with ControlPlane(None) as cp, tempfile.TemporaryDirectory(prefix="readme-execute-") as tmp:
        work = Path(tmp)
        cluster = cp.create_cluster("readme execute")
        env = {**_clean_env(), "DIFFERENTIAL_API_SECRET": cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url}
        (work / "greeter.py").write_text(greeter)
        log = work / "greeter.log"
        with open(log, "wb") as out:
            service = subprocess.Popen([sys.executable, "greeter.py"], cwd=work, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not _serving(cp, cluster["id"]):
                assert service.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            run_env = {**_clean_env(), "SECRET": cp.management_secret, "CLUSTER_ID": cluster["id"]}
            r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script.replace(LOCAL_ENDPOINT, cp.url)],
                               cwd=work, env=run_env, capture_output=True, text=True, timeout=120)
        finally:
            service.terminate()
            service.wait(timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr
    lines, patterns = r.stdout.splitlines(), expected_lines(script, cluster["id"])
    assert len(patterns) >= 8 and len(lines) == len(patterns), r.stdout + r.stderr
    for line, pattern in zip(lines, patterns, strict=True):
        assert pattern.match(line), (line, pattern.pattern)


def _serving(cp: ControlPlane, cluster_id: str) -> bool:
    r = httpx.get(f"{cp.url}/services/greeter", headers={"Authorization": f"Basic {_secret(cp, cluster_id)}"},
                  timeout=10)
    return r.status_code == 200 and r.json()["liveWorkers"] > 0


def _secret(cp: ControlPlane, cluster_id: str) -> str:
    clusters = httpx.get(f"{cp.url}/clusters", headers=cp.management_headers, timeout=10).json()
    return next(c["apiSecret"] for c in clusters if c["id"] == cluster_id)
