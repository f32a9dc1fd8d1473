"""S3 errors: one class per AWS error code with AWS's status, and the one table from domain errors.

An S3Error renders as ``<Error><Code/><Message/><Resource/><RequestId/></Error>``; ``extra``
carries the further elements AWS adds for some codes (``BucketName``, ``Key``, ``RequestTime``...).
"""
from __future__ import annotations

from pipeline.errors import StoreError


class S3Error(Exception):
    code = "InternalError"
    status = 500
    default_message = "We encountered an internal error. Please try again."
    has_body = True  # a 304 answer carries no body
    retry_after: int | None = None  # seconds, for a Retry-After header

    _by_code: dict[str, type["S3Error"]] = {}

    def __init__(self, message: str | None = None, **extra: str):
        self.message = message or self.default_message
        self.extra = {k: str(v) for k, v in extra.items() if v is not None}
        super().__init__(f"{self.code}: {self.message}")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        S3Error._by_code.setdefault(cls.code, cls)  # the first class for a code is its canonical one

    @classmethod
    def for_code(cls, code: str, message: str | None = None, **extra: str) -> "S3Error":
        """An error of the class registered for ``code`` (InternalError when unknown)."""
        return cls._by_code.get(code, InternalError)(message, **extra)


class AccessDenied(S3Error):
    code, status, default_message = "AccessDenied", 403, "Access Denied"


class RequestExpired(AccessDenied):
    default_message = "Request has expired"


class AccessForbidden(S3Error):
    """A CORS preflight that no rule of the bucket allows."""
    code, status = "AccessForbidden", 403
    default_message = ("CORSResponse: This CORS request is not allowed. This is usually because the evalution of "
                       "Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers "
                       "are not whitelisted by the resource's CORS spec.")


class SignatureDoesNotMatch(S3Error):
    code, status = "SignatureDoesNotMatch", 403
    default_message = ("The request signature we calculated does not match the signature you provided. "
                       "Check your key and signing method.")


class InvalidAccessKeyId(S3Error):
    code, status = "InvalidAccessKeyId", 403
    default_message = "The AWS Access Key Id you provided does not exist in our records."


class RequestTimeTooSkewed(S3Error):
    code, status = "RequestTimeTooSkewed", 403
    default_message = "The difference between the request time and the current time is too large."


class AuthorizationHeaderMalformed(S3Error):
    code, status = "AuthorizationHeaderMalformed", 400
    default_message = "The authorization header is malformed."


class AuthorizationQueryParametersError(S3Error):
    code, status = "AuthorizationQueryParametersError", 400
    default_message = "The authorization query parameters are malformed."


class MissingSecurityHeader(S3Error):
    code, status = "MissingSecurityHeader", 400
    default_message = "Your request is missing a required header."


class ExpiredToken(S3Error):
    code, status, default_message = "ExpiredToken", 400, "The provided token has expired."


class XAmzContentSHA256Mismatch(S3Error):
    code, status = "XAmzContentSHA256Mismatch", 400
    default_message = "The provided 'x-amz-content-sha256' header does not match what was computed."


class BadDigest(S3Error):
    code, status = "BadDigest", 400
    default_message = "The Content-MD5 you specified did not match what we received."


class InvalidDigest(S3Error):
    code, status, default_message = "InvalidDigest", 400, "The Content-MD5 you specified was invalid."


class InvalidRequest(S3Error):
    code, status, default_message = "InvalidRequest", 400, "Invalid Request"


class BadRequest(S3Error):
    code, status, default_message = "BadRequest", 400, "Bad Request"


class InvalidTag(S3Error):
    code, status, default_message = "InvalidTag", 400, "The tag provided was not a valid tag."


class InvalidPolicyDocument(S3Error):
    code, status = "InvalidPolicyDocument", 400
    default_message = "The content of the form does not meet the conditions specified in the policy document."


class MalformedPolicy(S3Error):
    code, status, default_message = "MalformedPolicy", 400, "Policies must be valid JSON and the first byte must be '{'"


class MalformedACLError(S3Error):
    code, status = "MalformedACLError", 400
    default_message = "The XML you provided was not well-formed or did not validate against our published schema"


class NoSuchBucketPolicy(S3Error):
    code, status, default_message = "NoSuchBucketPolicy", 404, "The bucket policy does not exist"


class MalformedPOSTRequest(S3Error):
    code, status = "MalformedPOSTRequest", 400
    default_message = "The body of your POST request is not well-formed multipart/form-data."


class IncompleteBody(S3Error):
    code, status = "IncompleteBody", 400
    default_message = "You did not provide the number of bytes specified by the Content-Length HTTP header."


class MalformedXML(S3Error):
    code, status = "MalformedXML", 400
    default_message = ("The XML you provided was not well-formed or did not validate against our "
                       "published schema.")


class InvalidArgument(S3Error):
    code, status, default_message = "InvalidArgument", 400, "Invalid Argument"


class InvalidBucketName(S3Error):
    code, status, default_message = "InvalidBucketName", 400, "The specified bucket is not valid."


class BucketAlreadyExists(S3Error):
    code, status = "BucketAlreadyExists", 409
    default_message = ("The requested bucket name is not available. The bucket namespace is shared by all "
                       "users of the system. Please select a different name and try again.")


class BucketAlreadyOwnedByYou(S3Error):
    code, status = "BucketAlreadyOwnedByYou", 409
    default_message = "Your previous request to create the named bucket succeeded and you already own it."


class BucketNotEmpty(S3Error):
    code, status, default_message = "BucketNotEmpty", 409, "The bucket you tried to delete is not empty"


class NoSuchBucket(S3Error):
    code, status, default_message = "NoSuchBucket", 404, "The specified bucket does not exist"


class NoSuchKey(S3Error):
    code, status, default_message = "NoSuchKey", 404, "The specified key does not exist."


class NoSuchCORSConfiguration(S3Error):
    code, status, default_message = "NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"


class NoSuchLifecycleConfiguration(S3Error):
    code, status, default_message = "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist"


class NoSuchTagSet(S3Error):
    code, status, default_message = "NoSuchTagSet", 404, "The TagSet does not exist"


class NoSuchUpload(S3Error):
    code, status = "NoSuchUpload", 404
    default_message = ("The specified upload does not exist. The upload ID may be invalid, or the upload "
                       "may have been aborted or completed.")


class InvalidPart(S3Error):
    code, status = "InvalidPart", 400
    default_message = ("One or more of the specified parts could not be found. The part may not have been "
                       "uploaded, or the specified entity tag may not match the part's entity tag.")


class InvalidPartOrder(S3Error):
    code, status = "InvalidPartOrder", 400
    default_message = "The list of parts was not in ascending order. Parts must be ordered by part number."


class EntityTooSmall(S3Error):
    code, status = "EntityTooSmall", 400
    default_message = "Your proposed upload is smaller than the minimum allowed object size."


class EntityTooLarge(S3Error):
    code, status = "EntityTooLarge", 400
    default_message = "Your proposed upload exceeds the maximum allowed object size."


class PreconditionFailed(S3Error):
    code, status = "PreconditionFailed", 412
    default_message = "At least one of the pre-conditions you specified did not hold"


class NotModified(S3Error):
    code, status, default_message, has_body = "NotModified", 304, "Not Modified", False


class InvalidRange(S3Error):
    code, status, default_message = "InvalidRange", 416, "The requested range is not satisfiable"


class InvalidURI(S3Error):
    code, status, default_message = "InvalidURI", 400, "Couldn't parse the specified URI."


class InvalidPartNumber(S3Error):
    code, status, default_message = "InvalidPartNumber", 400, "The requested partnumber is not satisfiable"


class NoSuchVersion(S3Error):
    code, status, default_message = "NoSuchVersion", 404, "The specified version does not exist."


class IllegalVersioningConfiguration(S3Error):
    code, status = "IllegalVersioningConfigurationException", 400
    default_message = "The versioning configuration specified in the request is invalid."


class MethodNotAllowed(S3Error):
    code, status = "MethodNotAllowed", 405
    default_message = "The specified method is not allowed against this resource."


class FeatureNotImplemented(S3Error):
    code, status = "NotImplemented", 501
    default_message = "A header you provided implies functionality that is not implemented"


class SlowDown(S3Error):
    code, status, default_message = "SlowDown", 503, "Please reduce your request rate."


class ServiceUnavailable(S3Error):
    code, status, default_message = "ServiceUnavailable", 503, "The service is unavailable; please try again."


class InternalError(S3Error):
    pass


class KeyTooLongError(S3Error):
    code, status, default_message = "KeyTooLongError", 400, "Your key is too long"


class MissingContentLength(S3Error):
    code, status, default_message = "MissingContentLength", 411, "You must provide the Content-Length HTTP header."


class InvalidObjectState(S3Error):
    code, status = "InvalidObjectState", 403
    default_message = "The operation is not valid for the current state of the object."


class InvalidBucketState(S3Error):
    code, status = "InvalidBucketState", 409
    default_message = "The request is not valid with the current state of the bucket."


class InvalidRetentionPeriod(S3Error):
    code, status = "InvalidRetentionPeriod", 400
    default_message = "Default retention period must be a positive integer value."


class ObjectLockConfigurationNotFoundError(S3Error):
    code, status = "ObjectLockConfigurationNotFoundError", 404
    default_message = "Object Lock configuration does not exist for this bucket"


class NoSuchObjectLockConfiguration(S3Error):
    code, status = "NoSuchObjectLockConfiguration", 404
    default_message = "The specified object does not have a ObjectLock configuration"


S3Error._by_code["InternalError"] = InternalError

# Domain error code -> (S3 code, status): the one place that says how S3 answers a domain error.
DOMAIN_TO_S3: dict[str, tuple[str, int]] = {
    "bad_request": ("InvalidRequest", 400),
    "invalid_id": ("InvalidArgument", 400),
    "malformed_upload": ("InvalidRequest", 400),
    "unauthorized": ("AccessDenied", 403),
    "forbidden": ("AccessDenied", 403),
    "not_found": ("NoSuchKey", 404),
    "not_ready": ("InvalidObjectState", 403),  # only a failed file stays unreadable: retrying won't help
    "too_large": ("EntityTooLarge", 400),
    "range_not_satisfiable": ("InvalidRange", 416),
    "service_unavailable": ("ServiceUnavailable", 503),
    "insufficient_storage": ("ServiceUnavailable", 503),  # S3 has no 507; clients retry a 503
    "chunk_unavailable": ("InternalError", 500),
    "chunk_busy": ("ServiceUnavailable", 503),
    "client_disconnected": ("IncompleteBody", 400),
    "server_secret": ("InternalError", 500),
    "not_enough_fragments": ("ServiceUnavailable", 503),
    "node_unavailable": ("ServiceUnavailable", 503),
    "nodes_unavailable": ("ServiceUnavailable", 503),
    # the S3 object model
    "no_such_bucket": ("NoSuchBucket", 404),
    "no_such_key": ("NoSuchKey", 404),
    "bucket_exists": ("BucketAlreadyExists", 409),
    "bucket_owned_by_you": ("BucketAlreadyOwnedByYou", 409),
    "bucket_not_empty": ("BucketNotEmpty", 409),
    "no_such_upload": ("NoSuchUpload", 404),
    "no_such_version": ("NoSuchVersion", 404),
    "delete_marker_found": ("NoSuchKey", 404),  # 405 MethodNotAllowed when a marker is asked for by id
    "invalid_version_id": ("InvalidArgument", 400),
    "illegal_versioning_state": ("IllegalVersioningConfigurationException", 400),
    "invalid_part": ("InvalidPart", 400),
    "invalid_part_order": ("InvalidPartOrder", 400),
    "entity_too_small": ("EntityTooSmall", 400),
    "entity_too_large": ("EntityTooLarge", 400),
    "precondition_failed": ("PreconditionFailed", 412),
    "not_modified": ("NotModified", 304),
    "invalid_bucket_name": ("InvalidBucketName", 400),
    "key_too_long": ("KeyTooLongError", 400),
    "invalid_key": ("InvalidArgument", 400),
    "invalid_range": ("InvalidRange", 416),
    "bad_digest": ("BadDigest", 400),
    # object lock
    "object_locked": ("AccessDenied", 403),
    "invalid_bucket_state": ("InvalidBucketState", 409),
    "object_lock_not_enabled": ("InvalidRequest", 400),
    "no_object_lock_configuration": ("NoSuchObjectLockConfiguration", 404),
    "object_lock_configuration_not_found": ("ObjectLockConfigurationNotFoundError", 404),
}

def s3_error_for(exc: StoreError) -> S3Error:
    """The S3 error that answers a domain error; its message is the domain error's."""
    # a code not in the table takes its nearest listed ancestor's (a new BadRequest is InvalidRequest)
    code = next((DOMAIN_TO_S3[c.code][0] for c in type(exc).__mro__ if getattr(c, "code", None) in DOMAIN_TO_S3),
                "InternalError")
    if exc.code == "delete_marker_found" and "versionId" in exc.details:
        return _delete_marker_error(exc)
    extra = {}
    if "bucket" in exc.details and isinstance(exc.details["bucket"], str):
        extra["BucketName"] = exc.details["bucket"]
    if "key" in exc.details and isinstance(exc.details["key"], str):
        extra["Key"] = exc.details["key"]
    if code == "InternalError":
        err: S3Error = InternalError(**extra)  # the domain message may name chunks and nodes: log it instead
    else:
        err = S3Error.for_code(code, exc.message, **extra)
    err.retry_after = exc.retry_after
    return err


def _delete_marker_error(exc: StoreError) -> S3Error:
    """GET/HEAD of a key whose latest version is a delete marker (404), or of a marker by its
    version id (405): both say so in headers."""
    from email.utils import formatdate

    if exc.details.get("method_not_allowed"):
        err: S3Error = MethodNotAllowed(Method="GET", ResourceType="DeleteMarker")
        headers = {"Allow": "DELETE"}
    else:
        err, headers = NoSuchKey(Key=exc.details.get("key")), {}
    headers.update({"x-amz-delete-marker": "true", "x-amz-version-id": exc.details["versionId"],
                    "Last-Modified": formatdate(exc.details["lastModified"], usegmt=True)})
    err.headers = headers
    return err


def _xml_text(value: str) -> str:
    from app.s3.xmlio import escape

    return escape(value)


def error_xml(err: S3Error, resource: str, request_id: str) -> bytes:
    """The body of an error answer (empty for 304 Not Modified)."""
    if not err.has_body:
        return b""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
             f"<Code>{_xml_text(err.code)}</Code>", f"<Message>{_xml_text(err.message)}</Message>"]
    for name, value in err.extra.items():
        parts.append(f"<{name}>{_xml_text(value)}</{name}>")
    parts.append(f"<Resource>{_xml_text(resource)}</Resource><RequestId>{_xml_text(request_id)}</RequestId>")
    parts.append("</Error>")
    return "".join(parts).encode("utf-8")


class NoSuchPublicAccessBlockConfiguration(S3Error):
    code, status = "NoSuchPublicAccessBlockConfiguration", 404
    default_message = "The public access block configuration was not found"


class OwnershipControlsNotFoundError(S3Error):
    code, status, default_message = "OwnershipControlsNotFoundError", 404, "The bucket ownership controls were not found"


class AccessControlListNotSupported(S3Error):
    code, status, default_message = "AccessControlListNotSupported", 400, "The bucket does not allow ACLs"


class InvalidBucketAclWithObjectOwnership(S3Error):
    code, status = "InvalidBucketAclWithObjectOwnership", 400
    default_message = "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"


class UnresolvableGrantByEmailAddress(S3Error):
    code, status = "UnresolvableGrantByEmailAddress", 400
    default_message = "The e-mail address you provided does not match any account on record."
