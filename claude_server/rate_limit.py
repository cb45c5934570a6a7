"""The per-key rate limit on turns started (``CLAUDE_SERVER_RATE_LIMIT_PER_MIN``), counted in
the database, so that every replica on it takes from the same buckets (``store/rates.py``):
``per_minute`` turns a minute per key, refilled evenly, in bursts of as many. Keyless
requests (a server without keys) share one bucket. No aiohttp here."""

from __future__ import annotations

import time
from collections.abc import Callable

from claude_server.store import Store


class RateLimiter:
    def __init__(self, per_minute: int, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute  # 0: no limit (changed by a reload)
        self.store = store
        self.clock = clock

    @property
    def on(self) -> bool:
        return self.per_minute > 0

    async def take(self, key: str, count: int = 1) -> float:
        """0 when ``count`` turns may start now (and counts them), else the seconds until they
        may (nothing counted)."""
        if not self.on:
            return 0.0
        return await self.store.take_rate(key, count, self.per_minute, self.clock())

    async def give_back(self, key: str, count: int = 1) -> None:
        """Uncount turns that were counted but did not start."""
        if self.on:
            await self.store.give_back_rate(key, count, self.per_minute)
