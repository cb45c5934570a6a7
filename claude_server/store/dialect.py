"""The SQL that differs between SQLite and PostgreSQL, and nothing else.

The query modules write standard SQL that both run (``ON CONFLICT ... DO NOTHING`` rather
than ``INSERT OR IGNORE``, ``CASE`` rather than summing booleans) with ``?`` placeholders;
PostgreSQL's driver wants ``$1, $2, ...``, which ``placeholders`` rewrites once per statement
text (cached). What has no common spelling is a method here.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1024)
def numbered_placeholders(sql: str) -> str:
    """``?`` becomes ``$1``, ``$2``, ... outside quoted text (``'...'``, ``"..."``)."""
    out: list[str] = []
    n = 0
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


class Dialect:
    """SQLite's spelling."""

    name = "sqlite"

    def placeholders(self, sql: str) -> str:
        return sql

    def icontains(self, column: str) -> str:
        """Whether ``column`` holds the parameter's text, any case (Unicode folded): the
        ``icontains`` function the SQLite connections define (SQLite's own ``lower()`` and
        ``LIKE`` fold ASCII only)."""
        return f"icontains({column}, ?)"

    def json_int(self, column: str, key: str) -> str:
        """The integer at ``key`` of the JSON object in text ``column`` (NULL when absent)."""
        return f"json_extract({column}, '$.{key}')"

    # A statement that notifies listeners on channel ``?`` with payload ``?`` once its
    # transaction commits (see ``store/changes.py``); SQLite has none.
    notify: str | None = None
    # After a SELECT in a transaction: lock the rows read until it ends (SQLite's write
    # transaction holds the whole database already).
    for_update = ""


class PostgresDialect(Dialect):
    """PostgreSQL's spelling. ``casefold()`` (PostgreSQL 18) folds like Python's
    ``str.casefold`` (``ß`` matches ``SS``); before 18, ``lower()``, which in a UTF-8 database
    folds every cased letter (``Ä``/``ä``, ``Σ``/``σ``) but leaves ``ß`` as it is."""

    name = "postgres"

    def __init__(self, server_version: int = 0) -> None:
        self.fold = "casefold" if server_version >= 180000 else "lower"

    def placeholders(self, sql: str) -> str:
        return numbered_placeholders(sql)

    def icontains(self, column: str) -> str:
        return f"(strpos({self.fold}({column}), {self.fold}(?)) > 0)"

    def json_int(self, column: str, key: str) -> str:
        return f"(({column})::jsonb ->> '{key}')::bigint"

    notify = "SELECT pg_notify(?, ?)"
    for_update = " FOR UPDATE"


SQLITE = Dialect()
