"""The exact lines that make npm and pip read a cluster's clients from this control-plane.

`.npmrc` names the scope's registry and the token for that registry's path (npm's `_authToken`,
sent as Bearer); pip takes the token as the password of the index URL (any user name). The console
shows them with a placeholder, or with a token just made; nothing else writes a token into them.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

from . import names

TOKEN_PLACEHOLDER = "<REGISTRY_TOKEN>"


def npm_registry(base_url: str) -> str:
    return base_url.rstrip("/") + "/packages/npm/"


def simple_index(base_url: str) -> str:
    return base_url.rstrip("/") + "/packages/pypi/simple/"


def npmrc(base_url: str, token: str = TOKEN_PLACEHOLDER) -> str:
    registry = npm_registry(base_url)
    parts = urlsplit(registry)
    return f"@{names.NPM_SCOPE}:registry={registry}\n//{parts.netloc}{parts.path}:_authToken={token}\n"


def npm_install(cluster_id: str) -> str:
    return f"npm install {names.npm_package(cluster_id)}"


def pip_install(base_url: str, cluster_id: str, token: str = TOKEN_PLACEHOLDER) -> str:
    parts = urlsplit(simple_index(base_url))
    secret = token if token == TOKEN_PLACEHOLDER else quote(token, safe="")
    index = f"{parts.scheme}://token:{secret}@{parts.netloc}{parts.path}"
    return f"pip install --index-url '{index}' {names.distribution(cluster_id)}"
