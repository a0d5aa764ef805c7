"""How values read in the console: times, durations, call payloads. Registered as Jinja filters
and globals, so every template shows a thing the same way (and Jinja escapes what they return)."""
from __future__ import annotations

import datetime as dt
import json

from flask import Flask, current_app, request, url_for

from ..engine.arguments import ArgumentsError, unpack_value

PAYLOAD_SHOWN_CHARS = 200_000  # a bigger decoded payload is cut on the page (the API has it whole)


def _datetime(value) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def when(value) -> str:
    """An ISO time, a datetime or epoch ms as `2026-12-01 22:30:12 UTC` ('' for none)."""
    moment = _datetime(value)
    return "" if moment is None else moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value, now: dt.datetime | None = None) -> str:
    """How long ago, in the largest unit that fits: `12 s ago`, `3 min ago`, `2 h ago`, `5 d ago`."""
    moment = _datetime(value)
    if moment is None:
        return ""
    seconds = ((now or dt.datetime.now(dt.timezone.utc)) - moment).total_seconds()
    if seconds < 0:
        return "in " + duration(-seconds * 1000)
    return duration(seconds * 1000) + " ago"


def duration(ms) -> str:
    """Milliseconds as `850 ms`, `4.2 s`, `3 min`, `2 h`, `5 d`."""
    if ms is None:
        return ""
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000)):
        if ms >= size:
            return f"{ms / size:.0f} {unit}"
    return f"{ms:.0f} ms"


def pretty(value) -> str:
    """A JSON value as indented JSON text (non-ASCII kept as it is)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def payload(text: str | None) -> str:
    """A call's arguments or result (base64 MessagePack, as the SDKs store them) as readable JSON;
    a payload that is not MessagePack is shown as the text it is, saying so."""
    if not text:
        return "null"
    try:
        shown = pretty(unpack_value(text))
    except ArgumentsError as exc:
        shown = f"(not MessagePack: {exc}; as stored)\n{text}"
    if len(shown) > PAYLOAD_SHOWN_CHARS:
        shown = shown[:PAYLOAD_SHOWN_CHARS] + f"\n… cut at {PAYLOAD_SHOWN_CHARS:,} characters"
    return shown


def cluster_nav(cluster_id: str) -> list[tuple[str, str, bool]]:
    """(label, url, is this page) of each cluster page that exists."""
    from . import CLUSTER_PAGES

    return [(label, url_for(endpoint, cluster_id=cluster_id), request.endpoint == endpoint)
            for label, endpoint in CLUSTER_PAGES if endpoint in current_app.view_functions]


def page_url(**changes) -> str:
    """This page's URL with some query arguments changed (None removes one): filters and pagers."""
    args = request.args.to_dict(flat=False)
    for name, value in changes.items():
        if value is None:
            args.pop(name, None)
        else:
            args[name] = value if isinstance(value, list) else [value]
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def install(app: Flask) -> None:
    app.add_template_filter(when)
    app.add_template_filter(ago)
    app.add_template_filter(duration)
    app.add_template_filter(pretty)
    app.add_template_filter(payload)
    app.add_template_global(cluster_nav)
    app.add_template_global(page_url)
