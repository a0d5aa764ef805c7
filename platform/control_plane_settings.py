"""The control-plane's configuration built from the stack's resources, under the exact names
that app/settings.py reads (its VARIABLES). The tests prove the names against VARIABLES."""
from __future__ import annotations

import pulumi


def control_plane_settings(
    *,
    public_url: pulumi.Input[str],
    management_secret: pulumi.Input[str],
    secrets_key: pulumi.Input[str],
    metrics_token: pulumi.Input[str],
    database_url: pulumi.Input[str],
    asset_bucket: pulumi.Input[str],
    template_bucket: pulumi.Input[str],
    topic_arn: pulumi.Input[str],
    service_role_arn: pulumi.Input[str],
    runtime_role_arn: pulumi.Input[str],
    access_key_id: pulumi.Input[str],
    secret_access_key: pulumi.Input[str],
    region: str,
) -> dict[str, pulumi.Input[str]]:
    return {
        # core
        "PUBLIC_URL": public_url,
        "MANAGEMENT_SECRET": pulumi.Output.secret(management_secret),
        "DATABASE_URL": pulumi.Output.secret(database_url),
        "SECRETS_KEY": pulumi.Output.secret(secrets_key),
        "METRICS_TOKEN": pulumi.Output.secret(metrics_token),
        # cloud
        "ASSET_UPLOAD_BUCKET": asset_bucket,
        "DEPLOYMENT_TEMPLATE_BUCKET": template_bucket,
        "DEPLOYMENT_SNS_TOPIC": topic_arn,
        "DEPLOYMENT_DEFAULT_SERVICE_ROLE": service_role_arn,
        "DEPLOYMENT_RUNTIME_ROLE": runtime_role_arn,
        "AWS_ACCESS_KEY_ID": access_key_id,
        "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(secret_access_key),
        "AWS_REGION": region,
    }
