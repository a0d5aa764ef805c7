"""The embedded SQLite commits with synchronous=FULL (audit L7): an acknowledged write survives an
OS crash or power loss, not only a process crash (what NORMAL gives in WAL mode)."""
from __future__ import annotations

from app import db, settings as settings_module


def test_the_embedded_database_syncs_every_commit(tmp_path):
    database = db.bind(settings_module.load({"DIFFERENTIAL_DATA_DIR": str(tmp_path / "data")}))
    try:
        with db.connection():
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        database.close()


def test_a_locked_file_while_another_worker_migrates_is_waited_for_not_fatal(tmp_path, monkeypatch):
    """A worker's connection setting its pragmas while another worker migrates the new file got
    "database is locked" at once (no busy wait) and the worker failed to boot: it waits instead."""
    import sqlite3

    import peewee
    import pytest

    from app import db as app_db

    answers = iter([sqlite3.OperationalError("database is locked")] * 3)

    def flaky(self, conn):
        error = next(answers, None)
        if error is not None:
            raise error
        return real(self, conn)

    real = peewee.SqliteDatabase._set_pragmas
    monkeypatch.setattr(peewee.SqliteDatabase, "_set_pragmas", flaky)
    database = app_db._Sqlite(str(tmp_path / "x.db"), pragmas={"journal_mode": "wal"}, autoconnect=False)
    database.connect()
    try:
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        database.close()
    monkeypatch.setattr(app_db._Sqlite, "PRAGMA_RETRY_SECONDS", 0.0)
    answers = iter([sqlite3.OperationalError("database is locked")] * 1000)
    with pytest.raises((sqlite3.OperationalError, peewee.OperationalError)):
        app_db._Sqlite(str(tmp_path / "y.db"), pragmas={"journal_mode": "wal"}, autoconnect=False).connect()
