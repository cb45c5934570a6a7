"""What state a database (a SQLite file or a PostgreSQL URL) is in, without changing it: the
migrations it has and lacks, and whether this process may write to it (``claude-server doctor``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from claude_server.store.database import migrations_dir

# A server busy writing holds the lock for milliseconds; longer than this is worth saying.
BUSY_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class SchemaState:
    applied: tuple[str, ...]  # recorded in schema_migrations
    pending: tuple[str, ...]  # shipped with this version, not applied yet
    unknown: tuple[str, ...]  # applied, but not shipped with this version (a newer server's)
    write_error: str | None  # why a write was refused, or None


async def inspect_url(url: str) -> SchemaState:
    """The state of the PostgreSQL database at ``url`` (``DatabaseUnavailable`` when it
    cannot be reached)."""
    from claude_server.store.postgres import schema_state  # asyncpg only for a URL

    applied, write_error = await schema_state(url)
    return _state(applied, write_error)


def _state(applied: set[str], write_error: str | None) -> SchemaState:
    shipped = {file.name for file in migrations_dir().glob("*.sql")}
    return SchemaState(
        applied=tuple(sorted(applied)),
        pending=tuple(sorted(shipped - applied)),
        unknown=tuple(sorted(applied - shipped)),
        write_error=write_error,
    )


async def inspect(path: Path) -> SchemaState:
    """The state of the existing database ``path`` (sqlite3.Error when it is no database).
    The write test takes the write lock and creates a table, then rolls it back."""
    async with aiosqlite.connect(f"file:{path}?mode=rw", uri=True) as conn:
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        async with conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ) as cur:
            has_table = await cur.fetchone() is not None
        applied: set[str] = set()
        if has_table:
            async with conn.execute("SELECT name FROM schema_migrations") as cur:
                applied = {str(row[0]) for row in await cur.fetchall()}
        write_error = None
        try:
            await conn.execute("BEGIN IMMEDIATE")
            await conn.execute("CREATE TABLE main._doctor_write_test (x)")
        except sqlite3.Error as exc:
            write_error = str(exc)
        finally:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
    return _state(applied, write_error)
