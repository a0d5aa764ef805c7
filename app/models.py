"""Peewee models: the schema. Migrations (app/migrations.py) own how it gets into the database."""
from __future__ import annotations

import datetime as dt

import peewee

from .db import database
from .engine.states import JobStatus, MachineStatus


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Cluster(BaseModel):
    id = peewee.CharField(max_length=100, primary_key=True)
    # The secret is shown to its management user, so it is kept, sealed by a key that is not in the
    # database (app/sealing.py); lookups go through its hash (unique index), so authenticating a
    # request never compares the secret itself against stored rows.
    api_secret = peewee.CharField(max_length=200, null=True)  # in clear before migration 2; emptied at start-up
    api_secret_hash = peewee.CharField(max_length=64, unique=True)
    description = peewee.CharField(max_length=1024, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    predictive_retries_enabled = peewee.BooleanField(default=False)
    cloud_enabled = peewee.BooleanField(default=False)
    api_secret_sealed = peewee.TextField(null=True)  # Fernet token of the secret
    api_secret_key = peewee.CharField(max_length=16, null=True)  # sealing.key_id of the key that sealed it
    # Migration 4: a rotation keeps the previous secret working (by its hash) until it expires.
    previous_secret_hash = peewee.CharField(max_length=64, null=True, index=True)
    previous_secret_expires_at = peewee.DateTimeField(null=True)
    secret_rotated_at = peewee.DateTimeField(null=True)
    deleted_at = peewee.DateTimeField(null=True)  # being deleted: authenticates nothing, its rows go in batches

    class Meta:
        table_name = "clusters"


class Job(BaseModel):
    """One call. `seq` orders the queue (FIFO); (cluster_id, id) is the public identity."""

    seq = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    id = peewee.CharField(max_length=200)
    service = peewee.CharField(max_length=200)
    target_fn = peewee.CharField(max_length=200)
    target_args = peewee.TextField()
    status = peewee.CharField(max_length=16, default=JobStatus.PENDING)
    result = peewee.TextField(null=True)
    result_type = peewee.CharField(max_length=16, null=True)
    cache_key = peewee.CharField(max_length=1024, null=True)
    attempts_allowed = peewee.IntegerField()
    attempt = peewee.IntegerField(default=0)  # claims so far; the running attempt's number
    machine_id = peewee.CharField(max_length=200, null=True)  # holder of the current attempt
    timeout_seconds = peewee.IntegerField()
    deadline_ms = peewee.BigIntegerField(null=True)  # end of the current attempt, epoch ms (plain arithmetic on both databases)
    created_at = peewee.DateTimeField(default=utcnow)
    claimed_at = peewee.DateTimeField(null=True)
    resulted_at = peewee.DateTimeField(null=True)
    execution_time_ms = peewee.IntegerField(null=True)
    deployment_id = peewee.CharField(max_length=200, null=True)
    predictive_retries = peewee.BooleanField(default=False)
    # Migration 3 (call controls). Times are epoch ms on the database's clock, as deadline_ms.
    run_at_ms = peewee.BigIntegerField(null=True)  # scheduled: due then (a delay, a back-off)
    queue_deadline_ms = peewee.BigIntegerField(null=True)  # must be claimed by then, else it ends
    call_deadline_ms = peewee.BigIntegerField(null=True)  # the whole call ends by then, across attempts
    reason = peewee.CharField(max_length=1024, null=True)  # why it ended without a result of its own
    backoff_attempts = peewee.IntegerField(null=True)  # rejection retries: attempts in all (None: none)
    backoff_initial_ms = peewee.IntegerField(null=True)
    backoff_factor = peewee.FloatField(null=True)
    backoff_max_ms = peewee.IntegerField(null=True)
    backoff_jitter = peewee.FloatField(null=True)  # 0..1: the share of a delay drawn at random

    class Meta:
        table_name = "jobs"
        indexes = (
            (("cluster_id", "id"), True),
        )


class Machine(BaseModel):
    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    id = peewee.CharField(max_length=200)
    ip = peewee.CharField(max_length=100, null=True)
    deployment_id = peewee.CharField(max_length=200, null=True)
    status = peewee.CharField(max_length=16, default=MachineStatus.ACTIVE)
    first_seen_at = peewee.DateTimeField(default=utcnow)
    last_ping_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "machines"
        indexes = (
            (("cluster_id", "id"), True),
            (("status", "last_ping_at"), False),
        )


class Service(BaseModel):
    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200)
    definition = peewee.TextField(null=True)  # JSON: {"name", "functions": [{"name", "schema"?}]}
    definition_hash = peewee.CharField(max_length=64, null=True)
    updated_at = peewee.DateTimeField(default=utcnow)
    json_schema = peewee.TextField(null=True)  # migration 4: the schema an operator put (PUT .../schema)

    class Meta:
        table_name = "services"
        indexes = ((("cluster_id", "name"), True),)


class Event(BaseModel):
    """The activity log: what happened to jobs and machines, and what clients reported."""

    seq = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    type = peewee.CharField(max_length=64)
    job_id = peewee.CharField(max_length=200, null=True)
    machine_id = peewee.CharField(max_length=200, null=True)
    deployment_id = peewee.CharField(max_length=200, null=True)
    service = peewee.CharField(max_length=200, null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    meta = peewee.TextField(null=True)  # JSON

    class Meta:
        table_name = "events"
        indexes = (
            (("cluster_id", "created_at", "seq"), False),  # the activity log's order (clusters.activity)
            (("cluster_id", "job_id"), False),
            (("created_at",), False),
        )


class Lease(BaseModel):
    """A named lease: who may run a singleton task (the sweeper) until when."""

    name = peewee.CharField(max_length=64, primary_key=True)
    holder = peewee.CharField(max_length=200, null=True)
    expires_at = peewee.DateTimeField(null=True)
    acquired_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "leases"


class Schedule(BaseModel):
    """A cron schedule: calls `service.target_fn(arguments)` at each tick of `cron` in `timezone`."""

    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200)
    service = peewee.CharField(max_length=200)
    target_fn = peewee.CharField(max_length=200)
    arguments = peewee.TextField()  # JSON, as the user gave it
    target_args = peewee.TextField()  # the same, in the SDKs' encoding (base64 of MessagePack)
    cron = peewee.CharField(max_length=200)
    timezone = peewee.CharField(max_length=64)
    catch_up = peewee.CharField(max_length=16)  # what happens to ticks missed while nobody maintained
    call_config = peewee.TextField(null=True)  # JSON: the callConfig of each call it makes
    paused = peewee.BooleanField(default=False)
    next_fire_ms = peewee.BigIntegerField(null=True)  # the next tick, epoch ms UTC
    last_fired_ms = peewee.BigIntegerField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "schedules"
        indexes = ((("cluster_id", "name"), True), (("next_fire_ms",), False))


class Worker(BaseModel):
    """A machine that polls a service for jobs: what makes a machine a worker of that service."""

    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    service = peewee.CharField(max_length=200)
    machine_id = peewee.CharField(max_length=200)
    first_poll_at = peewee.DateTimeField(default=utcnow)
    last_poll_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "workers"
        indexes = ((("cluster_id", "service", "machine_id"), True), (("last_poll_at",), False))


class AccessPoint(BaseModel):
    """A named token that may call (execute) some services of one cluster, and nothing else."""

    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    name = peewee.CharField(max_length=200)
    token_hash = peewee.CharField(max_length=64, unique=True)  # sha256 hex of the token; the token is never kept
    services = peewee.TextField()  # JSON list of the service names it may call
    created_at = peewee.DateTimeField(default=utcnow)
    rotated_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "access_points"
        indexes = ((("cluster_id", "name"), True),)


class MetricRollup(BaseModel):
    """Finished calls of one function in one minute with one outcome: what the metrics read."""

    pk = peewee.BigAutoField()
    cluster_id = peewee.CharField(max_length=100)
    service = peewee.CharField(max_length=200)
    target_fn = peewee.CharField(max_length=200)
    minute_ms = peewee.BigIntegerField()  # the minute's start, epoch ms UTC
    outcome = peewee.CharField(max_length=16)  # resolution, rejection, failure or cancelled
    calls = peewee.IntegerField()
    exec_ms_sum = peewee.BigIntegerField()
    queue_ms_sum = peewee.BigIntegerField()
    exec_histogram = peewee.TextField()  # JSON list: calls per execution-time bucket
    queue_histogram = peewee.TextField()  # JSON list: calls per queue-time bucket

    class Meta:
        table_name = "metric_rollups"
        indexes = ((("cluster_id", "service", "minute_ms", "target_fn", "outcome"), True), (("minute_ms",), False))


class RollupMark(BaseModel):
    """How far a rollup has folded the jobs table in: everything finished before `through_ms`."""

    name = peewee.CharField(max_length=64, primary_key=True)
    through_ms = peewee.BigIntegerField()

    class Meta:
        table_name = "rollup_marks"


class ConsoleSession(BaseModel):
    """A signed-in console: the cookie token is kept only as its sha256."""

    token_hash = peewee.CharField(max_length=64, primary_key=True)
    csrf_token = peewee.CharField(max_length=64)
    secret_fingerprint = peewee.CharField(max_length=64)  # of the management secret it signed in with
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField(index=True)

    class Meta:
        table_name = "console_sessions"


class Deployment(BaseModel):
    """One upload of a service to the cloud; engine/states.py has its state machine."""

    id = peewee.CharField(max_length=64, primary_key=True)
    cluster_id = peewee.CharField(max_length=100)
    service = peewee.CharField(max_length=200)
    status = peewee.CharField(max_length=16)
    provider = peewee.CharField(max_length=16)  # lambda
    runtime = peewee.CharField(max_length=32)  # python3.13, nodejs22.x, ...
    stack_name = peewee.CharField(max_length=128, index=True)  # derived once, stored (AWS's limits)
    function_name = peewee.CharField(max_length=64)
    asset_id = peewee.CharField(max_length=64, null=True)  # its bundle
    service_module = peewee.CharField(max_length=300, null=True)  # Python: package.module:attribute
    reason = peewee.CharField(max_length=1024, null=True)  # why it failed
    meta = peewee.TextField(null=True)  # JSON: stack id, the last stack event, ...
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    released_at = peewee.DateTimeField(null=True)
    activated_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True)  # an unreleased deployment fails then
    wakeups = peewee.IntegerField(default=0)  # invocations since a machine of it last polled
    last_woken_at = peewee.DateTimeField(null=True)
    # sha256 of the deployment token its function authenticates with (engine/deployment_tokens.py)
    token_hash = peewee.CharField(max_length=64, null=True, unique=True)
    polled_at = peewee.DateTimeField(null=True)  # a machine of it was first seen polling (wake-ups)

    class Meta:
        table_name = "deployments"
        indexes = ((("cluster_id", "service", "created_at"), False), (("status",), False))


class Asset(BaseModel):
    """An object in the asset store (S3 or a local folder): a bundle or a package, one per target."""

    id = peewee.CharField(max_length=64, primary_key=True)
    cluster_id = peewee.CharField(max_length=100)
    kind = peewee.CharField(max_length=32)  # service_bundle, client_library
    target_id = peewee.CharField(max_length=64)  # the deployment or client library it belongs to
    key = peewee.CharField(max_length=400, unique=True)
    content_type = peewee.CharField(max_length=100)
    status = peewee.CharField(max_length=16)  # pending (URL handed out), uploaded (checked)
    size = peewee.BigIntegerField(null=True)
    sha256 = peewee.CharField(max_length=64, null=True)  # hex
    sha1 = peewee.CharField(max_length=40, null=True)  # hex (npm's shasum)
    sha512 = peewee.CharField(max_length=128, null=True)  # hex (npm's integrity is its base64)
    created_at = peewee.DateTimeField(default=utcnow)
    uploaded_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "assets"
        indexes = ((("cluster_id", "kind", "target_id"), True),)


class ClientLibrary(BaseModel):
    """A version of a cluster's typed client in one language; unique per (cluster, language, version)."""

    id = peewee.CharField(max_length=64, primary_key=True)
    cluster_id = peewee.CharField(max_length=100)
    language = peewee.CharField(max_length=16)  # typescript, python
    version = peewee.CharField(max_length=64)
    major = peewee.IntegerField()
    minor = peewee.IntegerField()
    patch = peewee.IntegerField()
    status = peewee.CharField(max_length=16)  # reserved, published
    asset_id = peewee.CharField(max_length=64, null=True)
    meta = peewee.TextField(null=True)  # JSON
    created_at = peewee.DateTimeField(default=utcnow)
    published_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True)  # a reservation not published by then frees its number

    class Meta:
        table_name = "client_libraries"
        indexes = ((("cluster_id", "language", "version"), True),
                   (("cluster_id", "language", "major", "minor", "patch"), False))


class RegistryToken(BaseModel):
    """A token that reads one cluster's packages (npm, pip) and nothing else; kept as its sha256."""

    id = peewee.CharField(max_length=64, primary_key=True)
    cluster_id = peewee.CharField(max_length=100, index=True)
    name = peewee.CharField(max_length=200)
    token_hash = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "registry_tokens"


ALL_MODELS = (Cluster, Job, Machine, Service, Event, Lease, Schedule, Worker, AccessPoint, MetricRollup, RollupMark,
              ConsoleSession, Deployment, Asset, ClientLibrary, RegistryToken)
