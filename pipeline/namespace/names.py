"""Names in the S3 namespace: bucket names and object keys, checked as AWS checks them."""
from __future__ import annotations

import re

from pipeline.errors import InvalidBucketName, InvalidKey, KeyTooLong

MAX_KEY_BYTES = 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
# Prefixes and suffixes AWS keeps for its own access points and aliases.
_RESERVED_PREFIXES = ("xn--", "sthree-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3")


def valid_bucket_name(name: str) -> str:
    """``name`` when AWS would accept it as a new bucket's name; raises InvalidBucketName."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        raise InvalidBucketName(
            "a bucket name is 3-63 characters of lowercase letters, digits, dots and hyphens, "
            "beginning and ending with a letter or digit", bucket=name if isinstance(name, str) else None)
    if ".." in name:
        raise InvalidBucketName("a bucket name must not contain two adjacent dots", bucket=name)
    if _IPV4.fullmatch(name):
        raise InvalidBucketName("a bucket name must not look like an IP address", bucket=name)
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        raise InvalidBucketName("a bucket name must not begin with xn-- or sthree- nor end with -s3alias, "
                                "--ol-s3, .mrap or --x-s3", bucket=name)
    return name


def valid_key(key: str) -> str:
    """``key`` when it is 1..1024 bytes of UTF-8; raises InvalidKey or KeyTooLong."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("an object key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey("an object key must be valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise KeyTooLong(f"an object key is at most {MAX_KEY_BYTES} bytes of UTF-8; this one has {size}",
                         size=size)
    return key
