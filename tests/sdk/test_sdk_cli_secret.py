"""How the CLI finds the management secret: flags and environment first; for a local endpoint only,
the local server's .differential/management-secret.txt ($DIFFERENTIAL_DATA_DIR, or found from the
current folder upwards); relative secret files are taken from the current folder."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from differential import management_secret
from differential.management_secret import SecretNotFound, find

from sdk_helpers import subprocess_env

LOCAL = "http://127.0.0.1:4000"
ENV = ("DIFFERENTIAL_MANAGEMENT_SECRET", "DIFFERENTIAL_MANAGEMENT_SECRET_FILE", "DIFFERENTIAL_DATA_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _project(root, secret="sk_management_local"):
    """root/.differential/management-secret.txt, and a folder two levels below root."""
    (root / ".differential").mkdir()
    (root / ".differential" / "management-secret.txt").write_text(secret + "\n")
    deep = root / "src" / "deeper"
    deep.mkdir(parents=True)
    return deep


@pytest.mark.parametrize("endpoint", [LOCAL, "http://localhost:4000", "http://127.0.0.1:4001/", "http://[::1]:4000"])
def test_a_local_endpoint_finds_the_secret_walking_up(tmp_path, monkeypatch, endpoint):
    monkeypatch.chdir(_project(tmp_path))
    assert find(endpoint) == "sk_management_local"


def test_the_nearest_differential_folder_wins(tmp_path, monkeypatch):
    inner = tmp_path / "inner"
    inner.mkdir()
    _project(tmp_path, "sk_management_outer")
    monkeypatch.chdir(_project(inner, "sk_management_inner"))
    assert find(LOCAL) == "sk_management_inner"


@pytest.mark.parametrize("endpoint", ["http://example.com:4000", "https://cp.example.org", "http://10.0.0.5:4000"])
def test_never_for_an_endpoint_on_another_machine(tmp_path, monkeypatch, endpoint):
    monkeypatch.chdir(_project(tmp_path))
    with pytest.raises(SecretNotFound) as info:
        find(endpoint)
    message = str(info.value)
    assert endpoint in message and "--management-secret" in message and "DIFFERENTIAL_MANAGEMENT_SECRET" in message
    assert "only used for an endpoint on this machine" in message


def test_data_dir_is_used_when_set(tmp_path, monkeypatch):
    data = tmp_path / "elsewhere"
    data.mkdir()
    (data / "management-secret.txt").write_text("sk_management_datadir\n")
    monkeypatch.chdir(_project(tmp_path))  # a .differential/ above too: DIFFERENTIAL_DATA_DIR wins
    monkeypatch.setenv("DIFFERENTIAL_DATA_DIR", str(data))
    assert find(LOCAL) == "sk_management_datadir"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFERENTIAL_DATA_DIR", "elsewhere")  # relative: from the current folder
    assert find(LOCAL) == "sk_management_datadir"


def test_data_dir_without_the_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path))
    monkeypatch.setenv("DIFFERENTIAL_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(SecretNotFound) as info:
        find(LOCAL)
    assert str(tmp_path / "empty" / "management-secret.txt") in str(info.value)
    assert "DIFFERENTIAL_DATA_DIR" in str(info.value)


def test_nothing_found_says_where_it_looked_and_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SecretNotFound) as info:
        find(LOCAL)
    message = str(info.value)
    assert f"no .differential/ folder in {tmp_path} or any folder above it" in message
    assert "--management-secret / --management-secret-file" in message
    assert "DIFFERENTIAL_MANAGEMENT_SECRET / DIFFERENTIAL_MANAGEMENT_SECRET_FILE" in message


def test_a_differential_folder_without_the_file_is_named(tmp_path, monkeypatch):
    (tmp_path / ".differential").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SecretNotFound, match=re.escape(str(tmp_path / ".differential" / "management-secret.txt"))):
        find(LOCAL)


def test_given_secrets_come_first(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path))
    given = tmp_path / "given.txt"
    given.write_text("sk_management_file\n")
    assert find(LOCAL, secret="sk_management_flag") == "sk_management_flag"
    assert find(LOCAL, secret_file=str(given)) == "sk_management_file"
    monkeypatch.setenv("DIFFERENTIAL_MANAGEMENT_SECRET_FILE", str(given))
    assert find(LOCAL) == "sk_management_file"
    monkeypatch.setenv("DIFFERENTIAL_MANAGEMENT_SECRET", "sk_management_env")
    assert find(LOCAL) == "sk_management_env"


def test_a_relative_secret_file_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mgmt.txt").write_text("sk_management_relative\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFERENTIAL_MANAGEMENT_SECRET_FILE", "secrets/mgmt.txt")
    assert find("http://example.com") == "sk_management_relative"
    monkeypatch.chdir(tmp_path / "secrets")
    with pytest.raises(SecretNotFound) as info:
        find("http://example.com")
    assert f"cannot read the management secret file {tmp_path / 'secrets' / 'secrets' / 'mgmt.txt'}" in str(info.value)


def test_an_empty_secret_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(_project(tmp_path, ""))
    with pytest.raises(SecretNotFound, match="is empty"):
        find(LOCAL)


def test_is_local():
    assert management_secret.is_local("http://127.0.0.1:4000") and management_secret.is_local("http://localhost")
    assert not management_secret.is_local("http://127.0.0.1.example.com:4000")
    assert not management_secret.is_local("not a url")


def _cli(*args, cwd, env):
    base = subprocess_env()
    for name in (*ENV, "DIFFERENTIAL_ENDPOINT"):
        base.pop(name, None)
    base.update(env)
    return subprocess.run([sys.executable, "-m", "differential.cli", *args], cwd=cwd, env=base,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.postgres
def test_clusters_list_from_a_subfolder_finds_the_local_servers_secret(sdk_control_plane, cluster, tmp_path):
    deep = _project(tmp_path, sdk_control_plane.management_secret)
    r = _cli("clusters", "list", cwd=deep, env={"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url})
    assert r.returncode == 0, r.stderr
    assert cluster["id"] in r.stdout
    # The same folder, but an endpoint on another machine: the local file is not sent there.
    r = _cli("clusters", "list", "--endpoint", "http://192.0.2.1:4000", cwd=deep, env={})
    assert r.returncode == 2 and "only used for an endpoint on this machine" in r.stderr


def test_version_prints_the_sdk_version():
    import differential

    r = _cli("--version", cwd=".", env={})
    assert r.returncode == 0 and r.stdout.strip() == f"differential {differential.__version__}"
