"""Notifications from AWS: SNS posts CloudFormation stack events of cloud deployments here."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from ..cloud import aws, sns
from ..engine import deployments
from ..errors import BadRequest, NotImplementedFeature, UpstreamFailed
from . import schemas as s
from .routing import route, state

bp = Blueprint("events", __name__)
log = logging.getLogger(__name__)


# SNS messages are at most 256 KB; this route needs no credential, so it reads no more than that.
MAX_SNS_BODY_BYTES = 300_000


def _sns_configured() -> None:
    """Checked before the body is read: with cloud features off, nobody's body is parsed here."""
    if not state().settings.deployment_sns_topic:
        raise NotImplementedFeature("cloud deployments are off: set DEPLOYMENT_SNS_TOPIC (and the other cloud "
                                    "settings) to receive SNS notifications", code="cloud_not_configured")


@route(bp, "POST", "/events/sns", summary="SNS deliveries (subscription confirmation, stack events)",
       auth_kind=None, tag="cloud", body=s.SNS_MESSAGE, max_body=MAX_SNS_BODY_BYTES, precondition=_sns_configured,
       responses={200: s.SNS_ACCEPTED, 400: s.ERROR, 501: s.ERROR, 502: s.ERROR})
def sns_event(body):
    settings = state().settings
    if body["TopicArn"] != settings.deployment_sns_topic:
        raise BadRequest("the message is from another SNS topic than DEPLOYMENT_SNS_TOPIC",
                         {"topicArn": body["TopicArn"]}, code="unknown_topic")
    if settings.sns_verify_signatures:
        # InvalidMessage is a ValueError; TypeError in case a hostile input slips past it; OSError:
        # the certificate could not be fetched. Each is the sender's problem: 400, never 500.
        try:
            state().sns_verifier.verify(body, settings.deployment_sns_topic)
        except (ValueError, TypeError, OSError) as exc:
            raise BadRequest(f"the SNS message could not be verified: {exc}", code="invalid_sns_signature") from exc
    if body["Type"] == "SubscriptionConfirmation":
        if not body.get("Token"):
            raise BadRequest("a SubscriptionConfirmation needs its Token", {"field": "Token"})
        try:
            aws.client("sns", settings).confirm_subscription(
                TopicArn=body["TopicArn"], Token=body["Token"], AuthenticateOnUnsubscribe="true")
        except Exception as exc:  # botocore raises many types; all mean the same thing here
            raise UpstreamFailed(f"confirming the SNS subscription failed: {exc}") from exc
        log.info("confirmed the SNS subscription to %s", body["TopicArn"])
        return jsonify({"type": body["Type"], "stack": None, "outcome": "confirmed"}), 200
    if body["Type"] == "Notification" and body.get("Subject") == "AWS CloudFormation Notification":
        fields = sns.parse_cloudformation(body["Message"])
        outcome = sns.stack_outcome(fields)
        applied = deployments.on_stack_event(fields, outcome)  # only stack-level events of a deploying one count
        if outcome is not None:
            log.info("stack %s: %s (%s): deployment %s %s", fields.get("StackName"), fields.get("ResourceStatus"),
                     outcome, applied["deploymentId"], applied["result"])
        return jsonify({"type": body["Type"], "stack": fields.get("StackName"), "outcome": outcome}), 200
    return jsonify({"type": body["Type"], "stack": None, "outcome": None}), 200
