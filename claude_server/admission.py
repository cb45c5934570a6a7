"""Admission: at most N CLI processes at once, a bounded FIFO queue for the rest, and a
per-key rate limit on turns started. Pure asyncio, no HTTP."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Waiter(Generic[T]):
    item: T
    admitted: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admission(Generic[T]):
    """Slots for running turns; waiters get them in order, one each, as they free up.

    ``on_position(item, position)`` is told every waiter's 1-based place whenever the queue
    changes, and ``None`` once it leaves the queue."""

    def __init__(self, slots: int, max_queue: int, on_position: Callable[[T, int | None], None]) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.running = 0
        self._queue: collections.deque[Waiter[T]] = collections.deque()
        self._on_position = on_position

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def full(self) -> bool:
        """No free slot and no room left in the queue."""
        return self.running >= self.slots and len(self._queue) >= self.max_queue

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it."""
        if self.running < self.slots and not self._queue:
            self.running += 1
            return True
        return False

    def enqueue(self, item: T) -> Waiter[T]:
        """A place at the end of the queue (check ``full`` first)."""
        waiter = Waiter(item)
        self._queue.append(waiter)
        self._on_position(item, len(self._queue))
        return waiter

    def leave(self, waiter: Waiter[T]) -> None:
        """A waiter gives up its place (timed out, cancelled, client gone)."""
        try:
            self._queue.remove(waiter)
        except ValueError:
            return
        if not waiter.admitted.done():
            waiter.admitted.set_result(False)
        self._on_position(waiter.item, None)
        self._renumber()

    def release(self) -> None:
        """A slot frees up: the first waiter gets it (the count of running stays)."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.admitted.done():
                waiter.admitted.set_result(True)
                self._on_position(waiter.item, None)
                self._renumber()
                return
        self.running -= 1

    def _renumber(self) -> None:
        for place, waiter in enumerate(self._queue, start=1):
            self._on_position(waiter.item, place)


class RateLimiter:
    """A token bucket per key: ``per_minute`` turns, refilled evenly, bursts of as many."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """0 when a turn may start now (and counts it), else the seconds until one may."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate
