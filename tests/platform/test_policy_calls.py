"""The control-plane user's policies grant exactly what the control-plane calls.

The calls are read from the app's code (every boto3 operation called in app/cloud/ and
app/api/events.py, and the operation each presigned URL is for) and must equal the inventory in
platform/policies.py, whose actions must equal the actions the two user policies grant (plus the
few AWS checks on our behalf, policies.IMPLIED)."""
from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

from platform_harness import platform_on_path

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("s3", "cloudformation", "lambda", "logs", "sns")
USER_POLICY = "aws:iam/userPolicy:UserPolicy"


def _operations() -> dict[str, set[str]]:
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    return {svc: {xform_name(op) for op in session.get_service_model(svc).operation_names} for svc in SERVICES}


def _called() -> set[tuple[str, str]]:
    operations = _operations()
    files = sorted((REPO / "app" / "cloud").glob("*.py")) + [REPO / "app" / "api" / "events.py"]
    found = set()
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name == "generate_presigned_url" and node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
            found.update((svc, name) for svc, ops in operations.items() if name in ops)
    return found


def test_every_boto3_call_is_in_the_inventory_and_every_entry_is_called():
    with platform_on_path():
        policies = importlib.import_module("policies")
    inventory = set(policies.CONTROL_PLANE_CALLS)
    called = _called()
    names = {name for _, name in called}
    assert {name for _, name in inventory} == names, "a boto3 call of app/ is missing from policies.CONTROL_PLANE_CALLS"
    assert inventory <= called


def test_the_user_policies_grant_exactly_the_inventory(full_run):
    with platform_on_path():
        policies = importlib.import_module("policies")
    granted = set()
    for resource in full_run.of_type(USER_POLICY):
        for statement in json.loads(resource.plain["policy"])["Statement"]:
            granted.update(statement["Action"])
    assert granted == set(policies.CONTROL_PLANE_CALLS.values()) | set(policies.IMPLIED)
