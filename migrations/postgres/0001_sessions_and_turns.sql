-- PostgreSQL's version of ../0001_sessions_and_turns.sql: the same tables, with BIGINT for SQLite's 64-bit INTEGER,
-- DOUBLE PRECISION for REAL and BYTEA for BLOB.
-- Sessions are keyed by the id the Claude Code CLI reports in its init line.
CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY,
    workspace_path  TEXT NOT NULL,
    workspace_name  TEXT NOT NULL,   -- the directory's name under the workspace root
    created_at      TEXT NOT NULL,
    last_used_at    TEXT NOT NULL,
    forked_from     TEXT,
    title           TEXT,            -- set by PATCH; NULL means "the first prompt, shortened"
    first_prompt    TEXT NOT NULL DEFAULT '',
    metadata        TEXT,            -- JSON object, set by PATCH
    conversation_id TEXT,            -- a client's own key for this conversation
    owner           TEXT             -- the API key that created it (NULL: created without keys)
);
CREATE INDEX sessions_by_last_used ON sessions (last_used_at, session_id);
CREATE INDEX sessions_by_workspace ON sessions (workspace_path);
CREATE UNIQUE INDEX sessions_by_conversation ON sessions (COALESCE(owner, ''), conversation_id)
    WHERE conversation_id IS NOT NULL;

-- One row per request that ran (or tried to run) the CLI.
CREATE TABLE turns (
    turn_id           TEXT PRIMARY KEY,
    session_id        TEXT,            -- the resumed session, or the new one once the CLI reports init
    resumed_from      TEXT,            -- the session the request asked to resume, if any
    status            TEXT NOT NULL,   -- queued, running, succeeded, failed, cancelled, interrupted
    prompt            TEXT NOT NULL,
    options           TEXT NOT NULL,   -- JSON
    workspace_path    TEXT NOT NULL,
    detach            BIGINT NOT NULL DEFAULT 0,
    owner             TEXT,
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    exit_code         BIGINT,
    cost_usd          DOUBLE PRECISION,
    usage             TEXT,            -- JSON
    num_turns         BIGINT,
    error             TEXT,            -- JSON {"code", "message", ...}
    last_seq          BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX turns_by_session ON turns (session_id, started_at);
CREATE INDEX turns_by_status ON turns (status);

-- Every event a turn streamed, in order: CLI lines byte for byte, and the server's own
-- events. Stored in chunks of consecutive events of one turn (one row per write batch, up
-- to about 1 MiB): a row per event costs SQLite several times the CPU and disk of the
-- events themselves when a turn floods thousands of lines per second (measured).
CREATE TABLE events (
    turn_id   TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    names     TEXT,            -- JSON {"<seq>": "<name>"} for the server's own events (error)
    data      BYTEA NOT NULL,   -- the events' lines joined by "\n" (a JSON line holds no raw newline)
    PRIMARY KEY (turn_id, first_seq)
);
