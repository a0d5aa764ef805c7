"""The control-plane as a real gunicorn subprocess, for end-to-end and fault tests.

Runs `python -m gunicorn -c gunicorn.conf.py app.wsgi:app` from the repo root on a free port.
Output goes to a log file (a pipe nobody reads could fill and block the server); the last lines
are put into the error when the server does not come up.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

import httpx

from . import postgres  # noqa: F401  (imported first so our atexit hook runs before its shutdown)

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_ARGV = ["gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"]
START_TIMEOUT = 30.0
KEEP_LOGS = "KEEP_TEST_LOGS"  # set to 1 to keep every instance's temp dir (server.log, SQLite)

_instances: "list[ControlPlane]" = []


@atexit.register
def _reap() -> None:
    # A test that failed between start() and stop() must not leave gunicorn running (it is in
    # its own session, so nothing else would end it) nor its temp dir in /tmp.
    for cp in list(_instances):
        if cp.owner_pid != os.getpid():  # a forked child exiting: not its processes to end
            continue
        if cp.proc is not None and cp.proc.poll() is None:
            cp.kill()
        if not os.environ.get(KEEP_LOGS):
            shutil.rmtree(cp.workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_management_secret() -> str:
    return "sk_management_" + secrets.token_urlsafe(40)[:40]


class ControlPlane:
    """One control-plane process. `database_url=None` means the embedded SQLite in a temp dir."""

    def __init__(
        self,
        database_url: str | None = None,
        management_secret: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        root: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.management_secret = management_secret or new_management_secret()
        self.extra_env = dict(env or {})
        self.port = port or _free_port()
        self.root = root or REPO_ROOT  # the tree whose app runs (the bench compares an older one)
        self.workdir = Path(tempfile.mkdtemp(prefix="differential-cp-"))
        self.data_dir = self.workdir / "data"  # SQLite lives here; kept across restart()
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.owner_pid = os.getpid()
        _instances.append(self)

    # -- properties -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def management_headers(self) -> dict[str, str]:
        return {"Authorization": f"Basic {self.management_secret}"}

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- lifecycle --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Never inherit the caller's app settings: each instance says exactly what it runs with.
        for name in ("DATABASE_URL", "DIFFERENTIAL_DATA_DIR", "MANAGEMENT_SECRET", "PORT"):
            env.pop(name, None)
        env["PORT"] = str(self.port)
        env["MANAGEMENT_SECRET"] = self.management_secret
        env["PYTHONUNBUFFERED"] = "1"
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        else:
            self.data_dir.mkdir(exist_ok=True)
            env["DIFFERENTIAL_DATA_DIR"] = str(self.data_dir)
        env.update(self.extra_env)
        return env

    def start(self) -> "ControlPlane":
        """Start the process and wait (at most 30 s) until GET /live answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *GUNICORN_ARGV],
                cwd=self.root, env=self._env(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # signals reach gunicorn's master, not our process group
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"control-plane exited with {self.proc.returncode} while starting; log:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + "/live", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"control-plane not live after {START_TIMEOUT:.0f}s; log:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send sig and wait; SIGKILL if still running after timeout. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
            except ProcessLookupError:
                pass
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the master and its workers (whole session), as a crash would."""
        proc = self.proc
        if proc is None:
            return None
        self._kill_group(proc)
        return proc.returncode

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the workers too, not only the master
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def restart(self) -> "ControlPlane":
        """Graceful stop, then start again on the same port, database and secret."""
        self.stop()
        return self.start()

    # -- management API ---------------------------------------------------------------------

    def create_cluster(self, description: str | None = None) -> dict:
        """POST /clusters, then return the newest cluster from GET /clusters
        (keys id, apiSecret, createdAt, description). Accepts 201-with-body and 204."""
        body = {} if description is None else {"description": description}
        r = httpx.post(self.url + "/clusters", json=body, headers=self.management_headers, timeout=10.0)
        if r.status_code not in (200, 201, 204):
            raise RuntimeError(f"POST /clusters answered {r.status_code}: {r.text[:500]}")
        created = r.json() if r.status_code != 204 and r.content else None
        r = httpx.get(self.url + "/clusters", headers=self.management_headers, timeout=10.0)
        r.raise_for_status()
        clusters = r.json()
        if isinstance(created, dict) and created.get("id"):
            for cluster in clusters:
                if cluster.get("id") == created["id"]:
                    return cluster
        if not clusters:
            raise RuntimeError("GET /clusters is empty right after POST /clusters")
        return max(clusters, key=lambda c: c.get("createdAt") or "")

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if exc_type is None:  # keep the log (and data) of a failed test for a look
            shutil.rmtree(self.workdir, ignore_errors=True)
