"""The console at /console: pages rendered on the server over the engine (no SQL here), signed in
with the management secret (security.py), readable without JavaScript and enhanced by one
vendored script (static/console.js: live regions, copy buttons, confirmations).

Each page module attaches its views to `bp`; `CLUSTER_PAGES` is a cluster's navigation, and an
entry shows once its view exists. Templates live in templates/console/ and extend base.html.
"""
from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static")

# (label, endpoint) of a cluster's pages, in navigation order; every one takes `cluster_id`.
CLUSTER_PAGES = (
    ("Overview", "console.overview"),
    ("Services", "console.services"),
    ("Jobs", "console.jobs"),
    ("Activity", "console.activity"),
    ("Monitoring", "console.monitoring"),
    ("Access points", "console.access_points"),
    ("Client libraries", "console.client_libraries"),
    ("Settings", "console.cluster_settings"),
)


def register(app: Flask) -> None:
    from . import (access_points, activity, client_libraries, cluster_settings, clusters, jobs,  # noqa: F401
                   monitoring, overview, present, security, services, sign_in)  # (they attach their views to bp)

    present.install(app)
    app.register_blueprint(bp)
