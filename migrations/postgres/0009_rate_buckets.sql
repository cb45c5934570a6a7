-- The per-key rate limit (CLAUDE_SERVER_RATE_LIMIT_PER_MIN), shared by every server on the
-- database: one token bucket per key, its row locked while a turn takes from it. tokens is
-- what is left at `at` (seconds since the epoch, the clock of the server that took last).
CREATE TABLE rate_buckets (
    key_id TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
