"""The console as a user meets it, end to end in a real headless Chromium against a real
control-plane: sign in, create a cluster, run a Python service and call it, find the call in the
explorer, read its decoded arguments and result, cancel a pending call, make and delete an access
point, and open every page; each page gets a screenshot and no page may log a browser error."""
from __future__ import annotations

import re
import uuid

import httpx
import pytest

from differential import Differential

pytestmark = pytest.mark.slow


def _cluster_secret(server, cluster_id: str) -> str:
    listed = httpx.get(server.url + "/clusters", headers=server.management_headers, timeout=10).json()
    return next(c["apiSecret"] for c in listed if c["id"] == cluster_id)


def test_a_user_walks_through_every_page(browser, console_server):
    b = browser
    b.sign_in(console_server.management_secret)
    b.screenshot("clusters")
    b.find("input[name=description]").send_keys("walkthrough")
    b.find("form[action='/console/clusters'] button").click()
    b.wait(lambda: re.search(r"/console/clusters/([^/]+)/overview", b.driver.current_url), "the new cluster's overview")
    cluster_id = re.search(r"/console/clusters/([^/]+)/", b.driver.current_url).group(1)
    base = f"/console/clusters/{cluster_id}"
    b.assert_no_errors("the overview of a new cluster")
    b.screenshot("overview-empty")

    secret = _cluster_secret(console_server, cluster_id)
    service = f"greeter{uuid.uuid4().hex[:6]}"
    d = Differential(secret, endpoint=console_server.url)
    svc = d.service(service, concurrency=4)

    @svc.function
    def greet(name: str, times: int = 1) -> dict:
        """Greets someone."""
        return {"greeting": f"Hello, {name}!" * times, "html": "<img src=x onerror=alert(1)>"}

    svc.start()
    try:
        result = d.client(service, timeout=30).greet("Ada", 2)
        assert result["greeting"] == "Hello, Ada!Hello, Ada!"

        # The overview refreshes itself: the service shows up without a reload.
        b.open(f"{base}/overview", shot="overview")
        b.wait(lambda: service in b.text(), "the service on the overview")

        b.open(f"{base}/services", shot="services")
        assert service in b.text()
        b.open(f"{base}/services/{service}", shot="service")
        assert "greet" in b.text()

        # The explorer finds the call; its page shows the arguments and the result decoded.
        b.open(f"{base}/jobs", shot="explorer")
        b.wait(lambda: "greet" in b.text("table"), "the call in the explorer")
        b.find("table a[href*='/jobs/']").click()
        b.wait(lambda: "Hello, Ada!Hello, Ada!" in b.text(), "the decoded result")
        page = b.text()
        assert "Ada" in page and "<img src=x onerror=alert(1)>" in page  # shown as text
        b.assert_no_errors("the job's page")
        b.screenshot("job")
        b.open(f"{base}/jobs?service={service}", shot="explorer-filtered")
    finally:
        assert svc.stop(timeout=10)

    # A call nobody serves stays pending: cancel it from its page.
    d.close()
    r = httpx.post(console_server.url + "/jobs", headers={"Authorization": f"Basic {secret}"},
                   json={"service": "nobody-serves-this", "targetFn": "fn", "targetArgs": "kA=="}, timeout=10)
    assert r.status_code == 201, r.text
    pending_id = r.json()["id"]
    b.open(f"{base}/jobs/{pending_id}", shot="pending-job")
    b.find("form[action$='/cancel'] button").click()
    b.driver.switch_to.alert.accept()
    b.wait(lambda: "cancelled" in b.text(), "the cancelled state")
    b.assert_no_errors("the cancelled job")
    b.screenshot("cancelled-job")

    # An access point: made, its token shown once, then deleted.
    b.open(f"{base}/access-points", shot="access-points")
    b.find("input[name=name]").send_keys("walkthrough-ap")
    b.find("input[name=allowedServices]").send_keys(service)
    b.find("form[action$='/access-points'] button").click()
    b.wait(lambda: "sk_ap_" in b.text(), "the new token")
    token = re.search(r"sk_ap_[0-9a-f]{64}", b.text()).group(0)
    b.screenshot("access-point-token")
    b.open(f"{base}/access-points", shot="access-points-listed")
    assert "walkthrough-ap" in b.text() and token not in b.driver.page_source
    b.find("form[action$='/walkthrough-ap/delete'] button").click()
    b.driver.switch_to.alert.accept()
    b.wait(lambda: "Deleted access point" in b.text(), "the deletion notice")
    assert not b.find_all("form[action$='/walkthrough-ap/delete']")

    for page in ("activity", "monitoring", "settings", "overview"):
        b.open(f"{base}/{page}", shot=page)
        assert b.find("h1").text
