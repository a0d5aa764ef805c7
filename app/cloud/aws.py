"""boto3 clients built from the settings (region, credentials, and a test endpoint override)."""
from __future__ import annotations

import functools

from ..settings import Settings


@functools.lru_cache(maxsize=16)
def _client(service: str, region: str, key_id: str, secret: str, endpoint: str):
    import boto3

    return boto3.client(
        service,
        region_name=region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        endpoint_url=endpoint or None,
    )


def client(service: str, settings: Settings):
    return _client(service, settings.aws_region, settings.aws_access_key_id, settings.aws_secret_access_key,
                   settings.aws_endpoint_url)
