"""Streaming multipart parsing: the ``file`` part's bytes as an iterator, nothing buffered.

Werkzeug's form parser would spill the file into a temporary file, and its sans-IO decoder
copies every byte several times through its buffer. This parser reads the body in 1 MiB
socket reads, finds the boundary with ``bytes.find`` (C speed) and hands the file's bytes on
as zero-copy slices of what the socket returned. Part headers are parsed with Werkzeug's
helpers; everything but the ``file`` part is read, bounded, and dropped.
"""
from __future__ import annotations

import re
from typing import Iterator

from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import parse_options_header

from pipeline.errors import MalformedUpload

READ_SIZE = 1 << 20  # large socket reads: few recv() calls and little re-buffering in the server
MAX_HEADER_BYTES = 16 * 1024  # one part's header block
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_OTHER_PART_BYTES = 64 * 1024  # any part but the file: form fields are small
MAX_PARTS = 64
DRAIN_LIMIT = 16 << 20  # a refused body up to this size is read to its end before the answer
FILE_FIELD = "file"
_QUOTED_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def part_filename(headers: Headers) -> str | None:
    """The filename as browsers and HTTP libraries send it (HTML5: a quote is sent as %22, a
    backslash as itself). Werkzeug reads a backslash as an escape and turns ``C:\\dir\\a.txt``
    into ``C:dira.txt``; the raw value keeps the separators, so the display name is ``a.txt``."""
    header = headers.get("Content-Disposition", "")
    _, options = parse_options_header(header)
    raw = _QUOTED_FILENAME.search(header)
    if raw is None or "\\" not in raw.group(1) or "filename*" in header.lower():
        return options.get("filename")
    return re.sub(r'\\(["\\])', r"\1", raw.group(1))


class ClientGone(MalformedUpload):
    """The client closed the connection before the upload was complete."""
    code = "client_disconnected"


def boundary_of(content_type: str | None) -> bytes:
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise MalformedUpload("expected a multipart/form-data body with a 'file' field")
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise MalformedUpload("multipart body without a valid boundary")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise MalformedUpload("multipart boundary must be ASCII") from None


def discard_rest(stream, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop what is left of a refused body (up to ``limit``), so that the client, still
    sending, receives the error answer instead of a connection reset."""
    left = limit
    try:
        while left > 0:
            data = stream.read(min(READ_SIZE, left))
            if not data:
                return
            left -= len(data)
    except (ClientDisconnected, OSError):
        return


class FilePart:
    """Iterate to receive the ``file`` part's bytes; ``filename``/``content_type`` are known first.

    Iteration ends only after the closing boundary was seen, so a truncated body always raises.
    """

    def __init__(self, stream, content_type: str | None, fields: list | None = None):
        """``fields``: when given, receives (name, bytes) of each form field before the file."""
        self.stream = stream
        self.fields = fields
        boundary = boundary_of(content_type)
        self._dash = b"--" + boundary
        self._delim = b"\r\n--" + boundary
        self._buf = b""
        self._eof = False
        self._parts = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self._start()

    # --- input -------------------------------------------------------------------------

    def _read(self) -> bytes:
        try:
            return self.stream.read(READ_SIZE)
        except ClientDisconnected:
            raise ClientGone() from None
        except OSError:
            raise ClientGone() from None

    def _fill(self, what: str) -> None:
        """Append the next read to the buffer; a body that ends here is truncated."""
        data = self._read() if not self._eof else b""
        if not data:
            self._eof = True
            raise MalformedUpload(f"multipart body ended before its closing boundary ({what})")
        self._buf = self._buf + data if self._buf else data

    # --- structure -----------------------------------------------------------------------

    def _start(self) -> None:
        while True:  # preamble: the first boundary starts the body or follows a line break
            if self._buf.startswith(self._dash):
                self._buf = self._buf[len(self._dash):]
                break
            i = self._buf.find(b"\r\n" + self._dash)
            if i >= 0:
                self._buf = self._buf[i + 2 + len(self._dash):]
                break
            if len(self._buf) > MAX_PREAMBLE_BYTES:
                raise MalformedUpload("multipart body does not use the boundary its Content-Type names")
            self._fill("no first boundary")
        while self._next_part():
            disposition, options = parse_options_header(self._headers.get("Content-Disposition", ""))
            if disposition == "form-data" and options.get("name") == FILE_FIELD and "filename" in options:
                self.filename = part_filename(self._headers)
                self.content_type = self._headers.get("Content-Type")
                return
            if self.fields is not None:
                self.fields.append((options.get("name", ""), self._field_value()))
            else:
                self._skip_body()
        raise MalformedUpload("multipart body has no 'file' field")

    def _next_part(self) -> bool:
        """After a boundary: False at the closing ``--``, else parse the next part's headers."""
        while len(self._buf) < 2:
            self._fill("after a boundary")
        if self._buf.startswith(b"--"):
            return False
        while True:  # optional transport padding, then CRLF, then headers up to a blank line
            line_end = self._buf.find(b"\r\n")
            if line_end >= 0:
                break
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MalformedUpload("malformed multipart body: no line break after a boundary")
            self._fill("after a boundary")
        if self._buf[:line_end].strip(b" \t"):
            raise MalformedUpload("malformed multipart body: text after a boundary")
        self._buf = self._buf[line_end + 2:]
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MalformedUpload(f"multipart body has more than {MAX_PARTS} parts")
        while True:
            if self._buf.startswith(b"\r\n"):
                block, self._buf = b"", self._buf[2:]
                break
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                block, self._buf = self._buf[:end], self._buf[end + 4:]
                break
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MalformedUpload("multipart part headers are too long")
            self._fill("in part headers")
        self._headers = _parse_headers(block)
        if "Content-Disposition" not in self._headers:
            raise MalformedUpload("malformed multipart body: a part has no Content-Disposition")
        return True

    def _body(self) -> Iterator[memoryview]:
        """The current part's bytes up to the next delimiter, as slices of the reads."""
        keep = len(self._delim) - 1
        while len(self._buf) < len(self._dash) and self._dash.startswith(self._buf):
            self._fill("in a part")
        if self._buf.startswith(self._dash):
            # an empty part whose encoder let the header block's blank line stand for the CRLF
            # that belongs to the delimiter (Werkzeug's test client does)
            self._buf = self._buf[len(self._dash):]
            return
        while True:
            i = self._buf.find(self._delim)
            if i >= 0:
                if i:
                    yield memoryview(self._buf)[:i]
                self._buf = self._buf[i + len(self._delim):]
                return
            if len(self._buf) > keep:
                yield memoryview(self._buf)[:-keep]
                self._buf = self._buf[-keep:]
            self._fill("in a part")

    def _skip_body(self) -> None:
        size = 0
        for piece in self._body():
            size += len(piece)
            if size > MAX_OTHER_PART_BYTES:
                raise MalformedUpload(f"multipart parts other than 'file' are limited to {MAX_OTHER_PART_BYTES} bytes")

    def _field_value(self) -> bytes:
        value = bytearray()
        for piece in self._body():
            value += piece
            if len(value) > MAX_OTHER_PART_BYTES:
                raise MalformedUpload(f"multipart parts other than 'file' are limited to {MAX_OTHER_PART_BYTES} bytes")
        return bytes(value)

    def __iter__(self) -> Iterator[memoryview]:
        yield from self._body()
        # the rest of the form must be complete and well-formed before the upload counts
        while self._next_part():
            self._skip_body()


def _parse_headers(block: bytes) -> Headers:
    headers = Headers()
    if not block:
        return headers
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MalformedUpload("malformed multipart part header")
        headers.add(name.strip(), value.strip())
    return headers
