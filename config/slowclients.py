"""Slow and idle clients must not hold gunicorn's request threads.

gthread gives each new connection to a thread that waits (5 s by default) for its first bytes,
and a thread that has started on a request's headers blocks until they are complete: a few dozen
idle or slowloris connections could hold every thread. Installed in the gunicorn master (its
workers inherit it), three limits fix that:

- a new connection that sends nothing for ``IDLE_WAIT_S`` goes back to the poller, holding no thread;
- a request's headers must arrive within ``MINIS3_HEADER_TIMEOUT_S`` in total (like Apache's
  mod_reqtimeout), or the connection is closed;
- a body read waits at most ``MINIS3_READ_TIMEOUT_S`` for the next bytes; an upload that keeps
  trickling, however slowly, is never cut off.

For exposure to the internet, a reverse proxy in front (nginx) remains the first line against
slow clients.
"""
from __future__ import annotations

import socket
import time

import gunicorn.workers.gthread as gthread
from gunicorn.http import message, unreader
from gunicorn.http.errors import NoMoreData

IDLE_WAIT_S = 0.5


def install(header_timeout_s: float, read_timeout_s: float) -> None:
    gthread.DEFAULT_WORKER_DATA_TIMEOUT = IDLE_WAIT_S
    recv_chunk = unreader.SocketUnreader.chunk
    parse_request = message.Request.__init__

    def chunk(self, size_hint=None):
        deadline = getattr(self, "minis3_header_deadline", None)
        wait = read_timeout_s if deadline is None else max(deadline - time.monotonic(), 0.001)
        previous = self.sock.gettimeout()  # gunicorn bounds its own body drain with one
        self.sock.settimeout(wait if previous is None else min(wait, previous))
        try:
            return recv_chunk(self, size_hint)
        except socket.timeout:
            raise NoMoreData(b"") from None  # gunicorn closes the connection quietly
        finally:
            self.sock.settimeout(previous)

    def request_init(self, cfg, source, peer_addr, req_number=1):
        source.minis3_header_deadline = time.monotonic() + header_timeout_s
        try:
            parse_request(self, cfg, source, peer_addr, req_number)
        finally:
            source.minis3_header_deadline = None

    unreader.SocketUnreader.chunk = chunk
    message.Request.__init__ = request_init
