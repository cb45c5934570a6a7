-- Providers (several accounts or endpoints): the one a session is bound to (affinity), the
-- one each turn ran on, and every move of a session to another (failover).
ALTER TABLE sessions ADD COLUMN provider_id TEXT;
ALTER TABLE turns ADD COLUMN provider_id TEXT;
CREATE INDEX sessions_by_provider ON sessions (provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX turns_by_provider ON turns (provider_id, started_at) WHERE provider_id IS NOT NULL;

CREATE TABLE provider_moves (
    session_id TEXT NOT NULL,
    turn_id TEXT,
    from_provider TEXT,
    to_provider TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL
);
CREATE INDEX provider_moves_by_session ON provider_moves (session_id, at);
