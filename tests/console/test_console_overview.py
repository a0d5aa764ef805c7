"""The overview, services and service pages in-process on both backends: what they show (live
workers, queue depth, calls and failures from the rollups), escaping, empty states, 404s, and the
overview's live region."""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import quote

import pytest

from app.engine import console_overview, rollups
from app.models import utcnow

from overview_helpers import Protocol, set_job, silence

EVIL = "<script>alert(1)</script>"


def row_of(page: str, service_text: str) -> str:
    """The overview table's row of a service (its name as the page shows it)."""
    found = re.search(r"<tr>\s*<td>(?:<a [^>]*>)?" + re.escape(service_text) + r"(?:(?!</tr>).)*</tr>", page, re.S)
    assert found, f"no row for {service_text!r}"
    return found.group(0)


def cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_an_empty_cluster_says_how_a_service_connects_without_its_secret(console):
    p = Protocol(console.app)
    page = console.get(f"/console/clusters/{p.id}/overview").text
    assert "No service has connected yet" in page
    assert "from differential import Differential" in page and "endpoint=&#34;http://localhost&#34;" in page
    assert "@svc.function" in page
    assert "pip install ./sdk" in page  # PyPI's `differential` is another package
    assert p.cluster["apiSecret"] not in page  # the snippet reads it from the environment
    assert 'id="overview-live" data-live="3"' in page


def test_the_snippet_names_the_public_url_when_one_is_set(make_app):
    from console_helpers import Console

    console = Console(make_app(PUBLIC_URL="https://differential.example.com/"))
    p = Protocol(console.app)
    page = console.get(f"/console/clusters/{p.id}/overview").text
    assert "endpoint=&#34;https://differential.example.com&#34;" in page


def test_the_overview_shows_live_workers_queue_depth_and_recent_calls_per_service(console):
    p = Protocol(console.app)
    p.poll("billing", ["charge"], machine="m1")
    p.poll("billing", ["charge"], machine="m2")
    p.poll("mail", ["send"], machine="m3")
    silence(p.id, "m3")  # mail's only machine went quiet
    for _ in range(3):
        p.run("billing", "charge", machine="m1")
    p.run("billing", "charge", kind="rejection", machine="m2")
    for _ in range(2):
        p.call("billing", "charge")  # pending
    p.call("billing", "charge", delaySeconds=3600)  # scheduled
    running = p.call("mail", "send")
    assert [j["id"] for j in p.poll("mail", ["send"], machine="m3", limit=1)] == [running]
    silence(p.id, "m3")
    p.call("nobody-polls", "x")  # a service callers call before any worker

    page = console.get(f"/console/clusters/{p.id}/overview").text
    billing = cells(row_of(page, "billing"))
    assert billing[:8] == ["billing", "2", "2", "1", "0", "0.3", "4", "1"]  # 4 calls in 15 min: 0.3 a minute
    mail = cells(row_of(page, "mail"))
    assert mail[1:5] == ["0", "0", "0", "1"]
    stranger = row_of(page, "nobody-polls")
    assert "no worker yet" in stranger and cells(stranger)[2] == "1"
    assert f'href="/console/clusters/{p.id}/services/billing"' in page
    assert f'href="/console/clusters/{p.id}/jobs?service=billing"' in page
    assert f'href="/console/clusters/{p.id}/monitoring?service=billing"' in page
    assert 'id="overview-live" data-live="3"' in page
    assert "No service has connected yet" not in page


def test_the_recent_numbers_are_the_same_from_the_rollups_after_the_fold(console):
    p = Protocol(console.app)
    p.poll("svc")
    for kind in ("resolution", "resolution", "rejection"):
        p.run("svc", kind=kind)
    before = cells(row_of(console.get(f"/console/clusters/{p.id}/overview").text, "svc"))
    done = rollups.fold(utcnow() + dt.timedelta(minutes=1))  # an injected now: past the fold's lag
    assert done["rollupRows"] >= 1 and rollups.mark_ms() > rollups.epoch_ms(utcnow())
    after = cells(row_of(console.get(f"/console/clusters/{p.id}/overview").text, "svc"))
    assert before[5:8] == after[5:8] == ["0.2", "3", "1"]


def test_calls_older_than_the_window_are_not_counted(console):
    p = Protocol(console.app)
    p.poll("svc")
    old = p.run("svc")
    p.run("svc")
    set_job(old, resulted_at=utcnow() - dt.timedelta(minutes=30))
    rollups.fold(utcnow() + dt.timedelta(minutes=1))
    assert cells(row_of(console.get(f"/console/clusters/{p.id}/overview").text, "svc"))[6] == "1"


def test_a_huge_backlog_is_counted_up_to_a_cap(console, monkeypatch):
    monkeypatch.setattr(console_overview, "QUEUE_COUNT_CAP", 3)
    p = Protocol(console.app)
    p.poll("svc")
    for _ in range(5):
        p.call("svc")
    assert console_overview.queue_depth(p.id)["capped"] == ["pending"]
    page = console.get(f"/console/clusters/{p.id}/overview").text
    assert "More than 3 jobs are pending" in page
    assert re.search(r'<div class="value">4\+</div><div class="label">pending', page)


def test_the_live_region_is_what_a_refresh_replaces(console):
    p = Protocol(console.app)
    first = console.get(f"/console/clusters/{p.id}/overview", headers={"X-Console-Live": "1"}).text
    assert "No service has connected yet" in first
    p.poll("late-comer")
    again = console.get(f"/console/clusters/{p.id}/overview", headers={"X-Console-Live": "1"}).text
    region = again[again.index('id="overview-live"'):]
    assert "late-comer" in region


def test_an_unknown_cluster_is_a_404_page_on_every_page(console):
    for page in ("overview", "services", "services/svc", "monitoring"):
        r = console.get(f"/console/clusters/cluster-nope/{page}", status=404)
        assert "cluster-nope" in r.text


def test_the_services_list_shows_functions_live_machines_and_last_poll(console):
    p = Protocol(console.app)
    p.poll("billing", ["charge", "refund"], machine="m1")
    p.poll("billing", ["charge", "refund"], machine="m2")
    p.poll("mail", ["send"], machine="m3")
    silence(p.id, "m3")
    page = console.get(f"/console/clusters/{p.id}/services").text
    billing = cells(row_of(page, "billing"))
    assert billing[1].split() == ["charge", "refund"] and billing[2] == "2" and billing[3].endswith("ago")
    mail = cells(row_of(page, "mail"))
    assert mail[2] == "0" and mail[3] == "1 h ago"


def test_no_service_yet_says_how_one_appears(console):
    p = Protocol(console.app)
    page = console.get(f"/console/clusters/{p.id}/services").text
    assert "No service yet" in page and f"/console/clusters/{p.id}/overview" in page


def test_a_service_page_shows_schemas_machines_and_recent_calls(console):
    p = Protocol(console.app)
    schema = '{"type":"object","properties":{"cents":{"type":"integer"}},"required":["cents"]}'
    functions = [{"name": "charge", "schema": schema, "concurrency": 2}, {"name": "refund"}]
    r = p.client.put(f"/clusters/{p.id}/service/billing/schema", json={"schema": {"title": "Operator's <b>view</b>"}},
                     headers={"Authorization": f"Basic {console.secret}"})
    assert r.status_code in (200, 204), r.data
    job = p.call("billing", "charge")
    assert [j["id"] for j in p.poll("billing", functions, machine="m1", limit=1)] == [job]
    p.result(job, machine="m1")
    page = console.get(f"/console/clusters/{p.id}/services/billing").text
    assert "<h3><code>charge</code></h3>" in page and "<h3><code>refund</code></h3>" in page
    assert "&#34;cents&#34;: {\n" in page  # the worker's schema, indented
    assert "The worker sent no schema for it." in page  # refund's
    assert "Operator&#39;s &lt;b&gt;view&lt;/b&gt;" in page and "<b>view</b>" not in page
    assert "<code>m1</code>" in page and "127.0.0.1" in page
    assert f'href="/console/clusters/{p.id}/jobs/{job}"' in page
    assert 'status-resolution">resolution' in page


def test_a_service_without_calls_or_machines_says_so(console):
    p = Protocol(console.app)
    p.poll("quiet", machine="m1")
    silence(p.id, "m1")
    page = console.get(f"/console/clusters/{p.id}/services/quiet").text
    assert "No machine polled this service in the last 90 s." in page and "No call yet." in page
    assert "None stored." in page


def test_an_unknown_service_is_a_404_page(console):
    p = Protocol(console.app)
    r = console.get(f"/console/clusters/{p.id}/services/never-seen", status=404)
    assert "never-seen" in r.text and "never been seen" in r.text


def test_the_recent_calls_are_bounded(console):
    p = Protocol(console.app)
    p.poll("busy")
    for _ in range(25):
        p.call("busy")
    page = console.get(f"/console/clusters/{p.id}/services/busy").text
    assert page.count("status-pending") == 20


@pytest.mark.parametrize("name", [EVIL, "a/b c&d=e", "名前 🎉"])
def test_a_service_name_a_worker_chose_renders_as_text_everywhere(console, name):
    p = Protocol(console.app)
    p.poll(name, [EVIL], machine=EVIL)
    p.call(name, EVIL)
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    pages = [f"/console/clusters/{p.id}/{page}" for page in ("overview", "services", "monitoring")]
    pages.append(f"/console/clusters/{p.id}/services/" + quote(name, safe=""))
    for path in pages:
        text = console.get(path).text
        assert EVIL not in text, path
        assert escaped in text, path
    service_page = console.get(pages[-1]).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in service_page  # the function and machine names
    assert f"jobs?service={quote(name, safe='/')}" in service_page
