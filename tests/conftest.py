"""Shared fixtures only: the test PostgreSQL server, fresh databases on it, the Node SDK."""
from __future__ import annotations

import warnings

import pytest

from support import moto, node, postgres

_PG_FIXTURES = {"pg_admin_url", "fresh_pg_url", "make_pg_database"}


# Tests that measure time or fault a shared server (PostgreSQL restarts, SIGTERM, thousands of
# sockets): scripts/test runs them on their own after the rest, which runs in parallel processes.
SERIAL = ("tests/faults/test_fault_metrics_replicas.py", "tests/faults/test_fault_postgres_restart.py",
          "tests/faults/test_fault_schedule_failover.py", "tests/faults/test_fault_sigterm.py",
          "tests/faults/test_fault_sweeper_failover.py", "tests/faults/test_fault_worker_killed.py",
          "tests/controlplane/test_fair_sharing.py", "tests/controlplane/test_slow_clients.py",
          "tests/controlplane/test_memory_bounds.py")


def pytest_collection_modifyitems(items):
    # Mark by fixture use, so `-m "not postgres"` / `-m "not node"` select without manual marks.
    for item in items:
        if item.nodeid.split("::")[0] in SERIAL:
            item.add_marker(pytest.mark.serial)
        names = set(getattr(item, "fixturenames", ()))
        if names & _PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if "node_sdk" in names:
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def pg_admin_url():
    """Admin DSN of the session's PostgreSQL (TEST_DATABASE_URL, or a throwaway cluster)."""
    url = postgres.ensure_server()
    yield url
    postgres.shutdown()  # no-op unless this process started it


@pytest.fixture
def make_pg_database(pg_admin_url):
    """Factory: make_pg_database(prefix="t") -> URL of a new empty database, dropped after the test."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        url = postgres.create_database(prefix)
        created.append(url)
        return url

    yield make
    for url in created:
        try:
            postgres.drop_database(url)
        except Exception as exc:  # a fault test may have left the server odd; never fail teardown
            warnings.warn(f"could not drop {url}: {exc}", stacklevel=1)


@pytest.fixture
def fresh_pg_url(make_pg_database, request):
    """URL of a new empty database for this test, dropped after it."""
    return make_pg_database(request.node.name[:20])


@pytest.fixture(scope="session")
def node_sdk():
    """tests/node, with @differentialhq/core 3.18.0 installed (npm ci if missing)."""
    return node.ensure_node_sdk()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server on 127.0.0.1 for the session (tests/support/moto.py); reset it where state matters."""
    yield moto.moto_server()
    moto.stop()


@pytest.fixture
def moto_clean(moto_endpoint):
    """The session's moto server, emptied before this test."""
    moto.reset()
    return moto_endpoint
