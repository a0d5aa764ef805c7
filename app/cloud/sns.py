"""SNS messages: signature verification and CloudFormation notification parsing.

Verification follows AWS's documented scheme: the signing certificate must come over https from an
SNS host, and the signature (SHA1 for version 1, SHA256 for version 2) covers the message's fields
in a fixed order. Parsing keeps only stack-level events (a resource's CREATE_COMPLETE is not the
stack's) and splits each `Key='value'` line on its first `=` only, so values keep their `=`.
"""
from __future__ import annotations

import base64
import re
import threading
import urllib.request
from typing import Callable
from urllib.parse import urlparse

_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

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


def _fetch_certificate(url: str) -> bytes:
    parsed = urlparse(url)
    if parsed.scheme != "https" or not _CERT_HOST.match(parsed.hostname or ""):
        raise InvalidMessage(f"SigningCertURL {url!r} is not an https URL of an SNS host")
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (scheme checked above)
        return response.read()


class Verifier:
    """Checks SNS signatures; certificates are cached by URL (they rotate rarely)."""

    def __init__(self, fetch_certificate: Callable[[str], bytes] = _fetch_certificate):
        self._fetch = fetch_certificate
        self._certs: dict[str, object] = {}
        self._lock = threading.Lock()

    def _public_key(self, url: str):
        from cryptography import x509

        with self._lock:
            key = self._certs.get(url)
        if key is None:
            key = x509.load_pem_x509_certificate(self._fetch(url)).public_key()
            with self._lock:
                self._certs[url] = key
        return key

    def verify(self, message: dict) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        version = str(message.get("SignatureVersion", ""))
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
        if algorithm is None:
            raise InvalidMessage(f"unsupported SignatureVersion {version!r}")
        try:
            signature = base64.b64decode(message.get("Signature") or "", validate=True)
        except ValueError:
            raise InvalidMessage("the Signature is not base64") from None
        key = self._public_key(str(message.get("SigningCertURL") or ""))
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
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
