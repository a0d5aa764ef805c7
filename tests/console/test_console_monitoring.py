"""The monitoring page in-process on both backends: charts and their numbers from the rollups
(calls by outcome per bucket, execution and queue percentiles), the service filter and the
range, the empty range, a refused range naming its field, 404s and escaping."""
from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest

from app.console import monitoring
from app.engine import console_overview, rollups
from app.models import utcnow

from overview_helpers import Protocol, set_job

SVG = "{http://www.w3.org/2000/svg}"


def svgs(page: str) -> dict[str, ET.Element]:
    """The page's charts by figure id, each parsed (well-formed, or this raises)."""
    found = re.findall(r'<figure class="chart" id="chart-([a-z]+)">.*?(<svg.*?</svg>)', page, re.S)
    return {name: ET.fromstring(svg) for name, svg in found}


def bars(svg: ET.Element) -> list[ET.Element]:
    return [r for r in svg.iter(SVG + "rect") if "bar" in (r.get("class") or "")]


def finish_at(job_id: str, ended: dt.datetime, queue_ms: int) -> None:
    created = ended - dt.timedelta(milliseconds=queue_ms + 100)
    set_job(job_id, created_at=created, claimed_at=created + dt.timedelta(milliseconds=queue_ms), resulted_at=ended)


@pytest.fixture
def mix(console):
    """Calls of two services that finished 10 and 40 minutes ago, with known times."""
    p = Protocol(console.app)
    p.poll("billing", ["charge"])
    p.poll("mail", ["send"])
    now = utcnow()
    for minutes, exec_ms, kind in ((10, 40, "resolution"), (10, 40, "resolution"), (10, 900, "rejection"),
                                   (40, 15, "resolution")):
        finish_at(p.run("billing", "charge", kind=kind, exec_ms=exec_ms), now - dt.timedelta(minutes=minutes), 30)
    finish_at(p.run("mail", "send", exec_ms=3000), now - dt.timedelta(minutes=10), 2500)
    return p


def test_the_charts_show_the_calls_by_outcome_and_their_times(console, mix):
    page = console.get(f"/console/clusters/{mix.id}/monitoring").text
    charts = svgs(page)
    assert set(charts) == {"throughput", "execution", "queue", "outcomes"}
    heights = sorted(float(b.get("height")) for b in bars(charts["throughput"]))
    # three stacks: 40 minutes ago (1 call), 10 minutes ago (3 resolved + 1 rejected)
    assert len(heights) == 3
    titles = sorted(t.text for b in bars(charts["throughput"]) for t in b.iter(SVG + "title"))
    assert sorted(t.split(": ")[-1] for t in titles) == ["1", "1", "3"]  # titles lead with a time of day
    assert any("rejected" in t for t in titles)
    for name in ("execution", "queue", "outcomes"):
        assert len(list(charts[name].iter(SVG + "circle"))) >= 2, name
        assert "No calls in this range" not in ET.tostring(charts[name], encoding="unicode")
    # the summary cards and the table
    assert re.search(r'<div class="value">5</div><div class="label">finished calls', page)
    assert re.search(r'<div class="value">1</div><div class="label">rejected', page)
    billing = re.search(r"<tr><td><a [^>]*>billing</a></td>(.*?)</tr>", page, re.S).group(1)
    numbers = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r'<td class="num">(.*?)</td>', billing)]
    assert numbers[:5] == ["4", "3", "1", "0", "0"]
    assert "The charts&#39; numbers, per bucket" in page or "The charts' numbers, per bucket" in page


def test_percentiles_are_read_from_the_merged_histograms(console, mix):
    start = rollups.epoch_ms(utcnow()) // 60_000 * 60_000 - 60 * 60_000
    data = console_overview.monitoring(mix.id, None, start, start + 61 * 60_000, 60_000)
    whole = data["summary"]
    assert whole["calls"]["total"] == 5 and whole["executionMs"]["count"] == 5
    # 15, 40, 40, 900, 3000 ms: p50 in (20, 50], p99 in (2000, 5000]
    assert 20 < whole["executionMs"]["p50"] <= 50 and 2000 < whole["executionMs"]["p99"] <= 5000
    assert 2000 < whole["queueMs"]["p99"] <= 5000
    billing = console_overview.monitoring(mix.id, "billing", start, start + 61 * 60_000, 60_000)
    assert billing["summary"]["calls"]["total"] == 4 and billing["summary"]["executionMs"]["p99"] <= 1000
    assert [b["calls"]["total"] for b in billing["buckets"]] == [1, 3]


def test_the_same_numbers_after_the_fold(console, mix):
    before = console.get(f"/console/clusters/{mix.id}/monitoring").text
    rollups.fold(utcnow() + dt.timedelta(minutes=1))
    after = console.get(f"/console/clusters/{mix.id}/monitoring").text
    strip = re.compile(r"<time[^>]*>.*?</time>|\d\d:\d\d:\d\d UTC|csrf_token\" value=\"[^\"]+")
    table = re.compile(r"<h2>By function</h2>.*?</table>", re.S)
    assert strip.sub("", table.search(before).group(0)) == strip.sub("", table.search(after).group(0))


def test_one_service_and_a_longer_range(console, mix):
    page = console.get(f"/console/clusters/{mix.id}/monitoring?service=mail&range=24h").text
    assert '<option value="mail" selected>mail</option>' in page and '<option value="24h" selected>' in page
    assert "in buckets of 15 min" in page
    assert len(bars(svgs(page)["throughput"])) == 1
    assert ">billing</a>" not in page


def test_an_empty_range_says_so(console):
    p = Protocol(console.app)
    p.poll("svc")
    page = console.get(f"/console/clusters/{p.id}/monitoring?range=6h").text
    assert "No calls in this range" in page
    for svg in svgs(page).values():
        assert "No calls in this range" in ET.tostring(svg, encoding="unicode")


def test_calls_older_than_the_range_are_left_out(console, mix):
    page = console.get(f"/console/clusters/{mix.id}/monitoring?range=1h").text
    assert re.search(r'<div class="value">5</div><div class="label">finished calls', page)
    for job_id in [j for j in _job_ids(mix)]:
        set_job(job_id, resulted_at=utcnow() - dt.timedelta(hours=2))
    page = console.get(f"/console/clusters/{mix.id}/monitoring?range=1h").text
    assert "No calls in this range" in page
    page = console.get(f"/console/clusters/{mix.id}/monitoring?range=6h").text
    assert re.search(r'<div class="value">5</div><div class="label">finished calls', page)


def _job_ids(p: Protocol) -> list[str]:
    from app import db
    from app.models import Job

    return db.unit_of_work(lambda: [j.id for j in Job.select(Job.id).where(Job.cluster_id == p.id)])


def test_a_range_it_does_not_know_is_refused_naming_the_field(console, mix):
    r = console.get(f"/console/clusters/{mix.id}/monitoring?range=2y", status=400)
    assert "range must be one of 1h, 6h, 24h, 7d" in r.text and "<svg" not in r.text


def test_every_range_draws(console, mix):
    for name in monitoring.RANGES:
        page = console.get(f"/console/clusters/{mix.id}/monitoring?range={name}").text
        assert len(svgs(page)) == 4, name


def test_an_unknown_service_or_cluster_is_a_404(console, mix):
    r = console.get(f"/console/clusters/{mix.id}/monitoring?service=nope", status=404)
    assert "nope" in r.text
    console.get("/console/clusters/cluster-nope/monitoring", status=404)


def test_names_from_services_render_as_text_in_charts_and_tables(console):
    p = Protocol(console.app)
    evil_fn, evil_svc = '<img src=x onerror="alert(1)">', "<script>alert(1)</script>"
    p.poll(evil_svc, [evil_fn])
    p.run(evil_svc, evil_fn)
    page = console.get(f"/console/clusters/{p.id}/monitoring").text
    assert evil_fn not in page and evil_svc not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert len(svgs(page)) == 4
