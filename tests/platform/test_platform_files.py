"""The deployment template (cfn-lint), the Dockerfile, fly.toml, Pulumi.yaml and the example stack."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from app import settings as app_settings
from platform_harness import REPO_ROOT, TEMPLATES_DIR

DOCKERFILE = REPO_ROOT / "Dockerfile"
FLY_TOML = REPO_ROOT / "fly.toml"
TEMPLATE = TEMPLATES_DIR / "lambda-cfn.yaml"


# --- deployment-templates/ ---------------------------------------------------------------------


def test_cfn_lint_passes_on_every_template():
    templates = sorted(str(p) for p in TEMPLATES_DIR.glob("*.y*ml"))
    assert templates, "no template in deployment-templates/"
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    command = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    result = subprocess.run([*command, *templates], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node)}
    return {suffix: loader.construct_mapping(node)}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template():
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def test_template_parameters(template):
    params = template["Parameters"]
    assert {
        "ClusterId", "ServiceName", "DeploymentId", "FunctionName", "UploadBucketName", "UploadBucketKey",
        "APISecret", "ControlPlaneEndpoint", "Runtime", "Handler", "Timeout", "ReservedConcurrency",
        "ExecutionRole", "ServiceModule",
    } <= set(params)
    assert params["APISecret"]["NoEcho"] is True
    assert re.fullmatch(r"python3\.\d+", params["Runtime"]["Default"])
    assert params["Handler"]["Default"] == "differential.lambda_handler.handler"
    assert any(v.startswith("nodejs") for v in params["Runtime"]["AllowedValues"])
    assert params["Runtime"]["Default"] in params["Runtime"]["AllowedValues"]
    # Only names the platform's IAM policies cover can be deployed.
    pattern = params["FunctionName"]["AllowedPattern"]
    assert re.fullmatch(pattern, "differential-deployment-cluster-abc-svc")
    assert not re.fullmatch(pattern, "someone-elses-function")


def test_template_function(template):
    function = template["Resources"]["DifferentialService"]
    assert function["Type"] == "AWS::Lambda::Function"
    props = function["Properties"]
    assert props["FunctionName"] == {"Ref": "FunctionName"}
    assert props["Role"] == {"Ref": "ExecutionRole"}
    assert props["Runtime"] == {"Ref": "Runtime"} and props["Handler"] == {"Ref": "Handler"}
    assert props["Code"] == {"S3Bucket": {"Ref": "UploadBucketName"}, "S3Key": {"Ref": "UploadBucketKey"}}
    assert props["Environment"]["Variables"] == {
        "DIFFERENTIAL_ENDPOINT": {"Ref": "ControlPlaneEndpoint"},
        "DIFFERENTIAL_API_SECRET": {"Ref": "APISecret"},
        "DIFFERENTIAL_DEPLOYMENT_ID": {"Ref": "DeploymentId"},
        "DIFFERENTIAL_DEPLOYMENT_PROVIDER": "lambda",
        "DIFFERENTIAL_SERVICE_MODULE": {"Ref": "ServiceModule"},
    }
    invoke = template["Resources"]["DifferentialServiceInvokeConfig"]["Properties"]
    assert invoke["MaximumRetryAttempts"] == 0


# --- Dockerfile --------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def _exec_form(value: str) -> list[str]:
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def test_dockerfile_starts_the_wsgi_entry_point_the_tests_use():
    server = pytest.importorskip("support.server", reason="tests/support/server.py is not there yet")
    [cmd] = [rest for word, rest in _instructions() if word == "CMD"]
    assert _exec_form(cmd) == list(server.GUNICORN_ARGV)
    assert not [rest for word, rest in _instructions() if word == "ENTRYPOINT"]


def test_dockerfile_is_slim_non_root_and_installs_only_runtime_dependencies():
    rows = _instructions()
    [base] = [rest for word, rest in rows if word == "FROM"]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    users = [rest for word, rest in rows if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    installs = [rest for word, rest in rows if word == "RUN" and "pip install" in rest]
    assert installs and all("requirements/app.txt" in rest for rest in installs)
    assert not any("requirements/dev.txt" in rest or "requirements.txt " in rest + " " for rest in installs)
    copies = [rest for word, rest in rows if word == "COPY"]
    assert not any(rest.split()[0] in (".", "./") for rest in copies), "copy only what runs"


def test_dockerfile_port_health_check_and_fly_toml_agree():
    rows = _instructions()
    fly = tomllib.loads(FLY_TOML.read_text())
    port = fly["http_service"]["internal_port"]
    assert [rest for word, rest in rows if word == "EXPOSE"] == [str(port)]
    env = " ".join(rest for word, rest in rows if word == "ENV")
    assert re.search(rf"\bPORT={port}\b", env)
    assert fly["env"]["PORT"] == str(port)
    [health] = [rest for word, rest in rows if word == "HEALTHCHECK"]
    assert "/live" in health
    # gunicorn.conf.py binds $PORT; check that it really reads it (it belongs to another engineer).
    conf = REPO_ROOT / "gunicorn.conf.py"
    if conf.exists():
        assert "PORT" in conf.read_text()
    [port_variable] = [v for v in app_settings.VARIABLES if v.name == "PORT"]
    assert port_variable.group == "server" and port_variable.default == port


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in _instructions():
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def test_dockerfile_requires_a_database_url():
    env = _dockerfile_env()
    key = "T2xkZXJLZXlPbGRlcktleU9sZGVyS2V5T2xkZXJLZXk="  # the image needs a SECRETS_KEY too
    assert app_settings.load(env | {"DATABASE_URL": "postgresql://u@h/db", "SECRETS_KEY": key}).require_database_url is True
    with pytest.raises(app_settings.SettingsError, match="DATABASE_URL is required"):
        app_settings.load(env | {"SECRETS_KEY": key})
    with pytest.raises(app_settings.SettingsError, match="SECRETS_KEY is required"):
        app_settings.load(env | {"DATABASE_URL": "postgresql://u@h/db"})


def test_the_images_command_without_database_url_exits_naming_it(tmp_path):
    # The image's CMD with the image's ENV (only PORT and the data folder moved to be harmless here).
    env = {k: v for k, v in os.environ.items() if k not in {v.name for v in app_settings.VARIABLES}}
    env |= _dockerfile_env() | {"PORT": "0", "DIFFERENTIAL_DATA_DIR": str(tmp_path / "data")}
    [cmd] = [rest for word, rest in _instructions() if word == "CMD"]
    result = subprocess.run([sys.executable, "-m", *_exec_form(cmd)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DATABASE_URL is required" in result.stderr
    assert "SECRETS_KEY is required" in result.stderr
    assert app_settings.SQLITE_ESCAPE_HATCH in result.stderr
    assert not (tmp_path / "data").exists(), "it stopped before touching any database"


def test_dockerignore_keeps_the_context_small():
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!app/" in ignore and "!requirements/app.txt" in ignore


# --- fly.toml ----------------------------------------------------------------------------------


def test_fly_toml():
    fly = tomllib.loads(FLY_TOML.read_text())
    service = fly["http_service"]
    assert service["force_https"] is True
    [check] = service["checks"]
    assert check["path"] == "/live" and check["method"] == "GET"
    concurrency = service["concurrency"]
    # Long polls hold a request open for up to 20 s each: count requests, allow many.
    assert concurrency["type"] == "requests"
    assert concurrency["hard_limit"] >= 500 and concurrency["soft_limit"] <= concurrency["hard_limit"]
    assert service["auto_stop_machines"] in ("off", False), "the sweeper must keep running"
    [vm] = fly["vm"]
    assert vm["memory"] in ("512mb", "512", 512) and vm["cpu_kind"] == "shared" and vm["cpus"] == 1
    assert fly["build"]["dockerfile"] == "Dockerfile"
    # Migrations run at start-up in the app; a release_command would have to run them too.
    assert "release_command" not in fly.get("deploy", {})


def test_fly_toml_memory_settings_fit_its_vm():
    # The [env] sizing is what the memory bench measured for a 512 MB VM (bench/README.md): every
    # value parses, and the per-process budget of big bodies leaves the two workers room.
    fly = tomllib.loads(FLY_TOML.read_text())
    key = "T2xkZXJLZXlPbGRlcktleU9sZGVyS2V5T2xkZXJLZXk="
    loaded = app_settings.load(_dockerfile_env() | fly["env"] | {"DATABASE_URL": "postgresql://u@h/db",
                                                                 "SECRETS_KEY": key})
    assert loaded.max_args_bytes < loaded.max_body_bytes and loaded.max_result_bytes < loaded.max_body_bytes
    assert loaded.web_concurrency * loaded.body_budget_bytes <= 128 * 1024 * 1024


# --- Pulumi project, stack and requirements ----------------------------------------------------


def test_pulumi_project():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"] == "python"
    assert project["main"] == "platform/"
    assert project["stackConfigDir"] == "stacks"
    assert (REPO_ROOT / "platform" / "__main__.py").exists()


def test_example_stack_documents_every_key_the_program_reads():
    stack_text = (REPO_ROOT / "stacks" / "Pulumi.dev.yaml").read_text()
    program = "\n".join(p.read_text() for p in (REPO_ROOT / "platform").glob("*.py"))
    keys = set(re.findall(r'config\.(?:get|require)(?:_secret|_bool|_int)?\("([A-Za-z]+)"\)', program))
    assert {"databaseUrl", "deployApp", "flyApp", "controlPlaneUrl"} <= keys
    for key in keys:
        assert f"differential:{key}" in stack_text, key
    assert "aws:region" in stack_text
    config = yaml.safe_load(stack_text)["config"]
    assert "differential:databaseUrl" not in config, "never commit a database URL"


def test_requirements_pin_every_provider_the_program_imports():
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line} is not pinned"
            pins[name.lower()] = version
    program = "\n".join(p.read_text() for p in (REPO_ROOT / "platform").glob("*.py"))
    imported = set(re.findall(r"^\s*(?:import|from) (pulumi(?:_\w+)?)\b", program, re.M))
    assert imported, "the program imports no pulumi package?"
    for module in imported:
        assert module.replace("_", "-") in pins, module


def test_settings_names_the_platform_relies_on_exist():
    names = {v.name for v in app_settings.VARIABLES}
    assert {"PUBLIC_URL", "MANAGEMENT_SECRET", "DATABASE_URL"} <= names
