"""Rate limits with the `limits` library: a moving window in memory, or in Redis so processes share one budget."""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

from limits import RateLimitItemPerHour, RateLimitItemPerMinute, storage, strategies

from runix.errors import RateLimited


@dataclass(frozen=True)
class Quota:
    limit: int
    remaining: int
    reset: int  # epoch seconds when the window frees a slot

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self, redis_url: str | None = None):
        if redis_url:
            uri = redis_url if "://" in redis_url else f"redis://{redis_url}"
            self.storage = storage.storage_from_string(uri)
            self._lock = nullcontext()  # Redis runs each hit as one atomic script
        else:
            self.storage = storage.MemoryStorage()
            # One lock around hit and stats: threads (sync routes) and the event loop share the storage.
            self._lock = threading.Lock()
        self.strategy = strategies.MovingWindowRateLimiter(self.storage)

    def hit(self, namespace: str, key: str, amount: int, per: str, what: str) -> Quota:
        """Counts one hit; raises RateLimited (with Retry-After) when the window is full."""
        item = (RateLimitItemPerMinute if per == "minute" else RateLimitItemPerHour)(amount, namespace=namespace)
        with self._lock:
            allowed = self.strategy.hit(item, key)
            stats = self.strategy.get_window_stats(item, key)
        reset = math.ceil(stats.reset_time)
        quota = Quota(limit=amount, remaining=max(0, stats.remaining), reset=reset)
        if not allowed:
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"Too many {what}: the limit is {amount} per {per}. Retry in {retry_after} seconds.",
                retry_after=retry_after,
                headers=quota.headers(),
            )
        return quota

    def peek(self, namespace: str, key: str, amount: int, per: str) -> Quota:
        item = (RateLimitItemPerMinute if per == "minute" else RateLimitItemPerHour)(amount, namespace=namespace)
        with self._lock:
            stats = self.strategy.get_window_stats(item, key)
        return Quota(limit=amount, remaining=max(0, stats.remaining), reset=math.ceil(stats.reset_time))

    def reset(self) -> None:
        self.storage.reset()
