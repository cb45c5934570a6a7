"""The database the store runs its SQL on: SQLite (a file) or PostgreSQL (a URL), behind one
interface.

``open_database(target)`` opens either: a ``postgresql://`` (or ``postgres://``) URL opens
``PostgresDatabase`` (``store/postgres.py``), anything else is a path and opens
``SqliteDatabase`` (``store/sqlite.py``). The query modules write their SQL once, with ``?``
placeholders, and read rows by column name or position; what must differ between the two
is asked of ``db.dialect`` (``store/dialect.py``). Writes go through ``execute`` or a
``transaction()``; reads through ``fetchone``/``fetchall``/``fetchval``. A statement that
breaks a unique constraint raises ``store.errors.Conflict`` on both.

Migrations are the ``*.sql`` files of the ``migrations`` folder, applied in name order by
one runner, each once and in one transaction with its row in ``schema_migrations``. The
files are written for SQLite; a file of the same name in ``migrations/postgres/`` takes
its place on PostgreSQL where the SQL must differ (column types: ``BIGINT`` for SQLite's
64-bit ``INTEGER``, ``DOUBLE PRECISION`` for ``REAL``, ``BYTEA`` for ``BLOB``), so both
databases record the same migration names and ``tests/test_postgres.py`` checks that
they end with the same tables and columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from claude_server.store.dialect import Dialect
from claude_server.store.errors import DatabaseUnavailable

URL_SCHEMES = ("postgresql://", "postgres://")


class Row(Protocol):
    """A result row, by column name or position (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __len__(self) -> int: ...


def is_url(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    if password is None:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))


def migrations_dir() -> Path:
    """The migrations shipped in the wheel, or the repository's own folder in a source tree."""
    packaged = Path(str(resources.files("claude_server"))) / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def migration_files(dialect: str, folder: Path | None = None) -> Iterator[tuple[str, Path]]:
    """(name, file) of every migration in order, with the dialect's own file where it has one."""
    folder = folder or migrations_dir()
    for file in sorted(folder.glob("*.sql")):
        own = folder / dialect / file.name
        yield file.name, own if own.is_file() else file


class Transaction(Protocol):
    """Statements inside ``Database.transaction()``, all on one connection."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class Database(Protocol):
    """What the store needs of a database; ``close()`` it when done."""

    dialect: Dialect

    # Where it is, for messages: a path, or a URL without its password.
    @property
    def where(self) -> str: ...

    async def close(self) -> None: ...

    async def lock_instance(self) -> bool:
        """Make this process the database's one server until ``close``; False when another
        server is. SQLite's lock is a file beside the database (``instance.py``), so it says True."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement; returns how many rows it changed."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    async def listen(self, channel: str, on_notify: Callable[[str], None], on_state: Callable[[bool], None]) -> bool:
        """Hand every notification on ``channel`` to ``on_notify`` (its payload) until
        ``close``, telling ``on_state`` when listening starts (True) and stops (False), and
        listening again after a lost connection; False when the database has no
        notifications (SQLite)."""
        ...


async def open_database(target: Path | str) -> Database:
    """Open (and migrate) the database at a path or a ``postgresql://`` URL."""
    if is_url(target):
        try:
            from claude_server.store.postgres import PostgresDatabase
        except ModuleNotFoundError as exc:
            raise DatabaseUnavailable(
                f"a PostgreSQL database needs {exc.name}: pip install 'claude-server[postgres]'"
            ) from None

        return await PostgresDatabase.open(str(target))
    from claude_server.store.sqlite import SqliteDatabase

    return await SqliteDatabase.open(target)


@contextlib.asynccontextmanager
async def opened(target: Path | str) -> AsyncIterator[Database]:
    db = await open_database(target)
    try:
        yield db
    finally:
        await db.close()
