"""Harness: run the real Pulumi program (platform/__main__.py) under Pulumi's mocks: no CLI, no plugins.

`run_program(config)` executes the program as the Pulumi language host does (runpy on the
platform/ folder, which puts that folder on sys.path) for a fresh stack, and returns every
registered resource with its inputs, parent and dependencies, plus the resolved stack outputs.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

pulumi = pytest.importorskip("pulumi")
from pulumi.runtime import mocks as pulumi_mocks  # noqa: E402
from pulumi.runtime import rpc  # noqa: E402
from pulumi.runtime import settings as pulumi_settings  # noqa: E402
from pulumi.runtime.stack import run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _sync_await  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DIR = REPO_ROOT / "platform"
TEMPLATES_DIR = REPO_ROOT / "deployment-templates"
PROJECT = "differential"
ACCOUNT = "123456789012"
REGION = "eu-west-1"

# How Pulumi marks a secret value on the wire (sdk/python/lib/pulumi/runtime/rpc.py).
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def unwrap(value: Any) -> Any:
    """The plain value of a mock input, secret markers removed (recursively)."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class PlatformMocks(pulumi_mocks.Mocks):
    """Gives each resource the outputs its provider would compute (names, ARNs, keys)."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        state = dict(args.inputs)
        inputs = unwrap(args.inputs)
        resource_id = f"{args.name}-id"
        typ = args.typ
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{inputs['bucketPrefix']}20261128000000000000000001"
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", id=bucket)
            resource_id = bucket
        elif typ == "aws:sns/topic:Topic":
            state["arn"] = f"arn:aws:sns:{REGION}:{ACCOUNT}:{inputs['name']}"
            resource_id = state["arn"]
        elif typ == "aws:sns/topicSubscription:TopicSubscription":
            state["arn"] = f"{inputs['topic']}:0a1b2c3d-subscription"
        elif typ in ("aws:iam/role:Role", "aws:iam/user:User"):
            kind = "role" if typ.endswith("Role") else "user"
            state["arn"] = f"arn:aws:iam::{ACCOUNT}:{kind}/{inputs['name']}"
            resource_id = inputs["name"]
        elif typ == "aws:iam/accessKey:AccessKey":
            resource_id = "AKIAMOCKACCESSKEY001"
            state["secret"] = "mock/SecretAccessKey/0123456789abcdefghijklmnopq"
        elif typ == "random:index/randomPassword:RandomPassword":
            alphabet = "aB3dE5gH7jK9mN1pQ2sT4vW6yZ8"
            state["result"] = (alphabet * 10)[: int(inputs["length"])]
        elif typ == "random:index/randomBytes:RandomBytes":
            raw = bytes(range(7, 7 + int(inputs["length"])))
            state.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
        elif typ == "command:local:Command":
            state.update(stdout="", stderr="")
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/operator",
                "userId": "AIDAMOCK",
                "id": ACCOUNT,
            }
        raise AssertionError(f"unexpected invoke {args.token}")


@dataclass
class Registered:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict  # raw: secret values stay wrapped (see is_secret / unwrap)
    dependencies: set[str]
    property_dependencies: dict[str, set[str]]

    @property
    def plain(self) -> dict:
        return unwrap(self.inputs)


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []
        self.outputs_registered: set[str] = set()

    def RegisterResourceOutputs(self, request):
        self.outputs_registered.add(request.urn)
        return super().RegisterResourceOutputs(request)

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    dependencies=set(request.dependencies),
                    property_dependencies={k: set(v.urns) for k, v in request.propertyDependencies.items()},
                )
            )
        return response


@dataclass
class ProgramRun:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    outputs_registered: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: Optional[str] = None) -> Registered:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


_stacks = itertools.count(1)


@contextlib.contextmanager
def platform_on_path():
    """platform/'s modules importable (as Pulumi runs them) for the duration, then forgotten, so
    that each run imports them afresh and their plain names (storage, identity...) leak nowhere."""
    saved_path = list(sys.path)
    sys.path.insert(0, str(PLATFORM_DIR))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if file and Path(file).resolve().parent == PLATFORM_DIR.resolve():
                del sys.modules[name]

BASE_CONFIG = {
    "aws:region": REGION,
    "differential:flyApp": "differential-test-cp",
    "differential:databaseUrl": "postgresql://differential:pg-password-123@db.internal:5432/differential",
}


def run_program(overrides: Optional[dict[str, str]] = None, remove: tuple[str, ...] = ()) -> ProgramRun:
    config = {**BASE_CONFIG, **(overrides or {})}
    for key in remove:
        config.pop(key, None)
    stack = f"test{next(_stacks)}"
    mocks = PlatformMocks()
    monitor = RecordingMonitor(mocks)
    pulumi_settings.ROOT.set(None)  # a fresh root Stack for this run
    # Pulumi's mocks register resources on the thread's current event loop; a test that ran
    # `asyncio.run()` before in this process (the order differs in each pytest-xdist worker) left
    # none behind, so give this run its own.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, ["differential:databaseUrl"])

    def program():
        runpy.run_path(str(PLATFORM_DIR), run_name="__main__")

    with platform_on_path():
        _sync_await(run_pulumi_func(program))

    root = pulumi_settings.get_root_resource()
    outputs: dict[str, Any] = {}
    secret_outputs: set[str] = set()
    for name, value in root.outputs.items():
        out = pulumi.Output.from_input(value)
        outputs[name] = _sync_await(out.future())
        if _sync_await(out.is_secret()):
            secret_outputs.add(name)
    return ProgramRun(monitor.registered, outputs, secret_outputs, set(monitor.outputs_registered))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
