"""A Python-SDK worker and caller keep working through a secret rotation when switched to the new
secret inside the grace; after a rotation with no grace, the old secret is refused at once."""
from __future__ import annotations

import httpx
import pytest

from differential import AuthenticationError, Differential

pytestmark = pytest.mark.postgres


def _worker(d: Differential, service_name: str, tag: str):
    svc = d.service(service_name)

    @svc.function
    def who(x: int) -> list:
        return [tag, x]

    svc.start()
    return svc


def test_a_worker_switched_to_the_new_secret_inside_the_grace_keeps_serving(sdk_control_plane, cluster, service_name):
    cp = sdk_control_plane
    old = Differential(cluster["apiSecret"], endpoint=cp.url)
    worker_old = _worker(old, service_name, "old")
    try:
        assert old.call(service_name, "who", 1) == ["old", 1]
        r = httpx.post(f"{cp.url}/clusters/{cluster['id']}/secret/rotate", headers=cp.management_headers,
                       json={"graceSeconds": 120}, timeout=10)
        assert r.status_code == 200, r.text
        new = Differential(r.json()["apiSecret"], endpoint=cp.url)
        assert old.call(service_name, "who", 2) == ["old", 2]  # the old secret, in its grace
        worker_new = _worker(new, service_name, "new")  # switched inside the grace
        assert worker_old.stop(timeout=10)
        try:
            assert old.call(service_name, "who", 3) == ["new", 3]  # a caller on the old secret still
            assert new.call(service_name, "who", 4) == ["new", 4]
            r = httpx.post(f"{cp.url}/clusters/{cluster['id']}/secret/rotate", headers=cp.management_headers,
                           json={"graceSeconds": 0}, timeout=10)
            assert r.status_code == 200, r.text
            newest = Differential(r.json()["apiSecret"], endpoint=cp.url)
            with pytest.raises(AuthenticationError):
                old.call(service_name, "who", 5, timeout=10)
            with pytest.raises(AuthenticationError):
                new.call(service_name, "who", 5, timeout=10)  # grace 0: the secret it replaced stops at once
            newest.close()
        finally:
            worker_new.stop(timeout=10)
            new.close()
    finally:
        worker_old.stop(timeout=10)
        old.close()
