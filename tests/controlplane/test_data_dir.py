"""The data folder and the SQLite database hold every secret: created 0700/0600, tightened if looser."""
from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app import db, settings as settings_module
from support.server import ControlPlane

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_fresh_data_dir_is_private(tmp_path):
    data = tmp_path / "fresh" / "data"  # nothing of it exists yet
    with ControlPlane(env={"DIFFERENTIAL_DATA_DIR": str(data)}) as cp:
        cp.create_cluster()  # a write, so the database has content
        assert mode(data) == 0o700
        assert mode(data / "differential.db") == 0o600
        # SQLite gives its -wal file the database file's mode, whatever the umask.
        with sqlite3.connect(data / "differential.db") as conn:
            conn.execute("SELECT count(*) FROM clusters").fetchone()
            assert (data / "differential.db-wal").exists()
            assert mode(data / "differential.db-wal") == 0o600
        assert "readable only by its owner" not in cp.log_tail()


def test_a_looser_existing_data_dir_is_tightened_and_said_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    for name in ("differential.db", "differential.db-wal", "differential.db-shm"):
        (data / name).touch()
        os.chmod(data / name, 0o644)
    with ControlPlane(env={"DIFFERENTIAL_DATA_DIR": str(data)}) as cp:
        cp.create_cluster()
        assert mode(data) == 0o700
        assert mode(data / "differential.db") == 0o600
        for name in ("differential.db-wal", "differential.db-shm"):
            if (data / name).exists():
                assert mode(data / name) == 0o600
        log = cp.log_tail(100_000)
    assert log.count(f"made {data} readable only by its owner (mode 755 -> 700)") == 1
    assert log.count(f"made {data / 'differential.db'} readable only by its owner (mode 644 -> 600)") == 1


def test_an_explicit_sqlite_url_never_chmods_its_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    settings = settings_module.load({"DATABASE_URL": f"sqlite:///{shared}/x.db"})
    db._sqlite(settings).close()
    assert mode(shared) == 0o755  # e.g. /tmp: not ours to tighten
    assert mode(shared / "x.db") == 0o600


@pytest.mark.parametrize("preexisting", [False, True])
def test_local_server_makes_the_data_dir_and_secret_private(tmp_path, preexisting):
    data = tmp_path / "data"
    if preexisting:
        data.mkdir()
        os.chmod(data, 0o755)
        secret = settings_module.MANAGEMENT_SECRET_PREFIX + "x" * 40
        (data / "management-secret.txt").write_text(secret + "\n")
        os.chmod(data / "management-secret.txt", 0o644)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MANAGEMENT_SECRET")}
    env.update({"DIFFERENTIAL_DATA_DIR": str(data), "PORT": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = []
        while not banner or not banner[-1].startswith("  cli: "):
            banner.append(proc.stdout.readline())
            assert banner[-1], "".join(banner)
        said = "".join(banner)
        assert said.count("readable only by its owner") == (2 if preexisting else 0), said
        secret_file = data / "management-secret.txt"
        assert f"  management secret: {secret_file}\n" in banner
        assert f"  database:          SQLite file {data / 'differential.db'}\n" in banner
        _wait_live(port)
        assert mode(data) == 0o700 and mode(secret_file) == 0o600
        assert mode(data / "differential.db") == 0o600
        # The banner's try: line works as pasted.
        [try_line] = [line for line in banner if line.startswith("  try: ")]
        answer = subprocess.run(["bash", "-c", try_line.removeprefix("  try: ").rstrip() + " -s -o /dev/null -w '%{http_code}'"],
                                capture_output=True, text=True, timeout=30)
        assert answer.stdout == "201"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_live(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not live on {port} after {timeout} s")
