"""The SQLite database: one writer connection and one reader, WAL mode, and the migrations.

Every write goes through the writer, one at a time (datasette's single-writer discipline):
a write never lands inside another coroutine's open transaction, and ``transaction()``
holds the writer for its whole block. Reads go to the reader, which in WAL mode sees every
committed write and never waits for a write in progress, so a large batch of events being
written does not hold up ``/health`` or a session listing.

Migrations (see ``store/database.py``) are applied all in one ``BEGIN IMMEDIATE``
transaction together with their rows in ``schema_migrations``, which are read inside it: of
several processes opening a new database at once (replicas, or ``claude-server keys`` beside a
starting server), one applies them and the others wait for it and find nothing left to do.
A migration is run statement by statement (``executescript`` would commit the transaction).

A statement that breaks a constraint raises ``Conflict`` (``sqlite3.IntegrityError`` is its
cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from claude_server.store.database import Row, migration_files
from claude_server.store.dialect import SQLITE
from claude_server.store.errors import Conflict
from claude_server.store.rows import now_iso

log = logging.getLogger(__name__)

# After writes, the WAL is copied into the database this long later (so a flood's writes
# are checkpointed in large steps, and a quiet server not at all).
CHECKPOINT_INTERVAL_S = 0.5
# How often, and how long apart, the switch of a new file to WAL is tried (5 s in all).
WAL_SWITCH_TRIES = 100
WAL_SWITCH_WAIT_S = 0.05


def icontains(haystack: str | None, needle: str) -> bool:
    # SQLite's LIKE and lower() fold ASCII only; titles and prompts are any language.
    return haystack is not None and needle.casefold() in haystack.casefold()


@contextlib.contextmanager
def _conflicts() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(str(exc)) from exc


async def _connect(path: Path, *, reader: bool) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await _configure(conn, reader=reader)
    except BaseException:
        await conn.close()  # its thread would keep the process from exiting
        raise
    return conn


async def _configure(conn: aiosqlite.Connection, *, reader: bool) -> None:
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA busy_timeout=5000")
    if not reader:
        # Events are stored in chunks of up to a megabyte: with 4 KiB pages each chunk is a
        # chain of 256 overflow pages, and writing a flood cost SQLite twice the CPU it
        # does with 64 KiB pages (measured). Only a new database takes a page size.
        await conn.execute("PRAGMA page_size=65536")
        await _use_wal(conn)
    # NORMAL is durable across application crashes in WAL mode; only a power loss can lose
    # the last transactions, and it never corrupts the database.
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    # The WAL file is truncated back to this size after a checkpoint, instead of staying as
    # large as the largest burst of events ever made it.
    await conn.execute("PRAGMA journal_size_limit=67108864")
    if reader:
        await conn.execute("PRAGMA query_only=ON")
    await conn.create_function("icontains", 2, icontains, deterministic=True)


async def _use_wal(conn: aiosqlite.Connection) -> None:
    # Switching a new file to WAL needs it to itself and does not wait (SQLite answers
    # "database is locked" at once, busy_timeout or not) while another process opens it too.
    for _ in range(WAL_SWITCH_TRIES - 1):
        with contextlib.suppress(sqlite3.OperationalError):
            async with conn.execute("PRAGMA journal_mode=WAL") as cur:
                row = await cur.fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
        await asyncio.sleep(WAL_SWITCH_WAIT_S)
    await conn.execute("PRAGMA journal_mode=WAL")  # the last try raises what SQLite says


def statements(script: str) -> Iterator[str]:
    """The statements of a migration file, each whole (a trigger's body keeps its ``;``)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if any(line.strip() and not line.strip().startswith("--") for line in pending.splitlines()):
        yield pending  # a last statement without its semicolon


async def migrate(conn: aiosqlite.Connection, folder: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        async with conn.execute("SELECT name FROM schema_migrations") as cur:
            done = {row["name"] for row in await cur.fetchall()}
        applied = []
        for file_name, file in migration_files(SQLITE.name, folder):
            if file_name in done:
                continue
            for statement in statements(file.read_text(encoding="utf-8")):
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (file_name, now_iso()))
            applied.append(file_name)
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    for file_name in applied:
        log.info("applied migration %s", file_name)
    return applied


class SqliteTransaction:
    """Statements inside ``SqliteDatabase.transaction()``, on the writer."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _conflicts():
            async with self._conn.execute(sql, params) as cur:
                return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with _conflicts():
            await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())


class SqliteDatabase:
    """The writer and the reader. Open with ``SqliteDatabase.open(path)``; ``close()`` when done."""

    dialect = SQLITE

    def __init__(
        self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection, checkpointer: aiosqlite.Connection
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._checkpointer = checkpointer
        self._write_lock = asyncio.Lock()
        self._written = asyncio.Event()
        self._checkpoints: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path | str) -> SqliteDatabase:
        """Open (creating the file and its folder) and bring the schema up to date."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, reader=False)
        try:
            await migrate(writer)
            # The writer never checkpoints (copies the WAL into the database, and syncs it)
            # itself: a checkpoint of a flood's 64 MB held the writer, and every follower
            # waiting for its events, for about 100 ms. A connection of its own does it in
            # the background, without blocking writes (PASSIVE).
            await writer.execute("PRAGMA wal_autocheckpoint=0")
            reader = await _connect(path, reader=True)
            checkpointer = await _connect(path, reader=True)
        except BaseException:
            await writer.close()
            raise
        db = cls(path, writer, reader, checkpointer)
        db._checkpoints = asyncio.create_task(db._checkpoint_after_writes(), name="checkpoints")
        return db

    async def _checkpoint_after_writes(self) -> None:
        while True:
            await self._written.wait()
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            self._written.clear()
            try:
                await self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("checkpoint of %s failed: %s", self.path, exc)

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            await asyncio.gather(self._checkpoints, return_exceptions=True)
        async with self._write_lock:
            for conn in (self._checkpointer, self._reader, self._writer):
                await conn.close()

    @property
    def where(self) -> str:
        return str(self.path)

    async def lock_instance(self) -> bool:
        # The lock of a SQLite database is the file beside it (instance.py), taken before.
        return True

    # ---- writes ------------------------------------------------------------------------
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement; returns how many rows it changed."""
        self._written.set()
        with _conflicts():
            async with self._write_lock, self._writer.execute(sql, params) as cur:
                return cur.rowcount

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        self._written.set()
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteTransaction(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def listen(self, channel: str, on_notify: Callable[[str], None], on_state: Callable[[bool], None]) -> bool:
        return False  # SQLite has no notifications: followers of other servers' turns poll

    # ---- reads -------------------------------------------------------------------------
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._reader.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]
