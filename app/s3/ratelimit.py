"""Request rate limits of the S3 front end, per access key, counted in Redis (shared by every
worker and host). Over the limit the answer is 503 SlowDown, which S3 clients retry with
back-off. Redis unreachable: requests are not limited rather than refused."""
from __future__ import annotations

import logging
import math
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.s3.errors import SlowDown
from config.settings import SettingsError

log = logging.getLogger(__name__)

KEY_PREFIX = "minis3:s3rate"


class S3RateLimit:
    def __init__(self, spec: str, redis_url: str | None):
        try:
            self.items = parse_many(spec) if spec else []
        except ValueError:
            raise SettingsError(f"MINIS3_S3_RATE_LIMIT: cannot read {spec!r} (try '2000 per second', or '' to "
                                "disable)") from None
        options = {"socket_connect_timeout": 2, "socket_timeout": 2} if redis_url else {}
        self.storage = storage_from_string(redis_url or "memory://", key_prefix=KEY_PREFIX, **options) \
            if self.items else None
        self.limiter = FixedWindowRateLimiter(self.storage) if self.items else None

    def check(self, who: str) -> None:
        """Count one request of ``who``; SlowDown (with Retry-After) when over a limit."""
        if self.limiter is None:
            return
        for item in self.items:
            try:
                allowed = self.limiter.hit(item, who)
            except Exception as exc:  # storage down: do not refuse work because counting failed
                log.warning("S3 rate limit not counted (%r)", exc)
                return
            if not allowed:
                err = SlowDown()
                try:
                    reset = self.limiter.get_window_stats(item, who).reset_time
                    err.retry_after = max(1, math.ceil(reset - time.time()))
                except Exception:  # storage gone since the hit
                    err.retry_after = 1
                raise err
