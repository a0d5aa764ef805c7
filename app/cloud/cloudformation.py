"""The per-service CloudFormation stack of a cloud deployment: its name, and create/update/delete.

One stack (and one Lambda function of the same name) per cluster and service, made from
`lambda-cfn.yaml` in DEPLOYMENT_TEMPLATE_BUCKET (the policies require TemplateURL and RoleARN).
Names fit AWS's limits: at most 64 characters (a bare Lambda function name), only [A-Za-z0-9-]
(stack names forbid `_` and `.`), starting `differential-deployment-` (the prefix every platform
policy is scoped to), and ending with a hash of the exact cluster and service, so two services
whose names shorten alike never share a stack. The name is derived once and stored on the row.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..settings import Settings
from . import aws

PREFIX = "differential-deployment-"
MAX_NAME = 64
TEMPLATE_KEY = "lambda-cfn.yaml"
# The template's Runtime AllowedValues (a test keeps them equal).
PYTHON_RUNTIMES = ("python3.12", "python3.13", "python3.14")
NODE_RUNTIMES = ("nodejs22.x", "nodejs24.x")
RUNTIMES = PYTHON_RUNTIMES + NODE_RUNTIMES
DEFAULT_RUNTIME = "nodejs22.x"  # no body: the original's tooling deploys Node services
PYTHON_HANDLER = "differential.lambda_handler.handler"  # the Python SDK's Lambda entry point
NODE_HANDLER = "differential-index.handler"  # the entry point `differential deploy` writes into Node bundles


def _part(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9]", "-", text)).strip("-")


def resource_name(cluster_id: str, service: str) -> str:
    """`differential-deployment-<cluster>-<service>-<hash>`, each part shortened to fit 64 characters."""
    digest = hashlib.sha256(f"{cluster_id}\0{service}".encode()).hexdigest()[:8]
    cluster = _part(cluster_id.removeprefix("cluster-"))[:16].strip("-") or "c"
    room = MAX_NAME - len(PREFIX) - len(cluster) - len(digest) - 2
    service_part = _part(service)[:room].strip("-")
    middle = f"{cluster}-{service_part}" if service_part else cluster
    return f"{PREFIX}{middle}-{digest}"


def handler_for(runtime: str) -> str:
    return PYTHON_HANDLER if runtime in PYTHON_RUNTIMES else NODE_HANDLER


@dataclass(frozen=True)
class StackRequest:
    stack_name: str
    request_token: str  # ClientRequestToken: the deployment and this release of it
    parameters: dict[str, str]


def template_url(settings: Settings) -> str:
    """The template's virtual-hosted S3 URL; CloudFormation reads it with our credentials
    (the policies grant s3:GetObject on the template bucket). moto resolves the same form."""
    return (f"https://{settings.deployment_template_bucket}.s3.{settings.aws_region}.amazonaws.com/"
            f"{TEMPLATE_KEY}")


def _is(exc: Exception, code: str, text: str = "") -> bool:
    error = getattr(exc, "response", {}).get("Error", {})
    return error.get("Code") == code and text in str(error.get("Message", ""))


def create_or_update(settings: Settings, request: StackRequest) -> dict:
    """CreateStack, or UpdateStack when the stack exists (AlreadyExists); {"stackId", "operation"}.

    A create that fails is deleted by CloudFormation (OnFailure=DELETE: its events end at
    DELETE_COMPLETE, a failure); a failed update rolls back (UPDATE_ROLLBACK_COMPLETE)."""
    cfn = aws.client("cloudformation", settings)
    common = {
        "StackName": request.stack_name,
        "TemplateURL": template_url(settings),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(request.parameters.items())],
        "NotificationARNs": [settings.deployment_sns_topic],
        "ClientRequestToken": request.request_token,
        "RoleARN": settings.deployment_default_service_role,
        "Tags": [{"Key": "differential", "Value": "deployment"}],
    }
    try:
        answer = cfn.create_stack(OnFailure="DELETE", **common)
        return {"stackId": answer.get("StackId"), "operation": "create"}
    except Exception as exc:
        if not _is(exc, "AlreadyExistsException"):
            raise
    answer = cfn.update_stack(**common)
    return {"stackId": answer.get("StackId"), "operation": "update"}


def delete(settings: Settings, stack_name: str) -> None:
    """DeleteStack as the service role (a stack that is already gone is not an error)."""
    aws.client("cloudformation", settings).delete_stack(StackName=stack_name,
                                                        RoleARN=settings.deployment_default_service_role)


def describe(settings: Settings, stack_name: str) -> dict | None:
    """DescribeStacks' answer for the stack (StackStatus, StackStatusReason), None when it is gone."""
    try:
        stacks = aws.client("cloudformation", settings).describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        if _is(exc, "ValidationError", "does not exist"):
            return None
        raise
    return stacks[0] if stacks else None


def failure_reason(settings: Settings, stack_name: str) -> str | None:
    """The first resource failure among the stack's latest events (one page): why it rolled back."""
    events = aws.client("cloudformation", settings).describe_stack_events(StackName=stack_name)["StackEvents"]
    failed = [e for e in events if str(e.get("ResourceStatus", "")).endswith("_FAILED")
              and e.get("ResourceType") != "AWS::CloudFormation::Stack"]
    if not failed:
        return None
    first = failed[-1]  # newest first: the last one listed is the first that failed
    return f"{first.get('LogicalResourceId')}: {first.get('ResourceStatusReason')}"
