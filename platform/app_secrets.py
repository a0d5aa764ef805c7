"""Secrets: the management secret, the Prometheus scrape token and the key that seals cluster secrets in the database (app/sealing.py),
generated once and kept (encrypted) in the stack's state, and the database URL from secret stack
config. (Not `secrets.py`: that would shadow the stdlib.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_random as random

# The control-plane's rule (app/settings.py): this prefix and at least 32 characters in all.
MANAGEMENT_SECRET_PREFIX = "sk_management_"
RANDOM_LENGTH = 48  # 48 alphanumerics: about 285 bits, 62 characters with the prefix
SECRETS_KEY_BYTES = 32  # a Fernet key (app/sealing.py)


@dataclass(frozen=True)
class SecretsArgs:
    database_url: pulumi.Input[str]
    older_secrets_keys: Optional[pulumi.Input[str]] = None  # comma-separated, newest first


class Secrets(pulumi.ComponentResource):
    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("differential:platform:Secrets", name, None, opts)
        # RandomPassword keeps its result in state: generated on the first `pulumi up`, the same
        # on every later one (replace it with `pulumi up --replace <urn>` to rotate).
        self.management_random = random.RandomPassword(
            "management-secret",
            length=RANDOM_LENGTH,
            special=False,  # safe in shells, headers and `fly secrets import`
            min_lower=1,
            min_upper=1,
            min_numeric=1,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.management_secret: pulumi.Output[str] = pulumi.Output.secret(
            self.management_random.result.apply(lambda value: MANAGEMENT_SECRET_PREFIX + value)
        )
        # SECRETS_KEY: 32 random bytes in base64, as the app reads it, then the older keys. To rotate:
        # put the current key in `differential:olderSecretsKeys`, then `pulumi up --replace` this
        # resource; the app seals every row with the new key at start-up, and the old can go (README).
        self.secrets_key_bytes = random.RandomBytes(
            "secrets-key",
            length=SECRETS_KEY_BYTES,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.secrets_key: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(self.secrets_key_bytes.base64, args.older_secrets_keys or "").apply(
                lambda keys: ",".join(k for k in keys if k))
        )
        # METRICS_TOKEN: what Prometheus sends to GET /metrics, so scrapers never hold the management secret.
        self.metrics_random = random.RandomPassword(
            "metrics-token",
            length=RANDOM_LENGTH,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.metrics_token: pulumi.Output[str] = pulumi.Output.secret(self.metrics_random.result)
        self.database_url: pulumi.Output[str] = pulumi.Output.secret(args.database_url)
        self.register_outputs({"managementSecret": self.management_secret, "secretsKey": self.secrets_key,
                               "metricsToken": self.metrics_token, "databaseUrl": self.database_url})
