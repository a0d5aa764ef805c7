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
