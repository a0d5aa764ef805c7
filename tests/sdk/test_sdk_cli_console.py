"""`differential console`: the console's URL for the configured endpoint (the same --endpoint and
DIFFERENTIAL_ENDPOINT as every command), opened with --open, and never a secret in its output."""
from __future__ import annotations

import json
import os
import stat
import sys
import time

import httpx
import pytest

from differential.cli import UsageError, console_url
from test_sdk_cli import cli

MANAGEMENT = "sk_management_" + "m" * 40
API = "sk_" + "a" * 64


def test_it_prints_the_console_of_the_default_endpoint():
    r = cli("console")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "http://127.0.0.1:4000/console/\n"
    assert "management secret" in r.stderr


def test_it_follows_the_endpoint_option_and_variable_like_every_command():
    env = {"DIFFERENTIAL_ENDPOINT": "https://cp.example/differential/"}
    assert cli("console", env=env).stdout == "https://cp.example/differential/console/\n"
    assert cli("console", "--endpoint", "http://10.0.0.5:4000", env=env).stdout == "http://10.0.0.5:4000/console/\n"
    assert cli("--endpoint", "http://10.0.0.5:4000", "console", env=env).stdout == "http://10.0.0.5:4000/console/\n"
    r = cli("console", "--cluster", "cluster-brave-otter-1a2b3c4d5e", env=env)
    assert r.stdout == "https://cp.example/differential/console/clusters/cluster-brave-otter-1a2b3c4d5e\n"
    r = cli("console", "--json", env=env)
    assert json.loads(r.stdout) == {"url": "https://cp.example/differential/console/"}


def test_it_never_prints_a_secret(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "management-secret.txt").write_text(MANAGEMENT + "\n")
    env = {"DIFFERENTIAL_MANAGEMENT_SECRET": MANAGEMENT, "DIFFERENTIAL_API_SECRET": API,
           "DIFFERENTIAL_DATA_DIR": str(data), "DIFFERENTIAL_ENDPOINT": "http://127.0.0.1:4000"}
    r = cli("console", env=env)
    assert r.returncode == 0 and r.stdout == "http://127.0.0.1:4000/console/\n"
    assert str(data / "management-secret.txt") in r.stderr  # where it is, for the sign-in form
    r2 = cli("console", "--json", "--endpoint", "https://ops:hunter2-password@cp.example:8443/?token=" + API, env=env)
    assert json.loads(r2.stdout) == {"url": "https://cp.example:8443/console/"}
    for out in (r.stdout, r.stderr, r2.stdout, r2.stderr):
        assert MANAGEMENT not in out and API not in out and "hunter2" not in out


def test_open_hands_the_url_to_the_web_browser(tmp_path):
    seen = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f"#!{sys.executable}\nimport sys\nopen({str(seen)!r}, 'w').write(sys.argv[1])\n")
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    r = cli("console", "--open", "--cluster", "cluster-x", env={"BROWSER": str(browser)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "http://127.0.0.1:4000/console/clusters/cluster-x\n"
    deadline = time.monotonic() + 10
    while not seen.exists() and time.monotonic() < deadline:  # the browser is started, not waited for
        time.sleep(0.05)
    assert seen.read_text() == "http://127.0.0.1:4000/console/clusters/cluster-x"


def test_open_without_any_browser_still_prints_the_url_and_says_so(monkeypatch, capsys):
    import webbrowser

    from differential import cli as module

    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    monkeypatch.delenv("DIFFERENTIAL_ENDPOINT", raising=False)
    assert module.main(["console", "--open", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"url": "http://127.0.0.1:4000/console/", "opened": False}
    assert "no browser could be opened" in out.err


@pytest.mark.parametrize("endpoint", ["ftp://cp.example", "cp.example:4000", "http://", "http://[::1"])
def test_an_endpoint_that_is_not_http_is_a_usage_error(endpoint):
    with pytest.raises(UsageError):
        console_url(endpoint)
    r = cli("console", "--endpoint", endpoint)
    assert r.returncode == 2 and "endpoint" in r.stderr and r.stdout == ""


def test_console_url_keeps_a_path_prefix_and_an_ipv6_host():
    assert console_url("http://[::1]:4000") == "http://[::1]:4000/console/"
    assert console_url("https://cp.example/a/b///", "c/d") == "https://cp.example/a/b/console/clusters/c%2Fd"


@pytest.mark.postgres
def test_the_url_it_prints_is_the_live_console(sdk_control_plane):
    r = cli("console", env={"DIFFERENTIAL_ENDPOINT": sdk_control_plane.url})
    url = r.stdout.strip()
    page = httpx.get(url, timeout=10.0)
    assert page.status_code == 303 and page.headers["Location"].startswith("/console/sign-in")
    assert httpx.get(url + "sign-in", timeout=10.0).status_code == 200
    assert os.path.basename(url.rstrip("/")) == "console"
