"""The deliverer: every webhook delivery attempted until it succeeds or runs out of retries.

A delivery is stored before ``enqueue`` returns and every attempt is recorded with the
delivery's next state, so what was pending when the server stopped (or died) is attempted
again after ``start``: a receiver sees each delivery at least once, and may see one twice
when the server stopped between the receiver's answer and its record (the delivery id in
the ``X-Claude-Server-Delivery`` header tells the two apart). An attempt cut off by
``close`` is not recorded: it stays pending for the next start rather than failing.

Each delivery is one asyncio task, asleep until its next attempt is due; at most
``concurrency`` attempts are in flight at once, so a dead receiver of a thousand tasks
costs a thousand sleeping tasks, not a thousand sockets. The body is serialised once,
stored, and sent byte for byte the same on every attempt and redelivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from claude_server.store import Store
from claude_server.store.deliveries import DeliveryRow
from claude_server.webhooks import Attempt, PublicResolver, deliver_once, new_session, public_connector, redacted

log = logging.getLogger(__name__)

# Attempts in flight at once, over every delivery.
CONCURRENCY = 8


@dataclass
class _Delivery:
    delivery_id: str
    task_id: str
    url: str
    secret: str | None
    body: bytes
    attempts: int
    next_attempt_at: float


class Deliverer:
    """``await start()``, then ``enqueue`` and ``redeliver``; ``await close()`` at the end."""

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float,
        retries: int,
        allow_private: bool,
        first_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._store = store
        self.timeout_s = timeout_s
        self.retries = retries
        self.allow_private = allow_private
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._random = random.Random()
        self._resolver: PublicResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    async def start(self) -> None:
        """Open the HTTP session and take up every pending delivery at its due time."""
        self._resolver = PublicResolver(self.allow_private)
        self._session = new_session(public_connector(self._resolver, self._concurrency))
        pending = await self._store.pending_deliveries()
        for row in pending:
            self._schedule(_from_row(row))
        if pending:
            log.info("webhook deliveries pending at start: %d", len(pending))

    async def enqueue(self, task_id: str, url: str, secret: str | None, payload: dict[str, Any]) -> str:
        """Store a delivery of ``payload`` and attempt it now; returns its id. The delivery
        is durable when this returns."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return await self._add(task_id, url, secret, body)

    async def redeliver(self, task_id: str) -> str | None:
        """A new delivery (new id, attempts from one) of the task's latest body to the same
        URL; None when the task never had a delivery."""
        last = await self._store.last_delivery_body(task_id)
        if last is None:
            return None
        url, secret, body = last
        return await self._add(task_id, url, secret, body)

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): doubling from
        ``first_backoff_s``, at most ``max_backoff_s``, with ±20 % jitter so that the
        deliveries failing together do not all come back together."""
        base = min(self.max_backoff_s, self.first_backoff_s * 2 ** min(attempt - 1, 64))
        return float(min(self.max_backoff_s, base * self._random.uniform(0.8, 1.2)))

    async def close(self) -> None:
        """Stop every timer and attempt (those cut off stay pending) and close the session."""
        self._closed = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    # ---- the loop of one delivery ------------------------------------------------------
    async def _add(self, task_id: str, url: str, secret: str | None, body: str) -> str:
        delivery_id = "d-" + uuid.uuid4().hex
        now = self._clock()
        await self._store.insert_delivery(delivery_id, task_id, url, secret, body, now)
        self._schedule(_Delivery(delivery_id, task_id, url, secret, body.encode(), 0, now))
        return delivery_id

    def _schedule(self, delivery: _Delivery) -> None:
        # Not started, or closed: the row waits in the store for the next start.
        if self._session is None or self._closed or delivery.delivery_id in self._running:
            return
        task = asyncio.create_task(self._run(delivery), name=f"webhook {delivery.delivery_id}")
        self._running[delivery.delivery_id] = task
        task.add_done_callback(lambda _: self._running.pop(delivery.delivery_id, None))

    async def _run(self, delivery: _Delivery) -> None:
        try:
            while await self._attempt(delivery):
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            # A store failure: the delivery stays as last recorded, for the next start.
            log.exception("webhook %s of task %s stopped", delivery.delivery_id, delivery.task_id)

    async def _attempt(self, delivery: _Delivery) -> bool:
        """Wait for the delivery's next attempt, make it and record it; whether another
        attempt follows."""
        delay = delivery.next_attempt_at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        assert self._session is not None
        async with self._slots:
            result = await deliver_once(
                self._session, delivery.url, delivery.body, delivery.secret, delivery.delivery_id, self.timeout_s
            )
        number = delivery.attempts + 1
        next_at: float | None = None
        if result.ok:
            status = "delivered"
        elif number > self.retries:
            status = "failed"
        else:
            status = "pending"
            next_at = self._clock() + self.delay_after(number)
        # The record is finished even when close() comes meanwhile: the attempt was made.
        record = asyncio.ensure_future(
            self._store.record_attempt(
                delivery.delivery_id, number, result.status_code, result.error, result.duration_ms, next_at, status
            )
        )
        try:
            exists = await asyncio.shield(record)
        except asyncio.CancelledError:
            await record
            raise
        delivery.attempts = number
        self._log(delivery, number, result, status, next_at)
        if not exists:
            log.info("webhook %s of task %s was deleted", delivery.delivery_id, delivery.task_id)
            return False
        if next_at is None:
            return False
        delivery.next_attempt_at = next_at
        return True

    def _log(self, delivery: _Delivery, number: int, result: Attempt, status: str, next_at: float | None) -> None:
        outcome = f"HTTP {result.status_code}" if result.error is None else result.error
        if status == "pending" and next_at is not None:
            then = f"retry in {max(0.0, next_at - self._clock()):.1f}s"
        else:
            then = status
        log.info(
            "webhook %s of task %s to %s: attempt %d: %s (%.0f ms), %s",
            delivery.delivery_id,
            delivery.task_id,
            redacted(delivery.url),
            number,
            outcome,
            result.duration_ms,
            then,
        )


def _from_row(row: DeliveryRow) -> _Delivery:
    return _Delivery(
        row.delivery_id, row.task_id, row.url, row.secret, row.body.encode(), row.attempts, row.next_attempt_at
    )
