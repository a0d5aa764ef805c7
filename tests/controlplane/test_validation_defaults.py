"""Schema defaults are filled in by the validator, so a view and /openapi.json tell the same default;
call configuration's come from the engine's `CallConfig`. Also the api's database questions
(`db.ping`, `db.is_unavailable`) behind GET /live and the 503, and the management secret's rule."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess

import peewee
import pytest
from playhouse.pool import MaxConnectionsExceeded

from app import db, settings as settings_module
from app.api import schemas as s
from app.api.schemas import obj
from app.api.validation import coerce_query, validate
from app.engine.jobs import CallConfig
from app.errors import ApiError, ValidationFailed
from app.models import Job
from cp_helpers import Api

INNER = obj({"n": {"type": "integer", "default": 3}, "label": {"type": "string"}})


# --- the validator -------------------------------------------------------------------------------

def test_an_absent_property_gets_its_default_and_a_present_one_is_kept():
    schema = obj({"limit": {"type": "integer", "default": 1}, "name": {"type": "string"}})
    assert validate(schema, {}) == {"limit": 1}  # no default, no key
    assert validate(schema, {"limit": 7, "name": "x"}) == {"limit": 7, "name": "x"}
    assert validate(schema, {"limit": 0}) == {"limit": 0}  # a falsy value is a value


def test_a_nested_object_gets_its_defaults_when_present_or_when_it_declares_a_default_itself():
    optional = obj({"cfg": INNER})
    assert validate(optional, {}) == {}  # absent, no default of its own: stays absent
    assert validate(optional, {"cfg": {}}) == {"cfg": {"n": 3}}
    assert validate(optional, {"cfg": {"n": 0, "label": "a"}}) == {"cfg": {"n": 0, "label": "a"}}

    defaulted = obj({"cfg": {**INNER, "default": {}}})
    first, second = validate(defaulted, {}), validate(defaulted, {})
    assert first == second == {"cfg": {"n": 3}}
    first["cfg"]["n"] = 99  # each request gets its own copy; the schema is left as it was
    assert second == {"cfg": {"n": 3}} and defaulted["properties"]["cfg"]["default"] == {}


def test_array_items_get_their_defaults():
    schema = obj({"xs": {"type": "array", "items": INNER}})
    assert validate(schema, {"xs": [{}, {"n": 5}]}) == {"xs": [{"n": 3}, {"n": 5}]}


def test_defaults_never_hide_a_problem():
    required = obj({"a": {"type": "integer", "default": 1}}, required=("a",))
    with pytest.raises(ValidationFailed):
        validate(required, {})  # required means the client must send it
    with pytest.raises(ValidationFailed):
        validate(obj({"cfg": INNER}), {"cfg": {"n": "three"}})


def test_query_defaults():
    assert coerce_query(s.LIST_QUERY, {}) == {"limit": 100}
    assert coerce_query(s.LIST_QUERY, {"limit": "5"}) == {"limit": 5}
    assert coerce_query(s.JOB_STATUS_QUERY, {}) == {"ttl": s.MAX_WAIT_MS}
    assert coerce_query(s.ACTIVITY_QUERY, {"jobId": "j"}) == {"jobId": "j", "limit": 100}


def test_call_config_defaults_are_call_configs():
    d = CallConfig()
    call = {"service": "s", "targetFn": "f", "targetArgs": "kA=="}
    expected = {"retryCountOnStall": d.retry_count_on_stall, "timeoutSeconds": d.timeout_seconds,
                "predictiveRetriesOnRejection": d.predictive_retries}
    assert validate(s.CREATE_JOB, dict(call))["callConfig"] == expected
    given = validate(s.CREATE_JOB, {**call, "callConfig": {"timeoutSeconds": 10, "executionId": "e"}})["callConfig"]
    assert given == {**expected, "timeoutSeconds": 10, "executionId": "e"}  # no cache unless asked for


def test_openapi_publishes_the_defaults_that_apply(api):
    doc = api.client.get("/openapi.json").json
    d = CallConfig()
    create = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    config = create["properties"]["callConfig"]
    assert config["default"] == {}
    assert config["properties"]["retryCountOnStall"]["default"] == d.retry_count_on_stall
    assert config["properties"]["timeoutSeconds"]["default"] == d.timeout_seconds
    assert config["properties"]["predictiveRetriesOnRejection"]["default"] == d.predictive_retries
    params = {p["name"]: p for p in doc["paths"]["/clusters/{clusterId}"]["get"]["parameters"]}
    assert params["limit"]["schema"]["default"] == 100


# --- the views read the filled-in defaults --------------------------------------------------------

def test_a_call_without_call_config_gets_the_engines_defaults(api):
    cluster = api.new_cluster()
    plain = api.call(cluster)
    short = api.call(cluster, timeoutSeconds=10)
    cached = api.call(cluster, cache={"key": "k", "ttlSeconds": 60})
    rows = db.unit_of_work(lambda: {j.id: j for j in Job.select().where(Job.id.in_([plain, short, cached]))})
    d = CallConfig()
    assert (rows[plain].attempts_allowed, rows[plain].timeout_seconds) == (d.retry_count_on_stall + 1,
                                                                           d.timeout_seconds)
    assert rows[plain].cache_key is None
    assert (rows[short].attempts_allowed, rows[short].timeout_seconds) == (d.retry_count_on_stall + 1, 10)
    assert rows[cached].cache_key == "k"


def test_a_claim_without_a_limit_takes_one_job_and_reads_without_a_limit_answer(api):
    cluster = api.new_cluster()
    api.call(cluster)
    api.call(cluster)
    r = api.client.post("/jobs-request", headers=api.headers(cluster), json={"service": "svc", "ttl": 0})
    assert r.status_code == 200 and len(r.json) == 1, r.json
    for path in (f"/clusters/{cluster['id']}", f"/clusters/{cluster['id']}/activity"):
        r = api.client.get(path, headers=api.mgmt)
        assert r.status_code == 200, (path, r.json)


# --- the database questions the api asks ----------------------------------------------------------

def test_is_unavailable_tells_connection_and_pool_errors_from_bugs():
    for exc in (peewee.OperationalError("server closed the connection"), peewee.InterfaceError("gone"),
                MaxConnectionsExceeded("exceeded maximum connections")):
        assert db.is_unavailable(exc), exc
    for exc in (peewee.IntegrityError("duplicate key"), ValueError("bug"), ApiError("raised on purpose")):
        assert not db.is_unavailable(exc), exc


def test_live_pings_the_database_and_answers_503_when_it_cannot(api, tmp_path):
    assert db.ping() is None
    assert api.client.get("/live").status_code == 200
    bound = db.database.obj
    unreachable = peewee.SqliteDatabase(str(tmp_path / "no-such-dir" / "x.db"), autoconnect=False)
    db.database.initialize(unreachable)
    try:
        with pytest.raises(peewee.OperationalError) as caught:
            db.ping()
        assert db.is_unavailable(caught.value)
        r = api.client.get("/live")
    finally:
        db.database.initialize(bound)
    assert r.status_code == 503 and r.json["error"]["code"] == "database_unavailable", r.json
    assert api.client.get("/live").status_code == 200


# --- the management secret's rule, told truly ------------------------------------------------------

def test_the_management_secret_rule_is_the_settings_and_the_guides_recipe_passes(make_app, tmp_path):
    off = Api(make_app(management_secret=None)).client.post("/clusters")
    message = off.json["error"]["message"]
    assert settings_module.MANAGEMENT_SECRET_PREFIX in message
    assert f"at least {settings_module.MANAGEMENT_SECRET_MIN_LENGTH} characters" in message

    if shutil.which("openssl"):  # the recipe the guide and the message give
        tail = subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True,
                              check=True).stdout.strip()
    else:
        tail = base64.b64encode(os.urandom(32)).decode()
    secret = settings_module.MANAGEMENT_SECRET_PREFIX + tail
    parsed = settings_module.load({"MANAGEMENT_SECRET": secret, "DIFFERENTIAL_DATA_DIR": str(tmp_path / "d")})
    assert parsed.management_secret == secret
    api = Api(make_app(management_secret=secret))
    r = api.client.post("/clusters", headers={"Authorization": f"Basic {secret}"})
    assert r.status_code == 201, r.json
