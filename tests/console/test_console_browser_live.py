"""Live regions in Chromium: a page refreshes itself while its tab is visible, asks nothing while
it is hidden, and catches up at once when it is shown again."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow

# Counts the page's fetches, and lets the test say whether the tab is hidden (the script reads
# document.hidden and listens for visibilitychange, as it does for a real tab switch).
_INSTRUMENT = """
window.__fetches = 0;
const original = window.fetch.bind(window);
window.fetch = (...args) => { window.__fetches += 1; return original(...args); };
window.__setHidden = (hidden) => {
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
};
"""


def test_a_live_page_polls_only_while_its_tab_is_visible(browser, console_server):
    cluster = console_server.create_cluster("live")
    browser.sign_in(console_server.management_secret, f"/console/clusters/{cluster['id']}/overview")
    live = browser.find("[data-live]")
    seconds = float(live.get_attribute("data-live"))
    browser.driver.execute_script(_INSTRUMENT)
    fetches = lambda: browser.driver.execute_script("return window.__fetches")  # noqa: E731

    browser.wait(lambda: fetches() >= 1, "a refresh while visible", timeout=seconds * 3)

    browser.driver.execute_script("window.__setHidden(true)")
    time.sleep(seconds)  # a refresh already under way may still land
    hidden_since = fetches()
    time.sleep(seconds * 2.5)
    assert fetches() == hidden_since, "the page kept polling while its tab was hidden"

    browser.driver.execute_script("window.__setHidden(false)")
    browser.wait(lambda: fetches() > hidden_since, "a refresh as soon as the tab is shown", timeout=2)
    browser.wait(lambda: fetches() > hidden_since + 1, "polling again after that", timeout=seconds * 3)
    browser.screenshot("overview-live")
