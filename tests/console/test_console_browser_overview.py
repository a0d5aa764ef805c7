"""The overview, services, a service and monitoring in a real headless Chromium, with a Python
service (the SDK) running against the control-plane: the service, its function and its calls
show, and the overview picks up a service that connects later without a reload."""
from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from differential import Differential

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(console_server):
    return console_server.create_cluster("overview in a browser")


def start_service(d: Differential, name: str):
    svc = d.service(name)

    @svc.function
    def greet(who: str, times: int = 1) -> str:
        """Greets someone."""
        return ", ".join([f"Hello {who}"] * times)

    svc.start()
    return svc


def test_overview_services_service_and_monitoring_in_a_browser(browser, console_server, cluster):
    name = f"greeter-{uuid.uuid4().hex[:6]}"
    late = f"late <b>{uuid.uuid4().hex[:6]}</b>"
    d = Differential(cluster["apiSecret"], endpoint=console_server.url)
    services = [start_service(d, name)]
    try:
        client = d.client(name, timeout=30)
        assert [client.greet("Ada", n) for n in (1, 2, 3)][2] == "Hello Ada, Hello Ada, Hello Ada"
        base = f"/console/clusters/{cluster['id']}"

        browser.sign_in(console_server.management_secret, path=base + "/overview")
        browser.open(base + "/overview", shot="overview")
        region = browser.wait(lambda: browser.find("#overview-live"), "the overview's live region")
        assert region.get_attribute("data-live") == "3"
        row = browser.wait(lambda: next((r for r in browser.find_all("table.overview-services tbody tr")
                                         if r.text.startswith(name)), None), "the service's row")
        cells = [c.text for c in row.find_elements("css selector", "td")]
        assert cells[1] == "1" and cells[6] == "3" and cells[7] == "0", cells  # 1 live worker, 3 calls, 0 failed

        # a service that connects while the page is open shows up without a reload
        browser.driver.execute_script("window.stillTheSamePage = true;")
        services.append(start_service(d, late))
        browser.wait(lambda: late in browser.text("#overview-live"), "the late service in the live region", 20)
        assert browser.driver.execute_script("return window.stillTheSamePage === true;")
        browser.assert_no_errors("the refreshed overview")
        browser.screenshot("overview-refreshed")

        browser.open(base + "/services", shot="services")
        text = browser.text("main table")
        assert name in text and "greet" in text and late in text  # the name as text, not markup

        browser.find(f"a[href='{base}/services/{name}']").click()
        browser.wait(lambda: browser.text("h1") == name, "the service's page")
        browser.assert_no_errors("the service's page")
        browser.screenshot("service")
        main = browser.text()
        assert "greet" in main and '"who"' in main and "Greets someone." in main  # its schema, readable
        assert len(browser.find_all("main section:nth-of-type(4) tbody tr")) == 3  # the recent calls
        assert main.count("resolution") == 3

        browser.open(base + "/services/" + quote(late, safe=""), shot="late-service")
        assert browser.text("h1") == late

        browser.open(base + f"/monitoring?service={quote(name)}", shot="monitoring")
        assert browser.find(".cards .stat .value").text == "3"  # finished calls (the tail, before any fold)
        assert len(browser.find_all("figure.chart svg")) == 4
        assert "greet" in browser.text("main section.card table")
        browser.open(base + "/monitoring?range=7d", shot="monitoring-7d")
    finally:
        for svc in services:
            svc.stop(timeout=10)
        d.close()
