-- Sessions are keyed by the id the Claude Code CLI reports in its init line.
CREATE TABLE sessions (
    session_id     TEXT PRIMARY KEY,
    workspace_path TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    last_used_at   TEXT NOT NULL,
    forked_from    TEXT
);
CREATE INDEX sessions_by_last_used ON sessions (last_used_at);

-- One row per request that ran (or tried to run) the CLI.
CREATE TABLE turns (
    turn_id           TEXT PRIMARY KEY,
    session_id        TEXT,            -- known once the CLI reports init
    resumed_from      TEXT,            -- the session the request asked to resume, if any
    status            TEXT NOT NULL,   -- queued, running, succeeded, failed, cancelled, interrupted
    prompt            TEXT NOT NULL,
    options           TEXT NOT NULL,   -- JSON
    workspace_path    TEXT NOT NULL,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    exit_code         INTEGER,
    cost_usd          REAL,
    usage             TEXT,            -- JSON
    num_turns         INTEGER,
    error             TEXT             -- JSON {"code", "message", ...}
);
CREATE INDEX turns_by_session ON turns (session_id, started_at);
CREATE INDEX turns_by_status ON turns (status);
