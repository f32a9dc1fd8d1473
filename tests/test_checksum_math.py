"""S3's checksum arithmetic without a server: full-object CRCs combined from part CRCs, composite
checksums, the checksum types of multipart uploads, and what a stored Content-Encoding keeps."""
from __future__ import annotations

import base64
import hashlib
import random

import pytest

from app.s3 import checksums
from app.s3.errors import InvalidRequest
from app.s3.request import without_aws_chunked

CRCS = ("CRC32", "CRC32C", "CRC64NVME")


def raw(algorithm: str, data: bytes) -> bytes:
    return base64.b64decode(checksums.compute(algorithm, data))


@pytest.mark.parametrize("algorithm", CRCS)
@pytest.mark.parametrize("sizes", [[1], [0, 5], [5, 0, 3], [1 << 20, 17, 1], [4097, 4096, 1 << 16, 33]])
def test_combined_crc_equals_the_crc_of_the_concatenation(algorithm, sizes):
    rng = random.Random(hash((algorithm, tuple(sizes))))
    parts = [rng.randbytes(n) for n in sizes]
    combined = checksums.combine(algorithm, [(raw(algorithm, p), len(p)) for p in parts])
    assert combined == checksums.compute(algorithm, b"".join(parts))


def test_combined_crc32_matches_zlib_on_a_known_input():
    import zlib

    parts = [b"The quick brown fox ", b"jumps over ", b"the lazy dog"]
    combined = checksums.combine("CRC32", [(raw("CRC32", p), len(p)) for p in parts])
    assert base64.b64decode(combined) == zlib.crc32(b"".join(parts)).to_bytes(4, "big")


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "CRC32", "CRC32C"])
def test_composite_is_the_checksum_of_the_raw_part_checksums_with_the_part_count(algorithm):
    parts = [b"a" * 10, b"b" * 20, b"c"]
    digests = [raw(algorithm, p) for p in parts]
    value = checksums.composite(algorithm, digests)
    assert value == checksums.compute(algorithm, b"".join(digests)) + "-3"
    if algorithm == "SHA256":
        expected = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
        assert value == expected.decode() + "-3"


def test_sha_digests_have_no_full_object_combination():
    with pytest.raises(InvalidRequest):
        checksums.combine("SHA256", [(b"\0" * 32, 1)])


@pytest.mark.parametrize("algorithm, kind, expected", [
    ("crc32", None, ("CRC32", "COMPOSITE")),
    ("CRC32C", None, ("CRC32C", "COMPOSITE")),
    ("CRC64NVME", None, ("CRC64NVME", "FULL_OBJECT")),
    ("SHA1", None, ("SHA1", "COMPOSITE")),
    ("SHA256", "composite", ("SHA256", "COMPOSITE")),
    ("CRC32", "FULL_OBJECT", ("CRC32", "FULL_OBJECT")),
    ("CRC32C", "FULL_OBJECT", ("CRC32C", "FULL_OBJECT")),
    (None, None, (None, None)),
])
def test_upload_checksum_defaults_as_aws(algorithm, kind, expected):
    assert checksums.upload_checksum(algorithm, kind) == expected


@pytest.mark.parametrize("algorithm, kind", [
    ("SHA256", "FULL_OBJECT"), ("SHA1", "FULL_OBJECT"), ("CRC64NVME", "COMPOSITE"), (None, "COMPOSITE"),
    ("CRC32", "PARTIAL"), ("MD4", None),
])
def test_upload_checksum_refuses_what_s3_does_not_support(algorithm, kind):
    with pytest.raises(InvalidRequest):
        checksums.upload_checksum(algorithm, kind)


@pytest.mark.parametrize("sent, stored", [
    ("aws-chunked, deflate, gzip", "deflate, gzip"),
    ("deflate, gzip", "deflate, gzip"),
    ("deflate,gzip", "deflate,gzip"),
    ("gzip, aws-chunked", "gzip"),
    ("aws-chunked", ""),
    ("AWS-Chunked,br", "br"),
])
def test_stored_content_encoding_drops_aws_chunked_only(sent, stored):
    assert without_aws_chunked(sent) == stored
