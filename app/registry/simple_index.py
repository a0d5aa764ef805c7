"""The Python simple repository API for clusters' Python clients: PEP 503 HTML and PEP 691 JSON.

Links are relative (`../../files/<cluster>/<wheel>`), so they hold behind any proxy and keep pip's
URL credentials (same host); each carries `#sha256=` (HTML) or `hashes.sha256` (JSON), which pip
checks, `--require-hashes` included.
"""
from __future__ import annotations

import html
import json

from . import names

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
API_VERSION = "1.1"  # PEP 700: `versions`, `size`, `upload-time`


def wants_json(accept) -> bool:
    """Whether a request's Accept (werkzeug's MIMEAccept) prefers PEP 691 JSON over HTML."""
    best = accept.best_match([JSON_TYPE, HTML_TYPE, "text/html"], default="text/html")
    return best == JSON_TYPE


def _page(title: str, links: list[tuple[str, str]]) -> str:
    body = "\n".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br/>' for href, text in links)
    return ("<!DOCTYPE html>\n<html>\n  <head>\n"
            f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
            f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
            f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n")


def root(cluster_ids: list[str], as_json: bool) -> str:
    projects = [names.distribution(c) for c in cluster_ids]
    if as_json:
        return json.dumps({"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]})
    return _page("Simple index", [(f"{p}/", p) for p in projects])


def file_href(cluster_id: str, file: str) -> str:
    return f"../../files/{cluster_id}/{file}"


def project(cluster_id: str, files: list[dict], as_json: bool) -> str:
    """`files`: the cluster's published python versions (engine.client_libraries.published)."""
    name = names.distribution(cluster_id)
    if as_json:
        return json.dumps({
            "meta": {"api-version": API_VERSION}, "name": name,
            "versions": sorted({f["version"] for f in files}, key=lambda v: tuple(map(int, v.split(".")))),
            "files": [{"filename": f["fileName"], "url": file_href(cluster_id, f["fileName"]),
                       "hashes": {"sha256": f["sha256"]}, "size": f["size"], "upload-time": f["publishedAt"]}
                      for f in files],
        })
    return _page(f"Links for {name}",
                 [(f"{file_href(cluster_id, f['fileName'])}#sha256={f['sha256']}", f["fileName"]) for f in files])
