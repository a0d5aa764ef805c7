"""Fixtures of the console tests: the app in-process on each backend (a `Console` client signed in),
and a real control-plane (gunicorn) with a headless Chromium driven by Selenium."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from app import create_app, settings as settings_module

from console_helpers import CHROMEDRIVER, CHROMIUM, MANAGEMENT_SECRET, Browser, Console
from support import postgres
from support.server import ControlPlane


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture
def make_app(backend, tmp_path, request):
    """Factory: make_app(env overrides) -> Flask app on this test's backend (one database per test)."""
    apps = []
    database = {}

    def make(**env_overrides):
        env = {"MANAGEMENT_SECRET": MANAGEMENT_SECRET, "DIFFERENTIAL_DATA_DIR": str(tmp_path / "data"),
               "SWEEPER_ENABLED": "false"}
        if backend == "postgres":
            database.setdefault("url", request.getfixturevalue("fresh_pg_url"))
            env["DATABASE_URL"] = database["url"]
        env.update(env_overrides)
        app = create_app(settings_module.load({k: v for k, v in env.items() if v is not None}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["differential"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def console(app):
    return Console(app)


# --- the real browser -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (scripts/bootstrap --dev installs it as root)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"no Chromium at {CHROMIUM} or no ChromeDriver at {CHROMEDRIVER}: apt-get install chromium "
                    "chromium-driver (scripts/bootstrap --dev does, as root)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The flags that keep Chromium off the network this machine does not have (env README).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--window-size=1366,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console_server(pg_admin_url):
    """A real control-plane (gunicorn) on PostgreSQL for a module's browser tests."""
    url = postgres.create_database("console")
    cp = ControlPlane(database_url=url, env={"SWEEP_INTERVAL_SECONDS": "0.5"})
    cp.start()
    yield cp
    cp.stop()
    try:
        postgres.drop_database(url)
    except Exception:  # noqa: BLE001  (the session's server goes anyway)
        pass


@pytest.fixture
def browser(chromium, console_server, request):
    """The browser on `console_server`, with no cookies; it must log no error during the test."""
    chromium.delete_all_cookies()
    chromium.get(console_server.url + "/console/sign-in")  # a page of the site, so its cookies can go
    chromium.delete_all_cookies()
    chromium.get_log("browser")  # what earlier tests left
    b = Browser(chromium, console_server.url, request.node.name)
    yield b
    b.assert_no_errors("the test's last page")
