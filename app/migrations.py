"""Versioned schema migrations and their runner, applied at start-up (exactly once across replicas).

A migration is `(version, name, steps)`. `steps` is literal DDL per dialect,
`{"postgres": (...), "sqlite": (...)}`, or, for the rare one that needs code, a callable
`apply(database, dialect)` with dialect "postgres" or "sqlite". Every version is text as it was
released, never derived from the models: the models describe the head, the migrations how each
database got there, and tests/controlplane/test_migrations.py proves the two agree.

To add migration N:
1. Change the model, then append `(N, "what it does", {"postgres": (...), "sqlite": (...)})` to
   MIGRATIONS with the literal statements for each dialect (SQLite has no
   `ADD COLUMN IF NOT EXISTS`; it needs none, since each version runs exactly once).
2. Never edit a released migration, not even to fix it: fix it in a new one.
3. Add a fixture row set for version N to `FIXTURES` in the test, so later migrations prove they
   keep those rows.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence, Union

import peewee

from . import db

log = logging.getLogger(__name__)

Steps = Union[dict[str, tuple[str, ...]], Callable[[peewee.Database, str], None]]
Migration = tuple[int, str, Steps]

# Version 1 exactly as `create_tables(models.ALL_MODELS, safe=True)` emitted it when frozen, table by
# table with the models' own indexes, then the partial indexes below.
_V1_POSTGRES = (
    'CREATE TABLE IF NOT EXISTS "clusters" ("id" VARCHAR(100) NOT NULL PRIMARY KEY,'
    ' "api_secret" VARCHAR(200) NOT NULL, "api_secret_hash" VARCHAR(64) NOT NULL, "description" VARCHAR(1024),'
    ' "created_at" TIMESTAMP NOT NULL, "predictive_retries_enabled" BOOLEAN NOT NULL,'
    ' "cloud_enabled" BOOLEAN NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "clusters_api_secret_hash" ON "clusters" ("api_secret_hash")',
    'CREATE TABLE IF NOT EXISTS "events" ("seq" BIGSERIAL NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "type" VARCHAR(64) NOT NULL, "job_id" VARCHAR(200), "machine_id" VARCHAR(200), "deployment_id" VARCHAR(200),'
    ' "service" VARCHAR(200), "created_at" TIMESTAMP NOT NULL, "meta" TEXT)',
    'CREATE INDEX IF NOT EXISTS "events_cluster_id_seq" ON "events" ("cluster_id", "seq")',
    'CREATE INDEX IF NOT EXISTS "events_cluster_id_job_id" ON "events" ("cluster_id", "job_id")',
    'CREATE INDEX IF NOT EXISTS "events_created_at" ON "events" ("created_at")',
    'CREATE TABLE IF NOT EXISTS "jobs" ("seq" BIGSERIAL NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "id" VARCHAR(200) NOT NULL, "service" VARCHAR(200) NOT NULL, "target_fn" VARCHAR(200) NOT NULL,'
    ' "target_args" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "result" TEXT, "result_type" VARCHAR(16),'
    ' "cache_key" VARCHAR(1024), "attempts_allowed" INTEGER NOT NULL, "attempt" INTEGER NOT NULL,'
    ' "machine_id" VARCHAR(200), "timeout_seconds" INTEGER NOT NULL, "deadline_ms" BIGINT,'
    ' "created_at" TIMESTAMP NOT NULL, "claimed_at" TIMESTAMP, "resulted_at" TIMESTAMP,'
    ' "execution_time_ms" INTEGER, "deployment_id" VARCHAR(200), "predictive_retries" BOOLEAN NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "jobs_cluster_id_id" ON "jobs" ("cluster_id", "id")',
    'CREATE TABLE IF NOT EXISTS "leases" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "holder" VARCHAR(200),'
    ' "expires_at" TIMESTAMP, "acquired_at" TIMESTAMP)',
    'CREATE TABLE IF NOT EXISTS "machines" ("pk" BIGSERIAL NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "id" VARCHAR(200) NOT NULL, "ip" VARCHAR(100), "deployment_id" VARCHAR(200), "status" VARCHAR(16) NOT NULL,'
    ' "first_seen_at" TIMESTAMP NOT NULL, "last_ping_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "machines_cluster_id_id" ON "machines" ("cluster_id", "id")',
    'CREATE INDEX IF NOT EXISTS "machines_status_last_ping_at" ON "machines" ("status", "last_ping_at")',
    'CREATE TABLE IF NOT EXISTS "services" ("pk" BIGSERIAL NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "name" VARCHAR(200) NOT NULL, "definition" TEXT, "definition_hash" VARCHAR(64),'
    ' "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "services_cluster_id_name" ON "services" ("cluster_id", "name")',
)

_V1_SQLITE = (
    'CREATE TABLE IF NOT EXISTS "clusters" ("id" VARCHAR(100) NOT NULL PRIMARY KEY,'
    ' "api_secret" VARCHAR(200) NOT NULL, "api_secret_hash" VARCHAR(64) NOT NULL, "description" VARCHAR(1024),'
    ' "created_at" DATETIME NOT NULL, "predictive_retries_enabled" INTEGER NOT NULL,'
    ' "cloud_enabled" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "clusters_api_secret_hash" ON "clusters" ("api_secret_hash")',
    'CREATE TABLE IF NOT EXISTS "events" ("seq" INTEGER NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "type" VARCHAR(64) NOT NULL, "job_id" VARCHAR(200), "machine_id" VARCHAR(200), "deployment_id" VARCHAR(200),'
    ' "service" VARCHAR(200), "created_at" DATETIME NOT NULL, "meta" TEXT)',
    'CREATE INDEX IF NOT EXISTS "events_cluster_id_seq" ON "events" ("cluster_id", "seq")',
    'CREATE INDEX IF NOT EXISTS "events_cluster_id_job_id" ON "events" ("cluster_id", "job_id")',
    'CREATE INDEX IF NOT EXISTS "events_created_at" ON "events" ("created_at")',
    'CREATE TABLE IF NOT EXISTS "jobs" ("seq" INTEGER NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "id" VARCHAR(200) NOT NULL, "service" VARCHAR(200) NOT NULL, "target_fn" VARCHAR(200) NOT NULL,'
    ' "target_args" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "result" TEXT, "result_type" VARCHAR(16),'
    ' "cache_key" VARCHAR(1024), "attempts_allowed" INTEGER NOT NULL, "attempt" INTEGER NOT NULL,'
    ' "machine_id" VARCHAR(200), "timeout_seconds" INTEGER NOT NULL, "deadline_ms" INTEGER,'
    ' "created_at" DATETIME NOT NULL, "claimed_at" DATETIME, "resulted_at" DATETIME,'
    ' "execution_time_ms" INTEGER, "deployment_id" VARCHAR(200), "predictive_retries" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "jobs_cluster_id_id" ON "jobs" ("cluster_id", "id")',
    'CREATE TABLE IF NOT EXISTS "leases" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "holder" VARCHAR(200),'
    ' "expires_at" DATETIME, "acquired_at" DATETIME)',
    'CREATE TABLE IF NOT EXISTS "machines" ("pk" INTEGER NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "id" VARCHAR(200) NOT NULL, "ip" VARCHAR(100), "deployment_id" VARCHAR(200), "status" VARCHAR(16) NOT NULL,'
    ' "first_seen_at" DATETIME NOT NULL, "last_ping_at" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "machines_cluster_id_id" ON "machines" ("cluster_id", "id")',
    'CREATE INDEX IF NOT EXISTS "machines_status_last_ping_at" ON "machines" ("status", "last_ping_at")',
    'CREATE TABLE IF NOT EXISTS "services" ("pk" INTEGER NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
    ' "name" VARCHAR(200) NOT NULL, "definition" TEXT, "definition_hash" VARCHAR(64),'
    ' "updated_at" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "services_cluster_id_name" ON "services" ("cluster_id", "name")',
)

# Partial indexes serve the hot queries: the claim (oldest pending job of a cluster+service), the
# sweeper (running jobs past their deadline or on a silent machine), the cache lookup and pruning.
# The same text on both databases.
_V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (cluster_id, service, seq) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS jobs_running_deadline ON jobs (deadline_ms) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_running_machine ON jobs (cluster_id, machine_id) WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cluster_id, service, target_fn, cache_key, seq)"
    " WHERE cache_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (resulted_at) WHERE status IN ('success', 'failure')",
    "CREATE INDEX IF NOT EXISTS jobs_cluster_recent ON jobs (cluster_id, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_service_recent ON jobs (cluster_id, service, seq)",
)

# Version 2: cluster secrets sealed at rest (app/sealing.py). A migration cannot see the key, so
# this only makes room: the sealed secret and its key's id, and the clear column nullable. The
# app seals the rows and empties the clear column at start-up (engine/clusters.seal_stored_secrets).
# SQLite cannot drop a NOT NULL: the table is rebuilt (its only index goes and comes back with it).
_V2_POSTGRES = (
    'ALTER TABLE "clusters" ADD COLUMN "api_secret_sealed" TEXT',
    'ALTER TABLE "clusters" ADD COLUMN "api_secret_key" VARCHAR(16)',
    'ALTER TABLE "clusters" ALTER COLUMN "api_secret" DROP NOT NULL',
)

_V2_SQLITE = (
    'DROP INDEX "clusters_api_secret_hash"',
    'ALTER TABLE "clusters" RENAME TO "clusters_v1"',
    'CREATE TABLE "clusters" ("id" VARCHAR(100) NOT NULL PRIMARY KEY,'
    ' "api_secret" VARCHAR(200), "api_secret_hash" VARCHAR(64) NOT NULL, "description" VARCHAR(1024),'
    ' "created_at" DATETIME NOT NULL, "predictive_retries_enabled" INTEGER NOT NULL,'
    ' "cloud_enabled" INTEGER NOT NULL, "api_secret_sealed" TEXT, "api_secret_key" VARCHAR(16))',
    'INSERT INTO "clusters" ("id", "api_secret", "api_secret_hash", "description", "created_at",'
    ' "predictive_retries_enabled", "cloud_enabled")'
    ' SELECT "id", "api_secret", "api_secret_hash", "description", "created_at",'
    ' "predictive_retries_enabled", "cloud_enabled" FROM "clusters_v1"',
    'DROP TABLE "clusters_v1"',
    'CREATE UNIQUE INDEX "clusters_api_secret_hash" ON "clusters" ("api_secret_hash")',
)

# Version 3: control over calls (issue 14). Jobs gain a due time (delays and back-off: the new
# `scheduled` status), deadlines, the reason a job ended without a result of its own, and a
# rejection retry policy; all nullable, so existing rows need no fill. `jobs_finished` is rebuilt
# to cover the new terminal status (`cancelled`), or pruning could not use it. New tables:
# schedules (cron ticks) and workers (which machine polls which service, and when it last did).
def _v3_job_columns(bigint: str) -> tuple[str, ...]:
    return (
        f'ALTER TABLE "jobs" ADD COLUMN "run_at_ms" {bigint}',
        f'ALTER TABLE "jobs" ADD COLUMN "queue_deadline_ms" {bigint}',
        f'ALTER TABLE "jobs" ADD COLUMN "call_deadline_ms" {bigint}',
        'ALTER TABLE "jobs" ADD COLUMN "reason" VARCHAR(1024)',
        'ALTER TABLE "jobs" ADD COLUMN "backoff_attempts" INTEGER',
        'ALTER TABLE "jobs" ADD COLUMN "backoff_initial_ms" INTEGER',
        'ALTER TABLE "jobs" ADD COLUMN "backoff_factor" REAL',
        'ALTER TABLE "jobs" ADD COLUMN "backoff_max_ms" INTEGER',
        'ALTER TABLE "jobs" ADD COLUMN "backoff_jitter" REAL',
    )

_V3_INDEXES = (
    "DROP INDEX jobs_finished",
    "CREATE INDEX jobs_finished ON jobs (resulted_at) WHERE status IN ('success', 'failure', 'cancelled')",
    "CREATE INDEX jobs_scheduled_due ON jobs (run_at_ms) WHERE status = 'scheduled'",
    "CREATE INDEX jobs_waiting_deadline ON jobs (queue_deadline_ms)"
    " WHERE status IN ('pending', 'scheduled') AND queue_deadline_ms IS NOT NULL",
    "CREATE INDEX jobs_cluster_status ON jobs (cluster_id, status, seq)",
    "CREATE INDEX jobs_running_function ON jobs (cluster_id, service, target_fn) WHERE status = 'running'",
)


def _v3_tables(serial: str, timestamp: str, boolean: str, bigint: str) -> tuple[str, ...]:
    return (
        f'CREATE TABLE "schedules" ("pk" {serial} NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "name" VARCHAR(200) NOT NULL, "service" VARCHAR(200) NOT NULL, "target_fn" VARCHAR(200) NOT NULL,'
        ' "arguments" TEXT NOT NULL, "target_args" TEXT NOT NULL, "cron" VARCHAR(200) NOT NULL,'
        f' "timezone" VARCHAR(64) NOT NULL, "catch_up" VARCHAR(16) NOT NULL, "call_config" TEXT,'
        f' "paused" {boolean} NOT NULL, "next_fire_ms" {bigint}, "last_fired_ms" {bigint},'
        f' "created_at" {timestamp} NOT NULL, "updated_at" {timestamp} NOT NULL)',
        'CREATE UNIQUE INDEX "schedules_cluster_id_name" ON "schedules" ("cluster_id", "name")',
        'CREATE INDEX "schedules_next_fire_ms" ON "schedules" ("next_fire_ms")',
        f'CREATE TABLE "workers" ("pk" {serial} NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "service" VARCHAR(200) NOT NULL, "machine_id" VARCHAR(200) NOT NULL,'
        f' "first_poll_at" {timestamp} NOT NULL, "last_poll_at" {timestamp} NOT NULL)',
        'CREATE UNIQUE INDEX "workers_cluster_id_service_machine_id" ON "workers" ("cluster_id", "service", "machine_id")',
        'CREATE INDEX "workers_last_poll_at" ON "workers" ("last_poll_at")',
    )


_V3_POSTGRES = _v3_job_columns("BIGINT") + _V3_INDEXES + _v3_tables("BIGSERIAL", "TIMESTAMP", "BOOLEAN", "BIGINT")
_V3_SQLITE = _v3_job_columns("INTEGER") + _V3_INDEXES + _v3_tables("INTEGER", "DATETIME", "INTEGER", "INTEGER")


# Version 4: the operators' surface (issue 15). Clusters gain a second secret for a rotation's
# grace period (looked up by its hash, like the first) and a deletion mark (a deleted cluster
# authenticates nothing while its rows go in batches). Services gain the schema an operator puts
# (PUT .../schema, as the original's `json_schema`), kept apart from the definition workers send. New tables: access points (named tokens,
# kept as hashes, that may call some services of one cluster), metric rollups (per function,
# minute and outcome: what the metrics API and its charts read instead of the jobs table) and the
# rollup's progress mark.
def _v4_statements(serial: str, timestamp: str, bigint: str) -> tuple[str, ...]:
    return (
        'ALTER TABLE "clusters" ADD COLUMN "previous_secret_hash" VARCHAR(64)',
        f'ALTER TABLE "clusters" ADD COLUMN "previous_secret_expires_at" {timestamp}',
        f'ALTER TABLE "clusters" ADD COLUMN "secret_rotated_at" {timestamp}',
        f'ALTER TABLE "clusters" ADD COLUMN "deleted_at" {timestamp}',
        'CREATE INDEX "clusters_previous_secret_hash" ON "clusters" ("previous_secret_hash")',
        'ALTER TABLE "services" ADD COLUMN "json_schema" TEXT',
        f'CREATE TABLE "access_points" ("pk" {serial} NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "name" VARCHAR(200) NOT NULL, "token_hash" VARCHAR(64) NOT NULL, "services" TEXT NOT NULL,'
        f' "created_at" {timestamp} NOT NULL, "rotated_at" {timestamp} NOT NULL, "last_used_at" {timestamp})',
        'CREATE UNIQUE INDEX "access_points_cluster_id_name" ON "access_points" ("cluster_id", "name")',
        'CREATE UNIQUE INDEX "access_points_token_hash" ON "access_points" ("token_hash")',
        f'CREATE TABLE "metric_rollups" ("pk" {serial} NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "service" VARCHAR(200) NOT NULL, "target_fn" VARCHAR(200) NOT NULL,'
        f' "minute_ms" {bigint} NOT NULL, "outcome" VARCHAR(16) NOT NULL, "calls" INTEGER NOT NULL,'
        f' "exec_ms_sum" {bigint} NOT NULL, "queue_ms_sum" {bigint} NOT NULL,'
        ' "exec_histogram" TEXT NOT NULL, "queue_histogram" TEXT NOT NULL)',
        'CREATE UNIQUE INDEX "metric_rollups_cluster_id_service_minute_ms_target_fn_outcome" ON "metric_rollups"'
        ' ("cluster_id", "service", "minute_ms", "target_fn", "outcome")',
        'CREATE INDEX "metric_rollups_minute_ms" ON "metric_rollups" ("minute_ms")',
        f'CREATE TABLE "rollup_marks" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "through_ms" {bigint} NOT NULL)',
    )


# Version 5: console sign-ins. A session is kept as the sha256 of its cookie token, with its CSRF
# token and the fingerprint of the management secret it signed in with (changing the secret signs
# every session out); rows past `expires_at` are deleted when the next session is made.
def _v5_statements(timestamp: str) -> tuple[str, ...]:
    return (
        'CREATE TABLE "console_sessions" ("token_hash" VARCHAR(64) NOT NULL PRIMARY KEY,'
        ' "csrf_token" VARCHAR(64) NOT NULL, "secret_fingerprint" VARCHAR(64) NOT NULL,'
        f' "created_at" {timestamp} NOT NULL, "expires_at" {timestamp} NOT NULL)',
        'CREATE INDEX "console_sessions_expires_at" ON "console_sessions" ("expires_at")',
    )


# Version 6: cloud deployments and the client-library registry.
# - deployments: one row per upload of a service (uploading -> deploying -> active | failed;
#   active -> inactive when a newer one turns active). Stack and function names are derived once
#   and stored (AWS limits them to 128 and 64 characters); wake-ups count the invocations made
#   while no machine of the deployment polled, so a function that never polls is marked failed.
# - assets: objects in the asset store (S3 or a local folder): one per target (a deployment's
#   bundle, a client library's package); its size and digests are recorded once the upload is checked.
# - client_libraries: a version per cluster and language, unique; reserved by a publish, it counts
#   once its asset is checked; a reservation never completed expires and frees its number.
# - registry_tokens: read tokens of one cluster's packages, kept as sha256 hashes.
def _v6_deployment_statements(timestamp: str) -> tuple[str, ...]:
    return (
        'CREATE TABLE "deployments" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "service" VARCHAR(200) NOT NULL, "status" VARCHAR(16) NOT NULL, "provider" VARCHAR(16) NOT NULL,'
        ' "runtime" VARCHAR(32) NOT NULL, "stack_name" VARCHAR(128) NOT NULL, "function_name" VARCHAR(64) NOT NULL,'
        ' "asset_id" VARCHAR(64), "service_module" VARCHAR(300), "reason" VARCHAR(1024), "meta" TEXT,'
        f' "created_at" {timestamp} NOT NULL, "updated_at" {timestamp} NOT NULL, "released_at" {timestamp},'
        f' "activated_at" {timestamp}, "expires_at" {timestamp}, "wakeups" INTEGER NOT NULL,'
        f' "last_woken_at" {timestamp}, "token_hash" VARCHAR(64), "polled_at" {timestamp})',
        'CREATE INDEX "deployments_cluster_id_service_created_at" ON "deployments" ("cluster_id", "service", "created_at")',
        'CREATE INDEX "deployments_status" ON "deployments" ("status")',
        'CREATE INDEX "deployments_stack_name" ON "deployments" ("stack_name")',
        'CREATE UNIQUE INDEX "deployments_token_hash" ON "deployments" ("token_hash")',
    )


def _v6_asset_statements(timestamp: str, bigint: str) -> tuple[str, ...]:
    return (
        'CREATE TABLE "assets" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "kind" VARCHAR(32) NOT NULL, "target_id" VARCHAR(64) NOT NULL, "key" VARCHAR(400) NOT NULL,'
        ' "content_type" VARCHAR(100) NOT NULL, "status" VARCHAR(16) NOT NULL,'
        f' "size" {bigint}, "sha256" VARCHAR(64), "sha1" VARCHAR(40), "sha512" VARCHAR(128),'
        f' "created_at" {timestamp} NOT NULL, "uploaded_at" {timestamp})',
        'CREATE UNIQUE INDEX "assets_key" ON "assets" ("key")',
        'CREATE UNIQUE INDEX "assets_cluster_id_kind_target_id" ON "assets" ("cluster_id", "kind", "target_id")',
    )


def _v6_registry_statements(timestamp: str) -> tuple[str, ...]:
    return (
        'CREATE TABLE "client_libraries" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "language" VARCHAR(16) NOT NULL, "version" VARCHAR(64) NOT NULL, "major" INTEGER NOT NULL,'
        ' "minor" INTEGER NOT NULL, "patch" INTEGER NOT NULL, "status" VARCHAR(16) NOT NULL,'
        ' "asset_id" VARCHAR(64), "meta" TEXT,'
        f' "created_at" {timestamp} NOT NULL, "published_at" {timestamp}, "expires_at" {timestamp})',
        'CREATE UNIQUE INDEX "client_libraries_cluster_id_language_version" ON "client_libraries"'
        ' ("cluster_id", "language", "version")',
        'CREATE INDEX "client_libraries_cluster_id_language_major_minor_patch" ON "client_libraries"'
        ' ("cluster_id", "language", "major", "minor", "patch")',
        'CREATE TABLE "registry_tokens" ("id" VARCHAR(64) NOT NULL PRIMARY KEY, "cluster_id" VARCHAR(100) NOT NULL,'
        ' "name" VARCHAR(200) NOT NULL, "token_hash" VARCHAR(64) NOT NULL,'
        f' "created_at" {timestamp} NOT NULL, "last_used_at" {timestamp})',
        'CREATE UNIQUE INDEX "registry_tokens_token_hash" ON "registry_tokens" ("token_hash")',
        'CREATE INDEX "registry_tokens_cluster_id" ON "registry_tokens" ("cluster_id")',
    )


def _v6_statements(timestamp: str, bigint: str) -> tuple[str, ...]:
    return (_v6_deployment_statements(timestamp) + _v6_asset_statements(timestamp, bigint)
            + _v6_registry_statements(timestamp))


# Version 7: the activity log in the order things happened. Its rows are written up to half a
# second late (a buffer per process), so their seq is the order of writing; pages are read by
# (cluster_id, created_at, seq), which replaces the (cluster_id, seq) index.
_V7 = (
    'DROP INDEX IF EXISTS "events_cluster_id_seq"',
    'CREATE INDEX "events_cluster_id_created_at_seq" ON "events" ("cluster_id", "created_at", "seq")',
)


MIGRATIONS: tuple[Migration, ...] = (
    (1, "initial schema", {"postgres": _V1_POSTGRES + _V1_INDEXES, "sqlite": _V1_SQLITE + _V1_INDEXES}),
    (2, "sealed cluster secrets", {"postgres": _V2_POSTGRES, "sqlite": _V2_SQLITE}),
    (3, "call controls: due times, deadlines, back-off, cancel; schedules and workers",
     {"postgres": _V3_POSTGRES, "sqlite": _V3_SQLITE}),
    (4, "operators: secret rotation, cluster deletion, access points, metric rollups",
     {"postgres": _v4_statements("BIGSERIAL", "TIMESTAMP", "BIGINT"),
      "sqlite": _v4_statements("INTEGER", "DATETIME", "INTEGER")}),
    (5, "console sessions", {"postgres": _v5_statements("TIMESTAMP"), "sqlite": _v5_statements("DATETIME")}),
    (6, "cloud deployments, assets, client libraries, registry tokens",
     {"postgres": _v6_statements("TIMESTAMP", "BIGINT"), "sqlite": _v6_statements("DATETIME", "INTEGER")}),
    (7, "the activity log in the order things happened", {"postgres": _V7, "sqlite": _V7}),
)


# --- runner ---------------------------------------------------------------------------------
# All pending migrations run in one transaction under a lock, so several replicas starting at once
# apply each exactly once: PostgreSQL takes a transaction-scoped advisory lock (released at commit,
# never leaked through a pool); SQLite's BEGIN IMMEDIATE serialises writers.

MIGRATION_LOCK_KEY = 0x646966666D6967  # "diffmig"; the same key as before the runner moved here

_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


def migrate(database: peewee.Database, migrations: Sequence[Migration] = MIGRATIONS,
            target: int | None = None) -> list[int]:
    """Apply the migrations not yet recorded, up to `target` (default: all); return the versions applied now.

    Uses the caller's connection when one is open, else opens one for the call and closes it.
    """
    versions = [m[0] for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {versions}")
    dialect = db.dialect_name(database)
    opened = database.is_closed()
    if opened:
        database.connect()
    try:
        with db.DIALECTS[dialect]().transaction(database):  # SQLite: BEGIN IMMEDIATE serialises
            return _apply_pending(database, dialect, migrations, target)
    finally:
        if opened and not database.is_closed():
            database.close()


def _apply_pending(database: peewee.Database, dialect: str, migrations: Sequence[Migration],
                   target: int | None) -> list[int]:
    if dialect == "postgres":
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    database.execute_sql(_SCHEMA_MIGRATIONS)
    done = {row[0] for row in database.execute_sql("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, steps in sorted(migrations, key=lambda m: m[0]):
        if version in done or (target is not None and version > target):
            continue
        log.info("applying migration %s %s", version, name)
        if callable(steps):
            steps(database, dialect)
        else:
            for statement in steps[dialect]:
                database.execute_sql(statement)
        p = database.param
        database.execute_sql(f"INSERT INTO schema_migrations (version, name) VALUES ({p}, {p})", (version, name))
        applied.append(version)
    return applied
