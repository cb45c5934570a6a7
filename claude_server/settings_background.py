"""The settings of background work: tasks, their webhooks, and retries of the CLI's start."""

from __future__ import annotations

from claude_server.settings_values import Option, _bool, _http_url, _non_negative_int, _positive_int, _seconds

GROUP = "background tasks"

BACKGROUND_OPTIONS: tuple[Option, ...] = (
    Option(
        "max_tasks_queued",
        "--max-tasks-queued",
        "CLAUDE_SERVER_MAX_TASKS_QUEUED",
        1000,
        _positive_int,
        "queued background tasks at most (beyond: 429)",
        GROUP,
    ),
    Option(
        "max_batch",
        "--max-batch",
        "CLAUDE_SERVER_MAX_BATCH",
        10,
        _positive_int,
        "tasks in one POST /api/tasks/batch at most",
        GROUP,
    ),
    Option(
        "task_retry_interrupted",
        "--task-retry-interrupted",
        "CLAUDE_SERVER_TASK_RETRY_INTERRUPTED",
        True,
        _bool,
        "queue a task the server died running once more (it resumes its session)",
        GROUP,
    ),
    Option(
        "spawn_retries",
        "--spawn-retries",
        "CLAUDE_SERVER_SPAWN_RETRIES",
        2,
        _non_negative_int,
        "times a CLI that fails to start or dies before its init is started again, for tasks and "
        "non-streaming requests",
        GROUP,
    ),
    Option(
        "webhook_url",
        "--webhook-url",
        "CLAUDE_SERVER_WEBHOOK_URL",
        "",
        _http_url,
        "the webhook of tasks submitted without one",
        GROUP,
    ),
    Option(
        "webhook_secret",
        "--webhook-secret",
        "CLAUDE_SERVER_WEBHOOK_SECRET",
        "",
        str,
        "the secret that signs deliveries to --webhook-url",
        GROUP,
    ),
    Option(
        "webhook_timeout_s",
        "--webhook-timeout",
        "CLAUDE_SERVER_WEBHOOK_TIMEOUT",
        10.0,
        _seconds,
        "seconds one webhook delivery may take",
        GROUP,
        default_text="10",
    ),
    Option(
        "webhook_retries",
        "--webhook-retries",
        "CLAUDE_SERVER_WEBHOOK_RETRIES",
        5,
        _non_negative_int,
        "retries of a failed webhook delivery (backoff from 2 s, doubling, at most 5 min apart)",
        GROUP,
    ),
    Option(
        "webhook_allow_private",
        "--webhook-allow-private",
        "CLAUDE_SERVER_WEBHOOK_ALLOW_PRIVATE",
        False,
        _bool,
        "allow webhooks to loopback, private, link-local and other non-public addresses",
        GROUP,
    ),
)
