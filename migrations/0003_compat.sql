-- The exchanges of the OpenAI/Anthropic-compatible routes: the user text as the client sent
-- it and the assistant text as the server returned it. A client that resends its whole
-- history (as chat UIs do) finds its session by history_key: the SHA-256 of the history it
-- has seen after this turn (see claude_server/compat/conversation.py). NULL when the
-- session's context is not known to equal that history; such a session is then only
-- reachable by header.
CREATE TABLE compat_turns (
    turn_id        TEXT PRIMARY KEY REFERENCES turns (turn_id) ON DELETE CASCADE,
    session_id     TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    user_text      TEXT NOT NULL,
    assistant_text TEXT NOT NULL,
    history_key    TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX compat_turns_by_history ON compat_turns (history_key) WHERE history_key IS NOT NULL;
