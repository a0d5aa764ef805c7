"""The settings page, in-process on both backends: the cluster and its secret (behind <details>),
the settings form (checked as PUT /clusters/:id/settings checks it), rotating the secret with a
grace, deleting the cluster (its id typed out), CSRF on every form, escaping."""
from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from werkzeug.datastructures import MultiDict

from app.engine import clusters

from console_helpers import MANAGEMENT_SECRET

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def cluster(console):
    return clusters.create_cluster(f"settings {EVIL}")


def _url(cluster: dict, tail: str = "/settings") -> str:
    return f"/console/clusters/{cluster['id']}{tail}"


def _calls(console, cluster: dict, secret: str) -> int:
    """The status of a call made with `secret` (202: it authenticates; 401: it does not)."""
    r = console.app.test_client().post(f"/clusters/{cluster['id']}/execute",
                                       headers={"Authorization": f"Bearer {secret}"},
                                       json={"service": "svc", "function": "fn", "waitSeconds": 0})
    return r.status_code


def _problems(text: str) -> str:
    start = text.find('class="problems')
    assert start != -1, "the page shows no problems"
    return html.unescape(text[start:text.find("</div>", start)])


def test_the_page_shows_the_cluster_and_its_secret_only_behind_details(console, cluster):
    r = console.get(_url(cluster))
    text = r.text
    assert cluster["id"] in text and "Created" in text
    assert "settings &lt;script&gt;alert(1)&lt;/script&gt;" in text and EVIL not in text
    assert 'aria-current="page">Settings<' in text
    details = re.search(r'<details class="secret">(.*?)</details>', text, re.S).group(1)
    assert cluster["apiSecret"] in details and 'data-copy="#cluster-secret"' in details
    assert f"export DIFFERENTIAL_ENDPOINT=http://localhost\nexport DIFFERENTIAL_API_SECRET={cluster['apiSecret']}" \
        in details
    assert cluster["apiSecret"] not in text.replace(details, "")  # nowhere else on the page
    for other in ("/console/", _url(cluster, "/access-points")):
        assert cluster["apiSecret"] not in console.get(other).text


def test_settings_save_and_go_back_to_the_page(console, cluster):
    assert clusters.get_settings(cluster["id"]) == {"predictiveRetriesEnabled": False, "cloudEnabled": False}
    page = console.get(_url(cluster)).text
    assert 'type="hidden" name="predictiveRetriesEnabled" value="false"' in page
    # What a browser sends with one box ticked: each field's hidden "false", then the ticked box's "true".
    r = console.client.post(_url(cluster), data=MultiDict([
        ("csrf_token", console.csrf), ("predictiveRetriesEnabled", "false"), ("predictiveRetriesEnabled", "true"),
        ("cloudEnabled", "false")]))
    assert r.status_code == 303 and r.headers["Location"] == _url(cluster) + "?saved=1"
    assert clusters.get_settings(cluster["id"]) == {"predictiveRetriesEnabled": True, "cloudEnabled": False}
    shown = console.get(r.headers["Location"]).text
    assert "Settings saved." in shown
    assert re.search(r'name="predictiveRetriesEnabled" value="true" checked', shown)
    assert not re.search(r'name="cloudEnabled" value="true" checked', shown)
    console.post(_url(cluster), {"predictiveRetriesEnabled": "false"}, status=303)  # the box unticked
    assert clusters.get_settings(cluster["id"])["predictiveRetriesEnabled"] is False


@pytest.mark.parametrize("form, field, message", [
    ({"predictiveRetriesEnabled": "yes"}, "predictiveRetriesEnabled", "must be of type boolean"),
    ({"cloudEnabled": ""}, "cloudEnabled", "must be of type boolean"),
    ({"predictiveRetriesEnabled": "true", "somethingElse": "true"}, "somethingElse", "is not a known field"),
])
def test_a_bad_settings_form_is_a_400_naming_the_field_and_changes_nothing(console, cluster, form, field, message):
    r = console.post(_url(cluster), form, status=400)
    assert f"<code>{field}</code> {message}" in _problems(r.text)
    assert clusters.get_settings(cluster["id"]) == {"predictiveRetriesEnabled": False, "cloudEnabled": False}


def test_the_settings_form_refuses_what_the_api_refuses(console, cluster):
    api = console.app.test_client()
    mgmt = {"Authorization": f"Basic {MANAGEMENT_SECRET}"}
    for form, body in [({"cloudEnabled": "true"}, {"cloudEnabled": True}),
                       ({"cloudEnabled": "1"}, {"cloudEnabled": "1"}),
                       ({"other": "false"}, {"other": False})]:
        by_api = api.put(f"/clusters/{cluster['id']}/settings", json=body, headers=mgmt)
        by_page = console.post(_url(cluster), form)
        assert (by_api.status_code == 200) == (by_page.status_code == 303), (form, by_api.json)


def test_rotating_with_no_grace_shows_the_new_secret_once_and_the_old_one_stops(console, cluster):
    old = cluster["apiSecret"]
    assert _calls(console, cluster, old) == 202
    r = console.post(_url(cluster, "/secret/rotate"), {"graceSeconds": "0"}, status=200)
    assert r.headers.get("Location") is None
    new = clusters.describe_cluster(cluster["id"])["apiSecret"]
    assert new != old and new in r.text and old not in r.text
    assert 'data-copy="#new-cluster-secret"' in r.text
    assert "The previous secret stopped working at once" in r.text
    assert EVIL not in r.text
    assert _calls(console, cluster, old) == 401
    assert _calls(console, cluster, new) == 202
    settings = console.get(_url(cluster)).text
    assert "Last rotated" in settings and old not in settings


def test_rotating_with_a_grace_keeps_the_old_secret_until_it_ends(console, cluster):
    old = cluster["apiSecret"]
    r = console.post(_url(cluster, "/secret/rotate"), {"graceSeconds": "120"}, status=200)
    rotated = clusters.describe_cluster(cluster["id"])
    assert "The previous secret keeps working until" in r.text
    expires = rotated["previousSecretExpiresAt"]
    assert expires is not None and html.escape(expires[:16].replace("T", " ")) in r.text
    assert _calls(console, cluster, old) == 202 and _calls(console, cluster, rotated["apiSecret"]) == 202
    assert "the previous secret keeps working until" in console.get(_url(cluster)).text


def test_an_empty_grace_is_the_apis_default(console, cluster):
    console.post(_url(cluster, "/secret/rotate"), {"graceSeconds": " "}, status=200)
    rotated = clusters.describe_cluster(cluster["id"])
    gap = (dt.datetime.fromisoformat(rotated["previousSecretExpiresAt"].replace("Z", "+00:00"))
           - dt.datetime.fromisoformat(rotated["secretRotatedAt"].replace("Z", "+00:00")))
    assert gap.total_seconds() == clusters.DEFAULT_GRACE_SECONDS
    assert f'value="{clusters.DEFAULT_GRACE_SECONDS}"' in console.get(_url(cluster)).text


@pytest.mark.parametrize("grace, message", [
    ("-1", "must be at least 0"), (str(clusters.MAX_GRACE_SECONDS + 1), f"must be at most {clusters.MAX_GRACE_SECONDS}"),
    ("1.5", "must be of type integer"), ("an hour", "must be of type integer"), ("9" * 40, "must be of type integer"),
])
def test_a_bad_grace_is_a_400_naming_the_field_and_rotates_nothing(console, cluster, grace, message):
    r = console.post(_url(cluster, "/secret/rotate"), {"graceSeconds": grace}, status=400)
    assert f"<code>graceSeconds</code> {message}" in _problems(r.text)
    assert f'value="{html.escape(grace)}"' in r.text  # kept in the field, to correct
    assert clusters.describe_cluster(cluster["id"])["apiSecret"] == cluster["apiSecret"]
    assert _calls(console, cluster, cluster["apiSecret"]) == 202


def test_deleting_needs_the_id_typed_out(console, cluster):
    page = console.get(_url(cluster)).text
    assert 'data-confirm="Delete cluster ' + cluster["id"] in page and 'name="confirm"' in page
    for typed in ("", "yes", cluster["id"][:-1], cluster["id"] + "x"):
        r = console.post(_url(cluster, "/delete"), {"confirm": typed}, status=400)
        assert "<code>confirm</code> must be the cluster's id" in _problems(r.text)
    assert clusters.describe_cluster(cluster["id"])["id"] == cluster["id"]
    assert _calls(console, cluster, cluster["apiSecret"]) == 202


def test_deleting_goes_to_the_clusters_where_it_no_longer_is(console, cluster):
    kept = clusters.create_cluster("kept")
    r = console.post(_url(cluster, "/delete"), {"confirm": f" {cluster['id']} "}, status=303)
    assert r.headers["Location"] == "/console/"
    listed = console.get("/console/").text
    assert cluster["id"] not in listed and kept["id"] in listed
    assert cluster["id"] not in [c["id"] for c in clusters.list_clusters()]
    console.get(_url(cluster), status=404)
    assert _calls(console, cluster, cluster["apiSecret"]) == 401
    console.post(_url(cluster, "/delete"), {"confirm": cluster["id"]}, status=404)


def test_every_form_needs_its_csrf_token(console, cluster):
    for tail, data in [("/settings", {"cloudEnabled": "true"}), ("/secret/rotate", {"graceSeconds": "0"}),
                       ("/delete", {"confirm": cluster["id"]})]:
        r = console.client.post(_url(cluster, tail), data=data)
        assert r.status_code == 403 and "CSRF" in r.text, tail
        r = console.client.post(_url(cluster, tail), data={**data, "csrf_token": "nope"})
        assert r.status_code == 403, tail
        r = console.post(_url(cluster, tail), data, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403, tail
    assert clusters.get_settings(cluster["id"])["cloudEnabled"] is False
    assert clusters.describe_cluster(cluster["id"])["apiSecret"] == cluster["apiSecret"]


def test_a_missing_cluster_is_a_404_page(console):
    console.get("/console/clusters/cluster-none/settings", status=404)
    for tail in ("/settings", "/secret/rotate", "/delete"):
        console.post(f"/console/clusters/cluster-none{tail}", {"confirm": "cluster-none"}, status=404)
