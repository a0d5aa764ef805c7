"""Every environment variable the control-plane reads, parsed and validated once.

`VARIABLES` is the single list of names: the app and gunicorn.conf.py read them through `load()`,
the Pulumi program's tests read the same list to prove that every cloud setting is injected, and
the README's configuration table is generated from it (`scripts/config-table`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from . import sealing

MANAGEMENT_SECRET_PREFIX = "sk_management_"
MANAGEMENT_SECRET_MIN_LENGTH = 32
METRICS_TOKEN_MIN_LENGTH = 16
# What the Docker image's users set when they really want SQLite (on a volume they mount there).
SQLITE_ESCAPE_HATCH = "sqlite:////var/lib/differential/differential.db"


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it and says what is expected."""


# Each parser returns the value or raises ValueError with a phrase that follows the variable's
# name: "PORT must be ...".

def _text(value: str) -> str:
    return value.strip()


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (expected one of 1/true/yes/on or 0/false/no/off)")


def _number(convert: Callable[[str], Any], ok: Callable[[Any], bool], message: str) -> Callable[[str], Any]:
    """A parser of numbers: `convert` the text, and refuse what is not a number or not `ok`."""

    def parse(value: str) -> Any:
        try:
            number = convert(value.strip())
        except ValueError:
            raise ValueError(message) from None
        if not ok(number):
            raise ValueError(message)
        return number

    return parse


_positive_int = _number(int, lambda n: n > 0, "must be a whole number above 0")
_positive_float = _number(float, lambda n: n > 0, "must be a number greater than 0")  # NaN is refused too
_port = _number(int, lambda n: 0 <= n <= 65535, "must be a port number from 1 to 65535 (0: any free port)")


def _database_url(value: str) -> str:
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("postgres", "postgresql", "sqlite"):
        raise ValueError("must be a database URL (expected postgresql://user:password@host:port/dbname "
                         "or sqlite:///path/to/file.db)")
    if parsed.scheme != "sqlite" and not parsed.path.strip("/"):
        raise ValueError("names no database (add /dbname at the end)")
    return value.strip()


def _management_secret(value: str) -> str:
    value = value.strip()
    if not value.startswith(MANAGEMENT_SECRET_PREFIX):
        raise ValueError(f"must start with {MANAGEMENT_SECRET_PREFIX!r}")
    if len(value) < MANAGEMENT_SECRET_MIN_LENGTH:
        raise ValueError(
            f"must be at least {MANAGEMENT_SECRET_MIN_LENGTH} characters long "
            f"(try: {MANAGEMENT_SECRET_PREFIX}$(openssl rand -base64 32))"
        )
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return chosen

    return parse


def _metrics_token(value: str) -> str:
    value = value.strip()
    if len(value) < METRICS_TOKEN_MIN_LENGTH:
        raise ValueError(f"must be at least {METRICS_TOKEN_MIN_LENGTH} characters long "
                         "(try: openssl rand -hex 32)")
    return value


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


_SAME = object()  # Variable.local_default when `python -m app` uses the production default


@dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str], Any]
    default: Any
    group: str  # a key of GROUPS
    secret: bool
    help: str
    local_default: Any = _SAME  # the default of `python -m app` (`make run`), if it differs


GROUPS = {
    "core": "Core",
    "server": "Server (gunicorn; `make run` passes its own defaults on to it)",
    "cloud": "Cloud features (set by the Pulumi program)",
    "tuning": "Tuning and tests",
}


VARIABLES: tuple[Variable, ...] = (
    Variable("DATABASE_URL", "database_url", _database_url, None, "core", True,
             "`postgresql://user:password@host:5432/db` (query options such as `?sslmode=require` or "
             "`?options=-c%20search_path%3Dx` pass through to the driver), or `sqlite:///path/to/file.db`; "
             "unset: the SQLite file `differential.db` under `DIFFERENTIAL_DATA_DIR`"),
    Variable("MANAGEMENT_SECRET", "management_secret", _management_secret, None, "core", True,
             "credential of the management API; starts with `sk_management_`, at least 32 characters. "
             "Unset: the management API answers 503 (`make run` generates one into the data folder)"),
    Variable("DIFFERENTIAL_DATA_DIR", "data_dir", _text, ".differential", "core", False,
             "folder (mode 0700) of the generated management secret and of the SQLite database "
             "(used when `DATABASE_URL` is unset)"),
    Variable("DIFFERENTIAL_REQUIRE_DATABASE_URL", "require_database_url", _truthy, False, "core", False,
             "refuse to start without `DATABASE_URL` (the Docker image sets it, so that no deploy serves "
             f"from a throwaway SQLite file); to keep SQLite there anyway, set `DATABASE_URL={SQLITE_ESCAPE_HATCH}` "
             "on a volume"),
    Variable("PUBLIC_URL", "public_url", _text, "", "core", False,
             "the URL where services reach this control-plane, as the console's connect snippet shows it "
             "(unset: the address the browser used); cloud deployments will pass it to their functions"),
    Variable("SECRETS_KEY", "secrets_key", sealing.parse_keys, None, "core", True,
             "keys that seal cluster API secrets in the database, newest first, comma-separated; each 32 bytes "
             "in base64 (`openssl rand -base64 32`); required with `DIFFERENTIAL_REQUIRE_DATABASE_URL`. "
             f"Unset: the key file `{sealing.KEY_FILE}` in `DIFFERENTIAL_DATA_DIR` (made on first run)"),
    Variable("METRICS_TOKEN", "metrics_token", _metrics_token, None, "core", True,
             "bearer token of `GET /metrics` (Prometheus), at least 16 characters; the management secret "
             "works there too. Neither set: `GET /metrics` answers 503"),
    Variable("CONSOLE_SESSION_HOURS", "console_session_hours", _positive_float, 12.0, "core", False,
             "how long a sign-in to the console (`/console`, with the management secret) lasts; changing "
             "`MANAGEMENT_SECRET` signs every session out"),
    # Server: read by gunicorn.conf.py (and by `python -m app`, which passes them on).
    Variable("BIND_HOST", "bind_host", _text, "0.0.0.0", "server", False,
             "address gunicorn listens on", local_default="127.0.0.1"),
    Variable("PORT", "port", _port, 4000, "server", False, "HTTP port"),
    Variable("WEB_CONCURRENCY", "web_concurrency", _positive_int, 2, "server", False,
             "gunicorn worker processes", local_default=1),
    Variable("GUNICORN_THREADS", "gunicorn_threads", _positive_int, 24, "server", False,
             "threads per worker, started as requests need them; a long poll that waits holds none (it is "
             "parked in the worker's event loop) and no database connection. On two cores more threads only "
             "wait for the GIL and the database pool: with 256, a thousand tenants' calls took seconds "
             "instead of tens of milliseconds (bench/README.md, \"Many tenants\"). Raise it when gunicorn "
             "itself ends TLS, where polls wait in threads"),
    Variable("KEEPALIVE_SECONDS", "keepalive_seconds", _positive_int, 600, "server", False,
             "how long gunicorn keeps an idle connection open; keep it longer than your clients do "
             "(see `gunicorn.conf.py`)"),
    Variable("ACCESS_LOG", "access_log", _text, "", "server", False,
             "where gunicorn writes its own access line per request (besides the app's, `REQUEST_LOG`), ending "
             "with the request id: a file, or `-` for the terminal; unset: none (the app's line says as much)"),
    Variable("LOG_LEVEL", "log_level", _log_level, "INFO", "server", False,
             "DEBUG, INFO, WARNING or ERROR (the app's log and gunicorn's)"),
    Variable("SQL_DEBUG", "sql_debug", _truthy, False, "server", False,
             "log every SQL statement with its parameters (job arguments and results included; secrets "
             "redacted, see Logs); `LOG_LEVEL=DEBUG` alone does not"),
    Variable("REQUEST_READ_SECONDS", "request_read_seconds", _positive_float, 15.0, "server", False,
             "deadline for receiving a request's head and body, from its first byte; past it the client gets "
             "408 and the connection closes (a long poll's wait is not cut: it reads nothing meanwhile)"),
    Variable("PENDING_CONNECTION_SECONDS", "pending_connection_seconds", _positive_float, 600.0, "server", False,
             "how long a new connection may stay open without starting a request, unless the worker is at "
             "its connection limit, which closes the oldest such first (a busy published SDK may write its "
             "first request a minute after connecting: see app/server/worker.py)"),
    Variable("LOG_FORMAT", "log_format", _choice("text", "json"), "text", "server", False,
             "`text`, or `json`: every log line (the app's, gunicorn's) one JSON object (see Logs)"),
    Variable("REQUEST_LOG", "request_log", _choice("all", "errors", "off"), "all", "server", False,
             "the app's line per request: `all`, `errors` (status 400 and up only) or `off`; the "
             "`X-Request-Id` header is answered either way"),
    # Cloud features: each switches on when its variables are set.
    Variable("ASSET_UPLOAD_BUCKET", "asset_upload_bucket", _text, "", "cloud", False,
             "S3 bucket of service bundles and client libraries (uploads go to it through presigned URLs); "
             "unset: the folder `assets` under `DIFFERENTIAL_DATA_DIR`, whose uploads come to this control-plane"),
    Variable("DEPLOYMENT_TEMPLATE_BUCKET", "deployment_template_bucket", _text, "", "cloud", False,
             "S3 bucket holding the deployment-templates/ files: each release creates or updates its service's "
             "stack from `lambda-cfn.yaml` there"),
    Variable("DEPLOYMENT_SNS_TOPIC", "deployment_sns_topic", _text, "", "cloud", False,
             "ARN of the SNS topic that carries CloudFormation stack events (`POST /events/sns` confirms "
             "its subscription); unset: that route answers 501"),
    Variable("DEPLOYMENT_DEFAULT_SERVICE_ROLE", "deployment_default_service_role", _text, "", "cloud", False,
             "ARN of the role CloudFormation assumes to create, update and delete service stacks (RoleARN)"),
    Variable("DEPLOYMENT_RUNTIME_ROLE", "deployment_runtime_role", _text, "", "cloud", False,
             "ARN of the role that deployed service functions (Lambda) run as (the stacks' ExecutionRole)"),
    Variable("AWS_ACCESS_KEY_ID", "aws_access_key_id", _text, "", "cloud", True,
             "access key of the control-plane user (unset: boto3's usual credential chain)"),
    Variable("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", _text, "", "cloud", True,
             "secret of that access key"),
    Variable("AWS_REGION", "aws_region", _text, "us-east-1", "cloud", False, "AWS region of the resources above"),
    Variable("AWS_ENDPOINT_URL", "aws_endpoint_url", _text, "", "tuning", False,
             "override of the AWS endpoint (tests point it at a local moto server)"),
    Variable("SNS_VERIFY_SIGNATURES", "sns_verify_signatures", _truthy, True, "tuning", False,
             "check SNS message signatures (turn off only for a local AWS stand-in such as moto)"),
    # Tuning.
    Variable("MACHINE_TIMEOUT_SECONDS", "machine_timeout_seconds", _positive_float, 90.0, "tuning", False,
             "a machine silent this long is stalled and its running jobs are retried"),
    Variable("SWEEP_INTERVAL_SECONDS", "sweep_interval_seconds", _positive_float, 2.0, "tuning", False,
             "how often the sweeper looks for stalled jobs"),
    Variable("RETENTION_DAYS", "retention_days", _positive_float, 7.0, "tuning", False,
             "finished jobs and activity events older than this are pruned, and so are machines and services "
             "silent for as long (they come back with their next request)"),
    Variable("MAX_BODY_BYTES", "max_body_bytes", _positive_int, 8 * 1024 * 1024, "tuning", False,
             "largest request body accepted (larger answers 413)"),
    Variable("DATABASE_POOL_SIZE", "database_pool_size", _positive_int, 16, "tuning", False,
             "connections per process in the PostgreSQL pool"),
    Variable("SWEEPER_ENABLED", "sweeper_enabled", _truthy, True, "tuning", False,
             "run the sweeper in this process (exactly one process sweeps at a time anyway)"),
    Variable("MAX_ARGS_BYTES", "max_args_bytes", _positive_int, 4 * 1024 * 1024, "tuning", False,
             "largest `targetArgs` of a call (larger answers 413 naming the field)"),
    Variable("MAX_RESULT_BYTES", "max_result_bytes", _positive_int, 4 * 1024 * 1024, "tuning", False,
             "largest result a worker may report; a larger one ends the call as a rejection that names "
             "this limit (the worker gets its 204)"),
    Variable("MAX_STATUS_RESULT_BYTES", "max_status_result_bytes", _positive_int, 16 * 1024 * 1024, "tuning",
             False, "result bytes one status answer carries at most; finished jobs past it are left out, "
             "and the SDKs ask for them again"),
    Variable("BODY_BUDGET_BYTES", "body_budget_bytes", _positive_int, 32 * 1024 * 1024, "tuning", False,
             "bytes of big request bodies (64 KiB and up) read or held at once per process; past it a "
             "request waits up to 2 s, then answers 503 with Retry-After"),
    Variable("EVENT_BUFFER_ROWS", "event_buffer_rows", _positive_int, 100_000, "tuning", False,
             "activity events a process holds between writes (every half second); past it they are dropped, and logged"),
    Variable("EVENT_BUFFER_CLUSTER_ROWS", "event_buffer_cluster_rows", _positive_int, 10_000, "tuning", False,
             "the most of that buffer one cluster may hold, so that its flood drops its own events, not another's"),
    Variable("LONG_POLLS_PER_CLUSTER", "long_polls_per_cluster", _positive_int, 64, "tuning", False,
             "long polls of one cluster that wait their ttl at once, per process; past them a poll answers "
             "with what it has after a short pause (`LONG_POLL_PAUSE_SECONDS`), or at once"),
    Variable("LONG_POLLS_PER_MACHINE", "long_polls_per_machine", _positive_int, 16, "tuning", False,
             "the same, per machine (`x-machine-id`) of a cluster"),
    Variable("LONG_POLL_THREAD_RESERVE", "long_poll_thread_reserve", _positive_int, 32, "tuning", False,
             "threads per process that long polls never take, kept for `/live` and short requests, where polls "
             "wait in threads (behind TLS ended by gunicorn itself; there they take at most `GUNICORN_THREADS` "
             "minus this and the 65 of big-body admission, and at least half)"),
    Variable("LONG_POLL_PAUSE_SECONDS", "long_poll_pause_seconds", _positive_float, 1.0, "tuning", False,
             "longest wait of a poll past its budget (a few per cluster at once), so that a client "
             "re-sending it at once does not loop"),
    Variable("BIG_POLLS_PER_CLUSTER", "big_polls_per_cluster", _positive_int, 8, "tuning", False,
             "batch status polls with a big body (64 KiB and up) parked at once per cluster and process; "
             "past them one answers `[]` at once (the SDKs ask again)"),
    Variable("METRICS_RETENTION_DAYS", "metrics_retention_days", _positive_float, 30.0, "tuning", False,
             "metric rollups (per function and minute, what GET /clusters/:id/metrics reads) older than this are pruned"),
    Variable("DEPLOYMENT_WAKE_INTERVAL_SECONDS", "deployment_wake_interval_seconds", _positive_float, 10.0, "tuning",
             False, "the maintenance leader invokes a deployed function at most this often while its service has "
             "waiting calls and no machine of the deployment polls"),
    Variable("DEPLOYMENT_MAX_WAKEUPS", "deployment_max_wakeups", _positive_int, 10, "tuning", False,
             "a deployment whose function was woken this many times without a machine of it ever polling fails "
             "(deploymentStalled)"),
    Variable("DEPLOYMENT_UPLOAD_EXPIRY_MINUTES", "deployment_upload_expiry_minutes", _positive_float, 60.0, "tuning",
             False, "a deployment not released this long after it was created fails (deploymentExpired)"),
)

CLOUD_VARIABLES = tuple(v.name for v in VARIABLES if v.group == "cloud")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    management_secret: str | None
    data_dir: str
    require_database_url: bool
    public_url: str
    secrets_key: tuple[str, ...] | None
    metrics_token: str | None
    console_session_hours: float
    bind_host: str
    port: int
    web_concurrency: int
    gunicorn_threads: int
    keepalive_seconds: int
    access_log: str
    log_level: str
    sql_debug: bool
    request_read_seconds: float
    pending_connection_seconds: float
    log_format: str
    request_log: str
    asset_upload_bucket: str
    deployment_template_bucket: str
    deployment_sns_topic: str
    deployment_default_service_role: str
    deployment_runtime_role: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_region: str
    aws_endpoint_url: str
    sns_verify_signatures: bool
    machine_timeout_seconds: float
    sweep_interval_seconds: float
    retention_days: float
    max_body_bytes: int
    database_pool_size: int
    sweeper_enabled: bool
    max_args_bytes: int
    max_result_bytes: int
    max_status_result_bytes: int
    body_budget_bytes: int
    event_buffer_rows: int
    event_buffer_cluster_rows: int
    long_polls_per_cluster: int
    long_polls_per_machine: int
    long_poll_thread_reserve: int
    long_poll_pause_seconds: float
    big_polls_per_cluster: int
    metrics_retention_days: float
    deployment_wake_interval_seconds: float
    deployment_max_wakeups: int
    deployment_upload_expiry_minutes: float

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url) and not self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> str:
        if self.database_url and self.database_url.startswith("sqlite"):
            return urlparse(self.database_url).path or ":memory:"
        return os.path.join(self.data_dir, "differential.db")

    @property
    def assets_enabled(self) -> bool:
        return bool(self.asset_upload_bucket)

    @property
    def deployments_enabled(self) -> bool:
        return bool(self.deployment_template_bucket and self.deployment_sns_topic and self.asset_upload_bucket)


def load(environ: Mapping[str, str] | None = None, *, local: bool = False, **overrides: Any) -> Settings:
    """Parse every variable; raise SettingsError naming each bad one.

    `local=True` applies the defaults of `python -m app` (`Variable.local_default`).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in VARIABLES:
        raw = environ.get(var.name)
        if raw is None or raw.strip() == "":
            local_default = local and var.local_default is not _SAME
            values[var.field] = var.local_default if local_default else var.default
            continue
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if var.secret else repr(raw)
            problems.append(f"{var.name} {exc} (got {shown})")
    values.update(overrides)
    if values.get("require_database_url") and not values.get("database_url"):
        problems.append(
            "DATABASE_URL is required here (DIFFERENTIAL_REQUIRE_DATABASE_URL is set, as in the Docker image): "
            "set DATABASE_URL=postgresql://user:password@host:5432/dbname, or, to really keep the data in "
            f"an SQLite file on a volume mounted there, DATABASE_URL={SQLITE_ESCAPE_HATCH}"
        )
    if values.get("require_database_url") and not values.get("secrets_key"):
        problems.append(
            "SECRETS_KEY is required here (DIFFERENTIAL_REQUIRE_DATABASE_URL is set, as in the Docker image): "
            "it seals the cluster secrets in the database; make one with: openssl rand -base64 32"
        )
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    return Settings(**values)


def load_or_exit(environ: Mapping[str, str] | None = None, *, local: bool = False) -> Settings:
    """For process entry points: print the problem and exit non-zero instead of a traceback."""
    try:
        return load(environ, local=local)
    except SettingsError as exc:
        print(f"differential: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _shown_default(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table() -> str:
    """The README's configuration table, one section per group (`scripts/config-table` writes it)."""
    lines: list[str] = []
    for group, title in GROUPS.items():
        lines += [f"**{title}**", "", "| variable | default | meaning |", "|---|---|---|"]
        for var in VARIABLES:
            if var.group != group:
                continue
            default = _shown_default(var.default)
            if var.local_default is not _SAME:
                default += f"; `make run`: {_shown_default(var.local_default)}"
            lines.append(f"| `{var.name}` | {default} | {var.help.replace('|', '&#124;')} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
