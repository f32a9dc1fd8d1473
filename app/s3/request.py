"""One S3 call as the handlers see it: who asks (tenant), for what (bucket, key, parameters), and
the services they answer with. Built by app.s3.routes before dispatch; handlers only read it.

Also the small readers every handler shares: object attributes from headers, integer
parameters, small request bodies, HTTP dates.
"""
from __future__ import annotations

import time

from flask import Response
from dataclasses import dataclass, field
from typing import Callable

from werkzeug.http import http_date, parse_date

from app.s3.errors import InvalidArgument, MissingContentLength
from app.s3.payload import PayloadReader
from app.s3.sigv4 import AuthContext
from app.s3.xmlio import Owner, read_limited
from config.settings import Settings
from pipeline.namespace.objects import ObjectAttributes, ObjectNames

META_PREFIX = "x-amz-meta-"
# content headers an object keeps and returns as they were written
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")


@dataclass
class S3Call:
    method: str
    bucket: str | None
    key: str | None
    raw_path: str
    query: dict[str, str]  # decoded once; a parameter without a value is ""
    headers: object  # werkzeug EnvironHeaders: case-insensitive
    stream: object  # the request body, HTTP chunked framing already undone
    request_id: str
    host: str
    settings: Settings
    names: ObjectNames
    enqueue: Callable[..., None]  # (file id, request id, small=False): queue a file's ingest
    auth: AuthContext | None = None  # None: an anonymous (unsigned) request
    extra_headers: dict = field(default_factory=dict)
    bucket_owner: str | None = None  # set once app.s3.access.authorize has let the call in
    remote_addr: str | None = None  # the client's address (aws:SourceIp)

    @property
    def requester(self) -> str | None:
        """The tenant that signed the call; None when it is anonymous."""
        return self.auth.tenant if self.auth is not None else None

    @property
    def tenant(self) -> str:
        """Whose names the call acts on: the bucket's owner once authorized, else the caller's."""
        return self.bucket_owner or self.auth.tenant

    @property
    def owner(self) -> Owner:
        return Owner(self.tenant, self.tenant)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if value is not None else None

    def body(self) -> PayloadReader:
        """The verified request body (iterate once)."""
        return PayloadReader(self.stream, self.headers, self.auth)

    def upload_body(self) -> PayloadReader:
        """The body of an upload (PutObject, UploadPart): S3 needs its length up front, a
        Content-Length or a chunked transfer; without either, MissingContentLength (411)."""
        if self.header("Content-Length") is None and self.header("Transfer-Encoding") is None:
            raise MissingContentLength()
        return self.body()

    def small_body(self, limit: int) -> bytes:
        """A request body of at most ``limit`` bytes (XML), verified like any body."""
        return read_limited(self.body(), limit)

    def int_param(self, name: str, default: int, low: int = 0, high: int | None = None,
                  clamp: bool = False) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise InvalidArgument(f"Provided {name} not an integer or within integer range",
                                  ArgumentName=name, ArgumentValue=raw) from None
        if value < low:
            raise InvalidArgument(f"Argument {name} must be an integer of at least {low}", ArgumentName=name,
                                  ArgumentValue=raw)
        if high is not None and value > high:
            if clamp:
                return high
            raise InvalidArgument(f"Argument {name} must be an integer of at most {high}", ArgumentName=name,
                                  ArgumentValue=raw)
        return value


def object_attributes(call: S3Call) -> ObjectAttributes:
    """What a PUT, a multipart creation or a REPLACE copy says about the object besides its bytes."""
    meta: dict[str, str] = {}
    for name, value in call.headers.items():
        lname = name.lower()
        if lname.startswith(META_PREFIX) and len(lname) > len(META_PREFIX):
            meta[lname[len(META_PREFIX):]] = value
    headers: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = call.header(name)
        if value is None:
            continue
        if name == "Content-Encoding":  # aws-chunked is how this request was framed, not the object
            value = without_aws_chunked(value)
        if value:
            headers[name] = value
    return ObjectAttributes(content_type=call.header("Content-Type") or None, metadata=meta, headers=headers)


def without_aws_chunked(value: str) -> str:
    """A Content-Encoding without its ``aws-chunked`` coding; the rest kept byte for byte."""
    kept = [v for v in value.split(",") if v.strip().lower() != "aws-chunked"]
    return ",".join(kept).strip()


def to_http_date(ts: float) -> str:
    return http_date(int(ts))


def from_http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP date; None when absent or unreadable (then ignored, as AWS does)."""
    if not value:
        return None
    parsed = parse_date(value)
    return parsed.timestamp() if parsed is not None else None


def now() -> float:
    return time.time()


def xml_answer(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body, status=status, headers=headers or {}, mimetype="application/xml")


def empty_answer(status: int = 200, headers: dict | None = None) -> Response:
    response = Response(b"", status=status, headers=headers or {})
    del response.headers["Content-Type"]  # no body, no type (as AWS answers)
    return response
