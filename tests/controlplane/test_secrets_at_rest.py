"""Cluster secrets at rest (audit M3): a copy of the database hands out no working secret, while
GET /clusters still shows each one and requests still authenticate; keys rotate; a wrong key fails
at start-up, naming SECRETS_KEY. Each test runs on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import os
import stat
import threading
from pathlib import Path

import peewee
import pytest
from playhouse import db_url

from app import create_app, migrations, sealing, settings as settings_module
from app.engine import clusters, ids

from cp_helpers import MANAGEMENT_SECRET, Api

KEY_A, KEY_B, KEY_C = sealing.new_key(), sealing.new_key(), sealing.new_key()


@pytest.fixture
def target(backend, tmp_path, request):
    """The database make_app will open: its URL (None: the data folder's SQLite file) and a raw handle."""
    if backend == "postgres":
        url = request.getfixturevalue("fresh_pg_url")
        raw = db_url.connect(url)
    else:
        url = None
        (tmp_path / "data").mkdir(mode=0o700, exist_ok=True)
        raw = peewee.SqliteDatabase(str(tmp_path / "data" / "differential.db"), pragmas={"journal_mode": "wal"})
    yield url, raw
    raw.close()


def _start(tmp_path, url, keys, apps):
    env = {"MANAGEMENT_SECRET": MANAGEMENT_SECRET, "DIFFERENTIAL_DATA_DIR": str(tmp_path / "data"),
           "SWEEPER_ENABLED": "false"}
    if url:
        env["DATABASE_URL"] = url
    if keys:
        env["SECRETS_KEY"] = ",".join(keys)
    app = create_app(settings_module.load(env))
    apps.append(app)
    return Api(app)


@pytest.fixture
def start(tmp_path, target):
    """start(keys) -> Api of a new app on the target database; the previous one is closed first."""
    apps: list = []

    def run(keys=(KEY_A,)):
        if apps:
            apps[-1].extensions["differential"].close()
        return _start(tmp_path, target[0], keys, apps)

    yield run
    if apps:
        apps[-1].extensions["differential"].close()


def _every_value(backend, raw, tmp_path) -> bytes:
    """What a thief gets: the SQLite files' bytes, or every row of every table as a dump prints it."""
    if backend == "sqlite":
        data = tmp_path / "data"
        return b"".join(p.read_bytes() for p in sorted(data.glob("differential.db*")))
    with raw.connection_context():
        tables = [r[0] for r in raw.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").fetchall()]
        assert "clusters" in tables
        text = [row[0] for t in tables for row in raw.execute_sql(f'SELECT t::text FROM "{t}" t').fetchall()]
    return "\n".join(text).encode()


def _listed(api) -> dict[str, str]:
    r = api.client.get("/clusters", headers=api.mgmt)
    assert r.status_code == 200, r.json
    return {c["id"]: c["apiSecret"] for c in r.json}


def _authenticates(api, cluster_id, secret) -> bool:
    r = api.client.post("/jobs", headers={"Authorization": f"Basic {secret}"},
                        json={"service": "svc", "targetFn": "fn", "targetArgs": "kA=="})
    return r.status_code == 201


def _secret_part(secret: str) -> bytes:
    return secret.removeprefix("sk_").encode()  # the random part, wherever it might be cut


def test_a_copy_of_the_database_holds_no_secret_and_the_api_still_shows_them(start, target, backend, tmp_path):
    api = start()
    made = [api.new_cluster() for _ in range(3)]
    api.call(made[0])
    listed = _listed(api)
    assert {c["id"]: c["apiSecret"] for c in made} == listed
    assert all(_authenticates(api, cid, secret) for cid, secret in listed.items())
    api.app.extensions["differential"].close()  # everything on disk, as a copy would be taken
    stolen = _every_value(backend, target[1], tmp_path)
    for secret in listed.values():
        assert _secret_part(secret) not in stolen
    assert b"gAAAAA" in stolen  # they are there, sealed
    assert all(c["apiSecret"] for c in made)


def _v1_database_with_clear_secrets(raw, count=3) -> dict[str, str]:
    """A database left by the release before sealing: version 1, secrets in clear."""
    assert migrations.migrate(raw, target=1) == [1]
    secrets = {f"cluster-old-{i}": ids.api_secret() for i in range(count)}
    p = raw.param
    with raw.connection_context(), raw.atomic():
        for cid, secret in secrets.items():
            raw.execute_sql(
                "INSERT INTO clusters (id, api_secret, api_secret_hash, description, created_at,"
                f" predictive_retries_enabled, cloud_enabled) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                (cid, secret, ids.secret_hash(secret), None, str(dt.datetime(2026, 11, 1)), False, False))
    return secrets


def test_secrets_kept_in_clear_are_sealed_at_start_up_and_their_bytes_are_gone(start, target, backend, tmp_path):
    old = _v1_database_with_clear_secrets(target[1])
    assert _secret_part(next(iter(old.values()))) in _every_value(backend, target[1], tmp_path)  # the test can see them
    api = start()
    assert _listed(api) == old
    assert all(_authenticates(api, cid, secret) for cid, secret in old.items())
    with target[1].connection_context():
        rows = target[1].execute_sql("SELECT api_secret, api_secret_sealed, api_secret_key FROM clusters").fetchall()
    assert [r[0] for r in rows] == [None] * len(old)
    assert {r[2] for r in rows} == {sealing.key_id(KEY_A)}
    api.app.extensions["differential"].close()
    stolen = _every_value(backend, target[1], tmp_path)
    for secret in old.values():
        assert _secret_part(secret) not in stolen
    # Once only: a second start finds nothing to seal.
    assert start() is not None and clusters.seal_stored_secrets() == {"sealed": 0, "resealed": 0}


def test_keys_rotate_newest_first_and_a_wrong_key_fails_clearly(start, target):
    api = start((KEY_A,))
    made = {c["id"]: c["apiSecret"] for c in (api.new_cluster(), api.new_cluster())}
    # Rotation: the new key first, the old one after it; rows sealed by the old are sealed again.
    api = start((KEY_B, KEY_A))
    assert _listed(api) == made
    with target[1].connection_context():
        keys = {r[0] for r in target[1].execute_sql("SELECT api_secret_key FROM clusters").fetchall()}
    assert keys == {sealing.key_id(KEY_B)}
    newer = api.new_cluster()
    made[newer["id"]] = newer["apiSecret"]
    # The old key can now go.
    api = start((KEY_B,))
    assert _listed(api) == made
    assert all(_authenticates(api, cid, secret) for cid, secret in made.items())
    # Back to the old key alone, or a key that never sealed anything: refused, naming the variable.
    for wrong in ((KEY_A,), (KEY_C,)):
        with pytest.raises(sealing.SealingError, match="SECRETS_KEY does not hold") as caught:
            start(wrong)
        assert sealing.key_id(KEY_B) in str(caught.value)
        assert KEY_B not in str(caught.value)


def test_replicas_starting_at_once_seal_each_row_once(start, target, backend):
    old = _v1_database_with_clear_secrets(target[1], count=20)
    api = start()  # seals them; now put them back in clear, as if this start had not happened
    with target[1].connection_context():
        target[1].execute_sql("UPDATE clusters SET api_secret_sealed = NULL, api_secret_key = NULL")
        for cid, secret in old.items():
            target[1].execute_sql(f"UPDATE clusters SET api_secret = {target[1].param} WHERE id = {target[1].param}",
                                  (secret, cid))
    counts: list = []
    barrier = threading.Barrier(4)

    def replica():
        barrier.wait()
        try:
            counts.append(clusters.seal_stored_secrets())
        except Exception as exc:  # reported below
            counts.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(c["sealed"] for c in counts) == len(old), counts
    assert _listed(api) == old


def test_a_tampered_row_fails_clearly(start, target):
    api = start()
    cluster = api.new_cluster()
    with target[1].connection_context():
        target[1].execute_sql("UPDATE clusters SET api_secret_sealed = "
                              f"{target[1].param} WHERE id = {target[1].param}",
                              (sealing.Box((KEY_A,)).seal("sk_someone_else")[0][:-4] + "AAAA", cluster["id"]))
    with pytest.raises(sealing.SealingError, match="does not open"):
        clusters.list_clusters()


# --- the key: where it comes from -------------------------------------------------------------


def test_production_refuses_to_start_without_a_key():
    env = {"DIFFERENTIAL_REQUIRE_DATABASE_URL": "true", "DATABASE_URL": "postgresql://u@h/db"}
    with pytest.raises(settings_module.SettingsError, match="SECRETS_KEY is required here"):
        settings_module.load(env)
    assert settings_module.load({**env, "SECRETS_KEY": KEY_A}).secrets_key == (KEY_A,)


def test_the_key_variable_takes_a_list_in_either_base64_and_never_echoes_it():
    import base64
    import subprocess

    recipe = subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True, check=True).stdout
    standard = base64.b64encode(base64.urlsafe_b64decode(KEY_B)).decode()
    parsed = settings_module.load({"SECRETS_KEY": f"{KEY_A}, {standard} {recipe}"}).secrets_key
    assert parsed[:2] == (KEY_A, KEY_B) and len(parsed) == 3
    for bad in ("short", KEY_A + "," + KEY_A[:-8]):
        with pytest.raises(settings_module.SettingsError, match="SECRETS_KEY must be keys of 32 bytes") as caught:
            settings_module.load({"SECRETS_KEY": bad})
        assert KEY_A not in str(caught.value) and "short" not in str(caught.value)


def test_without_the_variable_the_key_is_made_once_in_the_data_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    results: list = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(sealing.key_file_keys(str(data)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len({keys for keys, _ in results}) == 1  # every worker got the same key
    path = data / sealing.KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in data.iterdir()) == [sealing.KEY_FILE]  # no leftovers
    assert sealing.key_file_keys(str(data))[0] == results[0][0]


def test_an_app_without_the_variable_uses_the_data_folders_key(tmp_path):
    apps: list = []
    api = _start(tmp_path, None, (), apps)
    try:
        cluster = api.new_cluster()
        keys, path = sealing.key_file_keys(str(tmp_path / "data"))
        assert Path(path).parent == tmp_path / "data"
        assert _listed(api)[cluster["id"]] == cluster["apiSecret"]
        assert sealing.Box(keys).primary_id == sealing.key_id(keys[0])
    finally:
        apps[-1].extensions["differential"].close()


def test_scrub_removes_overwritten_bytes_even_where_sqlite_keeps_them(tmp_path):
    """Debian's SQLite zeroes deleted content by itself (SECURE_DELETE); others keep it in free pages."""
    from app import db

    path = tmp_path / "scrub.db"
    database = db.bind(settings_module.load({"DATABASE_URL": f"sqlite:///{path}"}))
    secret = ids.api_secret()
    try:
        with db.connection():
            db.execute("PRAGMA secure_delete = 0")
            db.execute("CREATE TABLE t (v TEXT)")
            db.execute("INSERT INTO t VALUES (%s)", (secret * 50,))
            db.execute("UPDATE t SET v = NULL")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            assert _secret_part(secret) in path.read_bytes()  # still in the file
            db.dialect.scrub()
            assert _secret_part(secret) not in path.read_bytes()
    finally:
        database.close()
