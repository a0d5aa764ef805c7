"""Start-up: settings fail fast naming the variable; the server settings reach gunicorn; DATABASE_URL's
query options reach PostgreSQL; the local server checks its port; migrations are safe from many replicas."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg2
import pytest

from app import db, migrations, sealing, settings as settings_module

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
    ("PORT", "http", "PORT must be a port number"),
    ("PORT", "70000", "PORT must be a port number"),
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be a whole number above 0 (got '0')"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
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


def test_server_settings_reach_gunicorn(tmp_path):
    env = {"PORT": "4999", "BIND_HOST": "127.0.0.2", "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "7",
           "KEEPALIVE_SECONDS": "9", "ACCESS_LOG": "-", "LOG_LEVEL": "debug", "DIFFERENTIAL_DATA_DIR": str(tmp_path)}
    result = run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--print-config", "app.wsgi:app"], env)
    assert result.returncode == 0, result.stderr
    config = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    config = {k.strip(): v.strip() for k, v in config.items()}
    assert config["bind"] == "['127.0.0.2:4999']"
    assert (config["workers"], config["threads"], config["keepalive"]) == ("3", "7", "9")
    assert (config["accesslog"], config["loglevel"]) == ("-", "debug")


def test_the_local_server_has_its_own_defaults_and_production_keeps_its_own():
    production, local = settings_module.load({}), settings_module.load({}, local=True)
    assert (production.bind_host, production.web_concurrency, production.access_log) == ("0.0.0.0", 2, "")
    # `make run` prints the app's own request line (REQUEST_LOG), not gunicorn's as well.
    assert (local.bind_host, local.web_concurrency, local.access_log) == ("127.0.0.1", 1, "")
    assert settings_module.load({"BIND_HOST": "0.0.0.0"}, local=True).bind_host == "0.0.0.0"


def test_the_image_setting_refuses_to_start_without_database_url():
    with pytest.raises(settings_module.SettingsError) as caught:
        settings_module.load({"DIFFERENTIAL_REQUIRE_DATABASE_URL": "true"})
    message = str(caught.value)
    assert "DATABASE_URL is required" in message and "DATABASE_URL=postgresql://" in message
    assert f"DATABASE_URL={settings_module.SQLITE_ESCAPE_HATCH}" in message  # the escape hatch, spelt out
    keyed = {"DIFFERENTIAL_REQUIRE_DATABASE_URL": "true", "SECRETS_KEY": sealing.new_key()}  # also required there
    chosen = settings_module.load({**keyed, "DATABASE_URL": settings_module.SQLITE_ESCAPE_HATCH})
    assert chosen.sqlite_path.endswith("/var/lib/differential/differential.db")
    assert settings_module.load({**keyed, "DATABASE_URL": "postgresql://u@h/db"}).uses_postgres


def test_local_server_says_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run([sys.executable, "-m", "app"], {"PORT": str(port), "DIFFERENTIAL_DATA_DIR": str(tmp_path)},
                     timeout=20)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert f"port {port}" in line and "PORT=" in line
    assert "Differential control-plane" not in result.stdout  # no banner for a server that is not coming
    assert not (tmp_path / "management-secret.txt").exists()


def _show(database, name: str) -> str:
    database.connect()
    try:
        return database.execute_sql(f"SHOW {name}").fetchone()[0]
    finally:
        database.close()


def test_database_url_query_options_reach_postgres(fresh_pg_url):
    url = fresh_pg_url + "?options=-c%20application_name%3Dfrom-the-url%20-c%20statement_timeout%3D12345&sslmode=disable"
    database = db._postgres(settings_module.load({"DATABASE_URL": url}))
    try:
        assert database.connect_params["sslmode"] == "disable"
        assert _show(database, "application_name") == "from-the-url"
        assert _show(database, "statement_timeout") == "12345ms"  # the URL's wins over ours
        assert _show(database, "idle_in_transaction_session_timeout") == "1min"  # ours still applies
    finally:
        database.close_all()


def test_database_url_without_options_gets_ours(fresh_pg_url):
    database = db._postgres(settings_module.load({"DATABASE_URL": fresh_pg_url}))
    try:
        assert _show(database, "statement_timeout") == "30s"
    finally:
        database.close_all()


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
    versions = [m[0] for m in migrations.MIGRATIONS]
    assert applied == [str(versions)] + ["[]"] * 4
    with psycopg2.connect(fresh_pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert cur.fetchall() == [(v,) for v in versions]
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")
        indexes = {row[0] for row in cur.fetchall()}
    assert {"jobs_claim", "jobs_running_deadline", "jobs_cache", "jobs_finished"} <= indexes

