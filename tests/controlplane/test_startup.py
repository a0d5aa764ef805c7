"""Start-up: settings fail fast naming the variable; migrations are safe from many replicas."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg2
import pytest

from app import settings as settings_module

ROOT = Path(__file__).resolve().parents[2]


def run(argv, env, timeout=60):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MANAGEMENT_SECRET")}
    full_env.update(env)
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name,value,expected", [
    ("MANAGEMENT_SECRET", "abc", "must start with 'sk_management_'"),
    ("MANAGEMENT_SECRET", "sk_management_short", "at least 32 characters"),
    ("DATABASE_URL", "mysql://x/y", "expected postgresql://"),
    ("MACHINE_TIMEOUT_SECONDS", "-1", "greater than 0"),
    ("SWEEPER_ENABLED", "maybe", "expected one of"),
])
def test_bad_settings_name_the_variable(name, value, expected):
    with pytest.raises(settings_module.SettingsError) as caught:
        settings_module.load({name: value})
    assert name in str(caught.value) and expected in str(caught.value)


def test_the_guides_secret_recipe_is_accepted():
    secret = subprocess.run(["bash", "-c", 'echo "sk_management_$(openssl rand -base64 32)"'],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert settings_module.load({"MANAGEMENT_SECRET": secret}).management_secret == secret


def test_secret_values_are_never_echoed_in_errors():
    with pytest.raises(settings_module.SettingsError) as caught:
        settings_module.load({"MANAGEMENT_SECRET": "not-the-right-shape-but-secret"})
    assert "not-the-right-shape" not in str(caught.value)


def test_local_server_exits_non_zero_naming_the_bad_variable(tmp_path):
    result = run([sys.executable, "-m", "app"], {"MANAGEMENT_SECRET": "abc", "DIFFERENTIAL_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "MANAGEMENT_SECRET" in result.stderr


def test_gunicorn_exits_non_zero_naming_the_bad_variable(tmp_path):
    result = run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"],
                 {"PORT": "0", "DIFFERENTIAL_DATA_DIR": str(tmp_path), "RETENTION_DAYS": "soon"})
    assert result.returncode != 0
    assert "RETENTION_DAYS" in result.stderr


@pytest.mark.parametrize("name", ["GUNICORN_THREADS", "KEEPALIVE_SECONDS"])  # gunicorn itself parses WEB_CONCURRENCY
def test_gunicorn_exits_non_zero_naming_a_bad_server_setting(tmp_path, name):
    result = run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app.wsgi:app"],
                 {"PORT": "0", "DIFFERENTIAL_DATA_DIR": str(tmp_path), name: "many"})
    assert result.returncode != 0
    assert f"{name} must be a whole number above 0 (got 'many')" in result.stderr


MIGRATE = textwrap.dedent("""
    import sys
    from app import db, migrations, settings
    print(migrations.migrate(db.bind(settings.load({"DATABASE_URL": sys.argv[1]}))))
""")


def test_migrations_from_several_processes_apply_once(fresh_pg_url):
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE, fresh_pg_url], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    applied = sorted(out.strip() for out, _ in outputs)
    assert applied == ["[1]"] + ["[]"] * 4
    with psycopg2.connect(fresh_pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations")
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")
        indexes = {row[0] for row in cur.fetchall()}
    assert {"jobs_claim", "jobs_running_deadline", "jobs_cache", "jobs_finished"} <= indexes
