"""boto3 clients built from the settings (region, credentials, and a test endpoint override)."""
from __future__ import annotations

import functools

from ..settings import Settings


@functools.lru_cache(maxsize=32)
def _client(service: str, region: str, key_id: str, secret: str, endpoint: str, signature_version: str):
    import boto3
    from botocore.config import Config

    config = Config(signature_version=signature_version or None, retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5, read_timeout=30)
    return boto3.client(
        service,
        region_name=region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        endpoint_url=endpoint or None,
        config=config,
    )


def client(service: str, settings: Settings, *, signature_version: str = ""):
    """A cached client; `signature_version="s3v4"` for presigning (boto3 would pick SigV2-style URLs)."""
    return _client(service, settings.aws_region, settings.aws_access_key_id, settings.aws_secret_access_key,
                   settings.aws_endpoint_url, signature_version)
