"""The real Node SDK (@differentialhq/core 3.18.0, pinned by tests/node/package-lock.json), and
helpers that run Node with cwd tests/node so `import ... from "@differentialhq/core"` resolves.

Note: the package has no "exports" map, so ESM code must import subpaths with the extension,
e.g. `import { pack } from "@differentialhq/core/bin/serialize.js"`; `require` works without it.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Mapping, Sequence

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SDK_VERSION = "3.18.0"
NPM_CI_TIMEOUT = 600.0

_started: list[subprocess.Popen] = []


@atexit.register
def _reap() -> None:
    # Node processes a test forgot to stop, and their temp logs, go with this process.
    for proc in _started:
        if getattr(proc, "owner_pid", None) != os.getpid():  # a forked child exiting
            continue
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if getattr(proc, "log_path", None) and not os.environ.get("KEEP_TEST_LOGS"):
            try:
                os.unlink(proc.log_path)
            except OSError:
                pass


def _installed_version() -> str | None:
    try:
        manifest = NODE_DIR / "node_modules" / "@differentialhq" / "core" / "package.json"
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_node_sdk() -> Path:
    """Install the pinned SDK with `npm ci` if it is missing or another version; return tests/node."""
    if _installed_version() == SDK_VERSION:
        return NODE_DIR
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        raise RuntimeError("node and npm are needed for the Node SDK tests")
    # Several processes of one run may get here together: one installs, the others wait for it.
    lock_path = Path(tempfile.gettempdir()) / f"differential-npm-ci-{abs(hash(str(NODE_DIR)))}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version() != SDK_VERSION:
            r = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT,
            )
            if r.returncode != 0:
                raise RuntimeError(f"npm ci failed in {NODE_DIR}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    if _installed_version() != SDK_VERSION:
        raise RuntimeError(f"npm ci did not install @differentialhq/core {SDK_VERSION}")
    return NODE_DIR


def _argv(script: str | os.PathLike, args: Sequence[str]) -> list[str]:
    node = shutil.which("node") or "node"
    if isinstance(script, os.PathLike) or (
        "\n" not in script and script.endswith((".mjs", ".js", ".cjs")) and Path(script).is_file()
    ):
        return [node, str(Path(script).resolve()), *args]
    # Inline source runs as an ES module; bare imports resolve from cwd (tests/node). Under -e,
    # args start at argv[1]: the prefix shifts them to argv[2] as for a file (imports still hoist).
    source = 'process.argv.splice(1, 0, "[eval]");\n' + script
    return [node, "--input-type=module", "-e", source, "--", *args]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged.update(env or {})
    return merged


def run_node(
    script: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    args: Sequence[str] = (),
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a script file or inline ESM source to completion; stdout/stderr captured as text."""
    ensure_node_sdk()
    return subprocess.run(
        _argv(script, args), cwd=NODE_DIR, env=_env(env), input=input,
        capture_output=True, text=True, timeout=timeout,
    )


def start_node(
    script: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    stdout: int | IO | None = None,
) -> subprocess.Popen:
    """Start Node in the background. Output goes to a temp log file unless stdout is given (a pipe
    nobody reads can fill and block Node); its path is `proc.log_path`. The caller stops it
    (at exit, any still running is killed and its log removed)."""
    ensure_node_sdk()
    log_path = None
    if stdout is None:
        fd, log_path = tempfile.mkstemp(prefix="differential-node-", suffix=".log")
        stdout = os.fdopen(fd, "wb")
    try:
        proc = subprocess.Popen(
            _argv(script, args), cwd=NODE_DIR, env=_env(env), stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=subprocess.STDOUT,
        )
    finally:
        if log_path is not None:
            stdout.close()
    proc.log_path = log_path  # type: ignore[attr-defined]
    proc.owner_pid = os.getpid()  # type: ignore[attr-defined]
    _started.append(proc)
    return proc
