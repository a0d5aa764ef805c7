"""Helpers of the deploy tests: sample services (Python and Node), the AWS side on moto (buckets with
the template, roles, topic), the CLI as a subprocess, and playing the Lambda runtime: unzip a
bundle and run its handler in a subprocess with the function's environment, as AWS would (python:
differential.lambda_handler.handler with the bundle first on sys.path and no site-packages; node:
differential-index.handler)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict
from urllib.parse import urlsplit

from sdk_helpers import subprocess_env
from support import moto

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_BUCKET = "differential-test-assets"

PY_SERVICE = '''
from differential import Service

service = Service("greeter")


@service.function
def greet(name: str) -> str:
    return "Hello, " + name
'''

NODE_SERVICE = '''
const { Differential } = require("@differentialhq/core");
const d = new Differential(process.env.DIFFERENTIAL_API_SECRET);
module.exports = d.service({ name: "nodegreeter", functions: { greet: async (name) => `Hello, ${name}!` } });
'''


def write_python_service(root: Path, name: str = "greeter", requirements: str = "six==1.16.0\n") -> Path:
    (root / "greeter").mkdir(parents=True)
    (root / "greeter" / "__init__.py").write_text("")
    (root / "greeter" / "app.py").write_text(PY_SERVICE.replace('"greeter"', json.dumps(name)))
    (root / "greeter" / "data.txt").write_text("packaged too\n")
    (root / "requirements.txt").write_text(requirements + "differential\n")  # the SDK line is dropped
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "big.py").write_text("# a virtualenv is never packaged\n")
    (root / ".env").write_text("TOKEN=kept-out-of-the-bundle\n")
    return root


def write_node_service(root: Path, name: str = "nodegreeter") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(json.dumps({
        "name": "node-greeter", "version": "1.0.0", "main": "service.js",
        "dependencies": {"@differentialhq/core": "3.18.0"}, "devDependencies": {"left-pad": "1.3.0"}}))
    (root / "service.js").write_text(NODE_SERVICE.replace('"nodegreeter"', json.dumps(name)))
    (root / ".npmrc").write_text("fund=false\n")  # used by npm install, never zipped
    return root


# What the runtime sees besides the function's own variables (no virtualenv, no test settings).
_KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")

PYTHON_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from differential.lambda_handler import handler
print(json.dumps(handler({}, None)))
"""

NODE_RUN = """
const end = Date.now() + Number(process.argv[1]);
const context = { getRemainingTimeInMillis: () => end - Date.now() };
require('./differential-index.js').handler({}, context).then(
  (r) => { console.log(JSON.stringify(r)); process.exit(0); },
  (e) => { console.error(e && e.stack || e); process.exit(1); });
"""


def unzip(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


def runtime_env(function_env: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP}
    env.update(function_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_handler(runtime: str, task_root: Path, function_env: Dict[str, str], timeout: float = 60,
                remaining_ms: int = 60000) -> dict:
    """Run the bundle's handler once; its JSON answer (the last stdout line). Node's gets a
    context with `remaining_ms` left (Python's none: it then stops when idle only)."""
    env = runtime_env(function_env)
    if runtime.startswith("python"):
        # -S: no site-packages, so the bundle must hold the SDK and its dependencies itself.
        cmd = [sys.executable, "-S", "-c", PYTHON_RUN, str(task_root)]
    else:
        cmd = [shutil.which("node") or "node", "-e", NODE_RUN, str(remaining_ms)]
    r = subprocess.run(cmd, cwd=task_root, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"handler failed ({r.returncode}):\n{r.stderr[-3000:]}\n{r.stdout[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- the AWS side, on moto ---------------------------------------------------------------------------

def _role(iam, name: str, principal: str) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": principal},
                                                    "Action": "sts:AssumeRole"}]}
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def provision_cloud() -> Dict[str, str]:
    """What `pulumi up` makes, on moto: the two buckets (the template uploaded), the topic, the
    CloudFormation service role and the Lambda runtime role. Returns the control-plane's settings."""
    s3, iam, sns = moto.client("s3"), moto.client("iam"), moto.client("sns")
    assets, templates = ASSET_BUCKET, "differential-test-templates"
    for bucket in (assets, templates):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=templates, Key="lambda-cfn.yaml",
                  Body=(REPO_ROOT / "deployment-templates" / "lambda-cfn.yaml").read_bytes())
    return dict(moto.env(), ASSET_UPLOAD_BUCKET=assets, DEPLOYMENT_TEMPLATE_BUCKET=templates,
                DEPLOYMENT_SNS_TOPIC=sns.create_topic(Name="differential-test-deployments")["TopicArn"],
                DEPLOYMENT_DEFAULT_SERVICE_ROLE=_role(iam, "differential-test-cfn", "cloudformation.amazonaws.com"),
                DEPLOYMENT_RUNTIME_ROLE=_role(iam, "differential-test-runtime", "lambda.amazonaws.com"),
                SNS_VERIFY_SIGNATURES="false")


def subscribe(topic_arn: str, control_plane_url: str) -> None:
    """moto delivers http subscriptions at once (it never sends a SubscriptionConfirmation)."""
    moto.client("sns").subscribe(TopicArn=topic_arn, Protocol="http", Endpoint=f"{control_plane_url}/events/sns")


def function_code_and_env(function_name: str, dest: Path) -> Dict[str, str]:
    """The function as Lambda would run it: its code unzipped into `dest`, and its Environment.

    moto's Code.Location names its own tasks bucket (https://awslambda-<region>-tasks.s3...), which
    it does not serve; the URL's path is the S3 key the function was made from, so the bytes are
    read from the asset bucket under that key and must match the function's CodeSha256."""
    fn = moto.client("lambda").get_function(FunctionName=function_name)
    key = urlsplit(fn["Code"]["Location"]).path.lstrip("/")
    assert key.startswith("service_bundle/"), fn["Code"]
    code = moto.client("s3").get_object(Bucket=ASSET_BUCKET, Key=key)["Body"].read()
    assert base64.b64encode(hashlib.sha256(code).digest()).decode() == fn["Configuration"]["CodeSha256"]
    zip_path = dest.with_suffix(".zip")
    zip_path.write_bytes(code)
    unzip(zip_path, dest)
    return fn["Configuration"]["Environment"]["Variables"]


# -- the CLI -------------------------------------------------------------------------------------

def _cli_env(control_plane, cluster_id: str) -> Dict[str, str]:
    env = subprocess_env(DIFFERENTIAL_ENDPOINT=control_plane.url,
                         DIFFERENTIAL_MANAGEMENT_SECRET=control_plane.management_secret,
                         DIFFERENTIAL_CLUSTER_ID=cluster_id)
    env.pop("DIFFERENTIAL_API_SECRET", None)
    return env


def run_cli(control_plane, cluster_id: str, *argv: str, timeout: float = 240):
    return subprocess.run([sys.executable, "-m", "differential.cli", *argv], env=_cli_env(control_plane, cluster_id),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ctrl_c_works() -> None:
    # A pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored across exec: Python
    # then installs no KeyboardInterrupt handler. A terminal's foreground process has Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(control_plane, cluster_id: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "differential.cli", *argv], env=_cli_env(control_plane, cluster_id),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=_ctrl_c_works)
