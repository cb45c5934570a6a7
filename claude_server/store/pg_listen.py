"""Listening to PostgreSQL notifications (``LISTEN``) on a connection of its own, kept up.

asyncpg delivers a notification to the callbacks of the connection that ``LISTEN``\\s; a
connection of the pool would be lent to queries, so the listener has its own. A lost
connection (the server restarted, the network broke) is noticed by asyncpg when the socket
closes, or by a ``SELECT 1`` every ``CHECK_S`` when it does not; then the listener says it
stopped, waits ``RETRY_S`` and connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from claude_server.store.database import redacted

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# How often an idle listening connection is checked, and how long a check may take.
CHECK_S = 10.0
CHECK_TIMEOUT_S = 5.0
# The wait before connecting again after the connection was lost.
RETRY_S = 1.0
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "claude-server listener"
ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Listener:
    """``LISTEN channel`` until ``close()``; ``on_notify(payload)`` for each notification,
    ``on_state(True/False)`` when listening starts and stops."""

    def __init__(
        self, url: str, channel: str, on_notify: Callable[[str], None], on_state: Callable[[bool], None]
    ) -> None:
        self.url = url
        self.channel = channel
        self.on_notify = on_notify
        self.on_state = on_state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep(), name=f"listen-{self.channel}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _keep(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen_once()
                failures = 0
            except ERRORS as exc:
                failures += 1
                if failures == 1:  # once per outage, not once per retry
                    log.warning("listening for turn changes in %s failed: %s", redacted(self.url), exc)
            await asyncio.sleep(RETRY_S)

    async def _listen_once(self) -> None:
        conn = await asyncpg.connect(
            self.url, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())

        def notified(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            self.on_notify(str(payload))

        try:
            await conn.add_listener(self.channel, notified)
            self.on_state(True)
            try:
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), CHECK_S)
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), CHECK_TIMEOUT_S)
            finally:
                self.on_state(False)
            log.warning("the connection listening for turn changes in %s was lost", redacted(self.url))
        finally:
            conn.terminate()
