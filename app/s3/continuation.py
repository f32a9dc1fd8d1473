"""``Expect: 100-continue`` answered by the S3 application, not by gunicorn.

A client that sends ``Expect: 100-continue`` (boto3 and aws-cli do on every PUT with a body)
waits for ``100 Continue`` before it sends the body. Interim answer only on the first read of
the body: a request refused before that (bad signature, unknown or foreign bucket, rate limited)
gets its final status at once, and the body is never sent. The connection then cannot carry
another request (its unread body would be read as one), so it is closed after the answer, as
RFC 9110 section 10.1.1 and RFC 9112 section 9.6 allow; gunicorn's close lingers to drain what
a client that did not wait may already have sent.

Active only under gunicorn with config.slowclients.defer_continue installed (the S3 front end's
gunicorn settings do); elsewhere the environ lacks its hooks and gunicorn's behaviour stands.
"""
from __future__ import annotations

from config.slowclients import CLOSE_CONNECTION, SEND_CONTINUE


def has_body(environ) -> bool:
    if "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
        return True
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    return bool(length) and length != "0"


class ContinueOnRead:
    """``wsgi.input`` that writes ``100 Continue`` before its first read; after the final answer has
    begun without one, reads find no body (the client was told not to send it)."""

    def __init__(self, stream, send_continue):
        self._stream = stream
        self._send_continue = send_continue
        self.continued = False
        self.answered = False

    @property
    def pending(self) -> bool:
        """The client may still be waiting for ``100 Continue`` and hold the body back."""
        return not self.continued

    def _before_read(self) -> bool:
        if not self.continued:
            if self.answered:
                return False
            self.continued = True
            self._send_continue()
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size) if self._before_read() else b""

    def readline(self, size: int = -1) -> bytes:
        return self._stream.readline(size) if self._before_read() else b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._stream.readlines(hint) if self._before_read() else []

    def __iter__(self):
        return iter(self.readline, b"")


def pending_continue(environ) -> bool:
    """Whether this request's body is still held back by a client waiting for ``100 Continue``
    (then refusing it must not read it: the answer goes out and the connection closes)."""
    stream = environ.get("minis3.continuation")
    return stream is not None and stream.pending


class DeferredContinue:
    """WSGI middleware: the request body behind ``ContinueOnRead``; an answer that begins before
    a body the client held back was asked for closes the connection after it."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        send = environ.get(SEND_CONTINUE)
        close = environ.get(CLOSE_CONNECTION)
        if send is None or close is None or not has_body(environ):
            return self.app(environ, start_response)
        stream = ContinueOnRead(environ["wsgi.input"], send)
        environ["wsgi.input"] = stream
        environ["minis3.continuation"] = stream

        def answer(status, headers, exc_info=None):
            if not stream.answered and stream.pending:
                close()  # the body was never asked for: this connection can carry no next request
            stream.answered = True
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.app(environ, answer)
