"""Identity: the control-plane's IAM user and access key, the CloudFormation service role and
the Lambda runtime role, each with inline least-privilege policies (see policies.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

import policies


@dataclass(frozen=True)
class IdentityArgs:
    name_prefix: str
    region: str
    asset_bucket_arn: pulumi.Input[str]
    template_bucket_arn: pulumi.Input[str]
    topic_arn: pulumi.Input[str]


def _json(document_output: pulumi.Output) -> pulumi.Output[str]:
    return document_output.apply(lambda document: json.dumps(document, indent=2))


class Identity(pulumi.ComponentResource):
    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("differential:platform:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id

        # Lambda runtime role: what deployed service functions run as (DEPLOYMENT_RUNTIME_ROLE).
        self.runtime_role = aws.iam.Role(
            "lambda-runtime",
            name=f"{args.name_prefix}-lambda-runtime",
            description="Differential: role that deployed service functions run as",
            assume_role_policy=json.dumps(policies.assume_role_policy("lambda.amazonaws.com")),
            opts=child,
        )
        aws.iam.RolePolicy(
            "lambda-runtime-logs",
            role=self.runtime_role.id,
            policy=_json(account.apply(lambda acct: policies.runtime_role_policy(region, acct))),
            opts=child,
        )

        # CloudFormation service role: the control-plane's CreateStack/UpdateStack pass it as
        # RoleARN (DEPLOYMENT_DEFAULT_SERVICE_ROLE), so stacks create functions with its rights.
        self.service_role = aws.iam.Role(
            "cfn-service",
            name=f"{args.name_prefix}-cfn-service",
            description="Differential: role CloudFormation assumes to deploy services",
            assume_role_policy=json.dumps(policies.assume_role_policy("cloudformation.amazonaws.com")),
            opts=child,
        )
        aws.iam.RolePolicy(
            "cfn-service-deployments",
            role=self.service_role.id,
            policy=_json(
                pulumi.Output.all(account, args.asset_bucket_arn, args.topic_arn, self.runtime_role.arn).apply(
                    lambda a: policies.service_role_policy(region, a[0], a[1], a[2], a[3])
                )
            ),
            opts=child,
        )

        # The control-plane's own credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
        self.user = aws.iam.User(
            "control-plane",
            name=f"{args.name_prefix}-control-plane",
            opts=child,
        )
        aws.iam.UserPolicy(
            "control-plane-assets",
            user=self.user.name,
            policy=_json(
                pulumi.Output.all(args.asset_bucket_arn, args.template_bucket_arn).apply(
                    lambda a: policies.control_plane_assets_policy(a[0], a[1])
                )
            ),
            opts=child,
        )
        aws.iam.UserPolicy(
            "control-plane-deployments",
            user=self.user.name,
            policy=_json(
                pulumi.Output.all(account, args.topic_arn, self.service_role.arn, args.template_bucket_arn).apply(
                    lambda a: policies.control_plane_deployments_policy(region, a[0], a[1], a[2], a[3])
                )
            ),
            opts=child,
        )
        self.access_key = aws.iam.AccessKey("control-plane", user=self.user.name, opts=child)

        self.access_key_id: pulumi.Output[str] = self.access_key.id
        # The provider marks it secret too; say so here as well, so no caller can leak it.
        self.secret_access_key: pulumi.Output[str] = pulumi.Output.secret(self.access_key.secret)
        # An ARN, not a name: CreateStack's RoleARN requires one (the original exported the name).
        self.service_role_arn: pulumi.Output[str] = self.service_role.arn
        self.runtime_role_arn: pulumi.Output[str] = self.runtime_role.arn
        self.register_outputs(
            {
                "userName": self.user.name,
                "accessKeyId": self.access_key_id,
                "secretAccessKey": self.secret_access_key,
                "serviceRoleArn": self.service_role_arn,
                "runtimeRoleArn": self.runtime_role_arn,
            }
        )
