"""The job explorer and a job's page, in-process on both backends: filters, keyset pages, search by
id, bad input as 400 pages naming the field, decoded and escaped payloads, the timeline, and the
Cancel and Re-run forms with their refusals and their CSRF."""
from __future__ import annotations

import base64
import datetime as dt
import html
import re

import msgpack
import pytest

from app import db
from app.engine import console_jobs
from app.models import Job

from console_helpers import MANAGEMENT_SECRET

MGMT = {"Authorization": f"Basic {MANAGEMENT_SECRET}"}


def packed(value) -> str:
    return base64.b64encode(msgpack.packb(value)).decode()


class Jobs:
    """A cluster and its calls, made through the protocol as the SDKs do."""

    def __init__(self, console):
        self.console = console
        self.client = console.client
        r = self.client.post("/clusters", headers=MGMT, json={"description": "jobs"})
        assert r.status_code == 201, r.text
        self.cluster = r.json
        self.id = r.json["id"]
        self.auth = {"Authorization": f"Basic {r.json['apiSecret']}", "x-machine-id": "machine-a"}

    def call(self, service="svc", fn="fn", args=None, **config) -> str:
        body = {"service": service, "targetFn": fn, "targetArgs": packed(args if args is not None else [1])}
        if config:
            body["callConfig"] = config
        r = self.client.post("/jobs", headers=self.auth, json=body)
        assert r.status_code == 201, r.text
        return r.json["id"]

    def claim(self, service="svc", fn="fn") -> list[str]:
        r = self.client.post("/jobs-request", headers=self.auth,
                             json={"service": service, "limit": 100, "ttl": 0, "functions": [{"name": fn}]})
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json]

    def result(self, job_id, value, kind="resolution"):
        r = self.client.post(f"/jobs/{job_id}/result", headers=self.auth,
                             json={"result": packed(value), "resultType": kind, "functionExecutionTime": 7})
        assert r.status_code == 204, r.text

    def page(self, query="", status=200):
        return self.console.get(f"/console/clusters/{self.id}/jobs{query}", status=status)

    def job_page(self, job_id, status=200):
        return self.console.get(f"/console/clusters/{self.id}/jobs/{job_id}", status=status)


@pytest.fixture
def jobs(console):
    return Jobs(console)


JOB_LINK = re.compile(r'/console/clusters/[^/]+/jobs/([0-9A-Za-z_-]+)"')


def listed(page_text: str) -> list[str]:
    return JOB_LINK.findall(page_text)


def older_link(page_text: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', page_text)
    return html.unescape(found.group(1)) if found else None


def test_the_explorer_lists_newest_first_with_links_and_refreshes_live(jobs):
    first, second = jobs.call(fn="first"), jobs.call(fn="second")
    page = jobs.page()
    assert listed(page.text) == [second, first]
    assert 'id="jobs-live" data-live="5"' in page.text
    assert "pending" in page.text and "first" in page.text and "0 / 4" in page.text


def test_an_empty_cluster_says_what_to_do(jobs):
    page = jobs.page()
    assert "No job yet in this cluster" in page.text and "SDK" in page.text
    assert "No job matches" in jobs.page("?service=nothing").text


def test_filters_by_status_service_function_and_time(jobs, app):
    a = jobs.call(service="billing", fn="charge")
    b = jobs.call(service="billing", fn="refund")
    c = jobs.call(service="mail", fn="send")
    claimed = jobs.claim(service="billing", fn="charge")
    assert set(claimed) == {a, b}
    jobs.result(a, "ok")
    assert listed(jobs.page("?status=success").text) == [a]
    assert listed(jobs.page("?status=running").text) == [b]
    assert listed(jobs.page("?status=running&status=pending").text) == [c, b]
    both = jobs.page("?status=pending,success").text
    assert listed(both) == [c, a] and 'value="pending" checked' in both and 'value="success" checked' in both
    assert listed(jobs.page("?service=billing").text) == [b, a]
    assert listed(jobs.page("?service=billing&function=refund").text) == [b]
    assert listed(jobs.page("?function=send").text) == [c]
    filtered = jobs.page("?status=success&service=billing").text
    assert 'value="success" checked' in filtered and 'value="billing"' in filtered and "Clear filters" in filtered

    with app.app_context():  # spread the three over the days, to filter by created time
        for job_id, day in ((a, 1), (b, 2), (c, 3)):
            db.unit_of_work(lambda job_id=job_id, day=day: Job.update(
                created_at=dt.datetime(2026, 11, day, 12, 0)).where(Job.id == job_id).execute())
    assert listed(jobs.page("?from=2026-11-02T00:00").text) == [c, b]
    assert listed(jobs.page("?to=2026-11-02T12:00").text) == [a]  # before: the bound itself is out
    assert listed(jobs.page("?from=2026-11-01T12:00&to=2026-11-03T00:00:00").text) == [b, a]
    assert listed(jobs.page("?from=2026-11-02T13:00%2B01:00").text) == [c, b]  # an offset is honoured
    assert 'value="2026-11-02T00:00"' in jobs.page("?from=2026-11-02T00:00").text


def test_pages_through_every_job_once_while_new_ones_arrive(jobs):
    made = [jobs.call(fn=f"f{i % 3}") for i in range(57)]
    seen, url, pages = [], f"/console/clusters/{jobs.id}/jobs", 0
    while url:
        page = jobs.console.get(url)
        pages += 1
        seen += listed(page.text)
        if pages == 1:
            assert "data-live" in page.text and 'rel="prev"' not in page.text
            jobs.call(fn="late")  # newer than every listed job: never on an older page
        else:
            assert "data-live" not in page.text and "← Newest" in page.text  # an older page stays still
        url = older_link(page.text)
    assert pages == 2
    assert seen == list(reversed(made)) and len(set(seen)) == 57


def test_pages_keep_their_filters(jobs):
    made = [jobs.call(service="paged") for _ in range(52)] + [jobs.call(service="other")]
    first = jobs.page("?service=paged")
    link = older_link(first.text)
    assert "service=paged" in link and "cursor=" in link
    rest = listed(jobs.console.get(link).text)
    assert listed(first.text) + rest == list(reversed(made[:52]))


@pytest.mark.parametrize("query, field", [
    ("?status=bogus", "status"), ("?status=pending,done", "status"), ("?from=yesterday", "from"),
    ("?to=2026-13-01T00:00", "to"), ("?cursor=bm90LWEtY3Vyc29y", "cursor"), ("?cursor=!!", "cursor"),
    ("?from=2026-11-02T00:00&to=2026-11-01T00:00", "to"), ("?service=" + "s" * 201, "service"),
    ("?function=a%01b", "function"), ("?service=a%00b", "service"), ("?from=0001-01-01T00:00%2B01:00", "from"),
])
def test_bad_filter_input_is_a_400_naming_the_field(jobs, query, field):
    jobs.call()
    page = jobs.page(query, status=400)
    assert re.search(rf'<p class="error" role="alert">{field}: ', page.text), page.text
    assert listed(page.text) == [] and "data-live" not in page.text
    assert 'name="status"' in page.text  # the form is still there, to fix the input


def test_search_by_id_goes_to_the_job_or_says_there_is_none(jobs, console):
    job_id = jobs.call()
    r = jobs.page(f"?id=+{job_id}+", status=303)
    assert r.headers["Location"] == f"/console/clusters/{jobs.id}/jobs/{job_id}"
    missing = jobs.page("?id=<b>nope</b>", status=404)
    assert "No job with id &#39;&lt;b&gt;nope&lt;/b&gt;&#39; in this cluster." in missing.text
    assert listed(missing.text) == [job_id]  # the explorer is still there
    assert "data-live" not in missing.text  # a refresh of this URL would answer 404 again
    assert "id=" not in (older_link(missing.text) or "")
    jobs.page("?id=" + "x" * 300, status=404)
    jobs.page("?id=a%00b", status=404)
    other = Jobs(console)  # another cluster's job is not found here
    other_job = other.call()
    jobs.page(f"?id={other_job}", status=404)


def test_an_unknown_cluster_is_a_404_page(console):
    r = console.get("/console/clusters/cluster-none/jobs", status=404)
    assert "does not exist" in r.text
    console.get("/console/clusters/cluster-none/jobs?id=abc", status=404)


def test_engine_job_exists_and_known_functions(jobs, app):
    job_id = jobs.call(service="billing", fn="x")
    jobs.claim(service="billing", fn="charge")
    with app.app_context():
        assert console_jobs.job_exists(jobs.id, job_id)
        assert not console_jobs.job_exists(jobs.id, "nope")
        assert console_jobs.known_functions(jobs.id) == {"billing": ["charge"]}
    page = jobs.page()
    assert '<option value="billing">' in page.text and '<option value="charge">' in page.text


# --- a job's page --------------------------------------------------------------------------------


def test_the_job_page_decodes_arguments_and_result_and_shows_the_timeline(jobs):
    job_id = jobs.call(fn="greet", args=["Ada", {"times": 2, "tags": ["a", "b"]}])
    page = jobs.job_page(job_id)
    assert 'id="job-live" data-live="3"' in page.text  # pending: it refreshes itself
    assert "Cancel job" in page.text and "Re-run job" not in page.text
    arguments = re.search(r'<pre class="payload" id="job-arguments">(.*?)</pre>', page.text, re.S).group(1)
    assert html.unescape(arguments).startswith('[\n  "Ada",\n  {\n    "times": 2,')
    jobs.claim(fn="greet")
    jobs.result(job_id, {"greeting": "hello Ada", "n": 2})
    page = jobs.job_page(job_id)
    assert "data-live" not in page.text  # terminal: the server stops the refresh
    result = html.unescape(re.search(r'<pre class="payload" id="job-result">(.*?)</pre>', page.text, re.S).group(1))
    assert '"greeting": "hello Ada"' in result
    assert "status-resolution" in page.text and "1 of 4 allowed" in page.text and "machine-a" in page.text
    assert "nothing to cancel or re-run" in page.text
    types = re.findall(r'<span class="event-type">([^<]+)</span>', page.text)
    assert types == ["jobCreated", "jobReceived", "jobResulted"]  # in time order


def test_html_in_a_result_arguments_and_names_renders_as_text(jobs):
    evil = "<img src=x onerror=alert(1)>"
    service, fn = "<script>alert(1)</script>", "<b>fn</b>"
    job_id = jobs.call(service=service, fn=fn, args=[evil])
    jobs.claim(service=service, fn=fn)
    jobs.result(job_id, evil)
    for page in (jobs.job_page(job_id), jobs.page(), jobs.console.get(f"/console/clusters/{jobs.id}/activity")):
        for raw in (evil, service, fn):
            assert raw not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "&lt;b&gt;fn&lt;/b&gt;" in page.text
    assert '<pre class="payload" id="job-result">&#34;&lt;img src=x onerror=alert(1)&gt;&#34;</pre>' in jobs.job_page(job_id).text


def test_a_rejection_shows_the_error_name_message_code_stack_and_fields(jobs):
    job_id = jobs.call(fn="withdraw")
    jobs.claim(fn="withdraw")
    error = {"name": "InsufficientFunds", "message": "cannot withdraw <50>", "code": "E_FUNDS",
             "stack": "Traceback (most recent call last):\n  File \"w.py\", line 3, in withdraw\nInsufficientFunds",
             "balance": 12, "cause": {"name": "Low", "message": "below zero"}}
    jobs.result(job_id, error, kind="rejection")
    page = jobs.job_page(job_id).text
    assert '<strong class="error-name">InsufficientFunds</strong>' in page
    assert '<code class="error-code">E_FUNDS</code>' in page
    assert '<p class="error-message">cannot withdraw &lt;50&gt;</p>' in page
    assert re.search(r'<pre class="stack">Traceback \(most recent call last\):\n  File &#34;w.py&#34;, line 3', page)
    assert "<dt>balance</dt><dd><code>12</code></dd>" in page and "below zero" in page
    assert "status-rejection" in page and "threw" in jobs.page().text


def test_a_bare_js_error_and_a_payload_that_is_not_msgpack(jobs, app):
    job_id = jobs.call(fn="js")
    jobs.claim(fn="js")
    jobs.result(job_id, ["TypeError", "x is undefined"], kind="rejection")
    page = jobs.job_page(job_id).text
    assert '<strong class="error-name">TypeError</strong>' in page and "x is undefined" in page
    odd = jobs.call(fn="odd")
    jobs.claim(fn="odd")
    jobs.result(odd, {"name": "Odd", "message": {"why": "<not text>"}}, kind="rejection")
    assert '<p class="error-message">{\n  &#34;why&#34;: &#34;&lt;not text&gt;&#34;\n}</p>' in jobs.job_page(odd).text
    with app.app_context():
        db.unit_of_work(lambda: Job.update(target_args="not base64!").where(Job.id == job_id).execute())
    assert "(not MessagePack: the payload is not base64; as stored)" in jobs.job_page(job_id).text


def test_an_unknown_job_is_a_404_page(jobs):
    assert "does not exist" in jobs.job_page("nope", status=404).text


def test_cancel_a_pending_job_with_a_reason_then_rerun_it(jobs):
    job_id = jobs.call()
    base = f"/console/clusters/{jobs.id}/jobs/{job_id}"
    r = jobs.console.post(base + "/cancel", {"reason": "wrong <input>"}, status=303)
    assert r.headers["Location"] == base
    page = jobs.job_page(job_id).text
    assert "status-cancelled" in page and "cancelled by an operator: wrong &lt;input&gt;" in page
    assert "data-live" not in page and "Re-run job" in page and "Cancel job" not in page
    assert "jobCancelled" in page and "DifferentialCancelledError" in page
    r = jobs.console.post(base + "/rerun", status=303)
    assert r.headers["Location"] == base
    page = jobs.job_page(job_id).text
    assert "status-pending" in page and "jobRerun" in page and 'data-live="3"' in page
    assert jobs.claim() == [job_id]  # back in the queue


def test_cancel_a_running_job_and_rerun_a_failed_one(jobs, app):
    job_id = jobs.call()
    jobs.claim()
    jobs.console.post(f"/console/clusters/{jobs.id}/jobs/{job_id}/cancel", status=303)
    assert "cancelled by an operator" in jobs.job_page(job_id).text
    failed = jobs.call()
    with app.app_context():
        db.unit_of_work(lambda: Job.update(status="failure", reason="gave up").where(Job.id == failed).execute())
    assert "Re-run job" in jobs.job_page(failed).text
    jobs.console.post(f"/console/clusters/{jobs.id}/jobs/{failed}/rerun", status=303)
    assert "status-pending" in jobs.job_page(failed).text


def test_refused_actions_show_the_engines_message_with_409_and_change_nothing(jobs):
    job_id = jobs.call()
    jobs.claim()
    jobs.result(job_id, 1)
    base = f"/console/clusters/{jobs.id}/jobs/{job_id}"
    r = jobs.console.post(base + "/cancel", {"reason": "late"}, status=409)
    assert "already finished (success); only a call in flight can be cancelled" in r.text
    assert "status-success" in r.text and 'value="late"' not in r.text  # the page of the job as it is
    r = jobs.console.post(base + "/rerun", status=409)
    assert "is success: only a job in failure or cancelled can be re-run" in r.text
    pending = jobs.call()
    r = jobs.console.post(f"/console/clusters/{jobs.id}/jobs/{pending}/rerun", status=409)
    assert "is pending" in r.text
    page = jobs.job_page(job_id).text
    assert "status-success" in page and "jobCancelled" not in page and "jobRerun" not in page
    jobs.console.post(f"/console/clusters/{jobs.id}/jobs/nope/cancel", status=404)
    jobs.console.post(f"/console/clusters/{jobs.id}/jobs/nope/rerun", status=404)


def test_a_bad_cancel_reason_is_a_400_naming_it_and_cancels_nothing(jobs):
    job_id = jobs.call()
    base = f"/console/clusters/{jobs.id}/jobs/{job_id}"
    r = jobs.console.post(base + "/cancel", {"reason": "r" * 501}, status=400)
    assert "reason: at most 500 characters" in r.text
    r = jobs.console.post(base + "/cancel", {"reason": "a\x00b"}, status=400)
    assert "reason: must not hold control characters" in r.text
    assert "status-pending" in jobs.job_page(job_id).text


def test_both_forms_need_the_csrf_token(jobs):
    job_id = jobs.call()
    base = f"/console/clusters/{jobs.id}/jobs/{job_id}"
    page = jobs.job_page(job_id).text
    assert re.search(r'action="[^"]+/cancel" class="row" data-confirm="[^"]+">\s*<input type="hidden" '
                     r'name="csrf_token"', page)
    for action in ("cancel", "rerun"):
        r = jobs.client.post(f"{base}/{action}", data={"reason": "x"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = jobs.client.post(f"{base}/{action}", data={"csrf_token": "wrong"})
        assert r.status_code == 403
    assert "status-pending" in jobs.job_page(job_id).text
    jobs.console.post(base + "/cancel", status=303)
    r = jobs.client.post(f"{base}/rerun", data={})
    assert r.status_code == 403 and "status-cancelled" in jobs.job_page(job_id).text
    rerun_form = jobs.job_page(job_id).text
    assert re.search(r'action="[^"]+/rerun" class="inline" data-confirm="[^"]+"><input type="hidden" '
                     r'name="csrf_token"', rerun_form)


@pytest.mark.parametrize("path", ["/jobs/a%00b", "/jobs/a%00b/cancel", "/jobs/a%00b/rerun", "%00/jobs", "%00/activity"])
def test_a_nul_in_the_address_is_a_400_page_not_a_database_error(jobs, path):
    url = f"/console/clusters/{jobs.id}{path}"
    r = jobs.console.post(url) if path.endswith(("cancel", "rerun")) else jobs.client.get(url)
    assert r.status_code == 400 and "holds a NUL character" in r.text
