"""The SDK's import graph: the worker is built from a Config and never imports the client (it
used to, inside Service.start, to break a client <-> worker cycle at run time)."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from sdk_helpers import SDK_SRC, subprocess_env

PACKAGE = Path(SDK_SRC) / "differential"


def _imports(module: str) -> set[str]:
    """The package modules `module` imports anywhere in its body (functions included)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y / from . import x
            found.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("differential"):
            found.add(node.module.partition(".")[2] or "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.partition(".")[2] for a in node.names if a.name.startswith("differential."))
    return {m.split(".")[0] for m in found} & _modules()


def _modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in _imports(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_no_module_of_the_worker_side_imports_the_client():
    assert "client" not in _reachable("worker")
    assert "client" not in _reachable("lambda_handler")
    assert "worker" in _imports("client")  # the one direction: client -> worker


def test_the_package_has_no_import_cycle():
    for module in _modules() - {"__init__"}:
        assert module not in _reachable(module), f"{module} imports itself through {_reachable(module)}"


BLOCKED = textwrap.dedent("""
    import importlib.abc, importlib.util, sys, types

    class NoClient(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "differential.client":
                raise ImportError("differential.client is blocked")
            return None

    sys.meta_path.insert(0, NoClient())
    # The package without its __init__ (which imports the client for the public names).
    spec = importlib.util.find_spec("differential")
    package = types.ModuleType("differential")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["differential"] = package

    import differential.lambda_handler
    from differential.transport import Config
    from differential.worker import Service

    svc = Service("standalone", Config(api_secret="sk_x", endpoint="http://127.0.0.1:9"))
    svc.register(lambda: None, name="noop")
    svc.start()
    assert svc.running
    assert svc.stop(timeout=5)
    assert "differential.client" not in sys.modules
    print("ok")
""")


def test_the_worker_imports_and_runs_with_the_client_blocked():
    r = subprocess.run([sys.executable, "-c", BLOCKED], env=subprocess_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_service_is_typed_and_built_from_the_instance_config():
    import typing

    from differential import Differential, Service

    assert typing.get_type_hints(Differential.service)["return"] is Service
    d = Differential("sk_x", endpoint="http://127.0.0.1:9")
    svc = d.service("typed")
    assert isinstance(svc, Service) and svc.config is d.config
    d.close()
