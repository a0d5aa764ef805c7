"""Secrets in output (audit L2): LOG_LEVEL=DEBUG logs no SQL parameters (SQL_DEBUG=1 does, on
purpose), and `python -m app` masks the database password in its banner."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cp_helpers import Api

ROOT = Path(__file__).resolve().parents[2]
ARGS = "c2VjcmV0LWpvYi1hcmd1bWVudHM="  # base64 of "secret-job-arguments"


def _traffic(app) -> str:
    api = Api(app)
    cluster = api.new_cluster()
    api.call(cluster, args=ARGS)
    api.client.get("/clusters", headers=api.mgmt)
    return cluster["apiSecret"]


def test_debug_logs_hold_no_sql_parameters(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    secret = _traffic(make_app(log_level="DEBUG"))
    assert caplog.records, "the test sees the app's log"
    assert secret not in caplog.text and secret.removeprefix("sk_") not in caplog.text
    assert ARGS not in caplog.text


def test_sql_debug_logs_statements_when_asked(make_app, caplog):
    caplog.set_level(logging.DEBUG)
    secret = _traffic(make_app(log_level="DEBUG", sql_debug=True))
    assert ARGS in caplog.text  # what the switch is for
    assert secret.removeprefix("sk_") not in caplog.text  # sealed before it reaches any statement


@pytest.mark.parametrize("password", ["Sup3rS3cretPW", "p%40ss:w0rd"])
def test_the_local_banner_masks_the_database_password(tmp_path, password):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MANAGEMENT_SECRET", "SECRETS_KEY")}
    env.update({"DATABASE_URL": f"postgresql://dbuser:{password}@127.0.0.1:1/differential",
                "DIFFERENTIAL_DATA_DIR": str(tmp_path), "PORT": "0"})
    # The banner comes first; then gunicorn fails to reach a database on port 1 and exits.
    result = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=90)
    assert "  database:          postgresql://dbuser:***@127.0.0.1:1/differential\n" in result.stdout, result.stdout
    for part in {password, password.replace("%40", "@")}:
        assert part not in result.stdout + result.stderr
