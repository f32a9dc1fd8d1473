"""A request body as the store should see it: aws-chunked framing undone, every signature and
checksum verified.

``x-amz-content-sha256`` says what the body is: a hex SHA-256 of a plain body, UNSIGNED-PAYLOAD,
or aws-chunked (``hex-size;chunk-signature=sig\\r\\n data \\r\\n`` ... a zero-length chunk, then
for the -TRAILER variants trailer lines such as ``x-amz-checksum-crc32:BASE64``). HTTP chunked
transfer is a separate layer that gunicorn has already removed.

Iterating yields the decoded bytes as bytes or read-only memoryview slices of large reads (no
byte-by-byte copying). Chunk signatures are checked at the end of each chunk; everything else
(lengths, SHA-256, checksums, Content-MD5) when the body is exhausted. Any failure is raised
from the iterator before it finishes, so an upload that fails a check is never recorded.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Iterator

from app.s3 import checksums
from app.s3.errors import (BadDigest, IncompleteBody, InvalidArgument, InvalidDigest, InvalidRequest,
                           SignatureDoesNotMatch, XAmzContentSHA256Mismatch)
from app.s3.sigv4 import (EMPTY_SHA256, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER,
                          UNSIGNED_PAYLOAD, AuthContext)

CHUNKED_MODES = frozenset({STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER})
SIGNED_MODES = frozenset({STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER})
TRAILER_MODES = frozenset({STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER})
TRAILER_SIGNATURE = "x-amz-trailer-signature"
MAX_CHUNK_HEADER = 4096  # "hex-size;chunk-signature=<64 hex>" is under 100 bytes
MAX_TRAILER = 16 * 1024
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_CHUNK_SIZE = re.compile(r"[0-9a-fA-F]{1,15}")


def _length(headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not value.isdigit():
        raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}", ArgumentName=name)
    return int(value)


class _Framed:
    """Reads a stream in large blocks and hands out lines and memoryview slices of them."""

    def __init__(self, read):
        self._read = read
        self._buf = b""
        self._pos = 0

    def line(self, limit: int) -> bytes:
        """The bytes up to the next CRLF (consumed, not returned)."""
        end = self._buf.find(b"\r\n", self._pos)
        if end >= 0 and end - self._pos <= limit:
            line, self._pos = self._buf[self._pos:end], end + 2
            return line
        head = self._buf[self._pos:]
        while len(head) <= limit + 1:
            more = self._read()
            if not more:
                raise IncompleteBody("The aws-chunked body ended before the end of a chunk header.")
            # join only the small head with the start of the new block: the block itself is not copied
            probe = head[-1:] + more[:limit + 2]
            at = probe.find(b"\r\n")
            if at >= 0:
                cut = at + 2 - len(head[-1:])
                line = (head + more[:cut])[:-2]
                if len(line) > limit:
                    break
                self._buf, self._pos = more, cut
                return line
            if len(more) > limit + 2:
                break
            head += more
        raise InvalidRequest("Malformed aws-chunked body: a chunk header or line is too long.")

    def data(self, size: int) -> Iterator[memoryview]:
        while size:
            if self._pos >= len(self._buf):
                self._buf, self._pos = self._read(), 0
                if not self._buf:
                    raise IncompleteBody("The aws-chunked body ended inside a chunk.")
            take = min(size, len(self._buf) - self._pos)
            yield memoryview(self._buf)[self._pos:self._pos + take]
            self._pos += take
            size -= take

    def rest(self, limit: int) -> bytes:
        """Everything left until the end of the stream."""
        parts = [self._buf[self._pos:]]
        total = len(parts[0])
        self._buf, self._pos = b"", 0
        while True:
            more = self._read()
            if not more:
                return b"".join(parts)
            total += len(more)
            if total > limit:
                raise InvalidRequest("Malformed aws-chunked body: the trailer is too large.")
            parts.append(more)


class PayloadReader:
    """Iterable of the decoded body; after iteration: ``size``, ``trailers``, ``checksum``, ``md5_hex``."""

    def __init__(self, stream, headers, auth: AuthContext | None, max_read: int = 1 << 20):
        self._stream = stream
        self._auth = auth
        self.max_read = max_read
        mode = auth.payload_hash if auth is not None else (headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD)
        self.mode = mode.strip()
        self._expected_sha256 = self.mode.lower() if _HEX64.fullmatch(self.mode) else None
        if self.mode in SIGNED_MODES and (auth is None or not auth.seed_signature):
            raise InvalidRequest(f"{self.mode} needs a request signed with AWS4-HMAC-SHA256 in the "
                                 "Authorization header")
        self.content_length = _length(headers, "content-length")
        self.decoded_length = _length(headers, "x-amz-decoded-content-length") if self.mode in CHUNKED_MODES \
            else None
        self._checksum_request = checksums.requested(headers)
        if self._checksum_request is not None and self._checksum_request.in_trailer \
                and self.mode not in TRAILER_MODES:
            raise InvalidRequest("x-amz-trailer needs x-amz-content-sha256 STREAMING-UNSIGNED-PAYLOAD-TRAILER or "
                                 "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
        self._checksum = checksums.Checksum(self._checksum_request.algorithm) if self._checksum_request else None
        self._md5_expected = self._content_md5(headers.get("content-md5"))
        self._md5 = hashlib.md5(usedforsecurity=False) if self._md5_expected is not None else None
        self._received = 0
        self._iterated = False
        self.size = 0
        # the decoded body's announced length, when the request tells it (a hint: never trusted)
        self.length = self.decoded_length if self.mode in CHUNKED_MODES else self.content_length
        self.trailers: dict[str, str] = {}
        self.checksum: tuple[str, str] | None = None
        self.md5_hex: str | None = None

    @staticmethod
    def _content_md5(value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 16:
            raise InvalidDigest()
        return raw

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._iterated:
            raise RuntimeError("a request body can be read only once")
        self._iterated = True
        return self._chunked() if self.mode in CHUNKED_MODES else self._plain()

    # --- reading -----------------------------------------------------------------------------

    def _read(self) -> bytes:
        want = self.max_read
        if self.content_length is not None:
            want = min(want, self.content_length - self._received)
            if want <= 0:
                return b""
        data = self._stream.read(want)
        if not data:
            if self.content_length is not None and self._received < self.content_length:
                raise IncompleteBody(f"The body ended after {self._received} of the {self.content_length} bytes "
                                     "that Content-Length announced.")
            return b""
        if not isinstance(data, bytes):
            data = bytes(data)
        self._received += len(data)
        return data

    def _account(self, piece) -> None:
        self.size += len(piece)
        if self._checksum is not None:
            self._checksum.update(piece)
        if self._md5 is not None:
            self._md5.update(piece)

    def _plain(self) -> Iterator[bytes]:
        sha = hashlib.sha256() if self._expected_sha256 is not None else None
        while True:
            data = self._read()
            if not data:
                break
            self._account(data)
            if sha is not None:
                sha.update(data)
            yield data
        if sha is not None and sha.hexdigest() != self._expected_sha256:
            raise XAmzContentSHA256Mismatch(ClientComputedContentSHA256=self._expected_sha256,
                                            S3ComputedContentSHA256=sha.hexdigest())
        self._finish()

    def _chunked(self) -> Iterator[memoryview]:
        framed = _Framed(self._read)
        signed = self.mode in SIGNED_MODES
        previous = self._auth.seed_signature if signed else ""
        while True:
            size, signature = self._chunk_header(framed.line(MAX_CHUNK_HEADER), signed)
            if self.decoded_length is not None and self.size + size > self.decoded_length:
                raise IncompleteBody(f"The aws-chunked body holds more than the {self.decoded_length} bytes that "
                                     "x-amz-decoded-content-length announced.")
            sha = hashlib.sha256() if signed else None
            for piece in framed.data(size):
                self._account(piece)
                if sha is not None:
                    sha.update(piece)
                yield piece
            if signed:
                previous = self._verify_chunk(previous, signature, sha.hexdigest())
            if size == 0:
                break
            if framed.line(2) != b"":
                raise InvalidRequest("Malformed aws-chunked body: chunk data is not followed by CRLF.")
        self._read_trailer(framed.rest(MAX_TRAILER), previous)
        if self.decoded_length is not None and self.size != self.decoded_length:
            raise IncompleteBody(f"The aws-chunked body holds {self.size} bytes; x-amz-decoded-content-length "
                                 f"announced {self.decoded_length}.")
        self._finish()

    @staticmethod
    def _chunk_header(line: bytes, signed: bool) -> tuple[int, str | None]:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        size_text, _, extensions = text.partition(";")
        if not _CHUNK_SIZE.fullmatch(size_text.strip()):
            raise InvalidRequest("Malformed aws-chunked body: a chunk header does not start with a hex size.")
        signature = None
        for extension in extensions.split(";"):
            name, _, value = extension.partition("=")
            if name.strip() == "chunk-signature":
                signature = value.strip()
        if signed and not signature:
            raise SignatureDoesNotMatch("A chunk of the aws-chunked body carries no chunk-signature.")
        return int(size_text, 16), signature

    def _verify(self, kind: str, previous: str, hashes: list[str], signature: str, what: str) -> str:
        """Check one link of the signature chain; the signature, the next link's ``previous``."""
        auth = self._auth
        to_sign = "\n".join([kind, auth.amz_date, auth.scope, previous, *hashes])
        expected = hmac.new(auth.signing_key, to_sign.encode("ascii"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode("ascii", "replace")):
            raise SignatureDoesNotMatch(f"The {what} we calculated does not match the one you provided.")
        return expected

    def _verify_chunk(self, previous: str, signature: str, data_sha256: str) -> str:
        return self._verify("AWS4-HMAC-SHA256-PAYLOAD", previous, [EMPTY_SHA256, data_sha256], signature,
                            "chunk signature")

    def _read_trailer(self, tail: bytes, previous: str) -> None:
        lines: list[tuple[str, str]] = []
        signature = None
        for raw in tail.split(b"\n"):
            raw = raw.strip(b"\r \t")
            if not raw:
                continue
            try:
                name, sep, value = raw.decode("ascii").partition(":")
            except UnicodeDecodeError:
                sep = ""
            if not sep or not name.strip():
                raise InvalidRequest("Malformed aws-chunked body: a trailer line is not 'name:value'.")
            name, value = name.strip().lower(), value.strip()
            if name == TRAILER_SIGNATURE:
                signature = value
            else:
                lines.append((name, value))
        if (lines or signature) and self.mode not in TRAILER_MODES:
            raise InvalidRequest(f"Malformed aws-chunked body: {self.mode} carries no trailer.")
        if self.mode == STREAMING_PAYLOAD_TRAILER and (lines or signature):
            self._verify_trailer(previous, lines, signature)
        self.trailers = dict(lines)

    def _verify_trailer(self, previous: str, lines: list[tuple[str, str]], signature: str | None) -> None:
        if not signature:
            raise SignatureDoesNotMatch("The trailer carries no x-amz-trailer-signature.")
        canonical = "".join(f"{name}:{value}\n" for name, value in lines)
        self._verify("AWS4-HMAC-SHA256-TRAILER", previous, [hashlib.sha256(canonical.encode("ascii")).hexdigest()],
                     signature, "trailer signature")

    def _finish(self) -> None:
        request = self._checksum_request
        if request is not None:
            computed = self._checksum.digest()
            expected = request.expected
            if request.in_trailer:
                expected = self.trailers.get(request.trailer_name)
                if expected is None:
                    raise InvalidRequest(f"x-amz-trailer announced {request.trailer_name} but the trailer did not "
                                         "carry it.")
            if expected is not None:
                checksums.verify(request.algorithm, expected, computed)
            self.checksum = (request.algorithm, base64.b64encode(computed).decode("ascii"))
        if self._md5 is not None:
            if self._md5.digest() != self._md5_expected:
                raise BadDigest()
            self.md5_hex = self._md5.hexdigest()
