"""Helpers of the console tests (a module of its own: every test folder has a conftest).

`Console` signs a Flask test client in and posts forms with their CSRF token; every page it reads
is checked for what the content security policy forbids (inline script, handlers, style
attributes), so each page test checks that too. `Browser` drives the real headless Chromium
(Selenium, Debian's chromium and chromium-driver): pages by path, sign-in, a screenshot of each
page into the test output, and the browser console's errors.
"""
from __future__ import annotations

import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

from app.settings import MANAGEMENT_SECRET_PREFIX

MANAGEMENT_SECRET = MANAGEMENT_SECRET_PREFIX + "c" * 40
REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = Path(os.environ.get("TEST_OUTPUT_DIR") or REPO_ROOT / "test-output") / "console"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class _InlineCode(HTMLParser):
    """What the content security policy forbids on a page, found by parsing it (escaped text that
    merely reads like a handler, e.g. a function named `<img onerror=...>`, is no finding)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> block")
        self.found += [f"<{tag} {name}=...>" for name in names if name.startswith("on") or name == "style"]
        if tag == "a" and any((value or "").strip().lower().startswith("javascript:") for _, value in attrs):
            self.found.append(f"<{tag}> with a javascript: URL")

    handle_startendtag = handle_starttag


def assert_no_inline_code(html: str, where: str = "page") -> None:
    parser = _InlineCode()
    parser.feed(html)
    parser.close()
    assert not parser.found, f"{where} has {parser.found}, which the content security policy forbids"


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Console:
    """A signed-in console on a Flask test client."""

    def __init__(self, app, secret: str = MANAGEMENT_SECRET, sign_in: bool = True):
        self.app = app
        self.client = app.test_client()
        self.secret = secret
        self.csrf: str | None = None
        if sign_in:
            self.sign_in()

    def sign_in(self) -> None:
        page = self.client.get("/console/sign-in")
        r = self.client.post("/console/sign-in", data={"secret": self.secret, "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303, r.text
        self.csrf = csrf_of(self.get("/console/").text)

    def get(self, path: str, status: int = 200, **kwargs):
        r = self.client.get(path, **kwargs)
        assert r.status_code == status, f"GET {path}: {r.status_code}\n{r.text[:2000]}"
        if r.mimetype == "text/html":
            assert_no_inline_code(r.text, path)
        return r

    def post(self, path: str, data: dict | None = None, status: int | None = None, **kwargs):
        """POST a form with the session's CSRF token; `status` checks the answer's."""
        r = self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)
        if status is not None:
            assert r.status_code == status, f"POST {path}: {r.status_code}\n{r.text[:2000]}"
        if r.mimetype == "text/html":
            assert_no_inline_code(r.text, path)
        return r


class Browser:
    """A real headless Chromium on a running control-plane (`base_url`)."""

    def __init__(self, driver, base_url: str, test_name: str):
        self.driver, self.base_url = driver, base_url
        self.shots = OUTPUT_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self._shot = 0

    def open(self, path: str, shot: str | None = None):
        """Load a page, check the browser logged no error, and save its screenshot (named `shot`)."""
        self.driver.get(self.base_url + path)
        self.assert_no_errors(path)
        self.screenshot(shot or path)
        return self

    def sign_in(self, secret: str, path: str = "/console/") -> None:
        self.driver.get(self.base_url + path)
        self.find("input[name=secret]").send_keys(secret)
        self.find("form button[type=submit]").click()
        self.wait(lambda: "/sign-in" not in self.driver.current_url, "the sign-in to finish")

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def wait(self, condition, what, timeout: float = 15.0):
        """Until condition() is truthy (returned), or fail naming `what` (a callable: what it says
        when the wait fails, e.g. the last value seen)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # noqa: BLE001  (an element replaced mid-read: look again)
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {said} on {self.driver.current_url}")
            time.sleep(0.1)

    def errors(self) -> list[dict]:
        """The browser console's errors since the last call (CSP violations, failed loads, exceptions)."""
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def assert_no_errors(self, where: str = "") -> None:
        found = self.errors()
        assert not found, f"the browser logged errors on {where or self.driver.current_url}: {found}"

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        self._shot += 1
        path = self.shots / f"{self._shot:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'page'}.png"
        self.driver.save_screenshot(str(path))
        return path
