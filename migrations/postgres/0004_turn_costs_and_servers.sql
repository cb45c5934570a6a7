-- PostgreSQL's version of ../0004_turn_costs_and_servers.sql: the same tables, with BIGINT for SQLite's 64-bit INTEGER,
-- DOUBLE PRECISION for REAL and BYTEA for BLOB.
-- cost_usd becomes the turn's own cost. The CLI's total_cost_usd on a resumed session is the
-- session's running total (measured on CLI 2.1.330: 0.00028, 0.00056, 0.00084 for three
-- alike turns), which earlier versions of this server recorded as the turn's cost; it is
-- kept as session_cost_usd, and the turn's own cost is the difference to the total its
-- session (or, for a fork, its parent) had after the turn before it.
ALTER TABLE turns ADD COLUMN session_cost_usd DOUBLE PRECISION;
UPDATE turns SET session_cost_usd = cost_usd WHERE cost_usd IS NOT NULL;
CREATE TEMP TABLE previous_totals AS
    SELECT t.turn_id, (
        SELECT p.session_cost_usd FROM turns p
        WHERE p.session_id = t.resumed_from AND p.turn_id != t.turn_id
          AND p.session_cost_usd IS NOT NULL AND p.started_at < t.started_at
        ORDER BY p.started_at DESC LIMIT 1
    ) AS total
    FROM turns t WHERE t.session_cost_usd IS NOT NULL AND t.resumed_from IS NOT NULL;
UPDATE turns SET cost_usd = (
    SELECT CASE WHEN prev.total IS NULL OR turns.session_cost_usd < prev.total THEN turns.session_cost_usd
                ELSE turns.session_cost_usd - prev.total END
    FROM previous_totals prev WHERE prev.turn_id = turns.turn_id
)
WHERE turn_id IN (SELECT turn_id FROM previous_totals);
DROP TABLE previous_totals;

-- Which server process runs (or ran) a turn: restart recovery only touches turns of servers
-- that are gone.
ALTER TABLE turns ADD COLUMN server_id TEXT;
