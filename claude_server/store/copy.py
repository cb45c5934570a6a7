"""``claude-server migrate``: copy a SQLite database into PostgreSQL, every table, and verify.

Both databases are first brought to the current schema (the SQLite file as the server would
on start, PostgreSQL from empty), so they have the same tables and columns. Every table but
``schema_migrations`` is copied, referenced tables before the tables whose foreign keys
point to them, in batches (keyset pages by SQLite's rowid, written with
PostgreSQL's ``COPY``), all in one transaction: a copy that fails leaves the target as it was.
The row count of every table is compared before the commit; a difference rolls it back.

A target that holds rows already is refused, unless ``replace`` (its tables are emptied
first, in the same transaction). The deliveries table keeps SQLite's implicit rowid as a
column of its own on PostgreSQL (it orders deliveries made in the same millisecond); it is
copied from the rowid and its identity sequence moved past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from claude_server.store.errors import Conflict, DatabaseUnavailable
from claude_server.store.postgres import PostgresDatabase, PostgresTransaction
from claude_server.store.sqlite import SqliteDatabase

# Rows per batch; the events table's rows are chunks of up to about a megabyte each.
BATCH_ROWS = 1000
BATCH_ROWS_BY_TABLE = {"events": 16}
SKIPPED = frozenset({"schema_migrations"})


class CopyRefused(Exception):
    """The copy cannot be made (a non-empty target, schemas that differ, counts that differ)."""


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    target: int


async def sqlite_tables(db: SqliteDatabase) -> dict[str, list[str]]:
    """Every table of the SQLite database and its columns, in order."""
    names = [
        r["name"]
        for r in await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {name: [r["name"] for r in await db.fetchall(f'PRAGMA table_info("{name}")')] for name in names}


async def postgres_tables(tx: PostgresTransaction) -> dict[str, list[str]]:
    rows = await tx.fetchall(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for r in rows:
        tables.setdefault(r["table_name"], []).append(r["column_name"])
    return tables


async def referenced_first(tx: PostgresTransaction, tables: list[str]) -> list[str]:
    """``tables`` in an order where every table comes after the tables its foreign keys
    reference (so each row's references exist when it is copied)."""
    needs: dict[str, set[str]] = {t: set() for t in tables}
    for r in await tx.fetchall(
        "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent FROM pg_constraint "
        "WHERE contype = 'f'"
    ):
        if r["child"] in needs and r["parent"] != r["child"]:
            needs[r["child"]].add(r["parent"])
    order: list[str] = []
    while needs:
        ready = sorted(t for t, parents in needs.items() if not parents - set(order))
        if not ready:
            raise CopyRefused(f"foreign keys form a cycle among {', '.join(sorted(needs))}")
        order += ready
        for t in ready:
            del needs[t]
    return order


def _plan(source: dict[str, list[str]], target: dict[str, list[str]]) -> dict[str, list[str]]:
    """The tables to copy and the SQLite expression of each target column."""
    plan = {}
    for table in sorted(set(source) | set(target)):
        if table in SKIPPED:
            continue
        if table not in target or table not in source:
            where = "PostgreSQL" if table not in target else "SQLite"
            raise CopyRefused(f"table {table} is missing in {where}: the schemas differ")
        exprs = []
        for column in target[table]:
            if column in source[table]:
                exprs.append(f'"{column}"')
            elif column == "rowid":
                exprs.append("rowid")
            else:
                raise CopyRefused(f"column {table}.{column} is missing in SQLite: the schemas differ")
        extra = set(source[table]) - set(target[table])
        if extra:
            raise CopyRefused(f"column {table}.{sorted(extra)[0]} is missing in PostgreSQL: the schemas differ")
        plan[table] = exprs
    return plan


async def _copy_table(
    source: SqliteDatabase, tx: PostgresTransaction, table: str, exprs: list[str], columns: list[str]
) -> int:
    batch = BATCH_ROWS_BY_TABLE.get(table, BATCH_ROWS)
    after = -(2**63)
    copied = 0
    sql = f'SELECT rowid AS "__rowid", {", ".join(exprs)} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT ?'
    while True:
        rows = await source.fetchall(sql, (after, batch))
        if not rows:
            return copied
        records: list[tuple[Any, ...]] = [tuple(r[i] for i in range(1, len(r))) for r in rows]
        await tx.copy_rows(table, columns, records)
        copied += len(records)
        after = rows[-1][0]


async def copy_database(
    source_path: Path,
    target_url: str,
    *,
    replace: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[TableCount]:
    """Copy every table of the SQLite file into the PostgreSQL database; the counts per table."""
    if not await asyncio.to_thread(source_path.is_file):
        raise DatabaseUnavailable(f"no SQLite database at {source_path}")
    source = await SqliteDatabase.open(source_path)
    try:
        target = await PostgresDatabase.open(target_url)
        try:
            return await _copy(source, target, replace=replace, progress=progress)
        finally:
            await target.close()
    finally:
        await source.close()


async def _copy(
    source: SqliteDatabase, target: PostgresDatabase, *, replace: bool, progress: Callable[[str], None]
) -> list[TableCount]:
    counts = []
    async with target.transaction() as tx:
        plan = _plan(await sqlite_tables(source), await postgres_tables(tx))
        full = [t for t in plan if await tx.fetchone(f'SELECT 1 FROM "{t}" LIMIT 1') is not None]
        if full and not replace:
            raise CopyRefused(
                f"{target.where} is not empty (rows in {', '.join(full)}); pass --replace to empty it first"
            )
        if full:
            await tx.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in plan))
        targets = await postgres_tables(tx)
        for table in await referenced_first(tx, list(plan)):
            try:
                copied = await _copy_table(source, tx, table, plan[table], targets[table])
            except (Conflict, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                reason = " ".join(str(exc).split())
                raise CopyRefused(f"copying {table} failed, nothing was copied: {reason}") from exc
            progress(f"{table}: {copied} rows copied")
        if "rowid" in targets.get("deliveries", []):
            await tx.execute(
                "SELECT setval(pg_get_serial_sequence('deliveries', 'rowid'), coalesce(max(rowid), 0) + 1, false) "
                "FROM deliveries"
            )
        for table in plan:
            had = int(await source.fetchval(f'SELECT count(*) FROM "{table}"'))
            row = await tx.fetchone(f'SELECT count(*) FROM "{table}"')
            has = int(row[0]) if row is not None else 0
            counts.append(TableCount(table, had, has))
        wrong = [c for c in counts if c.source != c.target]
        if wrong:
            raise CopyRefused(
                "counts differ, nothing was copied: "
                + ", ".join(f"{c.table} {c.source} in SQLite, {c.target} in PostgreSQL" for c in wrong)
            )
    return counts
