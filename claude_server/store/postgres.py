"""The PostgreSQL database (14 or newer), through asyncpg: a pool of connections.

Reads take any connection of the pool; a ``transaction()`` holds one connection for its
whole block. PostgreSQL runs writes side by side, so nothing here serialises them the way
SQLite's single writer does: each statement is atomic, and what must be atomic together is
in one transaction. Statements are written with ``?`` placeholders, rewritten to ``$n``
once per statement text (``dialect.numbered_placeholders``), and asyncpg prepares and caches
each statement per connection.

PostgreSQL's text cannot hold the NUL character, which SQLite's can: a U+0000 in a text
parameter is stored as U+FFFD (the replacement character) instead of failing the write.
Events are bytes (``bytea``) and keep every byte.

Migrations take an advisory lock first, so two servers starting on one database at once
apply each migration once. A statement that breaks a constraint raises ``Conflict``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from claude_server.store.database import Row, migration_files, redacted
from claude_server.store.dialect import Dialect, PostgresDialect
from claude_server.store.errors import Conflict, DatabaseUnavailable
from claude_server.store.pg_listen import Listener
from claude_server.store.rows import now_iso

log = logging.getLogger(__name__)

# A connection of its own or one lent by the pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# The pool's size: turns write their events side by side, and each read holds a connection
# only for its statement.
POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT_S = 10.0
# pg_advisory_xact_lock key of the migrations runner ("claude-s" in ASCII).
MIGRATIONS_LOCK = 0x636C617564652D73
# pg_try_advisory_lock key a server holds for its life ("claude-i").
INSTANCE_LOCK = 0x636C617564652D69


def _rowcount(status: str) -> int:
    """How many rows a command changed, from its status ("UPDATE 3", "INSERT 0 1")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def storable(params: Sequence[Any]) -> Sequence[Any]:
    """The parameters with U+0000 in text replaced (PostgreSQL's text has no NUL)."""
    if not any(isinstance(p, str) and "\x00" in p for p in params):
        return params
    return [p.replace("\x00", "\ufffd") if isinstance(p, str) else p for p in params]


@contextlib.contextmanager
def _conflicts() -> Iterator[None]:
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise Conflict(str(exc)) from exc


async def migrate(conn: Connection, folder: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded, all in one transaction under an advisory lock
    (a second server starting meanwhile waits, then finds them applied); returns the names
    applied."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATIONS_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, file in migration_files(PostgresDialect.name, folder):
            if name in done:
                continue
            async with conn.transaction():
                # The simple protocol runs a script of several statements.
                await conn.execute(file.read_text(encoding="utf-8"))
                await conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)", name, now_iso())
            log.info("applied migration %s", name)
            applied.append(name)
    return applied


class PostgresTransaction:
    """Statements inside ``PostgresDatabase.transaction()``, on one connection."""

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self._conn = conn
        self._dialect = dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _conflicts():
            return _rowcount(await self._conn.execute(self._dialect.placeholders(sql), *storable(params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with _conflicts():
            await self._conn.executemany(self._dialect.placeholders(sql), [storable(r) for r in rows])

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(self._dialect.placeholders(sql), *storable(params))
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._conn.fetch(self._dialect.placeholders(sql), *storable(params)))

    async def copy_rows(self, table: str, columns: Sequence[str], records: Sequence[tuple[Any, ...]]) -> None:
        """Rows into ``table`` with ``COPY`` (many times faster than inserts)."""
        with _conflicts():
            rows = [tuple(storable(r)) for r in records]
            await self._conn.copy_records_to_table(table, columns=list(columns), records=rows)


class PostgresDatabase:
    """A pool on one database. Open with ``PostgresDatabase.open(url)``; ``close()`` when done."""

    def __init__(self, url: str, pool: asyncpg.Pool, dialect: PostgresDialect) -> None:
        self.url = url
        self._pool = pool
        self.dialect: Dialect = dialect
        self._lock_conn: asyncpg.Connection | None = None
        self._listeners: list[Listener] = []

    @classmethod
    async def open(cls, url: str, *, migrations: Path | None = None) -> PostgresDatabase:
        """Connect and bring the schema up to date; ``DatabaseUnavailable`` when it cannot."""
        pool = await connect_pool(url)
        try:
            async with pool.acquire() as conn:
                encoding = await conn.fetchval("SHOW server_encoding")
                if encoding != "UTF8":
                    raise DatabaseUnavailable(
                        f"{redacted(url)} is encoded in {encoding}; the server needs a UTF8 database "
                        "(CREATE DATABASE ... ENCODING 'UTF8')"
                    )
                await migrate(conn, migrations)
                version = int(await conn.fetchval("SHOW server_version_num"))
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise DatabaseUnavailable(f"cannot set up the schema in {redacted(url)}: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        return cls(url, pool, PostgresDialect(version))

    @property
    def where(self) -> str:
        return redacted(self.url)

    async def close(self) -> None:
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
        if self._lock_conn is not None:
            await self._lock_conn.close()
            self._lock_conn = None
        await self._pool.close()

    async def lock_instance(self) -> bool:
        """Take the database's server lock (a session advisory lock on a connection of its own,
        held until ``close``; PostgreSQL lets go of it when the connection dies, so a crash
        leaves it free); False when another server holds it."""
        if self._lock_conn is not None:
            return True
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", INSTANCE_LOCK):
            await conn.close()
            return False
        self._lock_conn = conn
        return True

    async def listen(self, channel: str, on_notify: Callable[[str], None], on_state: Callable[[bool], None]) -> bool:
        """Listen on a connection of its own (``store/pg_listen.py``)."""
        listener = Listener(self.url, channel, on_notify, on_state)
        listener.start()
        self._listeners.append(listener)
        return True

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _conflicts():
            return _rowcount(await self._pool.execute(self.dialect.placeholders(sql), *storable(params)))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn, self.dialect)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._pool.fetchrow(self.dialect.placeholders(sql), *storable(params))
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._pool.fetch(self.dialect.placeholders(sql), *storable(params)))

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self._pool.fetchval(self.dialect.placeholders(sql), *storable(params))


_SCHEME = re.compile(r"^postgres(ql)?://")


async def connect_pool(url: str) -> asyncpg.Pool:
    """A pool on ``url``, or ``DatabaseUnavailable`` with one line saying why."""
    where = redacted(url)
    if not _SCHEME.match(url):
        raise DatabaseUnavailable(f"not a PostgreSQL URL: {where}")
    try:
        pool = await asyncpg.create_pool(url, min_size=POOL_MIN, max_size=POOL_MAX, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {where}: {reason}") from None
    assert pool is not None
    return pool


async def schema_state(url: str) -> tuple[set[str], str | None]:
    """The migrations recorded in ``url``'s database, and why a write there was refused (or
    None), without changing it: the write test creates a table and rolls it back."""
    pool = await connect_pool(url)
    try:
        async with pool.acquire() as conn:
            has_table = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            applied = (
                {str(r["name"]) for r in await conn.fetch("SELECT name FROM schema_migrations")} if has_table else set()
            )
            write_error = None
            try:
                async with conn.transaction():
                    await conn.execute("CREATE TABLE _doctor_write_test (x integer)")
                    raise _RollBack
            except _RollBack:
                pass
            except asyncpg.PostgresError as exc:
                write_error = str(exc)
    finally:
        await pool.close()
    return applied, write_error


class _RollBack(Exception):
    """Leaves a transaction by rolling it back."""
