-- Background tasks: a turn that nobody follows, started when a slot is free, by priority.
-- ``request`` is the /api/claude body as it was accepted; ``seq`` is the submission order.
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    owner TEXT,
    batch_id TEXT,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    request TEXT NOT NULL,
    session_id TEXT,
    turn_id TEXT,
    webhook_url TEXT,
    webhook_secret TEXT,
    metadata TEXT,
    result TEXT,
    cost_usd REAL,
    usage TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT
);
CREATE INDEX tasks_by_owner ON tasks (owner, seq);
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('queued', 'running');
CREATE INDEX tasks_by_batch ON tasks (batch_id) WHERE batch_id IS NOT NULL;

-- Webhook deliveries: one per task end (and per redelivery), the same body every attempt.
CREATE TABLE deliveries (
    delivery_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX deliveries_by_task ON deliveries (task_id, created_at);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms REAL,
    PRIMARY KEY (delivery_id, attempt)
);
