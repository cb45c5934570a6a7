"""SQL for the per-key rate limit: a token bucket per key in ``rate_buckets``, so that every
server on the database counts the same turns.

A bucket holds up to ``per_minute`` tokens and refills at ``per_minute`` a minute. Taking
reads the key's row locked for the transaction (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's write transaction holds the whole database), refills it, takes, and writes it
back, so two servers taking at once are counted one after the other. The time is the taking
server's clock (seconds since the epoch); a clock behind the last one to take refills
nothing rather than a negative amount.
"""

from __future__ import annotations

from claude_server.store.database import Database


class RateQueries:
    db: Database

    async def take_rate(self, key_id: str, count: int, per_minute: int, now: float) -> float:
        """Take ``count`` tokens from the key's bucket: 0.0 when they were taken, else the
        seconds until there are that many (nothing taken)."""
        rate = per_minute / 60.0
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO rate_buckets (key_id, tokens, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (key_id, float(per_minute), now),
            )
            row = await tx.fetchone(
                "SELECT tokens, at FROM rate_buckets WHERE key_id = ?" + self.db.dialect.for_update, (key_id,)
            )
            assert row is not None  # inserted above when it was not there
            at = max(now, float(row["at"]))
            tokens = min(float(per_minute), float(row["tokens"]) + (at - float(row["at"])) * rate)
            taken = tokens >= count
            await tx.execute(
                "UPDATE rate_buckets SET tokens = ?, at = ? WHERE key_id = ?",
                (tokens - count if taken else tokens, at, key_id),
            )
        return 0.0 if taken else (count - tokens) / rate

    async def give_back_rate(self, key_id: str, count: int, per_minute: int) -> None:
        """Return tokens taken for turns that did not start (up to the cap)."""
        await self.db.execute(
            "UPDATE rate_buckets SET tokens = CASE WHEN tokens + ? > ? THEN ? ELSE tokens + ? END WHERE key_id = ?",
            (float(count), float(per_minute), float(per_minute), float(count), key_id),
        )
