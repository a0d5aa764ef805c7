"""The npm packument of a cluster's TypeScript client (npm's registry API, the parts npm install reads).

`dist-tags.latest` is the highest semver (the original took the latest upload); every version has
its `dist.tarball` under the base URL the request came to (scheme included: the original always
wrote http), its `shasum` (sha1 hex) and `integrity` (sha512, base64, as npm checks it: cloud/assets.integrity).
"""
from __future__ import annotations

from . import names

TARBALL_PATH = "/packages/npm/@" + names.NPM_SCOPE + "/{cluster_id}/-/{file}"
MAIN, TYPES = "index.js", "index.d.ts"  # what the generated package's own package.json names too


def tarball_url(base_url: str, cluster_id: str, version: str) -> str:
    return base_url + TARBALL_PATH.format(cluster_id=cluster_id, file=names.npm_tarball(cluster_id, version))


def packument(cluster_id: str, files: list[dict], base_url: str) -> dict:
    """`files`: the cluster's published typescript versions (engine.client_libraries.published),
    highest first; at least one (no versions is a 404 before this)."""
    name = names.npm_package(cluster_id)
    description = f"Typed client of the services of Differential cluster {cluster_id}"
    versions, time = {}, {}
    for f in files:
        versions[f["version"]] = {
            "_id": f"{name}@{f['version']}", "name": name, "version": f["version"], "description": description,
            "main": MAIN, "types": TYPES,
            "dist": {"tarball": tarball_url(base_url, cluster_id, f["version"]), "shasum": f["sha1"],
                     "integrity": f["integrity"]},
        }
        time[f["version"]] = f["publishedAt"]
    stamps = sorted(time.values())
    return {"_id": name, "name": name, "description": description, "dist-tags": {"latest": files[0]["version"]},
            "versions": versions, "time": {"created": stamps[0], "modified": stamps[-1], **time}}
