"""The self-hosting guide, step by step as a user runs it: make the management secret with
openssl into management-secret.txt, start the control-plane with it, create and list clusters with
the guide's curl lines, then use the apiSecret from the real Node SDK. On PostgreSQL and SQLite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import postgres
from support.node import run_node
from support.server import REPO_ROOT, ControlPlane, _free_port

pytestmark = [pytest.mark.node, pytest.mark.slow]

# The guide's step 5, minus `fly secrets set`.
MAKE_SECRET = '''
MANAGEMENT_SECRET="sk_management_$(openssl rand -base64 32)"
echo "$MANAGEMENT_SECRET" > management-secret.txt
'''

# The guide's "Connecting to the control-plane" snippet, plus a service to call.
NODE_APP = r"""
import { Differential } from "@differentialhq/core";

const differential = new Differential(process.env.API_SECRET, {
  endpoint: process.env.ENDPOINT,
});
const svc = differential.service({
  name: "hello",
  functions: { greet: async (name) => `Hello, ${name}!` },
});
await svc.start();
const greeting = await differential.client("hello").greet("self-hoster");
console.log(JSON.stringify({ greeting }));
process.exit(0); // the SDK's results poller never exits by itself
"""


def bash(script: str, cwd: Path, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def curl(cwd: Path, *args: str) -> tuple[int, str]:
    """Run curl in bash (so $(cat management-secret.txt) expands as in the guide); (status, body)."""
    r = bash("curl -sS -w '\\n%{http_code}' " + " ".join(args), cwd)
    assert r.returncode == 0, r.stderr
    body, _, status = r.stdout.rpartition("\n")
    return int(status), body


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request):
    if request.param == "sqlite":
        yield None  # ControlPlane(None): the embedded SQLite file
        return
    url = postgres.create_database("guide")
    yield url
    try:
        postgres.drop_database(url)
    except Exception:
        pass


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="guide-") as d:
        yield Path(d)


def test_self_hosting_guide(database_url, workdir, node_sdk):
    # Step 5: the secret, generated the guide's way and kept in management-secret.txt.
    r = bash(MAKE_SECRET, workdir)
    assert r.returncode == 0, r.stderr
    secret = (workdir / "management-secret.txt").read_text().strip()
    assert secret.startswith("sk_management_") and len(secret) >= 32

    with ControlPlane(database_url, management_secret=secret) as cp:
        # "Creating your first cluster": POST with a JSON content type but no body at all.
        status, body = curl(workdir, '-X POST -H "Authorization: Basic $(cat management-secret.txt)"',
                            '-H "Content-Type: application/json"', f"{cp.url}/clusters")
        assert 200 <= status < 300, (status, body)

        status, body = curl(workdir, '-H "Authorization: Basic $(cat management-secret.txt)"', f"{cp.url}/clusters")
        assert status == 200, body
        clusters = json.loads(body)
        assert isinstance(clusters, list) and len(clusters) == 1
        api_secret = clusters[0]["apiSecret"]
        assert isinstance(api_secret, str) and api_secret

        # A wrong management secret is refused with a JSON error, and so is no secret.
        for auth in ('-H "Authorization: Basic sk_management_not-the-right-one-0123456789abcdef"', ""):
            status, body = curl(workdir, auth, f"{cp.url}/clusters")
            assert status == 401, (auth, status, body)
            assert isinstance(json.loads(body), dict)
        status, body = curl(workdir, '-X POST -H "Authorization: Basic wrong"', f"{cp.url}/clusters")
        assert status == 401 and isinstance(json.loads(body), dict)

        # "Connecting to the control-plane": the apiSecret and endpoint in the real TypeScript SDK.
        r = run_node(NODE_APP, env={"API_SECRET": api_secret, "ENDPOINT": cp.url}, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1]) == {"greeting": "Hello, self-hoster!"}


@pytest.mark.parametrize("bad", ["abc", "sk_management_short", "management_" + "x" * 40])
@pytest.mark.parametrize("entry", ["gunicorn", "python -m app"])
def test_malformed_management_secret_refuses_to_start(bad, entry, workdir):
    argv = ([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"] if entry == "gunicorn"
            else [sys.executable, "-m", "app", "--port", str(_free_port())])
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MANAGEMENT_SECRET")}
    env.update(MANAGEMENT_SECRET=bad, PORT=str(_free_port()), DIFFERENTIAL_DATA_DIR=str(workdir / "data"))
    try:
        r = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{entry} kept running with MANAGEMENT_SECRET={bad!r}")
    assert r.returncode != 0
    output = r.stdout + r.stderr
    assert "MANAGEMENT_SECRET" in output, output[-2000:]
    if len(bad) > 10:  # the secret itself is not echoed ("abc" is too common a substring to check)
        assert bad not in output
