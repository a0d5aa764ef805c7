"""IAM policy documents of the platform, as plain functions of ARNs (no Pulumi inside).

Least privilege, fixing the original's grants (the original's infrastructure/cfn.yaml):
no wildcard actions; every statement names its resources, scoped to this stack's buckets and
topic and to the `differential-deployment-*` stacks, functions and log groups in this account
and region; no cloudformation:ValidateTemplate (it cannot be scoped and the control-plane never
calls it); the runtime role may write only its functions' logs, not every log group.

Refined after the audit (L10): stacks can be created, updated and deleted only as the service role
(`cloudformation:RoleArn`) and created or updated only from the template bucket
(`cloudformation:TemplateUrl`), so a stolen control-plane key cannot run another template or act
with its own rights; asset objects are writable only under the prefixes the control-plane uses;
every bucket refuses requests that are not over TLS.
"""
from __future__ import annotations

from typing import Any

# Stacks, functions and log groups that the control-plane creates are all named like this.
DEPLOYMENT_PREFIX = "differential-deployment-"
# The asset bucket's keys are `<type>/<id>`, as the original wrote them: service bundles (storage.py's
# lifecycle rule expires them) and client libraries. The control-plane's object rights stop there.
SERVICE_BUNDLE_PREFIX = "service_bundle/"
CLIENT_LIBRARY_PREFIX = "client_library/"
ASSET_PREFIXES = (SERVICE_BUNDLE_PREFIX, CLIENT_LIBRARY_PREFIX)

Document = dict[str, Any]

# Every AWS call the control-plane makes (app/cloud/*.py, app/api/events.py), as boto3 names it, and
# the IAM action that allows it: the control-plane user's policies grant these and, besides the
# actions in IMPLIED, nothing else (tests/platform/test_policy_calls.py reads the app's code).
CONTROL_PLANE_CALLS = {
    ("s3", "put_object"): "s3:PutObject",  # presigned: the client's upload of a bundle or package
    # Reading an upload back to check it, serving a package; CloudFormation also reads the
    # TemplateURL with the caller's rights (the DeploymentTemplates statement).
    ("s3", "get_object"): "s3:GetObject",
    ("s3", "delete_object"): "s3:DeleteObject",  # DELETE .../deployments, an oversized upload
    ("cloudformation", "create_stack"): "cloudformation:CreateStack",  # a service's first release
    ("cloudformation", "update_stack"): "cloudformation:UpdateStack",  # later releases, rollbacks
    ("cloudformation", "delete_stack"): "cloudformation:DeleteStack",  # DELETE .../deployments
    ("cloudformation", "describe_stacks"): "cloudformation:DescribeStacks",  # a stack whose SNS events were lost
    ("cloudformation", "describe_stack_events"): "cloudformation:DescribeStackEvents",  # why it failed
    ("lambda", "invoke"): "lambda:InvokeFunction",  # waking a deployment up (InvocationType=Event)
    ("lambda", "get_function"): "lambda:GetFunction",  # what Lambda says of a function that never polled
    ("logs", "filter_log_events"): "logs:FilterLogEvents",  # GET .../deployments/:id/logs
    ("sns", "confirm_subscription"): "sns:ConfirmSubscription",  # POST /events/sns
}
# Granted, though no call above names them: what AWS checks on the control-plane's behalf.
IMPLIED = {
    "s3:ListBucket": "without it a GetObject of a missing key answers 403 instead of 404",
    "iam:PassRole": "CreateStack, UpdateStack and DeleteStack pass the service role (RoleARN)",
}


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


def bucket_name(bucket_arn: str) -> str:
    return bucket_arn.removeprefix("arn:aws:s3:::")


def template_urls(region: str, template_bucket_arn: str) -> list[str]:
    """TemplateURL patterns of the objects in the template bucket, in S3's URL forms."""
    bucket = bucket_name(template_bucket_arn)
    return [
        f"https://{bucket}.s3.{region}.amazonaws.com/*",
        f"https://{bucket}.s3.amazonaws.com/*",
        f"https://s3.{region}.amazonaws.com/{bucket}/*",
        f"https://s3.amazonaws.com/{bucket}/*",
    ]


def tls_only_bucket_policy(bucket_arn: str) -> Document:
    """A bucket policy that refuses every request not made over TLS, whoever makes it."""
    return _doc({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })


def assume_role_policy(service: str) -> Document:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def control_plane_assets_policy(asset_bucket_arn: str, template_bucket_arn: str) -> Document:
    """The client-library registry and bundle uploads (presigned by the control-plane)."""
    return _doc(
        _allow("AssetObjects", ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
               [f"{asset_bucket_arn}/{prefix}*" for prefix in ASSET_PREFIXES]),
        # Without ListBucket a missing object answers 403 instead of 404.
        _allow("AssetListing", ["s3:ListBucket"], [asset_bucket_arn]),
        _allow("DeploymentTemplates", ["s3:GetObject"], [f"{template_bucket_arn}/*"]),
    )


def control_plane_deployments_policy(
    region: str, account: str, topic_arn: str, service_role_arn: str, template_bucket_arn: str
) -> Document:
    """Cloud deployments: one CloudFormation stack per service, its status over SNS, its logs.

    The control-plane must pass RoleARN (the service role) to CreateStack, UpdateStack and
    DeleteStack, and a TemplateURL into the template bucket to CreateStack and UpdateStack: a
    condition key missing from the request fails the condition (no UsePreviousTemplate, no
    TemplateBody). Only those three actions carry the keys, so the reads have a statement of their own."""
    role = {"ArnEquals": {"cloudformation:RoleArn": service_role_arn}}
    return _doc(
        _allow(
            "ServiceStacks",
            ["cloudformation:CreateStack", "cloudformation:UpdateStack"],
            [stack_arn(region, account)],
            {**role, "StringLike": {"cloudformation:TemplateUrl": template_urls(region, template_bucket_arn)}},
        ),
        _allow("ServiceStackDeletion", ["cloudformation:DeleteStack"], [stack_arn(region, account)], role),
        _allow(
            "ServiceStackReads",
            ["cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents"],
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
