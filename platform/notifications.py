"""Notifications: the SNS topic that carries CloudFormation stack events of deployments, and
its HTTPS subscription to the control-plane's `/events/sns`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

SNS_PATH = "/events/sns"
SIGNATURE_VERSION = 2

# SNS posts text/plain by default; ask for JSON so that the body is parsed as such. The retry
# policy is SNS's default for HTTP(S), written out so that the provider sees no drift.
DELIVERY_POLICY = {
    "healthyRetryPolicy": {
        "minDelayTarget": 20,
        "maxDelayTarget": 20,
        "numRetries": 3,
        "numMaxDelayRetries": 0,
        "numNoDelayRetries": 0,
        "numMinDelayRetries": 0,
        "backoffFunction": "linear",
    },
    "requestPolicy": {"headerContentType": "application/json; charset=UTF-8"},
}


@dataclass(frozen=True)
class NotificationsArgs:
    name_prefix: str
    # Base https URL of the control-plane; None leaves the subscription out (see README).
    # When Pulumi deploys the app, pass the app's endpoint output: it depends on the deploy,
    # so the subscription is created only once the control-plane runs with its secrets.
    control_plane_url: Optional[pulumi.Input[str]]
    confirmation_timeout_minutes: int = 5


class Notifications(pulumi.ComponentResource):
    def __init__(self, name: str, args: NotificationsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("differential:platform:Notifications", name, None, opts)
        self.topic = aws.sns.Topic(
            "deployments",
            name=f"{args.name_prefix}-deployments",
            display_name="Differential deployments",
            # SHA256 signatures: the control-plane refuses version 1 (SHA1) messages (app/cloud/sns.py).
            signature_version=SIGNATURE_VERSION,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.topic_arn: pulumi.Output[str] = self.topic.arn
        self.subscription: Optional[aws.sns.TopicSubscription] = None
        self.endpoint: Optional[pulumi.Output[str]] = None
        if args.control_plane_url is not None:
            self.endpoint = pulumi.Output.from_input(args.control_plane_url).apply(
                lambda url: url.rstrip("/") + SNS_PATH
            )
            # The provider waits until the endpoint confirms (the control-plane calls
            # sns:ConfirmSubscription), so this comes after the app is deployed and configured.
            self.subscription = aws.sns.TopicSubscription(
                "control-plane",
                topic=self.topic.arn,
                protocol="https",
                endpoint=self.endpoint,
                endpoint_auto_confirms=False,
                confirmation_timeout_in_minutes=args.confirmation_timeout_minutes,
                delivery_policy=json.dumps(DELIVERY_POLICY),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"topicArn": self.topic_arn, "endpoint": self.endpoint})
