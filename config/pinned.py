"""The start-up check of a library whose internals this project replaces.

``config/slowclients.py`` (gunicorn) and ``workers/transport.py`` (kombu) rely on private
internals of the version range pinned in pyproject.toml; each lists what differs in the installed
one and refuses to start with one message, built here, that names the library, its version, the
tested range and every difference.
"""
from __future__ import annotations


def refuse_untested(problems: list[str], error: type[Exception], library: str, version: str, tested: str,
                    patcher: str) -> None:
    """Raise ``error`` naming every one of ``problems`` (what ``patcher``, e.g. "config/slowclients.py
    replaces", relies on and is not there); nothing when ``problems`` is empty."""
    if problems:
        raise error(f"minis3 cannot start: {library} {version} is not the tested {tested}, and what "
                    f"{patcher} differs: " + "; ".join(problems) + f". Install {tested} (pip install '{tested}').")
