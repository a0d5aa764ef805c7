"""The registry over a real gunicorn control-plane: with the local asset store (embedded default,
no AWS) and with moto's S3 as the asset bucket. Publish over HTTP (presigned PUT included), then the
real npm reads the packument and fetches the tarball (`npm pack` checks its integrity), the real pip
downloads the wheel from the simple index (checking its #sha256), and X-Forwarded-Proto makes the
tarball URLs https. One control-plane per store for the module (a start costs about a second)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support import moto
from support.server import ControlPlane

from registry_helpers import http_steps, sha256

BUCKET = "registry-assets"


@pytest.fixture(scope="module", params=["local", "s3"])
def cp(request):
    env = {}
    if request.param == "s3":
        request.getfixturevalue("moto_endpoint")
        moto.reset()
        moto.client("s3").create_bucket(Bucket=BUCKET)
        env = {**moto.env(), "ASSET_UPLOAD_BUCKET": BUCKET}
    server = ControlPlane(env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(cp):
    steps = http_steps(cp.url, cp.management_headers)
    cluster = cp.create_cluster()["id"]
    ts = [steps.release(cluster, inc) for inc in ("patch", "minor")]
    py = steps.release(cluster, "patch", "python")
    token = httpx.post(f"{cp.url}/clusters/{cluster}/registry-tokens", headers=cp.management_headers,
                       json={"name": "e2e"}).json()["token"]
    return {"cluster": cluster, "ts": ts, "py": py, "token": token}


def test_objects_live_in_the_configured_store(cp, world):
    keys = [f"client_library/{answer['id']}" for answer, _ in world["ts"]]
    if cp.extra_env.get("ASSET_UPLOAD_BUCKET"):
        listed = moto.client("s3").list_objects_v2(Bucket=BUCKET)
        assert set(keys) <= {o["Key"] for o in listed.get("Contents", [])}
    else:
        assert all(any(p.is_file() for p in cp.data_dir.rglob(answer["id"] + "*")) for answer, _ in world["ts"])


def test_packument_and_tarball_behind_a_tls_proxy(cp, world):
    cluster, token = world["cluster"], world["token"]
    r = httpx.get(f"{cp.url}/packages/npm/@differential.dev%2f{cluster}",
                  headers={"Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["dist-tags"]["latest"] == "0.1.0"
    url = doc["versions"]["0.1.0"]["dist"]["tarball"]
    assert url == f"https://127.0.0.1:{cp.port}/packages/npm/@differential.dev/{cluster}/-/{cluster}-0.1.0.tgz"
    t = httpx.get(url.replace("https://", "http://"), headers={"Authorization": f"Bearer {token}"})
    data = world["ts"][1][1]
    assert t.status_code == 200 and t.content == data and t.headers["content-length"] == str(len(data))
    assert httpx.get(url.replace("https://", "http://"), headers={"Authorization": "Bearer drt_x"}).status_code == 401


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm")
def test_the_real_npm_views_and_packs_the_package(cp, world, tmp_path):
    cluster, token = world["cluster"], world["token"]
    npmrc = tmp_path / ".npmrc"
    host = f"127.0.0.1:{cp.port}"
    npmrc.write_text(f"@differential.dev:registry={cp.url}/packages/npm/\n//{host}/packages/npm/:_authToken={token}\n")
    env = {"PATH": str(Path(shutil.which("npm")).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "npm_config_userconfig": str(npmrc), "npm_config_cache": str(tmp_path / "cache"),
           "npm_config_update_notifier": "false", "npm_config_audit": "false", "npm_config_fund": "false"}
    view = subprocess.run(["npm", "view", f"@differential.dev/{cluster}", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert view.returncode == 0, view.stderr
    info = json.loads(view.stdout)
    assert info["version"] == "0.1.0" and info["versions"] == ["0.0.1", "0.1.0"]
    packed = subprocess.run(["npm", "pack", f"@differential.dev/{cluster}@0.0.1", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert packed.returncode == 0, packed.stderr  # npm checked the tarball against the packument's integrity
    assert (tmp_path / json.loads(packed.stdout)[0]["filename"]).read_bytes() == world["ts"][0][1]
    npmrc.write_text(npmrc.read_text().replace(token, "drt_" + "0" * 64))
    refused = subprocess.run(["npm", "view", f"@differential.dev/{cluster}", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr


def test_the_real_pip_downloads_the_wheel_checking_its_hash(cp, world, tmp_path):
    token = world["token"]
    answer, data = world["py"]
    index = f"http://token:{token}@127.0.0.1:{cp.port}/packages/pypi/simple/"
    (tmp_path / "req.txt").write_text(f"{answer['distribution']}==0.0.1 --hash=sha256:{sha256(data)}\n")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this index only: no mirror, no find-links
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--no-cache-dir",
                          "--disable-pip-version-check", "--index-url", index, "-r", str(tmp_path / "req.txt"),
                          "-d", str(tmp_path / "out")], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "out" / answer["fileName"]).read_bytes() == data
    wrong = f"http://token:drt_nope@127.0.0.1:{cp.port}/packages/pypi/simple/"
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--no-input",
                          "--disable-pip-version-check", "--index-url", wrong, answer["distribution"],
                          "-d", str(tmp_path / "no")], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode != 0, run.stdout
    assert "GET /packages/pypi/simple/<project>/ 401" in cp.log_tail(20_000)
