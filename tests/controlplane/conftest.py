"""Fixtures for control-plane tests: an in-process app on each backend, and a client for it."""
from __future__ import annotations

import pytest

from app import create_app, settings as settings_module

from cp_helpers import MANAGEMENT_SECRET, Api


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def make_app(backend, tmp_path, request):
    """Factory: make_app(**settings overrides) -> Flask app on this test's backend."""
    apps = []

    def make(**overrides):
        env = {"MANAGEMENT_SECRET": MANAGEMENT_SECRET, "DIFFERENTIAL_DATA_DIR": str(tmp_path / "data"),
               "SWEEPER_ENABLED": "false"}
        if backend == "postgres":
            env["DATABASE_URL"] = request.getfixturevalue("fresh_pg_url")
        settings = settings_module.load(env, **overrides)
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["differential"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def api(app):
    return Api(app)
