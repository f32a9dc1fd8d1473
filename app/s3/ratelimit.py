"""Request rate limits of the S3 front end, counted in Redis (shared by every worker and host).

Two budgets, so that nobody can spend another's: a request whose signature verified counts
against its access key (``MINIS3_S3_RATE_LIMIT``); a request that is not signed, or fails
authentication, counts against the client's address (``MINIS3_S3_FAILED_RATE_LIMIT``, lower). An
access key id is no secret (every presigned URL shows it), so an unverified request never counts
against it. An address over its failed budget is answered SlowDown, and its lookups of access
keys no cache knows are refused before they reach MongoDB.

Over a limit the answer is 503 SlowDown with Retry-After, which S3 clients retry with back-off.
Redis unreachable: requests are not limited rather than refused.

A verified key's budget is large (thousands a second): counting each request in Redis cost a
round trip per request. A process takes a hundredth of such a budget at a time (one INCRBY of
``amount // RESERVE_PARTS``) and spends it locally for at most one window. The count is then
exact to that share: a key is refused up to ``amount // RESERVE_PARTS - 1`` requests early per
process, and as many of a share taken just before its window ends may be spent in the next one. Budgets under ``2 * RESERVE_PARTS`` are counted one request at a time, as before."""
from __future__ import annotations

import logging
import math
import threading
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from app.s3.errors import SlowDown
from config.settings import SettingsError

log = logging.getLogger(__name__)

KEY_PREFIX = "minis3:s3rate"
RESERVE_PARTS = 100


def _items(setting: str, spec: str):
    try:
        return parse_many(spec) if spec else []
    except ValueError:
        raise SettingsError(f"{setting}: cannot read {spec!r} (try '2000 per second', or '' to disable)") from None


class S3RateLimit:
    def __init__(self, spec: str, redis_url: str | None, failed_spec: str = ""):
        self.items = _items("MINIS3_S3_RATE_LIMIT", spec)
        self.failed_items = _items("MINIS3_S3_FAILED_RATE_LIMIT", failed_spec)
        options = {"socket_connect_timeout": 2, "socket_timeout": 2} if redis_url else {}
        self.storage = storage_from_string(redis_url or "memory://", key_prefix=KEY_PREFIX, **options) \
            if self.items or self.failed_items else None
        self.limiter = FixedWindowRateLimiter(self.storage) if self.storage is not None else None
        self._reserved: dict[tuple, list] = {}  # (item, who) -> [requests left, monotonic deadline]
        self._lock = threading.Lock()

    def check(self, access_key: str) -> None:
        """Count one verified request of ``access_key``; SlowDown (with Retry-After) when over a limit."""
        self._hit(self.items, f"key:{access_key}", reserve=True)

    def count_failure(self, address: str) -> None:
        """Count one unsigned or failed request from ``address``; SlowDown when over the failed budget."""
        self._hit(self.failed_items, f"failed:{address}")

    def require_failure_budget(self, address: str) -> None:
        """SlowDown, counting nothing, when ``address`` has spent its failed budget."""
        if self.limiter is None:
            return
        for item in self.failed_items:
            try:
                allowed = self.limiter.test(item, f"failed:{address}")
            except Exception as exc:  # storage down: do not refuse work because counting failed
                log.warning("S3 rate limit not read (%r)", exc)
                return
            if not allowed:
                raise self._slow_down(item, f"failed:{address}")

    def _hit(self, items, who: str, reserve: bool = False) -> None:
        if self.limiter is None:
            return
        for item in items:
            share = item.amount // RESERVE_PARTS if reserve else 1
            if share > 1 and self._spend_reserved(item, who):
                continue
            try:
                allowed = self.limiter.hit(item, who, cost=share) if share > 1 else self.limiter.hit(item, who)
            except Exception as exc:  # storage down: do not refuse work because counting failed
                log.warning("S3 rate limit not counted (%r)", exc)
                return
            if not allowed:
                raise self._slow_down(item, who)
            if share > 1:
                with self._lock:
                    if len(self._reserved) > 4096:
                        self._reserved.clear()
                    self._reserved[(item, who)] = [share - 1, time.monotonic() + item.get_expiry()]

    def _spend_reserved(self, item, who: str) -> bool:
        """One request from this process's share of ``who``'s budget; False when none is left."""
        with self._lock:
            left = self._reserved.get((item, who))
            if left is None or left[0] <= 0 or time.monotonic() >= left[1]:
                return False
            left[0] -= 1
            return True

    def _slow_down(self, item, who: str) -> SlowDown:
        err = SlowDown()
        try:
            reset = self.limiter.get_window_stats(item, who).reset_time
            err.retry_after = max(1, math.ceil(reset - time.time()))
        except Exception:  # storage gone since the hit
            err.retry_after = 1
        return err
