"""The activity log page, in-process on both backends: newest first, paged without repeats, one
job's events, links to the jobs, escaped fields, bad input as a 400 page naming the field."""
from __future__ import annotations

import html
import re

import pytest

from app.observability.events import events

from test_console_jobs import Jobs  # the cluster-and-calls helper of the explorer's tests


@pytest.fixture
def jobs(console):
    return Jobs(console)


def rows(page_text: str) -> list[tuple[str, str]]:
    """(event type, job id or '') of each row, in page order."""
    found = re.findall(r'<tr><td>([^<]+)</td><td>.*?<td class="mono">(?:<a href="[^"]+">([^<]*)</a>)?</td>',
                       page_text, re.S)
    return [(kind, job) for kind, job in found]


def older_link(page_text: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', page_text)
    return html.unescape(found.group(1)) if found else None


def test_the_log_lists_events_newest_first_with_links_to_their_jobs(jobs):
    job_id = jobs.call(service="billing", fn="charge")
    jobs.claim(service="billing", fn="charge")
    jobs.result(job_id, "ok")
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity").text
    assert [kind for kind, _ in rows(page)][:3] == ["jobResulted", "jobReceived", "jobCreated"]
    assert f'href="/console/clusters/{jobs.id}/jobs/{job_id}">{job_id}</a>' in page
    assert "<td>billing</td><td>charge</td>" in page and "machine-a" in page
    assert 'id="activity-live" data-live="10"' in page


def test_an_empty_log_says_so(jobs):
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity").text
    assert "Nothing happened in this cluster yet" in page


def test_pages_through_every_event_once(jobs):
    for i in range(130):
        jobs.call(fn=f"f{i}")
    url, seen, pages = f"/console/clusters/{jobs.id}/activity", [], 0
    while url:
        page = jobs.console.get(url).text
        pages += 1
        if pages > 1:
            assert "data-live" not in page and "← Newest" in page
        seen += rows(page)
        jobs.call(fn="late")  # newer than every listed event: never on an older page
        url = older_link(page)
    assert pages == 2 and len(seen) == 130 and len(set(seen)) == 130
    assert {kind for kind, _ in seen} == {"jobCreated"}


def test_one_jobs_events(jobs):
    mine, other = jobs.call(), jobs.call()
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity?jobId={mine}").text
    assert rows(page) == [("jobCreated", mine)] and other not in page
    assert f'value="{mine}"' in page and "The job's page" in page
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity?jobId=nope").text
    assert "No event for a job with this id." in page


def test_fields_a_client_sent_are_escaped(jobs, app):
    with app.app_context():
        events.record(jobs.id, "<b>custom</b>", job_id="<i>j</i>", service="<script>alert(1)</script>",
                      meta={"note": "<img src=x>", "nested": {"k": "<u>v</u>"}})
        events.flush()
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity").text
    for raw in ("<b>custom</b>", "<i>j</i>", "<script>alert(1)</script>", "<img src=x>", "<u>v</u>"):
        assert raw not in page
    assert "&lt;b&gt;custom&lt;/b&gt;" in page and "<dt>note</dt><dd>&lt;img src=x&gt;</dd>" in page
    assert "&lt;u&gt;v&lt;/u&gt;" in page


@pytest.mark.parametrize("query, field", [("?before=abc", "before"), ("?before=0", "before"),
                                          ("?before=-3", "before"), ("?jobId=" + "j" * 201, "jobId"),
                                          ("?jobId=a%00b", "jobId")])
def test_bad_input_is_a_400_naming_the_field(jobs, query, field):
    jobs.call()
    page = jobs.console.get(f"/console/clusters/{jobs.id}/activity{query}", status=400).text
    assert f'<p class="error" role="alert">{field}: ' in page and rows(page) == []


def test_an_unknown_cluster_is_a_404_page(console):
    assert "does not exist" in console.get("/console/clusters/cluster-none/activity", status=404).text
