-- PostgreSQL's version of ../0002_keys_and_usage.sql: the same tables, with BIGINT for SQLite's 64-bit INTEGER,
-- DOUBLE PRECISION for REAL and BYTEA for BLOB.
-- API keys managed with `claude-server keys`. Only a hash of the secret is stored.
CREATE TABLE api_keys (
    key_id           TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    secret_hash      TEXT NOT NULL UNIQUE,   -- sha256 of the secret, hex
    admin            BIGINT NOT NULL DEFAULT 0,
    daily_budget_usd DOUBLE PRECISION,                   -- NULL: the server's default
    created_at       TEXT NOT NULL,
    revoked_at       TEXT
);

-- What stats group and sum by, recorded when a turn ends.
ALTER TABLE turns ADD COLUMN model TEXT;
ALTER TABLE turns ADD COLUMN duration_ms DOUBLE PRECISION;
CREATE INDEX turns_by_owner ON turns (owner, started_at);
CREATE INDEX turns_by_start ON turns (started_at);
