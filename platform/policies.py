"""IAM policy documents of the platform, as plain functions of ARNs (no Pulumi inside).

Least privilege, fixing the original's grants (the original's infrastructure/cfn.yaml):
no wildcard actions; every statement names its resources, scoped to this stack's buckets and
topic and to the `differential-deployment-*` stacks, functions and log groups in this account
and region; no cloudformation:ValidateTemplate (it cannot be scoped and the control-plane never
calls it); the runtime role may write only its functions' logs, not every log group.
"""
from __future__ import annotations

from typing import Any

# Stacks, functions and log groups that the control-plane creates are all named like this.
DEPLOYMENT_PREFIX = "differential-deployment-"
# Where service bundles live in the asset bucket; storage.py's lifecycle rule uses the same prefix.
SERVICE_BUNDLE_PREFIX = "service_bundle/"

Document = dict[str, Any]


def _doc(*statements: Document) -> Document:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(sid: str, actions: list[str], resources: list[str], condition: Document | None = None) -> Document:
    statement: Document = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def stack_arn(region: str, account: str) -> str:
    return f"arn:aws:cloudformation:{region}:{account}:stack/{DEPLOYMENT_PREFIX}*/*"


def function_arn(region: str, account: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{DEPLOYMENT_PREFIX}*"


def log_group_arn(region: str, account: str) -> str:
    # Covers the group and its streams (`...:log-group:<name>:log-stream:<stream>`).
    return f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{DEPLOYMENT_PREFIX}*"


def assume_role_policy(service: str) -> Document:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def control_plane_assets_policy(asset_bucket_arn: str, template_bucket_arn: str) -> Document:
    """The client-library registry and bundle uploads (presigned by the control-plane)."""
    return _doc(
        _allow("AssetObjects", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], [f"{asset_bucket_arn}/*"]),
        # Without ListBucket a missing object answers 403 instead of 404.
        _allow("AssetListing", ["s3:ListBucket"], [asset_bucket_arn]),
        _allow("DeploymentTemplates", ["s3:GetObject"], [f"{template_bucket_arn}/*"]),
    )


def control_plane_deployments_policy(
    region: str, account: str, topic_arn: str, service_role_arn: str
) -> Document:
    """Cloud deployments: one CloudFormation stack per service, its status over SNS, its logs."""
    return _doc(
        _allow(
            "ServiceStacks",
            [
                "cloudformation:CreateStack",
                "cloudformation:UpdateStack",
                "cloudformation:DeleteStack",
                "cloudformation:DescribeStacks",
                "cloudformation:DescribeStackEvents",
            ],
            [stack_arn(region, account)],
        ),
        _allow(
            "PassServiceRole",
            ["iam:PassRole"],
            [service_role_arn],
            {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}},
        ),
        _allow("ConfirmDeploymentSubscription", ["sns:ConfirmSubscription"], [topic_arn]),
        # Wake a deployed service up (asynchronous invoke) and read its state.
        _allow("ServiceFunctions", ["lambda:GetFunction", "lambda:InvokeFunction"], [function_arn(region, account)]),
        _allow("ServiceLogs", ["logs:FilterLogEvents"], [log_group_arn(region, account)]),
    )


def service_role_policy(
    region: str, account: str, asset_bucket_arn: str, topic_arn: str, runtime_role_arn: str
) -> Document:
    """What CloudFormation, acting as the service role, needs to run lambda-cfn.yaml."""
    return _doc(
        _allow("ServiceBundles", ["s3:GetObject"], [f"{asset_bucket_arn}/{SERVICE_BUNDLE_PREFIX}*"]),
        _allow(
            "ServiceFunctions",
            [
                "lambda:CreateFunction",
                "lambda:DeleteFunction",
                "lambda:GetFunction",
                "lambda:GetFunctionConfiguration",
                "lambda:UpdateFunctionCode",
                "lambda:UpdateFunctionConfiguration",
                "lambda:PutFunctionConcurrency",
                "lambda:DeleteFunctionConcurrency",
                "lambda:GetFunctionEventInvokeConfig",
                "lambda:PutFunctionEventInvokeConfig",
                "lambda:UpdateFunctionEventInvokeConfig",
                "lambda:DeleteFunctionEventInvokeConfig",
                "lambda:ListTags",
                "lambda:TagResource",
                "lambda:UntagResource",
            ],
            [function_arn(region, account)],
        ),
        _allow(
            "PassRuntimeRole",
            ["iam:PassRole"],
            [runtime_role_arn],
            {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
        ),
        # Stack events go to NotificationARNs = the deployment topic.
        _allow("StackNotifications", ["sns:Publish"], [topic_arn]),
    )


def runtime_role_policy(region: str, account: str) -> Document:
    """A deployed service function writes its own logs, nothing else."""
    return _doc(
        _allow(
            "FunctionLogs",
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            [log_group_arn(region, account)],
        ),
    )
