"""One throwaway PostgreSQL 15 server per test run, plus fresh databases on it.

`ensure_server()` reuses the server named by TEST_DATABASE_URL when it is set; otherwise it
initdb's a cluster into a temp dir, starts it on a free 127.0.0.1 port and exports its DSN in
TEST_DATABASE_URL, so subprocesses of the same run (spawned pytest runs, workers) reuse it
instead of starting their own. Only the process that started the cluster may stop/restart it.

initdb and postgres refuse to run as root (CI runs as root), so as root the cluster runs as an
ordinary user (see `_server_user`); as an ordinary user it simply runs as that user.
"""
from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ENV_URL = "TEST_DATABASE_URL"
DROP_USER = "differential-test"  # created as root when missing
SUPERUSER = "postgres"  # the cluster's superuser, whatever OS user runs it
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass
class _Cluster:
    base: Path  # temp dir holding data/, sock/ and postgres.log
    port: int
    uid: int | None  # None: run as ourselves (we are not root)
    gid: int | None
    owner_pid: int  # atexit handlers survive fork: only the starter may stop it
    proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"


_lock = threading.RLock()
_cluster: _Cluster | None = None


def _bindir() -> Path:
    # PG_BINDIR overrides; else Debian's layout for 15; else whatever initdb is on PATH.
    for candidate in (os.environ.get("PG_BINDIR"), "/usr/lib/postgresql/15/bin"):
        if candidate and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    raise RuntimeError("PostgreSQL 15 server binaries not found (install postgresql-15 or set PG_BINDIR)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> tuple[int | None, int | None]:
    """(uid, gid) to run initdb/postgres as: ourselves unless root, then an ordinary user."""
    if os.geteuid() != 0:
        return None, None
    names = [os.environ.get("TEST_PG_OS_USER") or DROP_USER, "postgres", "nobody"]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name == DROP_USER and shutil.which("useradd"):
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                    capture_output=True, timeout=30,
                )
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
            else:
                continue
        if entry.pw_uid != 0:
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no ordinary user to run PostgreSQL as (useradd failed)")


def _as_user_kwargs(c: _Cluster) -> dict:
    # subprocess's user/group drop privileges in the child right before exec: no runuser needed,
    # and the Popen pid is the postmaster itself, so we can signal it directly.
    if c.uid is None:
        return {}
    return {"user": c.uid, "group": c.gid, "extra_groups": []}


def _log_tail(c: _Cluster, chars: int = 3000) -> str:
    try:
        return c.log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# Throwaway data: durability off makes the suite much faster. The bench runs with PostgreSQL's
# defaults (`ensure_server(durable=True)`) unless run with `--unsafe-pg`: no user runs a queue this way.
UNSAFE_SETTINGS = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")


def _initdb(c: _Cluster, durable: bool) -> None:
    conf_lines = [
        "listen_addresses = '127.0.0.1'",
        f"port = {c.port}",
        f"unix_socket_directories = '{c.base / 'sock'}'",
        "max_connections = 300",
        *(() if durable else UNSAFE_SETTINGS),
    ]
    (c.base / "sock").mkdir()
    if c.uid is not None:
        for path in (c.base, c.base / "sock"):
            os.chown(path, c.uid, c.gid)
    cmd = [
        str(_bindir() / "initdb"), "-D", str(c.data), "-U", SUPERUSER, "--auth=trust",
        "--no-locale", "-E", "UTF8", "--no-sync",
    ]
    r = subprocess.run(cmd, cwd=c.base, capture_output=True, text=True, timeout=120, **_as_user_kwargs(c))
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    # Appending keeps the file's owner; later settings win, and restarts keep the same port.
    with open(c.data / "postgresql.conf", "a") as f:
        f.write("\n# tests/support/postgres.py\n" + "\n".join(conf_lines) + "\n")


def _start(c: _Cluster) -> None:
    """Start the postmaster and wait (bounded) until it accepts connections."""
    with open(c.log, "ab") as log:  # the child keeps its own copy of the descriptor
        c.proc = subprocess.Popen(
            [str(_bindir() / "postgres"), "-D", str(c.data)],
            cwd=c.base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal must not shut it down under the tests
            **_as_user_kwargs(c),
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if c.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {c.proc.returncode} while starting:\n{_log_tail(c)}")
        try:
            psycopg2.connect(c.dsn, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            pass
        if time.monotonic() > deadline:
            _stop(c)
            raise RuntimeError(f"postgres not ready after {START_TIMEOUT:.0f}s:\n{_log_tail(c)}")
        time.sleep(0.1)


def _stop(c: _Cluster) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; each step bounded."""
    proc, c.proc = c.proc, None
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        try:
            proc.send_signal(sig)
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _stop_on_sigterm() -> None:
    """SIGTERM ends Python without atexit, which would orphan the postmaster (and any control-plane
    or Node process of the run): run the atexit hooks, then die of SIGTERM as before. Only where
    nobody else has claimed the signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def handler(signum, frame):
        atexit._run_exitfuncs()  # includes shutdown()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def _owned() -> _Cluster:
    if _cluster is None or _cluster.owner_pid != os.getpid():
        raise RuntimeError("this process did not start the PostgreSQL server (TEST_DATABASE_URL was given)")
    return _cluster


def ensure_server(*, durable: bool = False) -> str:
    """Admin DSN of the test server, starting a throwaway cluster on first use if none is configured.

    `durable`: keep PostgreSQL's default fsync, synchronous_commit and full_page_writes (the bench);
    the tests turn all three off. It applies only to a cluster this call starts."""
    global _cluster
    with _lock:
        if _cluster is not None and _cluster.owner_pid == os.getpid():
            if _cluster.proc is None:
                _start(_cluster)  # a fault test stopped it and did not start it again
            return _cluster.dsn
        if os.environ.get(ENV_URL):
            return os.environ[ENV_URL]
        uid, gid = _server_user()
        # Under /tmp, not $TMPDIR: the dropped user must be able to reach it (root's TMPDIR may not be).
        base = Path(tempfile.mkdtemp(prefix="differential-pg-", dir="/tmp" if uid is not None else None))
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between probing and binding
            c = _Cluster(base=base, port=_free_port(), uid=uid, gid=gid, owner_pid=os.getpid())
            try:
                if not c.data.exists():
                    _initdb(c, durable)
                else:  # retry: only the port changes
                    with open(c.data / "postgresql.conf", "a") as f:
                        f.write(f"port = {c.port}\n")
                _start(c)
            except RuntimeError as exc:
                last_error = exc
                continue
            _cluster = c
            os.environ[ENV_URL] = c.dsn
            _stop_on_sigterm()
            return c.dsn
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"could not start a throwaway PostgreSQL: {last_error}")


def owns_server() -> bool:
    """True when this process started the cluster (so stop/start/restart are allowed)."""
    return _cluster is not None and _cluster.owner_pid == os.getpid()


def server_pid() -> int | None:
    """The postmaster's pid, when this process started it and it is running."""
    c = _cluster
    return c.proc.pid if owns_server() and c.proc and c.proc.poll() is None else None


def stop_server() -> None:
    """Stop the cluster this process started (data dir and port are kept for start_server)."""
    with _lock:
        _stop(_owned())


def start_server() -> None:
    """Start the stopped cluster again on the same port and data dir."""
    with _lock:
        c = _owned()
        if c.proc is None or c.proc.poll() is not None:
            _start(c)


def restart_server() -> None:
    """Stop and start the cluster this process started: existing connections break."""
    with _lock:
        c = _owned()
        _stop(c)
        _start(c)


def shutdown() -> None:
    """Stop the cluster this process started and delete its files; a no-op otherwise."""
    global _cluster
    with _lock:
        c = _cluster
        if c is None or c.owner_pid != os.getpid():
            return
        _cluster = None
        _stop(c)
        shutil.rmtree(c.base, ignore_errors=True)
        if os.environ.get(ENV_URL) == c.dsn:
            del os.environ[ENV_URL]


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ensure_server(), connect_timeout=10)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(prefix: str = "t") -> str:
    """Create a fresh, uniquely named database and return its postgresql:// URL."""
    safe = "".join(ch for ch in prefix.lower() if ch.isalnum() or ch == "_")[:30] or "t"
    name = f"{safe}_{uuid.uuid4().hex[:16]}"
    _admin(f'CREATE DATABASE "{name}"')
    return _with_dbname(ensure_server(), name)


def drop_database(url: str) -> None:
    """Drop the database named by url, disconnecting its sessions first."""
    name = urlsplit(url).path.lstrip("/")
    if not name or name in ("postgres", "template0", "template1"):
        raise ValueError(f"refusing to drop {name!r}")
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Registered at import (a no-op unless this process started a cluster), so modules that import
# this one first and register later, like server.py, get their exit hooks run before it.
atexit.register(shutdown)
