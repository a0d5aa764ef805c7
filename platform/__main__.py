"""Differential platform: one `pulumi up` for the cloud resources and the control-plane.

Only wiring; each concern is a component beside this file. Order of creation (by data flow):
storage, secrets, the SNS topic, identity (needs bucket and topic ARNs), the control-plane app
(needs every output as a secret), then the topic's subscription (needs the running app to
confirm it).
"""
from pathlib import Path

import pulumi

import stack_config
from app_secrets import Secrets, SecretsArgs
from control_plane_settings import control_plane_settings
from fly_app import ControlPlaneApp, ControlPlaneAppArgs
from identity import Identity, IdentityArgs
from notifications import Notifications, NotificationsArgs
from storage import Storage, StorageArgs

REPO_ROOT = Path(__file__).resolve().parent.parent
cfg = stack_config.load()

storage = Storage(
    "storage",
    StorageArgs(
        name_prefix=cfg.name_prefix,
        templates_dir=REPO_ROOT / "deployment-templates",
        bundle_retention_days=cfg.bundle_retention_days,
        force_destroy=cfg.force_destroy_buckets,
    ),
)
secrets = Secrets("secrets", SecretsArgs(database_url=cfg.database_url, older_secrets_keys=cfg.older_secrets_keys))

# With the app deployed here, the subscription's endpoint is the app's endpoint output, which
# resolves only after the deploy: a deferred output breaks the cycle topic -> app -> subscription.
subscription_url = None
resolve_subscription_url = None
if cfg.subscribe_events:
    if cfg.deploy_app:
        subscription_url, resolve_subscription_url = pulumi.deferred_output()
    else:
        subscription_url = cfg.control_plane_url
notifications = Notifications(
    "notifications",
    NotificationsArgs(name_prefix=cfg.name_prefix, control_plane_url=subscription_url),
)

identity = Identity(
    "identity",
    IdentityArgs(
        name_prefix=cfg.name_prefix,
        region=cfg.region,
        asset_bucket_arn=storage.asset_bucket.arn,
        template_bucket_arn=storage.template_bucket.arn,
        topic_arn=notifications.topic_arn,
    ),
)

settings = control_plane_settings(
    public_url=cfg.control_plane_url,
    management_secret=secrets.management_secret,
    secrets_key=secrets.secrets_key,
    metrics_token=secrets.metrics_token,
    database_url=secrets.database_url,
    asset_bucket=storage.asset_bucket_name,
    template_bucket=storage.template_bucket_name,
    topic_arn=notifications.topic_arn,
    service_role_arn=identity.service_role_arn,
    runtime_role_arn=identity.runtime_role_arn,
    access_key_id=identity.access_key_id,
    secret_access_key=identity.secret_access_key,
    region=cfg.region,
)

endpoint: pulumi.Input[str] = cfg.control_plane_url
if cfg.deploy_app:
    app = ControlPlaneApp(
        "control-plane",
        ControlPlaneAppArgs(
            app_name=cfg.fly_app,
            org=cfg.fly_org,
            repo_root=REPO_ROOT,
            settings=settings,
            fly_api_token=cfg.fly_api_token,
        ),
    )
    endpoint = app.endpoint
    pulumi.export("flyApp", app.app_name)
    if resolve_subscription_url is not None:
        resolve_subscription_url(app.endpoint)

pulumi.export("endpoint", endpoint)
pulumi.export("managementSecret", secrets.management_secret)
pulumi.export("metricsToken", secrets.metrics_token)
pulumi.export("assetUploadBucket", storage.asset_bucket_name)
pulumi.export("deploymentTemplateBucket", storage.template_bucket_name)
pulumi.export("deploymentSnsTopicArn", notifications.topic_arn)
pulumi.export("deploymentServiceRoleArn", identity.service_role_arn)
pulumi.export("deploymentRuntimeRoleArn", identity.runtime_role_arn)
pulumi.export("awsRegion", cfg.region)
pulumi.export("controlPlaneAccessKeyId", identity.access_key_id)
# Every app secret by name, for `fly secrets import` when the app is deployed by hand (README).
pulumi.export("controlPlaneSettings", pulumi.Output.secret(settings))
