"""A circuit breaker for an optional dependency (the Redis result cache).

After a failure the dependency isn't asked again for `retry_s`: a dead Redis then costs one
timeout per incident and worker, not one per request. One log line when an incident starts
and one when it ends, however many requests it touched. Written here rather than taken from a
library: the well-kept breakers (pybreaker, aiobreaker) count failures towards a threshold
and hold state we don't need, and this is twenty lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from app.telemetry.metrics import CACHE_ERRORS

logger = logging.getLogger(__name__)


class Breaker:
    def __init__(self, what: str, retry_s: float):
        self.what, self.retry_s = what, retry_s
        self.closed_at = 0.0  # monotonic time from which calls are allowed again
        self.failures = 0  # in the current incident; 0 = healthy
        self.failed_at = 0.0
        # Request threads and the cache writer fail at once when Redis dies: without a lock two
        # of them could each see a healthy breaker and log the same incident twice.
        self._lock = threading.Lock()

    def call(self, fn: Callable, *args):
        """fn(*args), or None when the breaker is open or the call failed."""
        started = time.monotonic()
        if started < self.closed_at:
            return None
        try:
            result = fn(*args)
        except redis.RedisError as exc:  # ConnectionError, TimeoutError, and errors Redis answers with
            CACHE_ERRORS.labels(_kind(exc)).inc()
            with self._lock:
                if not self.failures:
                    logger.warning(
                        "%s failed (%s): answering without it, retrying every %gs", self.what, exc, self.retry_s
                    )
                self.failures += 1
                self.failed_at = time.monotonic()
                self.closed_at = self.failed_at + self.retry_s
            return None
        with self._lock:
            if self.failures and started > self.failed_at:  # not a call that was already under way
                logger.warning("%s is back after %d failed call(s)", self.what, self.failures)
                self.failures = 0
        return result


def _kind(exc: redis.RedisError) -> str:
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    return "connection" if isinstance(exc, redis.ConnectionError) else "redis"
