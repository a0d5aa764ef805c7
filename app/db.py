"""Database binding: PostgreSQL through a connection pool, or an embedded SQLite file (WAL).

Models bind to `database` (a proxy) so the same code runs on both; `bind()` picks the real
database from the settings. `unit_of_work()` is how every request and background task talks to
the database: it borrows a connection for the block only (an idle long poll holds none) and, when
PostgreSQL was restarted under us, drops the dead pooled connections so the next call reconnects.
"""
from __future__ import annotations

import contextlib
import contextvars
import heapq
import logging
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, TypeVar
from urllib.parse import parse_qsl, unquote, urlparse

import peewee
from playhouse.pool import MaxConnectionsExceeded, PoolConnection, PooledDatabase, PooledPostgresqlDatabase

from .fair_slots import FairSlots
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

database = peewee.DatabaseProxy()

# Errors that mean "this connection is gone", as opposed to a constraint or syntax error.
CONNECTION_ERRORS = (peewee.OperationalError, peewee.InterfaceError)


def is_data_error(exc: Exception) -> bool:
    """Whether a failed write may be the fault of one row, rather than of the connection."""
    return not isinstance(exc, CONNECTION_ERRORS)


def dialect_name(db: peewee.Database) -> str:
    """The one place that tells the databases apart: bind() picks the dialect by it, and the
    migrations runner, which is also handed databases that are not bound (tests), reads it."""
    return "postgres" if isinstance(db, peewee.PostgresqlDatabase) else "sqlite"


def execute(sql: str, params: tuple | list = ()):
    """Run raw SQL written with %s placeholders on either database; returns the cursor."""
    return database.obj.execute_sql(dialect.translate(sql), params)


# --- the dialect --------------------------------------------------------------------------------
# Everything that differs between the two databases is an attribute of the one dialect object that
# bind() picks (huey's storage subclasses, River's driver): callers never ask which database it is.
# The engine's hot statements extend these classes in app/engine/statements.py, where both
# databases' SQL reads side by side, and create_app binds with those.


class Dialect:
    name: str
    # A batch write is one statement (it commits by itself: no BEGIN/COMMIT round trips), or one
    # statement per row (it needs a transaction).
    batch_in_one_statement: bool
    skip_locked: str  # appended to a SELECT whose rows the transaction then updates
    refreshes_statistics: bool  # whether maintenance ANALYZEs tables that changed a lot

    def translate(self, sql: str) -> str:
        """SQL written with %s placeholders, in this database's placeholder style."""
        return sql

    def transaction(self, db: peewee.Database):
        return db.atomic()

    def lock_key(self, key: str) -> None:
        """Serialise the rest of this transaction with every other one locking the same key."""

    def notify(self, channel: str, payloads: list[str]) -> None:
        """Queue notifications delivered when the current transaction commits."""

    def scrub(self) -> None:
        """Outside a transaction: make the bytes of deleted or overwritten values unreadable in the
        database's files (once, after secrets were sealed that had been stored in clear)."""


class PostgresDialect(Dialect):
    name = "postgres"
    batch_in_one_statement = True
    skip_locked = " FOR UPDATE SKIP LOCKED"  # concurrent sweeps and claims take different rows
    refreshes_statistics = True

    def lock_key(self, key: str) -> None:
        # Transaction-scoped: released at commit, never leaked through the pool.
        execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def notify(self, channel: str, payloads: list[str]) -> None:
        for payload in payloads:
            execute("SELECT pg_notify(%s, %s)", (channel, payload))


class SqliteDialect(Dialect):
    name = "sqlite"
    batch_in_one_statement = False
    skip_locked = ""  # one writer at a time: there is nothing to skip
    refreshes_statistics = False

    def translate(self, sql: str) -> str:
        return sql.replace("%s", "?")

    def transaction(self, db: peewee.Database):
        # Take the write lock up front so two writers never deadlock upgrading.
        return db.atomic("IMMEDIATE")

    def lock_key(self, key: str) -> None:
        pass  # BEGIN IMMEDIATE already serialises every writing transaction

    def notify(self, channel: str, payloads: list[str]) -> None:
        pass  # no listener: writers wake this process's waiters, the others short-poll

    def scrub(self) -> None:
        # Free pages and old WAL frames keep what was overwritten: rebuild the file, empty the WAL.
        execute("VACUUM")
        execute("PRAGMA wal_checkpoint(TRUNCATE)")


DIALECTS: Mapping[str, type[Dialect]] = {"postgres": PostgresDialect, "sqlite": SqliteDialect}
dialect: Dialect | None = None  # set by bind(), with the database


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
    """peewee's pool, changed so that no lock is held across a round trip to the server.

    peewee 4.5 checks a connection out under its database-wide lock, with the pool's lock inside
    it, and sends `SELECT 1` (or opens a connection) there; a check-in waits for the same lock.
    Under load every request thread queued behind one round trip at a time, and each holder had to
    win the GIL back after it: a few hundred check-outs a second at most, so a thousand tenants'
    small reads and writes backed up for seconds (bench/README.md, "Many tenants"). Here the
    database-wide lock is gone (a thread's connection state is its own), the pool's lock covers
    only taking a connection and giving it back, and the check that an idle connection still
    works runs outside it, only for connections idle a while. Who waits for a connection, and in
    which order, is `connection()`'s gate."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = contextlib.nullcontext()  # Database.connect/close: nothing shared left to guard
        self._returned: dict[int, float] = {}  # connection key -> when it was last given back
        self._opening = 0  # connections being opened, counted against max_connections

    def _connect(self):
        while True:
            with self._pool_lock:
                if not self._connections:
                    if self._max_connections and len(self._in_use) + self._opening >= self._max_connections:
                        raise MaxConnectionsExceeded("Exceeded maximum connections.")
                    self._opening += 1
                    break
                ts, _counter, conn = heapq.heappop(self._connections)
                key = self.conn_key(conn)
                self._in_use[key] = PoolConnection(ts, conn, time.time())
            # A connection given back a moment ago worked then; one idle longer is asked (a round trip).
            idle = time.monotonic() - self._returned.get(key, 0.0)
            if (self._stale_timeout and self._is_stale(ts)) or (idle > _IDLE_CHECK_SECONDS and self._is_closed(conn)):
                with self._pool_lock:
                    self._in_use.pop(key, None)
                self._close_raw(conn)
                continue
            return conn
        conn = None
        try:
            conn = super(PooledDatabase, self)._connect()  # the driver's connect, past peewee's pool
            with _own_lock:
                _own_backends[id(conn)] = conn.get_backend_pid()
                _own_changed()
            return conn
        finally:
            with self._pool_lock:
                self._opening -= 1
                if conn is not None:
                    self._in_use[self.conn_key(conn)] = PoolConnection(time.time(), conn, time.time())

    def _close(self, conn, close_conn=False):  # a check-in (Database.close), or a close for good
        self._returned[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn):  # every path that really closes a connection comes through here
        self._returned.pop(self.conn_key(conn), None)
        with _own_lock:
            _own_backends.pop(id(conn), None)
            _own_changed()
        super()._close_raw(conn)


# A pooled connection given back within this long is used without asking the server first; one
# whose server went away meanwhile fails its first statement, which unit_of_work retries when safe.
_IDLE_CHECK_SECONDS = 1.0


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


class _Sqlite(peewee.SqliteDatabase):
    PRAGMA_RETRY_SECONDS = 10.0

    def _set_pragmas(self, conn):
        # Two workers starting on one new file: while one migrates, the other's switch to WAL can
        # be answered "database is locked" at once, without SQLite's busy wait (a worker failed to
        # boot that way in CI). Try again for a while, as the busy timeout would.
        deadline = time.monotonic() + self.PRAGMA_RETRY_SECONDS
        while True:
            try:
                return super()._set_pragmas(conn)
            except (sqlite3.OperationalError, peewee.OperationalError) as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


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
    # synchronous=full: a commit is on disk before the answer, so an OS crash or power loss loses no
    # acknowledged write (normal keeps them through a process crash only). It costs one fsync per
    # commit, ~0.4 ms here, within the noise of a create (measured for issue 11, audit L7).
    return _Sqlite(
        path,
        pragmas={"journal_mode": "wal", "synchronous": "full", "busy_timeout": 10000, "foreign_keys": 1},
        timeout=10,
        autoconnect=False,
        check_same_thread=False,
    )


def bind(settings: Settings, dialects: Mapping[str, type[Dialect]] = DIALECTS) -> peewee.Database:
    """Open the configured database, point the models at it and pick its dialect (from
    `dialects`: the engine passes its own, which add the hot statements)."""
    global dialect, _gate
    db = _postgres(settings) if settings.uses_postgres else _sqlite(settings)
    _gate = FairSlots(settings.database_pool_size) if settings.uses_postgres else None
    dialect = dialects[dialect_name(db)]()
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


# Whose turn it is: the threads waiting for a pooled connection queue in one line per key (the
# request's credential, set by the worker's thread pool: server/lanes.py), and the lines take
# turns, so one tenant's thousand waiting requests delay another's by one connection, not a thousand.
turn_key: contextvars.ContextVar = contextvars.ContextVar("differential_db_turn", default=None)
_gate: FairSlots | None = None  # as many slots as the pool has connections (bind)
_GATE_TIMEOUT_SECONDS = 30.0  # then the request fails as "the database is too busy" (503)


@contextmanager
def connection() -> Iterator[peewee.Database]:
    """Borrow a connection for the block; nested use shares the outer connection."""
    db = database.obj
    if not db.is_closed():
        yield db
        return
    gate = _gate
    if gate is not None and not gate.acquire(turn_key.get(), timeout=_GATE_TIMEOUT_SECONDS):
        raise MaxConnectionsExceeded(f"no pooled database connection came free within {_GATE_TIMEOUT_SECONDS:g} s")
    try:
        db.connect()
        try:
            yield db
        except CONNECTION_ERRORS:
            _discard_broken_connection()
            raise
        finally:
            if not db.is_closed():
                db.close()
    finally:
        if gate is not None:
            gate.release()


def unit_of_work(fn: Callable[[], T], retries: int = 1, transaction: bool = True, idempotent: bool = False) -> T:
    """Run fn inside a transaction on a borrowed connection.

    A connection-level failure (server restarted, pooled connection dead) is retried once on a
    fresh connection when the failed attempt cannot have committed: fn failed inside its
    transaction, so it left nothing behind. A connection lost while an autocommit statement ran,
    or during COMMIT, may have come after the commit: fn runs again only if it is `idempotent`
    (running it twice does what running it once did), never a claim, which would take a second
    batch that nobody receives. (Pooled connections that died idle are replaced at check-out.)
    `transaction=False` is for fn that runs one statement: it commits by itself, which saves the
    BEGIN and COMMIT round trips on the hot paths.
    """
    attempt = 0
    while True:
        may_have_committed = False
        try:
            with connection() as db:
                if db.in_transaction():
                    return fn()  # the outer unit of work retries or not
                if not transaction:
                    may_have_committed = True
                    return fn()
                with dialect.transaction(db):
                    result = fn()
                    may_have_committed = True  # leaving the block commits
                return result
        except CONNECTION_ERRORS as exc:
            attempt += 1
            if (attempt > retries or not _looks_like_lost_connection(exc)
                    or (may_have_committed and not idempotent)):
                raise
            log.warning("database connection lost (%s); retrying on a new connection", exc)


def _looks_like_lost_connection(exc: Exception) -> bool:
    text = str(exc).lower()
    markers = ("server closed", "connection", "terminating", "shutdown", "could not connect", "ssl")
    return isinstance(exc, peewee.InterfaceError) or any(m in text for m in markers)


# --- for the api layer: health, and telling "the database is unavailable" from a bug ------------

def ping() -> None:
    """Raise unless the database answers now (GET /live)."""
    unit_of_work(lambda: execute("SELECT 1").fetchall(), transaction=False, idempotent=True)


def is_unavailable(exc: BaseException) -> bool:
    """Whether exc means the database is unreachable or its pool has no free connection (a 503, not a 500)."""
    return isinstance(exc, CONNECTION_ERRORS + (MaxConnectionsExceeded,))
