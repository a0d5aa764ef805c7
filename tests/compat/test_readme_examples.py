"""README.md's "The local loop", run as written against a live control-plane (SQLite, as `make run`).

Every fenced block after a `<!-- example: NAME -->` line is read from README.md itself (never a
copy), written to a temp folder as NAME, and run: cluster.sh by bash (its exported variables are
the shell state the later commands run in), then run.sh line by line as a user's shell would,
`CMD &` lines as background jobs, `kill %N` as a signal to job N, every other line in the
foreground with its exact output checked. The one change made to the text: the local endpoint
`http://127.0.0.1:4000` becomes this test's control-plane URL. The temp folder stands in for both
the repository root (`.venv`, `.differential/management-secret.txt`) and the user's folder
(`node_modules` of the pinned SDK, linked, not installed).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from support.node import NODE_DIR
from support.server import REPO_ROOT, ControlPlane

pytestmark = [pytest.mark.slow]

README = REPO_ROOT / "README.md"
LOCAL_ENDPOINT = "http://127.0.0.1:4000"
EXAMPLE = re.compile(r"^<!-- example: (\S+) -->\n```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
NAMES = {"cluster.sh", "greeter.py", "service.mjs", "caller.py", "caller.mjs", "run.sh", "execute.sh"}

# run.sh: what each background job prints first, and the services they register, ...
READY_LINES = ["greeter: serving", "ts-greeter: serving"]
SERVICES = {"greeter", "ts-greeter"}
# ... and the exact stdout of its foreground lines, in order.
EXPECTED = [
    ["Hello from Python, Ada!", "Hello from TypeScript, Ada!"],    # python caller.py
    ["Hello from TypeScript, Ada!", "Hello from Python, Ada!"],    # node caller.mjs
    ['"Hello from Python, Ada!"'],                                  # differential call greeter ...
    ['"Hello from TypeScript, Ada!"'],                              # differential call ts-greeter ...
]
COMMAND_TIMEOUT = 30.0  # a caller of a service nobody serves would wait forever
POLL_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def examples(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, body in EXAMPLE.findall(text):
        assert name not in found, f"two README examples named {name}"
        found[name] = body
    return found


def test_readme_marks_every_example():
    found = examples(README.read_text())
    assert set(found) == NAMES, f"README examples: {sorted(found)}"
    # The examples are for the local control-plane and read the secret from the environment.
    assert f"DIFFERENTIAL_ENDPOINT={LOCAL_ENDPOINT}" in found["cluster.sh"]
    assert "sk_" not in "".join(found.values())


def _clean_env() -> dict[str, str]:
    """The caller's environment without Differential settings or an active venv."""
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DIFFERENTIAL_") and k not in ("VIRTUAL_ENV", "NODE_PATH", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and os.path.realpath(p) != os.path.realpath(venv_bin))
    return env


def _read_env(path: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in path.read_bytes().decode().split("\0") if "=" in item)
    return dict(pairs)


def _output(proc_log: Path) -> str:
    try:
        return proc_log.read_text(errors="replace")
    except OSError:
        return ""


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Job:
    """A `CMD &` line of run.sh: bash execs CMD in a session of its own, so a signal to the
    group reaches it as `kill %N` does from an interactive shell, and the pid is CMD's."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str], number: int) -> None:
        self.line = line
        self.log = cwd / f"job{number}.log"
        command = re.sub(r"&\s*(#.*)?$", "", line)  # the job's `&` (and its comment), not a quoted one
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=cwd, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return _output(self.log)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"`{self.line}` exited {self.proc.returncode}:\n{self.output()[-3000:]}")
        return True

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """bash -c script in a session of its own; on timeout the whole session is killed (a caller
    waiting on a service nobody serves would otherwise outlive the test)."""
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(f"`{script}` still running after {COMMAND_TIMEOUT:.0f}s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _services(cp: ControlPlane, cluster_id: str) -> set[str]:
    r = httpx.get(f"{cp.url}/clusters/{cluster_id}", headers=cp.management_headers, timeout=10.0)
    r.raise_for_status()
    return {d["name"] for d in r.json()["definitions"]}


def test_the_local_loop_as_written(node_sdk):
    found = examples(README.read_text())
    assert set(found) == NAMES, f"README examples: {sorted(found)}"
    jobs: list[Job] = []
    with ControlPlane(None) as cp, tempfile.TemporaryDirectory(prefix="readme-loop-") as tmp:
        work = Path(tmp)
        for name, body in found.items():
            (work / name).write_text(body.replace(LOCAL_ENDPOINT, cp.url))
        (work / ".venv").symlink_to(REPO_ROOT / ".venv")
        (work / "node_modules").symlink_to(NODE_DIR / "node_modules")
        (work / ".differential").mkdir()
        secret_file = work / ".differential" / "management-secret.txt"
        secret_file.write_text(cp.management_secret + "\n")
        secret_file.chmod(0o600)
        try:
            # cluster.sh: the CLI makes a cluster; the shell keeps its secret for what follows.
            env_dump = work / "after-cluster.env"
            r = _run((work / "cluster.sh").read_text() + f'\nenv -0 > "{env_dump}"', work, _clean_env())
            assert r.returncode == 0 and env_dump.exists(), r.stdout + r.stderr
            env = _read_env(env_dump)
            clusters = httpx.get(f"{cp.url}/clusters", headers=cp.management_headers, timeout=10.0).json()
            assert len(clusters) == 1, f"cluster.sh made {len(clusters)} clusters:\n{r.stdout}\n{r.stderr}"
            cluster = clusters[0]
            assert env.get("DIFFERENTIAL_API_SECRET") == cluster["apiSecret"], r.stderr
            assert env.get("DIFFERENTIAL_ENDPOINT") == cp.url
            header, *rows = r.stdout.splitlines()
            assert header.split() == ["ID", "CREATED", "DESCRIPTION", "API", "SECRET"], r.stdout
            assert len(rows) == 1 and rows[0].split()[0] == cluster["id"], r.stdout
            assert rows[0].endswith(cluster["apiSecret"][:7] + "…") and cluster["apiSecret"] not in r.stdout
            assert r.stderr == "", r.stderr

            # run.sh, line by line in that shell state.
            foreground: list[tuple[str, subprocess.CompletedProcess]] = []
            killed: set[int] = set()
            polled = False
            for line in (work / "run.sh").read_text().splitlines():
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                if words[-1].endswith("&"):
                    jobs.append(Job(line, work, env, len(jobs) + 1))
                    continue
                if words[0] == "kill" and all(re.fullmatch(r"%\d+", w) for w in words[1:]):
                    for spec in words[1:]:
                        job = jobs[int(spec[1:]) - 1]
                        job.signal(signal.SIGTERM)
                        killed.add(int(spec[1:]))
                    for n in sorted(killed):
                        try:
                            jobs[n - 1].proc.wait(timeout=STOP_TIMEOUT)
                        except subprocess.TimeoutExpired:
                            pytest.fail(f"`{jobs[n - 1].line}` still running {STOP_TIMEOUT:.0f}s after kill %{n}")
                    continue
                if not polled:  # the services are up before anything calls them
                    assert len(jobs) == len(READY_LINES), [job.line for job in jobs]
                    for job, ready in zip(jobs, READY_LINES, strict=True):
                        _wait(lambda j=job, x=ready: j.alive() and j.output().startswith(x + "\n"),
                              POLL_TIMEOUT, f"`{job.line}` to print {ready!r}; output: {job.output()!r}")
                    _wait(lambda: all(j.alive() for j in jobs) and _services(cp, cluster["id"]) >= SERVICES,
                          POLL_TIMEOUT, f"services {sorted(SERVICES)} to poll")
                    polled = True
                r = _run(line, work, env)
                foreground.append((line, r))
                assert r.returncode == 0, f"`{line}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
                expected = EXPECTED[len(foreground) - 1] if len(foreground) <= len(EXPECTED) else None
                assert r.stdout.splitlines() == expected, f"`{line}`:\n{r.stdout}\n{r.stderr}"

            assert len(foreground) == len(EXPECTED), [line for line, _ in foreground]
            assert killed == set(range(1, len(jobs) + 1)), "run.sh must stop every service it starts"
            lines = " ".join(line for line, _ in foreground)
            assert "caller.py" in lines and "caller.mjs" in lines
            started = " ".join(job.line for job in jobs)
            assert "greeter.py" in started and "service.mjs" in started
        finally:
            for job in jobs:
                job.kill()
