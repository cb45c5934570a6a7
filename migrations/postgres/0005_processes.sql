-- PostgreSQL's version of ../0005_processes.sql: the same tables, with BIGINT for SQLite's 64-bit INTEGER,
-- DOUBLE PRECISION for REAL and BYTEA for BLOB.
-- CLI processes, which may outlive a turn: a warm process serves turn after turn of its
-- session. Every process of one CLI (the CLI and the tools it starts) carries the marker in
-- its environment; restart recovery kills what carries the marker of a process that a
-- server which is gone left unended.
CREATE TABLE processes (
    marker TEXT PRIMARY KEY,
    server_id TEXT NOT NULL,
    session_id TEXT,
    pid BIGINT,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX processes_running ON processes (server_id) WHERE ended_at IS NULL;

-- The process that ran a turn.
ALTER TABLE turns ADD COLUMN process_id TEXT;
