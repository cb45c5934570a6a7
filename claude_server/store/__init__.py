"""The store: every SQL statement of the server, over one database (SQLite or PostgreSQL,
see ``database.py``).

``Store`` joins the queries of each table (sessions, turns, events, keys, compatible-API
exchanges, CLI processes, background tasks and their webhook deliveries, providers, replicas,
rate limits); nothing outside this package runs SQL.
"""

from __future__ import annotations

import time
from pathlib import Path

from claude_server.store.changes import CHANNEL, TurnChanges
from claude_server.store.compat import CompatQueries
from claude_server.store.database import Database, is_url, open_database
from claude_server.store.deliveries import DeliveryQueries
from claude_server.store.errors import Conflict, DatabaseUnavailable
from claude_server.store.events import EventQueries
from claude_server.store.keys import KeyExists, KeyQueries, hash_secret
from claude_server.store.processes import ProcessQueries
from claude_server.store.providers import ProviderQueries
from claude_server.store.rates import RateQueries
from claude_server.store.replicas import ReplicaQueries
from claude_server.store.rows import (
    KeyRow,
    SessionRow,
    StoredEvent,
    TurnRow,
    decode_cursor,
    default_title,
    encode_cursor,
    now_iso,
)
from claude_server.store.sessions import ConversationTaken, SessionQueries
from claude_server.store.tasks import TaskQueries, TaskRow
from claude_server.store.turns import TurnQueries

__all__ = [
    "Conflict",
    "ConversationTaken",
    "Database",
    "DatabaseUnavailable",
    "KeyExists",
    "KeyRow",
    "SessionRow",
    "Store",
    "StoredEvent",
    "TaskRow",
    "TurnChanges",
    "TurnRow",
    "decode_cursor",
    "default_title",
    "encode_cursor",
    "hash_secret",
    "is_url",
    "now_iso",
]


class Store(
    SessionQueries,
    TurnQueries,
    EventQueries,
    KeyQueries,
    CompatQueries,
    ProcessQueries,
    TaskQueries,
    DeliveryQueries,
    ProviderQueries,
    ReplicaQueries,
    RateQueries,
):
    """Typed access to every table. ``await Store.open(path_or_url)``; ``await store.close()``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pinged: tuple[float, bool] | None = None
        self.changes = TurnChanges()
        # Writes that change a turn notify other servers (``store/changes.py``): set by
        # ``listen_for_changes``, which a server sharing its database calls.
        self.notifies = False

    async def listen_for_changes(self) -> bool:
        """Notify the turns this server changes, and hear those other servers change (into
        ``changes``); False when the database cannot (SQLite: followers poll)."""
        if self.notifies:  # listening already
            return True
        if self.db.dialect.notify is None:
            return False
        self.notifies = await self.db.listen(CHANNEL, self.changes.notified, self.changes.listening)
        return self.notifies

    @classmethod
    async def open(cls, target: Path | str) -> Store:
        """Open the database at a path or ``postgresql://`` URL (migrating it)."""
        return cls(await open_database(target))

    async def close(self) -> None:
        await self.db.close()

    async def ping(self, max_age_s: float = 0.0) -> bool:
        """Whether the database answers (the last answer, when younger than ``max_age_s``)."""
        now = time.monotonic()
        if self._pinged is not None and now - self._pinged[0] < max_age_s:
            return self._pinged[1]
        try:
            ok = bool(await self.db.fetchval("SELECT 1") == 1)
        except Exception:
            ok = False
        self._pinged = (now, ok)
        return ok
