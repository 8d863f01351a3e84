"""Client-side rate limits: token buckets for requests/min and tokens/min (asyncio)."""
from __future__ import annotations

import asyncio
import time
from typing import Optional


class TokenBucket:
    """A bucket of `per_minute` units refilled continuously; `acquire(n)` waits until n are there.

    A request larger than the bucket is let through once the bucket is full, so that a single
    large prompt cannot deadlock the job.
    """

    def __init__(self, per_minute: Optional[float]):
        self.capacity = float(per_minute) if per_minute else 0.0
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.capacity:
            return
        async with self._lock:  # first come, first served
            amount = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) * 60.0 / self.capacity)


class RateLimiter:
    """Requests/min and (estimated) tokens/min limits, as hosted APIs enforce them."""

    def __init__(self, requests_per_minute: Optional[float] = None, tokens_per_minute: Optional[float] = None):
        self.requests = TokenBucket(requests_per_minute)
        self.tokens = TokenBucket(tokens_per_minute)

    async def acquire(self, estimated_tokens: int) -> None:
        await self.requests.acquire(1)
        await self.tokens.acquire(estimated_tokens)
