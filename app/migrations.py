"""Versioned schema migrations, applied at start-up by `db.migrate` (exactly once across replicas).

Migration 1 creates the tables from the models as they were at version 1; later changes to the
schema must be new migrations (playhouse.migrate or raw SQL), never edits of an applied one.
"""
from __future__ import annotations

import peewee

from . import models

# Partial indexes serve the hot queries: the claim (oldest pending job of a cluster+service), the
# sweeper (running jobs past their deadline or on a silent machine), the cache lookup and pruning.
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


def _v1_initial(db: peewee.Database) -> None:
    db.create_tables(models.ALL_MODELS, safe=True)
    for statement in _V1_INDEXES:
        db.execute_sql(statement)


MIGRATIONS = [
    (1, "initial schema", _v1_initial),
]
