"""Background tasks, batches and webhook deliveries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from claude_server.api_models.base import ApiModel, TurnErrorBody, TurnStatus


class TaskAccepted(ApiModel):
    task_id: str
    status: TurnStatus
    session_id: str | None
    turn_id: str | None
    position: int | None = Field(description="Its place among queued tasks")


class BatchAccepted(ApiModel):
    batch_id: str
    task_ids: list[str]
    tasks: list[TaskAccepted]


class TaskFields(ApiModel):
    """What a task's answer and its webhook share (``tasks.Tasks.public``)."""

    task_id: str
    status: TurnStatus
    priority: int
    session_id: str | None
    turn_id: str | None
    batch_id: str | None
    prompt: str | None
    result: str | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    error: TurnErrorBody | None
    metadata: dict[str, Any] | None
    attempts: int
    created_at: str
    started_at: str | None
    ended_at: str | None


class Task(TaskFields):
    position: int | None = Field(description="While queued: its place among queued tasks")
    webhook_url: str | None


class DeliveryAttempt(ApiModel):
    attempt: int
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float | None


class Delivery(ApiModel):
    delivery_id: str
    url: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: str | None
    created_at: str
    ended_at: str | None
    tries: list[DeliveryAttempt]


class TaskDetail(Task):
    deliveries: list[Delivery]


class TaskList(ApiModel):
    tasks: list[Task]
    next_cursor: str | None


class DeliveryList(ApiModel):
    deliveries: list[Delivery]


class TaskDeleted(ApiModel):
    deleted: str


class Redelivery(ApiModel):
    delivery_id: str


class BatchSummary(ApiModel):
    batch_id: str
    tasks: int
    by_status: dict[str, int]
    cost_usd: float
    finished: bool


class TaskFinished(TaskFields):
    """The body POSTed to a task's webhook when it ends."""

    event: Literal["task.finished"]
