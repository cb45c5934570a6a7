"""SQL for webhook deliveries: one row per delivery of a task's end, and one per attempt.

A delivery is stored before its first attempt and each attempt is recorded with the
delivery's new state in one transaction, so a restart finds every delivery still pending
with its attempt count and the time of its next attempt. The secret is stored (it signs
every attempt) but never leaves this module except to the deliverer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from claude_server.store.database import Database
from claude_server.store.rows import now_iso


@dataclass(frozen=True)
class DeliveryRow:
    """A pending delivery, as the deliverer needs it to carry on."""

    delivery_id: str
    task_id: str
    url: str
    secret: str | None
    body: str
    attempts: int
    next_attempt_at: float


def _iso_of_unix(seconds: float | None) -> str | None:
    return None if seconds is None else now_iso(datetime.fromtimestamp(seconds, UTC))


class DeliveryQueries:
    db: Database

    async def insert_delivery(
        self, delivery_id: str, task_id: str, url: str, secret: str | None, body: str, next_attempt_at: float
    ) -> None:
        await self.db.execute(
            "INSERT INTO deliveries (delivery_id, task_id, url, secret, body, status, attempts, next_attempt_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
            (delivery_id, task_id, url, secret, body, next_attempt_at, now_iso()),
        )

    async def pending_deliveries(self) -> list[DeliveryRow]:
        """Every delivery still to be attempted, the soonest due first."""
        rows = await self.db.fetchall(
            "SELECT delivery_id, task_id, url, secret, body, attempts, next_attempt_at FROM deliveries"
            " WHERE status = 'pending' ORDER BY next_attempt_at, rowid"
        )
        return [
            DeliveryRow(
                delivery_id=row["delivery_id"],
                task_id=row["task_id"],
                url=row["url"],
                secret=row["secret"],
                body=row["body"],
                attempts=row["attempts"],
                next_attempt_at=row["next_attempt_at"] or 0.0,
            )
            for row in rows
        ]

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        next_attempt_at: float | None,
        status: str,
    ) -> bool:
        """One attempt and the delivery's state after it (``pending``, ``delivered`` or
        ``failed``). False when the delivery is gone (its task was deleted meanwhile)."""
        now = now_iso()
        async with self.db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, status = ?, ended_at = ?"
                " WHERE delivery_id = ?",
                (attempt, next_attempt_at, status, None if status == "pending" else now, delivery_id),
            )
            if not changed:
                return False
            await tx.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = excluded.at,"
                " status_code = excluded.status_code, error = excluded.error, duration_ms = excluded.duration_ms",
                (delivery_id, attempt, now, status_code, error, duration_ms),
            )
        return True

    async def deliveries_of(self, task_id: str) -> list[dict[str, Any]]:
        """A task's deliveries as the API shows them, oldest first, with their attempts (and
        never their secret)."""
        rows = await self.db.fetchall(
            "SELECT delivery_id, url, status, attempts, next_attempt_at, created_at, ended_at FROM deliveries"
            " WHERE task_id = ? ORDER BY created_at, rowid",
            (task_id,),
        )
        tries = await self.db.fetchall(
            "SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.error, a.duration_ms"
            " FROM delivery_attempts a JOIN deliveries d ON d.delivery_id = a.delivery_id"
            " WHERE d.task_id = ? ORDER BY a.attempt",
            (task_id,),
        )
        by_delivery: dict[str, list[dict[str, Any]]] = {}
        for t in tries:
            by_delivery.setdefault(t["delivery_id"], []).append(
                {
                    "attempt": t["attempt"],
                    "at": t["at"],
                    "status_code": t["status_code"],
                    "error": t["error"],
                    "duration_ms": t["duration_ms"],
                }
            )
        return [
            {
                "delivery_id": row["delivery_id"],
                "url": row["url"],
                "status": row["status"],
                "attempts": row["attempts"],
                "next_attempt_at": _iso_of_unix(row["next_attempt_at"]),
                "created_at": row["created_at"],
                "ended_at": row["ended_at"],
                "tries": by_delivery.get(row["delivery_id"], []),
            }
            for row in rows
        ]

    async def last_delivery_body(self, task_id: str) -> tuple[str, str | None, str] | None:
        """The URL, secret and body of the task's latest delivery (whatever became of it)."""
        row = await self.db.fetchone(
            "SELECT url, secret, body FROM deliveries WHERE task_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (task_id,),
        )
        return None if row is None else (row["url"], row["secret"], row["body"])

    async def delete_deliveries(self, task_id: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN"
                " (SELECT delivery_id FROM deliveries WHERE task_id = ?)",
                (task_id,),
            )
            await tx.execute("DELETE FROM deliveries WHERE task_id = ?", (task_id,))
