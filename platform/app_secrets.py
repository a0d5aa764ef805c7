"""Secrets: the management secret, generated once and kept (encrypted) in the stack's state, and
the database URL from secret stack config. (Not `secrets.py`: that would shadow the stdlib.)"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

# The control-plane's rule (app/settings.py): this prefix and at least 32 characters in all.
MANAGEMENT_SECRET_PREFIX = "sk_management_"
RANDOM_LENGTH = 48  # 48 alphanumerics: about 285 bits, 62 characters with the prefix


@dataclass(frozen=True)
class SecretsArgs:
    database_url: pulumi.Input[str]


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
        self.database_url: pulumi.Output[str] = pulumi.Output.secret(args.database_url)
        self.register_outputs({"managementSecret": self.management_secret, "databaseUrl": self.database_url})
