"""The job explorer and a job's page in a real headless Chromium, against a real control-plane with
a Python service started by the SDK: find a call, read its decoded arguments and result, cancel a
pending call and re-run it, and watch the explorer show a new call without a reload."""
from __future__ import annotations

import uuid

import pytest

from differential import Differential

pytestmark = pytest.mark.slow

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def cluster(console_server):
    return console_server.create_cluster("browser jobs")


@pytest.fixture
def d(console_server, cluster):
    client = Differential(cluster["apiSecret"], endpoint=console_server.url)
    yield client
    client.close()


@pytest.fixture
def greeter(d):
    name = f"greeter{uuid.uuid4().hex[:8]}"
    svc = d.service(name)

    @svc.function
    def greet(who: str, times: int) -> dict:
        return {"greeting": f"hello {who}", "times": times, "html": EVIL}

    svc.start()
    yield name
    assert svc.stop(timeout=10)


def test_find_a_call_open_it_cancel_and_rerun_a_pending_one_and_see_new_calls_live(browser, console_server,
                                                                                   cluster, d, greeter):
    job_id = d.client(greeter, background=True).greet("Ada", 3)
    assert d.result(job_id, timeout=30)["greeting"] == "hello Ada"
    jobs_path = f"/console/clusters/{cluster['id']}/jobs"

    browser.sign_in(console_server.management_secret, jobs_path)
    browser.open(jobs_path, shot="explorer")
    row = browser.wait(lambda: browser.find(f"#jobs-live a[href$='/jobs/{job_id}']"), "the call in the explorer")
    assert greeter in browser.text("#jobs-live") and "success" in browser.text("#jobs-live")
    row.click()
    browser.wait(lambda: browser.driver.current_url.endswith(f"/jobs/{job_id}"), "the job's page")
    browser.assert_no_errors("the job's page")
    browser.screenshot("job-success")
    arguments = browser.text("#job-arguments")
    assert '"Ada"' in arguments and "3" in arguments
    result = browser.text("#job-result")
    assert '"greeting": "hello Ada"' in result and EVIL in result  # the HTML is text, not an element
    assert not browser.find_all("#job-result img")
    assert "jobResulted" in browser.text(".timeline")
    assert not browser.find_all("#job-live[data-live]")  # finished: it no longer refreshes

    # A call to a service nobody serves stays pending: cancel it from its page, then re-run it.
    pending = d.client(f"nobody{uuid.uuid4().hex[:6]}", background=True).wait_for_ever("x")
    browser.open(f"{jobs_path}/{pending}", shot="job-pending")
    assert browser.find("#job-live").get_attribute("data-live")
    browser.find("input[name=reason]").send_keys("not needed <today>")
    browser.find("form[action$='/cancel'] button").click()
    browser.wait(lambda: browser.driver.switch_to.alert, "the confirmation").accept()
    browser.wait(lambda: "cancelled by an operator: not needed <today>" in browser.text(), "the cancelled job")
    browser.assert_no_errors("the cancelled job")
    browser.screenshot("job-cancelled")
    assert d.job(pending).state == "cancelled"
    browser.find("form[action$='/rerun'] button").click()
    browser.wait(lambda: browser.driver.switch_to.alert, "the confirmation").accept()
    browser.wait(lambda: browser.find_all("#job-live .status-pending"), "the re-run job pending")
    browser.assert_no_errors("the re-run job")
    browser.screenshot("job-rerun")
    assert "jobRerun" in browser.text(".timeline") and d.job(pending).state == "pending"

    # The explorer's first page shows a new call by itself.
    browser.open(jobs_path, shot="explorer-before")
    browser.driver.execute_script("window.notReloaded = true;")
    fresh = d.client(greeter, background=True).greet("Grace", 1)
    browser.wait(lambda: browser.find_all(f"#jobs-live a[href$='/jobs/{fresh}']"), "the new call, live", timeout=30)
    assert browser.driver.execute_script("return window.notReloaded === true;")
    browser.assert_no_errors("the live explorer")
    browser.screenshot("explorer-live")
    d.cancel(pending)

    # Filtered without scripts' help: the GET form, then the activity log of one job.
    browser.find("details.job-filters summary").click()
    browser.find("input[name=status][value=success]").click()
    browser.find("input[name=service]").send_keys(greeter)
    browser.find("details.job-filters button[type=submit]").click()
    browser.wait(lambda: "status=success" in browser.driver.current_url, "the filtered explorer")
    shown = {a.text for a in browser.find_all("#jobs-live tbody a")}
    assert shown == {job_id, fresh} or shown == {job_id}  # the fresh call may not have finished yet
    browser.assert_no_errors("the filtered explorer")
    browser.screenshot("explorer-filtered")
    seen = []

    def kinds():  # another server process may hold the last event for up to half a second: ask again
        browser.driver.get(f"{console_server.url}/console/clusters/{cluster['id']}/activity?jobId={pending}")
        seen[:] = [td.text for td in browser.find_all("#activity-live tbody tr td:first-child")]
        return seen

    browser.wait(lambda: kinds() == ["jobCancelled", "jobRerun", "jobCancelled", "jobCreated"],
                 lambda: f"the job's events (the last page showed {seen}; the server logged:\n"
                         f"{console_server.log_tail()})")
    browser.assert_no_errors("the activity of a job")
    browser.screenshot("activity-of-a-job")
    browser.open(f"/console/clusters/{cluster['id']}/activity", shot="activity")
    assert "jobResulted" in browser.text("#activity-live")
