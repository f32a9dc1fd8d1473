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

gunicorn has no setting for any of the three (its ``timeout`` is the worker heartbeat, its
``keepalive`` applies only between requests), so this replaces three of its internals:
``SocketUnreader.chunk``, ``Request.__init__`` and the gthread module constant
``DEFAULT_WORKER_DATA_TIMEOUT``. They are the ones of the gunicorn range pinned in pyproject.toml
(``TESTED``); ``install`` first checks that each is there and has the expected shape, and refuses
to start with one message naming what differs, rather than failing every request.

For exposure to the internet, a reverse proxy in front (nginx) remains the first line against
slow clients.
"""
from __future__ import annotations

import inspect
import socket
import time
from types import ModuleType

from config.pinned import refuse_untested

IDLE_WAIT_S = 0.5
TESTED = "gunicorn>=27,<28"

# what install() relies on: (dotted name for messages, parameter names)
CHUNK = ("gunicorn.http.unreader.SocketUnreader.chunk", ("self", "size_hint"))
UNREADER_INIT = ("gunicorn.http.unreader.SocketUnreader.__init__", ("self", "sock", "max_chunk"))
REQUEST_INIT = ("gunicorn.http.message.Request.__init__", ("self", "cfg", "unreader", "peer_addr", "req_number"))
DATA_TIMEOUT = "gunicorn.workers.gthread.DEFAULT_WORKER_DATA_TIMEOUT"
NO_MORE_DATA = "gunicorn.http.errors.NoMoreData"


class UnsupportedGunicorn(RuntimeError):
    """The installed gunicorn lacks, or has changed, an internal that ``install`` replaces."""


def _refuse(problems: list[str], version: str) -> None:
    refuse_untested(problems, UnsupportedGunicorn, "gunicorn", version, TESTED, "config/slowclients.py replaces")


def _params(func) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _check_method(problems: list[str], owner, attr: str, expected: tuple[str, tuple[str, ...]]) -> None:
    name, params = expected
    func = getattr(owner, attr, None) if owner is not None else None
    if not callable(func):
        problems.append(f"{name} is missing")
        return
    found = _params(func)
    if found != params:
        problems.append(f"{name} takes ({', '.join(found or ('?',))}), expected ({', '.join(params)})")


def incompatibilities(gthread: ModuleType, unreader: ModuleType, message: ModuleType,
                      errors: ModuleType) -> list[str]:
    """What differs, in these gunicorn modules, from what ``install`` replaces; empty when all fits."""
    problems: list[str] = []
    constant = getattr(gthread, "DEFAULT_WORKER_DATA_TIMEOUT", None)
    if constant is None:
        problems.append(f"{DATA_TIMEOUT} is missing")
    elif isinstance(constant, bool) or not isinstance(constant, (int, float)):
        problems.append(f"{DATA_TIMEOUT} is a {type(constant).__name__}, expected a number of seconds")
    socket_unreader = getattr(unreader, "SocketUnreader", None)
    _check_method(problems, socket_unreader, "chunk", CHUNK)
    _check_method(problems, socket_unreader, "__init__", UNREADER_INIT)
    _check_method(problems, getattr(message, "Request", None), "__init__", REQUEST_INIT)
    no_more_data = getattr(errors, "NoMoreData", None)
    if not (isinstance(no_more_data, type) and issubclass(no_more_data, Exception)):
        problems.append(f"{NO_MORE_DATA} is missing")
    return problems


def check(gthread: ModuleType, unreader: ModuleType, message: ModuleType, errors: ModuleType,
          version: str) -> None:
    """Raise ``UnsupportedGunicorn`` with one message listing every difference."""
    _refuse(incompatibilities(gthread, unreader, message, errors), version)


def install(header_timeout_s: float, read_timeout_s: float) -> None:
    """Check the installed gunicorn, then put the three limits in place (once per process)."""
    import gunicorn
    import gunicorn.workers.gthread as gthread
    from gunicorn.http import errors, message, unreader

    if getattr(unreader.SocketUnreader.chunk, "minis3_slowclients", False):
        return
    check(gthread, unreader, message, errors, gunicorn.__version__)
    NoMoreData = errors.NoMoreData
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

    chunk.minis3_slowclients = True
    unreader.SocketUnreader.chunk = chunk
    message.Request.__init__ = request_init


# --- Expect: 100-continue decided by the application ----------------------------------------------
#
# gunicorn writes "100 Continue" as soon as it has parsed the headers, before the application has
# seen the request: a client that waits for it then sends a body the application may refuse
# unread (bad signature, unknown bucket, rate limited). ``defer_continue`` replaces
# ``gunicorn.http.wsgi.create`` (looked up by the workers at call time) so that gunicorn no longer
# sends it; the environ instead carries ``minis3.send_continue`` (writes the interim answer) and
# ``minis3.close_connection`` (ends the connection after the answer, for a body left unsent),
# which app.s3.continuation uses. Without them (another server) gunicorn's own behaviour stands.

CREATE = ("gunicorn.http.wsgi.create", ("req", "sock", "client", "server", "cfg", "response_class",
                                        "response_args"))
EXPECTED_CONTINUE = "gunicorn.http.message.Request._expected_100_continue"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SEND_CONTINUE = "minis3.send_continue"
CLOSE_CONNECTION = "minis3.close_connection"


def continue_incompatibilities(wsgi: ModuleType, message: ModuleType) -> list[str]:
    """What differs, in these gunicorn modules, from what ``defer_continue`` replaces."""
    problems: list[str] = []
    create = getattr(wsgi, "create", None)
    if not callable(create):
        problems.append(f"{CREATE[0]} is missing")
    elif _params(create) != CREATE[1]:
        problems.append(f"{CREATE[0]} takes ({', '.join(_params(create) or ('?',))}), expected "
                        f"({', '.join(CREATE[1])})")
    request = getattr(message, "Request", None)
    if getattr(request, "_expected_100_continue", None) is not False:
        problems.append(f"{EXPECTED_CONTINUE} is missing")
    response = getattr(wsgi, "Response", None)
    if not callable(getattr(response, "force_close", None)):
        problems.append("gunicorn.http.wsgi.Response.force_close is missing")
    return problems


def defer_continue() -> None:
    """Check the installed gunicorn, then leave the ``100 Continue`` to the application (once per
    process)."""
    import gunicorn
    from gunicorn.http import message, wsgi

    if getattr(getattr(wsgi, "create", None), "minis3_defer_continue", False):
        return
    _refuse(continue_incompatibilities(wsgi, message), gunicorn.__version__)
    create = wsgi.create

    def create_deferring(req, sock, client, server, cfg, response_class=None, response_args=()):
        expected = req._expected_100_continue
        req._expected_100_continue = False  # gunicorn's create would write it now
        try:
            resp, environ = create(req, sock, client, server, cfg, response_class, response_args)
        finally:
            req._expected_100_continue = expected
        if expected:
            environ[SEND_CONTINUE] = lambda: sock.sendall(CONTINUE)
            environ[CLOSE_CONNECTION] = resp.force_close
        return resp, environ

    create_deferring.minis3_defer_continue = True
    wsgi.create = create_deferring


# --- Expect values other than 100-continue ignored, as S3 does ------------------------------------
#
# gunicorn answers 417 Expectation Failed, before the application, to any Expect header but
# ``100-continue`` (RFC 9110 allows either); S3 ignores an expectation it does not know, and
# clients that set one (``Expect: 200``, an empty one) expect the request to be served.
# ``ignore_unknown_expectations`` wraps ``Request._apply_header_policy`` (the header check both of
# gunicorn's parsers call) so that such a header is kept as any other and nothing else changes.

HEADER_POLICY = ("gunicorn.http.message.Request._apply_header_policy",
                 ("self", "name", "value", "scheme_state", "seen", "secure_scheme_headers", "forwarder_headers",
                  "from_trailer"))
EXPECT_POLICY = "gunicorn.http.message.Request._policy_expect_continue"


def expectation_incompatibilities(message: ModuleType) -> list[str]:
    """What differs, in this gunicorn module, from what ``ignore_unknown_expectations`` wraps."""
    problems: list[str] = []
    request = getattr(message, "Request", None)
    _check_method(problems, request, "_apply_header_policy", HEADER_POLICY)
    if getattr(request, "_policy_expect_continue", None) is not True:
        problems.append(f"{EXPECT_POLICY} is missing")
    return problems


def ignore_unknown_expectations() -> None:
    """Check the installed gunicorn, then let an Expect header other than 100-continue through to
    the application instead of answering 417 (once per process)."""
    import gunicorn
    from gunicorn.http import message

    if getattr(message.Request._apply_header_policy, "minis3_ignore_expectations", False):
        return
    _refuse(expectation_incompatibilities(message), gunicorn.__version__)
    policy = message.Request._apply_header_policy

    def apply_header_policy(self, name, value, scheme_state, seen, secure_scheme_headers, forwarder_headers,
                            from_trailer=False):
        if name != "EXPECT" or value.lower() == "100-continue":
            return policy(self, name, value, scheme_state, seen, secure_scheme_headers, forwarder_headers,
                          from_trailer)
        self._policy_expect_continue = False  # for this header only: the rest of the policy still applies
        try:
            return policy(self, name, value, scheme_state, seen, secure_scheme_headers, forwarder_headers,
                          from_trailer)
        finally:
            del self._policy_expect_continue

    apply_header_policy.minis3_ignore_expectations = True
    message.Request._apply_header_policy = apply_header_policy
