"""One moto server for the test session, on 127.0.0.1 (AWS stand-in: S3, SNS, CloudFormation, Lambda, Logs).

`moto_server()` starts it once per process and returns its endpoint; `reset()` empties every
service's state between tests (moto's own `/moto-api/reset`). Clients built with `client()` use
fixed test credentials and the region of the settings' default."""
from __future__ import annotations

import threading
import urllib.request

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # noqa: S105 (moto accepts any)

_lock = threading.Lock()
_server = None
_endpoint: str | None = None


def moto_server() -> str:
    """The endpoint (http://127.0.0.1:PORT) of this process's moto server, started on first use."""
    global _server, _endpoint
    with _lock:
        if _endpoint is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per moto request

            _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            _server.start()
            host, port = _server.get_host_and_port()
            _endpoint = f"http://{host}:{port}"
        return _endpoint


def reset() -> None:
    request = urllib.request.Request(f"{moto_server()}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (127.0.0.1)
        response.read()


def stop() -> None:
    global _server, _endpoint
    with _lock:
        if _server is not None:
            _server.stop()
        _server, _endpoint = None, None


def client(service: str):
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=moto_server(), aws_access_key_id=ACCESS_KEY_ID,
                        aws_secret_access_key=SECRET_ACCESS_KEY)


def env() -> dict[str, str]:
    """Environment of a control-plane (or CLI) that talks to this moto server."""
    return {"AWS_ENDPOINT_URL": moto_server(), "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
