"""The stack's settings, read once from Pulumi config and validated (Pulumi.<stack>.yaml).

A bad setting raises `pulumi.RunError`, which `pulumi up` prints as one clean message instead of
a Python traceback (the stack-level twin of app/settings.py's `load_or_exit`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi


@dataclass(frozen=True)
class StackConfig:
    region: str
    name_prefix: str
    database_url: pulumi.Output[str]
    older_secrets_keys: Optional[pulumi.Output[str]]
    deploy_app: bool
    fly_app: Optional[str]
    fly_org: str
    fly_api_token: Optional[pulumi.Output[str]]
    control_plane_url: str
    subscribe_events: bool
    bundle_retention_days: int
    force_destroy_buckets: bool


def load() -> StackConfig:
    config = pulumi.Config()
    region = pulumi.Config("aws").require("region")
    name_prefix = config.get("namePrefix") or f"differential-{pulumi.get_stack()}"
    deploy_app = config.get_bool("deployApp")
    deploy_app = True if deploy_app is None else deploy_app

    fly_app = config.get("flyApp")
    if deploy_app:
        if not fly_app:
            raise pulumi.RunError("differential:flyApp is required while differential:deployApp is true")
        control_plane_url = f"https://{fly_app}.fly.dev"
    else:
        control_plane_url = config.get("controlPlaneUrl") or ""
        if not control_plane_url:
            raise pulumi.RunError(
                "differential:controlPlaneUrl is required when differential:deployApp is false "
                "(the https URL where your control-plane runs)"
            )
    control_plane_url = control_plane_url.rstrip("/")
    if not control_plane_url.startswith("https://"):
        raise pulumi.RunError("differential:controlPlaneUrl must be an https:// URL (SNS delivers over https)")

    retention = config.get_int("bundleRetentionDays")
    retention = 90 if retention is None else retention
    if retention < 1:
        raise pulumi.RunError("differential:bundleRetentionDays must be at least 1")

    subscribe = config.get_bool("subscribeEvents")
    return StackConfig(
        region=region,
        name_prefix=name_prefix,
        # Any PostgreSQL provider: the URL is only ever handled as a secret.
        database_url=config.require_secret("databaseUrl"),
        # Keys that sealed cluster secrets before the generated one was replaced (rotation, README).
        older_secrets_keys=config.get_secret("olderSecretsKeys"),
        deploy_app=deploy_app,
        fly_app=fly_app,
        fly_org=config.get("flyOrg") or "personal",
        fly_api_token=config.get_secret("flyApiToken"),
        control_plane_url=control_plane_url,
        subscribe_events=True if subscribe is None else subscribe,
        bundle_retention_days=retention,
        force_destroy_buckets=bool(config.get_bool("forceDestroyBuckets")),
    )
