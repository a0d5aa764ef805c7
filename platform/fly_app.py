"""The control-plane app on fly.io, deployed from this repository's Dockerfile and fly.toml.

Why pulumi-command running `fly` (flyctl) rather than a fly.io provider: the fly providers for
Pulumi are 0.0.x single-maintainer packages that do not build images, while `fly deploy` is the documented path that already reads fly.toml (checks,
concurrency, VM size) and builds the Dockerfile on fly's remote builder, so no local Docker is
needed. The cost is that `fly` must be installed and logged in (or FLY_API_TOKEN set) where
`pulumi up` runs.

Two commands:
  * `fly-app` creates the app (idempotently) and destroys it on `pulumi destroy`;
  * `fly-release` stages every setting as a fly secret (read from stdin, never on a command line
    or in the environment of other processes) and deploys. Its triggers are a hash of the app's
    sources and a hash of the settings, so a code change or a secret change replaces it, which
    runs the deploy again; it has no delete step, so a replacement never removes the app.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_command as command

# What the image is built from (the Dockerfile's COPY sources and the deploy configuration).
DEFAULT_SOURCES: tuple[str, ...] = (
    "Dockerfile",
    ".dockerignore",
    "fly.toml",
    "gunicorn.conf.py",
    "requirements/app.txt",
    "app",
)

CREATE_APP = """set -eu
err="$(mktemp)"
if fly apps create "$FLY_APP" --org "$FLY_ORG" </dev/null 2>"$err"; then
  echo "created fly app $FLY_APP"
elif grep -qi "already" "$err"; then
  echo "fly app $FLY_APP exists"
else
  cat "$err" >&2; rm -f "$err"; exit 1
fi
rm -f "$err"
"""

# stdin carries NAME=VALUE lines (secret); only `fly secrets import` reads it.
DEPLOY_APP = """set -eu
fly secrets import --app "$FLY_APP" --stage
fly deploy --app "$FLY_APP" --config fly.toml --dockerfile Dockerfile --remote-only --yes </dev/null
"""

DESTROY_APP = """fly apps destroy "$FLY_APP" --yes </dev/null"""


def source_hash(repo_root: Path, sources: Sequence[str] = DEFAULT_SOURCES) -> str:
    """sha256 over the names and contents of every file the image is built from."""
    digest = hashlib.sha256()
    for source in sources:
        path = repo_root / source
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or not file.exists():
                continue
            digest.update(file.relative_to(repo_root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def secrets_dotenv(settings: Mapping[str, str]) -> str:
    """The NAME=VALUE lines that `fly secrets import` reads."""
    lines = []
    for name in sorted(settings):
        value = settings[name]
        if "\n" in value or "\r" in value:
            raise ValueError(f"the value of {name} spans lines; fly secrets import cannot take it")
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ControlPlaneAppArgs:
    app_name: str
    org: str
    repo_root: Path
    # Every app secret, under the exact names that app/settings.py reads.
    settings: Mapping[str, pulumi.Input[str]]
    fly_api_token: Optional[pulumi.Input[str]] = None


class ControlPlaneApp(pulumi.ComponentResource):
    def __init__(self, name: str, args: ControlPlaneAppArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("differential:platform:ControlPlaneApp", name, None, opts)
        environment: dict[str, pulumi.Input[str]] = {"FLY_APP": args.app_name, "FLY_ORG": args.org}
        if args.fly_api_token is not None:
            environment["FLY_API_TOKEN"] = pulumi.Output.secret(args.fly_api_token)
        repo_root = str(args.repo_root)

        self.app = command.local.Command(
            "fly-app",
            create=CREATE_APP,
            delete=DESTROY_APP,
            environment=environment,
            dir=repo_root,
            # Renaming the app (or moving it to another org) replaces it.
            triggers=[args.app_name, args.org],
            opts=pulumi.ResourceOptions(parent=self),
        )

        names = sorted(args.settings)
        values = pulumi.Output.all(*[args.settings[n] for n in names])
        dotenv = pulumi.Output.secret(values.apply(lambda vs: secrets_dotenv(dict(zip(names, vs, strict=True)))))
        settings_hash = pulumi.Output.secret(dotenv.apply(lambda text: hashlib.sha256(text.encode()).hexdigest()))
        self.source_hash = source_hash(args.repo_root)

        self.release = command.local.Command(
            "fly-release",
            create=DEPLOY_APP,
            stdin=dotenv,
            environment=environment,
            dir=repo_root,
            triggers=[self.source_hash, settings_hash],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.app]),
        )

        url = f"https://{args.app_name}.fly.dev"
        # Derived from the release, so whatever uses the endpoint waits for the deploy.
        self.endpoint: pulumi.Output[str] = self.release.id.apply(lambda _: url)
        self.app_name = args.app_name
        self.register_outputs({"appName": self.app_name, "endpoint": self.endpoint, "sourceHash": self.source_hash})
