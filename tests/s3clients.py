"""S3 clients pointed at a test stack: boto3 with its default configuration (checksums on)."""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import boto3
from botocore.config import Config

REGION = "us-east-1"


def boto3_client(stack, keys: tuple[str, str], **config):
    access_key, secret = keys
    return boto3.client("s3", endpoint_url=stack.s3_url, aws_access_key_id=access_key,
                        aws_secret_access_key=secret, region_name=REGION,
                        config=Config(**config) if config else None)


# --- a minimal SigV4 signer, for requests no SDK would send (skewed, tampered, hand-made bodies) ---

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@dataclass
class Signed:
    headers: dict
    signing_key: bytes
    signature: str
    amz_date: str
    scope: str


def sign(method: str, url: str, keys: tuple[str, str], headers: dict | None = None, body: bytes = b"",
         payload_hash: str | None = None, amz_date: str | None = None, region: str = REGION) -> Signed:
    """Sign a request in the Authorization header (AWS's documented algorithm, written out)."""
    access_key, secret = keys
    parts = urlsplit(url)
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload_hash = payload_hash or hashlib.sha256(body).hexdigest()
    headers = {**{k.lower(): v for k, v in (headers or {}).items()}, "host": parts.netloc,
               "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    names = sorted(headers)
    query = sorted((quote(unquote(n), safe="-_.~"), quote(unquote(v), safe="-_.~"))
                   for n, _, v in (p.partition("=") for p in parts.query.split("&") if p))
    canonical = "\n".join([method, parts.path or "/", "&".join(f"{n}={v}" for n, v in query),
                           *[f"{n}:{headers[n]}" for n in names], "", ";".join(names), payload_hash])
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return Signed(headers, key, signature, amz_date, scope)


def aws_chunked(signed: Signed, pieces: list[bytes]) -> list[tuple[bytes, str]]:
    """(piece, chunk signature) of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body, the final empty chunk included."""
    out, previous = [], signed.signature
    for piece in [*pieces, b""]:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", signed.amz_date, signed.scope, previous, EMPTY_SHA256,
                             hashlib.sha256(piece).hexdigest()])
        previous = hmac.new(signed.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        out.append((piece, previous))
    return out


def encode_chunks(chunks: list[tuple[bytes, str]]) -> bytes:
    return b"".join(f"{len(p):x};chunk-signature={s}\r\n".encode() + p + b"\r\n" for p, s in chunks)


def presign(method: str, url: str, keys: tuple[str, str], expires: int, amz_date: str | None = None,
            region: str = REGION) -> str:
    """A presigned URL (query-string SigV4, UNSIGNED-PAYLOAD), dated ``amz_date`` (default now)."""
    access_key, secret = keys
    parts = urlsplit(url)
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    params = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{access_key}/{scope}",
              "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
    canonical = "\n".join([method, parts.path, query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}&X-Amz-Signature={signature}"
