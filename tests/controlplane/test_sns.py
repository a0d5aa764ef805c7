"""POST /events/sns: signatures, subscription confirmation against a moto server, stack events."""
from __future__ import annotations

import base64
import datetime as dt

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from app.cloud import sns
from cp_helpers import Api

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"


@pytest.fixture(scope="module")
def signing_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def signed(key, message: dict, version: str = "2") -> dict:
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(sns.string_to_sign(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def notification(topic: str, text: str) -> dict:
    return {"Type": "Notification", "MessageId": "m-1", "TopicArn": topic, "Subject": "AWS CloudFormation Notification",
            "Message": text, "Timestamp": "2026-11-28T00:00:00.000Z"}


def test_verifier_accepts_real_signatures_and_rejects_tampering(signing_key):
    key, pem = signing_key
    fetched = []
    verifier = sns.Verifier(fetch_certificate=lambda url: fetched.append(url) or pem)
    for version in ("1", "2"):
        message = signed(key, notification("arn:aws:sns:us-east-1:1:t", "StackName='x'"), version)
        verifier.verify(message)
        with pytest.raises(sns.InvalidMessage, match="does not match"):
            verifier.verify({**message, "Message": "StackName='evil'"})
    assert fetched == [CERT_URL]  # cached after the first use
    with pytest.raises(sns.InvalidMessage, match="SignatureVersion"):
        verifier.verify({**message, "SignatureVersion": "3"})


def test_certificates_only_come_from_sns_over_https():
    for url in ("http://sns.us-east-1.amazonaws.com/c.pem", "https://evil.example/sns.pem",
                "https://sns.us-east-1.amazonaws.com.evil.example/c.pem"):
        with pytest.raises(sns.InvalidMessage, match="not an https URL of an SNS host"):
            sns._fetch_certificate(url)


def test_cloudformation_messages_keep_values_with_equals_and_only_stack_events_count():
    text = ("StackId='arn:aws:cloudformation:us-east-1:1:stack/differential-deployment-a/1'\n"
            "LogicalResourceId='DifferentialService'\nResourceStatus='CREATE_COMPLETE'\n"
            "ResourceStatusReason='a=b=c'\nResourceType='AWS::Lambda::Function'\n"
            "StackName='differential-deployment-a'\n")
    fields = sns.parse_cloudformation(text)
    assert fields["ResourceStatusReason"] == "a=b=c"
    assert sns.stack_outcome(fields) is None
    stack = sns.parse_cloudformation(text.replace("AWS::Lambda::Function", "AWS::CloudFormation::Stack"))
    assert sns.stack_outcome(stack) == "succeeded"
    assert sns.stack_outcome({**stack, "ResourceStatus": "ROLLBACK_COMPLETE"}) == "failed"
    assert sns.stack_outcome({**stack, "ResourceStatus": "UPDATE_IN_PROGRESS"}) == "in progress"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def topic(moto_url):
    client = boto3.client("sns", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="test",
                          aws_secret_access_key="test")
    arn = client.create_topic(Name="deployments")["TopicArn"]
    client.subscribe(TopicArn=arn, Protocol="https", Endpoint="https://control-plane.example/events/sns")
    return arn


def cloud_api(make_app, moto_url, topic, verify=False):
    return Api(make_app(deployment_sns_topic=topic, aws_endpoint_url=moto_url, aws_access_key_id="test",
                        aws_secret_access_key="test", sns_verify_signatures=verify))


def test_subscription_confirmation_is_confirmed_with_aws(make_app, moto_url, topic):
    api = cloud_api(make_app, moto_url, topic)
    r = api.client.post("/events/sns", data=__import__("json").dumps({
        "Type": "SubscriptionConfirmation", "MessageId": "c-1", "TopicArn": topic, "Token": "tok-123",
        "Message": "You have chosen to subscribe", "SubscribeURL": "https://sns.example/confirm",
        "Timestamp": "2026-11-28T00:00:00.000Z"}), content_type="text/plain; charset=UTF-8")
    assert r.status_code == 200, r.json
    assert r.json["outcome"] == "confirmed"


def test_stack_notification_and_wrong_topic(make_app, moto_url, topic):
    api = cloud_api(make_app, moto_url, topic)
    text = "StackName='differential-deployment-a'\nResourceStatus='UPDATE_COMPLETE'\nResourceType='AWS::CloudFormation::Stack'\n"
    r = api.client.post("/events/sns", json=notification(topic, text))
    assert r.status_code == 200 and r.json == {"type": "Notification", "stack": "differential-deployment-a",
                                               "outcome": "succeeded"}
    r = api.client.post("/events/sns", json=notification(topic + "-other", text))
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_topic"


def test_signatures_are_checked_by_default(make_app, moto_url, topic, signing_key):
    key, pem = signing_key
    api = cloud_api(make_app, moto_url, topic, verify=True)
    api.app.extensions["differential"].sns_verifier = sns.Verifier(fetch_certificate=lambda url: pem)
    text = "StackName='s'\nResourceStatus='CREATE_COMPLETE'\nResourceType='AWS::CloudFormation::Stack'\n"
    good = signed(key, notification(topic, text))
    assert api.client.post("/events/sns", json=good).status_code == 200
    forged = {**good, "Message": text.replace("CREATE_COMPLETE", "DELETE_COMPLETE")}
    r = api.client.post("/events/sns", json=forged)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_sns_signature"


def test_without_cloud_settings_the_route_answers_501(api):
    r = api.client.post("/events/sns", json=notification("arn:aws:sns:us-east-1:1:t", "x"))
    assert r.status_code == 501 and "DEPLOYMENT_SNS_TOPIC" in r.json["error"]["message"]
