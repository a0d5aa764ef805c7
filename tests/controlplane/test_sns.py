"""POST /events/sns: signatures, subscription confirmation against a moto server, stack events."""
from __future__ import annotations

import base64
import datetime as dt
import http.server
import threading
import time
import urllib.error

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from app.cloud import sns
from cp_helpers import Api

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
TOPIC = "arn:aws:sns:us-east-1:1:t"


def certificate(key) -> bytes:
    """A throwaway self-signed certificate of `key`, PEM."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signing_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, certificate(key)


def signed(key, message: dict, version: str = "2", cert_url: str = CERT_URL) -> dict:
    message = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    signature = key.sign(sns.string_to_sign(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def sns_time(seconds_ago: float = 0.0) -> str:
    """A Timestamp as SNS writes it (UTC, milliseconds, Z)."""
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def notification(topic: str, text: str, seconds_ago: float = 0.0) -> dict:
    return {"Type": "Notification", "MessageId": "m-1", "TopicArn": topic, "Subject": "AWS CloudFormation Notification",
            "Message": text, "Timestamp": sns_time(seconds_ago)}


def test_verifier_accepts_real_signatures_and_rejects_tampering(signing_key):
    key, pem = signing_key
    fetched = []
    # Version 1 only where it is asked for (the default refuses it: see the next test).
    verifier = sns.Verifier(fetch_certificate=lambda url: fetched.append(url) or pem, signature_versions=("1", "2"))
    for version in ("1", "2"):
        message = signed(key, notification(TOPIC, "StackName='x'"), version)
        verifier.verify(message, TOPIC)
        with pytest.raises(sns.InvalidMessage, match="does not match"):
            verifier.verify({**message, "Message": "StackName='evil'"}, TOPIC)
    assert fetched == [CERT_URL]  # cached after the first use
    with pytest.raises(sns.InvalidMessage, match="SignatureVersion"):
        verifier.verify({**message, "SignatureVersion": "3"}, TOPIC)


def test_certificates_only_come_from_sns_over_https():
    for url in ("http://sns.us-east-1.amazonaws.com/c.pem", "https://evil.example/sns.pem",
                "https://sns.us-east-1.amazonaws.com.evil.example/c.pem",
                "https://sns.s3.amazonaws.com/SimpleNotificationService-0a.pem"):
        with pytest.raises(sns.InvalidMessage, match="not an https URL of an SNS host"):
            sns._fetch_certificate(url)


# Every SigningCertURL the audit (L1) saw accepted or tried, for a topic in us-east-1.
REFUSED_CERT_URLS = (
    "https://sns.s3.amazonaws.com/SimpleNotificationService-0a1b.pem",  # an S3 bucket named "sns"
    "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-0a1b.pem",
    "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-0a1b.pem",  # any explicit port
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-0a1b.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0a1b.pem",  # not the topic's region
    "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-0a1b.pem",  # not the topic's partition
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-0a1b.pem",
    "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem?h=evil.example",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem#@evil.example",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem?",
    "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com/other/SimpleNotificationService-0a1b.pem",
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",  # not hex
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a1b.pem.exe",
    "https://sns.us-east-1.amazonaws.com/",
    "",
)


@pytest.mark.parametrize("url", REFUSED_CERT_URLS)
def test_a_certificate_url_off_the_topics_sns_host_is_refused_before_any_fetch(signing_key, url):
    key, pem = signing_key
    fetched = []
    verifier = sns.Verifier(fetch_certificate=lambda u: fetched.append(u) or pem)
    with pytest.raises(sns.InvalidMessage, match="not an https URL of an SNS host"):
        verifier.verify(signed(key, notification(TOPIC, "x"), cert_url=url), TOPIC)
    assert fetched == []


@pytest.mark.parametrize("topic, url", [
    (TOPIC, CERT_URL),
    ("arn:aws-cn:sns:cn-north-1:1:t", "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-0a1b.pem"),
    ("arn:aws-us-gov:sns:us-gov-west-1:1:t",
     "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-0a1b.pem"),
])
def test_the_sns_host_of_the_topics_region_is_accepted(signing_key, topic, url):
    key, pem = signing_key
    sns.Verifier(fetch_certificate=lambda u: pem).verify(signed(key, notification(topic, "x"), cert_url=url), topic)


def test_only_signature_version_2_is_accepted_by_default(signing_key):
    key, pem = signing_key
    verifier = sns.Verifier(fetch_certificate=lambda url: pem)
    verifier.verify(signed(key, notification(TOPIC, "x"), "2"), TOPIC)
    with pytest.raises(sns.InvalidMessage, match="unsupported SignatureVersion '1'"):
        verifier.verify(signed(key, notification(TOPIC, "x"), "1"), TOPIC)  # a real SHA1 signature


def test_a_message_older_than_an_hour_or_from_the_future_is_a_replay(signing_key):
    key, pem = signing_key
    now = time.time()
    verifier = sns.Verifier(fetch_certificate=lambda url: pem, clock=lambda: now)
    verifier.verify(signed(key, notification(TOPIC, "x", seconds_ago=59 * 60)), TOPIC)
    verifier.verify(signed(key, notification(TOPIC, "x", seconds_ago=-60)), TOPIC)  # a little skew
    for seconds_ago in (3601, 24 * 3600, -600):
        with pytest.raises(sns.InvalidMessage, match="replay"):
            verifier.verify(signed(key, notification(TOPIC, "x", seconds_ago=seconds_ago)), TOPIC)
    for stamp in ("yesterday", "2026-11-28T00:00:00"):  # not a time; no time zone
        with pytest.raises(sns.InvalidMessage, match="Timestamp"):
            verifier.verify(signed(key, {**notification(TOPIC, "x"), "Timestamp": stamp}), TOPIC)


def test_the_certificate_cache_keeps_the_16_most_recently_used(signing_key):
    key, pem = signing_key
    fetched = []
    verifier = sns.Verifier(fetch_certificate=lambda url: fetched.append(url) or pem)
    urls = [f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{n:04x}.pem" for n in range(20)]
    message = notification(TOPIC, "x")
    verifier.verify(signed(key, message, cert_url=urls[0]), TOPIC)
    for url in urls[1:]:
        verifier.verify(signed(key, message, cert_url=urls[0]), TOPIC)  # keeps the first one in use
        verifier.verify(signed(key, message, cert_url=url), TOPIC)
    assert len(verifier._certs) == sns.CERT_CACHE_SIZE == 16
    assert fetched == urls
    verifier.verify(signed(key, message, cert_url=urls[0]), TOPIC)  # recently used: still cached
    verifier.verify(signed(key, message, cert_url=urls[1]), TOPIC)  # least recently used: evicted
    assert fetched == urls + [urls[1]]


def test_the_certificate_fetch_does_not_follow_redirects():
    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/elsewhere.pem":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"followed")
                return
            self.send_response(302)
            self.send_header("Location", "/elsewhere.pem")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with sns._opener.open(base + "/elsewhere.pem", timeout=5) as response:  # the server works
            assert response.read() == b"followed"
        with pytest.raises(urllib.error.HTTPError) as refused:
            sns._opener.open(base + "/SimpleNotificationService-0a.pem", timeout=5)
        assert refused.value.code == 302 and isinstance(refused.value, OSError)  # the view answers 400
    finally:
        server.shutdown()
        server.server_close()


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


def test_a_hostile_certificate_or_signature_answers_400_not_500(make_app, moto_url, topic, signing_key):
    key, pem = signing_key
    ec_pem = certificate(ec.generate_private_key(ec.SECP256R1()))
    text = "StackName='s'\nResourceStatus='CREATE_COMPLETE'\nResourceType='AWS::CloudFormation::Stack'\n"
    good = signed(key, notification(topic, text))
    cases = {
        "not PEM": (b"<Error><Code>AccessDenied</Code></Error>", good),
        "PEM of garbage": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", good),
        "an EC key": (ec_pem, good),
        "a signature of the wrong length": (pem, {**good, "Signature": base64.b64encode(b"short").decode()}),
        "an old replay": (pem, signed(key, notification(topic, text, seconds_ago=2 * 3600))),
        "version 1": (pem, signed(key, notification(topic, text), "1")),
    }
    for case, (served, message) in cases.items():
        api = cloud_api(make_app, moto_url, topic, verify=True)
        api.app.extensions["differential"].sns_verifier = sns.Verifier(fetch_certificate=lambda url, c=served: c)
        r = api.client.post("/events/sns", json=message)
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_sns_signature", (case, r.status_code, r.json)
