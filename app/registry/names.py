"""Every name a cluster's client library goes by, derived from the cluster id and version, in one place.

npm: the scoped package `@differential.dev/<clusterId>`, its tarball `<clusterId>-<version>.tgz`.
Python: the distribution `differential-client-<clusterId>` (already PEP 503-normalised), the module
`differential_client_<cluster_id with _>` and the wheel `<distribution with _>-<version>-py3-none-any.whl`
(the wheel spec's escaped name). The CLI never derives these: it gets them in the reservation's answer.

Only a cluster id of lower-case letters and digits in hyphen-separated runs (what clusters.create
mints) is packageable: then every name is valid for npm and PEP 503 alike, and the project name maps
back to exactly one cluster id.
"""
from __future__ import annotations

import re

NPM_SCOPE = "differential.dev"
PYTHON_PREFIX = "differential-client-"
LANGUAGES = ("typescript", "python")
MAX_CLUSTER_ID = 100  # the column's length; npm names allow 214 characters, so the scope and id fit

_PACKAGEABLE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_VERSION = r"(?P<version>(?:0|[1-9][0-9]{0,8})\.(?:0|[1-9][0-9]{0,8})\.(?:0|[1-9][0-9]{0,8}))"
_VERSION_ONLY = re.compile(f"^{_VERSION}$")


def packageable(cluster_id: str) -> bool:
    return len(cluster_id) <= MAX_CLUSTER_ID and bool(_PACKAGEABLE.match(cluster_id))


def npm_package(cluster_id: str) -> str:
    return f"@{NPM_SCOPE}/{cluster_id}"


def npm_tarball(cluster_id: str, version: str) -> str:
    return f"{cluster_id}-{version}.tgz"


def distribution(cluster_id: str) -> str:
    return PYTHON_PREFIX + cluster_id


def module(cluster_id: str) -> str:
    return distribution(cluster_id).replace("-", "_")


def wheel(cluster_id: str, version: str) -> str:
    return f"{module(cluster_id)}-{version}-py3-none-any.whl"


def file_name(language: str, cluster_id: str, version: str) -> str:
    return npm_tarball(cluster_id, version) if language == "typescript" else wheel(cluster_id, version)


def package_name(language: str, cluster_id: str) -> str:
    return npm_package(cluster_id) if language == "typescript" else distribution(cluster_id)


def names(language: str, cluster_id: str, version: str) -> dict:
    """The names a reservation answers (the CLI builds exactly these)."""
    out = {"packageName": package_name(language, cluster_id), "fileName": file_name(language, cluster_id, version)}
    if language == "python":
        out.update(distribution=distribution(cluster_id), module=module(cluster_id))
    return out


def normalise(project: str) -> str:
    """PEP 503's normalised form of a project name."""
    return re.sub(r"[-_.]+", "-", project).lower()


def cluster_of_project(project: str) -> str | None:
    """The cluster id a (normalised) Python project name belongs to, or None if it is none of ours."""
    if not project.startswith(PYTHON_PREFIX):
        return None
    cluster_id = project[len(PYTHON_PREFIX):]
    return cluster_id if packageable(cluster_id) else None


def version_of_file(language: str, cluster_id: str, file: str) -> str | None:
    """The version a tarball's or wheel's file name names, or None if it is not one of this cluster's."""
    head = f"{cluster_id}-" if language == "typescript" else f"{module(cluster_id)}-"
    tail = ".tgz" if language == "typescript" else "-py3-none-any.whl"
    if not (file.startswith(head) and file.endswith(tail)) or len(file) <= len(head) + len(tail):
        return None
    version = file[len(head):len(file) - len(tail)]
    return version if _VERSION_ONLY.match(version) else None
