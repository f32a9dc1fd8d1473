"""S3 clients pointed at a test stack: boto3 with its default configuration (checksums on)."""
from __future__ import annotations

import boto3
from botocore.config import Config

REGION = "us-east-1"


def boto3_client(stack, keys: tuple[str, str], **config):
    access_key, secret = keys
    return boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, region_name=REGION,
                        config=Config(**config) if config else None)
