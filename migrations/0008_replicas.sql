-- Replicas: every running server process records itself and renews its heartbeat every
-- third of the lease; a server whose heartbeat is older than the lease is gone, and its
-- turns are marked interrupted by whichever replica notices first. server_id is the process
-- (a new one at every start), replica_id the name it runs under (CLAUDE_SERVER_REPLICA_ID).
CREATE TABLE replicas (
    server_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    advertise_url TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
CREATE INDEX replicas_by_name ON replicas (replica_id);

-- One turn per session across replicas: the row of a session names the turn (and its
-- server) that holds it. Taking a session is one statement on this unique key; a claim of a
-- server whose heartbeat expired may be taken over.
CREATE TABLE session_claims (
    session_id TEXT PRIMARY KEY,
    turn_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);
CREATE INDEX session_claims_by_server ON session_claims (server_id);

-- The server starting a queued task: taking it is one statement (a task another live server
-- is starting is not taken), so that of several replicas exactly one starts it; its status
-- stays queued until its turn started.
ALTER TABLE tasks ADD COLUMN taken_by TEXT;
