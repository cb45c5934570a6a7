"""The warm pool: CLI processes kept alive between the turns of their session.

After a turn's ``result`` its CLI waits for the next user message; the pool keeps it for
``idle_timeout_s`` so that the session's next turn is written to it instead of paying the
CLI's start-up again (CLI-FACTS, "Interactive mode": 15-25 ms against 400-850 ms). At most
``max_idle`` processes wait; beyond that the least recently used is ended. A process in the
pool holds no admission slot: it is not running anything. Ending one goes through
``retire`` (the broker's: closes it, sweeps its marker, records it ended). No aiohttp here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from claude_server.claude.live import LiveCli

log = logging.getLogger(__name__)


class WarmPool:
    def __init__(
        self, idle_timeout_s: float, max_idle: int, retire: Callable[[LiveCli], Coroutine[Any, Any, None]]
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_idle = max_idle
        self._retire = retire
        self._idle: OrderedDict[str, LiveCli] = OrderedDict()  # session id -> process, oldest first
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0

    @property
    def enabled(self) -> bool:
        return self.idle_timeout_s > 0 and self.max_idle > 0

    @property
    def size(self) -> int:
        return len(self._idle)

    def take(self, session_id: str | None) -> LiveCli | None:
        """The session's idle process, out of the pool (None: start a cold one)."""
        if not self.enabled or session_id is None:
            return None
        live = self._idle.pop(session_id, None)
        self._cancel_timer(session_id)
        if live is not None and not live.alive:  # it died while it waited
            log.info("warm process %s of session %s died while idle", live.marker, session_id)
            self._end(live)
            live = None
        return live

    def count(self, hit: bool) -> None:
        """A turn on a known session found its warm CLI (and could use it), or not."""
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def put(self, live: LiveCli) -> bool:
        """Keep ``live`` for its session's next turn; False when the pool does not take it
        (then the caller ends it)."""
        sid = live.session_id
        if not self.enabled or sid is None or not live.alive:
            return False
        old = self._idle.pop(sid, None)
        if old is not None and old is not live:
            self._end(old)
        self._idle[sid] = live
        self._cancel_timer(sid)
        loop = asyncio.get_running_loop()
        self._timers[sid] = loop.call_later(self.idle_timeout_s, self._expire, sid)
        while len(self._idle) > self.max_idle:
            oldest, victim = self._idle.popitem(last=False)
            self._cancel_timer(oldest)
            self.evictions += 1
            log.info("warm pool full (%d): ending the process of session %s", self.max_idle, oldest)
            self._end(victim)
        return True

    def holds(self, session_id: str) -> LiveCli | None:
        return self._idle.get(session_id)

    async def end(self, session_id: str) -> None:
        """End the session's idle process, if any (the session is being deleted)."""
        live = self._idle.pop(session_id, None)
        self._cancel_timer(session_id)
        if live is not None:
            await self._retire(live)

    async def close(self) -> None:
        """End every idle process, and wait for those being ended."""
        idle = list(self._idle.values())
        self._idle.clear()
        for sid in list(self._timers):
            self._cancel_timer(sid)
        await asyncio.gather(*(self._retire(live) for live in idle), *self._ending, return_exceptions=True)

    def _expire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        live = self._idle.pop(session_id, None)
        if live is not None:
            self.expired += 1
            log.info("warm process of session %s idle for %gs: ending it", session_id, self.idle_timeout_s)
            self._end(live)

    def _end(self, live: LiveCli) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._retire(live), name=f"retire-{live.marker}"
        )
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def _cancel_timer(self, session_id: str) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()

    def public(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "size": self.size,
            "max": self.max_idle,
            "idle_timeout_s": self.idle_timeout_s,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expired": self.expired,
        }
