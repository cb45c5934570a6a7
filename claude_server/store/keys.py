"""SQL for API keys (``claude-server keys``). Only a SHA-256 hash of a secret is stored."""

from __future__ import annotations

import hashlib
import secrets

from claude_server.store.database import Database
from claude_server.store.errors import Conflict
from claude_server.store.rows import KEY_COLUMNS, KeyRow, now_iso

SECRET_PREFIX = "csk_"


def hash_secret(secret: str) -> str:
    # surrogateescape: a header may carry any byte; its hash must still be computable (a
    # non-UTF-8 key simply matches no key).
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class KeyExists(Exception):
    """A key with that name exists already."""


class KeyQueries:
    db: Database

    async def create_key(self, name: str, *, admin: bool, daily_budget_usd: float | None) -> tuple[KeyRow, str]:
        """A new key and its secret (which is not stored and cannot be shown again)."""
        secret = new_secret()
        key_id = "key_" + secrets.token_hex(6)
        try:
            await self.db.execute(
                "INSERT INTO api_keys (key_id, name, secret_hash, admin, daily_budget_usd, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, name, hash_secret(secret), int(admin), daily_budget_usd, now_iso()),
            )
        except Conflict:
            raise KeyExists(f"a key named {name!r} exists already") from None
        row = await self.get_key(key_id)
        assert row is not None
        return row, secret

    async def get_key(self, name_or_id: str) -> KeyRow | None:
        row = await self.db.fetchone(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ? OR name = ? ORDER BY key_id = ? DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        )
        return KeyRow.of(row) if row else None

    async def key_by_secret_hash(self, secret_hash: str) -> KeyRow | None:
        row = await self.db.fetchone(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", (secret_hash,)
        )
        return KeyRow.of(row) if row else None

    async def any_key(self) -> bool:
        """Whether a key was ever created (revoked ones count: revoking the last key must not
        open the server to everyone)."""
        return await self.db.fetchone("SELECT 1 FROM api_keys LIMIT 1") is not None

    async def list_keys(self) -> list[KeyRow]:
        return [
            KeyRow.of(r)
            for r in await self.db.fetchall(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, name")
        ]

    async def revoke_key(self, name_or_id: str) -> KeyRow | None:
        row = await self.get_key(name_or_id)
        if row is None:
            return None
        await self.db.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?", (now_iso(), row.key_id)
        )
        return await self.get_key(row.key_id)

    async def key_names(self) -> dict[str, str]:
        return {r["key_id"]: r["name"] for r in await self.db.fetchall("SELECT key_id, name FROM api_keys")}
