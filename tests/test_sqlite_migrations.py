"""The SQLite migrations runner: several processes opening one new database at once, a
migration that fails half way, and the statement splitter."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import aiosqlite
import pytest

from claude_server.store.database import migrations_dir
from claude_server.store.sqlite import SqliteDatabase, migrate, statements

pytestmark = pytest.mark.sqlite

OPEN_ONE = """
import asyncio, sys
from claude_server.store.sqlite import SqliteDatabase

async def main() -> None:
    db = await SqliteDatabase.open(sys.argv[1])
    await db.close()

asyncio.run(main())
"""


async def _open_at_once(path: Path, processes: int) -> list[tuple[int, str]]:
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", OPEN_ONE, str(path), stderr=asyncio.subprocess.PIPE)
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        results.append((proc.returncode or 0, err.decode(errors="replace")))
    return results


async def test_processes_opening_a_new_database_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    # Replicas started together on one new file raced: "table sessions already exists".
    shipped = sorted(file.name for file in migrations_dir().glob("*.sql"))
    for round_ in range(5):
        path = tmp_path / f"round{round_}" / "sessions.db"
        path.parent.mkdir()
        results = await _open_at_once(path, 4)
        assert [code for code, _ in results] == [0] * 4, [err for _, err in results]
        with sqlite3.connect(path) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert names == shipped


async def test_connections_of_one_process_opening_at_once(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    dbs = await asyncio.gather(*(SqliteDatabase.open(path) for _ in range(4)))
    for db in dbs:
        await db.close()
    with sqlite3.connect(path) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert count == len(list(migrations_dir().glob("*.sql")))


async def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_a.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (folder / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    async with aiosqlite.connect(tmp_path / "fresh.db", isolation_level=None) as conn:
        conn.row_factory = sqlite3.Row
        with pytest.raises(sqlite3.OperationalError, match="nowhere"):
            await migrate(conn, folder)
        assert not conn.in_transaction
        async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            tables = [row[0] for row in await cur.fetchall()]
        # All or nothing: neither table, nor schema_migrations, nor its rows.
        assert tables == []
        (folder / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);\n")
        assert await migrate(conn, folder) == ["0001_a.sql", "0002_b.sql"]
        assert await migrate(conn, folder) == []


def test_statements_keep_a_trigger_whole_and_drop_trailing_comments() -> None:
    script = (
        "-- a comment\n"
        "CREATE TABLE t (x INTEGER);\n"
        "CREATE TRIGGER t_no_negative BEFORE INSERT ON t\n"
        "WHEN NEW.x < 0 BEGIN\n"
        "  SELECT RAISE(ABORT, 'negative; no');\n"
        "END;\n"
        "INSERT INTO t VALUES (1)\n"
        "-- the end\n"
    )
    parts = list(statements(script))
    assert len(parts) == 3
    assert parts[1].count(";") == 3 and parts[1].rstrip().endswith("END;")
    assert parts[2].startswith("INSERT INTO t VALUES (1)")
    assert list(statements("CREATE TABLE u (x);\n-- only a comment\n\n")) == ["CREATE TABLE u (x);\n"]
    conn = sqlite3.connect(":memory:")
    for part in parts:
        conn.execute(part)
    with pytest.raises(sqlite3.IntegrityError, match="negative; no"):
        conn.execute("INSERT INTO t VALUES (-1)")
