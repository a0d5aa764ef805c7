"""The typed client packages through the clients people use (issue 13): `differential client
publish` (a subprocess) against a real gunicorn control-plane on the embedded default (SQLite, the
local asset store), then the real npm CLI installs the package from its registry with an `.npmrc`
and a registry token, the real `tsc` type-checks callers of it, and the real pip installs the
Python client into a fresh venv from the simple index with `--require-hashes` and calls a running
Python service through it. A second control-plane keeps its assets in S3 (moto) for one more run.

Slow parts run once per module: one control-plane, one publish of both languages, one venv.
`tsc` is the `typescript` package installed once per session into a test-owned folder from the
npm registry (TYPESCRIPT_VERSION).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, TypedDict

import httpx
import pytest

from sdk_helpers import subprocess_env
from support import moto
from support.node import NODE_DIR, ensure_node_sdk, start_node
from support.server import ControlPlane

from differential import Differential

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("npm") and shutil.which("node")), reason="needs node and npm")]

TYPESCRIPT_VERSION = "5.6.3"
REPO = Path(__file__).resolve().parents[2]
SDK_DIR = REPO / "sdk"
NPM_TIMEOUT = 300


class Order(TypedDict):
    item: str
    quantity: int


def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


def greet(name: str, punctuation: str = "!") -> str:
    return f"Hello, {name}{punctuation}"


def total(orders: List[Order], discount: Optional[float] = None) -> Dict[str, int]:
    """How many of each item."""
    out: Dict[str, int] = {}
    for o in orders:
        out[o["item"]] = out.get(o["item"], 0) + o["quantity"]
    return out


# -- helpers ----------------------------------------------------------------------------------------

def cli(cp: ControlPlane, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = subprocess_env(DIFFERENTIAL_ENDPOINT=cp.url, DIFFERENTIAL_MANAGEMENT_SECRET=cp.management_secret)
    for name in ("DIFFERENTIAL_API_SECRET", "DIFFERENTIAL_MANAGEMENT_SECRET_FILE", "DIFFERENTIAL_CLUSTER_ID"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "differential.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=tempfile.gettempdir())


def cli_json(cp: ControlPlane, *args: str) -> dict:
    r = cli(cp, *args, "--json")
    assert r.returncode == 0, f"differential {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def wait_for_functions(cp: ControlPlane, cluster_id: str, service: str, names: set, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{cp.url}/clusters/{cluster_id}/service/{service}", headers=cp.management_headers, timeout=10)
        if r.status_code == 200 and {f["name"] for f in r.json()["definition"].get("functions") or []} >= names:
            return
        time.sleep(0.2)
    raise AssertionError(f"service {service} did not register {names} in {timeout}s")


def npm_env(home: Path) -> Dict[str, str]:
    """npm with its own cache and user config, so the install really fetches from our registry."""
    env = dict(os.environ)
    env.update(npm_config_cache=str(home / "cache"), npm_config_userconfig=str(home / "user.npmrc"),
               npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
    return env


def npm(args: List[str], cwd: Path, home: Path, timeout: float = NPM_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args], cwd=cwd, env=npm_env(home), capture_output=True, text=True, timeout=timeout)


def npm_project(tmp: Path, npmrc_lines: List[str]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "package.json").write_text(json.dumps({"name": "caller", "version": "1.0.0", "private": True}))
    (tmp / ".npmrc").write_text("\n".join(npmrc_lines) + "\n")
    return tmp


class Registry:
    """One control-plane, a cluster with a Python and a Node service, and the first publish."""

    def __init__(self, cp: ControlPlane, workdir: Path):
        self.cp, self.workdir = cp, workdir
        self.cluster = cp.create_cluster(f"registry-{uuid.uuid4().hex[:6]}")
        self.cluster_id = self.cluster["id"]
        self.d = Differential(self.cluster["apiSecret"], endpoint=cp.url)
        self.svc = self.d.service("calc")
        for fn in (add, greet, total):
            self.svc.register(fn)
        self.svc.start()
        node_env = {"DIFFERENTIAL_API_SECRET": self.cluster["apiSecret"], "DIFFERENTIAL_ENDPOINT": cp.url}
        node = start_node(
            'import { Differential } from "@differentialhq/core";\n'
            'const d = new Differential(process.env.DIFFERENTIAL_API_SECRET, '
            '{ endpoint: process.env.DIFFERENTIAL_ENDPOINT });\n'
            'await d.service({ name: "node-greeter", functions: { hello: async (n) => `hi ${n}` } }).start();\n',
            env=node_env)
        try:
            wait_for_functions(cp, self.cluster_id, "calc", {"add", "greet", "total"})
            wait_for_functions(cp, self.cluster_id, "node-greeter", {"hello"})
        finally:
            node.kill()
            node.wait(timeout=10)
        self.first = cli_json(cp, "client", "publish", "--cluster", self.cluster_id, "--language", "all",
                              "--create-token", "ci")
        self.token = self.first["token"]["token"]
        self.libraries = {lib["language"]: lib for lib in self.first["libraries"]}

    def close(self) -> None:
        self.svc.stop(timeout=10)
        self.d.close()


class Background:
    """A slow setup step (a venv, an npm install) running while the control-plane starts."""

    def __init__(self, argv: List[str], cwd: Path, env: Optional[Dict[str, str]] = None):
        self.log = cwd / "setup.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def ready(self, timeout: float = NPM_TIMEOUT) -> None:
        rc = self.proc.wait(timeout=timeout)
        assert rc == 0, f"{self.proc.args} exited {rc}:\n{self.log.read_text(errors='replace')[-3000:]}"


@pytest.fixture(scope="session")
def _setups(tmp_path_factory):
    """Start the two slow installs at once: `typescript` from the npm registry into a test-owned
    folder, and a fresh venv with our SDK installed from sdk/ (it is on no package index)."""
    ts_dir = tmp_path_factory.mktemp("typescript")
    (ts_dir / "package.json").write_text(json.dumps({"name": "tsc-holder", "private": True}))
    ts = Background(["npm", "install", "--no-save", "--no-package-lock", "--no-audit", f"typescript@{TYPESCRIPT_VERSION}"],
                    ts_dir, npm_env(ts_dir))
    venv_dir = tmp_path_factory.mktemp("venv")
    python = venv_dir / "env" / "bin" / "python"
    venv = Background(["sh", "-c", f'"{sys.executable}" -m venv env && env/bin/python -m pip install --quiet '
                                   f'--disable-pip-version-check "{SDK_DIR}"'], venv_dir)
    yield {"tsc": (ts, ts_dir / "node_modules" / "typescript" / "bin" / "tsc"), "venv": (venv, python)}
    for job in (ts, venv):
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tsc(_setups) -> Path:
    job, path = _setups["tsc"]
    job.ready()
    return path


@pytest.fixture(scope="session")
def venv(_setups) -> Path:
    job, python = _setups["venv"]
    job.ready()
    return python


@pytest.fixture(scope="module")
def registry(_setups, tmp_path_factory):
    ensure_node_sdk()
    cp = ControlPlane().start()  # the embedded default: SQLite and the local asset store
    reg = Registry(cp, tmp_path_factory.mktemp("registry"))
    yield reg
    reg.close()
    cp.stop()


def pip_install_from_index(python: Path, index_url: str, distribution: str, version: str,
                           sha256: str, workdir: Path) -> subprocess.CompletedProcess:
    req = workdir / f"requirements-{uuid.uuid4().hex[:6]}.txt"
    req.write_text(f"{distribution}=={version} --hash=sha256:{sha256}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # only our index: no mirror, no find-links
    return subprocess.run([str(python), "-m", "pip", "install", "--require-hashes", "--no-cache-dir",
                           "--index-url", index_url, "-r", str(req)],
                          env=env, capture_output=True, text=True, timeout=300)


def index_sha256(cp_url: str, token: str, distribution: str, file_name: str) -> str:
    """The wheel's sha256 as the PEP 691 JSON page gives it."""
    r = httpx.get(f"{cp_url}/packages/pypi/simple/{distribution}/", auth=("__token__", token),
                  headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=10)
    assert r.status_code == 200, r.text
    files = {f["filename"]: f for f in r.json()["files"]}
    return files[file_name]["hashes"]["sha256"]


# -- tests ------------------------------------------------------------------------------------------

def test_publish_prints_the_lines_to_install(registry):
    host = registry.cp.url.split("://", 1)[1]
    ts, py = registry.libraries["typescript"], registry.libraries["python"]
    assert ts["packageName"] == f"@differential.dev/{registry.cluster_id}" and ts["status"] == "published"
    assert py["version"] == ts["version"] == "0.0.1" and py["fileName"].endswith("-0.0.1-py3-none-any.whl")
    assert registry.first["npmrc"] == [f"@differential.dev:registry={registry.cp.url}/packages/npm/",
                                       f"//{host}/packages/npm/:_authToken={registry.token}"]
    assert registry.first["pipInstall"] == (
        f"pip install --index-url http://__token__:{registry.token}@{host}/packages/pypi/simple/ "
        f"{py['distribution']}==0.0.1")
    r = cli(registry.cp, "client", "publish", "--cluster", registry.cluster_id, "--language", "typescript")
    assert r.returncode == 0, r.stderr
    assert "uploading" in r.stderr and "published" in r.stderr  # progress on stderr
    assert "_authToken=${DIFFERENTIAL_REGISTRY_TOKEN}" in r.stdout  # no token made: a placeholder
    assert "registry-tokens create" in r.stdout


def test_npm_installs_and_tsc_checks_callers(registry, tsc, tmp_path):
    project = npm_project(tmp_path / "caller", registry.first["npmrc"])
    package = f"@differential.dev/{registry.cluster_id}"
    r = npm(["install", "--legacy-peer-deps", "--no-audit", f"{package}@0.0.1"], project, tmp_path)
    assert r.returncode == 0, f"npm install failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    installed = project / "node_modules" / "@differential.dev" / registry.cluster_id
    assert json.loads((installed / "package.json").read_text())["version"] == "0.0.1"
    lock = json.loads((project / "package-lock.json").read_text())
    entry = lock["packages"][f"node_modules/{package}"]
    assert entry["integrity"].startswith("sha512-")  # npm checked the packument's integrity
    # The published SDK itself comes from tests/node (its peer dependency; --legacy-peer-deps).
    (project / "node_modules" / "@differentialhq").mkdir()
    (project / "node_modules" / "@differentialhq" / "core").symlink_to(NODE_DIR / "node_modules" / "@differentialhq" / "core")
    header = (f'import {{ Differential }} from "@differentialhq/core";\n'
              f'import type {{ calc, nodeGreeter }} from "{package}";\n'
              'const d = new Differential("secret");\n')
    (project / "good.ts").write_text(header + """
async function main(): Promise<void> {
  const c = d.client<typeof calc>("calc");
  const sum: number = await c.add(1, 2);
  const hello: string = await c.greet("Ada");
  await c.greet("Ada", "?");
  const totals: Record<string, number> = await c.total([{ item: "tea", quantity: 2 }], 0.1);
  const n = d.client<typeof nodeGreeter>("node-greeter");
  const anything: unknown = await n.hello("x", 1, { any: "arguments" });
  console.log(sum, hello, totals, anything);
}
main();
""")
    (project / "bad.ts").write_text(header + 'd.client<typeof calc>("calc").add("one", 2);\n')
    (project / "bad_shape.ts").write_text(header + 'd.client<typeof calc>("calc").total([{ item: "tea" }]);\n')
    flags = ["--noEmit", "--strict", "--skipLibCheck", "--target", "es2020", "--module", "commonjs",
             "--moduleResolution", "node"]
    good = subprocess.run(["node", str(tsc), *flags, "good.ts"], cwd=project, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    # Both wrong callers in one run: tsc reports each file's error.
    bad = subprocess.run(["node", str(tsc), *flags, "bad.ts", "bad_shape.ts"], cwd=project, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "bad.ts(4," in bad.stdout and "'string' is not assignable to parameter of type 'number'" in bad.stdout
    assert "bad_shape.ts(4," in bad.stdout and "quantity" in bad.stdout, bad.stdout


def test_pip_installs_with_hashes_and_calls_the_service(registry, venv, tmp_path):
    py = registry.libraries["python"]
    host = registry.cp.url.split("://", 1)[1]
    sha256 = index_sha256(registry.cp.url, registry.token, py["distribution"], py["fileName"])
    assert sha256 == py["sha256"]
    index = f"http://__token__:{registry.token}@{host}/packages/pypi/simple/"
    bad = pip_install_from_index(venv, index, py["distribution"], "0.0.1", "0" * 64, tmp_path)
    assert bad.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in bad.stderr.upper(), bad.stderr[-2000:]
    r = pip_install_from_index(venv, index, py["distribution"], "0.0.1", sha256, tmp_path)
    assert r.returncode == 0, f"pip install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    script = f"""
import asyncio, json, os, typing
from differential import AsyncDifferential, Differential
from {py['module']} import AsyncCalcClient, CalcClient
async def via_asyncio():
    async with AsyncDifferential(os.environ["API_SECRET"], endpoint=os.environ["ENDPOINT"]) as ad:
        return await AsyncCalcClient(ad, timeout=30).add(40, 2)
d = Differential(os.environ["API_SECRET"], endpoint=os.environ["ENDPOINT"])
calc = CalcClient(d, timeout=30)
hints = typing.get_type_hints(CalcClient.add)
print(json.dumps({{"add": calc.add(2, 3), "greet": calc.greet("Ada"), "greet2": calc.greet("Ada", "?"),
                  "total": calc.total([{{"item": "tea", "quantity": 2}}, {{"item": "tea", "quantity": 1}}]),
                  "hints": {{k: getattr(v, "__name__", repr(v)) for k, v in hints.items()}},
                  "doc": CalcClient.add.__doc__, "async": asyncio.run(via_asyncio())}}))
d.close()
"""
    env = {"API_SECRET": registry.cluster["apiSecret"], "ENDPOINT": registry.cp.url, "PATH": os.environ["PATH"]}
    run = subprocess.run([str(venv), "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["add"] == 5 and out["greet"] == "Hello, Ada!" and out["greet2"] == "Hello, Ada?"
    assert out["total"] == {"tea": 3} and out["async"] == 42
    assert out["hints"] == {"a": "int", "b": "int", "return": "int"} and out["doc"] == "Adds two numbers."


def test_versions_through_the_cli_and_latest_is_highest(registry, tmp_path):
    minor = cli_json(registry.cp, "client", "publish", "--cluster", registry.cluster_id, "--language", "typescript",
                     "--increment", "minor")
    major = cli_json(registry.cp, "client", "publish", "--cluster", registry.cluster_id, "--language", "typescript",
                     "--increment", "major")
    assert minor["libraries"][0]["version"] == "0.1.0" and major["libraries"][0]["version"] == "1.0.0"
    project = npm_project(tmp_path / "viewer", registry.first["npmrc"])
    r = npm(["view", f"@differential.dev/{registry.cluster_id}", "--json"], project, tmp_path)
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert view["dist-tags"]["latest"] == "1.0.0"
    assert {"0.0.1", "0.0.2", "0.1.0", "1.0.0"} <= set(view["versions"])
    listed = httpx.get(f"{registry.cp.url}/clusters/{registry.cluster_id}/client-libraries",
                       params={"language": "typescript"}, headers=registry.cp.management_headers, timeout=10).json()
    assert [lib["version"] for lib in listed["libraries"]][:2] == ["1.0.0", "0.1.0"]


def test_wrong_and_other_clusters_tokens_are_refused(registry, tmp_path):
    wrong = [registry.first["npmrc"][0], registry.first["npmrc"][1].rsplit("=", 1)[0] + "=not-a-token"]
    project = npm_project(tmp_path / "wrong", wrong)
    r = npm(["view", f"@differential.dev/{registry.cluster_id}", "--json"], project, tmp_path)
    assert r.returncode != 0 and "E401" in (r.stdout + r.stderr)
    page = httpx.get(f"{registry.cp.url}/packages/pypi/simple/{registry.libraries['python']['distribution']}/",
                     auth=("__token__", "not-a-token"), timeout=10)
    assert page.status_code == 401
    # Another cluster's token reads its own cluster's packages only.
    other = registry.cp.create_cluster("other")
    theirs = cli_json(registry.cp, "registry-tokens", "create", "theirs", "--cluster", other["id"])["token"]
    project = npm_project(tmp_path / "other", [registry.first["npmrc"][0],
                                               registry.first["npmrc"][1].rsplit("=", 1)[0] + "=" + theirs])
    r = npm(["view", f"@differential.dev/{registry.cluster_id}", "--json"], project, tmp_path)
    assert r.returncode != 0 and ("E401" in r.stdout + r.stderr or "E404" in r.stdout + r.stderr)
    tarball = (f"{registry.cp.url}/packages/npm/@differential.dev/{registry.cluster_id}/-/"
               f"{registry.cluster_id}-0.0.1.tgz")
    assert httpx.get(tarball, headers={"Authorization": f"Bearer {theirs}"}, timeout=10).status_code in (401, 404)
    assert httpx.get(tarball, headers={"Authorization": f"Bearer {registry.token}"}, timeout=10).status_code == 200


def test_registry_tokens_cli(registry):
    made = cli_json(registry.cp, "registry-tokens", "create", "laptop", "--cluster", registry.cluster_id)
    assert made["name"] == "laptop" and made["token"]
    package = f"{registry.cp.url}/packages/npm/@differential.dev/{registry.cluster_id}"
    assert httpx.get(package, headers={"Authorization": f"Bearer {made['token']}"}, timeout=10).status_code == 200
    listed = cli_json(registry.cp, "registry-tokens", "list", "--cluster", registry.cluster_id)
    assert made["id"] in {t["id"] for t in listed["tokens"]}
    assert all("token" not in t for t in listed["tokens"])  # never shown again
    table = cli(registry.cp, "registry-tokens", "list", "--cluster", registry.cluster_id)
    assert table.returncode == 0 and "laptop" in table.stdout and made["token"] not in table.stdout
    revoked = cli(registry.cp, "registry-tokens", "revoke", made["id"], "--cluster", registry.cluster_id)
    assert revoked.returncode == 0 and made["id"] in revoked.stdout
    assert httpx.get(package, headers={"Authorization": f"Bearer {made['token']}"}, timeout=10).status_code == 401
    gone = cli(registry.cp, "registry-tokens", "revoke", made["id"], "--cluster", registry.cluster_id)
    assert gone.returncode == 4, gone.stderr  # not found


def test_publish_without_services_says_how_to_register_one(registry):
    empty = registry.cp.create_cluster("empty")
    r = cli(registry.cp, "client", "publish", "--cluster", empty["id"])
    assert r.returncode == 2 and "no service" in r.stderr and "svc.start()" in r.stderr
    r = cli(registry.cp, "client", "publish")
    assert r.returncode == 2 and "--cluster" in r.stderr
    r = cli(registry.cp, "client", "publish", "--cluster", "cluster-does-not-exist")
    assert r.returncode == 4, r.stderr
    r = cli(registry.cp, "client", "publish", "--cluster", registry.cluster_id, "--increment", "huge")
    assert r.returncode == 2 and "--increment" in r.stderr


def test_the_same_definitions_publish_the_same_digest(registry):
    """Two publishes of unchanged services differ only by version: rebuilding a version's bytes from
    the same definitions gives the digest the server recorded."""
    from differential import cli_client
    from differential.transport import Config, SyncTransport

    ts = registry.libraries["typescript"]
    with SyncTransport(Config.from_env(endpoint=registry.cp.url), secret=registry.cp.management_secret) as http:
        services = cli_client.fetch_services(http, registry.cluster_id)
    for lib in registry.libraries.values():
        reservation = {**lib, "version": "0.0.1"}
        _, data = cli_client.build_package(lib["language"], services, reservation, registry.cluster_id)
        assert hashlib.sha256(data).hexdigest() == lib["sha256"], lib["language"]
    assert ts["sha256"] != registry.libraries["python"]["sha256"]


# -- the S3 asset store (moto) ----------------------------------------------------------------------

def test_publish_and_install_with_assets_in_s3(_setups, moto_clean, venv, tmp_path):
    bucket = f"assets-{uuid.uuid4().hex[:8]}"
    moto.client("s3").create_bucket(Bucket=bucket)
    cp = ControlPlane(env={**moto.env(), "ASSET_UPLOAD_BUCKET": bucket}).start()
    try:
        cluster = cp.create_cluster("s3")
        # One poll registers a definition, as a worker's first poll does.
        with Differential(cluster["apiSecret"], endpoint=cp.url) as d:
            svc = d.service("calc")
            svc.register(add)
            svc.start()
            try:
                wait_for_functions(cp, cluster["id"], "calc", {"add"})
                out = cli_json(cp, "client", "publish", "--cluster", cluster["id"], "--create-token", "s3")
                libs = {lib["language"]: lib for lib in out["libraries"]}
                keys = {o["Key"] for o in moto.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])}
                assert {f"client_library/{libs['typescript']['id']}", f"client_library/{libs['python']['id']}"} <= keys
                project = npm_project(tmp_path / "s3", out["npmrc"])
                r = npm(["install", "--legacy-peer-deps", "--no-audit", f"@differential.dev/{cluster['id']}"],
                        project, tmp_path)
                assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
                assert (project / "node_modules" / "@differential.dev" / cluster["id"] / "index.d.ts").is_file()
                py = libs["python"]
                host = cp.url.split("://", 1)[1]
                token = out["token"]["token"]
                sha256 = index_sha256(cp.url, token, py["distribution"], py["fileName"])
                r = pip_install_from_index(venv, f"http://__token__:{token}@{host}/packages/pypi/simple/",
                                           py["distribution"], py["version"], sha256, tmp_path)
                assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
                run = subprocess.run([str(venv), "-c", f"import os; from differential import Differential; "
                                      f"from {py['module']} import CalcClient; "
                                      "d = Differential(os.environ['S'], endpoint=os.environ['E']); "
                                      "print(CalcClient(d, timeout=30).add(20, 22)); d.close()"],
                                     env={"S": cluster["apiSecret"], "E": cp.url, "PATH": os.environ["PATH"]},
                                     capture_output=True, text=True, timeout=120)
                assert run.returncode == 0 and run.stdout.strip() == "42", run.stderr[-2000:]
            finally:
                svc.stop(timeout=10)
    finally:
        cp.stop()
