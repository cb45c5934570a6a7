"""SQL for API keys and what a key has spent."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite

from claude_server.store import now_iso

SECRET_PREFIX = "csk_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    name: str
    admin: bool
    daily_budget_usd: float | None
    created_at: str
    revoked_at: str | None

    def public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "admin": self.admin,
            "daily_budget_usd": self.daily_budget_usd,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


_COLUMNS = "key_id, name, admin, daily_budget_usd, created_at, revoked_at"


def _key(row: Any) -> KeyRow:
    return KeyRow(row[0], row[1], bool(row[2]), row[3], row[4], row[5])


class KeyExists(Exception):
    """A key with that name exists already."""


class KeyStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def create(self, name: str, *, admin: bool, daily_budget_usd: float | None) -> tuple[KeyRow, str]:
        """A new key and its secret (which is not stored and cannot be shown again)."""
        secret = new_secret()
        key_id = "key_" + secrets.token_hex(6)
        try:
            await self.conn.execute(
                "INSERT INTO api_keys (key_id, name, secret_hash, admin, daily_budget_usd, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, hash_secret(secret), int(admin), daily_budget_usd, now_iso()),
            )
        except sqlite3.IntegrityError:
            raise KeyExists(f"a key named {name!r} exists already") from None
        row = await self.get(key_id)
        assert row is not None
        return row, secret

    async def get(self, name_or_id: str) -> KeyRow | None:
        async with self.conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ? OR name = ? ORDER BY key_id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        ) as cur:
            row = await cur.fetchone()
        return _key(row) if row else None

    async def by_secret_hash(self, secret_hash: str) -> KeyRow | None:
        async with self.conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", (secret_hash,)
        ) as cur:
            row = await cur.fetchone()
        return _key(row) if row else None

    async def any_key(self) -> bool:
        """Whether a key was ever created (revoked ones count: revoking the last key must not
        open the server to everyone)."""
        async with self.conn.execute("SELECT 1 FROM api_keys LIMIT 1") as cur:
            return await cur.fetchone() is not None

    async def list(self) -> list[KeyRow]:
        async with self.conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name") as cur:
            return [_key(row) for row in await cur.fetchall()]

    async def revoke(self, name_or_id: str) -> KeyRow | None:
        row = await self.get(name_or_id)
        if row is None:
            return None
        await self.conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?", (now_iso(), row.key_id)
        )
        return await self.get(row.key_id)
