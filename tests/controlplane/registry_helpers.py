"""Helpers of the registry tests: reserve, upload through the asset store's presigned URL, publish.

Work over a Flask test client (`Api`) or over HTTP against a real control-plane (`HttpApi`), so the
same steps run in-process and against gunicorn with the local store or with moto's S3."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from urllib.parse import urlsplit

import httpx


def tgz(version: str, note: str = "") -> bytes:
    """A small npm package tarball (package/package.json, package/index.js, package/index.d.ts);
    the same arguments give the same bytes (no time in the tar or gzip headers)."""
    out = io.BytesIO()
    files = {"package/package.json": f'{{"name":"x","version":"{version}","main":"index.js","types":"index.d.ts"}}',
             "package/index.js": f"module.exports = {{}}; // {note}\n",
             "package/index.d.ts": "export {};\n"}
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def wheel(module: str, version: str, distribution: str | None = None) -> bytes:
    """A minimal valid wheel (pip reads its METADATA): `<module>/__init__.py` holding VERSION."""
    distribution = distribution or module.replace("_", "-")
    info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={_urlsafe_digest(text.encode())},{len(text.encode())}\n"
                     for name, text in files.items()) + f"{info}/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return out.getvalue()


def _urlsafe_digest(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Steps:
    """reserve / upload / publish over some client; `send(method, url, **kw)` -> (status, json, headers)."""

    def __init__(self, send, mgmt: dict):
        self.send, self.mgmt = send, mgmt

    def reserve(self, cluster_id: str, status: int = 201, **body) -> dict:
        code, answer, _ = self.send("POST", f"/clusters/{cluster_id}/client-libraries", json=body, headers=self.mgmt)
        assert code == status, answer
        return answer

    def upload(self, cluster_id: str, library: dict, data: bytes) -> None:
        code, target, _ = self.send("POST", f"/clusters/{cluster_id}/assets", headers=self.mgmt,
                                    json={"type": "client_library", "target": library["id"]})
        assert code == 201, target
        code, answer, _ = self.send("PUT", target["presignedUrl"], content=data, headers=target["headers"])
        assert code == 200, answer

    def publish(self, cluster_id: str, library_id: str, status: int = 200) -> dict:
        code, answer, _ = self.send("POST", f"/clusters/{cluster_id}/client-libraries/{library_id}/publish",
                                    headers=self.mgmt)
        assert code == status, answer
        return answer

    def release(self, cluster_id: str, increment: str = "patch", language: str = "typescript",
                data: bytes | None = None) -> tuple[dict, bytes]:
        """Reserve, upload and publish one version; (its answer, the bytes uploaded)."""
        library = self.reserve(cluster_id, increment=increment, language=language)
        if data is None:
            data = (tgz(library["version"]) if language == "typescript"
                    else wheel(library["module"], library["version"], library["distribution"]))
        self.upload(cluster_id, library, data)
        return self.publish(cluster_id, library["id"]), data


def flask_steps(client, mgmt: dict) -> Steps:
    def send(method, url, json=None, content=None, headers=None):
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        r = client.open(path, method=method, json=json, data=content, headers=headers or {})
        return r.status_code, (r.json if r.is_json else r.data), r.headers

    return Steps(send, mgmt)


def http_steps(base_url: str, mgmt: dict) -> Steps:
    def send(method, url, json=None, content=None, headers=None):
        full = url if url.startswith("http") else base_url + url
        r = httpx.request(method, full, json=json, content=content, headers=headers or {}, timeout=30)
        try:
            body = r.json()
        except ValueError:
            body = r.content
        return r.status_code, body, r.headers

    return Steps(send, mgmt)
