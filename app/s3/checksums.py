"""The additional checksums of S3: CRC32, CRC32C, CRC64NVME, SHA1 and SHA256, base64 on the wire.

A request names at most one: as an ``x-amz-checksum-<algo>`` header (value known up front), as
the trailer ``x-amz-trailer`` announces (value after the body), or with
``x-amz-sdk-checksum-algorithm`` alone (compute it and keep it).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from awscrt import checksums as crt

from app.s3.errors import BadDigest, InvalidRequest

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
DIGEST_SIZES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}
HEADER_PREFIX = "x-amz-checksum-"
# x-amz-checksum-* headers that name no checksum value
_NOT_VALUES = frozenset({"x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode"})
_CRCS = {"CRC32": crt.crc32, "CRC32C": crt.crc32c, "CRC64NVME": crt.crc64nvme}


def header_name(algorithm: str) -> str:
    """``"CRC32"`` -> ``"x-amz-checksum-crc32"``."""
    return HEADER_PREFIX + algorithm.lower()


def algorithm_named(name: str, where: str = "x-amz-sdk-checksum-algorithm") -> str:
    """The algorithm an upper- or lower-case name stands for; InvalidRequest when unsupported."""
    algorithm = name.strip().upper()
    if algorithm not in DIGEST_SIZES:
        raise InvalidRequest(f"Value for {where} header is invalid: unsupported checksum algorithm "
                             f"{name.strip()!r} (supported: {', '.join(ALGORITHMS)})")
    return algorithm


class Checksum:
    """One algorithm computed a piece at a time."""

    def __init__(self, algorithm: str):
        self.algorithm = algorithm_named(algorithm)
        self._crc = _CRCS.get(self.algorithm)
        self._value = 0
        self._hash = None if self._crc else hashlib.new(self.algorithm.lower())

    def update(self, data) -> None:
        if self._crc is not None:
            self._value = self._crc(data, self._value)
        else:
            self._hash.update(data)

    def digest(self) -> bytes:
        if self._crc is not None:
            return self._value.to_bytes(DIGEST_SIZES[self.algorithm], "big")
        return self._hash.digest()

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


def compute(algorithm: str, data: bytes) -> str:
    """The base64 checksum of ``data``."""
    c = Checksum(algorithm)
    c.update(data)
    return c.b64()


def decode_value(algorithm: str, value: str) -> bytes:
    """The digest a base64 value carries; InvalidRequest when it is not one of that algorithm."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZES[algorithm]:
        raise InvalidRequest(f"Value for {header_name(algorithm)} header is invalid.")
    return raw


def verify(algorithm: str, expected_b64: str, computed: bytes) -> None:
    """BadDigest when the value sent is not the body's, a value no digest could have included (as S3)."""
    try:
        expected = decode_value(algorithm, expected_b64)
    except InvalidRequest:
        expected = None
    if expected != computed:
        raise BadDigest(f"The {algorithm} you specified did not match the calculated checksum.")


@dataclass(frozen=True)
class ChecksumRequest:
    """What a request asks to be checked: ``expected`` is None when the value comes in the
    trailer (``in_trailer``) or is to be computed only."""
    algorithm: str
    expected: str | None
    in_trailer: bool

    @property
    def trailer_name(self) -> str:
        return header_name(self.algorithm)


def requested(headers) -> ChecksumRequest | None:
    """The checksum a request's headers announce; InvalidRequest on two or a malformed one."""
    found: list[tuple[str, str | None, bool]] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith(HEADER_PREFIX) and lname not in _NOT_VALUES:
            algorithm = algorithm_named(lname[len(HEADER_PREFIX):], where=lname)
            found.append((algorithm, value.strip(), False))
    for trailer in (headers.get("x-amz-trailer") or "").split(","):
        trailer = trailer.strip().lower()
        if trailer.startswith(HEADER_PREFIX):
            found.append((algorithm_named(trailer[len(HEADER_PREFIX):], where="x-amz-trailer"), None, True))
        elif trailer:
            raise InvalidRequest(f"Unsupported trailer {trailer!r}: only x-amz-checksum-* trailers are accepted.")
    if len(found) > 1:
        raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    sdk_algorithm = algorithm_named(sdk) if sdk and sdk.strip() else None
    if found:
        algorithm, expected, in_trailer = found[0]
        if sdk_algorithm is not None and sdk_algorithm != algorithm:
            raise InvalidRequest(f"Value for x-amz-sdk-checksum-algorithm header is invalid: it names "
                                 f"{sdk_algorithm} but the checksum sent is {algorithm}.")
        return ChecksumRequest(algorithm, expected, in_trailer)
    if sdk_algorithm is not None:
        return ChecksumRequest(sdk_algorithm, None, False)
    return None


# --- multipart uploads: checksum types, composite and full-object checksums -----------------------

COMPOSITE, FULL_OBJECT = "COMPOSITE", "FULL_OBJECT"
CHECKSUM_TYPES = (COMPOSITE, FULL_OBJECT)
# the types each algorithm supports, the default first (AWS: CRC64NVME is full-object only, SHA
# digests are composite only, the CRC32s default to composite when no type is given)
_TYPES_OF = {"CRC32": (COMPOSITE, FULL_OBJECT), "CRC32C": (COMPOSITE, FULL_OBJECT), "CRC64NVME": (FULL_OBJECT,),
             "SHA1": (COMPOSITE,), "SHA256": (COMPOSITE,)}
_COMBINE = {"CRC32": crt.combine_crc32, "CRC32C": crt.combine_crc32c, "CRC64NVME": crt.combine_crc64nvme}


def upload_checksum(algorithm: str | None, checksum_type: str | None) -> tuple[str | None, str | None]:
    """(algorithm, type) of a CreateMultipartUpload's x-amz-checksum-algorithm and -type headers;
    InvalidRequest for a type without an algorithm or a pair S3 does not support."""
    if checksum_type is not None and checksum_type.strip():
        kind = checksum_type.strip().upper()
        if kind not in CHECKSUM_TYPES:
            raise InvalidRequest(f"Value for x-amz-checksum-type header is invalid: {checksum_type.strip()!r} "
                                 f"(supported: {', '.join(CHECKSUM_TYPES)})")
        if not algorithm or not algorithm.strip():
            raise InvalidRequest("The x-amz-checksum-type header can only be used with the "
                                 "x-amz-checksum-algorithm header.")
    else:
        kind = None
    if not algorithm or not algorithm.strip():
        return None, None
    name = algorithm_named(algorithm, where="x-amz-checksum-algorithm")
    if kind is None:
        kind = _TYPES_OF[name][0]
    elif kind not in _TYPES_OF[name]:
        raise InvalidRequest(f"The {kind} checksum type cannot be used with the {name.lower()} checksum algorithm.")
    return name, kind


def value_header(headers) -> tuple[str, str] | None:
    """(algorithm, base64) of the one ``x-amz-checksum-<algorithm>`` header a request carries, if any."""
    found = []
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith(HEADER_PREFIX) and lname not in _NOT_VALUES:
            found.append((algorithm_named(lname[len(HEADER_PREFIX):], where=lname), value.strip()))
    if len(found) > 1:
        raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    return found[0] if found else None


def composite(algorithm: str, part_digests: list[bytes]) -> str:
    """A composite checksum: the checksum of the concatenated raw part checksums, ``-N``."""
    return f"{compute(algorithm, b''.join(part_digests))}-{len(part_digests)}"


def combine(algorithm: str, parts: list[tuple[bytes, int]]) -> str:
    """The full-object CRC of the concatenation of parts given as (raw CRC, size), with no byte read."""
    join = _COMBINE.get(algorithm)
    if join is None:
        raise InvalidRequest(f"The {algorithm} checksum algorithm has no full-object checksum.")
    value = 0  # the CRC of no bytes
    for digest, size in parts:
        value = join(value, int.from_bytes(digest, "big"), size)
    return base64.b64encode(value.to_bytes(DIGEST_SIZES[algorithm], "big")).decode("ascii")
