"""Access points and the settings page in a real headless Chromium: create an access point and see
its token once, rotate it and delete it (accepting each confirmation), reveal the cluster's secret
and rotate it; a screenshot of each page, and no error in the browser's console."""
from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.slow

TOKEN = re.compile(r"sk_ap_[0-9a-f]{64}")


def _accept_confirm(browser, question: str) -> None:
    alert = browser.wait(lambda: browser.driver.switch_to.alert, "the confirmation", timeout=5)
    assert question in alert.text
    alert.accept()


def _calls(console_server, cluster_id: str, token: str) -> int:
    return httpx.post(f"{console_server.url}/clusters/{cluster_id}/execute", timeout=10.0,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"service": "svc", "function": "fn", "waitSeconds": 0}).status_code


def test_access_points_and_settings_in_a_browser(browser, console_server):
    cluster = console_server.create_cluster("browser <i>access</i>")
    cid = cluster["id"]
    base = f"/console/clusters/{cid}"
    browser.sign_in(console_server.management_secret, path=base + "/access-points")
    browser.open(base + "/access-points", shot="access-points-empty")
    assert "No access point yet" in browser.text()

    browser.find("input[name=name]").send_keys("browser-ops")
    services = browser.find("input[name=allowedServices]")
    services.clear()
    services.send_keys("svc, <b>reports</b>")
    browser.find("#create button[type=submit]").click()
    browser.wait(lambda: "created" in browser.text("h1"), "the token page")
    browser.assert_no_errors("the token page")
    browser.screenshot("token-once")
    token = browser.text("#access-point-token")
    assert TOKEN.fullmatch(token)
    assert browser.find("button[data-copy='#access-point-token']").is_displayed()  # enhanced by the script
    assert token in browser.text("#access-point-curl")
    assert "/console/" in browser.driver.current_url and token not in browser.driver.current_url
    assert _calls(console_server, cid, token) == 202

    browser.open(base + "/access-points", shot="access-points-one")
    listed = browser.text("table")
    assert "browser-ops" in listed and "<b>reports</b>" in listed and token not in browser.driver.page_source

    browser.find("form[action$='/browser-ops/rotate'] button").click()
    _accept_confirm(browser, "Give browser-ops a new token?")
    browser.wait(lambda: "New token" in browser.text("h1"), "the rotated token's page")
    browser.assert_no_errors("the rotated token's page")
    browser.screenshot("token-rotated")
    rotated = browser.text("#access-point-token")
    assert TOKEN.fullmatch(rotated) and rotated != token
    assert _calls(console_server, cid, token) == 401 and _calls(console_server, cid, rotated) == 202

    browser.open(base + "/access-points")
    browser.find("form[action$='/browser-ops/delete'] button").click()
    _accept_confirm(browser, "Delete access point browser-ops?")
    browser.wait(lambda: "Deleted access point" in browser.text(), "the list after the delete")
    browser.assert_no_errors("the list after the delete")
    browser.screenshot("access-point-deleted")
    assert "No access point yet" in browser.text()
    assert _calls(console_server, cid, rotated) == 401

    browser.open(base + "/settings", shot="settings")
    secret = browser.find("#cluster-secret")
    assert not secret.is_displayed()  # behind its <details>
    browser.find("details.secret summary").click()
    browser.wait(lambda: secret.is_displayed(), "the secret revealed")
    assert secret.text == cluster["apiSecret"]
    assert browser.find("button[data-copy='#cluster-secret']").is_displayed()
    assert "browser <i>access</i>" in browser.text("header")  # the description as text
    browser.screenshot("settings-secret-shown")

    grace = browser.find("input[name=graceSeconds]")
    grace.clear()
    grace.send_keys("0")
    browser.find("form[action$='/secret/rotate'] button").click()
    _accept_confirm(browser, f"Rotate the API secret of {cid}?")
    browser.wait(lambda: "New API secret" in browser.text("h1"), "the new secret's page")
    browser.assert_no_errors("the new secret's page")
    browser.screenshot("secret-rotated")
    new_secret = browser.text("#new-cluster-secret")
    assert new_secret.startswith("sk_") and new_secret != cluster["apiSecret"]
    assert "stopped working at once" in browser.text()
    assert _calls(console_server, cid, new_secret) == 202
    # Every worker process forgets the old secret on the notice the rotation sends: at once, give or take a beat.
    browser.wait(lambda: _calls(console_server, cid, cluster["apiSecret"]) == 401, "the old secret refused", timeout=10)
