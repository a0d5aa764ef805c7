"""`differential deploy`: the bundles it builds (contents, entry points, the same bytes on a rebuild)
and its argument errors and exit codes before anything reaches a control-plane. The whole flow
against moto and a gunicorn control-plane is in test_deploy_flow.py."""
from __future__ import annotations

import json
import shutil
import stat
import time
import zipfile

import httpx
import pytest

from differential import cli, cli_deploy
from deploy_helpers import run_handler, unzip, write_node_service, write_python_service
from differential.bundles import BundleError, node, python

cli.build_parser()  # registers the deploy commands, which gives cli_deploy its host (cli)

@pytest.fixture(scope="module")
def python_bundles(tmp_path_factory):
    """One Python service built twice (pip installs its requirements as Linux wheels each time)."""
    root = write_python_service(tmp_path_factory.mktemp("pysvc"))
    out = tmp_path_factory.mktemp("pyzips")
    return [python.build(root, out / f"{i}.zip", service="greeter") for i in (1, 2)]


@pytest.fixture(scope="module")
def node_bundles(tmp_path_factory):
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    root = write_node_service(tmp_path_factory.mktemp("nodesvc"))
    out = tmp_path_factory.mktemp("nodezips")
    return [node.build(root, out / f"{i}.zip") for i in (1, 2)]


# -- bundles -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_python_bundle_holds_the_service_its_wheels_and_the_sdk(python_bundles):
    bundle = python_bundles[0]
    assert bundle.runtime == "python3.13" and bundle.service_module == "greeter.app:service"
    with zipfile.ZipFile(bundle.path) as zf:
        names = set(zf.namelist())
        infos = zf.infolist()
        handler = zf.read("differential/lambda_handler.py").decode()
    assert {"greeter/__init__.py", "greeter/app.py", "greeter/data.txt", "requirements.txt"} <= names
    assert "def handler(" in handler  # the runtime's entry point: differential.lambda_handler.handler
    assert {"differential/__init__.py", "differential/worker.py", "differential/transport.py"} <= names
    assert "six.py" in names  # the service's requirement
    assert any(n.startswith("httpx/") for n in names) and any(n.startswith("msgpack/") for n in names)
    # msgpack's compiled module is the one for Lambda's Linux x86_64 Python 3.13, not this machine's
    assert any(n.startswith("msgpack/") and n.endswith("cpython-313-x86_64-linux-gnu.so") for n in names)
    assert not any(n.endswith(".pyc") or "__pycache__" in n or n.startswith((".venv/", "bin/")) for n in names)
    assert ".env" not in names
    assert not any(n.startswith("differential-") and "dist-info" in n for n in names)  # not from an index
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    assert all(stat.S_IMODE(i.external_attr >> 16) in (0o644, 0o755) for i in infos)
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert bundle.files == len(names) and bundle.unzipped == sum(i.file_size for i in infos)


@pytest.mark.slow
def test_python_bundle_is_reproducible(python_bundles):
    first, second = python_bundles
    assert first.sha256 == second.sha256
    assert first.path.read_bytes() == second.path.read_bytes()


@pytest.mark.slow
@pytest.mark.node
def test_node_bundle_holds_package_json_production_deps_and_the_entry(node_bundles):
    bundle = node_bundles[0]
    assert bundle.runtime == "nodejs22.x" and bundle.entrypoint == "service.js"
    with zipfile.ZipFile(bundle.path) as zf:
        names = set(zf.namelist())
        entry = zf.read(node.ENTRY_FILE).decode()
        core = json.loads(zf.read("node_modules/@differentialhq/core/package.json"))
    assert {"package.json", "service.js", node.ENTRY_FILE} <= names
    assert core["version"] == "3.18.0"
    assert "node_modules/@differentialhq/core/bin/Differential.js" in names
    assert not any(n.startswith("node_modules/left-pad/") for n in names)  # devDependencies stay out
    assert ".npmrc" not in names
    assert '"./service.js"' in entry and "exports.handler" in entry and "DIFFERENTIAL_ENDPOINT" in entry
    # msgpackr's native part for Lambda's Linux x64, whatever machine built the bundle
    assert any(n.startswith("node_modules/@msgpackr-extract/msgpackr-extract-linux-x64/") for n in names)


@pytest.mark.slow
@pytest.mark.node
def test_node_bundle_is_reproducible(node_bundles):
    assert node_bundles[0].sha256 == node_bundles[1].sha256


@pytest.mark.slow
@pytest.mark.node
def test_node_entry_stops_the_service_before_the_invocation_deadline(node_bundles, sdk_control_plane, cluster,
                                                                      tmp_path):
    task = unzip(node_bundles[0].path, tmp_path / "task")
    env = {"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url, "DIFFERENTIAL_API_SECRET": cluster["apiSecret"],
           "DIFFERENTIAL_DEPLOYMENT_PROVIDER": "lambda", "DIFFERENTIAL_DEPLOYMENT_ID": "dep-deadline"}
    t0 = time.monotonic()
    out = run_handler("nodejs22.x", task, env, remaining_ms=12000)  # 10 s of it are the safety margin
    assert out["service"] == "nodegreeter" and out["stoppedBy"] == "deadline"
    assert time.monotonic() - t0 < 12  # before the invocation would have ended (a poll in flight ends first)
    details = httpx.get(f"{sdk_control_plane.url}/clusters/{cluster['id']}",
                        headers=sdk_control_plane.management_headers, timeout=10).json()
    assert "dep-deadline" in {m["deploymentId"] for m in details["machines"]}  # it polled, at the endpoint given


def test_python_service_module_is_found_only_when_unambiguous(tmp_path):
    one = tmp_path / "one"
    (one / "pkg").mkdir(parents=True)
    (one / "pkg" / "__init__.py").write_text("")
    (one / "pkg" / "svc.py").write_text('import differential\nsvc = differential.Service(name="alpha")\n')
    (one / "other.py").write_text('from differential import Differential\nd = Differential("s")\n'
                                  'beta = d.service("beta")\n')
    assert python.find_service_module(one, "alpha") == "pkg.svc:svc"
    assert python.find_service_module(one, "beta") == "other:beta"
    with pytest.raises(BundleError, match=r"no service named 'gamma'.*pkg\.svc:svc.*--module"):
        python.find_service_module(one, "gamma")
    (one / "again.py").write_text('from differential import Service\nsecond = Service("alpha")\n')
    with pytest.raises(BundleError, match="several services named 'alpha'.*--module"):
        python.find_service_module(one, "alpha")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "main.py").write_text("print('no service here')\n")
    with pytest.raises(BundleError, match="no `Service"):
        python.find_service_module(empty, "alpha")
    with pytest.raises(BundleError, match="no missing/mod.py"):
        python.check_module(one, "missing.mod:svc")
    with pytest.raises(BundleError, match="must look like"):
        python.check_module(one, "pkg/svc.py")


def test_python_requirements_are_plain_and_never_the_sdk(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["six>=1", "Differential>=0.1"]\n')
    assert python.requirement_lines(tmp_path, None) == ["six>=1"]
    req = tmp_path / "reqs.txt"
    req.write_text("# comment\nsix==1.16.0  # pinned\n\n-e ./local\n")
    with pytest.raises(BundleError, match="only plain requirements"):
        python.requirement_lines(tmp_path, req)
    with pytest.raises(BundleError, match="no such file"):
        python.requirement_lines(tmp_path, tmp_path / "absent.txt")


def test_node_service_checks(tmp_path):
    root = write_node_service(tmp_path / "svc")
    pkg = json.loads((root / "package.json").read_text())
    (root / "service.ts").write_text("export default 1;\n")
    with pytest.raises(BundleError, match="TypeScript: compile it"):
        node.entry_module(root, pkg, "service.ts")
    with pytest.raises(BundleError, match="does not exist"):
        node.entry_module(root, dict(pkg, main="dist/index.js"), None)
    with pytest.raises(BundleError, match="outside"):
        node.entry_module(root, pkg, "../elsewhere.js")
    (root / "package.json").write_text(json.dumps(dict(pkg, dependencies={})))
    with pytest.raises(BundleError, match="must be in \"dependencies\""):
        node.read_package(root)


def test_bundles_over_lambdas_limit_or_the_servers_are_refused(tmp_path, monkeypatch):
    from differential.bundles import zipping

    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    files = zipping.collect(tmp_path)
    monkeypatch.setattr(zipping, "LAMBDA_UNZIPPED_LIMIT", 4095)
    with pytest.raises(BundleError, match="Lambda allows at most"):
        zipping.write_zip(files, {}, tmp_path / "out" / "b.zip", runtime="python3.13")
    monkeypatch.setattr(zipping, "LAMBDA_UNZIPPED_LIMIT", 1 << 30)
    bundle = zipping.write_zip(files, {}, tmp_path / "out" / "b.zip", runtime="python3.13")
    with pytest.raises(cli.UsageError, match="takes at most"):
        cli_deploy.upload(bundle, {"presignedUrl": "http://127.0.0.1:9/never", "maxBytes": bundle.size - 1},
                          quiet=True)


# -- the command line: errors before any request -----------------------------------------------

BASE = ["--endpoint", "http://127.0.0.1:9", "--management-secret", "sk_management_" + "x" * 40]


def run(capsys, *argv):
    try:
        code = cli.main([*argv, *BASE])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_deploy_usage_errors_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFERENTIAL_CLUSTER_ID", raising=False)
    code, _, err = run(capsys, "deploy", "list", "svc")
    assert code == 2 and "--cluster" in err
    code, _, err = run(capsys, "deploy", "create", "svc", str(tmp_path / "nowhere"), "--cluster", "c")
    assert code == 2 and "is not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "deploy", "create", "svc", str(tmp_path / "empty"), "--cluster", "c")
    assert code == 2 and "neither package.json" in err
    both = write_node_service(tmp_path / "both")
    (both / "tool.py").write_text("")
    code, _, err = run(capsys, "deploy", "create", "svc", str(both), "--cluster", "c")
    assert code == 2 and "--runtime" in err
    code, _, err = run(capsys, "deploy", "create", "svc", str(both), "--cluster", "c", "--runtime", "java21")
    assert code == 2 and "java21" in err
    code, _, err = run(capsys, "deploy", "create", "svc", str(both), "--cluster", "c", "--runtime", "nodejs22.x",
                       "--module", "a:b")
    assert code == 2 and "--module and --requirements are for Python" in err
    code, _, err = run(capsys, "deploy", "create", "nosuch", str(tmp_path / "empty"), "--cluster", "c",
                       "--runtime", "python3.13")
    assert code == 2 and "no `Service" in err
    code, _, err = run(capsys, "deploy", "delete", "svc", "--cluster", "c")  # stdin is not a terminal
    assert code == 2 and "--yes" in err
    code, _, err = run(capsys, "deploy", "logs", "svc", "d1", "--cluster", "c", "--start", "yesterday")
    assert code == 2 and "--start 'yesterday'" in err
    code, _, err = run(capsys, "deploy", "logs", "svc", "d1", "--cluster", "c", "--follow", "--end", "5m")
    assert code == 2 and "--follow" in err
    code, _, err = run(capsys, "deploy", "status")  # argparse: SERVICE is required
    assert code == 2 and "service" in err


def test_deploy_unreachable_control_plane_exits_5(capsys, monkeypatch):
    monkeypatch.setenv("DIFFERENTIAL_CLUSTER_ID", "cluster-x")
    code, _, err = run(capsys, "deploy", "list", "svc")
    assert code == 5 and "cannot reach the control-plane" in err


def test_parse_time_and_rollback_target():
    now = 1_800_000_000_000
    assert cli_deploy.parse_time("1700000000000", "--start", now) == 1_700_000_000_000
    assert cli_deploy.parse_time("15m", "--start", now) == now - 15 * 60_000
    assert cli_deploy.parse_time("2026-12-01T00:00:00Z", "--start", now) == 1_796_083_200_000
    with pytest.raises(cli.UsageError, match="offset"):
        cli_deploy.parse_time("2026-12-01T00:00:00", "--end", now)
    newest_first = [{"id": "d5", "status": "failed"}, {"id": "d4", "status": "inactive"},
                    {"id": "d3", "status": "active"}, {"id": "d2", "status": "failed"},
                    {"id": "d1", "status": "inactive"}, {"id": "d0", "status": "inactive"}]
    assert cli_deploy.rollback_target(newest_first)["id"] == "d1"  # older than the active one
    assert cli_deploy.rollback_target([{"id": "d1", "status": "inactive"}])["id"] == "d1"
    assert cli_deploy.rollback_target([{"id": "d1", "status": "active"}]) is None


# -- waiting, rollback's default, logs paging: the CLI's side against scripted answers -------------

class ScriptedControlPlane:
    """Answers the CLI's requests from a script of (method, path suffix) -> answers, recording them."""

    def __init__(self, script):
        self.script = {key: list(answers) for key, answers in script.items()}
        self.requests = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def request(self, method, path, json=None, params=None, **kw):
        self.requests.append((method, path, params))
        for (m, suffix), answers in self.script.items():
            if m == method and path.endswith(suffix):
                return answers.pop(0) if len(answers) > 1 else answers[0]
        raise AssertionError(f"unexpected {method} {path}")


def scripted(monkeypatch, script):
    plane = ScriptedControlPlane(script)
    monkeypatch.setattr(cli, "_management", lambda args: plane)
    monkeypatch.setattr(cli_deploy, "POLL_SECONDS", 0.01)
    return plane


def dep(id_, status, **kw):
    return {"id": id_, "service": "svc", "status": status, **kw}


def test_rollback_picks_the_inactive_one_before_the_active_and_exits_1_when_it_fails(capsys, monkeypatch):
    plane = scripted(monkeypatch, {
        ("GET", "/deployments"): [{"deployments": [dep("d3", "active"), dep("d2", "inactive"), dep("d1", "inactive")]}],
        ("POST", "/deployments/d2/rollback"): [dep("d2", "deploying")],
        ("GET", "/deployments/d2"): [dep("d2", "deploying"), dep("d2", "failed", reason="UPDATE_ROLLBACK_COMPLETE: "
                                                                                        "the function did not update")],
    })
    code, _, err = run(capsys, "deploy", "rollback", "svc", "--cluster", "c")
    assert code == 1 and "d2 of svc is failed: UPDATE_ROLLBACK_COMPLETE" in err
    assert ("POST", "/clusters/c/service/svc/deployments/d2/rollback", None) in plane.requests


def test_waiting_exits_6_on_timeout_0_once_active_and_4_without_a_rollback_target(capsys, monkeypatch):
    scripted(monkeypatch, {("POST", "/deployments/d1/rollback"): [dep("d1", "deploying")],
                           ("GET", "/deployments/d1"): [dep("d1", "deploying")]})
    code, _, err = run(capsys, "deploy", "rollback", "svc", "d1", "--cluster", "c", "--timeout", "0.3")
    assert code == 6 and "is deploying after 0.3 s" in err
    scripted(monkeypatch, {("POST", "/deployments/d1/rollback"): [dep("d1", "deploying")],
                           ("GET", "/deployments/d1"): [dep("d1", "deploying"), dep("d1", "active")]})
    code, out, _ = run(capsys, "deploy", "rollback", "svc", "d1", "--cluster", "c", "--json")
    assert code == 0 and json.loads(out)["status"] == "active"
    scripted(monkeypatch, {("GET", "/deployments"): [{"deployments": [dep("d1", "active")]}]})
    code, _, err = run(capsys, "deploy", "rollback", "svc", "--cluster", "c")
    assert code == 4 and "no inactive deployment" in err


def test_logs_follow_the_next_tokens(capsys, monkeypatch):
    plane = scripted(monkeypatch, {
        ("GET", "/deployments"): [{"deployments": [dep("d9", "active")]}],
        ("GET", "/deployments/d9/logs"): [
            {"events": [{"timestamp": 1796083200000, "message": "one"}, {"timestamp": 1796083201000,
                                                                          "message": "two"}], "next": "t1"},
            {"events": [{"timestamp": 1796083202000, "message": "three"}], "next": None}],
    })
    code, out, _ = run(capsys, "deploy", "logs", "svc", "--cluster", "c", "--filter", "o", "--limit", "2")
    assert code == 0
    assert out.splitlines() == ["2026-12-01T00:00:00.000Z  one", "2026-12-01T00:00:01.000Z  two",
                                "2026-12-01T00:00:02.000Z  three"]
    pages = [p for m, path, p in plane.requests if path.endswith("/logs")]
    assert pages == [{"limit": 2, "filter": "o"}, {"limit": 2, "filter": "o", "next": "t1"}]
