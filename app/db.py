"""Database binding: PostgreSQL through a connection pool, or an embedded SQLite file (WAL).

Models bind to `database` (a proxy) so the same code runs on both; `bind()` picks the real
database from the settings. `unit_of_work()` is how every request and background task talks to
the database: it borrows a connection for the block only (an idle long poll holds none) and, when
PostgreSQL was restarted under us, drops the dead pooled connections so the next call reconnects.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar
from urllib.parse import parse_qsl, unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase

from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

database = peewee.DatabaseProxy()

# Errors that mean "this connection is gone", as opposed to a constraint or syntax error.
CONNECTION_ERRORS = (peewee.OperationalError, peewee.InterfaceError)


def is_data_error(exc: Exception) -> bool:
    """Whether a failed write may be the fault of one row, rather than of the connection."""
    return not isinstance(exc, CONNECTION_ERRORS)


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def execute(sql: str, params: tuple | list = ()):
    """Run raw SQL written with %s placeholders on either database; returns the cursor."""
    db = database.obj
    if not is_postgres():
        sql = sql.replace("%s", "?")
    return db.execute_sql(sql, params)


# Server process ids of this process's pooled connections. Our own NOTIFYs come back to our
# listener; the writer already woke this process's waiters, so the listener skips them.
_own_backends: dict[int, int] = {}  # id(connection) -> server pid
_own_lock = threading.Lock()
_own_pids: frozenset[int] = frozenset()  # replaced whole, so the listener reads it without a lock


def is_own_backend(pid: int) -> bool:
    return pid in _own_pids


def _own_changed() -> None:
    global _own_pids
    _own_pids = frozenset(_own_backends.values())


class _Pool(PooledPostgresqlDatabase):
    def _connect(self):
        conn = super()._connect()
        with _own_lock:
            _own_backends[id(conn)] = conn.get_backend_pid()
            _own_changed()
        return conn

    def _close_raw(self, conn):  # every path that really closes a connection comes through here
        with _own_lock:
            _own_backends.pop(id(conn), None)
            _own_changed()
        super()._close_raw(conn)


# Ours first: libpq applies `-c` options in order, so a user's own `options` (from the URL) win.
_OUR_OPTIONS = "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000"


def make_private(path: str, *, folder: bool) -> None:
    """Create `path` readable only by us (a folder 0700, a file 0600), or tighten it, saying so.

    The data folder and the SQLite file hold the management secret and every cluster's API secret.
    """
    mode = 0o700 if folder else 0o600
    if folder:
        os.makedirs(path, mode=mode, exist_ok=True)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))  # an empty file is an empty database
    current = stat.S_IMODE(os.stat(path).st_mode)
    if current & ~mode:
        try:
            os.chmod(path, current & mode)
            log.warning("made %s readable only by its owner (mode %03o -> %03o): it holds secrets",
                        path, current, current & mode)
        except PermissionError:
            log.warning("%s is mode %03o and not ours to tighten: it holds secrets", path, current)


def _postgres(settings: Settings) -> peewee.Database:
    url = urlparse(settings.database_url)
    params = dict(parse_qsl(url.query))  # libpq's own keywords (sslmode, host, options, ...)
    options = " ".join(filter(None, [_OUR_OPTIONS, params.pop("options", "")]))
    connect = {
        "user": unquote(url.username) if url.username else None,
        "password": unquote(url.password) if url.password else None,
        "host": url.hostname or None,
        "port": url.port or 5432,
        "connect_timeout": 5,
        **params,
    }
    return _Pool(
        unquote(url.path.lstrip("/")),
        max_connections=settings.database_pool_size,
        stale_timeout=300,
        timeout=30,  # wait this long for a free pooled connection before failing the request
        autoconnect=False,
        # Pooled connections are not pinned to a thread; a hung query must not hold one forever.
        options=options,
        **connect,
    )


def _sqlite(settings: Settings) -> peewee.Database:
    path = settings.sqlite_path
    if path != ":memory:":
        folder = os.path.dirname(os.path.abspath(path))
        if settings.database_url:  # a folder the user chose may be shared (/tmp): create, never chmod
            os.makedirs(folder, mode=0o700, exist_ok=True)
        else:
            make_private(folder, folder=True)
        # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
        make_private(path, folder=False)
        for leftover in (path + "-wal", path + "-shm"):
            if os.path.exists(leftover):
                make_private(leftover, folder=False)
    return peewee.SqliteDatabase(
        path,
        pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": 10000, "foreign_keys": 1},
        timeout=10,
        autoconnect=False,
        check_same_thread=False,
    )


def bind(settings: Settings) -> peewee.Database:
    """Open the configured database and point the models at it."""
    db = _postgres(settings) if settings.uses_postgres else _sqlite(settings)
    database.initialize(db)
    return db


def _discard_broken_connection() -> None:
    db = database.obj
    try:
        if isinstance(db, PooledPostgresqlDatabase):
            if not db.is_closed():
                db.manual_close()
            db.close_idle()  # the rest of the pool died with the same server
        elif not db.is_closed():
            db.close()
    except Exception:  # the connection is already unusable; nothing more to free
        log.debug("discarding a broken connection failed", exc_info=True)


@contextmanager
def connection() -> Iterator[peewee.Database]:
    """Borrow a connection for the block; nested use shares the outer connection."""
    db = database.obj
    if not db.is_closed():
        yield db
        return
    db.connect()
    try:
        yield db
    except CONNECTION_ERRORS:
        _discard_broken_connection()
        raise
    finally:
        if not db.is_closed():
            db.close()


def unit_of_work(fn: Callable[[], T], retries: int = 1, transaction: bool = True) -> T:
    """Run fn inside a transaction on a borrowed connection.

    A connection-level failure (server restarted, pooled connection dead) is retried once on a
    fresh connection: fn is a whole transaction, so a failed attempt left nothing behind.
    `transaction=False` is for fn that runs one statement: it commits by itself, which saves the
    BEGIN and COMMIT round trips on the hot paths.
    """
    attempt = 0
    while True:
        try:
            with connection() as db:
                if db.in_transaction() or not transaction:
                    return fn()
                # SQLite: take the write lock up front so two writers never deadlock upgrading.
                with db.atomic() if is_postgres() else db.atomic("IMMEDIATE"):
                    return fn()
        except CONNECTION_ERRORS as exc:
            attempt += 1
            if attempt > retries or not _looks_like_lost_connection(exc):
                raise
            log.warning("database connection lost (%s); retrying on a new connection", exc)


def _looks_like_lost_connection(exc: Exception) -> bool:
    text = str(exc).lower()
    markers = ("server closed", "connection", "terminating", "shutdown", "could not connect", "ssl")
    return isinstance(exc, peewee.InterfaceError) or any(m in text for m in markers)



# --- migrations runner ----------------------------------------------------------------------
# A migration is (version, name, apply(db)). They run in one transaction under a lock, so several
# replicas starting at once apply each exactly once: PostgreSQL takes a transaction-scoped advisory
# lock (released at commit, never leaked through the pool); SQLite's BEGIN IMMEDIATE serialises.

MIGRATION_LOCK_KEY = 0x646966666D6967  # "diffmig"


def migrate(migrations: list[tuple[int, str, Callable[[peewee.Database], None]]]) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now."""

    def run() -> list[int]:
        db = database.obj
        if is_postgres():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        db.execute_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        done = {row[0] for row in db.execute_sql("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for version, name, apply in sorted(migrations, key=lambda m: m[0]):
            if version in done:
                continue
            log.info("applying migration %s %s", version, name)
            apply(db)
            execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(version)
        return applied

    return unit_of_work(run, retries=2)
