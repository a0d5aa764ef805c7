"""Request and response schemas: enforced on requests, published in /openapi.json.

A `"default"` here is what the validator fills in for an absent field, so the views restate none;
call configuration's defaults come from the engine's `CallConfig`, their one home.
"""
from __future__ import annotations

from ..engine import call_config, clusters, controls, states
from ..engine.jobs import CallConfig
from ..engine.limits import MAX_CONCURRENCY

_CALL = CallConfig()
MAX_WAIT_MS = 20_000  # a long poll's longest wait, and its wait when the request names no ttl
MAX_DEADLINE_SECONDS = 30 * 86400  # queue and call deadlines: at most 30 days

def obj(properties: dict, required: tuple = (), extra: bool = True) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


ID = {"type": "string", "minLength": 1, "maxLength": 200}
# What a caller or worker names must round-trip through the URL routes and the NOTIFY topics
# (signals.py: "\n" separates topics, "/" their parts): no control characters in names, and an id
# is also one path segment, so neither "/" nor "." nor "..".
_CONTROL = r"\x00-\x1f\x7f-\x9f"
NAME = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": f"^[^{_CONTROL}]*$",
        "description": "without control characters"}
NEW_ID = {**ID, "pattern": rf"^(?!\.{{1,2}}$)[^/{_CONTROL}]*$",
          "description": "without '/' or control characters, and neither '.' nor '..'"}
PAYLOAD = {"type": "string", "description": "base64 of MessagePack, stored opaquely"}
NULLABLE_TEXT = {"type": ["string", "null"]}
TIMESTAMP = {"type": ["string", "null"], "description": "ISO 8601, UTC"}

ERROR = obj({"error": obj({
    "code": {"type": "string"},
    "message": {"type": "string"},
    "details": {},
}, required=("code", "message", "details"))}, required=("error",))

# --- job protocol -------------------------------------------------------------------------------

# Retries on rejection (issue 14), per call (callConfig) or per function (its definition).
RETRY_ON_REJECTION = obj({
    "attempts": {"type": "integer", "minimum": 1, "maximum": 100,
                 "description": "attempts in all, the first included (1: no retry)"},
    "initialDelaySeconds": {"type": "number", "minimum": 0, "maximum": 86400,
                            "default": controls.INITIAL_DELAY_SECONDS},
    "factor": {"type": "number", "minimum": 1, "maximum": 100, "default": controls.FACTOR,
               "description": "each delay is the previous one times this"},
    "maxDelaySeconds": {"type": "number", "minimum": 0, "maximum": 86400, "default": controls.MAX_DELAY_SECONDS},
    "jitter": {"type": "number", "minimum": 0, "maximum": 1, "default": controls.JITTER,
               "description": "the share of each delay drawn at random (0: exact)"},
}, required=("attempts",), extra=False)
MAX_DELAY_SECONDS = call_config.MAX_DELAY_SECONDS

# Concurrency limits (engine/limits.py): optional, ours only; each poll is judged by its own.
CONCURRENCY = {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY,
               "description": "the most running jobs at once, across every machine of the cluster"}

FUNCTION = obj({"name": NAME, "schema": {"type": "string", "description": "JSON Schema of the input, as text"},
                "concurrency": {**CONCURRENCY, "description": "the most running jobs of this function at once, "
                                                              "across every machine of the cluster"},
                "retryOnRejection": RETRY_ON_REJECTION},
               required=("name",))

JOBS_REQUEST = obj({
    "service": NAME,
    "limit": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1},
    "ttl": {"type": "integer", "minimum": 0, "maximum": 600000, "default": MAX_WAIT_MS,
            "description": f"longest wait in ms; values above {MAX_WAIT_MS} wait {MAX_WAIT_MS}"},
    "functions": {"type": "array", "maxItems": 1000, "items": FUNCTION},
    "concurrency": {**CONCURRENCY, "description": "the most running jobs of the service (all its functions) at "
                                                  "once, across every machine of the cluster"},
}, required=("service",))

CLAIMED_JOB = obj({"id": ID, "targetFn": {"type": "string"}, "targetArgs": {"type": "string"}},
                  required=("id", "targetFn", "targetArgs"))
CLAIMED_JOBS = {"type": "array", "items": CLAIMED_JOB}

CALL_CONFIG = obj({
    "retryCountOnStall": {"type": "integer", "minimum": 0, "maximum": 100,
                          "default": _CALL.retry_count_on_stall},
    "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 86400, "default": _CALL.timeout_seconds},
    "predictiveRetriesOnRejection": {"type": "boolean", "default": _CALL.predictive_retries},
    "cache": obj({"key": {"type": "string", "maxLength": 1024},
                  "ttlSeconds": {"type": "integer", "minimum": 0, "maximum": 31536000}},
                 required=("key", "ttlSeconds")),
    "executionId": NEW_ID,
    "background": {"type": "boolean", "description": "accepted; a background call differs only in how the caller waits"},
    # Deadlines (extensions: the published SDK sends neither), from the create (a delayed call's
    # queue deadline: from when it is due), on the database's clock.
    "queueDeadlineSeconds": {"type": "number", "minimum": 0.001, "maximum": MAX_DEADLINE_SECONDS,
                             "description": "the call fails unless a machine claims it within this"},
    "callDeadlineSeconds": {"type": "number", "minimum": 0.001, "maximum": MAX_DEADLINE_SECONDS,
                            "description": "the whole call, across attempts, fails unless it finishes within this"},
    # Delayed calls (at most one of the two) and retries on rejection (issue 14).
    "delaySeconds": {"type": "number", "minimum": 0, "maximum": MAX_DELAY_SECONDS,
                     "description": "claimable only this long after the create (database clock)"},
    "runAt": {"type": "string", "minLength": 1, "maxLength": 64,
              "description": "an RFC 3339 date-time with an offset (2026-12-01T17:00:00Z): claimable from then"},
    "retryOnRejection": RETRY_ON_REJECTION,
})

CREATE_JOB = obj({
    "service": NAME,
    "targetFn": NAME,
    "targetArgs": PAYLOAD,
    "callConfig": {**CALL_CONFIG, "default": {}},  # absent: every default applies
}, required=("service", "targetFn", "targetArgs"))

CREATED_JOB = obj({"id": ID}, required=("id",))

JOB_STATUS = obj({
    "id": ID,
    "status": {"type": "string", "enum": list(states.WIRE_STATUSES),
               "description": "in the original's vocabulary (engine/states.py, wire_status)"},
    "result": NULLABLE_TEXT,
    "resultType": {"type": ["string", "null"], "enum": [states.ResultType.RESOLUTION, states.ResultType.REJECTION, None]},
    "service": {"type": "string"},
    "state": {"type": "string", "enum": list(states.ALL), "description": "the job's status in the state machine"},
    "reason": {"type": ["string", "null"], "description": "why it ended without a result of its own"},
}, required=("id", "status", "result", "resultType", "service", "state", "reason"))

JOB_STATUS_QUERY = obj({"ttl": {"type": "integer", "minimum": 0, "maximum": 600000, "default": MAX_WAIT_MS}},
                       extra=False)

BATCH_STATUS_REQUEST = obj({
    "jobIds": {"type": "array", "maxItems": 100000, "items": ID},
    "ttl": {"type": "integer", "minimum": 0, "maximum": 600000, "default": MAX_WAIT_MS},
}, required=("jobIds",))
JOB_STATUSES = {"type": "array", "items": JOB_STATUS}

CANCEL_JOB = obj({"reason": {"type": "string", "maxLength": 500, "description": "why; recorded in the job's reason"}},
                 extra=False)

JOB_RESULT = obj({
    "result": PAYLOAD,
    "resultType": {"type": "string", "enum": [states.ResultType.RESOLUTION, states.ResultType.REJECTION]},
    "functionExecutionTime": {"type": "number", "minimum": 0},
}, required=("result", "resultType"))

CLIENT_EVENT = obj({
    "timestamp": {"type": "string"},
    "type": {"type": "string", "enum": ["machineResourceProbe", "functionInvocation"]},
    "tags": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 200}},  # tags.service: a column
    "intFields": {"type": "object", "additionalProperties": {"type": "number"}},
}, required=("type",))
METRICS = obj({"events": {"type": "array", "maxItems": 5000, "items": CLIENT_EVENT}}, required=("events",))

LIVE = obj({"status": {"type": "string"}}, required=("status",))

# --- management ---------------------------------------------------------------------------------

CREATE_CLUSTER = obj({"description": {"type": ["string", "null"], "maxLength": 1024}})

CLUSTER = obj({"id": ID, "apiSecret": {"type": "string"}, "createdAt": TIMESTAMP,
               "description": NULLABLE_TEXT,
               "secretRotatedAt": {**TIMESTAMP, "description": "when the secret was last rotated (absent: never)"},
               "previousSecretExpiresAt": {**TIMESTAMP, "description": "present during a rotation's grace: when the "
                                                                       "previous secret stops working"}},
              required=("id", "apiSecret", "createdAt", "description"))
CLUSTERS = {"type": "array", "items": CLUSTER}

JOB_SUMMARY = obj({"id": ID, "service": {"type": "string"}, "targetFn": {"type": "string"},
                   "status": {"type": "string"}, "resultType": {"type": ["string", "null"]},
                   "attempt": {"type": "integer"}, "attemptsAllowed": {"type": "integer"},
                   "createdAt": TIMESTAMP, "resultedAt": TIMESTAMP,
                   "functionExecutionTime": {"type": ["integer", "null"]}, "machineId": NULLABLE_TEXT,
                   "reason": NULLABLE_TEXT},
                  required=("id", "service", "targetFn", "status"))
DEFINITION = obj({"name": {"type": "string"}, "functions": {"type": "array", "items": FUNCTION},
                  "concurrency": {**CONCURRENCY, "description": "the service's limit, as its last poll declared it"}},
                 required=("name",))
MACHINE = obj({"id": {"type": "string"}, "ip": NULLABLE_TEXT, "status": {"type": "string"},
               "deploymentId": NULLABLE_TEXT, "lastPingAt": TIMESTAMP}, required=("id", "status"))

SERVICE_WORKERS = obj({"service": {"type": "string"}, "liveWorkers": {"type": "integer"},
                       "lastPollAt": TIMESTAMP}, required=("service", "liveWorkers", "lastPollAt"))

CLUSTER_DETAILS = {**CLUSTER, "properties": {
    **CLUSTER["properties"],
    "machines": {"type": "array", "items": MACHINE, "description": "workers: machines that poll for jobs"},
    "workers": {"type": "array", "items": SERVICE_WORKERS,
                "description": "per service, the machines that polled it within MACHINE_TIMEOUT_SECONDS"},
    "jobs": {"type": "array", "items": JOB_SUMMARY},
    "definitions": {"type": "array", "items": DEFINITION},
    "limit": {"type": "integer", "description": "the most items each list holds (the `limit` asked for)"},
    "counts": obj({"machines": {"type": "integer"}, "definitions": {"type": "integer"}},
                  required=("machines", "definitions")),
}, "required": CLUSTER["required"] + ["machines", "workers", "jobs", "definitions", "limit", "counts"]}

LIST_QUERY = obj({"limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}, extra=False)

SERVICE_DETAILS = obj({"definition": DEFINITION, "jobs": {"type": "array", "items": JOB_SUMMARY},
                       "schema": {"description": "the schema an operator put (PUT .../schema), or null"}},
                      required=("definition", "jobs"))

CLUSTER_SETTINGS = obj({"predictiveRetriesEnabled": {"type": "boolean"}, "cloudEnabled": {"type": "boolean"}},
                       required=("predictiveRetriesEnabled", "cloudEnabled"))
PUT_SETTINGS = obj(CLUSTER_SETTINGS["properties"], extra=False)  # any of the settings GET reports, and no other

ACTIVITY_QUERY = obj({"jobId": ID, "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                      "before": {"type": "integer", "minimum": 1}}, extra=False)
ACTIVITY = obj({"events": {"type": "array", "items": obj({
    "type": {"type": "string"}, "jobId": NULLABLE_TEXT, "machineId": NULLABLE_TEXT, "service": NULLABLE_TEXT,
    "deploymentId": NULLABLE_TEXT, "timestamp": TIMESTAMP, "meta": {"type": "object"}},
    required=("type", "timestamp", "meta"))}, "next": {"type": ["integer", "null"]}}, required=("events", "next"))

# --- job admin (management) ---------------------------------------------------------------------

JOBS_QUERY = obj({
    "status": {"type": "array", "items": {"type": "string", "enum": list(states.ALL)}, "maxItems": len(states.ALL),
               "description": "the job's state; repeat the parameter or separate states by commas"},
    "service": NAME, "function": NAME,
    "createdAfter": {"type": "string", "maxLength": 64, "description": "ISO 8601 (UTC unless it names an offset)"},
    "createdBefore": {"type": "string", "maxLength": 64, "description": "ISO 8601 (UTC unless it names an offset)"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    "cursor": {"type": "string", "maxLength": 100, "description": "the `next` of the previous page"},
}, extra=False)
JOB_LIST = obj({"jobs": {"type": "array", "items": JOB_SUMMARY},
                "next": {"type": ["string", "null"], "description": "cursor of the next page; null on the last"}},
               required=("jobs", "next"))
JOB_DETAIL = {**JOB_SUMMARY, "properties": {
    **JOB_SUMMARY["properties"],
    "wireStatus": {"type": "string", "enum": list(states.WIRE_STATUSES),
                   "description": "what the job protocol's status answers say (engine/states.py, wire_status)"},
    "targetArgs": PAYLOAD, "result": NULLABLE_TEXT, "timeoutSeconds": {"type": "integer"},
    "cacheKey": NULLABLE_TEXT, "deploymentId": NULLABLE_TEXT, "predictiveRetries": {"type": "boolean"},
    "claimedAt": TIMESTAMP, "attemptDeadline": TIMESTAMP, "runAt": TIMESTAMP, "queueDeadline": TIMESTAMP,
    "callDeadline": TIMESTAMP,
    "backoff": {"type": ["object", "null"], "properties": {
        "attempts": {"type": "integer"}, "initialMs": {"type": ["integer", "null"]},
        "factor": {"type": ["number", "null"]}, "maxMs": {"type": ["integer", "null"]},
        "jitter": {"type": ["number", "null"]}}},
    "activity": ACTIVITY,
}, "required": JOB_SUMMARY["required"] + ["wireStatus", "targetArgs", "result", "activity"]}

# --- cloud ----------------------------------------------------------------------------------------

SNS_MESSAGE = obj({
    "Type": {"type": "string", "enum": ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]},
    "MessageId": {"type": "string"}, "TopicArn": {"type": "string"}, "Message": {"type": "string"},
    "Subject": {"type": ["string", "null"]}, "Timestamp": {"type": "string"}, "Token": {"type": "string"},
    "SubscribeURL": {"type": "string"}, "Signature": {"type": "string"}, "SignatureVersion": {"type": "string"},
    "SigningCertURL": {"type": "string"},
}, required=("Type", "MessageId", "TopicArn", "Message", "Timestamp"))
SNS_ACCEPTED = obj({"type": {"type": "string"}, "stack": NULLABLE_TEXT, "outcome": NULLABLE_TEXT},
                   required=("type",))

# --- schedules (engine/schedules.py) ---------------------------------------------------------------

# One URL path segment, and short enough that `schedule:<name>:<tick>` fits an executionId (NEW_ID).
SCHEDULE_NAME = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                 "description": "letters, digits, '_', '.', '-'; starting with a letter or digit"}
_SCHEDULE_CALL_CONFIG = {key: value for key, value in CALL_CONFIG.items() if key != "default"}
_SCHEDULE_FIELDS = {
    "service": NAME,
    "function": NAME,
    "arguments": {"type": "array", "maxItems": 1000, "description": "the function's positional arguments, as JSON"},
    "cron": {"type": "string", "minLength": 1, "maxLength": 200,
             "description": "5 fields: minute hour day-of-month month day-of-week"},
    "timezone": {"type": "string", "minLength": 1, "maxLength": 64, "default": "UTC",
                 "description": "IANA time zone the cron expression is read in"},
    "catchUp": {"type": "string", "enum": ["latest", "none", "all"], "default": "latest",
                "description": "ticks missed while nobody maintained: fire the latest once, none, or all (bounded)"},
    "callConfig": {**_SCHEDULE_CALL_CONFIG, "type": ["object", "null"],
                   "description": "each call's callConfig, as POST /jobs takes it (no executionId: each tick has its own)"},
    "paused": {"type": "boolean", "default": False},
}
_SCHEDULE_REQUIRED = ("service", "function", "arguments", "cron")
_SCHEDULE_EXAMPLE = {"service": "reports", "function": "build", "arguments": ["eu"], "cron": "30 2 * * *",
                     "timezone": "Europe/Paris"}
CREATE_SCHEDULE = {**obj({"name": SCHEDULE_NAME, **_SCHEDULE_FIELDS}, required=("name",) + _SCHEDULE_REQUIRED, extra=False),
                   "examples": [{"name": "nightly-report", **_SCHEDULE_EXAMPLE}]}
PUT_SCHEDULE = {**obj({"name": SCHEDULE_NAME, **_SCHEDULE_FIELDS}, required=_SCHEDULE_REQUIRED, extra=False),
                "examples": [_SCHEDULE_EXAMPLE]}
PATCH_SCHEDULE = obj({key: {k: v for k, v in value.items() if k != "default"} for key, value in _SCHEDULE_FIELDS.items()},
                     extra=False)
SCHEDULE = obj({"name": {"type": "string"}, **{k: {k2: v2 for k2, v2 in v.items() if k2 != "default"}
                                                for k, v in _SCHEDULE_FIELDS.items()},
                "nextFireAt": TIMESTAMP, "lastFiredAt": TIMESTAMP, "createdAt": TIMESTAMP, "updatedAt": TIMESTAMP},
               required=("name",) + tuple(_SCHEDULE_FIELDS) + ("nextFireAt", "lastFiredAt", "createdAt", "updatedAt"))
SCHEDULES = obj({"schedules": {"type": "array", "items": SCHEDULE},
                 "next": {"type": ["string", "null"], "description": "`after` for the next page"}},
                required=("schedules", "next"))
SCHEDULES_QUERY = obj({"limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                       "after": SCHEDULE_NAME}, extra=False)

# --- cluster lifecycle and service schemas (engine/clusters.py, engine/cluster_deletion.py) ----------

ROTATE_SECRET = obj({"graceSeconds": {
    "type": "integer", "minimum": 0, "maximum": clusters.MAX_GRACE_SECONDS, "default": clusters.DEFAULT_GRACE_SECONDS,
    "description": "how long the current secret keeps working beside the new one (0: it stops at once)"}},
    extra=False)

ROTATED_SECRET = {**CLUSTER, "properties": {
    **CLUSTER["properties"],
    "graceSeconds": {"type": "integer"},
    "previousSecretExpiresAt": {**TIMESTAMP, "description": "when the replaced secret stops (now, for a grace of 0)"},
}, "required": CLUSTER["required"] + ["graceSeconds", "previousSecretExpiresAt"]}

CLUSTER_DELETED = obj({"id": ID, "deletedAt": TIMESTAMP,
                       "finished": {"type": "boolean", "description": "whether every row of the cluster went "
                                                                      "within the request (else maintenance goes on)"}},
                      required=("id", "deletedAt", "finished"))

PUT_SERVICE_SCHEMA = obj({"schema": {"type": ["string", "object", "boolean"],
                                     "description": "a JSON Schema: as JSON text (as the original takes it) or as "
                                                    f"JSON; at most {clusters.MAX_SCHEMA_BYTES} bytes"}},
                         required=("schema",), extra=False)

SERVICE_SCHEMA = obj({"service": {"type": "string"},
                      "schema": {"description": "the schema, as JSON; null if nobody put one"}},
                     required=("service", "schema"))
# --- cluster metrics (management) -----------------------------------------------------------------

CLUSTER_METRICS_QUERY = obj({
    "serviceName": {**NAME, "description": "one service; every service when absent"},
    "start": {"type": "string", "maxLength": 64,
              "description": "ISO 8601 (UTC unless it names an offset); default an hour before `end`; rounds down to a minute"},
    "end": {"type": "string", "maxLength": 64,
            "description": "ISO 8601 (UTC unless it names an offset); default now; rounds up to a minute"},
    "bucketSeconds": {"type": "integer", "minimum": 60, "maximum": 366 * 86400, "multipleOf": 60,
                      "description": "timeseries bucket size, a multiple of 60, at most 1500 buckets in the range; "
                                     "default the smallest whole minutes within that"},
}, extra=False)
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_METRIC_TIMES = obj({"count": {"type": "integer"}, "mean": _NUMBER_OR_NULL, "p50": _NUMBER_OR_NULL,
                     "p90": _NUMBER_OR_NULL, "p99": _NUMBER_OR_NULL},
                    required=("count", "mean", "p50", "p90", "p99"))
_METRIC_CALLS = obj({k: {"type": "integer"} for k in ("resolution", "rejection", "failure", "cancelled", "total")},
                    required=("resolution", "rejection", "failure", "cancelled", "total"))
_METRIC_FIELDS = {"calls": _METRIC_CALLS, "throughputPerSecond": _NUMBER_OR_NULL,
                  "executionMs": {**_METRIC_TIMES, "description": "jobs that ran; percentiles interpolated "
                                  "inside histogram buckets"},
                  "queueMs": {**_METRIC_TIMES, "description": "claimed (or, never claimed, ended) minus created"}}
CLUSTER_METRICS = obj({
    "clusterId": {"type": "string"}, "serviceName": {"type": ["string", "null"]},
    "start": {"type": "string"}, "end": {"type": "string"}, "bucketSeconds": {"type": "integer"},
    "histogramBoundsMs": {"type": "array", "items": {"type": "integer"}},
    "functions": {"type": "array", "items": obj({
        "service": {"type": "string"}, "function": {"type": "string"},
        "summary": obj(_METRIC_FIELDS, required=tuple(_METRIC_FIELDS)),
        "timeseries": {"type": "array", "description": "buckets with calls, oldest first (empty ones left out)",
                       "items": obj({"start": {"type": "string"}, **_METRIC_FIELDS},
                                    required=("start", *_METRIC_FIELDS))},
    }, required=("service", "function", "summary", "timeseries"))},
}, required=("clusterId", "serviceName", "start", "end", "bucketSeconds", "histogramBoundsMs", "functions"))


# --- access points and synchronous calls (engine/access_points.py, engine/execute.py) -----------

PUT_ACCESS_POINT = obj({
    "allowedServices": {"type": ["string", "array"], "items": {"type": "string"}, "maxItems": 100,
                        "maxLength": 20_000,
                        "description": "service names, comma-separated as the original takes them or a list; "
                                       "\"*\" allows every service"},
}, required=("allowedServices",), extra=False)
PUT_ACCESS_POINT = {**PUT_ACCESS_POINT, "examples": [{"allowedServices": "billing, reports"}]}
_ACCESS_POINT_FIELDS = {"name": {"type": "string"}, "allowedServices": {"type": "array", "items": {"type": "string"}},
                        "createdAt": TIMESTAMP, "rotatedAt": TIMESTAMP, "lastUsedAt": TIMESTAMP}
ACCESS_POINT = obj(_ACCESS_POINT_FIELDS, required=tuple(_ACCESS_POINT_FIELDS))
ACCESS_POINT_TOKEN = obj({"token": {"type": "string", "description": "sk_ap_ + 64 hex; shown only in this answer"},
                          **_ACCESS_POINT_FIELDS}, required=("token",) + tuple(_ACCESS_POINT_FIELDS))
ACCESS_POINTS = obj({"accessPoints": {"type": "array", "items": ACCESS_POINT}}, required=("accessPoints",))

MAX_EXECUTE_WAIT_SECONDS = MAX_WAIT_MS / 1000
EXECUTE = {**obj({
    "service": NAME,
    "function": NAME,
    "args": {"type": "array", "default": [], "description": "the function's positional arguments, as JSON"},
    "callConfig": {**_SCHEDULE_CALL_CONFIG, "default": {}, "description": "as POST /jobs takes it"},
    "waitSeconds": {"type": "number", "minimum": 0, "maximum": MAX_EXECUTE_WAIT_SECONDS,
                    "default": MAX_EXECUTE_WAIT_SECONDS,
                    "description": "how long to wait for the result before answering 202 with the job id"},
}, required=("service", "function"), extra=False)}
EXECUTE_POLL_QUERY = obj({"waitSeconds": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS // 1000,
                                          "default": MAX_WAIT_MS // 1000}}, extra=False)
EXECUTE_ERROR = obj({"name": {"type": "string"}, "message": {"type": "string"},
                     "code": {"description": "as the function's error had it (often text)"},
                     "stack": {"description": "as the SDK serialised it"}}, required=("name", "message"))
EXECUTED = obj({
    "jobId": ID,
    "status": JOB_STATUS["properties"]["status"],
    "state": JOB_STATUS["properties"]["state"],
    "resultType": JOB_STATUS["properties"]["resultType"],
    "outcome": {"type": "string", "enum": [states.ResultType.RESOLUTION, states.ResultType.REJECTION,
                                           states.JobStatus.FAILURE, states.JobStatus.CANCELLED]},
    "result": {"description": "the function's value as JSON (resolution only; README: the JSON/MessagePack mapping)"},
    "error": {**EXECUTE_ERROR, "description": "the function's error (rejection), or why the control-plane ended it"},
    "reason": {"type": ["string", "null"], "description": "why the control-plane ended it (failure, cancelled)"},
}, required=("jobId", "status", "state", "resultType", "outcome"))
EXECUTE_PENDING = obj({"jobId": ID, "status": JOB_STATUS["properties"]["status"],
                       "state": JOB_STATUS["properties"]["state"]}, required=("jobId", "status", "state"))

# --- assets (api/assets.py): uploads of service bundles and client libraries -----------------------

REQUEST_UPLOAD = obj({
    "type": {"type": "string", "enum": ["service_bundle", "client_library"]},
    "target": {**ID, "maxLength": 64, "description": "the deployment or client library the upload is for"},
}, required=("type", "target"), extra=False)
UPLOAD_URL = obj({
    "presignedUrl": {"type": "string", "description": "PUT the file here, with exactly `headers`"},
    "assetId": {"type": "string"}, "key": {"type": "string"}, "method": {"type": "string", "enum": ["PUT"]},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "contentType": {"type": "string"}, "maxBytes": {"type": "integer"}, "expiresAt": TIMESTAMP,
}, required=("presignedUrl", "assetId", "headers", "expiresAt"))
UPLOADED = obj({"key": {"type": "string"}, "size": {"type": "integer"}}, required=("key", "size"))
