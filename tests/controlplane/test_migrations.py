"""Migrations: the head matches the models, every earlier version upgrades with its rows, once only.

Each test runs on SQLite and PostgreSQL. Schemas are compared as each database describes itself
(PostgreSQL's catalogs, SQLite's PRAGMAs), so both sides are normalised the same way.
"""
from __future__ import annotations

import datetime as dt
import re
import threading

import peewee
import pytest
from playhouse import db_url

from app import migrations, models

HEAD = max(version for version, _, _ in migrations.MIGRATIONS)

# Indexes the migrations make that the models do not declare: (name, table, columns, WHERE or None).
EXTRA_INDEXES = (
    ("jobs_claim", "jobs", ("cluster_id", "service", "seq"), "status = 'pending'"),
    ("jobs_running_deadline", "jobs", ("deadline_ms",), "status = 'running'"),
    ("jobs_running_machine", "jobs", ("cluster_id", "machine_id"), "status = 'running'"),
    ("jobs_cache", "jobs", ("cluster_id", "service", "target_fn", "cache_key", "seq"), "cache_key IS NOT NULL"),
    ("jobs_finished", "jobs", ("resulted_at",), "status IN ('success', 'failure', 'cancelled')"),
    ("jobs_cluster_recent", "jobs", ("cluster_id", "seq"), None),
    ("jobs_service_recent", "jobs", ("cluster_id", "service", "seq"), None),
    ("jobs_scheduled_due", "jobs", ("run_at_ms",), "status = 'scheduled'"),
    ("jobs_waiting_deadline", "jobs", ("queue_deadline_ms",),
     "status IN ('pending', 'scheduled') AND queue_deadline_ms IS NOT NULL"),
    ("jobs_cluster_status", "jobs", ("cluster_id", "status", "seq"), None),
    ("jobs_running_function", "jobs", ("cluster_id", "service", "target_fn"), "status = 'running'"),
)

T0 = dt.datetime(2026, 11, 30, 9, 15, 0, 123456)
T1 = dt.datetime(2026, 11, 30, 9, 15, 7, 654321)


def _job(seq, status, **fields):
    row = {"seq": seq, "cluster_id": "c1", "id": f"j{seq}", "service": "svc", "target_fn": "fn",
           "target_args": '{"a":1}', "status": status, "attempts_allowed": 3, "attempt": 0, "timeout_seconds": 30,
           "created_at": T0, "predictive_retries": False}
    row.update(fields)
    return row


# Rows valid at each version, inserted at that version before migrating on to the head. Add one per
# new migration (rows that version's schema can hold, using what it added) and keep the old ones:
# they prove every later migration keeps them.
FIXTURES: dict[int, dict[str, list[dict]]] = {
    0: {},
    1: {
        "clusters": [{"id": "c1", "api_secret": "sk_cluster_1", "api_secret_hash": "h" * 64, "description": "one",
                      "created_at": T0, "predictive_retries_enabled": True, "cloud_enabled": False}],
        "jobs": [
            _job(1, "pending", cache_key="k1"),
            _job(2, "running", attempt=1, machine_id="m1", deadline_ms=1_796_000_000_000, claimed_at=T1),
            _job(3, "success", attempt=1, machine_id="m1", result='"ok"', result_type="resolution", claimed_at=T0,
                 resulted_at=T1, execution_time_ms=12, deployment_id="d1", predictive_retries=True),
            _job(4, "failure", attempt=3, result='{"message":"no"}', result_type="rejection", resulted_at=T1),
        ],
        "machines": [{"pk": 1, "cluster_id": "c1", "id": "m1", "ip": "10.0.0.1", "deployment_id": "d1",
                      "status": "active", "first_seen_at": T0, "last_ping_at": T1}],
        "services": [{"pk": 1, "cluster_id": "c1", "name": "svc", "definition": '{"name":"svc","functions":[]}',
                      "definition_hash": "d" * 64, "updated_at": T0}],
        "events": [{"seq": 1, "cluster_id": "c1", "type": "jobCreated", "job_id": "j1", "machine_id": None,
                    "deployment_id": None, "service": "svc", "created_at": T0, "meta": '{"x":1}'},
                   {"seq": 2, "cluster_id": "c1", "type": "machinePing", "job_id": None, "machine_id": "m1",
                    "deployment_id": "d1", "service": None, "created_at": T1, "meta": None}],
        "leases": [{"name": "sweeper", "holder": "host-1", "expires_at": T1, "acquired_at": T0}],
    },
    2: {  # the secret sealed (a Fernet token), the clear column emptied
        "clusters": [{"id": "c2", "api_secret": None, "api_secret_hash": "i" * 64, "description": None,
                      "created_at": T1, "predictive_retries_enabled": False, "cloud_enabled": True,
                      "api_secret_sealed": "gAAAAAB" + "x" * 133, "api_secret_key": "0123456789abcdef"}],
    },
    3: {  # a delayed job with a back-off policy and deadlines, a cancelled one, a schedule, a worker
        "jobs": [
            _job(5, "scheduled", run_at_ms=1_796_000_005_000, queue_deadline_ms=1_796_000_060_000,
                 call_deadline_ms=1_796_000_120_000, backoff_attempts=4, backoff_initial_ms=500,
                 backoff_factor=2.0, backoff_max_ms=10_000, backoff_jitter=0.25),
            _job(6, "cancelled", attempt=1, result="gqRuYW1l", result_type="rejection", resulted_at=T1,
                 reason="cancelled by its caller"),
        ],
        "schedules": [{"pk": 1, "cluster_id": "c1", "name": "nightly", "service": "svc", "target_fn": "fn",
                       "arguments": "[1]", "target_args": "kQE=", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                       "catch_up": "latest", "call_config": None, "paused": False, "next_fire_ms": 1_796_000_000_000,
                       "last_fired_ms": None, "created_at": T0, "updated_at": T1}],
        "workers": [{"pk": 1, "cluster_id": "c1", "service": "svc", "machine_id": "m1", "first_poll_at": T0,
                     "last_poll_at": T1}],
    },
    4: {  # a cluster mid-rotation, an access point, a rollup row and its mark
        "clusters": [{"id": "c4", "api_secret": None, "api_secret_hash": "j" * 64, "description": None,
                      "created_at": T1, "predictive_retries_enabled": False, "cloud_enabled": False,
                      "api_secret_sealed": "gAAAAAB" + "y" * 133, "api_secret_key": "0123456789abcdef",
                      "previous_secret_hash": "k" * 64, "previous_secret_expires_at": T1, "secret_rotated_at": T0,
                      "deleted_at": None}],
        "access_points": [{"pk": 1, "cluster_id": "c1", "name": "billing", "token_hash": "t" * 64,
                           "services": '["svc"]', "created_at": T0, "rotated_at": T1, "last_used_at": None}],
        "metric_rollups": [{"pk": 1, "cluster_id": "c1", "service": "svc", "target_fn": "fn",
                            "minute_ms": 1_796_000_040_000, "outcome": "resolution", "calls": 3, "exec_ms_sum": 36,
                            "queue_ms_sum": 9, "exec_histogram": "[0,3]", "queue_histogram": "[3]"}],
        "rollup_marks": [{"name": "metrics", "through_ms": 1_796_000_100_000}],
        "services": [{"pk": 2, "cluster_id": "c1", "name": "schema-only", "definition": None,
                      "definition_hash": None, "updated_at": T1, "json_schema": '{"type":"object"}'}],
    },
    5: {  # a console session
        "console_sessions": [{"token_hash": "s" * 64, "csrf_token": "c" * 64, "secret_fingerprint": "f" * 64,
                              "created_at": T0, "expires_at": T1}],
    },
    6: {  # a deployment with its bundle, a client library with its package, a registry token
        "deployments": [{"id": "dpl_1", "cluster_id": "c1", "service": "svc", "status": "active", "provider": "lambda",
                         "runtime": "python3.13", "stack_name": "differential-deployment-c1-svc-0a1b",
                         "function_name": "differential-deployment-c1-svc-0a1b", "asset_id": "dpl_1",
                         "service_module": "svc:service", "reason": None, "meta": '{"stackId":"s"}',
                         "created_at": T0, "updated_at": T1, "released_at": T0, "activated_at": T1,
                         "expires_at": None, "wakeups": 2, "last_woken_at": T1,
                         "token_hash": "h" * 64, "polled_at": T1}],
        "assets": [{"id": "dpl_1", "cluster_id": "c1", "kind": "service_bundle", "target_id": "dpl_1",
                    "key": "service_bundle/dpl_1", "content_type": "application/zip", "status": "uploaded",
                    "size": 1234, "sha256": "a" * 64, "sha1": "b" * 40, "sha512": "c" * 128,
                    "created_at": T0, "uploaded_at": T1}],
        "client_libraries": [{"id": "lib_1", "cluster_id": "c1", "language": "typescript", "version": "0.1.2",
                              "major": 0, "minor": 1, "patch": 2, "status": "published", "asset_id": "lib_1",
                              "meta": None, "created_at": T0, "published_at": T1, "expires_at": None}],
        "registry_tokens": [{"id": "rt_1", "cluster_id": "c1", "name": "ci", "token_hash": "t" * 64,
                             "created_at": T0, "last_used_at": None}],
    },
}

# --- databases ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def make_db(backend, tmp_path, request):
    """Factory: make_db() -> a new empty database on this test's backend (not connected)."""
    made: list[tuple[str, peewee.Database]] = []

    def make(url: str | None = None) -> peewee.Database:
        """A new database, or (url given) another handle on one made before."""
        if url is None:
            if backend == "postgres":
                url = request.getfixturevalue("make_pg_database")("mig")
            else:
                url = f"sqlite:///{tmp_path}/db{len(made)}.sqlite"
        if url.startswith("sqlite"):
            database = peewee.SqliteDatabase(url.removeprefix("sqlite:///"), timeout=10, check_same_thread=False,
                                             pragmas={"busy_timeout": 10000, "journal_mode": "wal"})
        else:
            database = db_url.connect(url)
        database.url = url
        made.append((url, database))
        return database

    yield make
    for _, database in made:
        database.close()


def _dialect(database):
    return "postgres" if isinstance(database, peewee.PostgresqlDatabase) else "sqlite"


def _rows(database, sql, params=()):
    with database.connection_context():
        return database.execute_sql(sql, params).fetchall()


def build_from_models(database, model_list=models.ALL_MODELS):
    """The schema the models ask for: their tables and indexes, plus EXTRA_INDEXES."""
    with database.connection_context(), database.bind_ctx(model_list):
        database.create_tables(model_list)
        for name, table, columns, where in EXTRA_INDEXES:
            database.execute_sql(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})"
                                 + (f" WHERE {where}" if where else ""))


# --- describing a schema --------------------------------------------------------------------
# {table: {"columns": {name: (type, nullable, default, pk)}, "indexes": {name: (columns, unique, where)}}},
# without schema_migrations (the runner's own table).


def describe(database) -> dict:
    with database.connection_context():
        described = _describe_postgres(database) if _dialect(database) == "postgres" else _describe_sqlite(database)
    described.pop("schema_migrations", None)
    return described


def _describe_postgres(database):
    tables: dict = {}
    columns = database.execute_sql(
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema()").fetchall()
    for table, column, data_type, length, nullable, default in columns:
        entry = tables.setdefault(table, {"columns": {}, "indexes": {}})
        entry["columns"][column] = (f"{data_type}({length})" if length else data_type, nullable == "YES", default)
    indexes = database.execute_sql(
        "SELECT t.relname, i.relname, ix.indisunique, ix.indisprimary,"
        " ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnkeyatts) k ORDER BY k),"
        " pg_get_expr(ix.indpred, ix.indrelid, true)"
        " FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()").fetchall()
    for table, name, unique, primary, index_columns, where in indexes:
        tables[table]["indexes"][name] = (tuple(index_columns), unique, primary, where)
    return tables


def _describe_sqlite(database):
    tables: dict = {}
    names = [r[0] for r in database.execute_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
    index_sql = dict(database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall())
    for table in names:
        entry = tables.setdefault(table, {"columns": {}, "indexes": {}})
        for _, column, column_type, notnull, default, pk in database.execute_sql(f'PRAGMA table_info("{table}")'):
            entry["columns"][column] = (column_type.upper(), not notnull, default, pk)
        for _, name, unique, origin, partial in database.execute_sql(f'PRAGMA index_list("{table}")').fetchall():
            index_columns = tuple(r[2] for r in database.execute_sql(f'PRAGMA index_info("{name}")').fetchall())
            where = None
            if partial:
                where = re.split(r"\bWHERE\b", index_sql[name], maxsplit=1, flags=re.I)[1]
                where = " ".join(where.replace('"', "").split())
            entry["indexes"][name] = (index_columns, bool(unique), origin == "pk", where)
    return tables


def schema_differences(actual: dict, expected: dict) -> list[str]:
    """What differs between two described schemas, one line per table, column or index."""
    found = []
    for table in sorted(set(actual) | set(expected)):
        if table not in actual or table not in expected:
            found.append(f"table {table}: only in {'the migrations' if table in actual else 'the models'}")
            continue
        for kind in ("columns", "indexes"):
            mine, theirs = actual[table][kind], expected[table][kind]
            for name in sorted(set(mine) | set(theirs)):
                if mine.get(name) != theirs.get(name):
                    found.append(f"{table}.{name} ({kind}): migrations {mine.get(name)}, models {theirs.get(name)}")
    return found


def model_differences(described: dict, model_list=models.ALL_MODELS) -> list[str]:
    """Every model column exists in the described schema, nullable exactly when the field is."""
    found = []
    for model in model_list:
        table = described.get(model._meta.table_name)
        if table is None:
            found.append(f"table {model._meta.table_name} missing")
            continue
        for field in model._meta.sorted_fields:
            column = table["columns"].get(field.column_name)
            if column is None:
                found.append(f"{model._meta.table_name}.{field.column_name} missing")
            elif column[1] != bool(field.null):
                found.append(f"{model._meta.table_name}.{field.column_name} nullable={column[1]}, model null={field.null}")
    return found


# --- rows -----------------------------------------------------------------------------------

_MODEL_OF = {m._meta.table_name: m for m in models.ALL_MODELS}


def insert_fixture(database, fixture: dict[str, list[dict]]) -> None:
    p = database.param
    with database.connection_context(), database.atomic():
        for table, rows in fixture.items():
            for row in rows:
                values = [str(v) if isinstance(v, dt.datetime) else v for v in row.values()]
                database.execute_sql(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join([p] * len(row))})",
                                     values)


def assert_fixture_intact(database, fixture: dict[str, list[dict]]) -> None:
    """Every fixture row is there with its values, read as the head's models read them."""
    for table, rows in fixture.items():
        model = _MODEL_OF[table]
        key = model._meta.primary_key.column_name
        columns = list(dict.fromkeys(c for row in rows for c in row))  # a column a row leaves out is NULL
        found = _rows(database, f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}")
        read = [{c: model._meta.columns[c].python_value(v) for c, v in zip(columns, r, strict=True)} for r in found]
        expected = [{c: row.get(c) for c in columns} for row in sorted(rows, key=lambda r: r[key])]
        assert read == expected, table


# --- the head matches the models ------------------------------------------------------------


def test_a_fresh_database_migrated_to_the_head_matches_the_models(make_db):
    migrated, reference = make_db(), make_db()
    assert migrations.migrate(migrated) == list(range(1, HEAD + 1))
    build_from_models(reference)
    described = describe(migrated)
    assert schema_differences(described, describe(reference)) == []
    assert model_differences(described) == []
    # The indexes the models do not declare are there, as listed.
    for name, table, columns, where in EXTRA_INDEXES:
        index_columns, unique, primary, actual_where = described[table]["indexes"][name]
        assert (index_columns, unique, primary, actual_where is None) == (columns, False, False, where is None)


class _JobWithMore(models.Job):
    """Job as someone might change it without a migration: a new field, and a column made NOT NULL."""

    priority = peewee.IntegerField(null=True)
    machine_id = peewee.CharField(max_length=200)

    class Meta:
        table_name = "jobs"


def test_a_model_change_without_a_migration_is_reported(make_db):
    changed = tuple(_JobWithMore if m is models.Job else m for m in models.ALL_MODELS)
    migrated, reference = make_db(), make_db()
    migrations.migrate(migrated)
    build_from_models(reference, changed)
    described = describe(migrated)
    differences = schema_differences(described, describe(reference))
    assert [d.split(" ")[0] for d in differences] == ["jobs.machine_id", "jobs.priority"], differences
    assert sorted(model_differences(described, changed)) == [
        "jobs.machine_id nullable=True, model null=False", "jobs.priority missing"]


def test_migrations_are_numbered_from_one_with_literal_ddl_for_both_databases():
    assert [m[0] for m in migrations.MIGRATIONS] == list(range(1, HEAD + 1))
    for _, _, steps in migrations.MIGRATIONS:
        assert callable(steps) or set(steps) == {"postgres", "sqlite"}


# --- earlier versions upgrade ---------------------------------------------------------------


def test_fixtures_cover_every_version_below_the_head():
    assert set(FIXTURES) >= set(range(HEAD)), "add a FIXTURES entry for the new migration's version"


@pytest.mark.parametrize("version", range(HEAD))
def test_every_earlier_version_upgrades_with_its_rows_intact(make_db, version):
    database = make_db()
    assert migrations.migrate(database, target=version) == list(range(1, version + 1))
    fixture: dict[str, list[dict]] = {}
    for v in range(version + 1):
        for table, rows in FIXTURES[v].items():
            fixture.setdefault(table, []).extend(rows)
    insert_fixture(database, fixture)
    assert migrations.migrate(database) == list(range(version + 1, HEAD + 1))
    assert_fixture_intact(database, fixture)
    reference = make_db()
    build_from_models(reference)
    assert schema_differences(describe(database), describe(reference)) == []


def _fill_note(database, dialect):
    # A migration written as code: the rare one that must read or fill rows.
    database.execute_sql("UPDATE jobs SET note = status WHERE status IN ('success', 'failure')")


def test_a_two_step_history_applies_to_a_v1_database_with_rows(make_db):
    """The machinery the next real migration will use: v1, then a column, an index and a fill."""
    adds_a_column = {dialect: ("ALTER TABLE jobs ADD COLUMN note VARCHAR(100)",
                               "CREATE INDEX jobs_note ON jobs (cluster_id, note) WHERE note IS NOT NULL")
                     for dialect in ("postgres", "sqlite")}
    history = [migrations.MIGRATIONS[0], (2, "add jobs.note", adds_a_column), (3, "fill jobs.note", _fill_note)]
    database = make_db()
    assert migrations.migrate(database, history, target=1) == [1]
    insert_fixture(database, FIXTURES[1])
    assert migrations.migrate(database, history) == [2, 3]
    assert migrations.migrate(database, history) == []
    assert_fixture_intact(database, FIXTURES[1])
    described = describe(database)["jobs"]
    assert described["columns"]["note"][1] is True  # nullable
    assert described["indexes"]["jobs_note"][:2] == (("cluster_id", "note"), False)
    assert _rows(database, "SELECT seq, note FROM jobs ORDER BY seq") == [
        (1, None), (2, None), (3, "success"), (4, "failure")]
    assert [r[0] for r in _rows(database, "SELECT version FROM schema_migrations ORDER BY version")] == [1, 2, 3]


def test_a_failing_migration_applies_nothing(make_db):
    broken = [migrations.MIGRATIONS[0], (2, "broken", {d: ("ALTER TABLE nowhere ADD COLUMN x INTEGER",)
                                                        for d in ("postgres", "sqlite")})]
    database = make_db()
    with pytest.raises(peewee.DatabaseError):
        migrations.migrate(database, broken)
    assert "jobs" not in describe(database)  # v1 went back with v2: one transaction
    assert migrations.migrate(database) == list(range(1, HEAD + 1))


# --- databases made before the runner moved -------------------------------------------------
# Exactly what app.migrations._v1_initial and db.migrate did: create_tables from the models, the
# partial indexes, version 1 recorded. Such a database must read as version 1. The models have
# moved on since (migration 2 changed Cluster, migration 3 Job and added two tables), so the old
# way builds from the models as they were at version 1.


class _ClusterV1(peewee.Model):
    id = peewee.CharField(max_length=100, primary_key=True)
    api_secret = peewee.CharField(max_length=200)
    api_secret_hash = peewee.CharField(max_length=64, unique=True)
    description = peewee.CharField(max_length=1024, null=True)
    created_at = peewee.DateTimeField()
    predictive_retries_enabled = peewee.BooleanField(default=False)
    cloud_enabled = peewee.BooleanField(default=False)

    class Meta:
        table_name = "clusters"
        legacy_table_names = False


class _JobV1(peewee.Model):
    seq = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    id = peewee.CharField(max_length=200)
    service = peewee.CharField(max_length=200)
    target_fn = peewee.CharField(max_length=200)
    target_args = peewee.TextField()
    status = peewee.CharField(max_length=16)
    result = peewee.TextField(null=True)
    result_type = peewee.CharField(max_length=16, null=True)
    cache_key = peewee.CharField(max_length=1024, null=True)
    attempts_allowed = peewee.IntegerField()
    attempt = peewee.IntegerField()
    machine_id = peewee.CharField(max_length=200, null=True)
    timeout_seconds = peewee.IntegerField()
    deadline_ms = peewee.BigIntegerField(null=True)
    created_at = peewee.DateTimeField()
    claimed_at = peewee.DateTimeField(null=True)
    resulted_at = peewee.DateTimeField(null=True)
    execution_time_ms = peewee.IntegerField(null=True)
    deployment_id = peewee.CharField(max_length=200, null=True)
    predictive_retries = peewee.BooleanField()

    class Meta:
        table_name = "jobs"
        legacy_table_names = False
        indexes = ((("cluster_id", "id"), True),)


class _ServiceV1(peewee.Model):
    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200)
    definition = peewee.TextField(null=True)
    definition_hash = peewee.CharField(max_length=64, null=True)
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "services"
        legacy_table_names = False
        indexes = ((("cluster_id", "name"), True),)


class _EventV1(peewee.Model):
    seq = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    type = peewee.CharField(max_length=64)
    job_id = peewee.CharField(max_length=200, null=True)
    machine_id = peewee.CharField(max_length=200, null=True)
    deployment_id = peewee.CharField(max_length=200, null=True)
    service = peewee.CharField(max_length=200, null=True)
    created_at = peewee.DateTimeField()
    meta = peewee.TextField(null=True)

    class Meta:
        table_name = "events"
        legacy_table_names = False
        indexes = ((("cluster_id", "seq"), False), (("cluster_id", "job_id"), False), (("created_at",), False))


_MODELS_V1 = (_ClusterV1, _JobV1, models.Machine, _ServiceV1, _EventV1, models.Lease)

_OLD_V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (cluster_id, service, seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS jobs_running_deadline ON jobs (deadline_ms) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_running_machine ON jobs (cluster_id, machine_id) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cluster_id, service, target_fn, cache_key, seq)"
    " WHERE cache_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (resulted_at) WHERE status IN ('success', 'failure')",
    "CREATE INDEX IF NOT EXISTS jobs_cluster_recent ON jobs (cluster_id, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_service_recent ON jobs (cluster_id, service, seq)",
)


def _build_the_old_way(database):
    p = database.param
    with database.connection_context(), database.atomic(), database.bind_ctx(_MODELS_V1):
        database.execute_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        database.create_tables(_MODELS_V1, safe=True)
        for statement in _OLD_V1_INDEXES:
            database.execute_sql(statement)
        database.execute_sql(f"INSERT INTO schema_migrations (version, name) VALUES ({p}, {p})", (1, "initial schema"))


def test_a_database_made_by_the_old_runner_is_version_one(make_db):
    old, fresh_v1, fresh_head = make_db(), make_db(), make_db()
    _build_the_old_way(old)
    migrations.migrate(fresh_v1, target=1)
    migrations.migrate(fresh_head)
    assert schema_differences(describe(old), describe(fresh_v1)) == []
    insert_fixture(old, FIXTURES[1])
    assert migrations.migrate(old) == list(range(2, HEAD + 1))
    assert_fixture_intact(old, FIXTURES[1])
    assert schema_differences(describe(old), describe(fresh_head)) == []
    assert _rows(old, "SELECT version, name FROM schema_migrations ORDER BY version")[0] == (1, "initial schema")


# --- exactly once ---------------------------------------------------------------------------


def test_migrating_a_migrated_database_applies_nothing(make_db):
    database = make_db()
    assert migrations.migrate(database) == list(range(1, HEAD + 1))
    before = describe(database)
    assert migrations.migrate(database) == []
    assert describe(database) == before


def test_replicas_migrating_at_once_apply_each_version_once(make_db):
    first = make_db()
    replicas = [first] + [make_db(first.url) for _ in range(5)]  # one connection each, to one database
    # The file is in WAL mode before they race, as any used database is: switching a new file's
    # journal mode takes a lock that SQLite's busy timeout does not wait for ("database is locked").
    first.connect(reuse_if_open=True)
    first.close()
    start = threading.Barrier(len(replicas))
    results: list = [None] * len(replicas)

    def run(i):
        start.wait()
        try:
            results[i] = migrations.migrate(replicas[i])
        except Exception as exc:  # reported below with the others
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(replicas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [r for r in results if not isinstance(r, list)], results
    assert sorted(results, key=len, reverse=True) == [list(range(1, HEAD + 1))] + [[]] * (len(replicas) - 1), results
    versions = _rows(first, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, HEAD + 1))
