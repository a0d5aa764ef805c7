"""HTTP to the control-plane: headers and error mapping, sync and async (retries: retry.py).

Every request carries `Authorization: Basic <secret>` (the raw secret, as the published SDK sends
it), `x-machine-id` (constant for one Differential instance: the server fences results by it; a
poll for jobs makes the machine, and its other requests keep a known machine alive) and, when
deploying, `x-deployment-id`.

A secret is never sent in clear to another machine: an `http://` endpoint that is not this
machine's loopback is refused unless the caller says so (`allow_insecure=True`,
DIFFERENTIAL_ALLOW_INSECURE=1, `--allow-insecure`), e.g. inside a private network.

Requests go through the lean HTTP/1.1 clients of http11.py (blocking and asyncio), at a fraction
of httpx's CPU per request; httpx (sharded pools, below) only when the environment names a proxy,
which httpx honours and the lean clients do not. At most 64 short requests per transport are in
flight at once; long polls (a few at a time) are not counted against them.
"""
from __future__ import annotations

import asyncio
import json as json_module
import os
import secrets
import string
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import httpx

from .http11 import BlockingClient, HTTPTransportError, LeanClient
from .management_secret import is_local
from .errors import (
    AuthenticationError,
    ConnectionFailedError,
    ControlPlaneError,
    DifferentialError,
    NotFoundError,
)

DEFAULT_ENDPOINT = "http://127.0.0.1:4000"
ALLOW_INSECURE_ENV = "DIFFERENTIAL_ALLOW_INSECURE"
LONG_POLL_MS = 20000  # the server's maximum long-poll wait
_LONG_POLL_SLACK = 15.0  # read timeout = server wait + this: the server holds the line for ttl


def new_machine_id() -> str:
    """Random base36, like the TS SDK's, but long enough (14 chars) not to collide."""
    alphabet = string.digits + string.ascii_lowercase
    return "".join(secrets.choice(alphabet) for _ in range(14))


@dataclass
class Config:
    """Where the control-plane is and who we are to it: what callers and workers are built from."""

    api_secret: Optional[str]
    endpoint: str
    machine_id: str = field(default_factory=new_machine_id)
    deployment_id: Optional[str] = None
    allow_insecure: bool = False  # send secrets over plain http to another machine

    @classmethod
    def from_env(
        cls,
        api_secret: Optional[str] = None,
        endpoint: Optional[str] = None,
        deployment_id: Optional[str] = None,
        machine_id: Optional[str] = None,
        allow_insecure: Optional[bool] = None,
    ) -> "Config":
        if allow_insecure is None:
            allow_insecure = os.environ.get(ALLOW_INSECURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        return cls(
            api_secret=api_secret or os.environ.get("DIFFERENTIAL_API_SECRET") or None,
            endpoint=(endpoint or os.environ.get("DIFFERENTIAL_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
            machine_id=machine_id or new_machine_id(),
            deployment_id=deployment_id or os.environ.get("DIFFERENTIAL_DEPLOYMENT_ID") or None,
            allow_insecure=allow_insecure,
        )

    def headers(self, secret: Optional[str] = None) -> Dict[str, str]:
        secret = secret if secret is not None else self.api_secret
        if not secret:
            raise DifferentialError(
                "no API secret: pass api_secret=... or set DIFFERENTIAL_API_SECRET", code="UNAUTHORISED"
            )
        if not self.allow_insecure and self.endpoint.lower().startswith("http://") and not is_local(self.endpoint):
            raise DifferentialError(
                f"refusing to send a secret in clear text to {self.endpoint}: use an https:// endpoint, or, if "
                f"the network is private, allow it with allow_insecure=True, {ALLOW_INSECURE_ENV}=1 or "
                "--allow-insecure", code="INSECURE_ENDPOINT",
            )
        h = {"x-machine-id": self.machine_id, "authorization": f"Basic {secret}"}
        if self.deployment_id:
            h["x-deployment-id"] = self.deployment_id
        return h


def error_from_response(resp: httpx.Response) -> ControlPlaneError:
    """Map a non-2xx answer (JSON `{"error": {code, message, details}}` or anything else)."""
    code = details = None
    message = resp.reason_phrase or "error"
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code, message, details = err.get("code"), err.get("message") or message, err.get("details")
        elif isinstance(err, str):
            message = err
    except ValueError:
        text = resp.text.strip()
        if text:
            message = text[:300]
    cls = {401: AuthenticationError, 404: NotFoundError}.get(resp.status_code, ControlPlaneError)
    return cls(resp.status_code, str(message), code=code, details=details)


def _timeout(long_poll_ms: Optional[int]) -> httpx.Timeout:
    read = (long_poll_ms / 1000.0 + _LONG_POLL_SLACK) if long_poll_ms else 30.0
    return httpx.Timeout(connect=5.0, read=read, write=30.0, pool=read + 5.0)


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise error_from_response(resp)
    if resp.status_code == 204 or not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        raise ControlPlaneError(resp.status_code, f"expected JSON, got {resp.text[:200]!r}") from None


# httpcore's pool scans every connection for every queued request each time a request starts or
# ends: O(queued x connections) per request, which made 1,000 concurrent calls spend most of the
# caller's CPU there. So short requests go through several small pools, and never more at once than
# those pools hold connections (httpcore's queue stays empty): O(pool size) per request. Long polls
# (a worker's claim, the result poller's batch polls: a few at a time, held up to 20 s) have a pool
# of their own, so they never hold up a create or a result.
_SHARDS = 8  # small pools for short requests
_SHARD_CONNECTIONS = 8  # connections each: at most 64 short requests in flight per transport
_LONG_POLL_CONNECTIONS = 100
_ssl: Dict[str, Any] = {}
_ssl_lock = threading.Lock()


def _ssl_context() -> Any:
    """One TLS context for every client of the process, as httpx would build it (certifi, and
    SSL_CERT_FILE / SSL_CERT_DIR from the environment): building one takes tens of milliseconds."""
    with _ssl_lock:
        if "ctx" not in _ssl:
            _ssl["ctx"] = httpx.create_ssl_context()
        return _ssl["ctx"]


class _Transport:
    """What the sync and async transports share: the client's settings and each request's
    arguments. Subclasses only add the call itself (blocking or awaited)."""

    def __init__(self, config: Config, secret: Optional[str] = None) -> None:
        self.config = config
        self.secret = secret
        self._busy = [0] * _SHARDS  # short requests in flight, per pool

    def _client_kwargs(self, connections: int) -> Dict[str, Any]:
        return {
            "base_url": self.config.endpoint,
            "limits": httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            "timeout": _timeout(None),
            "verify": _ssl_context(),
        }

    def _send_kwargs(self, method: str, path: str, json: Any, params: Any,
                     long_poll_ms: Optional[int]) -> Dict[str, Any]:
        return {"method": method, "url": path, "json": json, "params": params,
                "headers": self.config.headers(self.secret), "timeout": _timeout(long_poll_ms)}

    def _least_busy(self) -> int:
        """The pool with the fewest requests in flight (the caller holds a slot, so it has room)."""
        busy = self._busy
        i = busy.index(min(busy))
        busy[i] += 1
        return i

    def _unreachable(self, e: httpx.TransportError) -> ConnectionFailedError:
        return ConnectionFailedError(f"cannot reach the control-plane at {self.config.endpoint}: {e!r}")


class SyncTransport(_Transport):
    """Thread-safe: used by callers, the CLI and management helpers."""

    def __init__(self, config: Config, secret: Optional[str] = None) -> None:
        super().__init__(config, secret)
        self.lean: Optional[BlockingClient] = None
        if not _proxied():
            tls = config.endpoint.lower().startswith("https://")
            self.lean = BlockingClient(config.endpoint, ssl_context=_ssl_context() if tls else None)
        self.clients: List[Optional[httpx.Client]] = [None] * _SHARDS  # made when first needed
        self.long_polls: Optional[httpx.Client] = None
        if self.lean is None:
            self.long_polls = httpx.Client(**self._client_kwargs(_LONG_POLL_CONNECTIONS))
        self._slots = threading.BoundedSemaphore(_SHARDS * _SHARD_CONNECTIONS)
        self._lock = threading.Lock()

    def request(self, method: str, path: str, json: Any = None, params: Any = None,
                long_poll_ms: Optional[int] = None) -> Any:
        if self.lean is not None:
            return self._lean_request(method, path, json, params, long_poll_ms)
        kwargs = self._send_kwargs(method, path, json, params, long_poll_ms)
        try:
            if long_poll_ms:
                resp = self.long_polls.request(**kwargs)
            else:
                with self._slots:
                    with self._lock:
                        i = self._least_busy()
                        client = self.clients[i]
                        if client is None:
                            client = self.clients[i] = httpx.Client(**self._client_kwargs(_SHARD_CONNECTIONS))
                    try:
                        resp = client.request(**kwargs)
                    finally:
                        with self._lock:
                            self._busy[i] -= 1
        except httpx.TransportError as e:
            raise self._unreachable(e) from e
        return _check(resp)

    def _lean_request(self, method: str, path: str, json: Any, params: Any, long_poll_ms: Optional[int]) -> Any:
        headers = self.config.headers(self.secret)
        body = None if json is None else _json_bytes(json)
        timeout = (long_poll_ms / 1000.0 + _LONG_POLL_SLACK) if long_poll_ms else 30.0
        try:
            if long_poll_ms:
                status, rheaders, rbody = self.lean.request(method, path, headers=headers, body=body,
                                                            params=params, timeout=timeout)
            else:
                with self._slots:
                    status, rheaders, rbody = self.lean.request(method, path, headers=headers, body=body,
                                                                params=params, timeout=timeout)
        except HTTPTransportError as e:
            raise ConnectionFailedError(f"cannot reach the control-plane at {self.config.endpoint}: {e}") from e
        return _check_raw(status, rheaders, rbody)

    def close(self) -> None:
        if self.lean is not None:
            self.lean.close()
        for c in (*self.clients, self.long_polls):
            if c is not None:
                c.close()

    def __enter__(self) -> "SyncTransport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _proxied() -> bool:
    """Whether the environment names a proxy (httpx honours these; the lean client does not)."""
    return any(os.environ.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                           "all_proxy"))


def _json_bytes(obj: Any) -> bytes:
    return json_module.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _check_raw(status: int, headers: Dict[str, str], body: bytes) -> Any:
    if status >= 400:
        raise error_from_response(httpx.Response(status, headers=headers, content=body))
    if status == 204 or not body:
        return None
    try:
        return json_module.loads(body)
    except ValueError:
        raise ControlPlaneError(status, f"expected JSON, got {body[:200]!r}") from None


class AsyncTransport(_Transport):
    """For the worker loop, the result poller and the asyncio caller (one event loop).

    Requests go through the lean HTTP/1.1 client (http11.py), a fraction of httpx's CPU per
    request; httpx only when the environment names a proxy (which httpx honours)."""

    def __init__(self, config: Config, secret: Optional[str] = None) -> None:
        super().__init__(config, secret)
        self.lean: Optional[LeanClient] = None
        if not _proxied():
            tls = config.endpoint.lower().startswith("https://")
            self.lean = LeanClient(config.endpoint, ssl_context=_ssl_context() if tls else None)
        self.clients: List[Optional[httpx.AsyncClient]] = [None] * _SHARDS  # made when first needed
        self.long_polls: Optional[httpx.AsyncClient] = None
        if self.lean is None:
            self.long_polls = httpx.AsyncClient(**self._client_kwargs(_LONG_POLL_CONNECTIONS))
        self._slots: Optional[asyncio.Semaphore] = None  # made on the loop at the first request (Python 3.9)

    async def request(self, method: str, path: str, json: Any = None, params: Any = None,
                      long_poll_ms: Optional[int] = None) -> Any:
        if self.lean is not None:
            return await self._lean_request(method, path, json, params, long_poll_ms)
        kwargs = self._send_kwargs(method, path, json, params, long_poll_ms)
        try:
            if long_poll_ms:
                resp = await self.long_polls.request(**kwargs)
            else:
                if self._slots is None:
                    self._slots = asyncio.Semaphore(_SHARDS * _SHARD_CONNECTIONS)
                async with self._slots:
                    i = self._least_busy()
                    try:
                        client = self.clients[i]
                        if client is None:
                            client = self.clients[i] = httpx.AsyncClient(**self._client_kwargs(_SHARD_CONNECTIONS))
                        resp = await client.request(**kwargs)
                    finally:
                        self._busy[i] -= 1
        except httpx.TransportError as e:
            raise self._unreachable(e) from e
        return _check(resp)

    async def _lean_request(self, method: str, path: str, json: Any, params: Any,
                            long_poll_ms: Optional[int]) -> Any:
        headers = self.config.headers(self.secret)
        body = None if json is None else _json_bytes(json)
        timeout = (long_poll_ms / 1000.0 + _LONG_POLL_SLACK) if long_poll_ms else 30.0
        try:
            if long_poll_ms:  # a few at a time, held up to 20 s: never behind the short requests
                status, rheaders, rbody = await self.lean.request(method, path, headers=headers, body=body,
                                                                  params=params, timeout=timeout)
            else:
                if self._slots is None:
                    self._slots = asyncio.Semaphore(_SHARDS * _SHARD_CONNECTIONS)
                async with self._slots:
                    status, rheaders, rbody = await self.lean.request(method, path, headers=headers, body=body,
                                                                      params=params, timeout=timeout)
        except HTTPTransportError as e:
            raise ConnectionFailedError(f"cannot reach the control-plane at {self.config.endpoint}: {e}") from e
        return _check_raw(status, rheaders, rbody)

    async def aclose(self) -> None:
        if self.lean is not None:
            await self.lean.aclose()
        for c in (*self.clients, self.long_polls):
            if c is not None:
                await c.aclose()
