"""SNS messages: signature verification and CloudFormation notification parsing.

Verification follows AWS's documented scheme, tightened where the audit (L1) found it loose: the
signing certificate must come over https, without a port, redirect or query, from exactly the SNS
host of the configured topic's region (`sns.<region>.amazonaws.com`, `.cn` in China: a looser
pattern admitted S3 bucket hosts), at a `/SimpleNotificationService-<hex>.pem` path; only SHA256
signatures (SignatureVersion 2: the platform creates the topic so) are accepted; a message older
than an hour is a replay; and whatever a hostile certificate or signature makes `cryptography`
raise becomes InvalidMessage (a 400), never a 500. Certificates are cached, a few at most.

Parsing keeps only stack-level events (a resource's CREATE_COMPLETE is not the stack's) and splits
each `Key='value'` line on its first `=` only, so values keep their `=`.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from typing import Callable
from urllib.parse import urlsplit

_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_REGION = r"[a-z]{2}(?:-[a-z]+)+-[0-9]+"  # us-east-1, us-gov-west-1, cn-north-1
_CERT_HOST = re.compile(rf"^sns\.{_REGION}\.amazonaws\.com(?:\.cn)?$")
_CERT_PATH = re.compile(r"^/SimpleNotificationService-[0-9a-f]+\.pem$")
_TOPIC_ARN = re.compile(rf"^arn:(aws(?:-[a-z]+)*):sns:({_REGION}):[0-9]+:[A-Za-z0-9_.-]+$")

SIGNATURE_VERSIONS = ("2",)  # SHA256; version 1 (SHA1) is refused, the topic signs with 2
MAX_AGE_SECONDS = 3600.0  # an older message is a replay (SNS retries within minutes)
MAX_FUTURE_SECONDS = 300.0  # clock skew between AWS and us
CERT_CACHE_SIZE = 16
_MAX_CERT_BYTES = 64 * 1024  # a signing certificate is about 2 KB

STACK_SUCCEEDED = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
STACK_FAILED = {"CREATE_FAILED", "UPDATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
                "UPDATE_ROLLBACK_FAILED", "DELETE_COMPLETE", "DELETE_FAILED"}


class InvalidMessage(ValueError):
    pass


def string_to_sign(message: dict) -> bytes:
    kind = message.get("Type")
    if kind not in _FIELDS:
        raise InvalidMessage(f"unknown SNS message Type {kind!r}")
    parts = []
    for name in _FIELDS[kind]:
        if name in message and message[name] is not None:
            parts.append(f"{name}\n{message[name]}\n")
        elif name != "Subject":
            raise InvalidMessage(f"the SNS message has no {name}")
    return "".join(parts).encode()


def sns_host(topic_arn: str) -> str:
    """The one host that may serve the signing certificates of this topic's messages."""
    match = _TOPIC_ARN.match(topic_arn or "")
    if not match:
        raise InvalidMessage(f"{topic_arn!r} is not an SNS topic ARN")
    partition, region = match.groups()
    return f"sns.{region}.amazonaws.com" + (".cn" if partition == "aws-cn" else "")


def check_certificate_url(url: str, host: str | None = None) -> None:
    """Refuse a SigningCertURL that is not https, on SNS's host (exactly `host` when given), with
    no port, user, query or fragment, at a SimpleNotificationService-<hex>.pem path."""
    try:
        parsed = urlsplit(url)
    except ValueError:
        parsed = None
    host_ok = parsed is not None and (parsed.netloc == host if host else bool(_CERT_HOST.match(parsed.netloc)))
    if (parsed is None or parsed.scheme != "https" or not host_ok or parsed.query or parsed.fragment
            or "?" in url or "#" in url or not _CERT_PATH.match(parsed.path)):
        expected = host or "sns.<region>.amazonaws.com"
        raise InvalidMessage(f"SigningCertURL {url!r} is not an https URL of an SNS host "
                             f"(expected https://{expected}/SimpleNotificationService-<hex>.pem)")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError (an OSError) for the 3xx


_opener = urllib.request.build_opener(_NoRedirects)


def _fetch_certificate(url: str) -> bytes:
    check_certificate_url(url)
    with _opener.open(url, timeout=5) as response:  # noqa: S310 (the URL was checked above)
        body = response.read(_MAX_CERT_BYTES + 1)
    if len(body) > _MAX_CERT_BYTES:
        raise InvalidMessage(f"the certificate at {url!r} is larger than {_MAX_CERT_BYTES} bytes")
    return body


def _parse_timestamp(value: object) -> float:
    try:
        stamp = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidMessage(f"the SNS Timestamp {value!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise InvalidMessage(f"the SNS Timestamp {value!r} has no time zone")
    return stamp.timestamp()


class Verifier:
    """Checks SNS signatures; the last few certificates are cached by URL (they rotate rarely)."""

    def __init__(self, fetch_certificate: Callable[[str], bytes] = _fetch_certificate, *,
                 signature_versions: tuple[str, ...] = SIGNATURE_VERSIONS, clock: Callable[[], float] = time.time,
                 cache_size: int = CERT_CACHE_SIZE):
        self._fetch = fetch_certificate
        self._versions = signature_versions
        self._clock = clock
        self._cache_size = cache_size
        self._certs: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def _public_key(self, url: str):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        with self._lock:
            key = self._certs.get(url)
            if key is not None:
                self._certs.move_to_end(url)
                return key
        try:
            key = x509.load_pem_x509_certificate(self._fetch(url)).public_key()
        except (ValueError, TypeError) as exc:  # not PEM, not a certificate
            raise InvalidMessage(f"the certificate at {url!r} could not be read: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidMessage(f"the certificate at {url!r} does not hold an RSA key")
        with self._lock:
            self._certs[url] = key
            while len(self._certs) > self._cache_size:
                self._certs.popitem(last=False)
        return key

    def verify(self, message: dict, topic_arn: str) -> None:
        """Raise InvalidMessage unless `message` is fresh and signed by SNS for `topic_arn`'s region
        (the caller has checked that the message names that topic)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        version = str(message.get("SignatureVersion", ""))
        if version not in self._versions:
            raise InvalidMessage(f"unsupported SignatureVersion {version!r} (accepted: {', '.join(self._versions)})")
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}[version]
        age = self._clock() - _parse_timestamp(message.get("Timestamp"))
        if age > MAX_AGE_SECONDS or age < -MAX_FUTURE_SECONDS:
            raise InvalidMessage(f"the SNS Timestamp {message.get('Timestamp')!r} is more than "
                                 f"{MAX_AGE_SECONDS / 3600:g} h old or in the future: a replay is refused")
        try:
            signature = base64.b64decode(message.get("Signature") or "", validate=True)
        except ValueError:
            raise InvalidMessage("the Signature is not base64") from None
        url = str(message.get("SigningCertURL") or "")
        check_certificate_url(url, sns_host(topic_arn))
        signed = string_to_sign(message)
        key = self._public_key(url)
        try:
            key.verify(signature, signed, padding.PKCS1v15(), algorithm)
        except (InvalidSignature, ValueError, TypeError):
            raise InvalidMessage("the SNS signature does not match the message") from None


def parse_cloudformation(text: str) -> dict[str, str]:
    """`Key='value'` lines -> dict; only the enclosing quotes are removed."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        fields[key.strip()] = value
    return fields


def stack_outcome(fields: dict[str, str]) -> str | None:
    """"succeeded", "failed", "in progress", or None when the event is not about the stack itself."""
    if fields.get("ResourceType") != "AWS::CloudFormation::Stack":
        return None
    status = fields.get("ResourceStatus", "")
    if status in STACK_SUCCEEDED:
        return "succeeded"
    if status in STACK_FAILED:
        return "failed"
    return "in progress"
