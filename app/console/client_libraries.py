"""A cluster's client libraries: the published versions per language (sizes, digests), the lines
that install them with npm and pip, and registry tokens (create, shown once; list; revoke).

The lines carry a placeholder, never a secret; a token is shown once, by the page the create POST
answers (200, never a redirect: a token must not ride in a URL or the history), with the lines
filled in. The form is checked by the API's own schema (api/client_libraries.CREATE_TOKEN).
"""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from ..api import client_libraries as api, validation
from ..engine import client_libraries as libraries, clusters, registry_tokens as tokens
from ..errors import ValidationFailed
from ..registry import names, usage
from . import bp, forms


def _lines(cluster_id: str, token: str = usage.TOKEN_PLACEHOLDER) -> dict:
    base = forms.base_url()
    return {"npmrc": usage.npmrc(base, token), "npm": usage.npm_install(cluster_id),
            "pip": usage.pip_install(base, cluster_id, token)}


def _page(cluster_id: str, status: int = 200, problems: list[dict] | None = None, form: dict | None = None):
    cluster = clusters.describe_cluster(cluster_id)
    published = libraries.published(cluster_id)
    by_language = {language: [f for f in published if f["language"] == language] for language in libraries.LANGUAGES}
    revoked = request.args.get("revoked")
    listed = tokens.list_for(cluster_id)
    if revoked and any(t["id"] == revoked for t in listed):
        revoked = None  # only a token that is gone reads as revoked
    return render_template("console/client_libraries.html", cluster=cluster, by_language=by_language,
                           packages={lang: names.package_name(lang, cluster_id) for lang in libraries.LANGUAGES},
                           lines=_lines(cluster_id), tokens=listed, revoked=revoked, problems=problems or [],
                           form=form or {}, name_max=tokens.NAME_MAX, placeholder=usage.TOKEN_PLACEHOLDER), status


@bp.route("/clusters/<cluster_id>/client-libraries", endpoint="client_libraries")
def client_libraries(cluster_id: str):
    return _page(cluster_id)


@bp.route("/clusters/<cluster_id>/registry-tokens", methods=["POST"], endpoint="create_registry_token")
def create_registry_token(cluster_id: str):
    form = {"name": request.form.get("name", "").strip()}
    try:
        validation.validate(api.CREATE_TOKEN, form)
    except ValidationFailed as exc:
        return _page(cluster_id, 400, forms.problems(exc), form)
    made = tokens.create(cluster_id, form["name"])
    cluster = clusters.describe_cluster(cluster_id)
    return render_template("console/registry_token_once.html", cluster=cluster, made=made,
                           lines=_lines(cluster_id, made["token"])), 200


@bp.route("/clusters/<cluster_id>/registry-tokens/<token_id>/revoke", methods=["POST"],
          endpoint="revoke_registry_token")
def revoke_registry_token(cluster_id: str, token_id: str):
    tokens.delete(cluster_id, token_id)
    return redirect(url_for("console.client_libraries", cluster_id=cluster_id, revoked=token_id), 303)
