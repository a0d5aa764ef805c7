"""A Python service's bundle: its modules, its requirements and this SDK, for Lambda's Linux x86_64.

The runtime runs `differential.lambda_handler.handler`, which imports DIFFERENTIAL_SERVICE_MODULE
("pkg.module:attribute"), so the zip's root holds the service's own files, its requirements
installed by pip as wheels for the target (`--platform manylinux2014_x86_64 --implementation cp
--python-version 3.13 --only-binary=:all:`: nothing is compiled here, so a Mac or a Windows machine
builds the same Linux bundle) and this SDK itself. The SDK is not on the package index: it is copied
from the installed package, and only its dependencies are installed as wheels.
"""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .zipping import Bundle, BundleError, collect, prefixed, write_zip

PLATFORM = "manylinux2014_x86_64"
SDK_PACKAGE = "differential"
_MODULE_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")
# `svc = Service("name")`, `service = differential.Service(name="x")`, `svc = d.service("x")`
_SERVICE_ASSIGN = re.compile(
    r"^(?P<var>[A-Za-z_]\w*)\s*(?::[^=\n]+)?=\s*(?:[A-Za-z_][\w.]*\.)?(?:Service|service)\(\s*"
    r"(?:name\s*=\s*)?(?:(?P<q>['\"])(?P<name>[^'\"\n]*)(?P=q))?", re.MULTILINE)
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# The user's folder: besides SKIP_DIRS, what belongs to other tools.
_SKIP_SOURCE = frozenset({"node_modules", "dist", "build"})


def looks_like_python(source: Path) -> bool:
    return (any(source.glob("*.py")) or (source / "pyproject.toml").is_file()
            or (source / "requirements.txt").is_file())


def python_version(runtime: str) -> str:
    m = re.fullmatch(r"python(3\.\d+)", runtime)
    if not m:
        raise BundleError(f"runtime {runtime!r} is not a Python runtime (e.g. python3.13)")
    return m.group(1)


def code_root(source: Path) -> Path:
    """A `src/` layout (pyproject.toml beside src/) packages what is under src/."""
    if (source / "pyproject.toml").is_file() and (source / "src").is_dir() and not any(source.glob("*.py")):
        return source / "src"
    return source


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_service_module(root: Path, service: str) -> str:
    """The one `X = Service("<service>")` (or `d.service(...)`) assignment under `root`, as
    "module:X"; anything else is a BundleError asking for --module."""
    found: List[tuple] = []
    for name, path in sorted(collect(root, skip_dir=lambda p: p.name in _SKIP_SOURCE).items()):
        if not name.endswith(".py"):
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for m in _SERVICE_ASSIGN.finditer(text):
            found.append((_module_name(root, path), m.group("var"), m.group("name")))
    named = [f for f in found if f[2] == service]
    pick = named or (found if len(found) == 1 and found[0][2] is None else [])
    if len(pick) == 1:
        return f"{pick[0][0]}:{pick[0][1]}"
    hint = "pass --module package.module:attribute (the attribute being the differential.Service)"
    if not found:
        raise BundleError(f"no `Service(\"{service}\")` found in the .py files under {root}; {hint}")
    listed = ", ".join(f"{m}:{v}" + (f" (Service {n!r})" if n is not None else "") for m, v, n in found[:6])
    if len(named) > 1:
        raise BundleError(f"several services named {service!r} ({listed}); {hint}")
    raise BundleError(f"no service named {service!r} found, only {listed}; {hint}")


def check_module(root: Path, spec: str) -> None:
    if not _MODULE_SPEC.match(spec):
        raise BundleError(f"--module {spec!r} must look like package.module:attribute")
    parts = spec.partition(":")[0].split(".")
    base = root.joinpath(*parts)
    if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
        raise BundleError(f"--module {spec!r}: no {'/'.join(parts)}.py (or package) under {root}")


def requirement_lines(source: Path, requirements: Optional[Path]) -> List[str]:
    """The service's requirements: --requirements FILE, else requirements.txt, else pyproject's
    [project] dependencies. A line naming this SDK is dropped: the bundle gets the installed SDK."""
    if requirements is not None:
        if not requirements.is_file():
            raise BundleError(f"--requirements {requirements}: no such file")
        lines = requirements.read_text(encoding="utf-8").splitlines()
    elif (source / "requirements.txt").is_file():
        lines = (source / "requirements.txt").read_text(encoding="utf-8").splitlines()
    elif (source / "pyproject.toml").is_file():
        lines = _pyproject_dependencies(source / "pyproject.toml")
    else:
        lines = []
    out = []
    for line in lines:
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(("-e", "--editable", "-r", "--requirement", "-c", "--constraint", ".", "/")):
            raise BundleError(f"requirement {text!r}: only plain requirements (name, version, markers) can be "
                              "installed for Lambda as wheels; list the packages themselves")
        m = _REQ_NAME.match(text)
        if m and re.sub(r"[-_.]+", "-", m.group(1)).lower() == SDK_PACKAGE:
            continue
        out.append(text)
    return out


def _pyproject_dependencies(path: Path) -> List[str]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - 3.9/3.10
        raise BundleError(f"{path}: reading pyproject.toml needs Python 3.11; pass --requirements FILE") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is not valid TOML: {e}") from None
    deps = (data.get("project") or {}).get("dependencies") or []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise BundleError(f"{path}: [project] dependencies must be a list of strings")
    return list(deps)


def sdk_files() -> Dict[str, Path]:
    """This SDK's own package, as installed (archive names under differential/)."""
    package = Path(__file__).resolve().parent.parent
    return prefixed(collect(package), SDK_PACKAGE)


def sdk_requirements() -> List[str]:
    try:
        requires = importlib.metadata.requires(SDK_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise BundleError("the differential SDK's metadata is missing: install the SDK (pip install ./sdk) "
                          "before deploying") from None
    return [r for r in requires if "extra ==" not in r]


def install_wheels(requirements: List[str], target: Path, py_version: str,
                   log: Callable[[str], None]) -> None:
    if not requirements:
        return
    req_file = target.parent / "bundle-requirements.txt"
    req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "install", "--target", str(target), "--platform", PLATFORM,
           "--implementation", "cp", "--python-version", py_version, "--only-binary=:all:", "--no-compile",
           "--no-warn-script-location", "--disable-pip-version-check", "--quiet", "-r", str(req_file)]
    log(f"Installing {len(requirements)} requirement(s) as wheels for Linux x86_64, Python {py_version}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
        raise BundleError(f"pip could not install the requirements for Lambda (only wheels for {PLATFORM}, "
                          f"Python {py_version} are used; a package without one cannot be deployed):\n{tail}")


def build(source: Path, dest: Path, *, service: str, module: Optional[str] = None,
          requirements: Optional[Path] = None, runtime: str = "python3.13",
          log: Callable[[str], None] = lambda line: None) -> Bundle:
    source = source.resolve()
    if not source.is_dir():
        raise BundleError(f"{source} is not a folder: PATH is the service's folder")
    py_version = python_version(runtime)
    root = code_root(source)
    spec = module or find_service_module(root, service)
    check_module(root, spec)
    own = collect(root, skip_dir=lambda p: p.name in _SKIP_SOURCE or p.name.endswith(".egg-info"))
    own = {n: p for n, p in own.items() if p.resolve() != dest.resolve()}
    if any(n.split("/", 1)[0] == SDK_PACKAGE for n in own):
        raise BundleError(f"{root} has its own '{SDK_PACKAGE}' module, which would hide the SDK; rename it")
    reqs = requirement_lines(source, requirements) + sdk_requirements()
    with tempfile.TemporaryDirectory(prefix="differential-bundle-") as tmp:
        deps = Path(tmp) / "deps"
        deps.mkdir()
        install_wheels(reqs, deps, py_version, log)
        installed = {n: p for n, p in collect(deps).items() if not n.startswith("bin/")}
        files = {**installed, **own, **sdk_files()}
        return write_zip(files, {}, dest, runtime=runtime, service_module=spec)
