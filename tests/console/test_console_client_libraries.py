"""The client-libraries page, in-process on both backends: published versions per language with
sizes and digests (highest first), the .npmrc and pip lines with a placeholder and never a secret,
registry tokens created (shown once, lines filled in, and reading the registry), listed, revoked;
bad names refused as the API refuses them; CSRF; escaping."""
from __future__ import annotations

import base64
import html
import re

import pytest

from app.engine import clusters, registry_tokens

from registry_helpers import flask_steps, sha256

TOKEN = re.compile(r"drt_[0-9a-f]{64}")


@pytest.fixture
def cluster(console):
    return clusters.create_cluster("client libraries")


def _url(cluster: dict) -> str:
    return f"/console/clusters/{cluster['id']}/client-libraries"


def _block(text: str, id_: str) -> str:
    return html.unescape(re.search(rf'<pre id="{id_}">(.*?)</pre>', text, re.S).group(1))


def _steps(console):
    from console_helpers import MANAGEMENT_SECRET

    return flask_steps(console.app.test_client(), {"Authorization": f"Bearer {MANAGEMENT_SECRET}"})


def test_nothing_published_says_what_to_do_and_shows_lines_with_a_placeholder(console, cluster):
    r = console.get(_url(cluster))
    assert 'aria-current="page">Client libraries<' in r.text  # its tab
    assert "differential client publish --language typescript" in r.text
    assert "differential client publish --language python" in r.text
    npmrc = _block(r.text, "npmrc")
    assert npmrc == ("@differential.dev:registry=http://localhost/packages/npm/\n"
                     "//localhost/packages/npm/:_authToken=<REGISTRY_TOKEN>\n")
    assert _block(r.text, "npm-install") == f"npm install @differential.dev/{cluster['id']}"
    assert _block(r.text, "pip-install") == ("pip install --index-url 'http://token:<REGISTRY_TOKEN>@localhost/"
                                             f"packages/pypi/simple/' differential-client-{cluster['id']}")
    from console_helpers import MANAGEMENT_SECRET

    assert MANAGEMENT_SECRET not in r.text and cluster["apiSecret"] not in r.text
    assert "No registry token yet" in r.text


def test_published_versions_per_language_with_sizes_and_digests(console, cluster):
    steps = _steps(console)
    shown = [steps.release(cluster["id"], inc) for inc in ("patch", "minor")]
    py = steps.release(cluster["id"], "major", "python")
    text = console.get(_url(cluster)).text
    ts_section = text[text.index('id="typescript"'):text.index('id="python"')]
    assert ts_section.index("0.1.0") < ts_section.index("0.0.1")  # highest first, marked latest
    assert re.search(r"0\.1\.0 <span class=\"status status-success\">latest", ts_section)
    for answer, data in shown:
        assert f"{len(data)} bytes" in ts_section and sha256(data) in ts_section and answer["fileName"] in ts_section
    py_section = text[text.index('id="python"'):text.index('id="tokens"')]
    assert py[0]["fileName"] in py_section and sha256(py[1]) in py_section


def test_a_token_is_shown_once_with_the_lines_filled_in_and_reads_the_registry(console, cluster):
    r = console.post(f"/console/clusters/{cluster['id']}/registry-tokens", {"name": "laptop"}, status=200)
    [token] = set(TOKEN.findall(r.text))
    assert r.headers.get("Location") is None and "shown only on this page, once" in r.text
    assert _block(r.text, "registry-token") == token
    assert f":_authToken={token}" in _block(r.text, "npmrc") and f"token:{token}@" in _block(r.text, "pip-install")
    _steps(console).release(cluster["id"])
    client = console.app.test_client()
    path = f"/packages/npm/@differential.dev/{cluster['id']}"
    assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    basic = base64.b64encode(f"token:{token}".encode()).decode()
    assert client.get("/packages/pypi/simple/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    listed = console.get(_url(cluster)).text
    assert "laptop" in listed and TOKEN.search(listed) is None
    [made] = registry_tokens.list_for(cluster["id"])
    # Revoke: a confirmed form, then the token reads nothing.
    revoke = f"/console/clusters/{cluster['id']}/registry-tokens/{made['id']}/revoke"
    assert f'action="{revoke}"' in listed and "data-confirm=" in listed
    r = console.post(revoke, status=303)
    after = console.get(r.headers["Location"]).text
    assert "Revoked registry token" in after and "No registry token yet" in after
    assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.parametrize("name", ["", "x" * 129, "tab\there", "nul\x00"])
def test_a_bad_name_is_a_400_naming_the_field_and_creates_nothing(console, cluster, name):
    r = console.post(f"/console/clusters/{cluster['id']}/registry-tokens", {"name": name}, status=400)
    assert "<code>name</code>" in r.text and "Nothing was changed" in r.text
    assert registry_tokens.list_for(cluster["id"]) == [] and TOKEN.search(r.text) is None


def test_csrf_escaping_and_unknown_ids(console, cluster):
    r = console.client.post(f"/console/clusters/{cluster['id']}/registry-tokens", data={"name": "x"})
    assert r.status_code in (400, 403) and registry_tokens.list_for(cluster["id"]) == []
    r = console.post(f"/console/clusters/{cluster['id']}/registry-tokens", {"name": "<b>bold</b>"}, status=200)
    listed = console.get(_url(cluster)).text
    assert "<b>bold</b>" not in listed and "&lt;b&gt;bold&lt;/b&gt;" in listed
    console.post(f"/console/clusters/{cluster['id']}/registry-tokens/nope/revoke", status=404)
    console.get("/console/clusters/cluster-nope/client-libraries", status=404)
