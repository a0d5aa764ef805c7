"""The OpenAPI document (issue #15): a valid OpenAPI 3 document in which every route names its
credential and every error status its declaration implies, with the error schema."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from app.api import openapi, routing
from app.api import schemas as s

# Routes that take no credential, on purpose; a new public route must be added here knowingly.
# The local asset store's upload route: its URL's signature is the credential, as a presigned S3 URL's is.
PUBLIC = {("GET", "/live"), ("GET", "/openapi.json"), ("POST", "/events/sns"), ("PUT", "/assets/<path:key>")}

# Each auth kind of the route declaration and the credentials that pass it (common.md).
CREDENTIALS = {"cluster": [["clusterSecret"]], "management": [["managementSecret"]],
               "caller": [["accessPoint"], ["clusterSecret"]], "metrics": [["metricsToken"], ["managementSecret"]],
               "registry": [["registryToken"], ["managementSecret"]]}


@pytest.fixture
def backend():
    return "sqlite"


@pytest.fixture
def doc(api):
    return api.client.get("/openapi.json").json


def _operation(doc: dict, spec: routing.RouteSpec) -> dict:
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + openapi._camel(m.group(1)) + "}", spec.path)
    return doc["paths"][path][spec.method.lower()]


def _expected_errors(spec: routing.RouteSpec) -> set[int]:
    expected = set()
    if spec.body is not None or spec.query or spec.path_params or spec.auth == "cluster":
        expected.add(400)  # a body, a query, a path parameter or an id header can be invalid
    if spec.auth is not None:
        expected |= {401, 503}  # a wrong credential; the credential's lookup needs the database
    if spec.auth == "caller":
        expected.add(403)  # an access point not allowed the service
    if spec.path_params:
        expected.add(404)
    if spec.body is not None:
        expected |= {413, 503}  # the body limit; the body budget (or the database)
    return expected


def test_the_document_is_valid_openapi_3(doc):
    assert doc["openapi"].startswith("3.")
    validate(doc)  # raises, naming the problem, when the document is not valid


def test_every_route_names_its_credential_or_is_declared_public(doc):
    schemes = doc["components"]["securitySchemes"]
    assert routing.ROUTES
    for spec in routing.ROUTES:
        op = _operation(doc, spec)
        where = f"{spec.method} {spec.path}"
        assert "security" in op, where
        if spec.auth is None:
            assert (spec.method, spec.path) in PUBLIC, f"{where} takes no credential: declare it public here"
            assert op["security"] == [], where
            continue
        assert [sorted(requirement) for requirement in op["security"]] == CREDENTIALS[spec.auth], where
        for requirement in op["security"]:
            for name in requirement:
                assert schemes[name]["type"] == "apiKey" and schemes[name]["name"] == "Authorization"


def test_every_route_documents_the_errors_its_declaration_implies(doc):
    for spec in routing.ROUTES:
        op = _operation(doc, spec)
        where = f"{spec.method} {spec.path}"
        documented = {int(status) for status in op["responses"]}
        missing = _expected_errors(spec) - documented
        assert not missing, f"{where} does not document {sorted(missing)}"
        assert set(spec.responses) <= documented, where  # what the route declares stays
        for status, response in op["responses"].items():
            assert response["description"], (where, status)
            assert response["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/RequestId"}
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == s.ERROR or schema.get("properties", {}).get("error"), (where, status)


def test_an_auth_kind_without_a_security_scheme_is_refused(api):
    spec = routing.RouteSpec("GET", "/test-unknown-kind", "test", "someday", None, False, None, {200: None}, "test")
    routing.ROUTES.append(spec)
    try:
        with pytest.raises(ValueError, match="someday"):
            openapi.document()
    finally:
        routing.ROUTES.remove(spec)


def test_the_management_routes_503_is_documented_and_real(make_app):
    """Without MANAGEMENT_SECRET the management API answers 503; the document says so."""
    app = make_app(management_secret=None)
    client = app.test_client()
    doc = client.get("/openapi.json").json
    r = client.get("/clusters", headers={"Authorization": "Basic anything"})
    assert r.status_code == 503 and r.json["error"]["code"] == "management_secret_not_set"
    assert "503" in doc["paths"]["/clusters"]["get"]["responses"]
    assert "MANAGEMENT_SECRET" in doc["paths"]["/clusters"]["get"]["responses"]["503"]["description"]


def test_the_request_id_header_is_documented_as_the_server_answers_it(doc, api):
    pattern = doc["components"]["headers"]["RequestId"]["schema"]["pattern"]
    for sent in ("plain-id.1", "not plain!"):
        answered = api.client.get("/live", headers={"X-Request-Id": sent}).headers["X-Request-Id"]
        assert re.fullmatch(pattern, answered)
        assert (answered == sent) == bool(re.fullmatch(pattern, sent))
