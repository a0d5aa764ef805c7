"""The README's reverse proxy, deploy/nginx.conf, run by the real nginx in front of a test server:
calls (and long polls) go through it, and slow clients at the proxy do not delay /live or a call.

nginx runs as a plain process from a temp dir (`-p`, `-c`, `daemon off`), never as a system
service; scripts/bootstrap --dev installs the Debian package. The site file is used as written,
with only its port, upstream and certificate paths put to the test's (each must be found once).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.server import ControlPlane, _free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
LIMIT = 1.0
CALL = {"service": "svc", "targetFn": "fn", "targetArgs": "kA=="}

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/bootstrap --dev installs it)")


def _site(port: int, upstream: int, cert: Path, key: Path) -> str:
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in (("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
                     ("server 127.0.0.1:4000;", f"server 127.0.0.1:{upstream};"),
                     ("/etc/nginx/tls/differential.crt", str(cert)),
                     ("/etc/nginx/tls/differential.key", str(key))):
        assert text.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, workdir: Path, upstream: int):
        self.dir = workdir
        self.port = _free_port()
        self.cert, key = workdir / "tls.crt", workdir / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        (workdir / "differential.conf").write_text(_site(self.port, upstream, self.cert, key))
        temp = "\n".join(f"  {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # As root (CI), nginx's workers would otherwise run as nobody, who cannot use this dir.
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(f"""{user}
worker_processes 1;
daemon off;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'} info;
events {{ worker_connections 4096; }}
http {{
  access_log {workdir / 'access.log'};
{temp}
  include {workdir / 'differential.conf'};
}}
""")
        self.proc = subprocess.Popen([NGINX, "-e", str(workdir / "error.log"), "-p", str(workdir),
                                      "-c", str(workdir / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"https://127.0.0.1:{self.port}"
        self.tls = ssl.create_default_context(cafile=str(self.cert))
        until = time.monotonic() + 20
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/live", verify=self.tls, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nginx did not proxy /live within 20 s: {self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "error.log").read_text()[-3000:]
        return "(no log)"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    with ControlPlane(env={"WEB_CONCURRENCY": "1"}) as cp:
        cluster = cp.create_cluster()
        nginx = Nginx(tmp_path_factory.mktemp("nginx"), cp.port)
        try:
            yield nginx, cp, cluster
        finally:
            nginx.stop()


def _auth(cluster, machine=None) -> dict:
    headers = {"Authorization": f"Basic {cluster['apiSecret']}"}
    if machine:
        headers["x-machine-id"] = machine
    return headers


def test_calls_and_long_polls_go_through_nginx(front):
    nginx, _, cluster = front
    with httpx.Client(base_url=nginx.url, verify=nginx.tls, timeout=30) as client:
        created = client.post("/jobs", json=CALL, headers=_auth(cluster))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert client.get(f"/jobs/{job_id}?ttl=0", headers=_auth(cluster)).json()["status"] == "pending"
        # A body bigger than nginx keeps in memory is buffered to a file, then passed on whole.
        big = client.post("/jobs", json={**CALL, "targetArgs": "kA" * 100_000}, headers=_auth(cluster))
        assert big.status_code == 201, big.text
        claimed = client.post("/jobs-request", headers=_auth(cluster, "m-1"),
                              json={"service": "svc", "limit": 10, "ttl": 0, "functions": [{"name": "fn"}]})
        assert {job["id"] for job in claimed.json()} >= {job_id}
        started = time.monotonic()  # a long poll is held for its ttl, not cut by the proxy
        held = client.post("/jobs-request", headers=_auth(cluster, "m-1"),
                           json={"service": "idle", "limit": 1, "ttl": 5000, "functions": [{"name": "fn"}]})
        assert held.status_code == 200 and held.json() == [] and time.monotonic() - started >= 4.5
        assert client.get("/nowhere").json()["error"]["code"] == "route_not_found"


def test_slow_clients_at_nginx_do_not_delay_live_or_a_call(front):
    nginx, _, cluster = front
    starts = [b"POST /jobs HTTP/1.1\r\nHost: x\r\n",
              b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"]
    pieces = [b"X-Slow: 1\r\n", b" "]
    socks = []
    stop = threading.Event()

    def trickle():
        while not stop.wait(2.0):
            for i, sock in enumerate(socks):
                with contextlib.suppress(OSError):
                    sock.send(pieces[i % 2])

    thread = threading.Thread(target=trickle, daemon=True)
    try:
        for i in range(300):  # half trickle their head, half their body
            sock = nginx.tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.port), timeout=5),
                                         server_hostname="127.0.0.1")
            sock.sendall(starts[i % 2])
            socks.append(sock)
        thread.start()
        worst_live = worst_create = 0.0
        until = time.monotonic() + 6.0
        while time.monotonic() < until:
            worst_live = max(worst_live, _timed(lambda: httpx.get(nginx.url + "/live", verify=nginx.tls, timeout=5)))
            worst_create = max(worst_create, _timed(lambda: httpx.post(
                nginx.url + "/jobs", json=CALL, headers=_auth(cluster), verify=nginx.tls, timeout=5)))
            time.sleep(0.5)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        for sock in socks:
            sock.close()
    assert worst_live < LIMIT and worst_create < LIMIT, (worst_live, worst_create)


def _timed(send) -> float:
    started = time.monotonic()
    try:
        r = send()
    except httpx.TimeoutException:
        return float("inf")
    assert r.status_code in (200, 201), r.text
    return time.monotonic() - started
