"""Fixtures for the SDK tests: one control-plane on PostgreSQL shared by the module-independent
tests (each test gets its own cluster, so they cannot see each other's jobs), and helpers."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

try:  # the package is installed editable by scripts/bootstrap; fall back to the source tree
    import differential  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "src"))

from support import postgres  # noqa: E402
from support.server import ControlPlane  # noqa: E402

from differential import Differential  # noqa: E402


@pytest.fixture(scope="session")
def sdk_control_plane(pg_admin_url):
    """A real control-plane (gunicorn) on its own PostgreSQL database, for the whole session."""
    db = postgres.create_database("sdk")
    cp = ControlPlane(database_url=db, env={"SWEEP_INTERVAL_SECONDS": "0.5"})
    cp.start()
    yield cp
    cp.stop()
    try:
        postgres.drop_database(db)
    except Exception:
        pass


@pytest.fixture
def cluster(sdk_control_plane):
    return sdk_control_plane.create_cluster(f"sdk-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def d(sdk_control_plane, cluster):
    client = Differential(cluster["apiSecret"], endpoint=sdk_control_plane.url)
    yield client
    client.close()


@pytest.fixture
def service_name():
    return f"svc{uuid.uuid4().hex[:10]}"
