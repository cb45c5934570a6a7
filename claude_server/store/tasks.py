"""SQL for background tasks: submitted, started, finished, listed, forgotten."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from claude_server.store.database import Database, Row
from claude_server.store.rows import now_iso

TASK_COLUMNS = (
    "task_id, seq, owner, batch_id, status, priority, request, session_id, turn_id, webhook_url, "
    "webhook_secret, metadata, result, cost_usd, usage, error, attempts, created_at, started_at, ended_at"
)
UNFINISHED = ("queued", "running")


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


@dataclass
class TaskRow:
    task_id: str
    seq: int
    owner: str | None
    batch_id: str | None
    status: str
    priority: int
    request: dict[str, Any]  # the /api/claude body as accepted
    session_id: str | None
    turn_id: str | None
    webhook_url: str | None
    webhook_secret: str | None
    metadata: Any
    result: str | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    created_at: str
    started_at: str | None
    ended_at: str | None

    @classmethod
    def of(cls, row: Row) -> TaskRow:
        return cls(
            task_id=row["task_id"],
            seq=row["seq"],
            owner=row["owner"],
            batch_id=row["batch_id"],
            status=row["status"],
            priority=row["priority"],
            request=_loads(row["request"]),
            session_id=row["session_id"],
            turn_id=row["turn_id"],
            webhook_url=row["webhook_url"],
            webhook_secret=row["webhook_secret"],
            metadata=_loads(row["metadata"]),
            result=row["result"],
            cost_usd=row["cost_usd"],
            usage=_loads(row["usage"]),
            error=_loads(row["error"]),
            attempts=row["attempts"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
        )

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED


class TaskQueries:
    db: Database

    async def insert_tasks(self, tasks: list[TaskRow]) -> None:
        """All of them or none: a batch is queued whole."""
        async with self.db.transaction() as tx:
            for t in tasks:
                await tx.execute(
                    f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 20)})",
                    (
                        t.task_id,
                        t.seq,
                        t.owner,
                        t.batch_id,
                        t.status,
                        t.priority,
                        _dumps(t.request),
                        t.session_id,
                        t.turn_id,
                        t.webhook_url,
                        t.webhook_secret,
                        _dumps(t.metadata),
                        t.result,
                        t.cost_usd,
                        _dumps(t.usage),
                        _dumps(t.error),
                        t.attempts,
                        t.created_at,
                        t.started_at,
                        t.ended_at,
                    ),
                )

    async def max_task_seq(self) -> int:
        return int(await self.db.fetchval("SELECT COALESCE(MAX(seq), 0) FROM tasks") or 0)

    async def get_task(self, task_id: str) -> TaskRow | None:
        row = await self.db.fetchone(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
        return None if row is None else TaskRow.of(row)

    async def tasks_with_status(self, *statuses: str) -> list[TaskRow]:
        """In submission order."""
        marks = ", ".join("?" * len(statuses))
        rows = await self.db.fetchall(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ({marks}) ORDER BY seq", statuses
        )
        return [TaskRow.of(r) for r in rows]

    async def list_tasks(
        self,
        *,
        limit: int,
        owner: str | None,
        all_owners: bool,
        before_seq: int | None = None,
        status: str | None = None,
        priority: int | None = None,
        session_id: str | None = None,
        since: str | None = None,
        batch_id: str | None = None,
    ) -> list[TaskRow]:
        """Newest first (by submission); ``before_seq`` continues after a page's last one."""
        where: list[str] = []
        params: list[Any] = []
        if not all_owners:
            where.append("COALESCE(owner, '') = ?")
            params.append(owner or "")
        equal = (("status", status), ("priority", priority), ("session_id", session_id), ("batch_id", batch_id))
        for column, value in equal:
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        sql = f"SELECT {TASK_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        return [TaskRow.of(r) for r in await self.db.fetchall(sql, (*params, limit))]

    async def start_task(self, task_id: str, turn_id: str, session_id: str | None) -> None:
        await self.db.execute(
            "UPDATE tasks SET status = 'running', turn_id = ?, session_id = COALESCE(?, session_id), "
            "attempts = attempts + 1, started_at = ? WHERE task_id = ?",
            (turn_id, session_id, now_iso(), task_id),
        )

    async def set_task_session(self, task_id: str, session_id: str) -> None:
        await self.db.execute("UPDATE tasks SET session_id = ? WHERE task_id = ?", (session_id, task_id))

    async def requeue_task(self, task_id: str) -> None:
        """Queued again after an interruption: it keeps its place (seq) and its session."""
        await self.db.execute("UPDATE tasks SET status = 'queued', error = NULL WHERE task_id = ?", (task_id,))

    async def finish_task(
        self,
        task_id: str,
        *,
        status: str,
        session_id: str | None = None,
        result: str | None = None,
        cost_usd: float | None = None,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record its end, once: False when it had already ended."""
        changed = await self.db.execute(
            "UPDATE tasks SET status = ?, session_id = COALESCE(?, session_id), result = ?, cost_usd = ?, "
            "usage = ?, error = ?, ended_at = ? WHERE task_id = ? AND status IN ('queued', 'running')",
            (status, session_id, result, cost_usd, _dumps(usage), _dumps(error), now_iso(), task_id),
        )
        return changed > 0

    async def delete_task(self, task_id: str) -> None:
        """The task's row (its deliveries go with ``delete_deliveries``)."""
        await self.db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    async def batch_summary(self, batch_id: str) -> tuple[str | None, dict[str, int], float, int] | None:
        """(owner, counts by status, total cost, tasks) of a batch; None when there is none."""
        rows = await self.db.fetchall(
            "SELECT owner, status, count(*) AS n, COALESCE(sum(cost_usd), 0) AS cost FROM tasks "
            "WHERE batch_id = ? GROUP BY owner, status",
            (batch_id,),
        )
        if not rows:
            return None
        counts = {r["status"]: int(r["n"]) for r in rows}
        return rows[0]["owner"], counts, float(sum(r["cost"] for r in rows)), sum(counts.values())
