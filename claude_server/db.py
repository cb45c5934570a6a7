"""The SQLite connection: one aiosqlite connection in WAL mode, and the migrations.

Migrations are the ``*.sql`` files of the ``migrations`` folder, applied in name order, each
in one transaction together with its row in ``schema_migrations``. ``executescript`` commits
before it runs and ignores the isolation level, so the transaction is written into the
script itself and rolled back by hand on failure.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """The migrations shipped in the wheel, or the repository's own folder in a source tree."""
    packaged = Path(str(resources.files("claude_server"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


async def connect(path: Path | str) -> aiosqlite.Connection:
    """Open the database (creating its folder), in autocommit mode with WAL and foreign keys."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode; only a power loss can lose
    # the last transactions, and it never corrupts the database.
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    # The WAL file is truncated back to this size after a checkpoint, instead of staying as
    # large as the largest burst of events ever made it.
    await conn.execute("PRAGMA journal_size_limit=67108864")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


async def migrate(conn: aiosqlite.Connection, folder: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied."""
    folder = folder or migrations_dir()
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    async with conn.execute("SELECT name FROM schema_migrations") as cur:
        done = {row[0] for row in await cur.fetchall()}
    applied = []
    for file in sorted(folder.glob("*.sql")):
        if file.name in done:
            continue
        sql = file.read_text(encoding="utf-8")
        name = file.name.replace("'", "''")
        script = (
            f"BEGIN;\n{sql}\n;\nINSERT INTO schema_migrations (name, applied_at) "
            f"VALUES ('{name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\nCOMMIT;"
        )
        try:
            await conn.executescript(script)
        except Exception:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        log.info("applied migration %s", file.name)
        applied.append(file.name)
    return applied
