"""The access-points page, in-process on both backends: the list, create (checked as the API checks
it), the token shown once and working on POST /clusters/:id/execute, rotate, delete, CSRF, escaping."""
from __future__ import annotations

import html
import re
import shlex

import pytest

from app.console import access_points as page
from app.engine import access_points, clusters

TOKEN = re.compile(r"sk_ap_[0-9a-f]{64}")


@pytest.fixture
def cluster(console):
    return clusters.create_cluster("access points")


def _url(cluster: dict, tail: str = "") -> str:
    return f"/console/clusters/{cluster['id']}/access-points{tail}"


def _create(console, cluster, name="ops", services="svc", status=200):
    return console.post(_url(cluster), {"name": name, "allowedServices": services}, status=status)


def _token(r) -> str:
    found = set(TOKEN.findall(r.text))
    assert len(found) == 1, f"expected one token on the page, found {found}"
    return found.pop()


def _execute(console, cluster, token, service="svc"):
    return console.app.test_client().post(f"/clusters/{cluster['id']}/execute",
                                          headers={"Authorization": f"Bearer {token}"},
                                          json={"service": service, "function": "fn", "args": [1],
                                                "waitSeconds": 0})


def _value(text: str, field: str) -> str:
    """What the form's input `field` holds on the page, as the browser reads it."""
    return html.unescape(re.search(rf'name="{field}" value="([^"]*)"', text).group(1))


def _problems(text: str) -> str:
    start = text.find('class="problems')
    assert start != -1, "the page shows no problems"
    return html.unescape(text[start:text.find("</div>", start)])


def test_an_empty_list_says_what_to_do(console, cluster):
    r = console.get(_url(cluster))
    assert "No access point yet" in r.text and "Create one below" in r.text
    assert 'action="' + _url(cluster) + '"' in r.text  # the create form
    assert 'aria-current="page">Access points<' in r.text  # its tab in the cluster's navigation


def test_created_the_token_shows_once_with_its_curl_line_and_works_on_execute(console, cluster):
    r = _create(console, cluster, "billing-ops", "svc, other ,svc")
    token = _token(r)
    assert "shown only on this page, once" in r.text
    assert 'data-copy="#access-point-token"' in r.text  # the copy button
    curl = html.unescape(re.search(r'<pre id="access-point-curl">(.*?)</pre>', r.text, re.S).group(1))
    words = shlex.split(curl.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"] and words[3] == f"http://localhost/clusters/{cluster['id']}/execute"
    assert f"Authorization: Bearer {token}" in words and '"service": "svc"' in words[-1]
    assert r.headers.get("Location") is None  # answered on the page, never by a redirect carrying it
    [made] = access_points.list_for(cluster["id"])
    assert made["name"] == "billing-ops" and made["allowedServices"] == ["svc", "other"]

    assert _execute(console, cluster, token).status_code == 202  # a real token: the call is queued
    assert _execute(console, cluster, token, service="payroll").status_code == 403  # and only for its services

    for later in (_url(cluster), f"/console/clusters/{cluster['id']}/settings", "/console/", _url(cluster)):
        assert token not in console.get(later).text
        assert TOKEN.search(console.get(later).text) is None
    listed = console.get(_url(cluster)).text
    assert "billing-ops" in listed and "<code class=\"service\">other</code>" in listed


def test_a_star_allows_every_service_and_the_curl_line_names_a_placeholder(console, cluster):
    r = _create(console, cluster, "all", " * ")
    assert '"service": "SERVICE"' in html.unescape(r.text)
    assert _execute(console, cluster, _token(r), service="anything").status_code == 202
    assert "every service" in console.get(_url(cluster)).text


@pytest.mark.parametrize("name, services, fields", [
    ("", "svc", ["name"]),
    ("has space", "svc", ["name"]),
    ("-leading", "svc", ["name"]),
    ("x" * 129, "svc", ["name"]),
    ("ok", "", ["allowedServices"]),
    ("ok", " , ,", ["allowedServices"]),
    ("ok", ",".join(f"s{i}" for i in range(101)), ["allowedServices"]),
    ("ok", "good, bad\u0007bell", ["allowedServices[1]"]),
    ("ok", "x" * 20_001, ["allowedServices"]),
    ("bad name", "", ["name", "allowedServices"]),
])
def test_a_bad_form_is_a_400_naming_the_field_and_creates_nothing(console, cluster, name, services, fields):
    r = _create(console, cluster, name, services, status=400)
    shown = _problems(r.text)
    for field in fields:
        assert f"<code>{field}</code>" in shown
    assert "Nothing was changed" in shown
    assert access_points.list_for(cluster["id"]) == []
    assert TOKEN.search(r.text) is None
    assert _value(r.text, "name") == name.strip() and _value(r.text, "allowedServices") == services  # kept


def test_the_form_refuses_what_the_api_refuses(console, cluster):
    """One rule: the page and PUT /clusters/:id/access-point/:name agree, value by value."""
    from console_helpers import MANAGEMENT_SECRET

    api = console.app.test_client()
    for name, services in [("ok", "a,b"), ("-lead", "a"), ("n" * 129, "a"), ("ok", ""), ("ok", "bell\u0007"), ("ok", "*"),
                           ("a.b_c-d", "x, y")]:
        by_api = api.put(f"/clusters/{cluster['id']}/access-point/{name}", json={"allowedServices": services},
                         headers={"Authorization": f"Basic {MANAGEMENT_SECRET}"})
        for point in access_points.list_for(cluster["id"]):
            access_points.delete(cluster["id"], point["name"])
        by_page = _create(console, cluster, name, services, status=None)
        assert (by_page.status_code == 200) == (by_api.status_code == 200), (name, services, by_api.json)
        for point in access_points.list_for(cluster["id"]):
            access_points.delete(cluster["id"], point["name"])


def test_creating_a_name_that_exists_says_so_and_keeps_its_token(console, cluster):
    token = _token(_create(console, cluster, "ops", "svc"))
    r = _create(console, cluster, "ops", "other", status=409)
    assert "exists: rotate it instead" in _problems(r.text)
    assert TOKEN.search(r.text) is None
    assert access_points.list_for(cluster["id"])[0]["allowedServices"] == ["svc"]
    assert _execute(console, cluster, token).status_code == 202  # not silently rotated


def test_rotating_mints_a_new_token_once_and_the_old_one_stops(console, cluster):
    old = _token(_create(console, cluster, "ops", "svc, other"))
    r = console.post(_url(cluster, "/ops/rotate"), status=200)
    new = _token(r)
    assert new != old and "the previous token stopped working" in r.text
    assert _execute(console, cluster, old).status_code == 401
    assert _execute(console, cluster, new).status_code == 202
    [point] = access_points.list_for(cluster["id"])
    assert point["allowedServices"] == ["svc", "other"]  # same services
    listed = console.get(_url(cluster)).text
    assert new not in listed and old not in listed
    console.post(_url(cluster, "/nobody/rotate"), status=404)
    assert len(access_points.list_for(cluster["id"])) == 1


def test_deleting_goes_back_to_the_list_and_the_token_stops(console, cluster):
    token = _token(_create(console, cluster, "ops", "svc"))
    page_text = console.get(_url(cluster)).text
    assert 'data-confirm="Delete access point ops?' in page_text  # asks first, when scripts run
    r = console.post(_url(cluster, "/ops/delete"), status=303)
    assert r.headers["Location"] == _url(cluster) + "?deleted=ops"
    after = console.get(r.headers["Location"]).text
    assert "Deleted access point <strong>ops</strong>" in after and "No access point yet" in after
    assert access_points.list_for(cluster["id"]) == []
    assert _execute(console, cluster, token).status_code == 401
    console.post(_url(cluster, "/ops/delete"), status=404)


def test_a_deleted_notice_is_shown_only_for_a_name_that_is_gone(console, cluster):
    _create(console, cluster, "ops", "svc")
    assert "Deleted access point" not in console.get(_url(cluster) + "?deleted=ops").text
    assert "Deleted access point <strong>&lt;i&gt;x&lt;/i&gt;</strong>" in console.get(
        _url(cluster) + "?deleted=%3Ci%3Ex%3C/i%3E").text


def test_every_form_needs_its_csrf_token(console, cluster):
    token = _token(_create(console, cluster, "ops", "svc"))
    bare = console.client
    for path, data in [(_url(cluster), {"name": "new", "allowedServices": "svc"}), (_url(cluster, "/ops/rotate"), {}),
                       (_url(cluster, "/ops/delete"), {})]:
        r = bare.post(path, data=data)
        assert r.status_code == 403 and "CSRF" in r.text, path
        r = bare.post(path, data={**data, "csrf_token": "wrong"})
        assert r.status_code == 403, path
    [point] = access_points.list_for(cluster["id"])
    assert point["name"] == "ops" and point["rotatedAt"] == point["createdAt"]
    assert _execute(console, cluster, token).status_code == 202


def test_service_names_and_form_values_render_as_text(console, cluster):
    evil = "<script>alert(1)</script>"
    r = _create(console, cluster, "ops", f"{evil}, \"quoted'")
    assert evil not in r.text and html.escape(evil) in r.text
    listed = console.get(_url(cluster)).text
    assert evil not in listed and "&lt;script&gt;alert(1)&lt;/script&gt;" in listed
    curl = html.unescape(re.search(r'<pre id="access-point-curl">(.*?)</pre>', r.text, re.S).group(1))
    assert shlex.split(curl.replace("\\\n", " "))[-1].startswith('{"service": "<script>')  # quoted for a shell
    refused = _create(console, cluster, '"><img src=x>', evil, status=400)
    assert '"><img src=x>' not in refused.text and 'value="&#34;&gt;&lt;img src=x&gt;"' in refused.text


def test_a_missing_cluster_is_a_404_page(console):
    console.get("/console/clusters/cluster-none/access-points", status=404)
    r = console.post("/console/clusters/cluster-none/access-points", {"name": "ops", "allowedServices": "svc"},
                     status=404)
    assert "does not exist" in r.text


def test_the_curl_line_quotes_every_part():
    line = page.curl_line("https://cp.example", "cluster-a", "sk_ap_" + "0" * 64, ["it's"])
    words = shlex.split(line.replace("\\\n", " "))
    assert words[3] == "https://cp.example/clusters/cluster-a/execute"
    assert words[-1] == '{"service": "it\'s", "function": "FUNCTION", "args": []}'
