"""Storage: the asset upload bucket and the deployment template bucket with its templates."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
from policies import SERVICE_BUNDLE_PREFIX  # service bundles (zips) live under it in the asset bucket
from policies import tls_only_bucket_policy


@dataclass(frozen=True)
class StorageArgs:
    name_prefix: str
    templates_dir: Path
    bundle_retention_days: int = 90
    force_destroy: bool = False


def template_files(templates_dir: Path) -> list[Path]:
    """Every file under templates_dir, as `aws s3 sync --exclude ".*"` would upload them."""
    return sorted(
        p
        for p in templates_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(templates_dir).parts)
    )


class Storage(pulumi.ComponentResource):
    asset_bucket: aws.s3.Bucket
    template_bucket: aws.s3.Bucket

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("differential:platform:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.asset_bucket, _ = self._private_bucket("assets", args)
        # Old service bundles are never read again once their function runs; expire them.
        aws.s3.BucketLifecycleConfiguration(
            "assets-lifecycle",
            bucket=self.asset_bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-service-bundles",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=SERVICE_BUNDLE_PREFIX),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.bundle_retention_days
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=(
                        aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                            days_after_initiation=7
                        )
                    ),
                ),
            ],
            opts=child,
        )

        self.template_bucket, template_encryption = self._private_bucket("templates", args)
        # Replaces `aws s3 sync deployment-templates/ s3://<bucket>`: one object per file,
        # re-uploaded by `pulumi up` whenever a file's content changes.
        self.template_keys: list[str] = []
        for path in template_files(args.templates_dir):
            key = path.relative_to(args.templates_dir).as_posix()
            self.template_keys.append(key)
            aws.s3.BucketObjectv2(
                f"template-{key.replace('/', '-')}",
                bucket=self.template_bucket.id,
                key=key,
                source=pulumi.FileAsset(str(path)),
                content_type="application/x-yaml" if path.suffix in (".yaml", ".yml") else None,
                server_side_encryption="AES256",
                opts=pulumi.ResourceOptions(parent=self, depends_on=[template_encryption]),
            )

        self.asset_bucket_name: pulumi.Output[str] = self.asset_bucket.bucket
        self.template_bucket_name: pulumi.Output[str] = self.template_bucket.bucket
        self.register_outputs(
            {
                "assetBucketName": self.asset_bucket_name,
                "templateBucketName": self.template_bucket_name,
                "templateKeys": self.template_keys,
            }
        )

    def _private_bucket(
        self, label: str, args: StorageArgs
    ) -> tuple[aws.s3.Bucket, aws.s3.BucketServerSideEncryptionConfiguration]:
        """A bucket nobody outside the account can reach: no public access, no ACLs, encrypted,
        TLS only."""
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            label,
            bucket_prefix=f"{args.name_prefix}-{label}-",
            force_destroy=args.force_destroy,
            opts=child,
        )
        public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{label}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        # A Deny is no public grant, so the block above lets it in. Writing both at once can fail
        # (OperationAborted: a conflicting operation), hence the dependency.
        aws.s3.BucketPolicy(
            f"{label}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn), indent=2)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access_block]),
        )
        aws.s3.BucketOwnershipControls(
            f"{label}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{label}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=(
                        aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                            sse_algorithm="AES256"
                        )
                    ),
                )
            ],
            opts=child,
        )
        return bucket, encryption
