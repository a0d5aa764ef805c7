"""Every environment variable the control-plane reads, parsed and validated once.

`VARIABLES` is the single list of names: the app reads them through `load()`, and the Pulumi
program's tests read the same list to prove that every cloud setting is injected.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

MANAGEMENT_SECRET_PREFIX = "sk_management_"
MANAGEMENT_SECRET_MIN_LENGTH = 32


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it and says what is expected."""


def _text(value: str) -> str:
    return value.strip()


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/true/yes/on or 0/false/no/off")


def _positive_int(value: str) -> int:
    number = int(value.strip())
    if number <= 0:
        raise ValueError("expected a whole number greater than 0")
    return number


def _positive_float(value: str) -> float:
    number = float(value.strip())
    if not number > 0:
        raise ValueError("expected a number greater than 0")
    return number


def _database_url(value: str) -> str:
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("postgres", "postgresql", "sqlite"):
        raise ValueError("expected postgresql://user:password@host:port/dbname or sqlite:///path/to/file.db")
    if parsed.scheme != "sqlite" and not parsed.path.strip("/"):
        raise ValueError("the URL names no database (add /dbname at the end)")
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


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


@dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str], Any]
    default: Any
    group: str  # "core", "cloud" or "tuning"
    secret: bool
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable("DATABASE_URL", "database_url", _database_url, None, "core", True,
             "PostgreSQL URL; unset means the embedded SQLite file under DIFFERENTIAL_DATA_DIR"),
    Variable("MANAGEMENT_SECRET", "management_secret", _management_secret, None, "core", True,
             "credential of the management API; starts with sk_management_, at least 32 characters"),
    Variable("DIFFERENTIAL_DATA_DIR", "data_dir", _text, ".differential", "core", False,
             "folder of the embedded SQLite database (used when DATABASE_URL is unset)"),
    Variable("PUBLIC_URL", "public_url", _text, "", "core", False,
             "the URL where services reach this control-plane (given to cloud deployments)"),
    Variable("LOG_LEVEL", "log_level", _log_level, "INFO", "core", False, "DEBUG, INFO, WARNING or ERROR"),
    # Cloud features: each switches on when its variables are set.
    Variable("ASSET_UPLOAD_BUCKET", "asset_upload_bucket", _text, "", "cloud", False,
             "S3 bucket for service bundles and client libraries"),
    Variable("DEPLOYMENT_TEMPLATE_BUCKET", "deployment_template_bucket", _text, "", "cloud", False,
             "S3 bucket holding the deployment-templates/ files"),
    Variable("DEPLOYMENT_SNS_TOPIC", "deployment_sns_topic", _text, "", "cloud", False,
             "ARN of the SNS topic that carries CloudFormation stack events"),
    Variable("DEPLOYMENT_DEFAULT_SERVICE_ROLE", "deployment_default_service_role", _text, "", "cloud", False,
             "ARN of the role CloudFormation assumes to create service stacks"),
    Variable("DEPLOYMENT_RUNTIME_ROLE", "deployment_runtime_role", _text, "", "cloud", False,
             "ARN of the role that deployed service functions (Lambda) run as"),
    Variable("AWS_ACCESS_KEY_ID", "aws_access_key_id", _text, "", "cloud", True, "access key of the control-plane user"),
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
             "finished jobs and activity events older than this are pruned"),
    Variable("MAX_BODY_BYTES", "max_body_bytes", _positive_int, 8 * 1024 * 1024, "tuning", False,
             "largest request body accepted (larger answers 413)"),
    Variable("DATABASE_POOL_SIZE", "database_pool_size", _positive_int, 16, "tuning", False,
             "connections per process in the PostgreSQL pool"),
    Variable("SWEEPER_ENABLED", "sweeper_enabled", _truthy, True, "tuning", False,
             "run the sweeper in this process (exactly one process sweeps at a time anyway)"),
)

CLOUD_VARIABLES = tuple(v.name for v in VARIABLES if v.group == "cloud")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    management_secret: str | None
    data_dir: str
    public_url: str
    log_level: str
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


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Parse every variable; raise SettingsError naming each bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in VARIABLES:
        raw = environ.get(var.name)
        if raw is None or raw.strip() == "":
            values[var.field] = var.default
            continue
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if var.secret else repr(raw)
            problems.append(f"{var.name}={shown}: {exc}")
    if problems:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
    values.update(overrides)
    return Settings(**values)


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For process entry points: print the problem and exit non-zero instead of a traceback."""
    try:
        return load(environ)
    except SettingsError as exc:
        print(f"differential: {exc}", file=sys.stderr)
        raise SystemExit(2)
