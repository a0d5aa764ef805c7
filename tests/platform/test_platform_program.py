"""The Pulumi program (platform/), run for real under Pulumi's mocks."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
from collections import Counter
from pathlib import Path

import pulumi
import pytest

from app import settings as app_settings
from platform_harness import (
    ACCOUNT,
    PLATFORM_DIR,
    REGION,
    TEMPLATES_DIR,
    BASE_CONFIG,
    is_secret,
    platform_on_path,
    run_program,
    unwrap,
)

BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
USER = "aws:iam/user:User"
USER_POLICY = "aws:iam/userPolicy:UserPolicy"
ACCESS_KEY = "aws:iam/accessKey:AccessKey"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
PASSWORD = "random:index/randomPassword:RandomPassword"
BYTES = "random:index/randomBytes:RandomBytes"
COMMAND = "command:local:Command"

STORAGE = "differential:platform:Storage"
NOTIFICATIONS = "differential:platform:Notifications"
IDENTITY = "differential:platform:Identity"
SECRETS = "differential:platform:Secrets"
APP = "differential:platform:ControlPlaneApp"


def template_files() -> list[str]:
    return sorted(
        p.relative_to(TEMPLATES_DIR).as_posix()
        for p in TEMPLATES_DIR.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def expected_resources(deploy_app: bool, subscribe: bool = True) -> Counter:
    """(type, name, parent component type) of every resource the program must register."""
    rows = [
        (STORAGE, "storage", None),
        (BUCKET, "assets", STORAGE),
        (PUBLIC_ACCESS_BLOCK, "assets-public-access-block", STORAGE),
        (BUCKET_POLICY, "assets-tls-only", STORAGE),
        (OWNERSHIP, "assets-ownership", STORAGE),
        (ENCRYPTION, "assets-encryption", STORAGE),
        (LIFECYCLE, "assets-lifecycle", STORAGE),
        (BUCKET, "templates", STORAGE),
        (PUBLIC_ACCESS_BLOCK, "templates-public-access-block", STORAGE),
        (BUCKET_POLICY, "templates-tls-only", STORAGE),
        (OWNERSHIP, "templates-ownership", STORAGE),
        (ENCRYPTION, "templates-encryption", STORAGE),
        *[(OBJECT, f"template-{key.replace('/', '-')}", STORAGE) for key in template_files()],
        (SECRETS, "secrets", None),
        (PASSWORD, "management-secret", SECRETS),
        (PASSWORD, "metrics-token", SECRETS),
        (BYTES, "secrets-key", SECRETS),
        (NOTIFICATIONS, "notifications", None),
        (TOPIC, "deployments", NOTIFICATIONS),
        (IDENTITY, "identity", None),
        (USER, "control-plane", IDENTITY),
        (USER_POLICY, "control-plane-assets", IDENTITY),
        (USER_POLICY, "control-plane-deployments", IDENTITY),
        (ACCESS_KEY, "control-plane", IDENTITY),
        (ROLE, "cfn-service", IDENTITY),
        (ROLE_POLICY, "cfn-service-deployments", IDENTITY),
        (ROLE, "lambda-runtime", IDENTITY),
        (ROLE_POLICY, "lambda-runtime-logs", IDENTITY),
    ]
    if subscribe:
        rows.append((SUBSCRIPTION, "control-plane", NOTIFICATIONS))
    if deploy_app:
        rows += [(APP, "control-plane", None), (COMMAND, "fly-app", APP), (COMMAND, "fly-release", APP)]
    return Counter(rows)


def actual_resources(run) -> Counter:
    def parent_type(r):
        if not r.parent or r.parent.split("::")[2] == "pulumi:pulumi:Stack":
            return None
        return run.by_urn(r.parent).type

    return Counter((r.type, r.name, parent_type(r)) for r in run.resources)


# --- the exact set of resources, components and their outputs --------------------------------


def test_exact_resources_when_the_app_is_deployed(full_run):
    assert actual_resources(full_run) == expected_resources(deploy_app=True)


def test_exact_resources_when_the_app_is_off(app_off_run):
    assert actual_resources(app_off_run) == expected_resources(deploy_app=False)


def test_every_component_registers_its_outputs(full_run):
    components = [r for r in full_run.resources if not r.custom]
    assert {r.type for r in components} == {STORAGE, NOTIFICATIONS, IDENTITY, SECRETS, APP}
    for component in components:
        assert component.urn in full_run.outputs_registered, component.type


def test_components_take_typed_dataclass_args():
    with platform_on_path():
        for module_name, class_name in [
            ("storage", "Storage"),
            ("notifications", "Notifications"),
            ("identity", "Identity"),
            ("app_secrets", "Secrets"),
            ("fly_app", "ControlPlaneApp"),
        ]:
            module = importlib.import_module(module_name)
            cls = getattr(module, class_name)
            hints = inspect.get_annotations(cls.__init__, eval_str=True)
            args_type = hints["args"]
            assert dataclasses.is_dataclass(args_type), class_name
            assert all(f.type for f in dataclasses.fields(args_type)), class_name


def test_platform_is_not_a_package_shadowing_the_stdlib():
    assert not (PLATFORM_DIR / "__init__.py").exists()
    assert not (PLATFORM_DIR / "secrets.py").exists()
    import platform

    assert hasattr(platform, "system")  # still the standard library's module


# --- IAM ---------------------------------------------------------------------------------------


def policy(run, typ, name) -> dict:
    return json.loads(run.one(typ, name).plain["policy"])


def statements(document) -> dict[str, dict]:
    assert document["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in document["Statement"]}


def arns(run):
    out = run.outputs
    return {
        "assets": f"arn:aws:s3:::{out['assetUploadBucket']}",
        "templates": f"arn:aws:s3:::{out['deploymentTemplateBucket']}",
        "topic": out["deploymentSnsTopicArn"],
        "service_role": out["deploymentServiceRoleArn"],
        "runtime_role": out["deploymentRuntimeRoleArn"],
        "stacks": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/differential-deployment-*/*",
        "functions": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:differential-deployment-*",
        "logs": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/differential-deployment-*",
    }


def test_no_policy_has_a_wildcard_action_or_an_unscoped_resource(full_run):
    a = arns(full_run)
    allowed_resources = {
        a["assets"], a["assets"] + "/service_bundle/*", a["assets"] + "/client_library/*", a["templates"] + "/*",
        a["topic"], a["service_role"], a["runtime_role"], a["stacks"], a["functions"], a["logs"],
    }
    documents = [json.loads(r.plain["policy"]) for r in full_run.of_type(USER_POLICY) + full_run.of_type(ROLE_POLICY)]
    assert len(documents) == 4
    for document in documents:
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            assert "NotAction" not in statement and "NotResource" not in statement
            actions = statement["Action"]
            assert actions and all(re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action) for action in actions), actions
            assert set(statement["Resource"]) <= allowed_resources, statement


def test_control_plane_user_policies(full_run):
    a = arns(full_run)
    assets = statements(policy(full_run, USER_POLICY, "control-plane-assets"))
    assert assets == {
        "AssetObjects": {"Sid": "AssetObjects", "Effect": "Allow",
                         "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
                         "Resource": [a["assets"] + "/service_bundle/*", a["assets"] + "/client_library/*"]},
        "AssetListing": {"Sid": "AssetListing", "Effect": "Allow", "Action": ["s3:ListBucket"],
                         "Resource": [a["assets"]]},
        "DeploymentTemplates": {"Sid": "DeploymentTemplates", "Effect": "Allow", "Action": ["s3:GetObject"],
                                "Resource": [a["templates"] + "/*"]},
    }
    deployments = statements(policy(full_run, USER_POLICY, "control-plane-deployments"))
    stacks = {sid: deployments[sid] for sid in ("ServiceStacks", "ServiceStackDeletion", "ServiceStackReads")}
    assert {action for statement in stacks.values() for action in statement["Action"]} == {
        "cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:DeleteStack",
        "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents",
    }
    assert all(statement["Resource"] == [a["stacks"]] for statement in stacks.values())
    assert deployments["PassServiceRole"]["Action"] == ["iam:PassRole"]
    assert deployments["PassServiceRole"]["Resource"] == [a["service_role"]]
    assert deployments["PassServiceRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
    }
    assert deployments["ConfirmDeploymentSubscription"]["Action"] == ["sns:ConfirmSubscription"]
    assert deployments["ConfirmDeploymentSubscription"]["Resource"] == [a["topic"]]
    assert set(deployments["ServiceFunctions"]["Action"]) == {"lambda:GetFunction", "lambda:InvokeFunction"}
    assert deployments["ServiceFunctions"]["Resource"] == [a["functions"]]
    assert deployments["ServiceLogs"]["Action"] == ["logs:FilterLogEvents"]
    assert deployments["ServiceLogs"]["Resource"] == [a["logs"]]
    assert set(deployments) == {
        "ServiceStacks", "ServiceStackDeletion", "ServiceStackReads", "PassServiceRole",
        "ConfirmDeploymentSubscription", "ServiceFunctions", "ServiceLogs",
    }
    # Both policies belong to the control-plane user, which has exactly one access key.
    user = full_run.one(USER, "control-plane")
    for name in ("control-plane-assets", "control-plane-deployments"):
        assert full_run.one(USER_POLICY, name).plain["user"] == user.plain["name"]
    assert full_run.one(ACCESS_KEY).plain["user"] == user.plain["name"]


def test_stacks_are_changed_only_as_the_service_role_and_only_from_the_template_bucket(full_run):
    a = arns(full_run)
    deployments = statements(policy(full_run, USER_POLICY, "control-plane-deployments"))
    as_service_role = {"ArnEquals": {"cloudformation:RoleArn": a["service_role"]}}
    bucket = full_run.outputs["deploymentTemplateBucket"]
    # Each condition on the actions that carry its key (the Service Authorization Reference):
    # RoleArn on CreateStack, UpdateStack, DeleteStack; TemplateUrl on CreateStack, UpdateStack.
    changes = deployments["ServiceStacks"]
    assert changes["Action"] == ["cloudformation:CreateStack", "cloudformation:UpdateStack"]
    assert changes["Condition"] == {**as_service_role, "StringLike": {"cloudformation:TemplateUrl": [
        f"https://{bucket}.s3.{REGION}.amazonaws.com/*", f"https://{bucket}.s3.amazonaws.com/*",
        f"https://s3.{REGION}.amazonaws.com/{bucket}/*", f"https://s3.amazonaws.com/{bucket}/*"]}}
    deletion = deployments["ServiceStackDeletion"]
    assert (deletion["Action"], deletion["Condition"]) == (["cloudformation:DeleteStack"], as_service_role)
    reads = deployments["ServiceStackReads"]
    assert "Condition" not in reads  # Describe* carry neither key: a condition would refuse them
    assert set(reads["Action"]) == {"cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents"}


def test_asset_rights_stop_at_the_prefixes_named_in_one_place(full_run):
    with platform_on_path():
        policies = importlib.import_module("policies")
    a = arns(full_run)
    assets = statements(policy(full_run, USER_POLICY, "control-plane-assets"))
    assert policies.ASSET_PREFIXES == ("service_bundle/", "client_library/")
    assert assets["AssetObjects"]["Resource"] == [f"{a['assets']}/{prefix}*" for prefix in policies.ASSET_PREFIXES]
    lifecycle = full_run.one(LIFECYCLE).plain
    bundles = {rule["id"]: rule for rule in lifecycle["rules"]}["expire-service-bundles"]
    assert bundles["filter"] == {"prefix": policies.SERVICE_BUNDLE_PREFIX}


def test_every_bucket_refuses_requests_without_tls(full_run):
    ids = _bucket_ids(full_run)
    policies = full_run.of_type(BUCKET_POLICY)
    assert len(policies) == len(ids) == 2
    for label, bucket in ids.items():
        attached = full_run.one(BUCKET_POLICY, f"{label}-tls-only")
        assert attached.plain["bucket"] == bucket
        assert full_run.one(PUBLIC_ACCESS_BLOCK, f"{label}-public-access-block").urn in attached.dependencies
        document = json.loads(attached.plain["policy"])
        assert document == {"Version": "2012-10-17", "Statement": [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }]}

def test_cloudformation_service_role(full_run):
    a = arns(full_run)
    role = full_run.one(ROLE, "cfn-service").plain
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"},
                      "Action": "sts:AssumeRole"}]
    attached = full_run.one(ROLE_POLICY, "cfn-service-deployments").plain
    assert attached["role"] == f"{role['name']}"
    doc = statements(json.loads(attached["policy"]))
    assert doc["ServiceBundles"]["Action"] == ["s3:GetObject"]
    assert doc["ServiceBundles"]["Resource"] == [a["assets"] + "/service_bundle/*"]
    lambda_actions = set(doc["ServiceFunctions"]["Action"])
    # What lambda-cfn.yaml's resources need (function, concurrency, event invoke config, tags).
    assert {
        "lambda:CreateFunction", "lambda:DeleteFunction", "lambda:GetFunction", "lambda:UpdateFunctionCode",
        "lambda:UpdateFunctionConfiguration", "lambda:PutFunctionConcurrency",
        "lambda:PutFunctionEventInvokeConfig", "lambda:DeleteFunctionEventInvokeConfig", "lambda:TagResource",
    } <= lambda_actions
    assert all(action.startswith("lambda:") for action in lambda_actions)
    assert doc["ServiceFunctions"]["Resource"] == [a["functions"]]
    assert doc["PassRuntimeRole"]["Action"] == ["iam:PassRole"]
    assert doc["PassRuntimeRole"]["Resource"] == [a["runtime_role"]]
    assert doc["PassRuntimeRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    assert doc["StackNotifications"] == {"Sid": "StackNotifications", "Effect": "Allow", "Action": ["sns:Publish"],
                                         "Resource": [a["topic"]]}
    assert set(doc) == {"ServiceBundles", "ServiceFunctions", "PassRuntimeRole", "StackNotifications"}


def test_lambda_runtime_role(full_run):
    a = arns(full_run)
    role = full_run.one(ROLE, "lambda-runtime").plain
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    attached = full_run.one(ROLE_POLICY, "lambda-runtime-logs").plain
    assert attached["role"] == role["name"]
    assert json.loads(attached["policy"])["Statement"] == [{
        "Sid": "FunctionLogs", "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [a["logs"]],
    }]


def test_service_role_is_exported_as_an_arn(full_run):
    assert full_run.outputs["deploymentServiceRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/differential-{_stack(full_run)}-cfn-service"
    assert full_run.outputs["deploymentRuntimeRoleArn"].startswith(f"arn:aws:iam::{ACCOUNT}:role/")


def _stack(run) -> str:
    return run.resources[0].urn.split("::")[0].removeprefix("urn:pulumi:")


# --- storage -----------------------------------------------------------------------------------


def _bucket_ids(run):
    return {r.name: run.outputs["assetUploadBucket" if r.name == "assets" else "deploymentTemplateBucket"]
            for r in run.of_type(BUCKET)}


def test_buckets_block_public_access_are_encrypted_and_disable_acls(full_run):
    ids = _bucket_ids(full_run)
    assert set(ids) == {"assets", "templates"}
    for label, bucket in ids.items():
        assert bucket.startswith(f"differential-{_stack(full_run)}-{label}-")
        block = full_run.one(PUBLIC_ACCESS_BLOCK, f"{label}-public-access-block").plain
        assert block == {"bucket": bucket, "blockPublicAcls": True, "blockPublicPolicy": True,
                         "ignorePublicAcls": True, "restrictPublicBuckets": True}
        encryption = full_run.one(ENCRYPTION, f"{label}-encryption").plain
        assert encryption["bucket"] == bucket
        [rule] = encryption["rules"]
        assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
        ownership = full_run.one(OWNERSHIP, f"{label}-ownership").plain
        assert ownership == {"bucket": bucket, "rule": {"objectOwnership": "BucketOwnerEnforced"}}
        config = full_run.one(BUCKET, label).plain
        assert "acl" not in config and "policy" not in config and config["forceDestroy"] is False


def test_old_service_bundles_expire(full_run):
    lifecycle = full_run.one(LIFECYCLE).plain
    assert lifecycle["bucket"] == full_run.outputs["assetUploadBucket"]
    rules = {rule["id"]: rule for rule in lifecycle["rules"]}
    bundles = rules["expire-service-bundles"]
    assert bundles["status"] == "Enabled"
    assert bundles["filter"] == {"prefix": "service_bundle/"}
    assert bundles["expiration"] == {"days": 90}


def test_bundle_retention_comes_from_stack_config():
    run = run_program({"differential:bundleRetentionDays": "14"})
    rules = {rule["id"]: rule for rule in run.one(LIFECYCLE).plain["rules"]}
    assert rules["expire-service-bundles"]["expiration"] == {"days": 14}


def test_one_bucket_object_per_template_file(full_run):
    objects = full_run.of_type(OBJECT)
    files = template_files()
    assert files, "deployment-templates/ is empty"
    assert sorted(o.plain["key"] for o in objects) == files
    for obj in objects:
        inputs = obj.plain
        assert inputs["bucket"] == full_run.outputs["deploymentTemplateBucket"]
        source = inputs["source"]
        assert Path(source.path).resolve() == (TEMPLATES_DIR / inputs["key"]).resolve()


# --- notifications -----------------------------------------------------------------------------


def test_https_subscription_to_the_control_plane(full_run):
    sub = full_run.one(SUBSCRIPTION).plain
    assert full_run.outputs["endpoint"] == f"https://{BASE_CONFIG['differential:flyApp']}.fly.dev"
    assert sub["protocol"] == "https"
    assert sub["endpoint"] == full_run.outputs["endpoint"] + "/events/sns"
    assert sub["topic"] == full_run.outputs["deploymentSnsTopicArn"]
    assert sub["endpointAutoConfirms"] is False
    assert sub["confirmationTimeoutInMinutes"] >= 1
    delivery = json.loads(sub["deliveryPolicy"])
    assert delivery["requestPolicy"]["headerContentType"] == "application/json; charset=UTF-8"
    assert delivery["healthyRetryPolicy"]["numRetries"] >= 1



def test_the_topic_signs_with_sha256_the_only_version_the_control_plane_accepts(full_run):
    from app.cloud import sns

    topic = full_run.one(TOPIC, "deployments").plain
    assert topic["signatureVersion"] == 2
    assert sns.SIGNATURE_VERSIONS == (str(int(topic["signatureVersion"])),)  # numbers come back as floats

def test_subscription_waits_for_the_deployed_app(full_run):
    sub = full_run.one(SUBSCRIPTION)
    release = full_run.one(COMMAND, "fly-release")
    assert release.urn in sub.dependencies
    assert release.urn in sub.property_dependencies["endpoint"]


def test_subscription_to_a_self_deployed_control_plane(app_off_run):
    sub = app_off_run.one(SUBSCRIPTION).plain
    assert app_off_run.outputs["endpoint"] == "https://cp.example.com"
    assert sub["endpoint"] == "https://cp.example.com/events/sns"
    assert sub["protocol"] == "https"


def test_subscription_can_wait_until_the_app_runs():
    run = run_program(
        {"differential:deployApp": "false", "differential:controlPlaneUrl": "https://cp.example.com",
         "differential:subscribeEvents": "false"},
        remove=("differential:flyApp",),
    )
    assert actual_resources(run) == expected_resources(deploy_app=False, subscribe=False)


# --- secrets -----------------------------------------------------------------------------------


def test_management_secret_is_generated_once_long_enough_and_secret(full_run):
    password = full_run.one(PASSWORD, "management-secret").plain
    assert password["length"] >= 32 and password["special"] is False
    secret = full_run.outputs["managementSecret"]
    assert "managementSecret" in full_run.secret_outputs
    # The control-plane's own validation accepts it.
    assert app_settings.load({"MANAGEMENT_SECRET": secret}).management_secret == secret
    assert secret.startswith(app_settings.MANAGEMENT_SECRET_PREFIX)
    assert len(secret) >= 2 * app_settings.MANAGEMENT_SECRET_MIN_LENGTH - len(app_settings.MANAGEMENT_SECRET_PREFIX)


def test_secrets_key_is_generated_once_and_the_app_accepts_it(full_run):
    key_bytes = full_run.one(BYTES).plain
    assert key_bytes["length"] == 32
    settings = injected_settings(full_run)
    parsed = app_settings.load({**settings, "DIFFERENTIAL_REQUIRE_DATABASE_URL": "true"})  # as in the image
    assert len(parsed.secrets_key) == 1


def test_older_secrets_keys_follow_the_generated_one_for_rotation(full_run):
    older = "T2xkZXJLZXlPbGRlcktleU9sZGVyS2V5T2xkZXJLZXk="  # 32 bytes in base64
    run = run_program({"differential:olderSecretsKeys": older})
    new = injected_settings(full_run)["SECRETS_KEY"]
    assert injected_settings(run)["SECRETS_KEY"] == f"{new},{older}"
    parsed = app_settings.load({"SECRETS_KEY": injected_settings(run)["SECRETS_KEY"]}).secrets_key
    assert len(parsed) == 2  # newest first: the generated key seals, the older one still opens
    for resource in run.resources:
        assert not _leaks(resource.inputs, older), (resource.type, resource.name)


def _leaks(value, secret_text, path="") -> list[str]:
    """Places where secret_text appears in a value outside a secret marker."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [leak for k, v in value.items() for leak in _leaks(v, secret_text, f"{path}.{k}")]
    if isinstance(value, list):
        return [leak for i, v in enumerate(value) for leak in _leaks(v, secret_text, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and secret_text in value else []


def test_secret_values_never_appear_in_clear(full_run, app_off_run):
    for run in (full_run, app_off_run):
        settings = run.outputs["controlPlaneSettings"]
        secret_values = {
            "management secret": run.outputs["managementSecret"],
            "metrics token": run.outputs["metricsToken"],
            "access key secret": settings["AWS_SECRET_ACCESS_KEY"],
            "secrets key": settings["SECRETS_KEY"],
            "database URL": BASE_CONFIG["differential:databaseUrl"],
        }
        assert {"managementSecret", "metricsToken", "controlPlaneSettings"} <= run.secret_outputs
        for label, text in secret_values.items():
            for resource in run.resources:
                assert not _leaks(resource.inputs, text), (label, resource.type, resource.name)
            for name, value in run.outputs.items():
                if name not in run.secret_outputs:
                    assert text not in json.dumps(value), (label, name)


def test_database_url_comes_from_secret_config_and_is_required():
    other = "postgresql://someone:else@neon.example:5432/app"
    run = run_program({"differential:databaseUrl": other})
    assert run.outputs["controlPlaneSettings"]["DATABASE_URL"] == other
    with pytest.raises(Exception, match="databaseUrl"):
        run_program(remove=("differential:databaseUrl",))


# --- the control-plane's settings ------------------------------------------------------------


def injected_settings(run) -> dict[str, str]:
    stdin = run.one(COMMAND, "fly-release").inputs["stdin"]
    assert is_secret(stdin), "the app secrets must reach the deploy command as a secret"
    lines = unwrap(stdin).splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_every_cloud_setting_is_injected_under_its_exact_name(full_run):
    injected = injected_settings(full_run)
    known = {v.name for v in app_settings.VARIABLES}
    assert set(injected) <= known, set(injected) - known
    assert set(app_settings.CLOUD_VARIABLES) <= set(injected)
    core_secrets = {v.name for v in app_settings.VARIABLES if v.group == "core" and v.secret}
    assert core_secrets <= set(injected)
    assert "PUBLIC_URL" in known and injected["PUBLIC_URL"] == full_run.outputs["endpoint"]
    assert all(injected.values()), [k for k, v in injected.items() if not v]


def test_injected_values_are_the_stack_outputs_and_the_app_accepts_them(full_run):
    injected = injected_settings(full_run)
    out = full_run.outputs
    parsed = app_settings.load(injected)
    assert parsed.asset_upload_bucket == out["assetUploadBucket"]
    assert parsed.deployment_template_bucket == out["deploymentTemplateBucket"]
    assert parsed.deployment_sns_topic == out["deploymentSnsTopicArn"]
    assert parsed.deployment_default_service_role == out["deploymentServiceRoleArn"]
    assert parsed.deployment_default_service_role.startswith("arn:aws:iam::")
    assert parsed.deployment_runtime_role == out["deploymentRuntimeRoleArn"]
    assert parsed.aws_access_key_id == out["controlPlaneAccessKeyId"]
    assert parsed.aws_region == REGION
    assert parsed.management_secret == out["managementSecret"]
    assert parsed.metrics_token == out["metricsToken"]  # GET /metrics is guarded by a token of its own
    assert parsed.database_url == BASE_CONFIG["differential:databaseUrl"]
    assert parsed.deployments_enabled and parsed.assets_enabled and parsed.uses_postgres
    # The same map is a (secret) stack output, for `fly secrets import` by hand.
    assert out["controlPlaneSettings"] == injected


def test_stack_outputs(full_run):
    assert set(full_run.outputs) == {
        "endpoint", "managementSecret", "metricsToken", "assetUploadBucket", "deploymentTemplateBucket",
        "deploymentSnsTopicArn", "deploymentServiceRoleArn", "deploymentRuntimeRoleArn", "awsRegion",
        "controlPlaneAccessKeyId", "controlPlaneSettings", "flyApp",
    }
    assert full_run.secret_outputs == {"managementSecret", "metricsToken", "controlPlaneSettings"}


# --- the fly.io app ----------------------------------------------------------------------------


def test_fly_app_commands(full_run):
    app = full_run.one(COMMAND, "fly-app").plain
    release = full_run.one(COMMAND, "fly-release")
    assert "fly apps create" in app["create"] and "fly apps destroy" in app["delete"]
    assert app["environment"]["FLY_APP"] == BASE_CONFIG["differential:flyApp"]
    create = release.plain["create"]
    assert "fly secrets import" in create and "--stage" in create
    assert "fly deploy" in create and "--config fly.toml" in create and "--dockerfile Dockerfile" in create
    assert "delete" not in release.plain  # replacing the release never destroys the app
    assert Path(release.plain["dir"]).resolve() == PLATFORM_DIR.parent.resolve()
    assert full_run.one(COMMAND, "fly-app").urn in release.dependencies
    # No setting value is put on a command line or in the environment.
    for name, value in injected_settings(full_run).items():
        if name in ("AWS_REGION",):
            continue
        assert value not in create and value not in json.dumps(release.plain["environment"]), name


def test_code_or_secret_changes_redeploy(full_run, tmp_path):
    with platform_on_path():
        import fly_app
    raw = full_run.one(COMMAND, "fly-release").inputs["triggers"]
    triggers = unwrap(raw)
    assert triggers[0] == fly_app.source_hash(PLATFORM_DIR.parent)
    assert is_secret(raw) or is_secret(raw[1])  # the settings hash is kept as a secret

    # A code change changes the source hash.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "x.py").write_text("a = 1\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before = fly_app.source_hash(tmp_path, ("Dockerfile", "app"))
    (tmp_path / "app" / "x.py").write_text("a = 2\n")
    assert fly_app.source_hash(tmp_path, ("Dockerfile", "app")) != before

    # A secret change changes the settings hash.
    other = run_program({"differential:databaseUrl": "postgresql://u:p@elsewhere:5432/db"})
    other_triggers = unwrap(other.one(COMMAND, "fly-release").inputs["triggers"])
    assert other_triggers[1] != triggers[1]
    assert other_triggers[0] == triggers[0]


def test_fly_api_token_is_passed_as_a_secret():
    run = run_program({"differential:flyApiToken": "fo1_mock_token_value"})
    for name in ("fly-app", "fly-release"):
        env = run.one(COMMAND, name).inputs["environment"]
        token = env["FLY_API_TOKEN"] if not is_secret(env) else env["value"]["FLY_API_TOKEN"]
        assert unwrap(token) == "fo1_mock_token_value"
        assert is_secret(env) or is_secret(token)


def test_app_component_switched_off(app_off_run):
    assert not app_off_run.of_type(COMMAND) and not app_off_run.of_type(APP)
    assert "flyApp" not in app_off_run.outputs
    settings = app_off_run.outputs["controlPlaneSettings"]
    assert settings["PUBLIC_URL"] == "https://cp.example.com"
    assert set(app_settings.CLOUD_VARIABLES) <= set(settings)
    assert "controlPlaneSettings" in app_off_run.secret_outputs


def test_app_off_requires_the_control_plane_url():
    # RunError: `pulumi up` prints the message alone, without a Python traceback.
    with pytest.raises(pulumi.RunError, match="controlPlaneUrl"):
        run_program({"differential:deployApp": "false"}, remove=("differential:flyApp",))


def test_control_plane_url_must_be_https():
    with pytest.raises(pulumi.RunError, match="https"):
        run_program({"differential:deployApp": "false", "differential:controlPlaneUrl": "http://cp.example.com"},
                    remove=("differential:flyApp",))
