"""The asset store: where service bundles and client-library packages live.

Two stores with one interface. With ASSET_UPLOAD_BUCKET set, the S3 bucket: uploads go straight
to S3 through a presigned PUT (SigV4, with the content type a signed header, so a client cannot
store something else under it). Without it, a local folder under DIFFERENTIAL_DATA_DIR, for the
embedded default and no AWS account: the control-plane signs the upload URL itself (HMAC of
method, key, content type, size limit and expiry) and accepts the PUT at `/assets/<key>`.

Neither store trusts an upload: `inspect` reads the object back and hashes it, and only what it
reports counts (the engine records it). Keys are `<kind>/<id>`, checked here, so no key leaves the
bucket's prefixes or the folder.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote, urlencode

from ..settings import Settings

CHUNK_BYTES = 1024 * 1024
_KEY = re.compile(r"^[a-z_]{1,32}/[A-Za-z0-9_.-]{1,200}$")
LOCAL_UPLOAD_PATH = "/assets/"  # + key: the local store's upload route (app/api/assets.py)


class StoreError(RuntimeError):
    """The store could not be reached or refused (S3 down, permissions): a 502 to the caller."""


class UploadRefused(ValueError):
    """A local upload whose signature, expiry, content type or size does not hold."""


@dataclass(frozen=True)
class Upload:
    url: str
    headers: dict[str, str]  # to send with the PUT, exactly
    expires_at: dt.datetime


@dataclass(frozen=True)
class StoredObject:
    size: int
    sha256: str  # hex
    sha1: str  # hex
    sha512: str  # hex

    @property
    def integrity(self) -> str:
        return integrity(self.sha512)


def integrity(sha512_hex: str) -> str:
    """npm's Subresource Integrity string of a sha512 digest."""
    return "sha512-" + base64.b64encode(bytes.fromhex(sha512_hex)).decode()


def check_key(key: str) -> str:
    if not _KEY.match(key or "") or ".." in key:
        raise ValueError(f"{key!r} is not an asset key (<kind>/<id>)")
    return key


def _expiry(seconds: int) -> tuple[int, dt.datetime]:
    at = int(time.time()) + int(seconds)
    return at, dt.datetime.fromtimestamp(at, dt.timezone.utc).replace(tzinfo=None)


def hash_chunks(chunks: Iterator[bytes], max_bytes: int) -> StoredObject | None:
    """Digests of a stream; None when it holds more than max_bytes (nothing that large counts)."""
    size, h256, h1, h512 = 0, hashlib.sha256(), hashlib.sha1(), hashlib.sha512()  # noqa: S324 (npm's shasum)
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            return None
        h256.update(chunk)
        h1.update(chunk)
        h512.update(chunk)
    return StoredObject(size, h256.hexdigest(), h1.hexdigest(), h512.hexdigest())


class TooBig(ValueError):
    pass


class _Store:
    def read(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    def inspect(self, key: str, *, max_bytes: int) -> StoredObject | None:
        """The object's size and digests, read back whole (None when it is absent; TooBig past max_bytes)."""
        try:
            found = hash_chunks(self.read(key), max_bytes)
        except KeyError:
            return None
        if found is None:
            raise TooBig(f"the object {key} is larger than {max_bytes} bytes")
        return found


class S3Store(_Store):
    kind = "s3"

    def __init__(self, settings: Settings):
        self.bucket = settings.asset_upload_bucket
        self._settings = settings

    def _client(self):
        from . import aws

        return aws.client("s3", self._settings, signature_version="s3v4")

    def presign_put(self, key: str, content_type: str, *, max_bytes: int, base_url: str,
                    expires_seconds: int = 3600) -> Upload:
        _, expires_at = _expiry(expires_seconds)
        try:
            url = self._client().generate_presigned_url(
                "put_object", Params={"Bucket": self.bucket, "Key": check_key(key), "ContentType": content_type},
                ExpiresIn=int(expires_seconds), HttpMethod="PUT")
        except Exception as exc:  # botocore raises many types; all mean the same here
            raise StoreError(f"presigning an upload to s3://{self.bucket}/{key} failed: {exc}") from exc
        return Upload(url, {"Content-Type": content_type}, expires_at)

    def read(self, key: str) -> Iterator[bytes]:
        client = self._client()
        try:
            body = client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"]
        except client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise KeyError(key) from None
            raise StoreError(f"reading s3://{self.bucket}/{key} failed: {exc}") from exc
        return _s3_chunks(body)

    def delete(self, key: str) -> None:
        try:
            self._client().delete_object(Bucket=self.bucket, Key=check_key(key))
        except Exception as exc:
            raise StoreError(f"deleting s3://{self.bucket}/{key} failed: {exc}") from exc


def _s3_chunks(body) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


class LocalStore(_Store):
    """A folder (mode 0700) of objects; the control-plane itself accepts their signed uploads."""

    kind = "local"
    bucket = None

    def __init__(self, root: str | Path, signing_key: bytes):
        self.root = Path(root)
        self._key = signing_key

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def signature(self, key: str, content_type: str, max_bytes: int, expires: int) -> str:
        message = "\n".join(("PUT", key, content_type, str(max_bytes), str(expires))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def presign_put(self, key: str, content_type: str, *, max_bytes: int, base_url: str,
                    expires_seconds: int = 3600) -> Upload:
        expires, expires_at = _expiry(expires_seconds)
        query = urlencode({"contentType": content_type, "maxBytes": max_bytes, "expires": expires,
                           "signature": self.signature(check_key(key), content_type, max_bytes, expires)})
        url = f"{base_url.rstrip('/')}{LOCAL_UPLOAD_PATH}{quote(key)}?{query}"
        return Upload(url, {"Content-Type": content_type}, expires_at)

    def check_upload(self, key: str, args: dict, content_type: str | None, length: int | None) -> int:
        """The size limit of a signed upload, or UploadRefused saying which part does not hold."""
        try:
            max_bytes, expires = int(args.get("maxBytes", "")), int(args.get("expires", ""))
        except ValueError:
            raise UploadRefused("the upload URL is not one this control-plane signed (maxBytes, expires)") from None
        signed_type = args.get("contentType", "")
        expected = self.signature(check_key(key), signed_type, max_bytes, expires)
        if not hmac.compare_digest(expected, str(args.get("signature", ""))):
            raise UploadRefused("the upload URL's signature does not match: ask for a new one (POST .../assets)")
        if time.time() > expires:
            raise UploadRefused("the upload URL has expired: ask for a new one (POST .../assets)")
        if (content_type or "").split(";")[0].strip().lower() != signed_type.lower():
            raise UploadRefused(f"the upload must be sent with Content-Type: {signed_type} (the type it was signed for)")
        if length is not None and length > max_bytes:
            raise TooBig(f"the upload is {length} bytes, more than the {max_bytes} this URL allows")
        return max_bytes

    def write(self, key: str, stream: BinaryIO, max_bytes: int) -> int:
        """Store the stream whole (written aside, then renamed) or not at all; its size."""
        path = self._path(key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooBig(f"the upload is more than the {max_bytes} bytes this URL allows")
                    out.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return size

    def read(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None
        return _file_chunks(handle)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _file_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


AssetStore = S3Store | LocalStore


def signing_key(sealing_key: str) -> bytes:
    """The local store's URL-signing key, derived from the newest secrets key (SECRETS_KEY or its file)."""
    return hashlib.sha256(b"differential-asset-upload:" + sealing_key.encode()).digest()


def for_settings(settings: Settings, key: bytes) -> AssetStore:
    if settings.asset_upload_bucket:
        return S3Store(settings)
    return LocalStore(Path(settings.data_dir) / "assets", key)
