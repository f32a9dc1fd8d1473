"""Streaming multipart parsing: the ``file`` part's bytes as an iterator, nothing buffered.

Werkzeug's form parser would spill the file into a temporary file; its sans-IO decoder lets
us feed the socket's bytes in 64 KiB reads and hand the data straight to the spool writer.
"""
from __future__ import annotations

import re
from typing import Iterator

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from pipeline.errors import MalformedUpload

READ_SIZE = 1 << 20  # large socket reads: few recv() calls and little re-buffering in the server
FEED_SIZE = 64 * 1024  # the decoder is fastest fed in slices of this size
MAX_BUFFER_BYTES = 1 << 20  # bounds the decoder buffer: headers and boundaries, never the file
FILE_FIELD = "file"
_QUOTED_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def part_filename(event: File) -> str | None:
    """The filename as browsers and HTTP libraries send it (HTML5: a quote is sent as %22, a
    backslash as itself). Werkzeug reads a backslash as an escape and turns ``C:\\dir\\a.txt``
    into ``C:dira.txt``; the raw value keeps the separators, so the display name is ``a.txt``."""
    header = event.headers.get("Content-Disposition", "")
    raw = _QUOTED_FILENAME.search(header)
    if raw is None or "\\" not in raw.group(1) or "filename*" in header.lower():
        return event.filename
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


class FilePart:
    """Iterate to receive the ``file`` part's bytes; ``filename``/``content_type`` are known first."""

    def __init__(self, stream, content_type: str | None):
        self.stream = stream
        self.decoder = MultipartDecoder(boundary_of(content_type), max_form_memory_size=MAX_BUFFER_BYTES,
                                        max_parts=64)
        self.filename: str | None = None
        self.content_type: str | None = None
        self._pending: list[memoryview] = []  # slices of the last read not yet fed, last first
        self._eof = False
        self._events = self._iter_events()
        self._find_file_part()

    def _read(self) -> bytes:
        try:
            return self.stream.read(READ_SIZE)
        except ClientDisconnected:
            raise ClientGone() from None
        except OSError:
            raise ClientGone() from None

    def _feed(self, data: memoryview) -> None:
        try:
            self.decoder.receive_data(data)
        except RequestEntityTooLarge:  # 1 MiB without a boundary: not the boundary the header named
            raise MalformedUpload("multipart body does not use the boundary its Content-Type names "
                                  "(or a part header exceeds 1 MiB)") from None

    def _iter_events(self):
        decoder = self.decoder
        while True:
            try:
                event = decoder.next_event()
            except ValueError as exc:
                if self._eof:
                    raise MalformedUpload("multipart body ended before its closing boundary") from None
                raise MalformedUpload(f"malformed multipart body: {exc}") from None
            if isinstance(event, NeedData):
                if self._eof:
                    raise MalformedUpload("multipart body ended before its closing boundary")
                if not self._pending:
                    data = self._read()
                    if not data:
                        self._eof = True
                        decoder.receive_data(None)
                        continue
                    view = memoryview(data)
                    self._pending = [view[i:i + FEED_SIZE] for i in range(0, len(view), FEED_SIZE)]
                    self._pending.reverse()
                self._feed(self._pending.pop())
                continue
            yield event
            if isinstance(event, Epilogue):
                return

    def _find_file_part(self) -> None:
        for event in self._events:
            if isinstance(event, File) and event.name == FILE_FIELD:
                self.filename = part_filename(event)
                self.content_type = event.headers.get("Content-Type")
                return
            if isinstance(event, Epilogue):
                break
            if isinstance(event, (Field, Data, File)):
                continue
        raise MalformedUpload("multipart body has no 'file' field")

    def __iter__(self) -> Iterator[bytes]:
        for event in self._events:
            if isinstance(event, Data):
                if event.data:
                    yield event.data
                if not event.more_data:
                    break
            elif isinstance(event, Epilogue):
                raise MalformedUpload("multipart 'file' part ended early")
        # drain the rest of the body so the form is known to be complete and well-formed
        for _ in self._events:
            pass
