"""Failures of the backing services become domain errors here, inside the domain.

``translate_backend_errors`` wraps every public method of a domain class (and the iterators they
return, which fail while a response streams) so that a MongoDB or Redis failure leaves the domain
as ``ServiceUnavailable``: the front ends map domain errors only.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Iterator

import pymongo.errors
import redis

from pipeline.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_BACKENDS = ((pymongo.errors.PyMongoError, "metadata store"), (redis.RedisError, "queue/cache service"))


def as_domain_error(exc: BaseException) -> ServiceUnavailable | None:
    for kind, name in _BACKENDS:
        if isinstance(exc, kind):
            log.warning("%s error: %r", name, exc)  # the client learns only which service is down
            return ServiceUnavailable(f"{name} unavailable")
    return None


def _translated_iter(it: Iterator):
    try:
        yield from it
    except (pymongo.errors.PyMongoError, redis.RedisError) as exc:
        raise as_domain_error(exc) from exc


def translated(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except (pymongo.errors.PyMongoError, redis.RedisError) as exc:
            raise as_domain_error(exc) from exc
        if inspect.isgenerator(result):
            return _translated_iter(result)
        return result
    return wrapper


def translate_backend_errors(cls):
    """Class decorator: every public method raises ``ServiceUnavailable`` for a backend failure."""
    for name, value in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, translated(value))
    return cls
