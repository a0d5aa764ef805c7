"""Signing in and out and creating a cluster in a real headless Chromium."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_sign_in_create_a_cluster_and_sign_out_in_a_browser(browser, console_server):
    browser.open("/console/", shot="sign-in")
    assert "/console/sign-in" in browser.driver.current_url
    browser.find("input[name=secret]").send_keys("sk_management_not-the-one-at-all-00000000")
    browser.find("form button[type=submit]").click()
    browser.wait(lambda: "not the management secret" in browser.text(), "the refusal")
    browser.errors()  # the 401 answer itself is logged as a failed load; that is the refusal shown

    browser.sign_in(console_server.management_secret)
    browser.screenshot("clusters")
    assert browser.text("h1") == "Clusters"
    browser.find("input[name=description]").send_keys("made in a browser <b>bold</b>")
    browser.find("form[action='/console/clusters'] button").click()
    browser.wait(lambda: "/console/clusters/" in browser.driver.current_url, "the new cluster's page")
    browser.assert_no_errors("the new cluster's page")
    browser.open("/console/", shot="clusters-with-one")
    assert "made in a browser <b>bold</b>" in browser.text("table")  # shown as text, not markup

    browser.find("form.sign-out button").click()
    browser.wait(lambda: "/console/sign-in" in browser.driver.current_url, "the sign-in page")
    browser.open("/console/", shot="signed-out")
    assert "/console/sign-in" in browser.driver.current_url
